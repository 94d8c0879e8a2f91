/*
 * Sampled path trace of produced messages (config trace_sample, off by
 * default): for every Nth single-batch produce the broker keeps the
 * CLOCK_MONOTONIC times of its stages, keyed by topic, partition and base
 * offset, in a ring of TRACE_ROWS rows that GET /debug/trace on the admin
 * HTTP port prints (docs/OPERATIONS.md). `verity bench --trace` joins them
 * with the client's own times (enqueue, send, ack, delivery) by offset.
 *
 * Stages: recv (request decoded), append0/append1 (around the propose:
 * write into the log), sync0/sync1 (the fdatasync that made it durable, from
 * the commit thread), commit (the loop learned the high watermark passed
 * it), answer (the produce answer handed to the connection), deliver (the
 * first fetch or group fetch answer that carried it was built). On a
 * replicated partition sync0/sync1 are the op's hand-over to the core and
 * its prepare + header mark durable in the primary's journal, commit the
 * quorum commit (cluster_part_trace).
 * Loop thread only; costs nothing when trace_sample is 0.
 */
#ifndef VERITY_BROKER_TRACE_H
#define VERITY_BROKER_TRACE_H

#include <stdint.h>

struct broker;
struct partition;
struct evbuffer;

#define TRACE_ROWS 4096

struct trace_row {
    const struct partition *part; /* identity only; may be gone when printed */
    char topic[256];
    uint32_t partition;
    uint64_t offset;
    int64_t recv, append0, append1, sync0, sync1, commit, answer, deliver;
};

/* b->trace: allocated at start when trace_sample > 0, else NULL. */
struct trace {
    uint32_t sample; /* every Nth produce */
    uint64_t seen;
    uint64_t next;   /* rows written so far (ring position = next % TRACE_ROWS) */
    struct trace_row rows[TRACE_ROWS];
};

/* A sampled produce: -1 when this one is not traced, else the row. */
long trace_produce(struct broker *b, const struct partition *p, uint64_t offset, int64_t recv,
                   int64_t append0, int64_t append1);
/* Sets the answer time of row (from trace_produce), if it is still there. */
void trace_answer(struct broker *b, long row, int64_t t);
/* The high watermark of p reached hw at t, after the sync [sync0, sync1]. */
void trace_commit(struct broker *b, const struct partition *p, uint64_t hw, int64_t sync0,
                  int64_t sync1, int64_t t);
/* A fetch answer carrying [from, to) of topic/partition was built at t. */
void trace_deliver(struct broker *b, const char *topic, uint32_t partition, uint64_t from,
                   uint64_t to, int64_t t);
/* Text: one line per row, oldest first (GET /debug/trace). */
void trace_render(const struct broker *b, struct evbuffer *out);

#endif
