/*
 * group_snap: the durable part of a `struct group_state` as bytes and back,
 * so that a restart loads a snapshot and replays only the group log's tail
 * (broker/groups_snap.c does the file I/O; this half is pure: no I/O, no
 * clock). Format and validity rules at the top of group_snap.c.
 *
 * Loading yields exactly the state that replaying the group log through the
 * snapshot's seq would build (REPLAY, entries IDLE), so the shell goes on
 * with group_apply for the tail and group_recover as before.
 */
#ifndef VERITY_GROUP_SNAP_H
#define VERITY_GROUP_SNAP_H

#include <stddef.h>
#include <stdint.h>

#include "broker/group/group.h"

/*
 * Encodes the durable state of st into *out (malloc'd, the caller frees),
 * *len bytes. The state must be live (group_recover ran: a REPLAY state may
 * be a replay that stopped half-way) and quiescent: no open progress record
 * and every emitted record drained (group_flush, then group_next_record
 * until false); otherwise -EAGAIN and nothing is encoded. 0, -EAGAIN or
 * -ENOMEM.
 */
int group_snap_encode(const struct group_state *st, uint8_t **out, size_t *len) GROUP_WUR;

/*
 * Loads an encoding into st, which must be new (group_state_new, nothing
 * applied). 0; VERITY_ECORRUPT or VERITY_EVERSION for bytes that are not a
 * valid state, VERITY_ELIMIT, -ENOMEM: then st is in an unspecified state
 * and the caller frees it and starts from a new one. buf is borrowed.
 */
int group_snap_load(struct group_state *st, const uint8_t *buf, size_t len) GROUP_WUR;

/* The seq of the last record the state covers (group_last_seq after load). */
uint64_t group_snap_seq(const struct group_state *st);

#endif
