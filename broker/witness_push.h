/*
 * witness_push: the broker offers each partition's signed checkpoint to the
 * witnesses of its configuration (C2SP tlog-witness, POST /add-checkpoint
 * with a consistency proof from the size that witness last cosigned), on
 * the event loop with libevent's HTTP client (nothing blocks), and keeps
 * the cosignatures that verify with the witness's key next to its own
 * signature: in memory (served by the admin API, http_proof.c) and in the
 * partition directory (tree.cosigned, witness-<key id>.size; the files of
 * `verity proof cosign`). docs/PROOFS.md "Witnesses", docs/OPERATIONS.md.
 *
 * Configuration (broker keys):
 *   witnesses              "URL VKEY[;URL VKEY...]": each witness's base URL
 *                          (http://HOST:PORT[/PREFIX]) and its cosignature
 *                          verifier key (type 0x04), at most WPUSH_MAX
 *   witness_interval_ms    offer a grown tree at most this often per
 *                          partition; failed offers are retried as often
 *   witness_every_batches  offer as soon as the tree grew by this many
 *                          leaves (batches) since the last offer (0 = off)
 *   witness_timeout_ms     one request's deadline
 *
 * Event loop thread only.
 */
#ifndef VERITY_BROKER_WITNESS_PUSH_H
#define VERITY_BROKER_WITNESS_PUSH_H

#include <stddef.h>
#include <stdint.h>

#define WPUSH_MAX      8
#define WPUSH_TEXT_MAX 4096 /* the witnesses key */

struct broker;
struct evbuffer;

/* Checks the witnesses text (config.c's bcfg_check). 0 or VERITY_EINVAL
 * with a message naming the entry. */
int wpush_check_config(const char *text, char *err, size_t cap)
    __attribute__((warn_unused_result));

/* Starts pushing when witnesses are configured (and the broker signs). 0
 * or an error (logged). */
int wpush_start(struct broker *b) __attribute__((warn_unused_result));
/* Cancels requests in flight and frees everything. NULL-safe on b->wpush. */
void wpush_stop(struct broker *b);

/* The latest checkpoint of topic/partition that at least one witness
 * cosigned: Verity's signed note followed by every cosignature line
 * collected for it, NUL-terminated, borrowed until the next loop pass; its
 * tree size in *size. NULL when none. */
const char *wpush_cosigned(struct broker *b, const char *topic, uint32_t partition,
                           uint64_t *size);

/* Prometheus lines of the verity_witness_* metrics (none without witnesses). */
void wpush_metrics_render(struct broker *b, struct evbuffer *o);

#endif
