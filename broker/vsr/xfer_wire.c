/*
 * State-transfer message codec (xfer_wire.h). Pure: no allocation, no I/O.
 */
#include "broker/vsr/xfer_wire.h"

#include <string.h>

#include "verity/errors.h"

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static bool valid(const struct xfer_msg *m)
{
    if (m->from >= VSR_REPLICAS_MAX || m->to >= VSR_REPLICAS_MAX)
        return false;
    switch (m->type) {
    case XFER_GET:
        return m->max_bytes >= 1 && m->max_bytes <= XFER_CHUNK_MAX;
    case XFER_DATA:
        return m->len <= XFER_CHUNK_MAX && m->from_offset <= m->end && (m->len == 0 || m->data);
    case XFER_ERR:
        return m->code < 0;
    default:
        return false;
    }
}

size_t xfer_wire_size(const struct xfer_msg *m)
{
    if (!valid(m))
        return 0;
    switch (m->type) {
    case XFER_GET:
        return XFER_GET_SIZE;
    case XFER_DATA:
        return XFER_DATA_FIXED + (size_t)m->len;
    default:
        return XFER_ERR_SIZE;
    }
}

size_t xfer_wire_encode(const struct xfer_msg *m, uint8_t *out, size_t cap)
{
    size_t n = xfer_wire_size(m);
    if (n == 0 || n > cap)
        return 0;
    out[0] = XFER_WIRE_VERSION;
    out[1] = m->type;
    out[2] = m->from;
    out[3] = m->to;
    put_u64(out + 4, m->cluster);
    put_u64(out + 12, m->xid);
    switch (m->type) {
    case XFER_GET:
        put_u64(out + 20, m->from_offset);
        put_u32(out + 28, m->max_bytes);
        break;
    case XFER_DATA:
        put_u64(out + 20, m->op);
        memcpy(out + 28, m->checksum, VSR_CHECKSUM_SIZE);
        memcpy(out + 60, m->digest, VSR_CHECKSUM_SIZE);
        memcpy(out + 92, m->chain, VSR_CHECKSUM_SIZE);
        put_u64(out + 124, m->end);
        put_u64(out + 132, m->from_offset);
        put_u32(out + 140, m->len);
        if (m->len)
            memcpy(out + XFER_DATA_FIXED, m->data, m->len);
        break;
    default:
        put_u32(out + 20, (uint32_t)m->code);
        break;
    }
    return n;
}

int xfer_wire_decode(const uint8_t *in, size_t len, struct xfer_msg *m)
{
    memset(m, 0, sizeof *m);
    if (len < 20)
        return VERITY_EPROTO;
    if (in[0] != XFER_WIRE_VERSION)
        return VERITY_EVERSION;
    m->type = in[1];
    m->from = in[2];
    m->to = in[3];
    m->cluster = get_u64(in + 4);
    m->xid = get_u64(in + 12);
    switch (m->type) {
    case XFER_GET:
        if (len != XFER_GET_SIZE)
            return VERITY_EPROTO;
        m->from_offset = get_u64(in + 20);
        m->max_bytes = get_u32(in + 28);
        break;
    case XFER_DATA:
        if (len < XFER_DATA_FIXED)
            return VERITY_EPROTO;
        m->op = get_u64(in + 20);
        memcpy(m->checksum, in + 28, VSR_CHECKSUM_SIZE);
        memcpy(m->digest, in + 60, VSR_CHECKSUM_SIZE);
        memcpy(m->chain, in + 92, VSR_CHECKSUM_SIZE);
        m->end = get_u64(in + 124);
        m->from_offset = get_u64(in + 132);
        m->len = get_u32(in + 140);
        if ((size_t)m->len != len - XFER_DATA_FIXED)
            return VERITY_EPROTO;
        m->data = m->len ? in + XFER_DATA_FIXED : NULL;
        break;
    case XFER_ERR:
        if (len != XFER_ERR_SIZE)
            return VERITY_EPROTO;
        m->code = (int32_t)get_u32(in + 20);
        break;
    default:
        return VERITY_EPROTO;
    }
    return valid(m) ? 0 : VERITY_EPROTO;
}
