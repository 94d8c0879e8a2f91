/*
 * Consumer-group snapshots, the shell half: <data-dir>/__groups/groups.snap
 * (file format storage/snap.h, payload broker/group/group_snap.c).
 *
 * groups_open loads the snapshot when it passes its checks and still matches
 * the group log (a batch ends at the offset it covers, with its chain hash),
 * then replays only the records past it; if that tail does not apply to the
 * loaded state it starts over from an empty state and the whole log, so a
 * bad snapshot can cost time but never state. groups_snapshot writes one
 * when the state is quiescent (no open progress record, every record
 * appended) and the whole log is durable: from the housekeeping tick every
 * snapshot_records log records, and at a clean close.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/group/group_snap.h"
#include "storage/snap.h"
#include "verity/errors.h"

#define GROUPS_SNAP "groups.snap"

static void snap_dir(const struct broker *b, char *out, size_t cap)
{
    snprintf(out, cap, "%s/__groups", b->cfg.data_dir);
}

int groups_snapshot(struct broker *b, bool force)
{
    struct groups *gs = &b->groups;
    struct vlog_info info;
    struct snap_hdr h = {.kind = SNAP_GROUPS};
    uint8_t *buf = NULL;
    size_t len = 0;
    char dir[BCFG_PATH_MAX + 32];
    int rc;
    if (!gs->st || !gs->log || gs->error || gs->seq_appended != group_last_seq(gs->st))
        return 0;
    /* cluster: only a state that is all committed (a coordinator's may hold
     * proposals the log has not got) */
    if (gs->repl && gs->seq_durable != group_last_seq(gs->st))
        return 0;
    vlog_get_info(gs->log, &info);
    if (info.end_offset == gs->snap_offset || info.error || info.durable_end != info.end_offset)
        return 0;
    if (!force && (b->cfg.snapshot_records == 0 ||
                   info.end_offset - gs->snap_offset < b->cfg.snapshot_records))
        return 0;
    rc = group_snap_encode(gs->st, &buf, &len);
    if (rc == -EAGAIN)
        return 0; /* a progress record is open: try again on a later tick */
    h.offset = info.end_offset;
    if (rc || (rc = snap_chain_at(gs->log, h.offset, h.chain)))
        goto out;
    h.length = len;
    snap_dir(b, dir, sizeof dir);
    rc = snap_write(b->cfg.io, dir, GROUPS_SNAP, &h, buf, len);
out:
    free(buf);
    if (rc) {
        b->met.snapshot_failures++;
        blog(BLOG_WARN, "group_snapshot_failed", "error=%s", verity_errname(rc));
        return rc;
    }
    b->met.snapshots_written++;
    gs->snap_offset = h.offset;
    blog(BLOG_DEBUG, "group_snapshot_written", "offset=%" PRIu64 " seq=%" PRIu64 " bytes=%zu",
         h.offset, group_snap_seq(gs->st), len);
    return 0;
}

int groups_snap_reset(struct broker *b, const char *why)
{
    struct groups *gs = &b->groups;
    b->met.snapshots_ignored++;
    blog(BLOG_WARN, "group_snapshot_ignored", "reason=\"%s\" (replaying the whole log)", why);
    group_state_free(gs->st);
    gs->st = NULL;
    gs->snap_offset = 0;
    return group_state_new(b->cfg.group_pending_max, &gs->st);
}

int groups_snap_load(struct broker *b, uint64_t *from)
{
    struct groups *gs = &b->groups;
    struct snap_hdr h;
    uint8_t *buf = NULL;
    const char *why = NULL;
    char dir[BCFG_PATH_MAX + 32];
    *from = 0;
    snap_dir(b, dir, sizeof dir);
    int rc = snap_read(b->cfg.io, dir, GROUPS_SNAP, SNAP_GROUPS, &h, &buf);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        why = verity_errname(rc);
    else if (!snap_matches(gs->log, &h))
        why = "does not match the log";
    else if ((rc = group_snap_load(gs->st, buf, h.length)))
        why = verity_errname(rc);
    free(buf);
    if (why)
        return groups_snap_reset(b, why);
    gs->snap_offset = h.offset;
    *from = h.offset;
    return 0;
}

int groups_snap_install(struct broker *b, struct group_state *st, const uint8_t *buf, size_t len,
                        uint64_t op, uint64_t *end)
{
    struct groups *gs = &b->groups;
    struct vlog_info info;
    struct snap_hdr h = {.kind = SNAP_GROUPS};
    char dir[BCFG_PATH_MAX + 32], note[160];
    int rc;
    if (!gs->log || gs->error || gs->coord) {
        group_state_free(st);
        return VERITY_EINVAL;
    }
    /* Crash-safe order: the mark and the snapshot for the offset after it
     * are durable before the caller records the applied op (its ring entry
     * names that offset). A crash before that entry cuts the log back to
     * the last applied op's end, mark included, and the snapshot no longer
     * matches: the old state, at the old op. */
    int n = snprintf(note, sizeof note, "{\"op\":%" PRIu64 ",\"seq\":%" PRIu64 ",\"bytes\":%zu}",
                     op, group_snap_seq(st), len);
    if ((rc = vlog_mark_state(gs->log, note, (size_t)n, now_ms())) || (rc = vlog_sync(gs->log)))
        goto fail;
    vlog_get_info(gs->log, &info);
    h.offset = info.end_offset;
    h.length = len;
    if ((rc = snap_chain_at(gs->log, h.offset, h.chain)))
        goto fail;
    snap_dir(b, dir, sizeof dir);
    if ((rc = snap_write(b->cfg.io, dir, GROUPS_SNAP, &h, buf, len)))
        goto fail;
    group_state_free(gs->st);
    gs->st = st;
    gs->snap_offset = h.offset;
    gs->seq_appended = gs->seq_durable = group_last_seq(st);
    b->met.snapshots_written++;
    groups_changed(b);
    *end = h.offset;
    blog(BLOG_INFO, "group_state_installed",
         "op=%" PRIu64 " seq=%" PRIu64 " offset=%" PRIu64 " bytes=%zu", op, gs->seq_durable,
         h.offset, len);
    return 0;
fail:
    group_state_free(st);
    blog(BLOG_ERROR, "group_state_install_failed", "op=%" PRIu64 " error=%s", op,
         verity_errname(rc));
    return rc;
}
