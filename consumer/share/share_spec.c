/*
 * A share: what may leave, to whom, until when. Parsing of the rule
 * languages (field transformations, filter predicates), the JSON form kept
 * in the shares topic, the scope digest a token is bound to, token claims
 * and the recipient's profile file (Delta Sharing's shape).
 *
 * Field rule:  /pointer=op[:args]
 *   keep | drop | hash | tokenize | encrypt
 *   replace:VALUE                   (JSON when it parses, else a string)
 *   mask:last:N | mask:first:N      (keep N characters, '*' for the rest)
 *   generalise:day|month|year       (dates, RFC 3339 or YYYY-MM-DD)
 *   generalise:bucket:WIDTH         (numbers -> "[lo,hi)")
 *   generalise:ranges:LO-HI=label,...,LO-=label
 *   date_shift:/entity_pointer:DAYS (shift in [-DAYS, DAYS], one per entity)
 * Predicate:   /pointer==v | != | < | <= | > | >= v | "/pointer exists"
 *
 * The JSON form round-trips exactly (rules are kept as written, times as
 * integer milliseconds), so the scope digest computed at creation equals
 * the one the gateway computes from the topic.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "consumer/share/share.h"

static int fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t cap, const char *fmt, ...)
{
    if (err && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, cap, fmt, ap);
        va_end(ap);
    }
    return VERITY_EINVAL;
}

static const char *const OPS[] = {"keep",     "drop",       "replace",    "mask",   "hash",
                                  "tokenize", "generalise", "date_shift", "encrypt"};

const char *xf_op_name(enum xf_op op)
{
    return (unsigned)op < sizeof OPS / sizeof OPS[0] ? OPS[op] : "?";
}

static bool pointer_ok(const char *p, size_t n)
{
    if (n == 0 || p[0] != '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '~' && (i + 1 >= n || (p[i + 1] != '0' && p[i + 1] != '1')))
            return false;
        if ((unsigned char)p[i] < 0x20)
            return false;
    }
    return true;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_num(const char *s, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (errno || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* "LO-HI=label,LO-=label": LO and HI are numbers (a leading '-' is a sign). */
static int parse_ranges(const char *s, struct xf_field *f, char *err, size_t cap)
{
    const char *p = s;
    while (*p) {
        if (f->range_count == SHARE_RANGES_MAX)
            return fail(err, cap, "more than %u ranges", SHARE_RANGES_MAX);
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (!eq || eq == p || (size_t)(eq - p) + 1 >= len)
            return fail(err, cap, "range '%.*s' is not LO-HI=label", (int)len, p);
        const char *dash = memchr(p + 1, '-', (size_t)(eq - p - 1));
        if (!dash)
            return fail(err, cap, "range '%.*s' has no '-'", (int)len, p);
        struct xf_range *r = &f->ranges[f->range_count];
        if (parse_num(p, (size_t)(dash - p), &r->lo))
            return fail(err, cap, "range '%.*s': bad lower bound", (int)len, p);
        if (dash + 1 == eq)
            r->hi = INFINITY;
        else if (parse_num(dash + 1, (size_t)(eq - dash - 1), &r->hi) || r->hi < r->lo)
            return fail(err, cap, "range '%.*s': bad upper bound", (int)len, p);
        r->label = strndup(eq + 1, (size_t)(p + len - eq - 1));
        if (!r->label)
            return -ENOMEM;
        f->range_count++;
        p += len;
        if (*p == ',')
            p++;
    }
    return f->range_count ? 0 : fail(err, cap, "no ranges");
}

static int parse_args(struct xf_field *f, const char *args, char *err, size_t cap)
{
    switch (f->op) {
    case XF_KEEP:
    case XF_DROP:
    case XF_HASH:
    case XF_TOKENIZE:
    case XF_ENCRYPT:
        return args ? fail(err, cap, "%s takes no arguments", xf_op_name(f->op)) : 0;
    case XF_REPLACE:
        if (!args)
            return fail(err, cap, "replace needs a value (replace:VALUE)");
        f->replace = json_loads(args, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        if (!f->replace)
            f->replace = json_string(args);
        return f->replace ? 0 : fail(err, cap, "replace value is not valid UTF-8");
    case XF_MASK: {
        const char *n = args;
        f->mask_first = false;
        if (args && strncmp(args, "first:", 6) == 0)
            f->mask_first = true, n = args + 6;
        else if (args && strncmp(args, "last:", 5) == 0)
            n = args + 5;
        if (!n || parse_u32(n, 0, 1024, &f->mask_n))
            return fail(err, cap, "mask needs first:N or last:N (N <= 1024)");
        return 0;
    }
    case XF_GENERALISE:
        if (!args)
            return fail(err, cap, "generalise needs day, month, year, bucket:W or ranges:...");
        if (strcmp(args, "day") == 0)
            f->gen = GEN_DAY;
        else if (strcmp(args, "month") == 0)
            f->gen = GEN_MONTH;
        else if (strcmp(args, "year") == 0)
            f->gen = GEN_YEAR;
        else if (strncmp(args, "bucket:", 7) == 0) {
            f->gen = GEN_BUCKET;
            if (parse_num(args + 7, strlen(args + 7), &f->bucket) || !(f->bucket > 0))
                return fail(err, cap, "bucket width must be a positive number");
        } else if (strncmp(args, "ranges:", 7) == 0) {
            f->gen = GEN_RANGES;
            return parse_ranges(args + 7, f, err, cap);
        } else
            return fail(err, cap, "unknown generalisation '%s'", args);
        return 0;
    case XF_DATE_SHIFT: {
        const char *colon = args ? strrchr(args, ':') : NULL;
        if (!colon || !pointer_ok(args, (size_t)(colon - args)))
            return fail(err, cap, "date_shift needs /entity_pointer:DAYS");
        if (parse_u32(colon + 1, 1, 3650, &f->shift_days_max))
            return fail(err, cap, "date_shift DAYS must be 1..3650");
        f->entity = strndup(args, (size_t)(colon - args));
        return f->entity ? 0 : -ENOMEM;
    }
    }
    return fail(err, cap, "unknown transformation");
}

int xf_field_parse(const char *text, struct xf_field *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    size_t n = strnlen(text, SHARE_SPEC_TEXT_MAX + 1);
    if (n > SHARE_SPEC_TEXT_MAX)
        return fail(err, cap, "field rule longer than %u bytes", SHARE_SPEC_TEXT_MAX);
    const char *eq = strchr(text, '=');
    if (!eq || !pointer_ok(text, (size_t)(eq - text)))
        return fail(err, cap, "field rule '%s' is not /pointer=transformation", text);
    const char *op = eq + 1;
    const char *colon = strchr(op, ':');
    size_t oplen = colon ? (size_t)(colon - op) : strlen(op);
    int found = -1;
    for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++)
        if (strlen(OPS[i]) == oplen && memcmp(OPS[i], op, oplen) == 0)
            found = (int)i;
    if (oplen == 10 && memcmp(op, "generalize", 10) == 0)
        found = XF_GENERALISE;
    if (found < 0)
        return fail(err, cap, "unknown transformation '%.*s' (keep, drop, replace, mask, hash, "
                              "tokenize, generalise, date_shift, encrypt)", (int)oplen, op);
    out->op = (enum xf_op)found;
    out->text = strdup(text);
    out->path = strndup(text, (size_t)(eq - text));
    if (!out->text || !out->path) {
        xf_field_deinit(out);
        return -ENOMEM;
    }
    int rc = parse_args(out, colon ? colon + 1 : NULL, err, cap);
    if (rc)
        xf_field_deinit(out);
    return rc;
}

void xf_field_deinit(struct xf_field *f)
{
    free(f->text);
    free(f->path);
    json_decref(f->replace);
    for (uint32_t i = 0; i < f->range_count; i++)
        free(f->ranges[i].label);
    free(f->entity);
    memset(f, 0, sizeof *f);
}

int share_pred_parse(const char *text, struct share_pred *out, char *err, size_t cap)
{
    static const struct {
        const char *s;
        enum pred_op op;
    } ops[] = {{"==", PRED_EQ}, {"!=", PRED_NE}, {"<=", PRED_LE}, {">=", PRED_GE},
               {"<", PRED_LT},  {">", PRED_GT}};
    memset(out, 0, sizeof *out);
    size_t n = strnlen(text, SHARE_SPEC_TEXT_MAX + 1);
    if (n > SHARE_SPEC_TEXT_MAX)
        return fail(err, cap, "predicate longer than %u bytes", SHARE_SPEC_TEXT_MAX);
    size_t plen = strcspn(text, "=!<> ");
    if (!pointer_ok(text, plen))
        return fail(err, cap, "predicate '%s' does not start with a JSON pointer", text);
    const char *rest = text + plen;
    const char *val = NULL;
    if (strcmp(rest, " exists") == 0) {
        out->op = PRED_EXISTS;
    } else {
        for (size_t i = 0; i < sizeof ops / sizeof ops[0] && !val; i++)
            if (strncmp(rest, ops[i].s, strlen(ops[i].s)) == 0)
                out->op = ops[i].op, val = rest + strlen(ops[i].s);
        if (!val || !*val)
            return fail(err, cap, "predicate '%s': expected ==, !=, <, <=, >, >= VALUE or exists",
                        text);
    }
    out->text = strdup(text);
    out->path = strndup(text, plen);
    if (val) {
        out->value = json_loads(val, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
        if (!out->value)
            out->value = json_string(val);
    }
    if (!out->text || !out->path || (val && !out->value)) {
        share_pred_deinit(out);
        return fail(err, cap, "predicate '%s': bad value", text);
    }
    if (out->op >= PRED_LT && out->op <= PRED_GE && !json_is_number(out->value) &&
        !json_is_string(out->value)) {
        share_pred_deinit(out);
        return fail(err, cap, "predicate '%s': order comparisons need a number or string", text);
    }
    return 0;
}

void share_pred_deinit(struct share_pred *p)
{
    free(p->text);
    free(p->path);
    json_decref(p->value);
    memset(p, 0, sizeof *p);
}

bool share_pred_match(const struct share_pred *p, const json_t *doc)
{
    const json_t *v = jp_get(doc, p->path);
    if (p->op == PRED_EXISTS)
        return v != NULL;
    if (!v)
        return false;
    if (p->op == PRED_EQ)
        return json_equal(v, p->value);
    if (p->op == PRED_NE)
        return !json_equal(v, p->value);
    int c;
    if (json_is_number(v) && json_is_number(p->value)) {
        double a = json_number_value(v), b = json_number_value(p->value);
        c = a < b ? -1 : a > b;
    } else if (json_is_string(v) && json_is_string(p->value)) {
        c = strcmp(json_string_value(v), json_string_value(p->value));
    } else {
        return false;
    }
    switch (p->op) {
    case PRED_LT: return c < 0;
    case PRED_LE: return c <= 0;
    case PRED_GT: return c > 0;
    case PRED_GE: return c >= 0;
    default: return false;
    }
}

/* ---- the spec ----------------------------------------------------------------- */

void share_spec_init(struct share_spec *s)
{
    memset(s, 0, sizeof *s);
    s->from_offset = s->to_offset = -1;
    s->from_time_ms = INT64_MIN;
    s->to_time_ms = INT64_MAX;
    s->policy_version = SHARE_POLICY_VERSION;
}

void share_spec_deinit(struct share_spec *s)
{
    free(s->tenant);
    free(s->issuer);
    for (uint32_t i = 0; i < s->topic_count; i++)
        free(s->topics[i]);
    for (uint32_t i = 0; i < s->pred_count; i++)
        share_pred_deinit(&s->preds[i]);
    for (uint32_t i = 0; i < s->field_count; i++)
        xf_field_deinit(&s->fields[i]);
    free(s->rcpt.name);
    free(s->rcpt.contact);
    free(s->rcpt.purpose);
    share_spec_init(s);
}

bool share_has_topic(const struct share_spec *s, const char *topic)
{
    for (uint32_t i = 0; i < s->topic_count; i++)
        if (strcmp(s->topics[i], topic) == 0)
            return true;
    return false;
}

static json_t *opt_int(int64_t v, int64_t none)
{
    return v == none ? json_null() : json_integer(v);
}

json_t *share_spec_to_json(const struct share_spec *s)
{
    json_t *topics = json_array(), *filter = json_array(), *fields = json_array();
    for (uint32_t i = 0; i < s->topic_count; i++)
        json_array_append_new(topics, json_string(s->topics[i]));
    for (uint32_t i = 0; i < s->pred_count; i++)
        json_array_append_new(filter, json_string(s->preds[i].text));
    for (uint32_t i = 0; i < s->field_count; i++)
        json_array_append_new(fields, json_string(s->fields[i].text));
    json_t *key = json_null();
    if (s->rcpt.has_key) {
        char b[48];
        sh_b64url_enc(s->rcpt.x25519, 32, b);
        key = json_string(b);
    }
    return json_pack("{s:s, s:s?, s:s?, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:I,"
                     " s:{s:s?, s:s?, s:s?, s:o}}",
                     "id", s->id, "tenant", s->tenant, "issuer", s->issuer, "topics", topics,
                     "from_offset", opt_int(s->from_offset, -1), "to_offset",
                     opt_int(s->to_offset, -1), "from_time_ms",
                     opt_int(s->from_time_ms, INT64_MIN), "to_time_ms",
                     opt_int(s->to_time_ms, INT64_MAX), "filter", filter, "fields", fields,
                     "created_ms", (json_int_t)s->created_ms, "expires_ms",
                     (json_int_t)s->expires_ms, "max_uses", (json_int_t)s->max_uses,
                     "policy_version", (json_int_t)s->policy_version, "recipient", "name",
                     s->rcpt.name, "contact", s->rcpt.contact, "purpose", s->rcpt.purpose,
                     "x25519", key);
}

static int get_opt_int(const json_t *j, const char *k, int64_t none, int64_t *out)
{
    const json_t *v = json_object_get(j, k);
    if (!v || json_is_null(v)) {
        *out = none;
        return 0;
    }
    if (!json_is_integer(v))
        return -1;
    *out = json_integer_value(v);
    return 0;
}

static int dup_opt_str(const json_t *j, const char *k, char **out)
{
    const json_t *v = json_object_get(j, k);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return -1;
    *out = strdup(json_string_value(v));
    return *out ? 0 : -1;
}

int share_spec_from_json(const json_t *j, struct share_spec *s, char *err, size_t cap)
{
    share_spec_init(s);
    int rc = VERITY_EINVAL;
    const json_t *id = json_object_get(j, "id"), *topics = json_object_get(j, "topics"),
                 *filter = json_object_get(j, "filter"), *fields = json_object_get(j, "fields"),
                 *r = json_object_get(j, "recipient");
    int64_t v;
    if (!json_is_object(j) || !json_is_string(id) || strlen(json_string_value(id)) != SHARE_ID_LEN) {
        fail(err, cap, "share has no valid id");
        goto bad;
    }
    uint8_t idb[SHARE_ID_LEN / 2];
    if (sh_unhex(json_string_value(id), idb, sizeof idb)) {
        fail(err, cap, "share id is not hex");
        goto bad;
    }
    memcpy(s->id, json_string_value(id), SHARE_ID_LEN + 1);
    if (dup_opt_str(j, "tenant", &s->tenant) || dup_opt_str(j, "issuer", &s->issuer)) {
        fail(err, cap, "tenant / issuer must be strings");
        goto bad;
    }
    if (!json_is_array(topics) || json_array_size(topics) == 0 ||
        json_array_size(topics) > SHARE_TOPICS_MAX) {
        fail(err, cap, "share needs 1..%u topics", SHARE_TOPICS_MAX);
        goto bad;
    }
    for (size_t i = 0; i < json_array_size(topics); i++) {
        const json_t *t = json_array_get(topics, i);
        if (!json_is_string(t) || json_string_length(t) == 0 || json_string_length(t) > 200 ||
            strchr(json_string_value(t), '/')) {
            fail(err, cap, "bad topic name");
            goto bad;
        }
        s->topics[s->topic_count++] = strdup(json_string_value(t));
    }
    if (get_opt_int(j, "from_offset", -1, &s->from_offset) ||
        get_opt_int(j, "to_offset", -1, &s->to_offset) ||
        get_opt_int(j, "from_time_ms", INT64_MIN, &s->from_time_ms) ||
        get_opt_int(j, "to_time_ms", INT64_MAX, &s->to_time_ms) || s->from_offset < -1 ||
        s->to_offset < -1) {
        fail(err, cap, "bad offset or time range");
        goto bad;
    }
    if (!json_is_array(filter) || json_array_size(filter) > SHARE_PREDS_MAX || !json_is_array(fields) ||
        json_array_size(fields) == 0 || json_array_size(fields) > SHARE_FIELDS_MAX) {
        fail(err, cap, "share needs 1..%u fields and at most %u predicates", SHARE_FIELDS_MAX,
             SHARE_PREDS_MAX);
        goto bad;
    }
    for (size_t i = 0; i < json_array_size(filter); i++) {
        const json_t *t = json_array_get(filter, i);
        if (!json_is_string(t)) {
            fail(err, cap, "predicate must be a string");
            goto bad;
        }
        if ((rc = share_pred_parse(json_string_value(t), &s->preds[s->pred_count], err, cap)))
            goto bad;
        s->pred_count++;
    }
    for (size_t i = 0; i < json_array_size(fields); i++) {
        const json_t *t = json_array_get(fields, i);
        if (!json_is_string(t)) {
            rc = fail(err, cap, "field rule must be a string");
            goto bad;
        }
        if ((rc = xf_field_parse(json_string_value(t), &s->fields[s->field_count], err, cap)))
            goto bad;
        for (uint32_t k = 0; k < s->field_count; k++)
            if (strcmp(s->fields[k].path, s->fields[s->field_count].path) == 0) {
                s->field_count++;
                rc = fail(err, cap, "two rules for %s", s->fields[k].path);
                goto bad;
            }
        s->field_count++;
    }
    rc = VERITY_EINVAL;
    if (get_opt_int(j, "created_ms", 0, &s->created_ms) ||
        get_opt_int(j, "expires_ms", 0, &s->expires_ms) || s->expires_ms <= 0 ||
        get_opt_int(j, "max_uses", 0, &v) || v < 0 || v > UINT32_MAX) {
        fail(err, cap, "bad created_ms / expires_ms / max_uses");
        goto bad;
    }
    s->max_uses = (uint32_t)v;
    if (get_opt_int(j, "policy_version", SHARE_POLICY_VERSION, &v) || v != SHARE_POLICY_VERSION) {
        fail(err, cap, "unsupported policy_version");
        goto bad;
    }
    if (!json_is_object(r) || dup_opt_str(r, "name", &s->rcpt.name) ||
        dup_opt_str(r, "contact", &s->rcpt.contact) || dup_opt_str(r, "purpose", &s->rcpt.purpose) ||
        !s->rcpt.name) {
        fail(err, cap, "share needs a recipient with a name");
        goto bad;
    }
    const json_t *key = json_object_get(r, "x25519");
    if (key && !json_is_null(key)) {
        size_t kl;
        if (!json_is_string(key) ||
            sh_b64url_dec(json_string_value(key), json_string_length(key), s->rcpt.x25519, 32, &kl) ||
            kl != 32) {
            fail(err, cap, "recipient x25519 key must be 32 bytes base64url");
            goto bad;
        }
        s->rcpt.has_key = true;
    }
    for (uint32_t i = 0; i < s->field_count; i++)
        if (s->fields[i].op == XF_ENCRYPT && !s->rcpt.has_key) {
            fail(err, cap, "%s=encrypt needs the recipient's X25519 public key", s->fields[i].path);
            goto bad;
        }
    return 0;
bad:
    share_spec_deinit(s);
    return rc ? rc : VERITY_EINVAL;
}

int share_scope_digest(const struct share_spec *s, uint8_t out[32])
{
    json_t *j = share_spec_to_json(s);
    char *c = j ? sh_canon(j) : NULL;
    json_decref(j);
    if (!c)
        return -ENOMEM;
    SHA256((const uint8_t *)c, strlen(c), out);
    free(c);
    return 0;
}

/* ---- tokens ------------------------------------------------------------------- */

int share_token_issue(EVP_PKEY *sk, const struct share_spec *s, char **token_out)
{
    uint8_t d[32], pub[32], kid[32];
    char ds[48], kids[48], exp[32];
    if (share_scope_digest(s, d) || sh_raw_public(sk, pub))
        return VERITY_EINVAL;
    sh_b64url_enc(d, 32, ds);
    SHA256(pub, 32, kid);
    sh_b64url_enc(kid, 16, kids);
    sh_time_fmt(s->expires_ms, exp);
    json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s?}", "sid", s->id, "scope", ds, "exp",
                               exp, "exp_ms", (json_int_t)s->expires_ms, "iat_ms",
                               (json_int_t)s->created_ms, "iss", s->issuer);
    json_t *footer = json_pack("{s:s}", "kid", kids);
    char *m = claims ? sh_canon(claims) : NULL, *f = footer ? sh_canon(footer) : NULL;
    int rc = m && f ? paseto_v4_sign(sk, (const uint8_t *)m, strlen(m), f, SHARE_IMPLICIT, token_out)
                    : -ENOMEM;
    free(m);
    free(f);
    json_decref(claims);
    json_decref(footer);
    return rc;
}

int share_claims_parse(const char *json, size_t len, struct share_claims *out)
{
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    int rc = VERITY_EINVAL;
    const json_t *sid = json_object_get(j, "sid"), *scope = json_object_get(j, "scope"),
                 *exp = json_object_get(j, "exp_ms"), *iat = json_object_get(j, "iat_ms");
    size_t n;
    if (!json_is_string(sid) || json_string_length(sid) != SHARE_ID_LEN || !json_is_string(scope) ||
        !json_is_integer(exp) || !json_is_integer(iat))
        goto out;
    if (sh_b64url_dec(json_string_value(scope), json_string_length(scope), out->scope, 32, &n) ||
        n != 32)
        goto out;
    memcpy(out->sid, json_string_value(sid), SHARE_ID_LEN + 1);
    out->exp_ms = json_integer_value(exp);
    out->iat_ms = json_integer_value(iat);
    rc = 0;
out:
    json_decref(j);
    return rc;
}

int share_token_check(EVP_PKEY *pk, const char *token, struct share_claims *out)
{
    uint8_t *m = NULL;
    size_t n;
    int rc = paseto_v4_verify(pk, token, SHARE_IMPLICIT, &m, &n, NULL);
    if (rc)
        return rc;
    rc = share_claims_parse((const char *)m, n, out);
    free(m);
    return rc;
}

/* ---- profile ------------------------------------------------------------------ */

int share_profile_parse(const char *text, size_t len, struct share_profile *out, char *err,
                        size_t cap)
{
    memset(out, 0, sizeof *out);
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
    int rc = VERITY_EINVAL;
    const json_t *ver = json_object_get(j, "shareCredentialsVersion"),
                 *ep = json_object_get(j, "endpoint"), *tok = json_object_get(j, "bearerToken"),
                 *exp = json_object_get(j, "expirationTime");
    if (!json_is_object(j)) {
        fail(err, cap, "profile is not a JSON object");
        goto out;
    }
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        fail(err, cap, "profile: shareCredentialsVersion must be 1");
        goto out;
    }
    if (!json_is_string(ep) || strncmp(json_string_value(ep), "https://", 8) != 0 ||
        json_string_length(ep) > 1024) {
        fail(err, cap, "profile: endpoint must be an https:// URL");
        goto out;
    }
    if (!json_is_string(tok) || json_string_length(tok) > SHARE_TOKEN_MAX ||
        strncmp(json_string_value(tok), "v4.public.", 10) != 0) {
        fail(err, cap, "profile: bearerToken must be a v4.public token");
        goto out;
    }
    out->expires_ms = INT64_MAX;
    if (exp && !json_is_null(exp) &&
        (!json_is_string(exp) || sh_time_parse(json_string_value(exp), &out->expires_ms))) {
        fail(err, cap, "profile: expirationTime is not an RFC 3339 time");
        goto out;
    }
    out->endpoint = strdup(json_string_value(ep));
    out->token = strdup(json_string_value(tok));
    rc = out->endpoint && out->token ? 0 : -ENOMEM;
out:
    if (rc)
        share_profile_deinit(out);
    json_decref(j);
    return rc;
}

char *share_profile_dump(const char *endpoint, const char *token, int64_t expires_ms)
{
    char exp[32];
    sh_time_fmt(expires_ms, exp);
    json_t *j = json_pack("{s:i, s:s, s:s, s:s}", "shareCredentialsVersion", 1, "endpoint",
                          endpoint, "bearerToken", token, "expirationTime", exp);
    char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    return s;
}

void share_profile_deinit(struct share_profile *p)
{
    free(p->endpoint);
    free(p->token);
    memset(p, 0, sizeof *p);
}
