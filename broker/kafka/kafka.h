/*
 * The Kafka protocol listener (issue 15): the broker's only hooks into
 * broker/kafka/. Loop thread only. All functions are no-ops when
 * kafka_listen is off ("" in the config).
 */
#ifndef VERITY_KAFKA_H
#define VERITY_KAFKA_H

#include <stddef.h>

struct broker;

/* Binds cfg.kafka_listen and opens the Kafka group offsets log. 0 or an
 * error (logged). */
int kafka_start(struct broker *b) __attribute__((warn_unused_result));
/* Stops accepting new Kafka connections; parked group requests are answered
 * (NOT_COORDINATOR) so shutdown does not wait for a rebalance. */
void kafka_stop_accepting(struct broker *b);
/* Closes every Kafka connection (requests in flight are dropped). */
void kafka_close_all(struct broker *b);
/* Kafka requests in flight (graceful shutdown waits for them). */
size_t kafka_inflight_total(const struct broker *b);
/* Frees everything (after kafka_close_all); closes the offsets log. */
void kafka_free(struct broker *b);
/* A partition closes (topic deleted, shutdown): the Fetch read-ahead
 * forgets it. */
struct partition;
void kafka_part_closing(struct partition *p);
/* The bound "host:port", or "off". */
const char *kafka_addr(const struct broker *b);

/* Kafka classic groups seen through the native admin requests, so that
 * `verity group list|describe` shows their committed offsets and lag. */
struct req;
struct Verity__GroupSummary;
/* One summary per Kafka group (mode GROUP_MODE_KAFKA, unacked = lag of the
 * committed offsets), sorted by name; *n_out 0 when the listener is off.
 * The strings point into the groups: use before returning to the loop.
 * 0 or -ENOMEM. */
int kafka_group_summaries(struct broker *b, struct Verity__GroupSummary ***out, size_t *n_out)
    __attribute__((warn_unused_result));
void kafka_group_summaries_free(struct Verity__GroupSummary **v, size_t n);
/* Answers a DescribeGroupRequest with kafka set (VERITY_ENOTFOUND when no
 * Kafka group has that name or the listener is off). */
void kafka_describe_group(struct req *r, const char *name);

#endif
