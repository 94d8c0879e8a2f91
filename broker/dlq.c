/*
 * Dead letters: the shell's side of GROUP_EFFECT_DEAD_LETTER. A job reads
 * the source record, appends a copy with the dead-letter headers to the
 * group's dead-letter topic (creating the topic on demand), waits until
 * the copy is committed (durable), and then reports it with
 * group_dead_lettered (docs/GROUPS.md "Dead letters", docs/PROTOCOL.md).
 *
 * Every dead letter carries an idempotency key (BATCH_ATTR_IDEM_KEY),
 * SHA-256 of (group name, group id, partition index, offset) cut to 16
 * bytes: the partition's idempotence state, rebuilt from committed batches
 * on every replica, answers "is this dead letter in the log?" and refuses a
 * second copy within the idempotency window (a retry after a failover, a
 * restart between the append and the completion record).
 *
 * A dead letter is appended only once the record that logs its decision is
 * durable (single broker) or committed (cluster): a decision lost with a
 * coordinator never leaves a copy behind for a message that is then
 * delivered again and acknowledged.
 *
 * Cluster (docs/GROUPS.md "Dead letters in a cluster"): the append is
 * proposed only by the primary of the dead-letter partition, through its
 * replica group; the topic is created only by the primary of __meta, with
 * the source topic's replication factor. The coordinator (groups_live)
 * runs the jobs; any other broker runs dlq_scan every DLQ_SCAN_MS over the
 * committed decisions of its replica state and does the parts that are its
 * to do (create the topic when it is the __meta primary, append when it is
 * the partition's primary). The coordinator completes a job when its own
 * copy of the dead-letter partition holds the key below its commit point.
 *
 * Job states, and where each transition happens:
 *
 *   DECIDING ──decision durable (dlq_on_durable)──► NEW
 *   NEW ──dlq_step──► APPENDED ──key committed (dlq_on_commit)──► DONE ──dlq_retry──► reported
 *    │  ▲   │               │ partition closes / append lost / failed
 *    │  │   │               ▼
 *    │  └───┼──dlq_retry── RETRY, REMOTE (another broker's part; the key is
 *    │      │              looked for at each commit of the partition)
 *    │      └──key already committed──► DONE
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
 * not wait forever for a record that is gone. A source record above this
 * broker's committed end (a lagging copy) is waited for instead.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "broker/auth.h"
#include "broker/blog.h"
#include "broker/broker_int.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define DLQ_HEADERS            7
#define DLQ_SOURCE_HEADERS_MAX (VERITY_RECORD_HEADERS_MAX - DLQ_HEADERS - 1)
#define DLQ_RETRY_MS           1000
#define DLQ_JOBS_MAX           100000
#define DLQ_SCAN_MS            250 /* cluster, not the coordinator: dlq_scan */
#define DLQ_SCAN_APPENDS       64  /* proposals per scan */

enum dlq_state { DLQ_NEW, DLQ_TOPIC_WAIT, DLQ_APPENDED, DLQ_DONE, DLQ_RETRY, DLQ_DECIDING, DLQ_REMOTE };

/* What one attempt found (attempt()). */
enum { ATT_DURABLE = 1, ATT_APPENDED, ATT_TOPIC_WAIT, ATT_ELSEWHERE };

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
    uint32_t group_id;
    uint8_t key[BATCH_IDEM_KEY_SIZE];
    uint64_t seq;           /* DECIDING: the record that logs the decision */
    struct partition *part; /* APPENDED: where it went */
    uint64_t end;           /* APPENDED: offset after it */
    int64_t retry_at;       /* RETRY, REMOTE: wall ms */
    bool warned;            /* REMOTE: said once that this broker holds no copy */
    bool proposed;          /* the last attempt proposed a copy here */
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

/* Reads the source batch that holds j->offset into *buf (malloc'd). 0,
 * -EAGAIN when this broker's copy has not committed that offset yet (a
 * cluster's lagging replica: wait, it is not gone), or an error with why
 * set. */
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
    if (p->cg && j->offset >= part_hw(p))
        return -EAGAIN;
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
    int rc = source_ok_wanted ? read_source(b, j, &src, &src_len, &why) : 0;
    if (rc == -EAGAIN)
        return rc;
    if (source_ok_wanted && rc == 0) {
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
    struct batch_meta bm = {0, -1, -1, -1, j->key};
    if (rc == 0)
        rc = batch_builder_finish(bb, &bm);
    free(src);
    return rc;
}

static void topic_ready(struct broker *b, void *arg, int err);

/* The idempotency key of a dead letter: the same on every broker and after
 * any restart or failover, for one message of one group. */
static void make_key(struct dlq_job *j)
{
    uint8_t in[GROUP_NAME_MAX + 1 + 16], md[EVP_MAX_MD_SIZE];
    size_t n = strlen(j->group);
    unsigned int mdlen = 0;
    memcpy(in, j->group, n);
    in[n++] = 0;
    for (int i = 0; i < 4; i++)
        in[n++] = (uint8_t)(j->group_id >> (8 * i));
    for (int i = 0; i < 4; i++)
        in[n++] = (uint8_t)(j->pidx >> (8 * i));
    for (int i = 0; i < 8; i++)
        in[n++] = (uint8_t)(j->offset >> (8 * i));
    static const char tag[] = "verity.dlq.v1";
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    bool ok = c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) &&
              EVP_DigestUpdate(c, tag, sizeof tag) && EVP_DigestUpdate(c, in, n) &&
              EVP_DigestFinal_ex(c, md, &mdlen);
    EVP_MD_CTX_free(c);
    VERITY_VERIFY(ok && mdlen >= BATCH_IDEM_KEY_SIZE);
    memcpy(j->key, md, BATCH_IDEM_KEY_SIZE);
}

/* Does p's idempotence state know j's key? 1 committed (*end: offset after
 * it), 2 known but not committed yet (proposed here, this broker is the
 * primary), 0 not known. */
static int key_state(struct partition *p, const struct dlq_job *j, uint64_t *end)
{
    struct batch_hdr h;
    struct idem_batch dup;
    char msg[128];
    memset(&h, 0, sizeof h);
    h.attributes = BATCH_ATTR_IDEM_KEY;
    h.producer_id = -1;
    h.producer_epoch = -1;
    h.base_sequence = -1;
    memcpy(h.idem_key, j->key, sizeof h.idem_key);
    if (!p->log || idem_check(&p->idem, &h, now_ms(), &dup, msg, sizeof msg) != IDEM_DUPLICATE)
        return 0;
    *end = dup.last_offset + 1;
    return dup.last_offset < part_hw(p) ? 1 : 2;
}

/* The dead-letter partition of j on this broker, or NULL. */
static struct partition *dlq_part(struct broker *b, const struct dlq_job *j)
{
    struct topic *t = topic_find(b, j->dlq);
    if (!t || !t->ready || t->deleting || t->cfg.partitions == 0)
        return NULL;
    return t->parts[j->partition % t->cfg.partitions];
}

/* Starts creating j's dead-letter topic: one partition, the source topic's
 * replication factor (in a cluster without the source topic: 3 replicas
 * on 3 or more brokers). */
static int create_topic(struct broker *b, struct dlq_job *j)
{
    char msg[256];
    struct topic_cfg tc;
    int rc = topic_cfg_from_wire(b, NULL, &tc, msg, sizeof msg);
    char *name = strdup(j->dlq);
    tc.partitions = 1;
    if (cluster_on(b)) {
        struct topic *src = topic_find_live(b, j->topic);
        if (src && src->cfg.replicas)
            tc.replicas = src->cfg.replicas;
        else
            tc.replicas = b->cfg.cluster_n >= 3 ? 3 : 1;
    }
    if (rc == 0 && !name)
        rc = -ENOMEM;
    if (rc == 0 && b->n_topics >= b->cfg.max_topics)
        rc = VERITY_ELIMIT;
    if (rc == 0)
        rc = topic_create_start(b, j->dlq, &tc, topic_ready, name, msg, sizeof msg);
    if (rc) {
        free(name);
        return rc;
    }
    blog(BLOG_INFO, "dead_letter_topic_creating", "topic=%s replicas=%" PRIu32, j->dlq,
         tc.replicas ? tc.replicas : 1);
    return 0;
}

/* One attempt at j's dead letter on this broker: ATT_DURABLE (the key is
 * committed in this broker's copy; j->end set), ATT_APPENDED (proposed here
 * now or before and not committed yet; j->part and j->end set),
 * ATT_TOPIC_WAIT (the topic is being created), ATT_ELSEWHERE (another
 * broker's part: the __meta primary creates the topic, the partition's
 * primary appends; or the source is not here yet), or an error with *why. */
static int attempt(struct broker *b, struct dlq_job *j, const char **why)
{
    struct topic *t = topic_find(b, j->dlq);
    if (!t) {
        if (cluster_on(b) && cluster_meta_leader(b) != b->cfg.node_id)
            return ATT_ELSEWHERE;
        int rc = create_topic(b, j);
        if (rc == VERITY_ENOTLEADER)
            return ATT_ELSEWHERE;
        *why = "dead-letter topic could not be created";
        return rc ? rc : ATT_TOPIC_WAIT;
    }
    if (!t->ready)
        return ATT_TOPIC_WAIT;
    if (t->deleting) {
        *why = "dead-letter topic is being deleted";
        return VERITY_ECLOSED;
    }
    struct partition *p = t->parts[j->partition % t->cfg.partitions];
    if (!p) {
        *why = "dead-letter partition unavailable";
        return VERITY_EREADONLY;
    }
    uint64_t end = 0;
    int ks = key_state(p, j, &end);
    j->end = end;
    if (ks == 1)
        return ATT_DURABLE;
    if (ks == 2) {
        j->part = p;
        return ATT_APPENDED;
    }
    uint32_t leader = 0;
    if (cluster_part_writable(p, &leader))
        return ATT_ELSEWHERE;
    if (!p->replica || p->error) {
        *why = "dead-letter partition unavailable";
        return p->error ? p->error : VERITY_EREADONLY;
    }
    struct batch_builder bb = {0};
    int rc = build(b, j, &bb, true);
    if (rc == -EAGAIN)
        return ATT_ELSEWHERE; /* the source record is not committed here yet */
    if (rc == 0 && bb.len > t->cfg.max_message_bytes) {
        batch_builder_deinit(&bb);
        memset(&bb, 0, sizeof bb);
        rc = build(b, j, &bb, false);
    }
    struct batch_hdr h;
    struct idem_batch dup;
    char msg[128];
    int64_t now = now_ms();
    if (rc == 0)
        rc = batch_hdr_decode(bb.buf, bb.len, &h);
    if (rc == 0) {
        idem_expire(&p->idem, now);
        rc = idem_check(&p->idem, &h, now, &dup, msg, sizeof msg);
        if (rc == IDEM_APPEND)
            rc = 0;
        else if (rc == IDEM_DUPLICATE)
            rc = VERITY_EINVAL; /* key_state said otherwise just now */
    }
    struct vlog_append_info ai;
    if (rc == 0)
        rc = replica_propose(p->replica, bb.buf, bb.len, now, &ai);
    batch_builder_deinit(&bb);
    if (rc == VERITY_ENOTLEADER)
        return ATT_ELSEWHERE;
    if (rc) {
        *why = "dead-letter append failed";
        return rc;
    }
    /* the key is known from the proposal on, as for a client's produce */
    if ((rc = idem_record(&p->idem, &h, ai.base_offset, ai.last_offset, now)))
        blog(BLOG_ERROR, "idem_record_failed", "topic=%s partition=%" PRIu32 " error=%s",
             p->topic->name, p->id, verity_errname(rc));
    groups_on_append(p, ai.last_offset + 1);
    j->part = p;
    j->end = ai.last_offset + 1;
    j->proposed = true;
    return ATT_APPENDED;
}

/* Advances j as far as it can go now. */
static void dlq_step(struct broker *b, struct dlq_job *j)
{
    if (j->seq > b->groups.seq_durable) {
        j->state = DLQ_DECIDING; /* dlq_on_durable moves it on */
        return;
    }
    const char *why = "";
    int rc = attempt(b, j, &why);
    switch (rc) {
    case ATT_DURABLE:
        j->state = DLQ_DONE;
        arm_retry(b, 0);
        return;
    case ATT_APPENDED:
        j->state = DLQ_APPENDED;
        return;
    case ATT_TOPIC_WAIT:
        j->state = DLQ_TOPIC_WAIT;
        return;
    case ATT_ELSEWHERE: {
        struct partition *p = dlq_part(b, j);
        if (p && !p->log && !j->warned) {
            /* a dead-letter topic with fewer replicas than brokers (made
             * before): the coordinator cannot see the dead letter commit */
            char q[GROUP_NAME_MAX + 8];
            blog(BLOG_WARN, "dead_letter_no_local_copy",
                 "group=%s dlq=%s partition=%" PRIu32
                 " reason=this broker holds no replica of the dead-letter partition; the dead "
                 "letter waits until the coordinator is a broker that does",
                 blog_q(j->group, q, sizeof q), j->dlq, p->id);
            j->warned = true;
        }
        j->state = DLQ_REMOTE;
        j->part = NULL;
        j->retry_at = now_ms() + DLQ_RETRY_MS;
        arm_retry(b, DLQ_RETRY_MS);
        return;
    }
    default:
        job_retry_later(b, j, rc, why);
        return;
    }
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

/* Fills j from a dead-letter effect (group id and key included). */
static void job_fill(struct broker *b, struct dlq_job *j, const struct group_effect *e)
{
    struct group_info info;
    snprintf(j->group, sizeof j->group, "%s", e->group);
    snprintf(j->topic, sizeof j->topic, "%s", e->topic);
    snprintf(j->dlq, sizeof j->dlq, "%s", e->dlq_topic);
    snprintf(j->error, sizeof j->error, "%s", e->error ? e->error : "");
    j->pidx = e->pidx;
    j->partition = e->partition;
    j->offset = e->offset;
    j->count = e->delivery_count;
    j->seq = e->seq;
    j->group_id = group_get_info(b->groups.st, e->group, &info) == 0 ? info.group_id : 0;
    make_key(j);
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
    job_fill(b, j, e);
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
        } else if (j->state == DLQ_NEW ||
                   ((j->state == DLQ_RETRY || j->state == DLQ_REMOTE) && j->retry_at <= now)) {
            dlq_step(b, j);
            if (j->state == DLQ_DONE) {
                complete(b, j);
                any = true;
            }
        }
    }
    TAILQ_FOREACH(j, &gs->dlq_jobs, link)
    pending |= j->state == DLQ_RETRY || j->state == DLQ_REMOTE;
    if (pending)
        arm_retry(b, DLQ_RETRY_MS);
    if (any)
        groups_after(b);
}

void dlq_on_durable(struct broker *b)
{
    struct groups *gs = &b->groups;
    bool any = false;
    struct dlq_job *j;
    TAILQ_FOREACH(j, &gs->dlq_jobs, link)
    {
        if (j->state == DLQ_DECIDING && j->seq <= gs->seq_durable) {
            j->state = DLQ_NEW;
            any = true;
        }
    }
    if (any)
        arm_retry(b, 0);
}

void dlq_on_commit(struct partition *p, uint64_t hw)
{
    struct broker *b = p->b;
    bool any = false;
    struct dlq_job *j;
    TAILQ_FOREACH(j, &b->groups.dlq_jobs, link)
    {
        bool mine = (j->state == DLQ_APPENDED && j->part == p) ||
                    (j->state == DLQ_REMOTE && strcmp(j->dlq, p->topic->name) == 0 &&
                     dlq_part(b, j) == p);
        if (!mine)
            continue;
        uint64_t end = 0;
        int ks = key_state(p, j, &end);
        if (ks == 1) {
            j->state = DLQ_DONE;
            any = true;
        } else if (j->state == DLQ_APPENDED && ks == 0 && j->end <= hw) {
            /* its proposal was given up (view change): append again */
            j->state = DLQ_RETRY;
            j->part = NULL;
            j->retry_at = now_ms();
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
            /* Its append may or may not be durable: look again later (the
             * key says which). */
            j->state = DLQ_RETRY;
            j->part = NULL;
            j->retry_at = now_ms() + DLQ_RETRY_MS;
            arm_retry(b, DLQ_RETRY_MS);
        }
    }
}

struct scan {
    struct broker *b;
    int budget;
    uint32_t appended, failed;
};

static bool scan_one(void *arg, const struct group_effect *e)
{
    struct scan *sc = arg;
    struct dlq_job j;
    const char *why = "";
    memset(&j, 0, sizeof j);
    job_fill(sc->b, &j, e);
    j.seq = 0; /* a replica's state holds committed decisions only */
    int rc = attempt(sc->b, &j, &why);
    if (rc == ATT_APPENDED && j.proposed) {
        sc->appended++;
        sc->budget--;
    } else if (rc < 0) {
        sc->failed++;
    }
    return sc->budget > 0;
}

void dlq_scan(struct broker *b)
{
    struct groups *gs = &b->groups;
    if (!cluster_on(b) || groups_live(b) || !gs->st || gs->error)
        return;
    struct scan sc = {b, DLQ_SCAN_APPENDS, 0, 0};
    group_dead_letters(gs->st, scan_one, &sc);
    int64_t now = now_ms();
    if (sc.appended || (sc.failed && now - gs->dlq_scan_warned_ms >= 10000)) {
        if (sc.failed)
            gs->dlq_scan_warned_ms = now;
        blog(sc.failed ? BLOG_WARN : BLOG_INFO, "dead_letter_scan",
             "appended=%" PRIu32 " failed=%" PRIu32, sc.appended, sc.failed);
    }
}

void dlq_arm_scan(struct broker *b)
{
    if (cluster_on(b))
        arm_retry(b, DLQ_SCAN_MS);
}

void dlq_free_all(struct broker *b)
{
    struct dlq_job *j;
    while ((j = TAILQ_FIRST(&b->groups.dlq_jobs)))
        job_free(b, j);
}
