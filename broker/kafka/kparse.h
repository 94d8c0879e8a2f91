/*
 * kparse: pure decoders for the Kafka request bodies that carry the most
 * input (Produce, Fetch), kept apart from the handlers (no libevent, no
 * broker state) so tests/fuzz/fuzz_kafka.c drives exactly the functions the
 * listener calls. Strings and record sets stay borrowed from the request
 * buffer; the arrays are owned by the result (free with the _free call).
 * Every count is bounded by the bytes left (kr_array) before anything is
 * allocated.
 */
#ifndef VERITY_KPARSE_H
#define VERITY_KPARSE_H

#include <stddef.h>
#include <stdint.h>

#include "broker/kafka/kwire.h"

struct ktopic_span {
    struct kstr name;
    uint32_t first; /* first partition entry of this topic */
    uint32_t n;
};

struct kprod_part {
    uint32_t topic_idx;
    int32_t partition;
    struct kstr records; /* null or a Kafka record set */
};

struct kprod_req {
    struct kstr txn; /* transactional id (null unless transactional) */
    int16_t acks;    /* 0, 1 or -1 */
    int32_t timeout_ms;
    size_t n_topics, n_parts;
    struct ktopic_span *topics;
    struct kprod_part *parts;
};

struct kfetch_part {
    uint32_t topic_idx;
    int32_t partition;
    int64_t offset;
    int32_t max_bytes;
};

struct kfetch_req {
    int32_t max_wait_ms;
    int32_t min_bytes;
    int32_t max_bytes;
    size_t n_topics, n_parts;
    struct ktopic_span *topics;
    struct kfetch_part *parts;
};

/* Produce v3+ body. 0, VERITY_ECORRUPT (does not decode exactly to the end,
 * or acks not in {-1, 0, 1}) or -ENOMEM; *out is zeroed on error. */
int kprod_parse(struct kr *r, int16_t version, struct kprod_req *out)
    __attribute__((warn_unused_result));
void kprod_req_free(struct kprod_req *q);

/* Fetch v4+ body. 0, VERITY_ECORRUPT or -ENOMEM. */
int kfetch_parse(struct kr *r, int16_t version, struct kfetch_req *out)
    __attribute__((warn_unused_result));
void kfetch_req_free(struct kfetch_req *q);

/* SASL PLAIN's message (RFC 4616): authzid NUL authcid NUL passwd, none of
 * them holding NUL, at most KSASL_PLAIN_MAX bytes. Copies it into buf (cap
 * > len) and points the three parts into buf. 0 or VERITY_ECORRUPT. */
#define KSASL_PLAIN_MAX 512
int ksasl_plain_parse(const uint8_t *p, int32_t len, char *buf, size_t cap, const char **authzid,
                      const char **authcid, const char **passwd)
    __attribute__((warn_unused_result));

#endif
