/*
 * Produce and Fetch body decoders (see kparse.h). Two passes: the first
 * walks a copy of the reader to count and bound everything, the second
 * fills arrays sized by that count, so no input can make an allocation
 * larger than the frame justifies.
 */
#include "broker/kafka/kparse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "verity/errors.h"

void kprod_req_free(struct kprod_req *q)
{
    free(q->topics);
    free(q->parts);
    memset(q, 0, sizeof *q);
}

int kprod_parse(struct kr *r, int16_t version, struct kprod_req *out)
{
    memset(out, 0, sizeof *out);
    (void)version; /* v3..v7 share the body */
    out->txn = kr_str(r, true);
    out->acks = kr_i16(r);
    out->timeout_ms = kr_i32(r);
    struct kr probe = *r;
    int32_t nt = kr_array(&probe, false, 6);
    size_t total = 0;
    for (int32_t t = 0; t < nt && kr_ok(&probe); t++) {
        (void)kr_str(&probe, false);
        int32_t np = kr_array(&probe, false, 8);
        for (int32_t k = 0; k < np && kr_ok(&probe); k++) {
            (void)kr_i32(&probe);
            (void)kr_bytes(&probe, true);
        }
        total += (size_t)(np > 0 ? np : 0);
    }
    if (!kr_ok(r) || !kr_ok(&probe) || kr_left(&probe) != 0 ||
        (out->acks != 0 && out->acks != 1 && out->acks != -1))
        return VERITY_ECORRUPT;
    out->topics = calloc(nt > 0 ? (size_t)nt : 1, sizeof *out->topics);
    out->parts = calloc(total ? total : 1, sizeof *out->parts);
    if (!out->topics || !out->parts) {
        kprod_req_free(out);
        return -ENOMEM;
    }
    out->n_topics = (size_t)nt;
    out->n_parts = total;
    (void)kr_i32(r);
    size_t i = 0;
    for (int32_t t = 0; t < nt; t++) {
        out->topics[t].name = kr_str(r, false);
        out->topics[t].first = (uint32_t)i;
        int32_t np = kr_i32(r);
        out->topics[t].n = (uint32_t)np;
        for (int32_t k = 0; k < np; k++, i++) {
            out->parts[i].topic_idx = (uint32_t)t;
            out->parts[i].partition = kr_i32(r);
            out->parts[i].records = kr_bytes(r, true);
        }
    }
    if (!kr_ok(r) || i != total || kr_left(r) != 0) {
        kprod_req_free(out);
        return VERITY_ECORRUPT;
    }
    return 0;
}

void kfetch_req_free(struct kfetch_req *q)
{
    free(q->topics);
    free(q->parts);
    memset(q, 0, sizeof *q);
}

int kfetch_parse(struct kr *r, int16_t v, struct kfetch_req *out)
{
    memset(out, 0, sizeof *out);
    (void)kr_i32(r); /* replica id */
    out->max_wait_ms = kr_i32(r);
    out->min_bytes = kr_i32(r);
    out->max_bytes = kr_i32(r);
    (void)kr_i8(r); /* isolation level: read_uncommitted either way */
    if (v >= 7) {
        (void)kr_i32(r); /* session id */
        (void)kr_i32(r); /* session epoch */
    }
    size_t pbytes = 4 + 8 + 4 + (v >= 9 ? 4 : 0) + (v >= 5 ? 8 : 0);
    struct kr probe = *r;
    int32_t nt = kr_array(&probe, false, 6);
    size_t total = 0;
    for (int32_t t = 0; t < nt && kr_ok(&probe); t++) {
        (void)kr_str(&probe, false);
        int32_t np = kr_array(&probe, false, pbytes);
        if (np > 0 && kr_ok(&probe))
            probe.p += (size_t)np * pbytes; /* kr_array bounded np by the bytes left */
        total += (size_t)(np > 0 ? np : 0);
    }
    if (!kr_ok(r) || !kr_ok(&probe))
        return VERITY_ECORRUPT;
    out->topics = calloc(nt > 0 ? (size_t)nt : 1, sizeof *out->topics);
    out->parts = calloc(total ? total : 1, sizeof *out->parts);
    if (!out->topics || !out->parts) {
        kfetch_req_free(out);
        return -ENOMEM;
    }
    out->n_topics = (size_t)nt;
    out->n_parts = total;
    (void)kr_i32(r);
    size_t i = 0;
    for (int32_t t = 0; t < nt; t++) {
        out->topics[t].name = kr_str(r, false);
        out->topics[t].first = (uint32_t)i;
        int32_t np = kr_i32(r);
        out->topics[t].n = (uint32_t)np;
        for (int32_t k = 0; k < np; k++, i++) {
            out->parts[i].topic_idx = (uint32_t)t;
            out->parts[i].partition = kr_i32(r);
            if (v >= 9)
                (void)kr_i32(r); /* current leader epoch */
            out->parts[i].offset = kr_i64(r);
            if (v >= 5)
                (void)kr_i64(r); /* log start offset: followers only */
            out->parts[i].max_bytes = kr_i32(r);
        }
    }
    if (v >= 7) {
        int32_t nf = kr_array(r, false, 6);
        for (int32_t f = 0; f < nf && kr_ok(r); f++) {
            (void)kr_str(r, false);
            int32_t np = kr_array(r, false, 4);
            for (int32_t k = 0; k < np; k++)
                (void)kr_i32(r);
        }
    }
    if (v >= 11)
        (void)kr_str(r, false); /* rack id */
    if (!kr_ok(r) || i != total || kr_left(r) != 0) {
        kfetch_req_free(out);
        return VERITY_ECORRUPT;
    }
    return 0;
}

int ksasl_plain_parse(const uint8_t *p, int32_t len, char *buf, size_t cap, const char **authzid,
                      const char **authcid, const char **passwd)
{
    if (!p || len <= 0 || len > KSASL_PLAIN_MAX || (size_t)len >= cap)
        return VERITY_ECORRUPT;
    memcpy(buf, p, (size_t)len);
    buf[len] = '\0';
    const char *end = buf + len;
    const char *z1 = memchr(buf, '\0', (size_t)len);
    if (!z1 || z1 + 1 >= end)
        return VERITY_ECORRUPT;
    const char *z2 = memchr(z1 + 1, '\0', (size_t)(end - z1 - 1));
    if (!z2 || memchr(z2 + 1, '\0', (size_t)(end - z2 - 1)))
        return VERITY_ECORRUPT;
    *authzid = buf;
    *authcid = z1 + 1;
    *passwd = z2 + 1;
    return 0;
}
