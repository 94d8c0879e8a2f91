/*
 * group_codec: the byte format of group-log records (versions 1 and 2). The group
 * state machine (broker/group/group.c) emits these records and rebuilds itself by
 * applying them; nothing else writes them. docs/GROUPS.md repeats this table.
 *
 * Header (32 bytes, little-endian):
 *
 *   off size field
 *     0    2 magic       'V' 'G'
 *     2    1 version     1, or 2 for a PROGRESS record with a horizon section
 *     3    1 type        1 CREATE, 2 DELETE, 3 JOIN, 4 LEAVE, 5 RESET, 6 PROGRESS
 *     4    4 length      u32, whole record including this header,
 *                        GREC_HDR_SIZE..GROUP_RECORD_BYTES_MAX
 *     8    8 seq         u64, 1, 2, 3, ... in emission order across all groups
 *    16    4 group_id    u32, assigned by CREATE (1, 2, ...; never reused)
 *    20    8 time_ms     i64, the command's time
 *    28    4 crc32c      CRC32C of bytes [0, 28) then [32, length)
 *    32      body
 *
 * Body fields are LEB128 unsigned varints (v) unless sized; a string is
 * v length then bytes (no NUL).
 *
 *   CREATE   name str | mode u8 (0 ordered, 1 shared) | n_topics v |
 *            n_topics x (topic str | partitions v) | dlq_topic str |
 *            lease_ms v | session_ms v | max_deliveries v | n_backoff v |
 *            n_backoff x backoff_ms v | pending_max v | n_start v |
 *            n_start x start offset v (n_start == sum of partitions)
 *   DELETE   (empty)
 *   JOIN     member_id v | session_ms v | member name str
 *   LEAVE    member_id v | reason u8 (0 left, 1 session timed out)
 *   RESET    n v | n x offset v
 *   PROGRESS five sections, applied in this order; each is a count v then items:
 *            deliveries   pidx v | from v | length v         (first deliveries [from, from+length))
 *            redeliveries pidx v | offset v | count v        (delivery count now `count`)
 *            dead-letter decisions
 *                         pidx v | offset v | count v | error str
 *            acks         pidx_delta v | lo v | length v     sorted by (pidx, lo), disjoint;
 *                         pidx = previous pidx + pidx_delta; lo is relative to the
 *                         previous range's end when pidx_delta == 0 (else absolute)
 *            dead-lettered
 *                         pidx v | offset v
 *            version 2 only, a sixth section:
 *            horizons     pidx v | offset v                  (delivery horizon rises to offset)
 *
 * A record is valid only if: magic, version and a known type match; length
 * equals the bytes given and lies within the limits; the CRC matches; the
 * body decodes exactly to its end with every count, length and string within
 * the limits of broker/group/group.h; lengths of deliveries and acks are >= 1 and
 * every offset + length stays below GROUP_OFFSET_LIMIT. Whether a valid
 * record fits the state (seq follows, the group exists, offsets are in place)
 * is checked by group_apply.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group_int.h"
#include "storage/crc32c.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define GREC_VERSION 1
#define GREC_VERSION_HORIZON 2 /* PROGRESS with a horizon section */
#define GREC_MAGIC_0 'V'
#define GREC_MAGIC_1 'G'
#define GREC_TYPE_LAST GROUP_REC_PROGRESS

/* ---- byte helpers ----------------------------------------------------- */

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int buf_need(struct gbuf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Callers reserve first; these never fail. */
static void put_u8(struct gbuf *b, uint8_t v)
{
    b->p[b->len++] = v;
}

static void put_v(struct gbuf *b, uint64_t v)
{
    while (v >= 0x80) {
        b->p[b->len++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b->p[b->len++] = (uint8_t)v;
}

static void put_str(struct gbuf *b, const char *s, size_t n)
{
    put_v(b, n);
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* Starts a record at b->len (b is cleared first). */
static int rec_begin(struct gbuf *b, enum group_rec_type type, uint64_t seq, uint32_t gid,
                     int64_t t, size_t body_max)
{
    b->len = 0;
    int rc = buf_need(b, GREC_HDR_SIZE + body_max);
    if (rc)
        return rc;
    memset(b->p, 0, GREC_HDR_SIZE);
    b->p[0] = GREC_MAGIC_0;
    b->p[1] = GREC_MAGIC_1;
    b->p[2] = GREC_VERSION;
    b->p[3] = (uint8_t)type;
    put_le64(b->p + 8, seq);
    put_le32(b->p + 16, gid);
    put_le64(b->p + 20, (uint64_t)t);
    b->len = GREC_HDR_SIZE;
    return 0;
}

static uint32_t rec_crc(const uint8_t *p, size_t len)
{
    uint32_t c = crc32c(0, p, 28);
    return crc32c(c, p + GREC_HDR_SIZE, len - GREC_HDR_SIZE);
}

static void rec_end(struct gbuf *b)
{
    VERITY_VERIFY(b->len <= GROUP_RECORD_BYTES_MAX);
    put_le32(b->p + 4, (uint32_t)b->len);
    put_le32(b->p + 28, rec_crc(b->p, b->len));
}

#define V_MAX 10 /* bytes of one varint */

/* ---- encoders ------------------------------------------------------------ */

int gcodec_create(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t,
                  const struct group_config *cfg, const uint64_t *start, uint32_t n)
{
    size_t max = 64 + GROUP_NAME_MAX + (cfg->n_topics + 1) * (VERITY_TOPIC_NAME_MAX + 2 * V_MAX) +
                 (8 + GROUP_BACKOFF_STEPS_MAX) * V_MAX + (size_t)n * V_MAX;
    int rc = rec_begin(b, GROUP_REC_CREATE, seq, gid, t, max);
    if (rc)
        return rc;
    put_str(b, cfg->name, strlen(cfg->name));
    put_u8(b, (uint8_t)cfg->mode);
    put_v(b, cfg->n_topics);
    for (uint32_t i = 0; i < cfg->n_topics; i++) {
        put_str(b, cfg->topics[i].name, strlen(cfg->topics[i].name));
        put_v(b, cfg->topics[i].partitions);
    }
    put_str(b, cfg->dlq_topic, strlen(cfg->dlq_topic));
    put_v(b, (uint64_t)cfg->lease_ms);
    put_v(b, (uint64_t)cfg->session_ms);
    put_v(b, cfg->max_deliveries);
    put_v(b, cfg->n_backoff);
    for (uint32_t i = 0; i < cfg->n_backoff; i++)
        put_v(b, (uint64_t)cfg->backoff_ms[i]);
    put_v(b, cfg->pending_max);
    put_v(b, n);
    for (uint32_t i = 0; i < n; i++)
        put_v(b, start[i]);
    rec_end(b);
    return 0;
}

int gcodec_simple(struct gbuf *b, enum group_rec_type type, uint64_t seq, uint32_t gid, int64_t t)
{
    int rc = rec_begin(b, type, seq, gid, t, 0);
    if (rc)
        return rc;
    rec_end(b);
    return 0;
}

int gcodec_join(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t, uint64_t member_id,
                int64_t session_ms, const char *name)
{
    int rc = rec_begin(b, GROUP_REC_JOIN, seq, gid, t, 3 * V_MAX + GROUP_MEMBER_NAME_MAX);
    if (rc)
        return rc;
    put_v(b, member_id);
    put_v(b, (uint64_t)session_ms);
    put_str(b, name, strlen(name));
    rec_end(b);
    return 0;
}

int gcodec_leave(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t, uint64_t member_id,
                 bool timed_out)
{
    int rc = rec_begin(b, GROUP_REC_LEAVE, seq, gid, t, V_MAX + 1);
    if (rc)
        return rc;
    put_v(b, member_id);
    put_u8(b, timed_out ? 1 : 0);
    rec_end(b);
    return 0;
}

int gcodec_reset(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t, const uint64_t *offsets,
                 uint32_t n)
{
    int rc = rec_begin(b, GROUP_REC_RESET, seq, gid, t, (size_t)(n + 1) * V_MAX);
    if (rc)
        return rc;
    put_v(b, n);
    for (uint32_t i = 0; i < n; i++)
        put_v(b, offsets[i]);
    rec_end(b);
    return 0;
}

static int ack_cmp(const void *a, const void *b)
{
    const struct gack *x = a, *y = b;
    if (x->pidx != y->pidx)
        return x->pidx < y->pidx ? -1 : 1;
    if (x->lo != y->lo)
        return x->lo < y->lo ? -1 : 1;
    return 0;
}

/* Sorts acks by (pidx, lo) and merges overlapping or adjacent ranges. */
static void acks_normalize(struct gbatch *bt)
{
    if (bt->n_ack < 2)
        return;
    bool sorted = true;
    for (size_t i = 1; i < bt->n_ack && sorted; i++)
        sorted = ack_cmp(&bt->ack[i - 1], &bt->ack[i]) <= 0;
    if (!sorted)
        qsort(bt->ack, bt->n_ack, sizeof(bt->ack[0]), ack_cmp);
    size_t w = 0;
    for (size_t i = 1; i < bt->n_ack; i++) {
        struct gack *last = &bt->ack[w];
        if (bt->ack[i].pidx == last->pidx && bt->ack[i].lo <= last->hi) {
            if (bt->ack[i].hi > last->hi)
                last->hi = bt->ack[i].hi;
        } else {
            bt->ack[++w] = bt->ack[i];
        }
    }
    bt->n_ack = w + 1;
}

int gcodec_progress(struct gbuf *b, uint64_t seq, uint32_t gid, int64_t t, struct gbatch *bt)
{
    acks_normalize(bt);
    size_t max = 6 * V_MAX + bt->n_deliv * 3 * V_MAX + bt->n_redeliv * 3 * V_MAX +
                 bt->n_decide * 4 * V_MAX + bt->n_text + bt->n_ack * 3 * V_MAX +
                 bt->n_done * 2 * V_MAX + bt->n_horizon * 2 * V_MAX;
    int rc = rec_begin(b, GROUP_REC_PROGRESS, seq, gid, t, max);
    if (rc)
        return rc;
    put_v(b, bt->n_deliv);
    for (size_t i = 0; i < bt->n_deliv; i++) {
        put_v(b, bt->deliv[i].pidx);
        put_v(b, bt->deliv[i].lo);
        put_v(b, bt->deliv[i].hi - bt->deliv[i].lo);
    }
    put_v(b, bt->n_redeliv);
    for (size_t i = 0; i < bt->n_redeliv; i++) {
        put_v(b, bt->redeliv[i].pidx);
        put_v(b, bt->redeliv[i].offset);
        put_v(b, bt->redeliv[i].count);
    }
    put_v(b, bt->n_decide);
    for (size_t i = 0; i < bt->n_decide; i++) {
        const struct gdecide *d = &bt->decide[i];
        put_v(b, d->pidx);
        put_v(b, d->offset);
        put_v(b, d->count);
        put_str(b, bt->text + d->err_off, d->err_len);
    }
    put_v(b, bt->n_ack);
    uint32_t pidx = 0;
    uint64_t end = 0;
    for (size_t i = 0; i < bt->n_ack; i++) {
        const struct gack *a = &bt->ack[i];
        uint32_t dp = a->pidx - pidx;
        put_v(b, dp);
        put_v(b, (i > 0 && dp == 0) ? a->lo - end : a->lo);
        put_v(b, a->hi - a->lo);
        pidx = a->pidx;
        end = a->hi;
    }
    put_v(b, bt->n_done);
    for (size_t i = 0; i < bt->n_done; i++) {
        put_v(b, bt->done[i].pidx);
        put_v(b, bt->done[i].offset);
    }
    if (bt->n_horizon > 0) {
        b->p[2] = GREC_VERSION_HORIZON;
        put_v(b, bt->n_horizon);
        for (size_t i = 0; i < bt->n_horizon; i++) {
            put_v(b, bt->horizon[i].pidx);
            put_v(b, bt->horizon[i].offset);
        }
    }
    rec_end(b);
    return 0;
}

/* ---- decoder ------------------------------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t len, pos;
    int err;
};

static uint64_t get_v(struct rd *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->pos >= r->len) {
            r->err = VERITY_ECORRUPT;
            return 0;
        }
        uint8_t c = r->p[r->pos++];
        if (shift == 63 && c > 1) {
            r->err = VERITY_ECORRUPT;
            return 0;
        }
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80))
            return v;
    }
    r->err = VERITY_ECORRUPT;
    return 0;
}

/* A varint that must be <= max. */
static uint64_t get_vmax(struct rd *r, uint64_t max)
{
    uint64_t v = get_v(r);
    if (v > max) {
        r->err = VERITY_ECORRUPT;
        return 0;
    }
    return v;
}

static uint8_t get_u8(struct rd *r)
{
    if (r->pos >= r->len) {
        r->err = VERITY_ECORRUPT;
        return 0;
    }
    return r->p[r->pos++];
}

/* Copies a string of at most max bytes into out (max + 1 bytes) with a NUL;
 * strings with an embedded NUL are corrupt. */
static void get_str(struct rd *r, char *out, size_t max)
{
    uint64_t n = get_vmax(r, max);
    out[0] = 0;
    if (r->err)
        return;
    if (n > r->len - r->pos || memchr(r->p + r->pos, 0, (size_t)n)) {
        r->err = VERITY_ECORRUPT;
        return;
    }
    memcpy(out, r->p + r->pos, (size_t)n);
    out[n] = 0;
    r->pos += (size_t)n;
}

/* Allocates n items of size sz (n bounded by the bytes left: every item
 * takes at least min_bytes), or sets r->err. */
static void *get_array(struct rd *r, uint64_t n, size_t sz, size_t min_bytes)
{
    if (r->err || n == 0)
        return NULL;
    if (n > (r->len - r->pos) / min_bytes) {
        r->err = VERITY_ECORRUPT;
        return NULL;
    }
    void *p = calloc((size_t)n, sz);
    if (!p)
        r->err = -ENOMEM;
    return p;
}

static void decode_create(struct rd *r, struct grec *out)
{
    struct group_config *c = calloc(1, sizeof(*c));
    if (!c) {
        r->err = -ENOMEM;
        return;
    }
    out->cfg = c;
    get_str(r, c->name, GROUP_NAME_MAX);
    uint8_t mode = get_u8(r);
    if (mode > GROUP_SHARED)
        r->err = VERITY_ECORRUPT;
    c->mode = (enum group_mode)mode;
    c->n_topics = (uint32_t)get_vmax(r, GROUP_TOPICS_MAX);
    uint64_t total = 0;
    for (uint32_t i = 0; i < c->n_topics && !r->err; i++) {
        get_str(r, c->topics[i].name, VERITY_TOPIC_NAME_MAX);
        c->topics[i].partitions = (uint32_t)get_vmax(r, VERITY_PARTITIONS_MAX);
        total += c->topics[i].partitions;
    }
    get_str(r, c->dlq_topic, VERITY_TOPIC_NAME_MAX);
    c->lease_ms = (int64_t)get_vmax(r, GROUP_DELAY_MS_MAX);
    c->session_ms = (int64_t)get_vmax(r, GROUP_DELAY_MS_MAX);
    c->max_deliveries = (uint32_t)get_vmax(r, GROUP_DELIVERIES_HARD);
    c->n_backoff = (uint32_t)get_vmax(r, GROUP_BACKOFF_STEPS_MAX);
    for (uint32_t i = 0; i < c->n_backoff && !r->err; i++)
        c->backoff_ms[i] = (int64_t)get_vmax(r, GROUP_DELAY_MS_MAX);
    c->pending_max = (uint32_t)get_vmax(r, VERITY_PENDING_PER_GROUP_MAX);
    uint64_t n = get_vmax(r, GROUP_PARTITIONS_MAX);
    if (!r->err && n != total)
        r->err = VERITY_ECORRUPT;
    out->offsets = get_array(r, n, sizeof(uint64_t), 1);
    out->n_offsets = (uint32_t)n;
    for (uint64_t i = 0; i < n && !r->err; i++)
        out->offsets[i] = get_vmax(r, GROUP_OFFSET_LIMIT - 1);
}

static void decode_progress(struct rd *r, struct grec *out, bool v2)
{
    const uint64_t lim = GROUP_OFFSET_LIMIT - 1;
    uint64_t n = get_v(r);
    out->deliv = get_array(r, n, sizeof(*out->deliv), 3);
    for (uint64_t i = 0; i < n && !r->err; i++) {
        struct gdeliv *d = &out->deliv[i];
        d->pidx = (uint32_t)get_vmax(r, GROUP_PARTITIONS_MAX - 1);
        d->lo = get_vmax(r, lim);
        uint64_t l = get_vmax(r, lim);
        if (l == 0 || d->lo + l > lim)
            r->err = VERITY_ECORRUPT;
        d->hi = d->lo + l;
    }
    out->n_deliv = (size_t)n;
    n = get_v(r);
    out->redeliv = get_array(r, n, sizeof(*out->redeliv), 3);
    for (uint64_t i = 0; i < n && !r->err; i++) {
        struct gredeliv *d = &out->redeliv[i];
        d->pidx = (uint32_t)get_vmax(r, GROUP_PARTITIONS_MAX - 1);
        d->offset = get_vmax(r, lim);
        d->count = (uint16_t)get_vmax(r, UINT16_MAX);
        if (d->count < 2)
            r->err = VERITY_ECORRUPT;
    }
    out->n_redeliv = (size_t)n;
    n = get_v(r);
    out->decide = get_array(r, n, sizeof(*out->decide), 4);
    for (uint64_t i = 0; i < n && !r->err; i++) {
        struct gdecide *d = &out->decide[i];
        d->pidx = (uint32_t)get_vmax(r, GROUP_PARTITIONS_MAX - 1);
        d->offset = get_vmax(r, lim);
        d->count = (uint16_t)get_vmax(r, UINT16_MAX);
        uint64_t el = get_vmax(r, GROUP_ERROR_MAX);
        if (r->err || el > r->len - r->pos || memchr(r->p + r->pos, 0, (size_t)el)) {
            r->err = VERITY_ECORRUPT;
            break;
        }
        d->err_off = (uint32_t)r->pos;
        d->err_len = (uint32_t)el;
        r->pos += (size_t)el;
    }
    out->n_decide = (size_t)n;
    n = get_v(r);
    out->ack = get_array(r, n, sizeof(*out->ack), 3);
    uint64_t pidx = 0, end = 0;
    for (uint64_t i = 0; i < n && !r->err; i++) {
        struct gack *a = &out->ack[i];
        uint64_t dp = get_vmax(r, GROUP_PARTITIONS_MAX - 1);
        uint64_t lo = get_vmax(r, lim);
        uint64_t l = get_vmax(r, lim);
        pidx += dp;
        if (i > 0 && dp == 0)
            lo += end;
        if (l == 0 || pidx >= GROUP_PARTITIONS_MAX || lo > lim || lo + l > lim) {
            r->err = VERITY_ECORRUPT;
            break;
        }
        a->pidx = (uint32_t)pidx;
        a->lo = lo;
        a->hi = lo + l;
        end = a->hi;
    }
    out->n_ack = (size_t)n;
    n = get_v(r);
    out->done = get_array(r, n, sizeof(*out->done), 2);
    for (uint64_t i = 0; i < n && !r->err; i++) {
        out->done[i].pidx = (uint32_t)get_vmax(r, GROUP_PARTITIONS_MAX - 1);
        out->done[i].offset = get_vmax(r, lim);
    }
    out->n_done = (size_t)n;
    if (v2) {
        n = get_v(r);
        if (n == 0 && !r->err)
            r->err = VERITY_ECORRUPT; /* version 2 is written only with horizons */
        out->horizon = get_array(r, n, sizeof(*out->horizon), 2);
        for (uint64_t i = 0; i < n && !r->err; i++) {
            out->horizon[i].pidx = (uint32_t)get_vmax(r, GROUP_PARTITIONS_MAX - 1);
            out->horizon[i].offset = get_vmax(r, lim);
        }
        out->n_horizon = (size_t)n;
    }
    out->text = (const char *)r->p;
}

int group_record_peek(const uint8_t *rec, size_t len, enum group_rec_type *type, uint64_t *seq,
                      uint32_t *group_id)
{
    if (len < GREC_HDR_SIZE || rec[0] != GREC_MAGIC_0 || rec[1] != GREC_MAGIC_1)
        return VERITY_ECORRUPT;
    if (rec[2] != GREC_VERSION && rec[2] != GREC_VERSION_HORIZON)
        return VERITY_EVERSION;
    uint32_t l = get_le32(rec + 4);
    if (rec[3] < GROUP_REC_CREATE || rec[3] > GREC_TYPE_LAST || l != len ||
        l > GROUP_RECORD_BYTES_MAX)
        return VERITY_ECORRUPT;
    if (get_le32(rec + 28) != rec_crc(rec, len))
        return VERITY_ECORRUPT;
    *type = (enum group_rec_type)rec[3];
    *seq = get_le64(rec + 8);
    *group_id = get_le32(rec + 16);
    return 0;
}

int gcodec_decode(const uint8_t *rec, size_t len, struct grec *out)
{
    memset(out, 0, sizeof(*out));
    int rc = group_record_peek(rec, len, &out->type, &out->seq, &out->group_id);
    if (rc)
        return rc;
    if (rec[2] == GREC_VERSION_HORIZON && out->type != GROUP_REC_PROGRESS)
        return VERITY_ECORRUPT;
    out->time_ms = (int64_t)get_le64(rec + 20);
    struct rd r = {.p = rec, .len = len, .pos = GREC_HDR_SIZE, .err = 0};
    switch (out->type) {
    case GROUP_REC_CREATE:
        decode_create(&r, out);
        break;
    case GROUP_REC_DELETE:
        break;
    case GROUP_REC_JOIN:
        out->member_id = get_v(&r);
        out->session_ms = (int64_t)get_vmax(&r, GROUP_DELAY_MS_MAX);
        get_str(&r, out->member_name, GROUP_MEMBER_NAME_MAX);
        break;
    case GROUP_REC_LEAVE: {
        out->member_id = get_v(&r);
        uint8_t why = get_u8(&r);
        if (why > 1)
            r.err = VERITY_ECORRUPT;
        out->timed_out = why == 1;
        break;
    }
    case GROUP_REC_RESET: {
        uint64_t n = get_vmax(&r, GROUP_PARTITIONS_MAX);
        out->offsets = get_array(&r, n, sizeof(uint64_t), 1);
        out->n_offsets = (uint32_t)n;
        for (uint64_t i = 0; i < n && !r.err; i++)
            out->offsets[i] = get_vmax(&r, GROUP_OFFSET_LIMIT - 1);
        break;
    }
    case GROUP_REC_PROGRESS:
        decode_progress(&r, out, rec[2] == GREC_VERSION_HORIZON);
        break;
    }
    if (!r.err && r.pos != len)
        r.err = VERITY_ECORRUPT;
    if (r.err) {
        grec_free(out);
        return r.err;
    }
    return 0;
}

void grec_free(struct grec *r)
{
    free(r->cfg);
    free(r->offsets);
    free(r->deliv);
    free(r->redeliv);
    free(r->decide);
    free(r->ack);
    free(r->done);
    free(r->horizon);
    r->horizon = NULL;
    r->cfg = NULL;
    r->offsets = NULL;
    r->deliv = NULL;
    r->redeliv = NULL;
    r->decide = NULL;
    r->ack = NULL;
    r->done = NULL;
}

/* ---- the growable writer of the snapshot encoders (group_int.h) ---- */

void gw_bytes(struct gwriter *b, const void *src, size_t n)
{
    if (b->oom || n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

void gw_u8(struct gwriter *b, uint8_t v) { gw_bytes(b, &v, 1); }

void gw_u16(struct gwriter *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    gw_bytes(b, x, 2);
}

void gw_u32(struct gwriter *b, uint32_t v)
{
    uint8_t x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    gw_bytes(b, x, 4);
}

void gw_u64(struct gwriter *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    gw_bytes(b, x, 8);
}

void gw_str(struct gwriter *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    gw_u32(b, (uint32_t)n);
    gw_bytes(b, s, n);
}
