/*
 * Control offsets at the tail of a group's partitions. A control batch
 * (a checkpoint, a recovery record) takes offsets but holds no message;
 * GroupFetch acknowledges such offsets for a member when it meets them, but
 * a group with nobody fetching (idle, or a finished replay group) would
 * otherwise count the checkpoint written at a clean shutdown as
 * unacknowledged forever. Once a second, and at start, this pass finds the
 * groups whose read cursor stands on a control batch near the high
 * watermark and passes those offsets through group_skip_control (delivered
 * and acknowledged by the broker, logged like any progress).
 *
 * Cost: a group partition is looked at only when its cursor is within
 * TAIL_MAX offsets of the high watermark; then one batch header is read.
 * Groups of more than 64 partitions are looked at on their first 64 (the
 * rest wait for a member's fetch, as before).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "storage/batch.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define TAIL_MAX 16u /* offsets between cursor and high watermark worth a look */

/* 1 and *end (exclusive) when offset lies in a control batch, 0 when in a
 * data batch, or a negative error. */
static int control_end(struct partition *p, uint64_t offset, uint64_t hw, uint64_t *end)
{
    struct vlog_span sp;
    size_t ns = 0;
    int rc = vlog_read(p->log, offset, hw, 1, &sp, 1, &ns);
    if (rc)
        return rc;
    if (ns == 0)
        return 0;
    uint8_t hb[BATCH_HDR_SIZE];
    ssize_t got = pread(sp.fd, hb, sizeof hb, (off_t)sp.position);
    vlog_spans_close(&sp, ns);
    if (got != (ssize_t)sizeof hb)
        return -EIO;
    struct batch_hdr h;
    if ((rc = batch_hdr_decode(hb, sizeof hb, &h)))
        return rc;
    VERITY_VERIFY(h.base_offset <= offset && offset < h.base_offset + h.record_count);
    if (!(h.attributes & BATCH_ATTR_CONTROL))
        return 0;
    *end = h.base_offset + h.record_count;
    return 1;
}

void groups_skip_control_tails(struct broker *b)
{
    struct group_state *st = b->groups.st;
    if (!st || b->stopping || !groups_live(b))
        return;
    size_t n_groups = 0;
    group_list(st, NULL, 0, &n_groups);
    if (n_groups == 0)
        return;
    const char **names = calloc(n_groups, sizeof *names);
    char (*copy)[GROUP_NAME_MAX + 1] = calloc(n_groups, sizeof *copy);
    if (!names || !copy)
        goto out;
    group_list(st, names, n_groups, &n_groups);
    /* The names are borrowed until the next change: copy them first. */
    for (size_t i = 0; i < n_groups; i++)
        snprintf(copy[i], sizeof copy[i], "%s", names[i]);
    bool changed = false;
    for (size_t gi = 0; gi < n_groups; gi++) {
        const char *name = copy[gi];
        struct group_info info;
        if (group_get_info(st, name, &info) != 0)
            continue;
        uint64_t hwm[64];
        uint32_t np = info.n_partitions < 64 ? info.n_partitions : 64;
        groups_hwm(b, info.cfg, hwm, np);
        for (uint32_t pidx = 0; pidx < np; pidx++) {
            struct group_lag lag;
            if (group_get_lag(st, name, pidx, hwm[pidx], &lag) != 0)
                continue;
            uint64_t cur = lag.read_cursor;
            if (cur >= hwm[pidx] || hwm[pidx] - cur > TAIL_MAX)
                continue;
            struct partition *p = groups_part(b, info.cfg, pidx);
            uint64_t end = 0;
            /* Bounded: at most TAIL_MAX offsets, each pass moves cur. */
            while (p && cur < hwm[pidx] && control_end(p, cur, hwm[pidx], &end) == 1) {
                if (end > hwm[pidx])
                    end = hwm[pidx];
                uint64_t t = 0, from = cur;
                for (; cur < end; cur++)
                    if (group_skip_control(st, name, pidx, cur, now_ms(), &t) != 0)
                        break;
                struct bgroup *bg = cur > from ? bgroup_get(b, name) : NULL;
                if (bg)
                    bg->control_acked += cur - from;
                changed |= cur > from;
                if (cur < end)
                    break;
            }
        }
    }
    if (changed)
        groups_after(b);
out:
    free(names);
    free(copy);
}
