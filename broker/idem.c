/*
 * Partition idempotence state (rules in idem.h).
 *
 * Invariants: pcount / kcount equal the entries in the tables; the key FIFO
 * holds every key exactly once in append order, so expiry only looks at its
 * head; a producer's kept batches are in sequence order, newest at `newest`,
 * and consecutive ones are contiguous (last_seq + 1 == next base_seq).
 *
 * Snapshot payload (idem_encode, little-endian):
 *
 *   u32 producers, then per producer 140 bytes:
 *     i64 pid, i16 epoch, u8 n, u8 newest, i64 last_ms,
 *     IDEM_SEQ_KEEP x (i32 base_seq, i32 last_seq, u64 base_offset, u64 last_offset)
 *   u32 keys, then per key in FIFO order (oldest first) 40 bytes:
 *     16 key bytes, u64 base_offset, u64 last_offset, i64 time_ms
 *
 * Valid only if every count fits the remaining bytes exactly, pid >= 0 and
 * unique, epoch >= 0, n <= IDEM_SEQ_KEEP, newest < IDEM_SEQ_KEEP, and every
 * kept batch has last_offset >= base_offset.
 */
#include "broker/idem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verity/errors.h"
#include "verity/verify.h"

/* ---- SipHash-2-4 (Aumasson, Bernstein) ------------------------------------ */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

static uint64_t siphash(const uint64_t k[2], const uint8_t *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ull ^ k[0];
    uint64_t v1 = 0x646f72616e646f6dull ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ k[0];
    uint64_t v3 = 0x7465646279746573ull ^ k[1];
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = get_le64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static size_t pid_bucket(const struct idem *s, int64_t pid)
{
    uint8_t b[8];
    put_le64(b, (uint64_t)pid);
    return (size_t)siphash(s->seed, b, 8) & (s->pcap - 1);
}

static size_t key_bucket(const struct idem *s, const uint8_t *key)
{
    return (size_t)siphash(s->seed, key, BATCH_IDEM_KEY_SIZE) & (s->kcap - 1);
}

int idem_init(struct idem *s, size_t producers_max, size_t keys_max, int64_t window_ms,
              const uint8_t seed[16])
{
    memset(s, 0, sizeof *s);
    s->pcap = 64;
    s->kcap = 64;
    s->pbuckets = calloc(s->pcap, sizeof *s->pbuckets);
    s->kbuckets = calloc(s->kcap, sizeof *s->kbuckets);
    if (!s->pbuckets || !s->kbuckets) {
        idem_deinit(s);
        return -ENOMEM;
    }
    s->producers_max = producers_max;
    s->keys_max = keys_max;
    s->window_ms = window_ms;
    s->seed[0] = get_le64(seed);
    s->seed[1] = get_le64(seed + 8);
    return 0;
}

void idem_deinit(struct idem *s)
{
    if (s->pbuckets) {
        for (size_t i = 0; i < s->pcap; i++) {
            struct idem_producer *p = s->pbuckets[i];
            while (p) {
                struct idem_producer *next = p->hnext;
                free(p);
                p = next;
            }
        }
    }
    struct idem_key *k = s->khead;
    while (k) {
        struct idem_key *next = k->fnext;
        free(k);
        k = next;
    }
    free(s->pbuckets);
    free(s->kbuckets);
    memset(s, 0, sizeof *s);
}

const struct idem_producer *idem_producer_get(const struct idem *s, int64_t pid)
{
    for (struct idem_producer *p = s->pbuckets[pid_bucket(s, pid)]; p; p = p->hnext)
        if (p->pid == pid)
            return p;
    return NULL;
}

static struct idem_key *key_get(const struct idem *s, const uint8_t *key)
{
    for (struct idem_key *k = s->kbuckets[key_bucket(s, key)]; k; k = k->hnext)
        if (memcmp(k->key, key, BATCH_IDEM_KEY_SIZE) == 0)
            return k;
    return NULL;
}

static int say(char *msg, size_t cap, int code, const char *text, long long a, long long b)
{
    if (msg && cap)
        snprintf(msg, cap, text, a, b);
    return code;
}

static bool has_key(const struct batch_hdr *h)
{
    return (h->attributes & BATCH_ATTR_IDEM_KEY) != 0;
}

static int check_producer(const struct idem *s, const struct batch_hdr *h, struct idem_batch *dup,
                          char *msg, size_t cap)
{
    if (h->producer_epoch < 0 || h->base_sequence < 0)
        return say(msg, cap, VERITY_EINVAL, "producer %lld: epoch and base_sequence must be >= 0",
                   (long long)h->producer_id, 0);
    if ((int64_t)h->base_sequence + h->record_count - 1 > INT32_MAX)
        return say(msg, cap, VERITY_EINVAL,
                   "producer %lld: sequence overflows at base_sequence %lld; re-init the producer",
                   (long long)h->producer_id, h->base_sequence);
    int32_t last_seq = (int32_t)(h->base_sequence + (int64_t)h->record_count - 1);
    const struct idem_producer *p = idem_producer_get(s, h->producer_id);
    if (!p) {
        if (s->pcount >= s->producers_max)
            return say(msg, cap, VERITY_ELIMIT,
                       "partition tracks %lld producers (partition_producers_max)",
                       (long long)s->pcount, 0);
        /* A producer this partition does not know starts at sequence 0.
         * Accepting a later batch first would let a retry of the earlier
         * one (refused retriably, e.g. the topic not here yet) be taken
         * for a duplicate, acknowledged and never written. A producer
         * whose state expired gets the same refusal and starts a new
         * epoch (the client does so on a gap at its oldest batch). */
        if (h->base_sequence != 0)
            return say(msg, cap, VERITY_EOUTOFORDER,
                       "producer %lld is not known on this partition: its first batch must start "
                       "at sequence 0, got %lld",
                       (long long)h->producer_id, h->base_sequence);
        return IDEM_APPEND;
    }
    if (h->producer_epoch < p->epoch)
        return say(msg, cap, VERITY_EFENCED, "producer epoch %lld is older than the current %lld",
                   h->producer_epoch, p->epoch);
    if (h->producer_epoch > p->epoch) {
        if (h->base_sequence != 0)
            return say(msg, cap, VERITY_EOUTOFORDER,
                       "new epoch %lld must start at sequence 0, got %lld", h->producer_epoch,
                       h->base_sequence);
        return IDEM_APPEND;
    }
    const struct idem_batch *newest = &p->b[p->newest];
    for (unsigned i = 0; i < p->n; i++) {
        const struct idem_batch *b = &p->b[i];
        if (b->base_seq == h->base_sequence) {
            if (b->last_seq != last_seq)
                return say(msg, cap, VERITY_EOUTOFORDER,
                           "sequence %lld was appended with a different record count (last %lld)",
                           h->base_sequence, b->last_seq);
            *dup = *b;
            return IDEM_DUPLICATE;
        }
    }
    if ((int64_t)h->base_sequence == (int64_t)newest->last_seq + 1)
        return IDEM_APPEND;
    if (h->base_sequence <= newest->last_seq)
        return say(msg, cap, VERITY_EDUPLICATE,
                   "sequence %lld is older than the last batches kept (newest ends at %lld)",
                   h->base_sequence, newest->last_seq);
    return say(msg, cap, VERITY_EOUTOFORDER, "expected sequence %lld, got %lld",
               (long long)newest->last_seq + 1, h->base_sequence);
}

int idem_check(const struct idem *s, const struct batch_hdr *h, int64_t now_ms,
               struct idem_batch *dup, char *msg, size_t cap)
{
    if (h->producer_id >= 0)
        return check_producer(s, h, dup, msg, cap);
    if (h->producer_id != -1 || h->producer_epoch != -1 || h->base_sequence != -1)
        return say(msg, cap, VERITY_EINVAL,
                   "producer_id %lld: without a producer, epoch and sequence must be -1",
                   (long long)h->producer_id, 0);
    if (!has_key(h))
        return IDEM_APPEND;
    const struct idem_key *k = key_get(s, h->idem_key);
    if (k && k->time_ms >= now_ms - s->window_ms) {
        dup->base_seq = dup->last_seq = -1;
        dup->base_offset = k->base_offset;
        dup->last_offset = k->last_offset;
        return IDEM_DUPLICATE;
    }
    if (!k && s->kcount >= s->keys_max)
        return say(msg, cap, VERITY_ELIMIT,
                   "partition remembers %lld idempotency keys (idempotency_keys_max)",
                   (long long)s->kcount, 0);
    return IDEM_APPEND;
}

static int grow_producers(struct idem *s)
{
    size_t ncap = s->pcap * 2;
    struct idem_producer **nb = calloc(ncap, sizeof *nb);
    if (!nb)
        return -ENOMEM;
    struct idem_producer **old = s->pbuckets;
    size_t ocap = s->pcap;
    s->pbuckets = nb;
    s->pcap = ncap;
    for (size_t i = 0; i < ocap; i++) {
        struct idem_producer *p = old[i];
        while (p) {
            struct idem_producer *next = p->hnext;
            size_t bi = pid_bucket(s, p->pid);
            p->hnext = nb[bi];
            nb[bi] = p;
            p = next;
        }
    }
    free(old);
    return 0;
}

static int grow_keys(struct idem *s)
{
    size_t ncap = s->kcap * 2;
    struct idem_key **nb = calloc(ncap, sizeof *nb);
    if (!nb)
        return -ENOMEM;
    free(s->kbuckets);
    s->kbuckets = nb;
    s->kcap = ncap;
    for (struct idem_key *k = s->khead; k; k = k->fnext) {
        size_t bi = key_bucket(s, k->key);
        k->hnext = nb[bi];
        nb[bi] = k;
    }
    return 0;
}

static int record_producer(struct idem *s, const struct batch_hdr *h, uint64_t base_offset,
                           uint64_t last_offset, int64_t time_ms)
{
    struct idem_producer *p = (struct idem_producer *)idem_producer_get(s, h->producer_id);
    if (!p) {
        if (s->pcount >= s->pcap && grow_producers(s))
            return -ENOMEM;
        p = calloc(1, sizeof *p);
        if (!p)
            return -ENOMEM;
        p->pid = h->producer_id;
        p->epoch = h->producer_epoch;
        p->last_ms = time_ms;
        size_t bi = pid_bucket(s, p->pid);
        p->hnext = s->pbuckets[bi];
        s->pbuckets[bi] = p;
        s->pcount++;
    }
    /* The live path records only what idem_check allowed, so a batch that
     * does not follow the newest kept one can only come from a rebuild over
     * a log written under other rules; the log is the truth, so start the
     * ring again from it. */
    if (h->producer_epoch != p->epoch || p->n == 0 ||
        (int64_t)h->base_sequence != (int64_t)p->b[p->newest].last_seq + 1) {
        p->epoch = h->producer_epoch;
        p->n = 0;
        p->newest = IDEM_SEQ_KEEP - 1;
    }
    p->newest = (uint8_t)((p->newest + 1) % IDEM_SEQ_KEEP);
    struct idem_batch *b = &p->b[p->newest];
    b->base_seq = h->base_sequence;
    b->last_seq = (int32_t)(h->base_sequence + (int64_t)h->record_count - 1);
    b->base_offset = base_offset;
    b->last_offset = last_offset;
    if (p->n < IDEM_SEQ_KEEP)
        p->n++;
    if (time_ms > p->last_ms)
        p->last_ms = time_ms;
    VERITY_VERIFY(b->last_offset >= b->base_offset);
    VERITY_VERIFY(p->n <= IDEM_SEQ_KEEP && p->newest < IDEM_SEQ_KEEP);
    return 0;
}

static int key_insert(struct idem *s, const uint8_t *key, uint64_t base_offset,
                      uint64_t last_offset, int64_t time_ms);

static void key_unlink_head(struct idem *s)
{
    struct idem_key *k = s->khead;
    struct idem_key **pp = &s->kbuckets[key_bucket(s, k->key)];
    while (*pp != k)
        pp = &(*pp)->hnext;
    *pp = k->hnext;
    s->khead = k->fnext;
    if (!s->khead)
        s->ktail = NULL;
    s->kcount--;
    free(k);
}

int idem_record(struct idem *s, const struct batch_hdr *h, uint64_t base_offset,
                uint64_t last_offset, int64_t time_ms)
{
    if (h->producer_id >= 0)
        return record_producer(s, h, base_offset, last_offset, time_ms);
    if (!has_key(h) || s->keys_max == 0)
        return 0;
    struct idem_key *old = key_get(s, h->idem_key);
    if (old) {
        /* Seen again after its window: the new append is the one to answer
         * with. Keep one entry per key: drop the old one (it is older than
         * every key still in the window, so it sits at the FIFO head side). */
        while (s->khead && s->khead != old && s->khead->time_ms < time_ms - s->window_ms)
            key_unlink_head(s);
        if (s->khead == old)
            key_unlink_head(s);
        else
            old->time_ms = INT64_MIN; /* unreachable as a duplicate; expires first */
    }
    return key_insert(s, h->idem_key, base_offset, last_offset, time_ms);
}

/* Appends a key at the FIFO tail. 0 or -ENOMEM. */
static int key_insert(struct idem *s, const uint8_t *key, uint64_t base_offset,
                      uint64_t last_offset, int64_t time_ms)
{
    if (s->kcount >= s->kcap && grow_keys(s))
        return -ENOMEM;
    struct idem_key *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    memcpy(k->key, key, BATCH_IDEM_KEY_SIZE);
    k->base_offset = base_offset;
    k->last_offset = last_offset;
    k->time_ms = time_ms;
    size_t bi = key_bucket(s, k->key);
    k->hnext = s->kbuckets[bi];
    s->kbuckets[bi] = k;
    if (s->ktail)
        s->ktail->fnext = k;
    else
        s->khead = k;
    s->ktail = k;
    s->kcount++;
    return 0;
}

void idem_expire(struct idem *s, int64_t now_ms)
{
    while (s->khead && s->khead->time_ms < now_ms - s->window_ms)
        key_unlink_head(s);
}

size_t idem_expire_producers(struct idem *s, int64_t now_ms)
{
    size_t n = 0;
    if (s->producer_retention_ms <= 0)
        return 0;
    for (size_t i = 0; i < s->pcap; i++) {
        struct idem_producer **pp = &s->pbuckets[i];
        while (*pp) {
            struct idem_producer *p = *pp;
            if (p->last_ms < now_ms - s->producer_retention_ms) {
                *pp = p->hnext;
                free(p);
                s->pcount--;
                n++;
            } else {
                pp = &p->hnext;
            }
        }
    }
    return n;
}

/* ---- snapshot ---------------------------------------------------------------- */

#define PROD_BYTES (8 + 2 + 1 + 1 + 8 + IDEM_SEQ_KEEP * 24)
#define KEY_BYTES (BATCH_IDEM_KEY_SIZE + 24)

int idem_encode(const struct idem *s, uint8_t **out, size_t *len)
{
    size_t n = 8 + s->pcount * (size_t)PROD_BYTES + s->kcount * (size_t)KEY_BYTES;
    uint8_t *buf = malloc(n), *p = buf;
    if (!buf)
        return -ENOMEM;
    put_le32(p, (uint32_t)s->pcount);
    p += 4;
    size_t seen = 0;
    for (size_t i = 0; i < s->pcap; i++) {
        for (const struct idem_producer *q = s->pbuckets[i]; q; q = q->hnext) {
            put_le64(p, (uint64_t)q->pid);
            put_le16(p + 8, (uint16_t)q->epoch);
            p[10] = q->n;
            p[11] = q->newest;
            put_le64(p + 12, (uint64_t)q->last_ms);
            p += 20;
            for (unsigned j = 0; j < IDEM_SEQ_KEEP; j++) {
                put_le32(p, (uint32_t)q->b[j].base_seq);
                put_le32(p + 4, (uint32_t)q->b[j].last_seq);
                put_le64(p + 8, q->b[j].base_offset);
                put_le64(p + 16, q->b[j].last_offset);
                p += 24;
            }
            seen++;
        }
    }
    VERITY_VERIFY(seen == s->pcount);
    put_le32(p, (uint32_t)s->kcount);
    p += 4;
    seen = 0;
    for (const struct idem_key *k = s->khead; k; k = k->fnext) {
        memcpy(p, k->key, BATCH_IDEM_KEY_SIZE);
        put_le64(p + 16, k->base_offset);
        put_le64(p + 24, k->last_offset);
        put_le64(p + 32, (uint64_t)k->time_ms);
        p += KEY_BYTES;
        seen++;
    }
    VERITY_VERIFY(seen == s->kcount);
    VERITY_VERIFY((size_t)(p - buf) == n);
    *out = buf;
    *len = n;
    return 0;
}

static void idem_clear(struct idem *s)
{
    for (size_t i = 0; i < s->pcap; i++) {
        while (s->pbuckets[i]) {
            struct idem_producer *p = s->pbuckets[i];
            s->pbuckets[i] = p->hnext;
            free(p);
        }
    }
    s->pcount = 0;
    while (s->khead)
        key_unlink_head(s);
}

static int decode_producers(struct idem *s, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    if (end - p < 4)
        return VERITY_ECORRUPT;
    uint32_t n = get_le32(p);
    p += 4;
    if ((uint64_t)n * PROD_BYTES > (uint64_t)(end - p))
        return VERITY_ECORRUPT;
    if (n > s->producers_max)
        return VERITY_ELIMIT;
    for (uint32_t i = 0; i < n; i++, p += PROD_BYTES) {
        int64_t pid = (int64_t)get_le64(p);
        int16_t epoch = (int16_t)get_le16(p + 8);
        if (pid < 0 || epoch < 0 || p[10] > IDEM_SEQ_KEEP || p[11] >= IDEM_SEQ_KEEP ||
            idem_producer_get(s, pid))
            return VERITY_ECORRUPT;
        if (s->pcount >= s->pcap && grow_producers(s))
            return -ENOMEM;
        struct idem_producer *q = calloc(1, sizeof *q);
        if (!q)
            return -ENOMEM;
        q->pid = pid;
        q->epoch = epoch;
        q->n = p[10];
        q->newest = p[11];
        q->last_ms = (int64_t)get_le64(p + 12);
        for (unsigned j = 0; j < IDEM_SEQ_KEEP; j++) {
            const uint8_t *b = p + 20 + j * 24;
            q->b[j].base_seq = (int32_t)get_le32(b);
            q->b[j].last_seq = (int32_t)get_le32(b + 4);
            q->b[j].base_offset = get_le64(b + 8);
            q->b[j].last_offset = get_le64(b + 16);
        }
        size_t bi = pid_bucket(s, pid);
        q->hnext = s->pbuckets[bi];
        s->pbuckets[bi] = q;
        s->pcount++;
        for (unsigned j = 0; j < q->n; j++) {
            const struct idem_batch *b = &q->b[(q->newest + IDEM_SEQ_KEEP - j) % IDEM_SEQ_KEEP];
            if (b->last_offset < b->base_offset || b->last_seq < b->base_seq)
                return VERITY_ECORRUPT;
        }
    }
    *pp = p;
    return 0;
}

int idem_decode(struct idem *s, const uint8_t *buf, size_t len)
{
    const uint8_t *p = buf, *end = buf + len;
    VERITY_VERIFY(s->pcount == 0 && s->kcount == 0);
    int rc = decode_producers(s, &p, end);
    if (rc)
        goto fail;
    rc = VERITY_ECORRUPT;
    if (end - p < 4)
        goto fail;
    uint32_t n = get_le32(p);
    p += 4;
    if ((uint64_t)n * KEY_BYTES != (uint64_t)(end - p))
        goto fail;
    if (n > s->keys_max) {
        rc = VERITY_ELIMIT;
        goto fail;
    }
    for (uint32_t i = 0; i < n; i++, p += KEY_BYTES) {
        int64_t t = (int64_t)get_le64(p + 32);
        if (get_le64(p + 24) < get_le64(p + 16)) {
            rc = VERITY_ECORRUPT;
            goto fail;
        }
        if (t == INT64_MIN || key_get(s, p))
            continue; /* superseded in the live state: not a duplicate any more */
        if ((rc = key_insert(s, p, get_le64(p + 16), get_le64(p + 24), t)))
            goto fail;
    }
    VERITY_VERIFY(p == end);
    return 0;
fail:
    idem_clear(s);
    return rc;
}
