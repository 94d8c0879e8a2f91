/*
 * Typed values out of JSON events: RFC 6901 pointers, the column types and
 * their checks, timestamps, predicates.
 *
 * Type rules (a value that breaks them makes the event bad, with a reason):
 *   text       a JSON string (a key of type text also takes an integer)
 *   integer    a JSON integer (64-bit)
 *   real       any JSON number
 *   boolean    true / false, stored as 1 / 0 in SQLite, boolean in PostgreSQL
 *   timestamp  an integer (milliseconds since the epoch) or an RFC 3339
 *              string; stored as UTC "YYYY-MM-DDTHH:MM:SS.mmmZ"
 *   json       any JSON value, stored as its compact text
 * A missing value (or JSON null) is SQL NULL unless the column is required.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumer/project/prj.h"

int64_t prj_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t prj_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void prj_val_clear(struct prj_val *v)
{
    free(v->own);
    v->own = NULL;
    v->kind = PV_NULL;
}

json_t *prj_pointer_get(const struct prj_pointer *ptr, json_t *root)
{
    json_t *cur = root;
    for (size_t i = 0; cur && i < ptr->n; i++) {
        const char *seg = ptr->seg[i];
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *end;
            errno = 0;
            unsigned long idx = strtoul(seg, &end, 10);
            if (!isdigit((unsigned char)seg[0]) || *end || errno || (seg[0] == '0' && seg[1]))
                return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
    }
    return cur;
}

static int days_from_civil(int y, int m, int d, int64_t *out)
{
    /* Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic
     * Gregorian date. */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *out = era * 146097 + doe - 719468;
    return 0;
}

static int digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* RFC 3339 ("2026-12-04T17:44:43Z", fraction and offset optional; a date
 * alone is midnight UTC) to ms since the epoch. 0 or -1. */
static int rfc3339_ms(const char *s, size_t len, int64_t *out)
{
    int y, mo, d, h = 0, mi = 0, se = 0, ms = 0;
    if (len < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d))
        return -1;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
        return -1;
    size_t i = 10;
    int64_t off_min = 0;
    if (i < len) {
        if ((s[i] != 'T' && s[i] != 't' && s[i] != ' ') || len < i + 9 ||
            digits(s + i + 1, 2, &h) || s[i + 3] != ':' || digits(s + i + 4, 2, &mi) ||
            s[i + 6] != ':' || digits(s + i + 7, 2, &se) || h > 23 || mi > 59 || se > 60)
            return -1;
        i += 9;
        if (i < len && s[i] == '.') {
            i++;
            int nd = 0;
            while (i < len && isdigit((unsigned char)s[i])) {
                if (nd < 3)
                    ms = ms * 10 + (s[i] - '0');
                nd++;
                i++;
            }
            if (nd == 0)
                return -1;
            for (; nd < 3; nd++)
                ms *= 10;
        }
        if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
            i++;
        } else if (i < len && (s[i] == '+' || s[i] == '-')) {
            int oh, om;
            if (len < i + 6 || digits(s + i + 1, 2, &oh) || s[i + 3] != ':' ||
                digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
                return -1;
            off_min = (s[i] == '-' ? -1 : 1) * (oh * 60 + om);
            i += 6;
        } else {
            return -1;
        }
        if (i != len)
            return -1;
    }
    int64_t days;
    days_from_civil(y, mo, d, &days);
    *out = ((days * 86400 + h * 3600 + mi * 60 + se) - off_min * 60) * 1000 + ms;
    return 0;
}

static void ms_format(int64_t ms, enum prj_trunc tr, char *buf, size_t n)
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int msr = (int)(ms - (int64_t)t * 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    switch (tr) {
    case TR_YEAR:
        snprintf(buf, n, "%04d", tm.tm_year + 1900);
        break;
    case TR_MONTH:
        snprintf(buf, n, "%04d-%02d", tm.tm_year + 1900, tm.tm_mon + 1);
        break;
    case TR_DAY:
        snprintf(buf, n, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
        break;
    case TR_HOUR:
        snprintf(buf, n, "%04d-%02d-%02dT%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                 tm.tm_hour);
        break;
    case TR_NONE:
        snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, msr);
        break;
    }
}

static int bad(char *reason, const struct prj_column *c, const char *what)
{
    snprintf(reason, PRJ_REASON_MAX, "column %s (%s): %s", c->name, c->ptr.text, what);
    return -1;
}

int prj_extract(const struct prj_column *c, json_t *root, struct prj_val *v, char *reason)
{
    v->kind = PV_NULL;
    v->own = NULL;
    json_t *j = prj_pointer_get(&c->ptr, root);
    if (!j || json_is_null(j)) {
        if (c->required)
            return bad(reason, c, "missing");
        return 0;
    }
    switch (c->type) {
    case PT_TEXT:
        if (json_is_string(j)) {
            v->kind = PV_TEXT;
            v->s = json_string_value(j);
            v->len = json_string_length(j);
            if (c->trunc != TR_NONE) {
                int64_t ms;
                if (rfc3339_ms(v->s, v->len, &ms) == 0) {
                    /* keep the local date as written: cut the string */
                    static const size_t keep[] = {0, 13, 10, 7, 4};
                    if (v->len > keep[c->trunc])
                        v->len = keep[c->trunc];
                } else {
                    return bad(reason, c, "truncate needs an RFC 3339 date");
                }
            }
            return 0;
        }
        if (json_is_integer(j) && c->required) { /* numeric ids as keys */
            v->kind = PV_TEXT;
            snprintf(v->buf, sizeof v->buf, "%" PRId64, (int64_t)json_integer_value(j));
            v->s = v->buf;
            v->len = strlen(v->buf);
            return 0;
        }
        return bad(reason, c, "expected a string");
    case PT_INTEGER:
        if (!json_is_integer(j))
            return bad(reason, c, "expected an integer");
        v->kind = PV_INT;
        v->i = json_integer_value(j);
        return 0;
    case PT_REAL:
        if (!json_is_number(j))
            return bad(reason, c, "expected a number");
        v->kind = PV_REAL;
        v->d = json_number_value(j);
        return 0;
    case PT_BOOLEAN:
        if (!json_is_boolean(j))
            return bad(reason, c, "expected true or false");
        v->kind = PV_INT;
        v->i = json_is_true(j);
        return 0;
    case PT_TIMESTAMP: {
        int64_t ms;
        if (json_is_integer(j))
            ms = json_integer_value(j);
        else if (!json_is_string(j) ||
                 rfc3339_ms(json_string_value(j), json_string_length(j), &ms) != 0)
            return bad(reason, c, "expected ms since the epoch or an RFC 3339 time");
        if (ms < -62135596800000LL || ms > 253402300799999LL)
            return bad(reason, c, "time out of range (years 1-9999)");
        ms_format(ms, c->trunc, v->buf, sizeof v->buf);
        v->kind = PV_TEXT;
        v->s = v->buf;
        v->len = strlen(v->buf);
        return 0;
    }
    case PT_JSON:
    {
        /* into our own buffer: json_dumps memory belongs to jansson's allocator */
        size_t flags = JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS;
        size_t need = json_dumpb(j, NULL, 0, flags);
        if (need == 0)
            return bad(reason, c, "cannot encode");
        v->own = malloc(need + 1);
        if (!v->own || json_dumpb(j, v->own, need, flags) != need) {
            free(v->own);
            v->own = NULL;
            return bad(reason, c, "cannot encode");
        }
        v->own[need] = 0;
    }
        v->kind = PV_TEXT;
        v->s = v->own;
        v->len = strlen(v->own);
        return 0;
    }
    return bad(reason, c, "unknown type");
}

bool prj_pred_holds(const struct prj_pred *p, json_t *root)
{
    json_t *j = prj_pointer_get(&p->ptr, root);
    if (p->equals)
        return j && json_equal(j, p->equals);
    return p->exists ? j != NULL : j == NULL;
}

bool prj_selected(const struct prj_table *t, const char *topic, json_t *root)
{
    if (t->n_topics) {
        bool found = false;
        for (size_t i = 0; i < t->n_topics && !found; i++)
            found = strcmp(t->topics[i], topic) == 0;
        if (!found)
            return false;
    }
    for (size_t i = 0; i < t->n_when; i++)
        if (!prj_pred_holds(&t->when[i], root))
            return false;
    return true;
}
