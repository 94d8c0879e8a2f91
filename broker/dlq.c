/*
 * Dead letters: the shell's side of GROUP_EFFECT_DEAD_LETTER. A job reads
 * the source record, appends a copy with the dead-letter headers to the
 * group's dead-letter topic (creating the topic on demand), waits until the
 * high watermark of that partition passes it, and then reports it with
 * group_dead_lettered (docs/GROUPS.md, docs/PROTOCOL.md "Dead letters").
 *
 * Job states, and where each transition happens:
 *
 *   NEW ──dlq_step──► APPENDED ──dlq_on_commit──► DONE ──dlq_retry──► (reported, freed)
 *    │  ▲                 │ partition closes / append failed
 *    │  └──dlq_retry── RETRY ◄┘
 *    └──dlq_step (topic missing)──► TOPIC_WAIT ──topic created──► NEW
 *
 * Completion never runs inside a partition's commit callback: dlq_on_commit
 * only marks the job DONE and activates the retry event, so appending or
 * logging never re-enters a replica while it reports progress.
 *
 * The copy keeps the source key, value and (at most DLQ_SOURCE_HEADERS_MAX)
 * headers. When the source record cannot be read any more (topic deleted,
 * retention, corruption) the dead letter still goes out, with a null key
 * and value and a `verity.missing` header that says why: the group must
 * not wait forever for a record that is gone. At least once: a crash
 * between the append and the group-log record appends it again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "broker/auth.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define DLQ_HEADERS            7
#define DLQ_SOURCE_HEADERS_MAX (VERITY_RECORD_HEADERS_MAX - DLQ_HEADERS - 1)
#define DLQ_RETRY_MS           1000
#define DLQ_JOBS_MAX           100000

enum dlq_state { DLQ_NEW, DLQ_TOPIC_WAIT, DLQ_APPENDED, DLQ_DONE, DLQ_RETRY };

struct dlq_job {
    enum dlq_state state;
    char group[GROUP_NAME_MAX + 1];
    char topic[VERITY_TOPIC_NAME_MAX + 1]; /* source */
    char dlq[VERITY_TOPIC_NAME_MAX + 1];
    char error[GROUP_ERROR_MAX + 1];
    uint32_t pidx;
    uint32_t partition;
    uint64_t offset;
    uint32_t count;
    struct partition *part; /* APPENDED: where it went */
    uint64_t end;           /* APPENDED: offset after it */
    int64_t retry_at;       /* RETRY: wall ms */
    TAILQ_ENTRY(dlq_job) link;
};

static void job_free(struct broker *b, struct dlq_job *j)
{
    TAILQ_REMOVE(&b->groups.dlq_jobs, j, link);
    b->groups.n_dlq_jobs--;
    free(j);
}

static void arm_retry(struct broker *b, int64_t delay_ms)
{
    struct groups *gs = &b->groups;
    if (!gs->retry_ev)
        return;
    struct timeval tv = {(time_t)(delay_ms / 1000), (suseconds_t)(delay_ms % 1000) * 1000};
    if (delay_ms == 0) {
        event_active(gs->retry_ev, EV_TIMEOUT, 0);
        return;
    }
    if (!evtimer_pending(gs->retry_ev, NULL))
        evtimer_add(gs->retry_ev, &tv);
}

static void job_retry_later(struct broker *b, struct dlq_job *j, int err, const char *why)
{
    char q[GROUP_NAME_MAX + 8];
    blog(BLOG_WARN, "dead_letter_retry",
         "group=%s topic=%s partition=%" PRIu32 " offset=%" PRIu64 " dlq=%s reason=%s error=%s",
         blog_q(j->group, q, sizeof q), j->topic, j->partition, j->offset, j->dlq, why,
         verity_errname(err));
    j->state = DLQ_RETRY;
    j->part = NULL;
    j->retry_at = now_ms() + DLQ_RETRY_MS;
    arm_retry(b, DLQ_RETRY_MS);
}

/* Reads the source batch that holds j->offset into *buf (malloc'd). 0, or
 * an error with why set. */
static int read_source(struct broker *b, const struct dlq_job *j, uint8_t **buf, size_t *len,
                       const char **why)
{
    *buf = NULL;
    struct topic *t = topic_find_live(b, j->topic);
    struct partition *p = t && j->partition < t->cfg.partitions ? t->parts[j->partition] : NULL;
    if (!p || !p->log) {
        *why = "source partition no longer exists";
        return VERITY_ENOTFOUND;
    }
    struct vlog_span sp;
    size_t n = 0;
    int rc = vlog_read(p->log, j->offset, j->offset + 1, 1, &sp, 1, &n);
    if (rc || n == 0) {
        *why = "source record no longer stored";
        return rc ? rc : VERITY_EOFFSET;
    }
    if (sp.length > VERITY_BATCH_BYTES_MAX) {
        vlog_spans_close(&sp, n);
        *why = "source batch too large";
        return VERITY_ELIMIT;
    }
    uint8_t *m = malloc(sp.length);
    if (!m) {
        vlog_spans_close(&sp, n);
        return -ENOMEM;
    }
    ssize_t got = pread(sp.fd, m, sp.length, (off_t)sp.position);
    int err = got < 0 ? -errno : 0;
    vlog_spans_close(&sp, n);
    if (got != (ssize_t)sp.length || batch_validate(m, sp.length, NULL) != 0) {
        free(m);
        *why = "source batch unreadable";
        return err ? err : VERITY_ECORRUPT;
    }
    *buf = m;
    *len = sp.length;
    return 0;
}

/* Builds the dead-letter batch of j into bb. */
static int build(struct broker *b, const struct dlq_job *j, struct batch_builder *bb,
                 bool source_ok_wanted)
{
    uint8_t *src = NULL;
    size_t src_len = 0;
    const char *why = NULL;
    struct batch_record rec;
    bool have = false;
    int rc;
    if (source_ok_wanted && read_source(b, j, &src, &src_len, &why) == 0) {
        struct batch_hdr h;
        struct batch_iter it;
        if (batch_hdr_decode(src, src_len, &h) == 0 && !(h.attributes & BATCH_ATTR_CONTROL)) {
            batch_iter_init(&it, src, src_len);
            while (batch_iter_next(&it, &rec) == 1) {
                if (h.base_offset + rec.offset_delta == j->offset) {
                    have = true;
                    break;
                }
            }
        }
        if (!have)
            why = "source record not found in its batch";
    } else if (!source_ok_wanted) {
        why = "record too large for the dead-letter topic";
    }
    struct batch_header_kv hv[VERITY_RECORD_HEADERS_MAX];
    uint32_t nh = 0;
    if (have) {
        size_t pos = 0;
        struct batch_header_kv kv;
        while (nh < DLQ_SOURCE_HEADERS_MAX && batch_header_next(&rec, &pos, &kv) == 1)
            hv[nh++] = kv;
    }
    char part[16], off[24], ts[24], cnt[16];
    snprintf(part, sizeof part, "%" PRIu32, j->partition);
    snprintf(off, sizeof off, "%" PRIu64, j->offset);
    snprintf(ts, sizeof ts, "%" PRId64, have ? rec.timestamp : (int64_t)0);
    snprintf(cnt, sizeof cnt, "%" PRIu32, j->count);
    const char *keys[] = {"verity.source.topic",  "verity.source.partition",
                          "verity.source.offset", "verity.source.timestamp",
                          "verity.group",         "verity.delivery_count",
                          "verity.error",         "verity.missing"};
    /* With tenants, the names as the tenant's principals send them back
     * (verity dlq replay produces to verity.source.topic). */
    const char *vals[] = {auth_local_name(b, j->topic, j->group), part, off, ts,
                          auth_local_name(b, j->group, j->group), cnt, j->error, why};
    for (size_t i = 0; i < 8; i++) {
        if (i == 7 && have)
            break;
        hv[nh].key = (const uint8_t *)keys[i];
        hv[nh].key_len = (uint32_t)strlen(keys[i]);
        hv[nh].value = (const uint8_t *)vals[i];
        hv[nh].value_len = (int32_t)strlen(vals[i]);
        nh++;
    }
    const void *key = have ? rec.key : NULL;
    int32_t key_len = have ? rec.key_len : -1;
    const void *val = have ? rec.value : NULL;
    int32_t val_len = have ? rec.value_len : -1;
    size_t need = BATCH_HDR_SIZE + batch_record_size_max(key_len > 0 ? (size_t)key_len : 0,
                                                         val_len > 0 ? (size_t)val_len : 0, hv, nh);
    rc = batch_builder_init(bb, need);
    if (rc == 0)
        rc = batch_builder_add(bb, now_ms(), key, key_len, val, val_len, hv, nh);
    struct batch_meta bm = {0, -1, -1, -1, NULL};
    if (rc == 0)
        rc = batch_builder_finish(bb, &bm);
    free(src);
    return rc;
}

static void topic_ready(struct broker *b, void *arg, int err);

/* Advances j as far as it can go now. */
static void dlq_step(struct broker *b, struct dlq_job *j)
{
    char msg[256];
    struct topic *t = topic_find(b, j->dlq);
    if (!t) {
        struct topic_cfg tc;
        int rc = topic_cfg_from_wire(b, NULL, &tc, msg, sizeof msg);
        char *name = strdup(j->dlq);
        tc.partitions = 1;
        if (rc == 0 && !name)
            rc = -ENOMEM;
        if (rc == 0 && b->n_topics >= b->cfg.max_topics)
            rc = VERITY_ELIMIT;
        if (rc == 0)
            rc = topic_create_start(b, j->dlq, &tc, topic_ready, name, msg, sizeof msg);
        if (rc) {
            free(name);
            job_retry_later(b, j, rc, "dead-letter topic could not be created");
            return;
        }
        blog(BLOG_INFO, "dead_letter_topic_creating", "topic=%s", j->dlq);
        j->state = DLQ_TOPIC_WAIT;
        return;
    }
    if (!t->ready) {
        j->state = DLQ_TOPIC_WAIT; /* being created */
        return;
    }
    if (t->deleting) {
        job_retry_later(b, j, VERITY_ECLOSED, "dead-letter topic is being deleted");
        return;
    }
    struct partition *p = t->parts[j->partition % t->cfg.partitions];
    if (!p || !p->replica || p->error) {
        job_retry_later(b, j, p && p->error ? p->error : VERITY_EREADONLY,
                        "dead-letter partition unavailable");
        return;
    }
    struct batch_builder bb = {0};
    int rc = build(b, j, &bb, true);
    if (rc == 0 && bb.len > t->cfg.max_message_bytes) {
        batch_builder_deinit(&bb);
        memset(&bb, 0, sizeof bb);
        rc = build(b, j, &bb, false);
    }
    struct vlog_append_info ai;
    if (rc == 0)
        rc = replica_propose(p->replica, bb.buf, bb.len, now_ms(), &ai);
    batch_builder_deinit(&bb);
    if (rc) {
        job_retry_later(b, j, rc, "dead-letter append failed");
        return;
    }
    groups_on_append(p, ai.last_offset + 1);
    j->state = DLQ_APPENDED;
    j->part = p;
    j->end = ai.last_offset + 1;
}

static void topic_ready(struct broker *b, void *arg, int err)
{
    char *name = arg;
    struct dlq_job *j;
    TAILQ_FOREACH(j, &b->groups.dlq_jobs, link)
    {
        if (j->state != DLQ_TOPIC_WAIT || strcmp(j->dlq, name) != 0)
            continue;
        if (err) {
            j->state = DLQ_RETRY;
            j->retry_at = now_ms() + DLQ_RETRY_MS;
        } else {
            j->state = DLQ_NEW;
        }
    }
    if (err)
        blog(BLOG_WARN, "dead_letter_topic_failed", "topic=%s error=%s", name, verity_errname(err));
    else
        blog(BLOG_INFO, "dead_letter_topic_created", "topic=%s", name);
    free(name);
    arm_retry(b, err ? DLQ_RETRY_MS : 0);
}

void dlq_start(struct broker *b, const struct group_effect *e)
{
    struct groups *gs = &b->groups;
    struct dlq_job *j = calloc(1, sizeof *j);
    char q[GROUP_NAME_MAX + 8];
    if (!j || gs->n_dlq_jobs >= DLQ_JOBS_MAX) {
        /* group_recover emits the effect again after a restart. */
        blog(BLOG_ERROR, "dead_letter_dropped",
             "group=%s topic=%s partition=%" PRIu32 " offset=%" PRIu64 " reason=%s",
             blog_q(e->group, q, sizeof q), e->topic, e->partition, e->offset,
             j ? "too many dead letters in progress" : "out of memory");
        free(j);
        return;
    }
    snprintf(j->group, sizeof j->group, "%s", e->group);
    snprintf(j->topic, sizeof j->topic, "%s", e->topic);
    snprintf(j->dlq, sizeof j->dlq, "%s", e->dlq_topic);
    snprintf(j->error, sizeof j->error, "%s", e->error ? e->error : "");
    j->pidx = e->pidx;
    j->partition = e->partition;
    j->offset = e->offset;
    j->count = e->delivery_count;
    j->state = DLQ_NEW;
    TAILQ_INSERT_TAIL(&gs->dlq_jobs, j, link);
    gs->n_dlq_jobs++;
    blog(BLOG_INFO, "dead_letter",
         "group=%s topic=%s partition=%" PRIu32 " offset=%" PRIu64 " deliveries=%" PRIu32 " dlq=%s",
         blog_q(e->group, q, sizeof q), e->topic, e->partition, e->offset, e->delivery_count,
         e->dlq_topic);
    dlq_step(b, j);
}

/* Reports a durable dead letter to the state machine. */
static void complete(struct broker *b, struct dlq_job *j)
{
    uint64_t ticket = 0;
    struct group_ref ref = {j->pidx, j->offset};
    int rc = group_dead_lettered(b->groups.st, j->group, ref, now_ms(), &ticket);
    char q[GROUP_NAME_MAX + 8];
    if (rc)
        blog(BLOG_INFO, "dead_letter_not_reported",
             "group=%s offset=%" PRIu64 " error=%s (group deleted or reset meanwhile)",
             blog_q(j->group, q, sizeof q), j->offset, verity_errname(rc));
    struct bgroup *bg = bgroup_get(b, j->group);
    if (bg)
        bg->dlq_appended++;
    job_free(b, j);
}

void dlq_retry(struct broker *b)
{
    struct groups *gs = &b->groups;
    int64_t now = now_ms();
    bool pending = false, any = false;
    struct dlq_job *j, *next;
    for (j = TAILQ_FIRST(&gs->dlq_jobs); j; j = next) {
        next = TAILQ_NEXT(j, link);
        if (j->state == DLQ_DONE) {
            complete(b, j);
            any = true;
        } else if (j->state == DLQ_NEW || (j->state == DLQ_RETRY && j->retry_at <= now)) {
            dlq_step(b, j);
        }
    }
    TAILQ_FOREACH(j, &gs->dlq_jobs, link)
    pending |= j->state == DLQ_RETRY;
    if (pending)
        arm_retry(b, DLQ_RETRY_MS);
    if (any)
        groups_after(b);
}

void dlq_on_commit(struct partition *p, uint64_t hw)
{
    struct broker *b = p->b;
    bool any = false;
    struct dlq_job *j;
    TAILQ_FOREACH(j, &b->groups.dlq_jobs, link)
    {
        if (j->state == DLQ_APPENDED && j->part == p && j->end <= hw) {
            j->state = DLQ_DONE;
            any = true;
        }
    }
    if (any)
        arm_retry(b, 0);
}

void dlq_part_closing(struct partition *p)
{
    struct broker *b = p->b;
    struct dlq_job *j;
    TAILQ_FOREACH(j, &b->groups.dlq_jobs, link)
    {
        if (j->state == DLQ_APPENDED && j->part == p) {
            /* Its append may or may not be durable: append again later. */
            j->state = DLQ_RETRY;
            j->part = NULL;
            j->retry_at = now_ms() + DLQ_RETRY_MS;
            arm_retry(b, DLQ_RETRY_MS);
        }
    }
}

void dlq_free_all(struct broker *b)
{
    struct dlq_job *j;
    while ((j = TAILQ_FIRST(&b->groups.dlq_jobs)))
        job_free(b, j);
}
