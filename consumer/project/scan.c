/*
 * The event parser's fast path: a strict JSON scanner that checks the whole
 * event but builds jansson values only for the members the config's
 * pointers lead to (keys, columns, values, predicates). Everything else is
 * validated and skipped without an allocation, so an event of ten members
 * of which a table uses three costs three values, not ten plus the object.
 *
 * Only a fast path: an event it does not accept (any error, a top level
 * that is not an object, nesting deeper than PRJ_SCAN_DEPTH, a number that
 * does not fit) is parsed again by json_loadb, whose verdict and error
 * message stand. So the scanner may refuse more than jansson, never less;
 * the fuzz target (tests/fuzz/fuzz_project.c) checks that whatever it
 * accepts, jansson accepts too and yields the same values at every pointer.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/jsonlex.h"
#include "consumer/project/prj.h"

#define PRJ_SCAN_DEPTH 64

struct pnode {                     /* one pointer segment in the trie */
    char *seg;
    size_t len;
    bool whole;                    /* a pointer ends here: build the whole value */
    struct pnode *kids;
    size_t n_kids;
};

struct prj_plan {
    struct pnode root;
};

static void plan_add(struct pnode *n, const struct prj_pointer *p)
{
    if (p->n == 0) {
        n->whole = true;
        return;
    }
    for (size_t d = 0; d < p->n; d++) {
        size_t len = strlen(p->seg[d]);
        struct pnode *k = NULL;
        for (size_t i = 0; i < n->n_kids && !k; i++)
            if (n->kids[i].len == len && memcmp(n->kids[i].seg, p->seg[d], len) == 0)
                k = &n->kids[i];
        if (!k) {
            n->kids = realloc(n->kids, (n->n_kids + 1) * sizeof *n->kids);
            k = &n->kids[n->n_kids++];
            memset(k, 0, sizeof *k);
            k->seg = strdup(p->seg[d]);
            k->len = len;
        }
        n = k;
    }
    n->whole = true;
}

struct prj_plan *prj_plan_new(const struct prj_config *cfg)
{
    struct prj_plan *pl = calloc(1, sizeof *pl);
    for (size_t t = 0; t < cfg->n_tables; t++) {
        const struct prj_table *tb = &cfg->tables[t];
        for (size_t i = 0; i < tb->n_when; i++)
            plan_add(&pl->root, &tb->when[i].ptr);
        if (tb->has_key)
            plan_add(&pl->root, &tb->key.ptr);
        for (size_t i = 0; i < tb->n_cols; i++)
            plan_add(&pl->root, &tb->cols[i].ptr);
        if (tb->value.ptr.text)
            plan_add(&pl->root, &tb->value.ptr);
        if (tb->has_del)
            plan_add(&pl->root, &tb->del.ptr);
    }
    return pl;
}

static void pnode_free(struct pnode *n)
{
    for (size_t i = 0; i < n->n_kids; i++) {
        pnode_free(&n->kids[i]);
        free(n->kids[i].seg);
    }
    free(n->kids);
}

void prj_plan_free(struct prj_plan *pl)
{
    if (!pl)
        return;
    pnode_free(&pl->root);
    free(pl);
}

/* ---- the scanner ---------------------------------------------------------- */

struct scan {
    const unsigned char *p, *end;
    int depth;
    char *buf;                     /* decoded strings */
    size_t cap;
};

static void ws(struct scan *s) { jlex_ws(&s->p, s->end); }

static void put(struct scan *s, size_t *n, const void *b, size_t len)
{
    if (*n + len + 1 > s->cap) {
        s->cap = (*n + len + 1) * 2;
        s->buf = realloc(s->buf, s->cap);
    }
    memcpy(s->buf + *n, b, len);
    *n += len;
}

/* A string at s->p ('"'); decoded into s->buf (*len bytes, NUL after) when
 * decode. 0 or -1. */
static int str(struct scan *s, bool decode, size_t *len)
{
    size_t n = 0;
    s->p++;
    for (;;) {
        const unsigned char *q = s->p;
        while (q < s->end && *q != '"' && *q != '\\' && *q >= 0x20 && *q < 0x80)
            q++;
        if (decode)
            put(s, &n, s->p, (size_t)(q - s->p));
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
            if (decode)
                put(s, &n, q, l);
            s->p += l;
            continue;
        }
        /* an escape */
        if (s->end - q < 2)
            return -1;
        char e = (char)q[1], o;
        s->p += 2;
        switch (e) {
        case '"': o = '"'; break;
        case '\\': o = '\\'; break;
        case '/': o = '/'; break;
        case 'b': o = '\b'; break;
        case 'f': o = '\f'; break;
        case 'n': o = '\n'; break;
        case 'r': o = '\r'; break;
        case 't': o = '\t'; break;
        case 'u': {
            unsigned v, lo;
            if (s->end - s->p < 4 || jlex_hex4(s->p, &v))
                return -1;
            s->p += 4;
            if (v >= 0xdc00 && v <= 0xdfff)
                return -1;
            if (v >= 0xd800 && v <= 0xdbff) {
                if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' ||
                    jlex_hex4(s->p + 2, &lo) || lo < 0xdc00 || lo > 0xdfff)
                    return -1;
                s->p += 6;
                v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (v == 0)
                return -1; /* jansson refuses \u0000 without JSON_ALLOW_NUL */
            unsigned char u[4];
            size_t ul;
            if (v < 0x80)
                u[0] = (unsigned char)v, ul = 1;
            else if (v < 0x800)
                u[0] = (unsigned char)(0xc0 | v >> 6), u[1] = (unsigned char)(0x80 | (v & 0x3f)),
                ul = 2;
            else if (v < 0x10000)
                u[0] = (unsigned char)(0xe0 | v >> 12),
                u[1] = (unsigned char)(0x80 | (v >> 6 & 0x3f)),
                u[2] = (unsigned char)(0x80 | (v & 0x3f)), ul = 3;
            else
                u[0] = (unsigned char)(0xf0 | v >> 18),
                u[1] = (unsigned char)(0x80 | (v >> 12 & 0x3f)),
                u[2] = (unsigned char)(0x80 | (v >> 6 & 0x3f)),
                u[3] = (unsigned char)(0x80 | (v & 0x3f)), ul = 4;
            if (decode)
                put(s, &n, u, ul);
            continue;
        }
        default:
            return -1;
        }
        if (decode)
            put(s, &n, &o, 1);
    }
    if (decode) {
        put(s, &n, "", 0);
        s->buf[n] = 0;
    }
    *len = n;
    return 0;
}

/* A number (JSON grammar); *out its value when build. 0 or -1 (also when
 * it does not fit: jansson then reports it). */
static int num(struct scan *s, bool build, json_t **out)
{
    const unsigned char *a = s->p, *q = s->p;
    bool real = false;
    if (q < s->end && *q == '-')
        q++;
    if (q == s->end)
        return -1;
    if (*q == '0')
        q++;
    else if (*q >= '1' && *q <= '9')
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    else
        return -1;
    if (q < s->end && *q == '.') {
        real = true;
        q++;
        if (q == s->end || *q < '0' || *q > '9')
            return -1;
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < s->end && (*q == 'e' || *q == 'E')) {
        real = true;
        q++;
        if (q < s->end && (*q == '+' || *q == '-'))
            q++;
        if (q == s->end || *q < '0' || *q > '9')
            return -1;
        while (q < s->end && *q >= '0' && *q <= '9')
            q++;
    }
    s->p = q;
    size_t len = (size_t)(q - a);
    if (!build && !real && len <= 18)
        return 0; /* fits an int64 */
    char tmp[64];
    if (len >= sizeof tmp)
        return -1; /* let jansson judge long numbers */
    memcpy(tmp, a, len);
    tmp[len] = 0;
    errno = 0;
    if (real) {
        double d = strtod(tmp, NULL);
        if ((errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL)) || !isfinite(d))
            return -1;
        if (build)
            *out = json_real(d);
    } else {
        long long v = strtoll(tmp, NULL, 10);
        if (errno == ERANGE)
            return -1;
        if (build)
            *out = json_integer(v);
    }
    return 0;
}

static int lit(struct scan *s, const char *w, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

/*
 * One value at s->p. node: the trie node for this position (NULL: skip,
 * build nothing); whole: build all of it. *out (when building) the value.
 */
static int value(struct scan *s, const struct pnode *node, bool whole, json_t **out)
{
    bool build = whole || node;
    if (s->p == s->end)
        return -1;
    switch (*s->p) {
    case '{': {
        if (++s->depth > PRJ_SCAN_DEPTH)
            return -1;
        s->p++;
        json_t *o = build ? json_object() : NULL;
        ws(s);
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            s->depth--;
            *out = o;
            return 0;
        }
        for (;;) {
            ws(s);
            if (s->p == s->end || *s->p != '"')
                goto obj_fail;
            size_t klen = 0;
            if (str(s, build, &klen) != 0)
                goto obj_fail;
            const struct pnode *kid = NULL;
            if (build && !whole && node)
                for (size_t i = 0; i < node->n_kids && !kid; i++)
                    if (node->kids[i].len == klen && memcmp(node->kids[i].seg, s->buf, klen) == 0)
                        kid = &node->kids[i];
            char *key = NULL;
            if (whole || kid)
                key = strndup(s->buf, klen);
            ws(s);
            if (s->p == s->end || *s->p != ':') {
                free(key);
                goto obj_fail;
            }
            s->p++;
            ws(s);
            json_t *v = NULL;
            if (value(s, kid, whole || (kid && kid->whole), &v) != 0) {
                free(key);
                json_decref(v);
                goto obj_fail;
            }
            if (key) {
                /* later duplicates replace earlier ones, as json_loadb */
                if (strlen(key) != klen || json_object_set_new_nocheck(o, key, v) != 0) {
                    free(key);
                    goto obj_fail; /* a key with NUL: jansson judges */
                }
                free(key);
            }
            ws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (s->p < s->end && *s->p == '}') {
                s->p++;
                break;
            }
            goto obj_fail;
        }
        s->depth--;
        *out = o;
        return 0;
    obj_fail:
        json_decref(o);
        return -1;
    }
    case '[': {
        if (++s->depth > PRJ_SCAN_DEPTH)
            return -1;
        s->p++;
        /* pointers into arrays are rare: build an array on a path whole */
        bool b = build;
        json_t *a = b ? json_array() : NULL;
        ws(s);
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            s->depth--;
            *out = a;
            return 0;
        }
        for (;;) {
            ws(s);
            json_t *v = NULL;
            if (value(s, NULL, b, &v) != 0) {
                json_decref(a);
                return -1;
            }
            if (b)
                json_array_append_new(a, v);
            ws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (s->p < s->end && *s->p == ']') {
                s->p++;
                break;
            }
            json_decref(a);
            return -1;
        }
        s->depth--;
        *out = a;
        return 0;
    }
    case '"': {
        size_t len = 0;
        if (str(s, build, &len) != 0)
            return -1;
        if (build)
            *out = json_stringn_nocheck(s->buf, len);
        return 0;
    }
    case 't':
        if (lit(s, "true", 4))
            return -1;
        *out = build ? json_true() : NULL;
        return 0;
    case 'f':
        if (lit(s, "false", 5))
            return -1;
        *out = build ? json_false() : NULL;
        return 0;
    case 'n':
        if (lit(s, "null", 4))
            return -1;
        *out = build ? json_null() : NULL;
        return 0;
    default:
        return num(s, build, out);
    }
}

static __thread char *sbuf;        /* decoded strings, kept between events */
static __thread size_t scap;

json_t *prj_scan(const struct prj_plan *pl, const void *buf, size_t len)
{
    struct scan s = {.p = buf, .end = (const unsigned char *)buf + len, .buf = sbuf, .cap = scap};
    json_t *root = NULL;
    ws(&s);
    if (pl && s.p < s.end && *s.p == '{' && value(&s, &pl->root, pl->root.whole, &root) == 0) {
        ws(&s);
        if (s.p != s.end) {
            json_decref(root);
            root = NULL;
        }
    } else {
        json_decref(root);
        root = NULL;
    }
    sbuf = s.buf;
    scap = s.cap;
    return root;
}

json_t *prj_parse(const struct prj_plan *pl, const void *buf, size_t len, json_error_t *je)
{
    json_t *root = pl ? prj_scan(pl, buf, len) : NULL;
    return root ? root : json_loadb(buf, len, 0, je);
}

void prj_parse_release(void)
{
    free(sbuf);
    sbuf = NULL;
    scap = 0;
}
