/*
 * Every limit that input can grow, in one place, with their relations
 * checked at compile time. Runtime configuration may lower these; nothing may
 * raise them above the hard ceilings marked _HARD.
 */
#ifndef VERITY_LIMITS_H
#define VERITY_LIMITS_H

#define VERITY_FRAME_BYTES_MAX (16u << 20)       /* default max frame */
#define VERITY_FRAME_BYTES_HARD (64u << 20)      /* ceiling for max frame */
#define VERITY_BATCH_BYTES_MAX (8u << 20)        /* default max record batch */
#define VERITY_BATCH_RECORDS_MAX 100000u         /* records in one batch */
#define VERITY_RECORD_HEADERS_MAX 64u            /* headers on one record */
#define VERITY_KEY_BYTES_MAX (64u << 10)         /* one record key */
#define VERITY_CONNECTIONS_MAX 4096u             /* default max connections */
#define VERITY_INFLIGHT_MAX 1024u                /* requests in flight per connection */
#define VERITY_TOPIC_NAME_MAX 200u               /* bytes in a topic name */
#define VERITY_PARTITIONS_MAX 1024u              /* partitions per topic */
#define VERITY_HTTP_BODY_MAX (1u << 20)          /* admin HTTP request body */
#define VERITY_PENDING_PER_GROUP_MAX 1000000u    /* leased, unacked deliveries */
#define VERITY_ACK_OFFSETS_MAX 65536u            /* offsets in the ranges of one Ack or Extend */
#define VERITY_ITEMS_MAX 4096u                   /* entries (batches, partitions, topics, ack
                                                    ranges) in one protocol message */
#define VERITY_STRING_BYTES_MAX 1024u            /* client id, software, error text */
#define VERITY_GROUP_NAME_MAX 200u               /* bytes in a group name */
#define VERITY_MEMBER_NAME_MAX 128u              /* bytes in a group member's name */
#define VERITY_GROUP_TOPICS_MAX 16u              /* topics per group */
#define VERITY_GROUP_BACKOFF_MAX 8u              /* redelivery backoff steps */
#define VERITY_GROUP_FETCH_MAX 65536u            /* GroupFetch max_messages ceiling */
#define VERITY_GROUP_ERROR_MAX 256u              /* bytes of a nack / term error text kept */

_Static_assert(VERITY_BATCH_BYTES_MAX < VERITY_FRAME_BYTES_MAX,
               "a maximal batch must fit in a frame with its envelope");
_Static_assert(VERITY_FRAME_BYTES_MAX <= VERITY_FRAME_BYTES_HARD, "default above ceiling");
_Static_assert(VERITY_BATCH_BYTES_MAX < (1u << 31), "batch length is a u32 field");
_Static_assert(VERITY_ACK_OFFSETS_MAX <= VERITY_PENDING_PER_GROUP_MAX,
               "an ack never names more offsets than a group may have pending");
_Static_assert(VERITY_GROUP_FETCH_MAX <= VERITY_PENDING_PER_GROUP_MAX,
               "one fetch never leases more than a group may have pending");
_Static_assert(VERITY_GROUP_ERROR_MAX <= VERITY_STRING_BYTES_MAX, "error text fits a string");
_Static_assert(VERITY_GROUP_NAME_MAX <= VERITY_STRING_BYTES_MAX &&
                   VERITY_MEMBER_NAME_MAX <= VERITY_STRING_BYTES_MAX &&
                   VERITY_TOPIC_NAME_MAX <= VERITY_STRING_BYTES_MAX,
               "names are strings");

#endif
