/*
 * vsr_wire: encoding and strict decoding of replication messages and of the
 * peer frames that carry them (format in vsr_wire.h).
 *
 * Invariants: decode(encode(m)) gives back every field the type carries;
 * encode(decode(b)) == b for every b that decodes (one encoding per
 * message, checked by tests/fuzz/fuzz_vsr_wire.c); the decoder reads no byte
 * past len and accepts no trailing byte.
 */
#include <string.h>

#include "broker/vsr/vsr_wire.h"
#include "verity/errors.h"
#include "verity/verify.h"

enum {
    F_LOGVIEW = 1 << 0,
    F_OP = 1 << 1,
    F_CHECKSUM = 1 << 2,
    F_DIGEST = 1 << 3,
    F_CLIENT = 1 << 4, /* client and request */
    F_HEADER = 1 << 5,
    F_FAULTY = 1 << 6, /* nack_above, faulty list */
    F_WINDOW = 1 << 7,
    F_BODY = 1 << 8,
    F_OPMIN = 1 << 9, /* op_min (<= op) */
};

/* The fields each message type carries (what vsr.c reads of it). */
static const uint16_t fields[VSR_MSG_TYPE_COUNT] = {
    [VSR_MSG_REQUEST] = F_CLIENT | F_BODY,
    [VSR_MSG_REPLY] = F_OP | F_CHECKSUM | F_CLIENT,
    [VSR_MSG_PREPARE] = F_HEADER | F_BODY,
    [VSR_MSG_PREPARE_OK] = F_OP | F_CHECKSUM,
    [VSR_MSG_COMMIT] = F_CHECKSUM,
    [VSR_MSG_START_VIEW_CHANGE] = 0,
    [VSR_MSG_DO_VIEW_CHANGE] = F_LOGVIEW | F_OP | F_FAULTY | F_WINDOW,
    [VSR_MSG_START_VIEW] = F_OP | F_WINDOW,
    [VSR_MSG_REQUEST_START_VIEW] = 0,
    [VSR_MSG_REQUEST_PREPARE] = F_OP | F_CHECKSUM,
    [VSR_MSG_REPAIR] = F_HEADER | F_BODY,
    [VSR_MSG_REQUEST_STATE] = F_OP,
    [VSR_MSG_STATE] = F_OP | F_CHECKSUM | F_DIGEST,
    [VSR_MSG_REQUEST_VIEW] = F_OP,
    [VSR_MSG_VIEW] = F_OP,
    [VSR_MSG_REQUEST_HEADERS] = F_OP | F_OPMIN | F_CHECKSUM,
    [VSR_MSG_HEADERS] = F_OP | F_BODY, /* body: headers of VSR_HEADER_SIZE bytes */
    [VSR_MSG_PRE_VIEW_CHANGE] = 0,
};

/* HEADERS: 1 to VSR_HEADERS_MAX encoded headers (the core checks each). */
static bool headers_body_ok(const struct vsr_msg *m)
{
    return m->type != VSR_MSG_HEADERS ||
           (m->body_len > 0 && m->body_len % VSR_HEADER_SIZE == 0 &&
            m->body_len / VSR_HEADER_SIZE <= VSR_HEADERS_MAX);
}

/* ---- cursors --------------------------------------------------------- */

struct wr {
    uint8_t *p;
    size_t n, cap; /* p == NULL: only count */
};

static void w_bytes(struct wr *w, const void *b, size_t n)
{
    if (w->p && w->n + n <= w->cap)
        memcpy(w->p + w->n, b, n);
    w->n += n;
}
static void w_u8(struct wr *w, uint8_t v)
{
    w_bytes(w, &v, 1);
}
static void w_u32(struct wr *w, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, 4);
}
static void w_u64(struct wr *w, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    w_bytes(w, b, 8);
}

struct rd {
    const uint8_t *p;
    size_t n, len;
    bool bad; /* sticky: a read past the end */
};

static const uint8_t *r_take(struct rd *r, size_t n)
{
    if (r->bad || r->len - r->n < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->n;
    r->n += n;
    return p;
}
static uint8_t r_u8(struct rd *r)
{
    const uint8_t *p = r_take(r, 1);
    return p ? p[0] : 0;
}
static uint32_t r_u32(struct rd *r)
{
    const uint8_t *p = r_take(r, 4);
    uint32_t v = 0;
    for (int i = 0; p && i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t r_u64(struct rd *r)
{
    const uint8_t *p = r_take(r, 8);
    uint64_t v = 0;
    for (int i = 0; p && i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}
static void r_copy(struct rd *r, void *out, size_t n)
{
    const uint8_t *p = r_take(r, n);
    if (p)
        memcpy(out, p, n);
    else
        memset(out, 0, n);
}

static void w_header(struct wr *w, const struct vsr_header *h)
{
    w_bytes(w, h->checksum, VSR_CHECKSUM_SIZE);
    w_bytes(w, h->parent, VSR_CHECKSUM_SIZE);
    w_u64(w, h->op);
    w_u64(w, h->view);
    w_u32(w, h->size);
    w_u64(w, h->client);
    w_u64(w, h->request);
}

static void r_header(struct rd *r, struct vsr_header *h)
{
    memset(h, 0, sizeof *h);
    r_copy(r, h->checksum, VSR_CHECKSUM_SIZE);
    r_copy(r, h->parent, VSR_CHECKSUM_SIZE);
    h->op = r_u64(r);
    h->view = r_u64(r);
    h->size = r_u32(r);
    h->client = r_u64(r);
    h->request = r_u64(r);
}

static bool peer_ok(uint8_t id)
{
    return id < VSR_REPLICAS_MAX || id == 0xff;
}

/* True when m can be encoded: a known type, counts within their limits. */
static bool encodable(const struct vsr_msg *m)
{
    if (m->type == 0 || m->type >= VSR_MSG_TYPE_COUNT || !peer_ok(m->from) || !peer_ok(m->to))
        return false;
    uint16_t f = fields[m->type];
    if ((f & F_FAULTY) && m->faulty_n > VSR_FAULTY_LIST_MAX)
        return false;
    if ((f & F_WINDOW) && m->window_len > VSR_WINDOW_MAX)
        return false;
    if ((f & F_BODY) && (m->body_len > VSR_WIRE_BODY_MAX || (m->body_len && !m->body)))
        return false;
    if ((f & F_BODY) && (f & F_HEADER) && m->header.size != m->body_len)
        return false;
    if ((f & F_OPMIN) && m->op_min > m->op)
        return false;
    if (!headers_body_ok(m))
        return false;
    for (uint32_t i = 0; (f & F_WINDOW) && i < m->window_len; i++)
        if (m->window[i].status > VSR_W_UNKNOWN)
            return false;
    return true;
}

static void encode(const struct vsr_msg *m, struct wr *w)
{
    uint16_t f = fields[m->type];
    w_u8(w, VSR_WIRE_VERSION);
    w_u8(w, m->type);
    w_u8(w, m->from);
    w_u8(w, m->to);
    w_u64(w, m->cluster);
    w_u64(w, m->view);
    w_u64(w, m->commit);
    if (f & F_LOGVIEW)
        w_u64(w, m->log_view);
    if (f & F_OP)
        w_u64(w, m->op);
    if (f & F_OPMIN)
        w_u64(w, m->op_min);
    if (f & F_CHECKSUM)
        w_bytes(w, m->checksum, VSR_CHECKSUM_SIZE);
    if (f & F_DIGEST)
        w_bytes(w, m->digest, VSR_CHECKSUM_SIZE);
    if (f & F_CLIENT) {
        w_u64(w, m->client);
        w_u64(w, m->request);
    }
    if (f & F_HEADER)
        w_header(w, &m->header);
    if (f & F_FAULTY) {
        w_u8(w, m->nack_above ? 1 : 0);
        w_u8(w, (uint8_t)m->faulty_n);
        for (uint32_t i = 0; i < m->faulty_n; i++)
            w_u32(w, m->faulty[i]);
    }
    if (f & F_WINDOW) {
        w_u64(w, m->window_base);
        w_u8(w, (uint8_t)m->window_len);
        for (uint32_t i = 0; i < m->window_len; i++) {
            w_u8(w, m->window[i].status);
            w_u8(w, m->window[i].full ? 1 : 0);
            w_header(w, &m->window[i].h);
        }
    }
    if (f & F_BODY) {
        w_u32(w, m->body_len);
        w_bytes(w, m->body, m->body_len);
    }
}

size_t vsr_wire_size(const struct vsr_msg *m)
{
    if (!encodable(m))
        return 0;
    struct wr w = {NULL, 0, 0};
    encode(m, &w);
    return w.n;
}

size_t vsr_wire_encode(const struct vsr_msg *m, uint8_t *out, size_t cap)
{
    size_t n = vsr_wire_size(m);
    if (n == 0 || n > cap)
        return 0;
    struct wr w = {out, 0, cap};
    encode(m, &w);
    VERITY_VERIFY(w.n == n);
    return n;
}

int vsr_wire_decode(const uint8_t *in, size_t len, struct vsr_msg *m)
{
    struct rd r = {in, 0, len, false};
    memset(m, 0, offsetof(struct vsr_msg, window));
    if (len < VSR_WIRE_FIXED)
        return VERITY_EPROTO;
    if (r_u8(&r) != VSR_WIRE_VERSION)
        return VERITY_EVERSION;
    m->type = r_u8(&r);
    m->from = r_u8(&r);
    m->to = r_u8(&r);
    if (m->type == 0 || m->type >= VSR_MSG_TYPE_COUNT || !peer_ok(m->from) || !peer_ok(m->to))
        return VERITY_EPROTO;
    uint16_t f = fields[m->type];
    m->cluster = r_u64(&r);
    m->view = r_u64(&r);
    m->commit = r_u64(&r);
    if (f & F_LOGVIEW)
        m->log_view = r_u64(&r);
    if (f & F_OP)
        m->op = r_u64(&r);
    if (f & F_OPMIN) {
        m->op_min = r_u64(&r);
        if (m->op_min > m->op)
            return VERITY_EPROTO;
    }
    if (f & F_CHECKSUM)
        r_copy(&r, m->checksum, VSR_CHECKSUM_SIZE);
    if (f & F_DIGEST)
        r_copy(&r, m->digest, VSR_CHECKSUM_SIZE);
    if (f & F_CLIENT) {
        m->client = r_u64(&r);
        m->request = r_u64(&r);
    }
    if (f & F_HEADER)
        r_header(&r, &m->header);
    if (f & F_FAULTY) {
        uint8_t na = r_u8(&r);
        if (na > 1)
            return VERITY_EPROTO;
        m->nack_above = na == 1;
        m->faulty_n = r_u8(&r);
        if (m->faulty_n > VSR_FAULTY_LIST_MAX)
            return VERITY_EPROTO;
        for (uint32_t i = 0; i < m->faulty_n; i++)
            m->faulty[i] = r_u32(&r);
    }
    if (f & F_WINDOW) {
        m->window_base = r_u64(&r);
        m->window_len = r_u8(&r);
        if (m->window_len > VSR_WINDOW_MAX)
            return VERITY_EPROTO;
        for (uint32_t i = 0; i < m->window_len; i++) {
            struct vsr_wentry *e = &m->window[i];
            e->status = r_u8(&r);
            uint8_t full = r_u8(&r);
            if (e->status > VSR_W_UNKNOWN || full > 1)
                return VERITY_EPROTO;
            e->full = full == 1;
            r_header(&r, &e->h);
        }
    }
    if (f & F_BODY) {
        m->body_len = r_u32(&r);
        if (m->body_len > VSR_WIRE_BODY_MAX)
            return VERITY_EPROTO;
        if ((f & F_HEADER) && m->header.size != m->body_len)
            return VERITY_EPROTO;
        m->body = r_take(&r, m->body_len);
        if (!r.bad && !headers_body_ok(m))
            return VERITY_EPROTO;
    }
    if (r.bad || r.n != len)
        return VERITY_EPROTO;
    VERITY_VERIFY(encodable(m));
    return 0;
}

/* ---- peer frames ------------------------------------------------------ */

size_t vsr_wire_frame_header(uint8_t kind, const char *group, size_t group_len, uint32_t partition,
                             uint32_t payload_len, uint8_t *out, size_t cap)
{
    if (kind == 0 || kind > VSR_WIRE_KIND_MAX || group_len > VSR_WIRE_GROUP_MAX)
        return 0;
    size_t hlen = 8 + group_len + 4;
    uint64_t len = hlen - 4 + (uint64_t)payload_len;
    if (hlen > cap || len > VSR_WIRE_FRAME_MAX)
        return 0;
    struct wr w = {out, 0, cap};
    w_u32(&w, (uint32_t)len);
    w_u8(&w, kind);
    w_u8(&w, 0);
    w_u8(&w, (uint8_t)group_len);
    w_u8(&w, (uint8_t)(group_len >> 8));
    w_bytes(&w, group, group_len);
    w_u32(&w, partition);
    VERITY_VERIFY(w.n == hlen);
    return hlen;
}

long vsr_wire_frame_len(const uint8_t *in, size_t avail)
{
    if (avail < 4)
        return 0;
    uint32_t len = (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 |
                   (uint32_t)in[3] << 24;
    if (len < 8 || len > VSR_WIRE_FRAME_MAX)
        return VERITY_EPROTO;
    if (avail < 4 + (size_t)len)
        return 0;
    return 4 + (long)len;
}

int vsr_wire_frame_decode(const uint8_t *in, size_t len, struct vsr_wire_frame *f)
{
    long fl = vsr_wire_frame_len(in, len);
    if (fl <= 0 || (size_t)fl != len)
        return VERITY_EPROTO;
    struct rd r = {in, 4, len, false};
    memset(f, 0, sizeof *f);
    f->kind = r_u8(&r);
    uint8_t reserved = r_u8(&r);
    if (f->kind == 0 || f->kind > VSR_WIRE_KIND_MAX || reserved != 0)
        return VERITY_EPROTO;
    uint8_t lo = r_u8(&r), hi = r_u8(&r);
    f->group_len = (uint16_t)(lo | hi << 8);
    if (f->group_len > VSR_WIRE_GROUP_MAX)
        return VERITY_EPROTO;
    f->group = (const char *)r_take(&r, f->group_len);
    f->partition = r_u32(&r);
    if (r.bad)
        return VERITY_EPROTO;
    f->payload = in + r.n;
    f->payload_len = (uint32_t)(len - r.n);
    return 0;
}
