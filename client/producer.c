/*
 * verity_producer: batching, partitioning, idempotence and retries on top of
 * the accumulator (accum.c) and one connection (conn.c).
 *
 * Threads. Application threads call verity_produce, which copies the record
 * into the accumulator under `mu` and kicks the I/O thread. Everything else
 * (metadata lookups, InitProducer, draining batches into Produce requests,
 * answers, retries, delivery reports) happens on the I/O thread. Delivery
 * callbacks run without `mu` held, so a callback may call verity_produce.
 *
 * Direct sends (issue 16). When the connection is idle (no Produce request
 * of ours in flight; conn_direct_begin: nothing queued for the socket,
 * nothing waiting) and the producer may send (identity known, a single
 * broker, linger 0),
 * verity_produce drains the accumulator and writes the Produce request from
 * the calling thread, under `mu`, instead of waking the I/O thread; the
 * answer, retries and delivery reports stay on the I/O thread. Order: drain
 * and write are one step under `mu` and the connection's lock, and the I/O
 * thread counts the requests it drained but has not handed to the
 * connection yet (`sends_pending`): no direct send while one is pending, so
 * requests reach the socket in the order their batches were drained. The
 * I/O thread is not woken at all when nothing is left to send now and an
 * answer is due (its pump runs then).
 *
 * Idempotence. The producer asks the broker for a producer id (InitProducer)
 * before it sends anything; every batch carries the id, the epoch and the
 * partition's next base sequence, and a retry resends the same bytes, so a
 * batch the broker already appended is answered as a duplicate instead of
 * being written again. When the sequence state becomes unknown (a batch
 * finished with an error or timed out after it was sealed, or the broker
 * reports a gap at our oldest batch), the producer stops sending, waits for
 * every in-flight answer, and asks for a new epoch (InitProducer with its
 * id), which restarts every partition's sequence at 0; a broker that no
 * longer knows the id gets asked for a new one.
 *
 * Order. Per partition, batches are sent in order, at most five in flight
 * (the broker keeps the last five for deduplication). After a retriable
 * failure the partition sends nothing until all its in-flight batches are
 * answered, then resends from the oldest unacknowledged one.
 *
 * Cluster routing (issue 10). The first connection (`conn`, to the first
 * reachable broker of the bootstrap list) carries Metadata and InitProducer;
 * it follows a request-level NOT_LEADER by itself (conn.c). When Metadata
 * names more than one broker the producer is `routed`: each partition's
 * batches go to its primary (acc_part.leader) over a connection per broker,
 * opened on demand. A per-partition ERR_NOT_LEADER (with the primary's node
 * id when the broker knows it), a lost broker connection or a partition
 * without a known primary mark the metadata stale; it is fetched again
 * (META_BACKOFF_MS doubling up to META_BACKOFF_MAX_MS between fetches) and
 * the batches are resent (at once when Metadata names a new primary) as any retriable failure is: same bytes, same
 * producer id, epoch and sequence, so the new primary, which rebuilt the
 * sequence state from committed entries, answers a batch the old one had
 * committed as a duplicate. Without a cluster (one broker in Metadata) the
 * producer never leaves the single-connection path.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "verity/limits.h"
#include "verity/verify.h"

#define REQUEST_BYTES_MAX (VERITY_FRAME_BYTES_MAX - (1u << 20))
#define BATCHES_PER_REQUEST_MAX 256u
#define ROUTED_POLL_MS 5 /* shortest timer while a partition waits for its primary */

/* A topic whose metadata is being looked up. */
struct meta_lookup {
    struct meta_lookup *next;
    struct verity_producer *p;
    char *name;
    bool done;
    int err;
    char msg[CL_ERRMSG_MAX];
    uint32_t waiters;
};

#define NODES_MAX 16
#define META_BACKOFF_MS 50
/* 200 ms, not more: a view change takes about 1-1.5 s, and a refresh
 * schedule doubling to 1 s found the new primary up to 1 s after it
 * served (failover tail 2.1-3.1 s, docs/REPLICATION.md). */
#define META_BACKOFF_MAX_MS 200

/* One broker of the cluster (loop thread; requests_inflight under mu). */
struct pnode {
    struct verity_producer *p;
    uint32_t id;                   /* node id (> 0) */
    char addr[300];                /* "host:port" from Metadata */
    struct conn *conn;             /* NULL until a partition is led by it */
    bool wanted;                   /* a partition is led by it: open conn */
    uint32_t requests_inflight;    /* Produce requests out on conn */
};

struct produce_req {
    struct verity_producer *p;
    struct pnode *node;            /* NULL: sent on p->conn */
    size_t n;
    struct pbatch *batches[];
};

struct verity_producer {
    struct verity_producer_config cfg;
    struct cl_loop loop;
    struct conn *conn;             /* loop thread only */
    struct event *kick_ev;         /* made active by application threads */
    struct event *timer_ev;        /* linger, retry backoff, delivery timeout */
    pthread_mutex_t mu;            /* protects everything below */
    pthread_cond_t cv;             /* buffer room, lookups, reports */
    struct accum acc;
    uint64_t records_reported;     /* delivery reports that have run */
    uint64_t flush_target;         /* linger is ignored until reports reach it */
    bool kick_pending;
    bool closing;
    bool init_inflight;            /* an InitProducer is out */
    uint32_t requests_inflight;    /* Produce requests out */
    uint32_t sends_pending;        /* drained by the loop thread, not handed to a conn yet */
    struct meta_lookup *lookups;
    /* loop thread only */
    bool pumping;
    bool repump;
    bool routed;                   /* Metadata named several brokers */
    struct pnode nodes[NODES_MAX];
    size_t n_nodes;
    bool meta_stale;               /* a partition's primary is unknown or moved */
    bool meta_inflight;
    int meta_backoff_ms;
    int64_t meta_next_ms;          /* no refresh before */
};

void verity_producer_config_default(struct verity_producer_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    verity_conn_config_default(&cfg->conn);
    cfg->idempotence = true;
    cfg->linger_ms = 0;
    cfg->batch_bytes = 256u << 10;
    cfg->batch_records = 10000;
    cfg->buffer_bytes_max = 64u << 20;
    cfg->block_ms = 10000;
    cfg->max_inflight = 5;
    cfg->request_batches_max = 64;
    cfg->delivery_timeout_ms = 120000;
    cfg->retry_backoff_ms = 20;
    cfg->retry_backoff_max_ms = 1000;
    cfg->ack_timeout_ms = 0;
}

static void pump(struct verity_producer *p);

static void kick(struct verity_producer *p)
{
    pthread_mutex_lock(&p->mu);
    bool was = p->kick_pending;
    p->kick_pending = true;
    pthread_mutex_unlock(&p->mu);
    if (!was)
        event_active(p->kick_ev, 0, 0);
}

/* ---- metadata ------------------------------------------------------------ */

static void lookup_unlink(struct verity_producer *p, struct meta_lookup *m)
{
    for (struct meta_lookup **pp = &p->lookups; *pp; pp = &(*pp)->next) {
        if (*pp == m) {
            *pp = m->next;
            return;
        }
    }
}

static void lookup_finish(struct verity_producer *p, struct meta_lookup *m, int err,
                          const char *msg)
{
    pthread_mutex_lock(&p->mu);
    m->done = true;
    m->err = err;
    snprintf(m->msg, sizeof m->msg, "%s", msg ? msg : "");
    bool orphan = m->waiters == 0;
    if (orphan)
        lookup_unlink(p, m);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (orphan) {
        free(m->name);
        free(m);
    }
}

static struct pnode *node_find(struct verity_producer *p, uint32_t id)
{
    for (size_t i = 0; i < p->n_nodes; i++)
        if (p->nodes[i].id == id)
            return &p->nodes[i];
    return NULL;
}

/* Loop thread, p->mu held: takes the brokers and the partitions' primaries
 * of a Metadata answer. Marks the metadata stale when a partition of ours
 * has no primary with a known address. */
static void meta_apply(struct verity_producer *p, const Verity__MetadataResponse *r)
{
    for (size_t i = 0; i < r->n_brokers; i++) {
        const Verity__BrokerInfo *b = r->brokers[i];
        char addr[300];
        if (b->node_id == 0 || !conn_broker_addr(b, addr, sizeof addr))
            continue;
        struct pnode *n = node_find(p, b->node_id);
        if (!n && p->n_nodes < NODES_MAX) {
            n = &p->nodes[p->n_nodes++];
            memset(n, 0, sizeof *n);
            n->p = p;
            n->id = b->node_id;
        }
        if (n && !n->conn)
            snprintf(n->addr, sizeof n->addr, "%s", addr);
    }
    if (p->n_nodes > 1)
        p->routed = true;
    p->acc.retry_notfound = p->routed;
    if (!p->routed)
        return;
    bool stale = false;
    for (size_t i = 0; i < r->n_topics; i++) {
        const Verity__TopicMetadata *tm = r->topics[i];
        struct acc_topic *at = tm->name ? accum_topic_find(&p->acc, tm->name) : NULL;
        if (!at)
            continue;
        for (size_t k = 0; k < tm->n_partitions; k++) {
            const Verity__PartitionMetadata *pm = tm->partitions[k];
            if (pm->partition >= at->partition_count)
                continue;
            struct acc_part *part = &at->parts[pm->partition];
            /* A newly named primary: a batch waiting out its retry backoff
             * (grown while there was none) goes to it at once. */
            if (pm->leader && pm->leader != part->leader)
                part->retry_at_ms = 0;
            part->leader = pm->leader;
        }
    }
    for (struct acc_topic *t = p->acc.topics; t; t = t->next) {
        for (uint32_t k = 0; k < t->partition_count; k++) {
            struct pnode *n = node_find(p, t->parts[k].leader);
            if (n)
                n->wanted = true;
            else if (t->parts[k].head)
                stale = true;
        }
    }
    p->meta_stale = stale;
}

/* Loop thread, p->mu held: true when a batch waits in a partition whose
 * primary has no known broker. meta_apply judges this only for partitions
 * that held batches when the answer came; the first lookup of a topic comes
 * before its first batch, so a primary it did not name (the broker asked was
 * in a view change for that partition: leader 0) must be noticed here, where
 * the batches wait, or nothing ever asks again: no batch is sent, no answer
 * or lost connection marks the metadata stale, and every record times out. */
static bool batches_unrouted(struct verity_producer *p)
{
    for (struct acc_topic *t = p->acc.topics; t; t = t->next)
        for (uint32_t k = 0; k < t->partition_count; k++)
            if (t->parts[k].head && !node_find(p, t->parts[k].leader))
                return true;
    return false;
}

static void lookup_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                        uint8_t **payload, size_t payload_len)
{
    struct meta_lookup *m = arg;
    struct verity_producer *p = m->p;
    (void)payload;
    (void)payload_len;
    if (err == 0) {
        const Verity__MetadataResponse *r = env->metadata_resp;
        const Verity__TopicMetadata *t = NULL;
        for (size_t i = 0; i < r->n_topics; i++)
            if (r->topics[i]->name && strcmp(r->topics[i]->name, m->name) == 0)
                t = r->topics[i];
        if (!t) {
            err = VERITY_EPROTO;
            msg = "metadata answer does not name the topic";
        } else if ((err = codec_err_from_wire(t->error)) != 0) {
            msg = t->error_message && t->error_message[0] ? t->error_message
                                                          : verity_strerror(err);
        } else {
            uint32_t n = (uint32_t)t->n_partitions;
            if (n == 0 && t->config)
                n = t->config->partitions;
            pthread_mutex_lock(&p->mu);
            struct acc_topic *at = accum_topic_find(&p->acc, m->name);
            if (!at)
                err = accum_topic_add(&p->acc, m->name, n, &at);
            if (err == 0)
                meta_apply(p, r);
            pthread_mutex_unlock(&p->mu);
            msg = err ? "topic metadata has no partitions" : "";
        }
    }
    lookup_finish(p, m, err, msg);
}

static void lookup_send(void *arg)
{
    struct meta_lookup *m = arg;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__MetadataRequest req = VERITY__METADATA_REQUEST__INIT;
    char *topics[1] = {m->name};
    req.topics = topics;
    req.n_topics = 1;
    env.body_case = VERITY__ENVELOPE__BODY_METADATA_REQ;
    env.metadata_req = &req;
    int rc = conn_request(m->p->conn, &env, NULL, 0, 0, CONN_RETRY_ON_RESET, lookup_done, m);
    if (rc)
        lookup_finish(m->p, m, rc, verity_strerror(rc));
}

static void pump(struct verity_producer *p);

static void refresh_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                         uint8_t **payload, size_t payload_len)
{
    struct verity_producer *p = arg;
    (void)msg;
    (void)payload;
    (void)payload_len;
    p->meta_inflight = false;
    if (err == 0) {
        pthread_mutex_lock(&p->mu);
        meta_apply(p, env->metadata_resp);
        pthread_mutex_unlock(&p->mu);
    }
    pump(p);
}

/* Loop thread: asks for every topic's metadata again when it is stale and
 * the backoff allows; otherwise returns when the next try may run. */
static int64_t meta_refresh(struct verity_producer *p, int64_t now)
{
    if (!p->meta_stale || p->meta_inflight || p->closing || !p->conn)
        return INT64_MAX;
    if (now < p->meta_next_ms)
        return p->meta_next_ms;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__MetadataRequest req = VERITY__METADATA_REQUEST__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_METADATA_REQ;
    env.metadata_req = &req;
    if (conn_request(p->conn, &env, NULL, 0, 0, CONN_RETRY_ON_RESET, refresh_done, p) != 0)
        return now + p->meta_backoff_ms;
    p->meta_inflight = true;
    p->meta_next_ms = now + p->meta_backoff_ms;
    p->meta_backoff_ms = p->meta_backoff_ms * 2 > META_BACKOFF_MAX_MS ? META_BACKOFF_MAX_MS
                                                                       : p->meta_backoff_ms * 2;
    return INT64_MAX;
}

/* With p->mu held: finds or looks up topic, waiting until deadline_ms.
 * Returns 0 with *out, or an error (message in the thread's last error). */
static int topic_get(struct verity_producer *p, const char *topic, int64_t deadline_ms,
                     struct acc_topic **out)
{
    if ((*out = accum_topic_find(&p->acc, topic)))
        return 0;
    if (!codec_topic_name_ok(topic, true))
        return VERITY_EINVAL;
    if (cl_loop_in_thread(&p->loop))
        return VERITY_EINVAL; /* a callback cannot wait for metadata */
    struct meta_lookup *m = p->lookups;
    while (m && (m->done || strcmp(m->name, topic) != 0))
        m = m->next;
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m || !(m->name = strdup(topic))) {
            free(m);
            return -ENOMEM;
        }
        m->p = p;
        m->next = p->lookups;
        p->lookups = m;
        if (cl_loop_post(&p->loop, lookup_send, m) != 0) {
            m->done = true;
            m->err = VERITY_ECLOSED;
        }
    }
    m->waiters++;
    struct timespec ts = {deadline_ms / 1000, (deadline_ms % 1000) * 1000000};
    while (!m->done && pthread_cond_timedwait(&p->cv, &p->mu, &ts) == 0)
        ;
    int rc = m->done ? m->err : VERITY_ETIMEOUT;
    if (rc)
        cl_set_last_error(m->done ? m->msg : "timed out waiting for topic metadata");
    if (--m->waiters == 0 && m->done) {
        lookup_unlink(p, m);
        free(m->name);
        free(m);
    }
    if (rc)
        return rc;
    *out = accum_topic_find(&p->acc, topic);
    return *out ? 0 : VERITY_ENOTFOUND;
}

/* ---- InitProducer -------------------------------------------------------- */

static void init_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                      uint8_t **payload, size_t payload_len)
{
    struct verity_producer *p = arg;
    (void)msg;
    (void)payload;
    (void)payload_len;
    pthread_mutex_lock(&p->mu);
    p->init_inflight = false;
    if (err == 0) {
        const Verity__InitProducerResponse *r = env->init_producer_resp;
        if (r->producer_id <= 0 || r->producer_epoch < 0 || r->producer_epoch > INT16_MAX)
            err = VERITY_EPROTO;
        else
            accum_set_identity(&p->acc, r->producer_id, (int16_t)r->producer_epoch);
    }
    if (err == VERITY_ENOTFOUND || err == VERITY_EFENCED) {
        /* The broker no longer knows our id (or a newer epoch owns it):
         * start over with a new id; sequences restart with it. */
        p->acc.producer_id = -1;
        p->acc.need_reinit = true;
    } else if (err && !accum_err_retriable(err)) {
        accum_fail_all(&p->acc, err, true);
    }
    pthread_mutex_unlock(&p->mu);
    pump(p);
}

static void init_send(struct verity_producer *p, int64_t producer_id, int16_t epoch)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__InitProducerRequest req = VERITY__INIT_PRODUCER_REQUEST__INIT;
    req.producer_id = producer_id > 0 ? producer_id : 0;
    req.producer_epoch = producer_id > 0 ? epoch : 0;
    req.client_id = (char *)(p->cfg.conn.client_id ? p->cfg.conn.client_id : "libverity");
    env.body_case = VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ;
    env.init_producer_req = &req;
    int rc = conn_request(p->conn, &env, NULL, 0, 0, 0, init_done, p);
    if (rc) {
        pthread_mutex_lock(&p->mu);
        p->init_inflight = false;
        accum_fail_all(&p->acc, rc, true);
        pthread_mutex_unlock(&p->mu);
    }
}

/* ---- Produce ------------------------------------------------------------- */

static void produce_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                         uint8_t **payload, size_t payload_len)
{
    struct produce_req *r = arg;
    struct verity_producer *p = r->p;
    int64_t now = cl_mono_ms();
    (void)msg;
    (void)payload;
    (void)payload_len;
    const Verity__ProduceResponse *resp = err == 0 ? env->produce_resp : NULL;
    if (resp && resp->n_results != r->n)
        err = VERITY_EPROTO;
    if (p->routed && err && (err == VERITY_ENOTLEADER || accum_err_retriable(err)))
        p->meta_stale = true; /* the broker may be gone, or no longer primary */
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < r->n; i++) {
        struct pbatch *pb = r->batches[i];
        if (err) {
            accum_complete(&p->acc, pb, err, 0, false, now);
            continue;
        }
        const Verity__ProduceResult *x = resp->results[i];
        int e = codec_err_from_wire(x->error);
        if (e == 0 && (!x->topic || strcmp(x->topic, pb->topic->name) != 0 ||
                       x->partition != pb->partition ||
                       x->last_offset - x->base_offset + 1 != pb->b.count))
            e = VERITY_EPROTO;
        if (e == VERITY_ENOTFOUND && p->routed) {
            p->meta_stale = true; /* the topic may not be applied there yet */
        } else if (e == VERITY_ENOTLEADER && pb->partition < pb->topic->partition_count) {
            /* Route the retry to the primary the broker named, if we know
             * its address; ask Metadata otherwise. */
            struct acc_part *part = &pb->topic->parts[pb->partition];
            if (x->leader && node_find(p, x->leader) && x->leader != part->leader) {
                part->leader = x->leader;
                node_find(p, x->leader)->wanted = true;
            } else {
                p->meta_stale = true;
            }
        } else if (e == 0 && p->routed) {
            p->meta_backoff_ms = META_BACKOFF_MS;
        }
        accum_complete(&p->acc, pb, e, x->base_offset, x->duplicate, now);
    }
    uint32_t *out = r->node ? &r->node->requests_inflight : &p->requests_inflight;
    VERITY_VERIFY(*out > 0);
    (*out)--;
    pthread_mutex_unlock(&p->mu);
    free(r);
    pump(p);
}

/* Builds the Produce request of the drained batches and hands it to the
 * connection (direct: written from this thread, inside conn_direct_begin /
 * end). Returns 0 or the encode error (nothing sent). */
static int produce_request(struct verity_producer *p, struct produce_req *r, bool direct)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ProduceRequest req = VERITY__PRODUCE_REQUEST__INIT;
    Verity__ProduceBatch pbs[BATCHES_PER_REQUEST_MAX];
    Verity__ProduceBatch *pbp[BATCHES_PER_REQUEST_MAX];
    struct iovec iov[BATCHES_PER_REQUEST_MAX];
    for (size_t i = 0; i < r->n; i++) {
        struct pbatch *pb = r->batches[i];
        verity__produce_batch__init(&pbs[i]);
        pbs[i].topic = pb->topic->name;
        pbs[i].partition = pb->partition;
        pbs[i].batch_bytes = (uint32_t)pb->b.len;
        pbp[i] = &pbs[i];
        iov[i].iov_base = pb->b.buf;
        iov[i].iov_len = pb->b.len;
    }
    req.timeout_ms = p->cfg.ack_timeout_ms;
    req.acks = (Verity__Acks)p->cfg.acks;
    req.batches = pbp;
    req.n_batches = r->n;
    env.body_case = VERITY__ENVELOPE__BODY_PRODUCE_REQ;
    env.produce_req = &req;
    struct conn *conn = r->node ? r->node->conn : p->conn;
    if (direct)
        return conn_direct_send(conn, &env, iov, (int)r->n, p->cfg.ack_timeout_ms, 0, produce_done,
                                r);
    return conn_request(conn, &env, iov, (int)r->n, p->cfg.ack_timeout_ms, 0, produce_done, r);
}

/* With p->mu held: a request that could not even be encoded finishes its
 * batches with that error. */
static void produce_unsent(struct verity_producer *p, struct produce_req *r, int rc)
{
    int64_t now = cl_mono_ms();
    for (size_t i = 0; i < r->n; i++)
        accum_complete(&p->acc, r->batches[i], rc == VERITY_ELIMIT ? rc : VERITY_EINVAL, 0, false,
                       now);
    if (r->node)
        r->node->requests_inflight--;
    else
        p->requests_inflight--;
    free(r);
}

/* Sends the drained batches as one Produce request (loop thread, no lock). */
static void produce_send(struct verity_producer *p, struct produce_req *r)
{
    int rc = produce_request(p, r, false);
    pthread_mutex_lock(&p->mu);
    VERITY_VERIFY(p->sends_pending > 0);
    p->sends_pending--;
    if (rc)
        produce_unsent(p, r, rc);
    pthread_mutex_unlock(&p->mu);
}

/*
 * With p->mu held, from an application thread after an append: sends what
 * is ready now on p->conn from this thread when the connection is idle
 * (see the top). Returns true when the I/O thread need not be woken:
 * everything ready was written and whatever is left waits for an answer.
 */
static bool produce_direct(struct verity_producer *p)
{
    if (p->closing || p->routed || !p->conn || p->cfg.linger_ms > 0 || p->acc.fatal ||
        p->init_inflight || p->sends_pending ||
        (p->cfg.idempotence && (p->acc.producer_id < 0 || p->acc.need_reinit)) ||
        cl_loop_in_thread(&p->loop))
        return false;
    int64_t now = cl_mono_ms();
    bool flushing = p->records_reported < p->flush_target;
    /* Idle: no Produce request of ours in flight. With one in flight the
     * I/O thread sends what gathers meanwhile (pipelining keeps a steady
     * stream's batches large: sending from here whenever a request slot was
     * free, or none had been sent for 50 us, made W1's requests 2.5-3.6x
     * more numerous, 150-250 records each instead of 400-570). */
    bool idle = p->requests_inflight == 0;
    if (idle && conn_direct_begin(p->conn)) {
        size_t cap = p->cfg.request_batches_max;
        struct produce_req *r = malloc(sizeof *r + cap * sizeof(struct pbatch *));
        if (r) {
            r->p = p;
            r->node = NULL;
            r->n = accum_drain(&p->acc, now, flushing, r->batches, cap, REQUEST_BYTES_MAX);
        }
        if (r && r->n) {
            p->requests_inflight++;
            int rc = produce_request(p, r, true);
            conn_direct_end(p->conn);
            if (rc) {
                produce_unsent(p, r, rc);
                return false; /* the I/O thread reports them */
            }
        } else {
            conn_direct_end(p->conn);
            free(r);
        }
    }
    /* Nothing left that could go now, and an answer will run the pump. */
    return p->requests_inflight > 0 &&
           (p->requests_inflight >= p->cfg.max_inflight ||
            accum_next_deadline(&p->acc, now, flushing) > now);
}

/* Runs the delivery reports of finished batches (no lock held). */
static void report(struct verity_producer *p, struct pbatch *done)
{
    uint64_t n = 0;
    for (struct pbatch *pb = done; pb; pb = pb->next) {
        pbatch_report(pb);
        n += pb->b.count;
    }
    while (done) {
        struct pbatch *next = done->next;
        pbatch_free(done);
        done = next;
    }
    if (n) {
        pthread_mutex_lock(&p->mu);
        p->records_reported += n;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

static const struct conn_events node_events;

/* Loop thread, p->mu held (released around sends and connection starts):
 * drains each broker's partitions onto its connection. */
static void pump_routed(struct verity_producer *p, int64_t now, bool flushing, size_t cap)
{
    for (size_t i = 0; i < p->n_nodes && !p->closing; i++) {
        struct pnode *n = &p->nodes[i];
        if (!n->conn && n->wanted) {
            struct verity_conn_config cc = p->cfg.conn;
            cc.broker = n->addr;
            pthread_mutex_unlock(&p->mu);
            if (conn_new(p->loop.base, &cc, &node_events, n, &n->conn) == 0)
                conn_start(n->conn);
            else
                n->conn = NULL;
            pthread_mutex_lock(&p->mu);
        }
        while (n->conn && conn_ready(n->conn) && !p->closing &&
               n->requests_inflight < p->cfg.max_inflight) {
            struct produce_req *r = malloc(sizeof *r + cap * sizeof(struct pbatch *));
            if (!r)
                break;
            r->p = p;
            r->node = n;
            r->n = accum_drain_node(&p->acc, now, flushing, n->id, r->batches, cap,
                                    REQUEST_BYTES_MAX);
            if (r->n == 0) {
                free(r);
                break;
            }
            n->requests_inflight++;
            p->sends_pending++;
            pthread_mutex_unlock(&p->mu);
            produce_send(p, r);
            pthread_mutex_lock(&p->mu);
        }
    }
}

static void pump_once(struct verity_producer *p)
{
    int64_t now = cl_mono_ms();
    size_t cap = p->cfg.request_batches_max;
    bool ready = p->conn && conn_ready(p->conn);

    pthread_mutex_lock(&p->mu);
    accum_expire(&p->acc, now);
    bool flushing = p->records_reported < p->flush_target || p->closing;
    if (ready && !p->closing && !p->init_inflight && p->acc.inflight == 0 && !p->acc.fatal &&
        p->cfg.idempotence && (p->acc.producer_id < 0 || p->acc.need_reinit)) {
        p->init_inflight = true;
        int64_t id = p->acc.producer_id;
        int16_t epoch = p->acc.producer_epoch;
        pthread_mutex_unlock(&p->mu);
        init_send(p, id, epoch);
        pthread_mutex_lock(&p->mu);
    }
    if (p->routed) {
        pump_routed(p, now, flushing, cap);
        ready = false; /* the single-connection path below is not used */
        if (!p->meta_stale && !p->meta_inflight && batches_unrouted(p))
            p->meta_stale = true;
    }
    while (ready && !p->closing && p->requests_inflight < p->cfg.max_inflight) {
        struct produce_req *r = malloc(sizeof *r + cap * sizeof(struct pbatch *));
        if (!r)
            break;
        r->p = p;
        r->node = NULL;
        r->n = accum_drain(&p->acc, now, flushing, r->batches, cap, REQUEST_BYTES_MAX);
        if (r->n == 0) {
            free(r);
            break;
        }
        p->requests_inflight++;
        p->sends_pending++;
        pthread_mutex_unlock(&p->mu);
        produce_send(p, r);
        pthread_mutex_lock(&p->mu);
        ready = p->conn && conn_ready(p->conn);
    }
    struct pbatch *done = accum_take_done(&p->acc);
    int64_t next = accum_next_deadline(&p->acc, now, flushing);
    pthread_mutex_unlock(&p->mu);

    if (p->routed) {
        int64_t m = meta_refresh(p, now);
        if (m < next)
            next = m;
        /* A partition whose primary is not connected yet waits for on_ready
         * or the next refresh, not in a busy loop. */
        if (next < now + ROUTED_POLL_MS)
            next = now + ROUTED_POLL_MS;
    }
    report(p, done);
    if (next == INT64_MAX) {
        evtimer_del(p->timer_ev);
    } else {
        int64_t ms = next > now ? next - now : 0;
        /* A partition waiting at its in-flight limit is woken by answers. */
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        evtimer_add(p->timer_ev, &tv);
    }
}

/* Loop thread. Re-entrant calls (a request failing inside a send) are folded
 * into the outer call. */
static void pump(struct verity_producer *p)
{
    if (p->pumping) {
        p->repump = true;
        return;
    }
    p->pumping = true;
    do {
        p->repump = false;
        pump_once(p);
    } while (p->repump);
    p->pumping = false;
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct verity_producer *p = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&p->mu);
    p->kick_pending = false;
    pthread_mutex_unlock(&p->mu);
    pump(p);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

static void on_ready(void *arg)
{
    pump(arg);
}

static void on_down(void *arg, int err)
{
    (void)arg;
    (void)err;
}

static const struct conn_events producer_events = {on_ready, on_down};

static void node_ready(void *arg)
{
    struct pnode *n = arg;
    pump(n->p);
}

/* A broker connection dropped or an attempt failed: its partitions may have
 * a new primary. */
static void node_down(void *arg, int err)
{
    struct pnode *n = arg;
    (void)err;
    n->p->meta_stale = true;
}

static const struct conn_events node_events = {node_ready, node_down};

/* ---- lifecycle ----------------------------------------------------------- */

static void start_job(void *arg)
{
    struct verity_producer *p = arg;
    conn_start(p->conn);
}

static void stop_job(void *arg)
{
    struct verity_producer *p = arg;
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    pthread_mutex_unlock(&p->mu);
    /* In-flight requests fail with VERITY_ECLOSED; the accumulator finishes
     * them because the producer is fatal from here on. */
    pthread_mutex_lock(&p->mu);
    accum_fail_all(&p->acc, VERITY_ECLOSED, true);
    pthread_mutex_unlock(&p->mu);
    conn_free(p->conn);
    p->conn = NULL;
    for (size_t i = 0; i < p->n_nodes; i++) {
        conn_free(p->nodes[i].conn);
        p->nodes[i].conn = NULL;
    }
    pthread_mutex_lock(&p->mu);
    accum_fail_all(&p->acc, VERITY_ECLOSED, true);
    struct pbatch *done = accum_take_done(&p->acc);
    pthread_mutex_unlock(&p->mu);
    report(p, done);
    event_free(p->kick_ev);
    event_free(p->timer_ev);
    p->kick_ev = p->timer_ev = NULL;
}

static void fill_config(const struct verity_producer_config *in, struct verity_producer_config *o)
{
    struct verity_producer_config d;
    verity_producer_config_default(&d);
    *o = in ? *in : d;
    if (o->batch_bytes == 0)
        o->batch_bytes = d.batch_bytes;
    if (o->batch_records == 0)
        o->batch_records = d.batch_records;
    if (o->buffer_bytes_max == 0)
        o->buffer_bytes_max = d.buffer_bytes_max;
    if (o->max_inflight == 0)
        o->max_inflight = d.max_inflight;
    if (o->request_batches_max == 0 || o->request_batches_max > BATCHES_PER_REQUEST_MAX)
        o->request_batches_max = o->request_batches_max ? BATCHES_PER_REQUEST_MAX
                                                        : d.request_batches_max;
    if (o->delivery_timeout_ms <= 0)
        o->delivery_timeout_ms = d.delivery_timeout_ms;
    if (o->retry_backoff_ms <= 0)
        o->retry_backoff_ms = d.retry_backoff_ms;
    if (o->retry_backoff_max_ms < o->retry_backoff_ms)
        o->retry_backoff_max_ms = o->retry_backoff_ms;
    if (o->linger_ms < 0)
        o->linger_ms = 0;
    if (o->block_ms < 0)
        o->block_ms = 0;
}

int verity_producer_new(const struct verity_producer_config *cfg, struct verity_producer **out)
{
    struct verity_producer *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    fill_config(cfg, &p->cfg);
    struct accum_config ac = {
        .batch_bytes = p->cfg.batch_bytes,
        .batch_records = p->cfg.batch_records,
        .linger_ms = p->cfg.linger_ms,
        .buffer_bytes_max = p->cfg.buffer_bytes_max,
        .delivery_timeout_ms = p->cfg.delivery_timeout_ms,
        .retry_backoff_ms = p->cfg.retry_backoff_ms,
        .retry_backoff_max_ms = p->cfg.retry_backoff_max_ms,
        .idempotence = p->cfg.idempotence,
        .partition_inflight_max = 5,
        .seed = (uint32_t)cl_mono_ms() ^ (uint32_t)(uintptr_t)p,
    };
    accum_init(&p->acc, &ac);
    p->meta_backoff_ms = META_BACKOFF_MS;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);

    int rc = cl_loop_start(&p->loop, stop_job, p);
    if (rc)
        goto fail;
    p->kick_ev = event_new(p->loop.base, -1, 0, kick_cb, p);
    p->timer_ev = evtimer_new(p->loop.base, timer_cb, p);
    rc = p->kick_ev && p->timer_ev ? 0 : -ENOMEM;
    if (rc == 0)
        rc = conn_new(p->loop.base, &p->cfg.conn, &producer_events, p, &p->conn);
    if (rc == 0) {
        conn_allow_direct(p->conn);
        rc = cl_loop_post(&p->loop, start_job, p);
    }
    if (rc) {
        cl_loop_stop(&p->loop); /* stop_job frees the events and the conn */
        goto fail;
    }
    *out = p;
    return 0;
fail:
    accum_deinit(&p->acc);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return rc;
}

void verity_producer_free(struct verity_producer *p, int timeout_ms)
{
    if (!p)
        return;
    if (verity_producer_flush(p, timeout_ms) != 0)
        cl_set_last_error("producer closed before every record was acknowledged");
    cl_loop_stop(&p->loop);
    accum_deinit(&p->acc);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void verity_producer_id(struct verity_producer *p, int64_t *id_out, int16_t *epoch_out)
{
    pthread_mutex_lock(&p->mu);
    *id_out = p->acc.producer_id;
    *epoch_out = p->acc.producer_epoch;
    pthread_mutex_unlock(&p->mu);
}

/* ---- produce ------------------------------------------------------------- */

/* With p->mu held: runs append() until it finds buffer room or block_ms passes. */
static int append_blocking(struct verity_producer *p, const char *topic,
                           int (*append)(struct verity_producer *, struct acc_topic *, void *,
                                         int64_t now_ms),
                           void *arg)
{
    int64_t now = cl_mono_ms(); /* one clock read per call: it is on the hot path */
    int64_t deadline = now + p->cfg.block_ms;
    struct timespec ts = {deadline / 1000, (deadline % 1000) * 1000000};
    bool in_loop = cl_loop_in_thread(&p->loop);
    struct acc_topic *t;
    int rc;
    if (p->closing)
        return VERITY_ECLOSED;
    if ((rc = topic_get(p, topic, deadline, &t)))
        return rc;
    for (;;) {
        rc = append(p, t, arg, now);
        if (rc != -ENOBUFS)
            break;
        now = cl_mono_ms();
        if (in_loop || pthread_cond_timedwait(&p->cv, &p->mu, &ts) != 0) {
            rc = VERITY_ELIMIT;
            cl_set_last_error("producer buffer full (buffer_bytes_max)");
            break;
        }
    }
    return rc;
}

struct one_arg {
    int32_t partition;
    const struct verity_record *rec;
    verity_delivery_cb cb;
    void *opaque;
};

static int append_one(struct verity_producer *p, struct acc_topic *t, void *arg, int64_t now_ms)
{
    struct one_arg *a = arg;
    int64_t wall = a->rec->timestamp_ms ? 0 : cl_wall_ms(); /* only stamps zero timestamps */
    return accum_append(&p->acc, t, a->partition, a->rec, a->cb, a->opaque, now_ms, wall);
}

int verity_produce(struct verity_producer *p, const char *topic, int32_t partition,
                   const struct verity_record *rec, verity_delivery_cb cb, void *opaque)
{
    struct one_arg a = {partition, rec, cb, opaque};
    if (!topic)
        return VERITY_EINVAL;
    pthread_mutex_lock(&p->mu);
    int rc = append_blocking(p, topic, append_one, &a);
    bool quiet = rc == 0 && produce_direct(p);
    pthread_mutex_unlock(&p->mu);
    if (rc == 0 && !quiet)
        kick(p);
    return rc;
}

struct many_arg {
    int32_t partition;
    const struct verity_record *recs;
    size_t n;
    const uint8_t *idem_key;
    verity_delivery_cb cb;
    void *opaque;
};

static int append_many(struct verity_producer *p, struct acc_topic *t, void *arg, int64_t now_ms)
{
    struct many_arg *a = arg;
    return accum_append_batch(&p->acc, t, a->partition, a->recs, a->n, a->idem_key, a->cb,
                              a->opaque, now_ms, cl_wall_ms());
}

int verity_produce_batch(struct verity_producer *p, const char *topic, int32_t partition,
                         const struct verity_record *recs, size_t n, const uint8_t *idem_key,
                         verity_delivery_cb cb, void *opaque)
{
    struct many_arg a = {partition, recs, n, idem_key, cb, opaque};
    if (!topic)
        return VERITY_EINVAL;
    pthread_mutex_lock(&p->mu);
    int rc = append_blocking(p, topic, append_many, &a);
    bool quiet = rc == 0 && produce_direct(p);
    pthread_mutex_unlock(&p->mu);
    if (rc == 0 && !quiet)
        kick(p);
    return rc;
}

struct sync_report {
    struct cl_wait w;
    struct verity_delivery d;
};

static void sync_cb(void *opaque, int err, const struct verity_delivery *d)
{
    struct sync_report *s = opaque;
    s->d = *d;
    s->d.topic = NULL;
    cl_wait_signal(&s->w, err, NULL);
}

/* Asks the loop to send everything queued so far without lingering. */
static uint64_t flush_start(struct verity_producer *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t target = p->acc.records_queued;
    if (target > p->flush_target)
        p->flush_target = target;
    /* With linger 0 flushing changes nothing unless something is queued
     * (a direct send may have taken it all): then answers end the flush. */
    bool idle = p->cfg.linger_ms == 0 && !p->closing &&
                accum_next_deadline(&p->acc, cl_mono_ms(), true) == INT64_MAX;
    pthread_mutex_unlock(&p->mu);
    if (!idle)
        kick(p);
    return target;
}

int verity_produce_sync(struct verity_producer *p, const char *topic, int32_t partition,
                        const struct verity_record *rec, struct verity_delivery *out)
{
    struct sync_report s;
    if (cl_loop_in_thread(&p->loop))
        return VERITY_EINVAL;
    cl_wait_init(&s.w);
    memset(&s.d, 0, sizeof s.d);
    int rc = verity_produce(p, topic, partition, rec, sync_cb, &s);
    if (rc == 0) {
        (void)flush_start(p);
        rc = cl_wait_for(&s.w, -1);
        if (out)
            *out = s.d;
        cl_set_last_error(rc ? verity_strerror(rc) : "");
    }
    cl_wait_deinit(&s.w);
    return rc;
}

int verity_producer_flush(struct verity_producer *p, int timeout_ms)
{
    if (cl_loop_in_thread(&p->loop))
        return VERITY_EINVAL;
    uint64_t target = flush_start(p);
    int64_t deadline = cl_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    struct timespec ts = {deadline / 1000, (deadline % 1000) * 1000000};
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    while (p->records_reported < target) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&p->cv, &p->mu);
        } else if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) != 0) {
            rc = p->records_reported < target ? VERITY_ETIMEOUT : 0;
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}
