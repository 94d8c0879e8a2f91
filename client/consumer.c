/*
 * verity_consumer: reads assigned partitions from an offset, the start, the
 * end or a time, and follows them with long-poll fetches.
 *
 * Threads. The I/O thread resolves start positions (ListOffsets), keeps one
 * Fetch request in flight for every partition that is ready, validates what
 * comes back, and queues it as chunks; the polling thread takes chunks off
 * the queue and decodes the records in place. `mu` protects the partition
 * list and the queue. A poll that finds the queue empty runs the I/O loop
 * itself when the loop thread has lent it (cl_loop_borrow, client/loop.c):
 * the "loop thread" below is then the polling thread, never both at once,
 * and a fetch answer reaches poll without a second thread's wake-up.
 *
 * Validation. Every batch of a fetch answer is checked before anything of it
 * is queued: the header, the CRC and every record (batch_validate), and the
 * offsets: each batch starts where the previous one ended, and the first one
 * holds the offset asked for. The next fetch offset is computed from the
 * validated batches, never taken on trust. A partition whose answer fails
 * these checks stops with VERITY_ECORRUPT.
 *
 * Control batches (signed checkpoints, recovery records) are validated like
 * the others and take offsets, but poll steps over them.
 *
 * Memory. A fetch answer's payload is kept as one reference-counted blob;
 * each chunk points into it. Messages returned by poll point into the blobs
 * of the chunks that poll took, which are released at the next poll. The
 * queue stops growing at queue_bytes_max: no fetch is sent while it is full.
 *
 * Cluster routing (issue 10). The consumer starts on one connection (the
 * first reachable broker of the bootstrap list). The first per-partition
 * ERR_NOT_LEADER makes it ask for Metadata; when that names several brokers
 * the consumer is `routed`: each partition is fetched from (and its start
 * resolved on) its primary, one Fetch in flight per broker connection, the
 * connections opened on demand. A NOT_LEADER or a lost broker connection
 * forgets the partition's primary and asks Metadata again (RETRY_MS apart).
 * A single broker never leaves the first connection.
 */
#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "storage/clock.h"
#include "verity/limits.h"
#include "verity/verify.h"

#define RETRY_MS 100
#define LEND_RETURN_BYTES (64u << 10) /* poll: see verity_consumer_poll */
#define META_TOPICS_MAX 32

enum cp_state {
    CP_RESOLVE = 0,  /* start position not known yet */
    CP_RESOLVING,    /* ListOffsets in flight */
    CP_FETCH,        /* fetching from fetch_offset */
    CP_FAILED,       /* stopped with err */
};

struct cpart {
    struct cpart *next;
    char *topic;
    uint32_t partition;
    enum verity_start start;
    int64_t arg;
    enum cp_state state;
    uint64_t fetch_offset;      /* loop thread: next offset to ask for */
    uint64_t position;          /* next offset poll returns */
    uint64_t high_watermark;
    int64_t retry_at_ms;        /* after a transient error */
    int err;                    /* CP_FAILED: why */
    bool err_reported;
    bool fetching;              /* in the fetch in flight */
    uint32_t leader;            /* routed: node id of the primary (0: unknown) */
    bool ckpt_have;             /* ckpt holds a checkpoint poll stepped over */
    uint64_t ckpt_offset;       /* offset of that checkpoint's control batch */
    uint8_t ckpt[VERITY_CHECKPOINT_SIZE]; /* its 160-byte payload */
};

struct blob {
    atomic_uint refs;
    uint8_t *data;
};

struct chunk {
    struct chunk *next;
    struct cpart *part;
    struct blob *blob;
    const uint8_t *data;        /* whole, validated batches */
    size_t len;
    uint64_t from_offset;       /* records below it are skipped */
};

#define CNODES_MAX 16

/* One broker of the cluster (loop thread only). */
struct cnode {
    struct verity_consumer *c;
    uint32_t id;
    char addr[300];
    struct conn *conn;          /* opened when a partition is led by it */
    bool fetch_inflight;
};

struct fetch_req {
    struct verity_consumer *c;
    struct cnode *node;         /* NULL: c->conn */
    size_t n;
    struct cpart *parts[];
};

struct verity_consumer {
    struct verity_consumer_config cfg;
    struct cl_loop loop;
    struct conn *conn;          /* loop thread */
    struct event *kick_ev;
    struct event *timer_ev;
    pthread_mutex_t mu;         /* protects the fields up to `closing` */
    pthread_cond_t cv;
    struct cpart *parts;
    struct chunk *q_head;
    struct chunk *q_tail;
    uint64_t q_bytes;
    bool kick_pending;
    bool closing;
    bool q_woken;               /* poll was woken for what is queued */
    /* loop thread */
    bool fetch_inflight;
    bool routed;                /* Metadata named several brokers */
    bool meta_stale;            /* a partition's primary is unknown */
    bool meta_inflight;
    int64_t meta_next_ms;
    struct cnode nodes[CNODES_MAX];
    size_t n_nodes;
    /* polling thread */
    struct chunk *held;         /* backing the last poll's messages */
    struct verity_message *msgs;
    size_t msgs_cap;
    struct verity_header *hdrs;
    size_t hdrs_cap;
};

void verity_consumer_config_default(struct verity_consumer_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    verity_conn_config_default(&cfg->conn);
    cfg->fetch_max_wait_ms = 500;
    cfg->fetch_min_bytes = 1;
    cfg->fetch_max_bytes = 8u << 20;
    cfg->partition_max_bytes = 1u << 20;
    cfg->queue_bytes_max = 32u << 20;
}

static void blob_unref(struct blob *b)
{
    if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
        free(b->data);
        free(b);
    }
}

static void chunks_free(struct chunk *ch)
{
    while (ch) {
        struct chunk *next = ch->next;
        blob_unref(ch->blob);
        free(ch);
        ch = next;
    }
}

static void cpump(struct verity_consumer *c);
static const struct conn_events cnode_events;

static void kick(struct verity_consumer *c)
{
    pthread_mutex_lock(&c->mu);
    bool was = c->kick_pending;
    c->kick_pending = true;
    pthread_mutex_unlock(&c->mu);
    if (!was) {
        event_active(c->kick_ev, 0, 0);
        cl_loop_nudge(&c->loop); /* a base lent to an absent poll comes back for it */
    }
}

/* With mu held. */
static void part_fail(struct verity_consumer *c, struct cpart *p, int err)
{
    p->state = CP_FAILED;
    p->err = err;
    pthread_cond_broadcast(&c->cv);
}

static bool transient(int err)
{
    return accum_err_retriable(err) && err != VERITY_EREADONLY;
}

/* ---- routing --------------------------------------------------------------- */

static struct cnode *cnode_find(struct verity_consumer *c, uint32_t id)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].id == id)
            return &c->nodes[i];
    return NULL;
}

/* The connection for partition p: its primary's when routed (NULL when that
 * is unknown or not connected yet), else the first connection. */
static struct conn *part_conn(struct verity_consumer *c, const struct cpart *p)
{
    if (!c->routed)
        return c->conn;
    struct cnode *n = cnode_find(c, p->leader);
    return n && n->conn && conn_ready(n->conn) ? n->conn : NULL;
}

static void meta_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                      uint8_t **payload, size_t payload_len)
{
    struct verity_consumer *c = arg;
    (void)msg;
    (void)payload;
    (void)payload_len;
    c->meta_inflight = false;
    if (err == 0) {
        const Verity__MetadataResponse *r = env->metadata_resp;
        for (size_t i = 0; i < r->n_brokers; i++) {
            char addr[300];
            if (r->brokers[i]->node_id == 0 ||
                !conn_broker_addr(r->brokers[i], addr, sizeof addr))
                continue;
            struct cnode *n = cnode_find(c, r->brokers[i]->node_id);
            if (!n && c->n_nodes < CNODES_MAX) {
                n = &c->nodes[c->n_nodes++];
                memset(n, 0, sizeof *n);
                n->c = c;
                n->id = r->brokers[i]->node_id;
            }
            if (n && !n->conn)
                snprintf(n->addr, sizeof n->addr, "%s", addr);
        }
        c->routed = c->n_nodes > 1;
        bool stale = false;
        pthread_mutex_lock(&c->mu);
        for (struct cpart *p = c->parts; p; p = p->next) {
            for (size_t i = 0; i < r->n_topics; i++) {
                const Verity__TopicMetadata *t = r->topics[i];
                if (!t->name || strcmp(t->name, p->topic) != 0)
                    continue;
                for (size_t k = 0; k < t->n_partitions; k++)
                    if (t->partitions[k]->partition == p->partition)
                        p->leader = t->partitions[k]->leader;
            }
            if (c->routed && !cnode_find(c, p->leader))
                stale = true;
        }
        pthread_mutex_unlock(&c->mu);
        c->meta_stale = stale;
    }
    if (!c->closing)
        cpump(c);
}

/* Loop thread: asks Metadata when a primary is unknown (RETRY_MS apart). */
static void meta_refresh(struct verity_consumer *c, int64_t now, int64_t *next)
{
    if (!c->meta_stale || c->meta_inflight || !conn_ready(c->conn))
        return;
    if (now < c->meta_next_ms) {
        if (c->meta_next_ms < *next)
            *next = c->meta_next_ms;
        return;
    }
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__MetadataRequest req = VERITY__METADATA_REQUEST__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_METADATA_REQ;
    env.metadata_req = &req;
    /* Ask for the consumer's own topics, not the broker's list: a topic
     * read by right rather than by tenant (the broker-wide __audit, read
     * with consume on cluster:audit) is in no list, and a list of
     * thousands of topics is not needed. More than META_TOPICS_MAX
     * distinct topics: the whole list. */
    static_assert(META_TOPICS_MAX * (VERITY_TOPIC_NAME_MAX + 1) <= 16384, "stack");
    char copies[META_TOPICS_MAX][VERITY_TOPIC_NAME_MAX + 1]; /* parts may go meanwhile */
    char *names[META_TOPICS_MAX];
    size_t nn = 0;
    bool all = false;
    pthread_mutex_lock(&c->mu);
    for (struct cpart *p = c->parts; p && !all; p = p->next) {
        size_t i = 0;
        while (i < nn && strcmp(copies[i], p->topic) != 0)
            i++;
        if (i < nn)
            continue;
        if (nn == META_TOPICS_MAX)
            all = true;
        else if (strlen(p->topic) <= VERITY_TOPIC_NAME_MAX) {
            memcpy(copies[nn], p->topic, strlen(p->topic) + 1);
            names[nn] = copies[nn];
            nn++;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (!all) {
        req.n_topics = nn;
        req.topics = names;
    }
    if (conn_request(c->conn, &env, NULL, 0, 0, CONN_RETRY_ON_RESET, meta_done, c) == 0) {
        c->meta_inflight = true;
        c->meta_next_ms = now + RETRY_MS;
    }
}

/* With mu held: partition p was told NOT_LEADER (or lost its broker). */
static void part_reroute(struct verity_consumer *c, struct cpart *p)
{
    p->leader = 0;
    c->meta_stale = true;
}

/* ---- start positions ----------------------------------------------------- */

struct resolve_req {
    struct verity_consumer *c;
    struct cpart *p;
};

static void resolve_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                         uint8_t **payload, size_t payload_len)
{
    struct resolve_req *r = arg;
    struct verity_consumer *c = r->c;
    struct cpart *p = r->p;
    (void)msg;
    (void)payload;
    (void)payload_len;
    free(r);
    uint64_t offset = 0, hw = 0;
    if (err == 0) {
        const Verity__ListOffsetsResponse *resp = env->list_offsets_resp;
        if (resp->n_results != 1 || !resp->results[0]->topic ||
            strcmp(resp->results[0]->topic, p->topic) != 0 ||
            resp->results[0]->partition != p->partition) {
            err = VERITY_EPROTO;
        } else {
            err = codec_err_from_wire(resp->results[0]->error);
            offset = resp->results[0]->offset;
            hw = resp->results[0]->high_watermark;
        }
    }
    pthread_mutex_lock(&c->mu);
    if (err == 0) {
        p->state = CP_FETCH;
        p->fetch_offset = p->position = offset;
        p->high_watermark = hw;
    } else if (transient(err) && !c->closing) {
        p->state = CP_RESOLVE;
        p->retry_at_ms = cl_mono_ms() + RETRY_MS;
        if (err == VERITY_ENOTLEADER || c->routed)
            part_reroute(c, p);
    } else {
        part_fail(c, p, err);
    }
    pthread_mutex_unlock(&c->mu);
    if (!c->closing)
        cpump(c);
}

static void resolve_send(struct verity_consumer *c, struct cpart *p, struct conn *conn)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ListOffsetsRequest req = VERITY__LIST_OFFSETS_REQUEST__INIT;
    Verity__ListOffsetsPartition lp = VERITY__LIST_OFFSETS_PARTITION__INIT;
    Verity__ListOffsetsPartition *lps[1] = {&lp};
    struct resolve_req *r = malloc(sizeof *r);
    if (!r) {
        pthread_mutex_lock(&c->mu);
        p->state = CP_RESOLVE;
        p->retry_at_ms = cl_mono_ms() + RETRY_MS;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    r->c = c;
    r->p = p;
    lp.topic = p->topic;
    lp.partition = p->partition;
    lp.spec = p->start == VERITY_START_EARLIEST ? VERITY__OFFSET_SPEC__OFFSET_EARLIEST
              : p->start == VERITY_START_TIME   ? VERITY__OFFSET_SPEC__OFFSET_TIMESTAMP
                                                : VERITY__OFFSET_SPEC__OFFSET_LATEST;
    lp.timestamp_ms = p->start == VERITY_START_TIME ? p->arg : 0;
    req.partitions = lps;
    req.n_partitions = 1;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ;
    env.list_offsets_req = &req;
    /* Routed, conn is the connection to the partition's primary as last
     * known: a NOT_LEADER comes back here (Metadata again) rather than
     * moving a connection other partitions share. */
    int rc = conn_request(conn, &env, NULL, 0, 0, c->routed ? CONN_NO_FOLLOW : 0, resolve_done, r);
    if (rc) {
        free(r);
        pthread_mutex_lock(&c->mu);
        part_fail(c, p, rc);
        pthread_mutex_unlock(&c->mu);
    }
}

/* ---- fetch --------------------------------------------------------------- */

/*
 * Checks the len bytes of whole batches answering a fetch at `offset` and
 * returns the offset after the last record in *next. Returns 0 or
 * VERITY_ECORRUPT.
 */
static int check_batches(const uint8_t *data, size_t len, uint64_t offset, uint64_t *next)
{
    size_t pos = 0;
    uint64_t expect = offset;
    bool first = true;
    while (pos < len) {
        struct batch_hdr h;
        if (len - pos < BATCH_HDR_SIZE || batch_hdr_decode(data + pos, len - pos, &h) != 0 ||
            h.length > len - pos)
            return VERITY_ECORRUPT;
        if (batch_validate(data + pos, h.length, NULL) != 0)
            return VERITY_ECORRUPT;
        uint64_t end = h.base_offset + h.record_count;
        if (end < h.base_offset)
            return VERITY_ECORRUPT;
        if (first ? !(h.base_offset <= offset && offset < end) : h.base_offset != expect)
            return VERITY_ECORRUPT;
        first = false;
        expect = end;
        pos += h.length;
    }
    *next = expect;
    return 0;
}

static void fetch_result(struct verity_consumer *c, struct cpart *p, const Verity__FetchResult *x,
                         struct blob *blob, const uint8_t *data, int64_t now)
{
    int err = codec_err_from_wire(x->error);
    if (err == 0 && (!x->topic || strcmp(x->topic, p->topic) != 0 ||
                     x->partition != p->partition))
        err = VERITY_EPROTO;
    if (err) {
        if (transient(err))
            p->retry_at_ms = now + RETRY_MS;
        else
            part_fail(c, p, err);
        if (err == VERITY_ENOTLEADER)
            part_reroute(c, p);
        return;
    }
    p->high_watermark = x->high_watermark;
    if (x->records_bytes == 0)
        return;
    uint64_t next = 0;
    if (check_batches(data, x->records_bytes, p->fetch_offset, &next) != 0) {
        part_fail(c, p, VERITY_ECORRUPT);
        return;
    }
    struct chunk *ch = calloc(1, sizeof *ch);
    if (!ch) {
        p->retry_at_ms = now + RETRY_MS;
        return;
    }
    ch->part = p;
    ch->blob = blob;
    atomic_fetch_add(&blob->refs, 1);
    ch->data = data;
    ch->len = x->records_bytes;
    ch->from_offset = p->fetch_offset;
    p->fetch_offset = next;
    if (c->q_tail)
        c->q_tail->next = ch;
    else
        c->q_head = ch;
    c->q_tail = ch;
    c->q_bytes += ch->len;
    c->q_woken = false; /* fetch_done wakes poll once the next fetch is out */
}

static void fetch_done(void *arg, int err, const char *msg, const Verity__Envelope *env,
                       uint8_t **payload, size_t payload_len)
{
    struct fetch_req *r = arg;
    struct verity_consumer *c = r->c;
    int64_t now = cl_mono_ms();
    (void)msg;
    const Verity__FetchResponse *resp = err == 0 ? env->fetch_resp : NULL;
    if (resp && resp->n_results != r->n)
        err = VERITY_EPROTO;
    if (err == 0) {
        /* the results' bytes must be the payload, exactly */
        uint64_t sum = 0;
        for (size_t i = 0; i < r->n; i++)
            sum += resp->results[i]->records_bytes;
        if (sum != payload_len)
            err = VERITY_EPROTO;
    }
    struct blob *blob = NULL;
    if (err == 0 && payload_len > 0) {
        blob = malloc(sizeof *blob);
        if (!blob) {
            err = -ENOMEM;
        } else {
            atomic_init(&blob->refs, 1);
            blob->data = *payload;
            *payload = NULL;
        }
    }
    pthread_mutex_lock(&c->mu);
    if (r->node)
        r->node->fetch_inflight = false;
    else
        c->fetch_inflight = false;
    size_t pos = 0;
    for (size_t i = 0; i < r->n; i++) {
        struct cpart *p = r->parts[i];
        const Verity__FetchResult *x = err ? NULL : resp->results[i];
        const uint8_t *data = blob && x ? blob->data + pos : NULL;
        if (x)
            pos += x->records_bytes; /* before any skip: the next result's bytes follow */
        p->fetching = false;
        if (p->state != CP_FETCH)
            continue;
        if (err) {
            if (transient(err))
                p->retry_at_ms = now + RETRY_MS;
            else
                part_fail(c, p, err);
            if (r->node && transient(err))
                part_reroute(c, p);
            continue;
        }
        fetch_result(c, p, x, blob, data, now);
    }
    pthread_mutex_unlock(&c->mu);
    blob_unref(blob);
    free(r);
    /* The next fetch goes out before poll is woken (issue 16): woken first,
     * the polling thread could take this thread's CPU, and the fetch that
     * carries the next messages would wait until this thread ran again. */
    if (!c->closing) {
        cpump(c);
        conn_flush(c->conn);
        for (size_t i = 0; i < c->n_nodes; i++)
            conn_flush(c->nodes[i].conn);
    }
    pthread_mutex_lock(&c->mu);
    if (!c->q_woken) {
        c->q_woken = true;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Sends one Fetch for every partition ready to fetch (loop thread); with
 * node, only those it leads, on its connection. */
static void fetch_send(struct verity_consumer *c, struct cnode *node, int64_t now)
{
    size_t n = 0;
    for (struct cpart *p = c->parts; p; p = p->next)
        n++;
    struct fetch_req *r = malloc(sizeof *r + n * sizeof(struct cpart *));
    Verity__FetchPartition *fps = calloc(n ? n : 1, sizeof *fps);
    Verity__FetchPartition **fpp = calloc(n ? n : 1, sizeof *fpp);
    if (!r || !fps || !fpp)
        goto out;
    r->c = c;
    r->node = node;
    r->n = 0;
    pthread_mutex_lock(&c->mu);
    for (struct cpart *p = c->parts; p && r->n < CODEC_ITEMS_MAX; p = p->next) {
        /* one fetch per partition at a time: a second one at the same
         * offset (on another broker's connection after its primary was
         * learned, or the first connection's still in flight) would answer
         * the same records again, past the position (seen as ECORRUPT) */
        if (p->state != CP_FETCH || p->retry_at_ms > now || p->fetching)
            continue;
        if (node && p->leader != node->id)
            continue;
        Verity__FetchPartition *fp = &fps[r->n];
        verity__fetch_partition__init(fp);
        fp->topic = p->topic;
        fp->partition = p->partition;
        fp->offset = p->fetch_offset;
        fp->max_bytes = c->cfg.partition_max_bytes;
        fpp[r->n] = fp;
        r->parts[r->n++] = p;
        p->fetching = true;
    }
    pthread_mutex_unlock(&c->mu);
    if (r->n == 0)
        goto out;
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__FetchRequest req = VERITY__FETCH_REQUEST__INIT;
    req.max_wait_ms = c->cfg.fetch_max_wait_ms;
    req.min_bytes = c->cfg.fetch_min_bytes;
    req.max_bytes = c->cfg.fetch_max_bytes;
    req.partitions = fpp;
    req.n_partitions = r->n;
    env.body_case = VERITY__ENVELOPE__BODY_FETCH_REQ;
    env.fetch_req = &req;
    bool *inflight = node ? &node->fetch_inflight : &c->fetch_inflight;
    *inflight = true;
    int rc = conn_request(node ? node->conn : c->conn, &env, NULL, 0, c->cfg.fetch_max_wait_ms,
                          0, fetch_done, r);
    if (rc) {
        *inflight = false;
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < r->n; i++) {
            r->parts[i]->fetching = false;
            part_fail(c, r->parts[i], rc);
        }
        pthread_mutex_unlock(&c->mu);
        goto out;
    }
    r = NULL; /* owned by the request now */
out:
    free(r);
    free(fps);
    free(fpp);
}

static void cpump(struct verity_consumer *c)
{
    int64_t now = cl_mono_ms();
    int64_t next = INT64_MAX;
    struct cpart *resolve[16];
    struct conn *resolve_conn[16];
    size_t n_resolve = 0;
    if (!c->conn)
        return;
    if (c->routed) {
        /* Open the connections of the brokers that lead our partitions. */
        for (size_t i = 0; i < c->n_nodes && !c->closing; i++) {
            struct cnode *nd = &c->nodes[i];
            bool wanted = false;
            pthread_mutex_lock(&c->mu);
            for (struct cpart *p = c->parts; p && !wanted; p = p->next)
                wanted = p->leader == nd->id;
            pthread_mutex_unlock(&c->mu);
            if (wanted && !nd->conn) {
                struct verity_conn_config cc = c->cfg.conn;
                cc.broker = nd->addr;
                if (conn_new(c->loop.base, &cc, &cnode_events, nd, &nd->conn) == 0)
                    conn_start(nd->conn);
                else
                    nd->conn = NULL;
            }
        }
    }
    meta_refresh(c, now, &next);
    if (!c->routed && !conn_ready(c->conn))
        return;
    pthread_mutex_lock(&c->mu);
    bool room = c->q_bytes < c->cfg.queue_bytes_max;
    bool want_fetch = false;
    for (struct cpart *p = c->parts; p; p = p->next) {
        if (p->state == CP_RESOLVE && p->start == VERITY_START_OFFSET) {
            p->state = CP_FETCH;
            p->fetch_offset = p->position = (uint64_t)p->arg;
        }
        if (p->state == CP_RESOLVE) {
            if (p->retry_at_ms > now) {
                if (p->retry_at_ms < next)
                    next = p->retry_at_ms;
            } else if (!part_conn(c, p)) {
                if (now + RETRY_MS < next)
                    next = now + RETRY_MS; /* waits for its primary */
            } else if (n_resolve < sizeof resolve / sizeof resolve[0]) {
                p->state = CP_RESOLVING;
                resolve_conn[n_resolve] = part_conn(c, p);
                resolve[n_resolve++] = p;
            } else {
                next = now; /* the rest on the next pass */
            }
        }
        if (p->state == CP_FETCH) {
            if (p->retry_at_ms <= now)
                want_fetch = true;
            else if (p->retry_at_ms < next)
                next = p->retry_at_ms;
        }
    }
    pthread_mutex_unlock(&c->mu);
    /* Requests are sent without mu: a send that fails runs handlers that lock it. */
    for (size_t i = 0; i < n_resolve; i++)
        resolve_send(c, resolve[i], resolve_conn[i]);
    if (!c->routed && want_fetch && room && !c->fetch_inflight)
        fetch_send(c, NULL, now);
    for (size_t i = 0; c->routed && want_fetch && room && i < c->n_nodes; i++) {
        struct cnode *nd = &c->nodes[i];
        if (nd->conn && conn_ready(nd->conn) && !nd->fetch_inflight)
            fetch_send(c, nd, now);
    }
    if (c->routed && want_fetch && next > now + RETRY_MS)
        next = now + RETRY_MS; /* partitions whose primary is not connected yet */
    if (next != INT64_MAX) {
        int64_t ms = next > now ? next - now : 0;
        struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
        evtimer_add(c->timer_ev, &tv);
    }
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct verity_consumer *c = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&c->mu);
    c->kick_pending = false;
    pthread_mutex_unlock(&c->mu);
    cpump(c);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cpump(arg);
}

static void on_ready(void *arg)
{
    cpump(arg);
}

static void on_down(void *arg, int err)
{
    struct verity_consumer *c = arg;
    (void)err;
    /* A ListOffsets lost with the connection is asked again. */
    pthread_mutex_lock(&c->mu);
    for (struct cpart *p = c->parts; p; p = p->next)
        if (p->state == CP_RESOLVING)
            p->state = CP_RESOLVE;
    pthread_mutex_unlock(&c->mu);
}

static const struct conn_events consumer_events = {on_ready, on_down};

static void cnode_ready(void *arg)
{
    struct cnode *n = arg;
    cpump(n->c);
}

/* A broker connection dropped: its partitions look for their primary again. */
static void cnode_down(void *arg, int err)
{
    struct cnode *n = arg;
    struct verity_consumer *c = n->c;
    (void)err;
    pthread_mutex_lock(&c->mu);
    for (struct cpart *p = c->parts; p; p = p->next) {
        if (p->leader != n->id)
            continue;
        if (p->state == CP_RESOLVING)
            p->state = CP_RESOLVE;
        part_reroute(c, p);
    }
    pthread_mutex_unlock(&c->mu);
}

static const struct conn_events cnode_events = {cnode_ready, cnode_down};

/* ---- lifecycle ----------------------------------------------------------- */

/* Borrowed loop (poll): true once poll has something to return. */
static bool poll_ready(void *arg)
{
    struct verity_consumer *c = arg;
    pthread_mutex_lock(&c->mu);
    bool ready = c->q_head != NULL;
    for (struct cpart *p = c->parts; p && !ready; p = p->next)
        ready = p->state == CP_FAILED && !p->err_reported;
    pthread_mutex_unlock(&c->mu);
    return ready;
}

/* Loop thread: the base is lent; a poll waiting for it tries again. */
static void on_lent(void *arg)
{
    struct verity_consumer *c = arg;
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}


static void start_job(void *arg)
{
    struct verity_consumer *c = arg;
    conn_start(c->conn);
}

static void stop_job(void *arg)
{
    struct verity_consumer *c = arg;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_mutex_unlock(&c->mu);
    conn_free(c->conn);
    c->conn = NULL;
    for (size_t i = 0; i < c->n_nodes; i++) {
        conn_free(c->nodes[i].conn);
        c->nodes[i].conn = NULL;
    }
    event_free(c->kick_ev);
    event_free(c->timer_ev);
    c->kick_ev = c->timer_ev = NULL;
}

int verity_consumer_new(const struct verity_consumer_config *cfg, struct verity_consumer **out)
{
    struct verity_consumer *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    struct verity_consumer_config d;
    verity_consumer_config_default(&d);
    c->cfg = cfg ? *cfg : d;
    if (c->cfg.fetch_max_bytes == 0)
        c->cfg.fetch_max_bytes = d.fetch_max_bytes;
    if (c->cfg.partition_max_bytes == 0)
        c->cfg.partition_max_bytes = d.partition_max_bytes;
    if (c->cfg.queue_bytes_max == 0)
        c->cfg.queue_bytes_max = d.queue_bytes_max;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = cl_loop_start(&c->loop, stop_job, c);
    if (rc)
        goto fail;
    c->loop.on_lent = on_lent;
    c->loop.on_lent_arg = c;
    c->kick_ev = event_new(c->loop.base, -1, 0, kick_cb, c);
    c->timer_ev = evtimer_new(c->loop.base, timer_cb, c);
    rc = c->kick_ev && c->timer_ev ? 0 : -ENOMEM;
    if (rc == 0)
        rc = conn_new(c->loop.base, &c->cfg.conn, &consumer_events, c, &c->conn);
    if (rc == 0)
        rc = cl_loop_post(&c->loop, start_job, c);
    if (rc) {
        cl_loop_stop(&c->loop);
        goto fail;
    }
    *out = c;
    return 0;
fail:
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
    return rc;
}

void verity_consumer_free(struct verity_consumer *c)
{
    if (!c)
        return;
    cl_loop_stop(&c->loop);
    chunks_free(c->held);
    chunks_free(c->q_head);
    struct cpart *p = c->parts;
    while (p) {
        struct cpart *next = p->next;
        free(p->topic);
        free(p);
        p = next;
    }
    free(c->msgs);
    free(c->hdrs);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int verity_consumer_assign(struct verity_consumer *c, const char *topic, uint32_t partition,
                           enum verity_start start, int64_t arg)
{
    if (!codec_topic_name_ok(topic, true) || (unsigned)start > VERITY_START_TIME ||
        (start == VERITY_START_OFFSET && arg < 0))
        return VERITY_EINVAL;
    pthread_mutex_lock(&c->mu);
    size_t n = 0;
    for (struct cpart *p = c->parts; p; p = p->next, n++) {
        if (p->partition == partition && strcmp(p->topic, topic) == 0) {
            pthread_mutex_unlock(&c->mu);
            return VERITY_EEXIST;
        }
    }
    if (n >= CODEC_ITEMS_MAX) {
        pthread_mutex_unlock(&c->mu);
        return VERITY_ELIMIT;
    }
    struct cpart *p = calloc(1, sizeof *p);
    if (!p || !(p->topic = strdup(topic))) {
        free(p);
        pthread_mutex_unlock(&c->mu);
        return -ENOMEM;
    }
    p->partition = partition;
    p->start = start;
    p->arg = arg;
    p->state = CP_RESOLVE;
    /* Append, so fetches list partitions in assignment order. */
    struct cpart **pp = &c->parts;
    while (*pp)
        pp = &(*pp)->next;
    *pp = p;
    pthread_mutex_unlock(&c->mu);
    kick(c);
    return 0;
}

/* ---- poll ---------------------------------------------------------------- */

static int msgs_reserve(struct verity_consumer *c, size_t n)
{
    if (n <= c->msgs_cap)
        return 0;
    size_t cap = c->msgs_cap ? c->msgs_cap : 256;
    while (cap < n)
        cap *= 2;
    struct verity_message *m = realloc(c->msgs, cap * sizeof *m);
    if (!m)
        return -ENOMEM;
    c->msgs = m;
    c->msgs_cap = cap;
    return 0;
}

static int hdrs_reserve(struct verity_consumer *c, size_t n)
{
    if (n <= c->hdrs_cap)
        return 0;
    size_t cap = c->hdrs_cap ? c->hdrs_cap : 64;
    while (cap < n)
        cap *= 2;
    struct verity_header *h = realloc(c->hdrs, cap * sizeof *h);
    if (!h)
        return -ENOMEM;
    c->hdrs = h;
    c->hdrs_cap = cap;
    return 0;
}

/* Copies the payload of a checkpoint control batch into p (the latest one
 * wins); other control batches are ignored. */
static void keep_checkpoint(struct verity_consumer *c, struct cpart *p, const uint8_t *b,
                            uint32_t blen, uint64_t base)
{
    struct batch_iter it;
    struct batch_record r;
    batch_iter_init(&it, b, blen);
    if (batch_iter_next(&it, &r) != 1 || !r.key || r.value_len != VERITY_CHECKPOINT_SIZE ||
        r.key_len != (int32_t)strlen(BATCH_CONTROL_CHECKPOINT) ||
        memcmp(r.key, BATCH_CONTROL_CHECKPOINT, strlen(BATCH_CONTROL_CHECKPOINT)) != 0)
        return;
    pthread_mutex_lock(&c->mu);
    memcpy(p->ckpt, r.value, VERITY_CHECKPOINT_SIZE);
    p->ckpt_offset = base;
    p->ckpt_have = true;
    pthread_mutex_unlock(&c->mu);
}

/* Decodes the records of one chunk into c->msgs from *n on; header slots
 * are numbered from *nh (pointers are fixed once the array stops moving). */
static int decode_chunk(struct verity_consumer *c, const struct chunk *ch, size_t *n, size_t *nh,
                        uint64_t *last)
{
    size_t pos = 0;
    while (pos < ch->len) {
        const uint8_t *b = ch->data + pos;
        uint32_t blen = get_le32(b + BATCH_OFF_LENGTH);
        uint64_t base = get_le64(b + BATCH_OFF_BASE_OFFSET);
        struct batch_iter it;
        struct batch_record r;
        int rc;
        if (b[53] & BATCH_ATTR_CONTROL) {
            /* Checkpoints and recovery records take offsets but are not
             * messages: step over them, keeping the latest checkpoint for
             * verity_consumer_checkpoint. */
            uint64_t end = base + get_le32(b + 56) - 1;
            if (end >= ch->from_offset) {
                *last = end;
                keep_checkpoint(c, ch->part, b, blen, base);
            }
            pos += blen;
            continue;
        }
        batch_iter_init(&it, b, blen);
        if (msgs_reserve(c, *n + get_le32(b + 56)))
            return -ENOMEM;
        while ((rc = batch_iter_next(&it, &r)) == 1) {
            uint64_t off = base + r.offset_delta;
            if (off < ch->from_offset)
                continue;
            struct verity_message *m = &c->msgs[(*n)++];
            m->topic = ch->part->topic;
            m->partition = ch->part->partition;
            m->offset = off;
            m->timestamp_ms = r.timestamp;
            m->key = r.key;
            m->key_len = r.key_len;
            m->value = r.value;
            m->value_len = r.value_len;
            m->header_count = r.header_count;
            m->chain_hash = b + BATCH_OFF_CHAIN;
            m->batch_last_offset = base + get_le32(b + 56) - 1;
            m->headers = (const struct verity_header *)(uintptr_t)*nh;
            if (r.header_count) {
                if (hdrs_reserve(c, *nh + r.header_count))
                    return -ENOMEM;
                size_t hp = 0;
                struct batch_header_kv kv;
                while (batch_header_next(&r, &hp, &kv) == 1) {
                    struct verity_header *h = &c->hdrs[(*nh)++];
                    h->key = (const char *)kv.key;
                    h->key_len = kv.key_len;
                    h->value = kv.value;
                    h->value_len = kv.value_len;
                }
            }
            *last = off;
        }
        if (rc < 0)
            return VERITY_ECORRUPT; /* validated on arrival; cannot happen */
        pos += blen;
    }
    return 0;
}

int verity_consumer_poll(struct verity_consumer *c, int timeout_ms,
                         const struct verity_message **msgs_out, size_t *n_out,
                         uint32_t *err_partition_out)
{
    *msgs_out = NULL;
    *n_out = 0;
    chunks_free(c->held);
    c->held = NULL;

    int64_t deadline = cl_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    struct timespec ts = {deadline / 1000, (deadline % 1000) * 1000000};
    int64_t deadline_ns = timeout_ms < 0 ? INT64_MAX : deadline * 1000000;
    bool timed_out = false;
    int err = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        for (struct cpart *p = c->parts; p; p = p->next) {
            /* Report a failure once the data before it has been polled. */
            if (p->state == CP_FAILED && !p->err_reported) {
                bool queued = false;
                for (struct chunk *ch = c->q_head; ch && !queued; ch = ch->next)
                    queued = ch->part == p;
                if (!queued) {
                    p->err_reported = true;
                    err = p->err;
                    if (err_partition_out)
                        *err_partition_out = p->partition;
                    break;
                }
            }
        }
        if (err || c->q_head || timeout_ms == 0 || timed_out)
            break;
        /* Nothing to return: this thread runs the I/O loop itself when it
         * may, so the fetch answer it waits for is read, checked and queued
         * here, without the loop thread's wake-up of this one (issue 16).
         * Otherwise the loop thread was asked to lend it, and on_lent wakes
         * this thread to try again; meanwhile answers reach the queue as
         * before. mu is held from the ask to the wait: no wake-up is lost. */
        if (cl_loop_borrow(&c->loop)) {
            pthread_mutex_unlock(&c->mu);
            cl_loop_run_borrowed(&c->loop, poll_ready, c, deadline_ns);
            pthread_mutex_lock(&c->mu);
            timed_out = clock_mono_ns() >= deadline_ns;
            /* A large answer: this thread will be busy decoding it, so the
             * loop thread takes the loop back and reads ahead meanwhile
             * (W3); small ones (W4) leave it lent for the next poll. */
            if (c->q_bytes >= LEND_RETURN_BYTES)
                cl_loop_nudge(&c->loop);
            continue;
        }
        if (timeout_ms < 0)
            pthread_cond_wait(&c->cv, &c->mu);
        else if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0)
            break;
    }
    bool was_full = c->q_bytes >= c->cfg.queue_bytes_max;
    if (!err) {
        c->held = c->q_head;
        c->q_head = c->q_tail = NULL;
        c->q_bytes = 0;
    }
    pthread_mutex_unlock(&c->mu);
    if (err)
        return err;
    if (was_full)
        kick(c);

    size_t n = 0, nh = 0;
    for (struct chunk *ch = c->held; ch; ch = ch->next) {
        uint64_t last = UINT64_MAX;
        int rc = decode_chunk(c, ch, &n, &nh, &last);
        if (rc)
            return rc;
        if (last != UINT64_MAX) {
            pthread_mutex_lock(&c->mu);
            ch->part->position = last + 1;
            pthread_mutex_unlock(&c->mu);
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t idx = (size_t)(uintptr_t)c->msgs[i].headers;
        c->msgs[i].headers = c->msgs[i].header_count ? &c->hdrs[idx] : NULL;
    }
    *msgs_out = c->msgs;
    *n_out = n;
    return 0;
}

int verity_consumer_position(struct verity_consumer *c, const char *topic, uint32_t partition,
                             uint64_t *next_offset_out, uint64_t *high_watermark_out)
{
    int rc = VERITY_ENOTFOUND;
    pthread_mutex_lock(&c->mu);
    for (struct cpart *p = c->parts; p; p = p->next) {
        if (p->partition != partition || strcmp(p->topic, topic) != 0)
            continue;
        if (p->state == CP_RESOLVE || p->state == CP_RESOLVING) {
            rc = VERITY_ETIMEOUT;
        } else {
            *next_offset_out = p->position;
            *high_watermark_out = p->high_watermark;
            rc = p->state == CP_FAILED ? p->err : 0;
        }
        break;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int verity_consumer_checkpoint(struct verity_consumer *c, const char *topic, uint32_t partition,
                               uint8_t payload_out[VERITY_CHECKPOINT_SIZE], uint64_t *offset_out)
{
    int rc = VERITY_ENOTFOUND;
    pthread_mutex_lock(&c->mu);
    for (struct cpart *p = c->parts; p; p = p->next) {
        if (p->partition != partition || strcmp(p->topic, topic) != 0 || !p->ckpt_have)
            continue;
        memcpy(payload_out, p->ckpt, VERITY_CHECKPOINT_SIZE);
        if (offset_out)
            *offset_out = p->ckpt_offset;
        rc = 0;
        break;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
