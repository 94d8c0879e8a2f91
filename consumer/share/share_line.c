/*
 * One source record -> its export line.
 *
 *   {"type":"record","i":N,"pos":"T/P/O","topic":T,"partition":P,"offset":O,
 *    "ts":MS,"value":{...allowed fields, transformed...},"commit":{...}}
 *
 * Two ways to the same bytes:
 *
 * The tree path (xf_line_tree) parses the whole record with jansson, applies
 * the rules (xf_apply), copies the allowed fields into a new object and
 * dumps it. It handles every share and every record.
 *
 * The scanner path (xf_line_fast) is for shares whose rules are all on
 * top-level members ("/name"), which is the common case. It checks the whole
 * record with a strict scanner that builds nothing, notes where each
 * top-level member's value lies, and then works on those bytes: a kept
 * string without escapes is copied as is (jansson would dump exactly those
 * bytes), a string's canonical JSON is its bytes (for the commitment and
 * the HMAC), and only the members a rule touches become jansson values
 * (predicates and date_shift entities are looked up in a small object of
 * just the members they name). It declines (XF_LINE_FALLBACK) whatever it
 * is not sure to treat exactly as jansson would: any scan error, escaped
 * keys, nesting deeper than SCAN_DEPTH, more than SCAN_TOP_MAX members, more
 * than SCAN_KEYS_MAX in a nested object, \u0000, a lone surrogate, an
 * integer of more than 18 digits, a real that overflows. The tree path then
 * gives the verdict. So the scanner may refuse more than jansson, never
 * less, and what it accepts it turns into the same line; the fuzz target
 * (tests/fuzz/fuzz_share.c, selector 8) checks both on arbitrary records.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/jsonlex.h"
#include "consumer/share/share.h"

#define SCAN_DEPTH 32
#define SCAN_TOP_MAX SH_SCAN_TOP_MAX
#define SCAN_KEYS_MAX 32

/* ---- buffer ---------------------------------------------------------------------- */

int sh_buf_put(struct sh_buf *b, const void *d, size_t n)
{
    if (b->cap - b->n < n + 1) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap - b->n < n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            return -ENOMEM;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    return 0;
}

void sh_buf_free(struct sh_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

#define PUTS(b, lit) sh_buf_put((b), (lit), sizeof(lit) - 1)

static int put_str(struct sh_buf *b, const char *s)
{
    return sh_buf_put(b, s, strlen(s));
}

static int put_u64(struct sh_buf *b, uint64_t v)
{
    char t[24];
    size_t i = sizeof t;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return sh_buf_put(b, t + i, sizeof t - i);
}

static int put_i64(struct sh_buf *b, int64_t v)
{
    if (v < 0) {
        if (PUTS(b, "-"))
            return -ENOMEM;
        return put_u64(b, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(b, (uint64_t)v);
}

static int dump_cb(const char *d, size_t n, void *arg)
{
    return sh_buf_put(arg, d, n);
}

/* A value as jansson dumps it compactly. Strings that need no escaping are
 * written directly (jansson escapes only '"', '\\' and bytes below 0x20). */
static int put_json(struct sh_buf *b, const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v), i = 0;
        while (i < n && s[i] != '"' && s[i] != '\\' && (unsigned char)s[i] >= 0x20)
            i++;
        if (i == n)
            return PUTS(b, "\"") || sh_buf_put(b, s, n) || PUTS(b, "\"") ? -ENOMEM : 0;
    }
    return json_dump_callback(v, dump_cb, b, JSON_COMPACT | JSON_ENCODE_ANY) ? -ENOMEM : 0;
}

/* ---- plan ------------------------------------------------------------------------ */

/* The first reference token of ptr, unescaped as jp_get does (heap). */
static char *first_token(const char *ptr, size_t *len, bool *single)
{
    size_t n = strlen(ptr);
    char *t = malloc(n + 1);
    size_t o = 0;
    const char *p = ptr + 1;
    if (!t)
        return NULL;
    while (*p && *p != '/') {
        char c = *p++;
        if (c == '~') {
            c = *p == '1' ? '/' : '~';
            if (*p)
                p++;
        }
        t[o++] = c;
    }
    t[o] = '\0';
    *len = o;
    *single = *p == '\0';
    return t;
}

static int need_add(struct xf_plan *pl, const char *ptr)
{
    size_t len;
    bool single;
    if (ptr[0] != '/')
        return 1;
    char *t = first_token(ptr, &len, &single);
    if (!t)
        return -ENOMEM;
    for (uint32_t i = 0; i < pl->nneed; i++)
        if (pl->need_len[i] == len && memcmp(pl->need[i], t, len) == 0) {
            free(t);
            return 0;
        }
    pl->need[pl->nneed] = t;
    pl->need_len[pl->nneed++] = len;
    return 0;
}

int xf_plan_init(struct xf_plan *pl, const struct share_spec *s)
{
    memset(pl, 0, sizeof *pl);
    for (uint32_t i = 0; i < s->field_count; i++) {
        json_t *pj = json_string(s->fields[i].path);
        pl->paths_json[i] = pj ? json_dumps(pj, JSON_ENCODE_ANY) : NULL;
        json_decref(pj);
        if (!pl->paths_json[i])
            goto nomem;
    }
    pl->fast = true;
    for (uint32_t i = 0; i < s->field_count && pl->fast; i++) {
        const struct xf_field *f = &s->fields[i];
        bool single = false;
        if (f->path[0] != '/') {
            pl->fast = false;
            break;
        }
        pl->key[i] = first_token(f->path, &pl->key_len[i], &single);
        if (!pl->key[i])
            goto nomem;
        if (!single || strlen(pl->key[i]) != pl->key_len[i]) {
            pl->fast = false;
            break;
        }
        for (uint32_t j = 0; j < i; j++)
            if (pl->key_len[j] == pl->key_len[i] && memcmp(pl->key[j], pl->key[i], pl->key_len[i]) == 0)
                pl->fast = false; /* two rules on one member (the spec refuses this) */
        json_t *kj = json_string(pl->key[i]);
        if (!kj) { /* not UTF-8: no member can match it; the tree path says so */
            pl->fast = false;
            break;
        }
        pl->key_json[i] = json_dumps(kj, JSON_ENCODE_ANY);
        json_decref(kj);
        if (!pl->key_json[i])
            goto nomem;
        if (f->op == XF_DATE_SHIFT) {
            pl->mini = true;
            int rc = need_add(pl, f->entity);
            if (rc < 0)
                goto nomem;
            if (rc)
                pl->fast = false;
        }
    }
    for (uint32_t i = 0; i < s->pred_count && pl->fast; i++) {
        pl->mini = true;
        int rc = need_add(pl, s->preds[i].path);
        if (rc < 0)
            goto nomem;
        if (rc)
            pl->fast = false;
    }
    if (pl->fast && pl->mini) /* date_shift reads its own field from the doc too */
        for (uint32_t i = 0; i < s->field_count; i++)
            if (need_add(pl, s->fields[i].path) < 0)
                goto nomem;
    return 0;
nomem:
    xf_plan_deinit(pl);
    return -ENOMEM;
}

void xf_plan_deinit(struct xf_plan *pl)
{
    for (uint32_t i = 0; i < SHARE_FIELDS_MAX; i++) {
        free(pl->paths_json[i]);
        free(pl->key[i]);
        free(pl->key_json[i]);
    }
    for (uint32_t i = 0; i < pl->nneed; i++)
        free(pl->need[i]);
    memset(pl, 0, sizeof *pl);
}

/* ---- the common parts of a line -------------------------------------------------- */

static size_t dec(uint64_t v, char *out)
{
    char t[24];
    size_t i = sizeof t, n;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    n = sizeof t - i;
    memcpy(out, t + i, n);
    return n;
}

/* "topic/partition/offset" (what snprintf would write; it showed in profiles). */
static size_t position(const struct xf_rec *r, char *pos, size_t cap)
{
    size_t tl = strlen(r->topic);
    if (tl + 2 * 21 + 1 > cap)
        return 0;
    memcpy(pos, r->topic, tl);
    size_t n = tl;
    pos[n++] = '/';
    n += dec(r->partition, pos + n);
    pos[n++] = '/';
    n += dec(r->offset, pos + n);
    pos[n] = '\0';
    return n;
}

static int put_head(struct sh_buf *b, const struct xf_rec *r, const char *pos, size_t pos_len)
{
    int bad = PUTS(b, "{\"type\":\"record\",\"i\":") || put_u64(b, r->index) ||
              PUTS(b, ",\"pos\":\"") || sh_buf_put(b, pos, pos_len) ||
              PUTS(b, "\",\"topic\":\"") || put_str(b, r->topic) ||
              PUTS(b, "\",\"partition\":") || put_u64(b, r->partition) ||
              PUTS(b, ",\"offset\":") || put_u64(b, r->offset) || PUTS(b, ",\"ts\":") ||
              put_i64(b, r->ts_ms) || PUTS(b, ",\"value\":");
    return bad ? -ENOMEM : 0;
}

static bool in_range(const struct share_spec *s, const struct xf_rec *r)
{
    return r->ts_ms >= s->from_time_ms && r->ts_ms <= s->to_time_ms && r->value && r->len > 0;
}

/* ---- the tree path ---------------------------------------------------------------- */

/* Copies the value at ptr from doc into the same place in dst, creating the
 * objects on the way (arrays on the way are copied whole). Absent: no-op. */
static int copy_path(json_t *dst, const json_t *doc, const char *ptr)
{
    const json_t *v = jp_get(doc, ptr);
    if (!v)
        return 0;
    char tok[SHARE_SPEC_TEXT_MAX + 1];
    const char *p = ptr;
    json_t *d = dst;
    const json_t *src = doc;
    while (*p == '/') {
        const char *next = strchr(p + 1, '/');
        size_t o = 0;
        for (const char *q = p + 1; *q && q != next; q++) {
            char c = *q;
            if (c == '~') {
                c = q[1] == '1' ? '/' : '~';
                q++;
            }
            tok[o++] = c;
        }
        tok[o] = '\0';
        const json_t *sv = json_object_get(src, tok);
        if (!sv)
            return 0;
        if (!next || !json_is_object(sv)) /* src is always an object here */
            return json_object_set(d, tok, (json_t *)sv) ? -ENOMEM : 0;
        json_t *dv = json_object_get(d, tok);
        if (!dv) {
            dv = json_object();
            if (json_object_set_new(d, tok, dv))
                return -ENOMEM;
        }
        d = dv;
        src = sv;
        p = next;
    }
    return 0;
}

int xf_line_tree(const struct xf_plan *pl, const struct share_spec *s, const struct xf_keys *k,
                 const char *export_id, const struct xf_rec *r, struct sh_buf *out, char *err,
                 size_t cap)
{
    if (!in_range(s, r))
        return XF_LINE_SKIP;
    char pos[256];
    size_t pos_len = position(r, pos, sizeof pos);
    if (!pos_len)
        return VERITY_EINVAL;
    json_t *doc = json_loadb(r->value, r->len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return XF_LINE_NOT_OBJECT;
    }
    for (uint32_t i = 0; i < s->pred_count; i++)
        if (!share_pred_match(&s->preds[i], doc)) {
            json_decref(doc);
            return XF_LINE_SKIP;
        }
    /* Allow-list: only fields with a rule leave the gateway. */
    json_t *value = json_object(), *commits = json_object();
    size_t n0 = out->n;
    int rc = value && commits ? 0 : -ENOMEM;
    if (!rc)
        rc = xf_apply(s, k, export_id, pos, doc, commits, err, cap);
    for (uint32_t i = 0; !rc && i < s->field_count; i++)
        if (s->fields[i].op != XF_DROP)
            rc = copy_path(value, doc, s->fields[i].path);
    /* The same bytes as dumping one object with these members in this
     * order. Commitments are base64url (no escaping needed). */
    if (!rc)
        rc = put_head(out, r, pos, pos_len);
    if (!rc && json_dump_callback(value, dump_cb, out, JSON_COMPACT) != 0)
        rc = -ENOMEM;
    if (!rc && PUTS(out, ",\"commit\":{"))
        rc = -ENOMEM;
    const char *key;
    json_t *cv;
    bool first = true;
    if (!rc)
        json_object_foreach(commits, key, cv) {
            uint32_t fi = 0;
            while (fi < s->field_count && strcmp(s->fields[fi].path, key) != 0)
                fi++;
            if ((!first && PUTS(out, ",")) ||
                put_str(out, fi < s->field_count ? pl->paths_json[fi] : "\"?\"") ||
                PUTS(out, ":\"") || put_str(out, json_string_value(cv)) || PUTS(out, "\"")) {
                rc = -ENOMEM;
                break;
            }
            first = false;
        }
    if (!rc && PUTS(out, "}}\n"))
        rc = -ENOMEM;
    if (rc)
        out->n = n0;
    json_decref(value);
    json_decref(commits);
    json_decref(doc);
    return rc;
}

/* ---- the scanner ------------------------------------------------------------------- */

struct scan {
    const unsigned char *p, *end;
};

#define member sh_member

static void ws(struct scan *s) { jlex_ws(&s->p, s->end); }

/* A string at s->p ('"'). *plain: it has no escapes. 0 or -1. */
static int sc_string(struct scan *s, bool *plain)
{
    bool esc = false;
    s->p++;
    for (;;) {
        const unsigned char *q = s->p;
        while (q < s->end && *q != '"' && *q != '\\' && *q >= 0x20 && *q < 0x80)
            q++;
        s->p = q;
        if (q == s->end)
            return -1;
        unsigned c = *q;
        if (c == '"') {
            s->p++;
            break;
        }
        if (c < 0x20)
            return -1;
        if (c >= 0x80) {
            size_t l = jlex_utf8_len(q, s->end);
            if (!l)
                return -1;
            s->p += l;
            continue;
        }
        esc = true;
        if (s->end - q < 2)
            return -1;
        switch (q[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            s->p += 2;
            continue;
        case 'u': break;
        default: return -1;
        }
        unsigned u, lo;
        if (s->end - q < 6 || jlex_hex4(q + 2, &u))
            return -1;
        s->p += 6;
        if (u == 0 || (u >= 0xdc00 && u <= 0xdfff))
            return -1; /* \u0000 or a lone low surrogate */
        if (u >= 0xd800 && u <= 0xdbff) {
            if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' || jlex_hex4(s->p + 2, &lo) ||
                lo < 0xdc00 || lo > 0xdfff)
                return -1;
            s->p += 6;
        }
    }
    if (plain)
        *plain = !esc;
    return 0;
}

static bool digit(const struct scan *s)
{
    return s->p < s->end && *s->p >= '0' && *s->p <= '9';
}

static int sc_number(struct scan *s)
{
    const unsigned char *b = s->p;
    bool real = false;
    if (*s->p == '-')
        s->p++;
    if (!digit(s))
        return -1;
    if (*s->p == '0')
        s->p++;
    else
        while (digit(s))
            s->p++;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        real = true;
        if (!digit(s))
            return -1;
        while (digit(s))
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        real = true;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!digit(s))
            return -1;
        while (digit(s))
            s->p++;
    }
    size_t n = (size_t)(s->p - b);
    if (!real)
        return n - (*b == '-') > 18 ? -1 : 0; /* may not fit a json_int_t: let jansson judge */
    char t[64];
    if (n >= sizeof t)
        return -1;
    memcpy(t, b, n);
    t[n] = '\0';
    errno = 0;
    double d = strtod(t, NULL);
    return errno == ERANGE && isinf(d) ? -1 : 0;
}

static int sc_value(struct scan *s, int depth, struct member *top, size_t *ntop);

static int sc_lit(struct scan *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

/* An object at s->p ('{'). With top, its members are noted there. */
static int sc_object(struct scan *s, int depth, struct member *top, size_t *ntop)
{
    const unsigned char *kb[SCAN_KEYS_MAX];
    size_t kn[SCAN_KEYS_MAX], nk = 0, max = top ? SCAN_TOP_MAX : SCAN_KEYS_MAX;
    s->p++;
    ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        bool plain;
        if (s->p == s->end || *s->p != '"')
            return -1;
        const unsigned char *k = s->p + 1;
        if (sc_string(s, &plain) || !plain)
            return -1; /* escaped keys: jansson compares them decoded */
        size_t kl = (size_t)(s->p - 1 - k);
        if (nk == max)
            return -1;
        for (size_t i = 0; i < nk; i++) {
            const unsigned char *o = top ? top[i].k : kb[i];
            size_t ol = top ? top[i].kl : kn[i];
            if (ol == kl && memcmp(o, k, kl) == 0)
                return -1; /* a duplicate: jansson refuses the record */
        }
        if (top) {
            top[nk].k = k;
            top[nk].kl = kl;
        } else {
            kb[nk] = k;
            kn[nk] = kl;
        }
        nk++;
        ws(s);
        if (s->p == s->end || *s->p != ':')
            return -1;
        s->p++;
        ws(s);
        const unsigned char *v = s->p;
        if (s->p < s->end && *s->p == '"') {
            if (sc_string(s, &plain))
                return -1;
        } else {
            plain = false;
            if (sc_value(s, depth + 1, NULL, NULL))
                return -1;
        }
        if (top) {
            top[nk - 1].v = v;
            top[nk - 1].vl = (size_t)(s->p - v);
            top[nk - 1].plain = plain;
        }
        ws(s);
        if (s->p == s->end)
            return -1;
        if (*s->p == ',') {
            s->p++;
            ws(s);
            continue;
        }
        if (*s->p != '}')
            return -1;
        s->p++;
        if (top)
            *ntop = nk;
        return 0;
    }
}

static int sc_value(struct scan *s, int depth, struct member *top, size_t *ntop)
{
    if (depth > SCAN_DEPTH || s->p == s->end)
        return -1;
    switch (*s->p) {
    case '{': return sc_object(s, depth, top, ntop);
    case '[':
        s->p++;
        ws(s);
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }
        for (;;) {
            if (sc_value(s, depth + 1, NULL, NULL))
                return -1;
            ws(s);
            if (s->p == s->end)
                return -1;
            if (*s->p == ']') {
                s->p++;
                return 0;
            }
            if (*s->p != ',')
                return -1;
            s->p++;
            ws(s);
        }
    case '"': return sc_string(s, NULL);
    case 't': return sc_lit(s, "true", 4);
    case 'f': return sc_lit(s, "false", 5);
    case 'n': return sc_lit(s, "null", 4);
    default: return sc_number(s);
    }
}

int sh_scan_object(const void *buf, size_t len, struct sh_member top[SH_SCAN_TOP_MAX], size_t *n)
{
    struct scan sc = {buf, (const unsigned char *)buf + len};
    *n = 0;
    ws(&sc);
    if (sc.p == sc.end || *sc.p != '{' || sc_object(&sc, 0, top, n))
        return -1;
    ws(&sc);
    return sc.p == sc.end ? 0 : -1;
}

const struct sh_member *sh_member_get(const struct sh_member *m, size_t n, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < n; i++)
        if (m[i].kl == kl && memcmp(m[i].k, key, kl) == 0)
            return &m[i];
    return NULL;
}

bool sh_member_is(const struct sh_member *m, const char *s)
{
    size_t l = strlen(s);
    return m && m->plain && m->vl == l + 2 && memcmp(m->v + 1, s, l) == 0;
}

bool sh_member_u64(const struct sh_member *m, uint64_t *out)
{
    if (!m || m->vl == 0 || m->vl > 18 || (m->v[0] == '0' && m->vl > 1))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < m->vl; i++) {
        if (m->v[i] < '0' || m->v[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(m->v[i] - '0');
    }
    *out = v;
    return true;
}

/* ---- the scanner path -------------------------------------------------------------- */

static const struct member *find(const struct member *m, size_t n, const char *k, size_t kl)
{
    for (size_t i = 0; i < n; i++)
        if (m[i].kl == kl && memcmp(m[i].k, k, kl) == 0)
            return &m[i];
    return NULL;
}

/* The jansson value of a member (new reference; NULL: jansson refuses it). */
static json_t *member_value(const struct member *m)
{
    if (m->plain)
        return json_stringn_nocheck((const char *)m->v + 1, m->vl - 2);
    return json_loadb((const char *)m->v, m->vl, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
}

int xf_line_fast(const struct xf_plan *pl, const struct share_spec *s, const struct xf_keys *k,
                 const char *export_id, const struct xf_rec *r, struct sh_buf *out, char *err,
                 size_t cap)
{
    if (!pl->fast)
        return XF_LINE_FALLBACK;
    if (!in_range(s, r))
        return XF_LINE_SKIP;
    struct member top[SCAN_TOP_MAX];
    size_t ntop = 0;
    if (sh_scan_object(r->value, r->len, top, &ntop))
        return XF_LINE_FALLBACK;
    char pos[256];
    size_t pos_len = position(r, pos, sizeof pos);
    if (!pos_len)
        return VERITY_EINVAL;
    json_t *doc = NULL, *vals[SHARE_FIELDS_MAX] = {0};
    int rc = 0;
    size_t n0 = out->n;
    if (pl->mini) {
        /* A small object of just the members the predicates, the date
         * shifts and the rules read: the same answers as the whole doc. */
        if (!(doc = json_object()))
            return -ENOMEM;
        for (uint32_t i = 0; i < pl->nneed; i++) {
            const struct member *m = find(top, ntop, pl->need[i], pl->need_len[i]);
            json_t *v = m ? member_value(m) : NULL;
            if (m && !v) {
                rc = XF_LINE_FALLBACK;
                goto out;
            }
            if (v && json_object_setn_new_nocheck(doc, pl->need[i], pl->need_len[i], v)) {
                rc = -ENOMEM;
                goto out;
            }
        }
        for (uint32_t i = 0; i < s->pred_count; i++)
            if (!share_pred_match(&s->preds[i], doc)) {
                rc = XF_LINE_SKIP;
                goto out;
            }
    }
    char cm[SHARE_FIELDS_MAX][44];
    bool has_cm[SHARE_FIELDS_MAX];
    if ((rc = put_head(out, r, pos, pos_len)) || (rc = PUTS(out, "{") ? -ENOMEM : 0))
        goto out;
    bool first = true;
    for (uint32_t i = 0; i < s->field_count; i++) {
        const struct xf_field *f = &s->fields[i];
        const struct member *m = find(top, ntop, pl->key[i], pl->key_len[i]);
        has_cm[i] = false;
        if (!m)
            continue;
        if (f->op == XF_KEEP) {
            if ((!first && PUTS(out, ",")) || put_str(out, pl->key_json[i]) || PUTS(out, ":")) {
                rc = -ENOMEM;
                goto out;
            }
            first = false;
            if (m->plain) {
                if (sh_buf_put(out, m->v, m->vl))
                    rc = -ENOMEM;
            } else {
                json_t *v = member_value(m);
                rc = v ? put_json(out, v) : XF_LINE_FALLBACK;
                json_decref(v);
            }
            if (rc)
                goto out;
            continue;
        }
        const json_t *v = doc ? json_object_getn(doc, pl->key[i], pl->key_len[i]) : NULL;
        if (!v)
            v = vals[i] = member_value(m);
        if (!v) {
            rc = XF_LINE_FALLBACK;
            goto out;
        }
        /* canon(v): a plain string's own bytes, else jansson's dump. */
        char *owned = m->plain ? NULL : sh_canon(v);
        const char *canon = m->plain ? (const char *)m->v : owned;
        size_t canon_len = m->plain ? m->vl : (owned ? strlen(owned) : 0);
        uint8_t salt[16];
        if (!canon || xf_salt(k, pos, f->path, salt) ||
            xf_commit_canon(salt, canon, canon_len, cm[i])) {
            free(owned);
            rc = VERITY_EINVAL;
            goto out;
        }
        has_cm[i] = true;
        if (f->op == XF_DROP) {
            free(owned);
            continue;
        }
        json_t *nv = xf_value(s, k, export_id, pos, f, doc, v, canon, canon_len);
        free(owned);
        if (!nv) {
            if (err && cap)
                snprintf(err, cap, "%s: %s failed", f->path, xf_op_name(f->op));
            rc = VERITY_EINVAL;
            goto out;
        }
        if ((!first && PUTS(out, ",")) || put_str(out, pl->key_json[i]) || PUTS(out, ":") ||
            put_json(out, nv))
            rc = -ENOMEM;
        first = false;
        json_decref(nv);
        if (rc)
            goto out;
    }
    if (PUTS(out, "},\"commit\":{")) {
        rc = -ENOMEM;
        goto out;
    }
    first = true;
    for (uint32_t i = 0; i < s->field_count; i++) {
        if (!has_cm[i])
            continue;
        if ((!first && PUTS(out, ",")) || put_str(out, pl->paths_json[i]) || PUTS(out, ":\"") ||
            sh_buf_put(out, cm[i], strlen(cm[i])) || PUTS(out, "\"")) {
            rc = -ENOMEM;
            goto out;
        }
        first = false;
    }
    if (PUTS(out, "}}\n"))
        rc = -ENOMEM;
out:
    if (rc)
        out->n = n0;
    for (uint32_t i = 0; i < s->field_count; i++)
        json_decref(vals[i]);
    json_decref(doc);
    return rc;
}

int xf_line(const struct xf_plan *pl, const struct share_spec *s, const struct xf_keys *k,
            const char *export_id, const struct xf_rec *r, struct sh_buf *out, char *err,
            size_t cap)
{
    int rc = xf_line_fast(pl, s, k, export_id, r, out, err, cap);
    if (rc == XF_LINE_FALLBACK)
        rc = xf_line_tree(pl, s, k, export_id, r, out, err, cap);
    return rc;
}
