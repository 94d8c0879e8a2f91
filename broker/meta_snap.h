/*
 * meta_snap: the metadata state as bytes, and back (no broker, no I/O).
 *
 * The same payload is the snapshot of the meta log (<data>/__meta/meta.snap,
 * broker/meta.c) and the state a `__meta` replica copies from a peer in a
 * cluster state transfer (broker/cluster.c, section "__meta state
 * transfer"; docs/REPLICATION.md "State transfer of `__meta`"):
 *
 *   u32 n, then n bytes: a JSON array of create_topic records (the meta log
 *                        format, broker/meta.c), one per live topic
 *   u64 producers, then producers x i16 epoch (pid 1.., -1 = not issued):
 *                        producers is the allocation high-water mark (the
 *                        next new id is producers + 1)
 *   optionally u32 m, then m bytes: the auth_change entries (b->meta.auth)
 *                        as an auth_file JSON object (auth_store_parse)
 *
 * meta_image_decode accepts the bytes only if every part is valid: the JSON
 * an array of create_topic objects whose every field is in range (the rules
 * of the meta log's replay), names unique, producers <= META_PRODUCER_ID_MAX,
 * every epoch -1..INT16_MAX, the auth section a valid store and no byte left
 * over. Anything else is VERITY_ECORRUPT and nothing is kept, so a peer's or
 * a disk's bytes either decode into a whole image or change nothing.
 */
#ifndef VERITY_BROKER_META_SNAP_H
#define VERITY_BROKER_META_SNAP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "broker/broker_int.h"

struct auth_store;

struct meta_topic_rec {
    char name[VERITY_TOPIC_NAME_MAX + 1];
    struct topic_cfg cfg;
    int64_t created_ms;
};

struct meta_image {
    struct meta_topic_rec *topics;
    size_t n_topics;
    int16_t *epochs;      /* n_producers entries: epochs[pid - 1], -1 = not issued */
    uint64_t n_producers; /* the allocation high-water mark */
    struct auth_store *auth; /* NULL: no entry */
};

/* *out = the integer member k of o, when it is one and within [lo, hi];
 * otherwise VERITY_EINVAL. */
int meta_json_int(json_t *o, const char *k, int64_t lo, int64_t hi, int64_t *out);

/* Parses one create_topic record (the meta log's format) into out. 0, or
 * VERITY_EINVAL with why filled. */
int meta_topic_rec_parse(json_t *rec, struct meta_topic_rec *out, char *why, size_t cap)
    __attribute__((warn_unused_result));

/* Encodes im (topics in order). 0 with *out (malloc'd) and *len, -ENOMEM,
 * or VERITY_EINVAL for an image that would not decode. */
int meta_image_encode(const struct meta_image *im, uint8_t **out, size_t *len)
    __attribute__((warn_unused_result));

/* Decodes exactly len bytes into *im (zeroed first). 0, VERITY_ECORRUPT or
 * -ENOMEM; on error *im holds nothing. */
int meta_image_decode(const uint8_t *buf, size_t len, struct meta_image *im)
    __attribute__((warn_unused_result));

void meta_image_free(struct meta_image *im);

#endif
