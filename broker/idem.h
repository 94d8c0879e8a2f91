/*
 * idem: a partition's idempotence state, a pure state machine (no I/O, no
 * clock: time comes in as arguments).
 *
 * Idempotent producers (producer_id >= 0): per producer id the epoch and the
 * last IDEM_SEQ_KEEP appended batches (sequence range -> offset range). A
 * batch is appended when its base_sequence follows the newest one (or is 0
 * in a newer epoch, or any when the producer is new to the partition); a
 * batch equal to a kept one is a duplicate answered with the original
 * offsets; anything else is out of order, or too old to answer.
 *
 * Stateless producers (producer_id == -1 with BATCH_ATTR_IDEM_KEY): the
 * 16-byte keys appended within the window, oldest first, each with its
 * offsets. A key seen again within the window is a duplicate.
 *
 * The state is rebuilt after a restart by feeding every batch header of the
 * log to idem_record in log order (broker/partition.c), which yields exactly
 * the state the live broker had for the batches that survived.
 *
 * Memory: producers are capped by producers_max (a new producer beyond it is
 * refused with VERITY_ELIMIT), keys by keys_max (same). Hash tables are
 * keyed with SipHash under a per-table seed so a client cannot force
 * collisions.
 *
 * Retention: a key is kept for window_ms after its batch was appended; a
 * producer for producer_retention_ms after its newest batch (time of the
 * batch, or of the append), after which idem_expire_producers forgets it: a
 * retry from it older than that is appended again (as Kafka expires idle
 * producer ids). 0 keeps producers until producers_max refuses new ones.
 *
 * Snapshot: idem_encode / idem_decode turn the whole state into bytes and
 * back (format in idem.c), so a restart reads a snapshot and feeds only the
 * log's tail to idem_record (broker/partition.c).
 */
#ifndef VERITY_BROKER_IDEM_H
#define VERITY_BROKER_IDEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage/batch.h"

#define IDEM_SEQ_KEEP 5

struct idem_batch {
    int32_t base_seq;
    int32_t last_seq;
    uint64_t base_offset;
    uint64_t last_offset;
};

struct idem_producer {
    int64_t pid;
    int16_t epoch;
    int64_t last_ms;                    /* newest batch time (retention) */
    uint8_t n;                          /* kept batches, <= IDEM_SEQ_KEEP */
    uint8_t newest;                     /* index of the newest kept batch */
    struct idem_batch b[IDEM_SEQ_KEEP]; /* ring */
    struct idem_producer *hnext;        /* hash chain */
};

struct idem_key {
    uint8_t key[BATCH_IDEM_KEY_SIZE];
    uint64_t base_offset;
    uint64_t last_offset;
    int64_t time_ms;        /* when appended (batch time on rebuild) */
    struct idem_key *hnext; /* hash chain */
    struct idem_key *fnext; /* FIFO, oldest first */
};

struct idem {
    struct idem_producer **pbuckets; /* owned */
    size_t pcap;                     /* power of two */
    size_t pcount;
    size_t producers_max;
    struct idem_key **kbuckets; /* owned */
    size_t kcap;
    size_t kcount;
    size_t keys_max;
    struct idem_key *khead; /* oldest */
    struct idem_key *ktail; /* newest */
    int64_t window_ms;
    int64_t producer_retention_ms; /* 0 = producers never expire */
    uint64_t seed[2]; /* SipHash key */
};

enum idem_verdict { IDEM_APPEND = 0, IDEM_DUPLICATE = 1 };

/* seed: 16 random bytes chosen by the caller. 0 or -ENOMEM. */
int idem_init(struct idem *s, size_t producers_max, size_t keys_max, int64_t window_ms,
              const uint8_t seed[16]) __attribute__((warn_unused_result));
void idem_deinit(struct idem *s);

/*
 * Decides what to do with the batch whose (validated) header is h, at
 * now_ms. Returns IDEM_APPEND; IDEM_DUPLICATE with *dup holding the original
 * offsets; VERITY_EINVAL (inconsistent producer fields), VERITY_EFENCED
 * (epoch older than the partition's), VERITY_EOUTOFORDER (sequence gap),
 * VERITY_EDUPLICATE (an old sequence no longer kept), VERITY_ELIMIT
 * (producers_max or keys_max reached). msg (cap bytes) gets a sentence on
 * error. Does not change the state.
 */
int idem_check(const struct idem *s, const struct batch_hdr *h, int64_t now_ms,
               struct idem_batch *dup, char *msg, size_t cap) __attribute__((warn_unused_result));

/*
 * Records an appended batch: h's producer fields and key with its offsets,
 * appended at time_ms. Call in log order. Never refuses for a limit (the
 * check did that); returns 0 or -ENOMEM.
 */
int idem_record(struct idem *s, const struct batch_hdr *h, uint64_t base_offset,
                uint64_t last_offset, int64_t time_ms) __attribute__((warn_unused_result));

/* Forgets keys appended before now_ms - window_ms. */
void idem_expire(struct idem *s, int64_t now_ms);

/* Forgets producers whose newest batch is older than now_ms -
 * producer_retention_ms (none when that is 0). Returns how many. O(producers):
 * call on a slow timer. */
size_t idem_expire_producers(struct idem *s, int64_t now_ms);

/* Serialises the whole state into *out (malloc'd, the caller frees), *len
 * bytes. 0 or -ENOMEM. */
int idem_encode(const struct idem *s, uint8_t **out, size_t *len)
    __attribute__((warn_unused_result));

/* Loads an idem_encode output into s, which must be freshly initialised
 * (empty). 0; VERITY_ECORRUPT for bytes that are not a valid state (s is
 * then emptied again); VERITY_ELIMIT when it holds more producers or keys
 * than s allows; -ENOMEM. */
int idem_decode(struct idem *s, const uint8_t *buf, size_t len)
    __attribute__((warn_unused_result));

/* Read access for tests and metrics. NULL when unknown. */
const struct idem_producer *idem_producer_get(const struct idem *s, int64_t pid);

#endif
