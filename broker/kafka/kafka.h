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
/* The bound "host:port", or "off". */
const char *kafka_addr(const struct broker *b);

#endif
