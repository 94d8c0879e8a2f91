/*
 * libverity against a scripted fake broker: a thread in this process that
 * accepts on a loopback port and answers frames through proto/codec.h, so
 * each test decides exactly what the "broker" says and when it hangs up.
 *
 * Pins: answers matched by correlation id in any order; reads resent (same
 * frame) after a drop, writes not; an unanswered request bounded by
 * request_timeout_ms and the resend limit; a malformed frame resets the
 * connection; a refused Hello is reported; the producer resends the very
 * same batch bytes after a retriable error and stops when fenced; the
 * consumer refuses corrupt batches and batches that do not hold the offset
 * asked for, and steps over control batches; requests written by producing
 * threads (direct writes, issue 16) and by the I/O thread reach the socket
 * in sequence order, also across a dropped connection.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/verity.h"

/* ---- the fake broker ------------------------------------------------------ */

struct fake;

/* Called for every request but Hello. Returns 0 to go on, 1 to hang up. */
typedef int (*fake_fn)(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                       size_t len);

struct fake {
    int lfd;
    char addr[32];
    pthread_t th;
    fake_fn fn;
    atomic_bool stop;
    bool refuse_hello;
    atomic_int conns;
    atomic_int requests;
    atomic_int problems;            /* server-side checks that failed */
    /* per-test state, server thread only */
    uint64_t first_corr;
    int produce_calls;
    uint8_t *saved;
    size_t saved_len;
    int pending_fd;
    uint64_t pending_corr[2];
    int pending_n;
};

static struct fake fk;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int reply(int fd, uint64_t corr, Verity__Envelope *env, const void *pl, size_t len)
{
    env->version = CODEC_PROTOCOL_VERSION;
    env->correlation_id = corr;
    return codec_fd_write(fd, env, pl, len, NULL);
}

static int reply_error(int fd, uint64_t corr, Verity__ErrorCode code)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    env.error = code;
    env.error_message = "scripted error";
    return reply(fd, corr, &env, NULL, 0);
}

static int answer_hello(struct fake *f, int fd, uint64_t corr)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    if (f->refuse_hello)
        return reply_error(fd, corr, VERITY__ERROR_CODE__ERR_VERSION);
    Verity__HelloResponse h = VERITY__HELLO_RESPONSE__INIT;
    h.version = 1;
    h.node_id = 1;
    h.max_inflight = 64;
    env.body_case = VERITY__ENVELOPE__BODY_HELLO_RESP;
    env.hello_resp = &h;
    return reply(fd, corr, &env, NULL, 0);
}

static void serve(struct fake *f, int fd)
{
    while (!atomic_load(&f->stop)) {
        struct codec_msg *m = NULL;
        uint8_t *pl = NULL;
        size_t len = 0;
        int rc = codec_fd_read(fd, NULL, 50, &m, &pl, &len);
        if (rc == VERITY_ETIMEOUT)
            continue;
        if (rc)
            return;
        int hang = 0;
        if (m->env->body_case == VERITY__ENVELOPE__BODY_HELLO_REQ) {
            if (answer_hello(f, fd, m->env->correlation_id) != 0 || f->refuse_hello)
                hang = 1;
        } else {
            atomic_fetch_add(&f->requests, 1);
            hang = f->fn(f, fd, m->env, pl, len);
        }
        codec_msg_free(m);
        free(pl);
        if (hang)
            return;
    }
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&f->conns, 1);
        serve(f, fd);
        close(fd);
    }
    return NULL;
}

static void fake_start(fake_fn fn)
{
    memset(&fk, 0, sizeof fk);
    fk.fn = fn;
    fk.lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    CU_ASSERT_FATAL(fk.lfd >= 0 && bind(fk.lfd, (struct sockaddr *)&a, sizeof a) == 0 &&
                    listen(fk.lfd, 8) == 0 &&
                    getsockname(fk.lfd, (struct sockaddr *)&a, &alen) == 0);
    snprintf(fk.addr, sizeof fk.addr, "127.0.0.1:%u", ntohs(a.sin_port));
    pthread_create(&fk.th, NULL, fake_main, &fk);
}

static void fake_stop(void)
{
    atomic_store(&fk.stop, true);
    pthread_join(fk.th, NULL);
    close(fk.lfd);
    free(fk.saved);
    fk.saved = NULL;
}

static struct verity_conn_config conn_cfg(int request_timeout_ms)
{
    struct verity_conn_config c;
    verity_conn_config_default(&c);
    c.broker = fk.addr;
    c.request_timeout_ms = request_timeout_ms;
    c.reconnect_backoff_ms = 10;
    c.reconnect_backoff_max_ms = 50;
    return c;
}

static Verity__TopicMetadata *topic_md(Verity__TopicMetadata *t, Verity__TopicConfig *cfg,
                                       const char *name)
{
    verity__topic_metadata__init(t);
    verity__topic_config__init(cfg);
    cfg->partitions = 1;
    t->name = (char *)name;
    t->config = cfg;
    return t;
}

/* ---- admin ---------------------------------------------------------------- */

static int out_of_order_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                           size_t len)
{
    (void)pl;
    (void)len;
    if (env->body_case != VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ) {
        atomic_fetch_add(&f->problems, 1);
        return 1;
    }
    f->pending_corr[f->pending_n++] = env->correlation_id;
    if (f->pending_n < 2)
        return 0;
    /* Both are in: answer the second first. Names tell which is which. */
    for (int i = 1; i >= 0; i--) {
        Verity__Envelope r = VERITY__ENVELOPE__INIT;
        Verity__DescribeTopicResponse d = VERITY__DESCRIBE_TOPIC_RESPONSE__INIT;
        Verity__TopicMetadata t;
        Verity__TopicConfig c;
        d.topic = topic_md(&t, &c, i == 0 ? "first" : "second");
        r.body_case = VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_RESP;
        r.describe_topic_resp = &d;
        if (reply(fd, f->pending_corr[i], &r, NULL, 0) != 0)
            atomic_fetch_add(&f->problems, 1);
    }
    return 0;
}

struct slot {
    atomic_int done;
    char name[32];
    int err;
};

static void describe_cb(void *opaque, const struct verity_admin_result *res)
{
    struct slot *s = opaque;
    s->err = res->err;
    if (res->err == 0 && res->topic_count == 1)
        snprintf(s->name, sizeof s->name, "%s", res->topics[0].name);
    atomic_store(&s->done, 1);
}

static void test_answers_in_any_order_match_by_correlation_id(void)
{
    fake_start(out_of_order_fn);
    struct verity_conn_config cc = conn_cfg(5000);
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    struct slot a = {0}, b = {0};
    CU_ASSERT_EQUAL(verity_topic_describe_async(c, "first", describe_cb, &a), 0);
    CU_ASSERT_EQUAL(verity_topic_describe_async(c, "second", describe_cb, &b), 0);
    int64_t deadline = mono_ms() + 5000;
    while ((!atomic_load(&a.done) || !atomic_load(&b.done)) && mono_ms() < deadline)
        usleep(1000);
    CU_ASSERT_EQUAL(a.err, 0);
    CU_ASSERT_EQUAL(b.err, 0);
    CU_ASSERT_STRING_EQUAL(a.name, "first");
    CU_ASSERT_STRING_EQUAL(b.name, "second");
    verity_client_free(c);
    fake_stop();
    CU_ASSERT_EQUAL(atomic_load(&fk.problems), 0);
}

static int answer_list(struct fake *f, int fd, const Verity__Envelope *env);

/* Drops the first connection on the first ListTopics; answers the resend. */
static int drop_then_answer_fn(struct fake *f, int fd, const Verity__Envelope *env,
                               const uint8_t *pl, size_t len)
{
    (void)pl;
    (void)len;
    if (env->body_case == VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ) {
        f->produce_calls++; /* counts creates here */
        return 1;
    }
    if (env->body_case != VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ) {
        atomic_fetch_add(&f->problems, 1);
        return 1;
    }
    if (f->first_corr == 0) {
        f->first_corr = env->correlation_id;
        return 1;
    }
    if (env->correlation_id != f->first_corr) /* the same frame comes back */
        atomic_fetch_add(&f->problems, 1);
    return answer_list(f, fd, env);
}

static int answer_list(struct fake *f, int fd, const Verity__Envelope *env)
{
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__ListTopicsResponse lt = VERITY__LIST_TOPICS_RESPONSE__INIT;
    Verity__TopicMetadata t, *tp = &t;
    Verity__TopicConfig c;
    topic_md(&t, &c, "x");
    lt.topics = &tp;
    lt.n_topics = 1;
    r.body_case = VERITY__ENVELOPE__BODY_LIST_TOPICS_RESP;
    r.list_topics_resp = &lt;
    if (reply(fd, env->correlation_id, &r, NULL, 0) != 0)
        atomic_fetch_add(&f->problems, 1);
    return 0;
}

static void test_reads_are_resent_after_a_drop_writes_are_not(void)
{
    fake_start(drop_then_answer_fn);
    struct verity_conn_config cc = conn_cfg(5000);
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    struct verity_topic_info *t = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(verity_topic_list(c, false, &t, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    if (n == 1)
        CU_ASSERT_STRING_EQUAL(t[0].name, "x");
    verity_topic_info_free(t, n);
    CU_ASSERT(atomic_load(&fk.conns) >= 2);

    int rc = verity_topic_create(c, "y", NULL, NULL);
    CU_ASSERT(rc != 0 && rc > VERITY_EBASE - 100); /* a connection error */
    usleep(200000); /* time for a wrong resend to show up */
    verity_client_free(c);
    fake_stop();
    CU_ASSERT_EQUAL(fk.produce_calls, 1);
    CU_ASSERT_EQUAL(atomic_load(&fk.problems), 0);
}

static int silent_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                     size_t len)
{
    (void)f;
    (void)fd;
    (void)env;
    (void)pl;
    (void)len;
    return 0; /* never answers */
}

static void test_unanswered_request_fails_in_bounded_time(void)
{
    fake_start(silent_fn);
    struct verity_conn_config cc = conn_cfg(300);
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    struct verity_topic_info *t = NULL;
    int64_t t0 = mono_ms();
    CU_ASSERT_EQUAL(verity_topic_describe(c, "z", &t), -ETIMEDOUT);
    int64_t took = mono_ms() - t0;
    CU_ASSERT(took >= 300 && took < 5000);
    verity_client_free(c);
    fake_stop();
    /* The first send and three resends, one per broken connection. */
    CU_ASSERT_EQUAL(atomic_load(&fk.requests), 4);
}

static int garbage_then_answer_fn(struct fake *f, int fd, const Verity__Envelope *env,
                                  const uint8_t *pl, size_t len)
{
    (void)pl;
    (void)len;
    if (env->body_case != VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ) {
        atomic_fetch_add(&f->problems, 1);
        return 1;
    }
    if (f->pending_n++ == 0) {
        /* A frame length far above the limit: the stream is unusable. */
        static const uint8_t junk[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
        if (write(fd, junk, sizeof junk) != (ssize_t)sizeof junk)
            atomic_fetch_add(&f->problems, 1);
        usleep(100000); /* let the client hang up first */
        return 1;
    }
    return answer_list(f, fd, env);
}

static void test_malformed_frame_resets_the_connection(void)
{
    fake_start(garbage_then_answer_fn);
    struct verity_conn_config cc = conn_cfg(5000);
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    struct verity_topic_info *t = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(verity_topic_list(c, false, &t, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    verity_topic_info_free(t, n);
    verity_client_free(c);
    fake_stop();
    CU_ASSERT_EQUAL(atomic_load(&fk.conns), 2);
    CU_ASSERT_EQUAL(atomic_load(&fk.problems), 0);
}

static void test_refused_hello_is_reported(void)
{
    fake_start(silent_fn);
    fk.refuse_hello = true;
    struct verity_conn_config cc = conn_cfg(5000);
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    CU_ASSERT_EQUAL(verity_client_connect(c, 3000), VERITY_EVERSION);
    verity_client_free(c);
    fake_stop();
}

/* ---- producer ------------------------------------------------------------- */

static int answer_metadata(int fd, const Verity__Envelope *env)
{
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__MetadataResponse md = VERITY__METADATA_RESPONSE__INIT;
    Verity__TopicMetadata t, *tp = &t;
    Verity__TopicConfig c;
    Verity__PartitionMetadata p = VERITY__PARTITION_METADATA__INIT, *pp = &p;
    topic_md(&t, &c, "t");
    t.partitions = &pp;
    t.n_partitions = 1;
    md.topics = &tp;
    md.n_topics = 1;
    md.node_id = 1;
    r.body_case = VERITY__ENVELOPE__BODY_METADATA_RESP;
    r.metadata_resp = &md;
    return reply(fd, env->correlation_id, &r, NULL, 0);
}

static int answer_init(int fd, const Verity__Envelope *env)
{
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__InitProducerResponse ip = VERITY__INIT_PRODUCER_RESPONSE__INIT;
    ip.producer_id = 7;
    ip.producer_epoch = 0;
    r.body_case = VERITY__ENVELOPE__BODY_INIT_PRODUCER_RESP;
    r.init_producer_resp = &ip;
    return reply(fd, env->correlation_id, &r, NULL, 0);
}

static int answer_produce(int fd, const Verity__Envelope *env, Verity__ErrorCode code,
                          uint32_t records)
{
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__ProduceResponse pr = VERITY__PRODUCE_RESPONSE__INIT;
    Verity__ProduceResult x = VERITY__PRODUCE_RESULT__INIT, *xp = &x;
    x.topic = "t";
    x.partition = 0;
    x.error = code;
    x.base_offset = 0;
    x.last_offset = records - 1;
    x.high_watermark = records;
    pr.results = &xp;
    pr.n_results = 1;
    r.body_case = VERITY__ENVELOPE__BODY_PRODUCE_RESP;
    r.produce_resp = &pr;
    return reply(fd, env->correlation_id, &r, NULL, 0);
}

/* First Produce: ERR_NOT_LEADER (retriable); the resend must carry the same
 * bytes, and is acknowledged. */
static int retry_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                    size_t len)
{
    int rc = 0;
    switch (env->body_case) {
    case VERITY__ENVELOPE__BODY_METADATA_REQ:
        rc = answer_metadata(fd, env);
        break;
    case VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ:
        rc = answer_init(fd, env);
        break;
    case VERITY__ENVELOPE__BODY_PRODUCE_REQ: {
        struct batch_hdr h;
        if (len < BATCH_HDR_SIZE || batch_validate(pl, len, NULL) != 0 ||
            batch_hdr_decode(pl, len, &h) != 0 || h.producer_id != 7 || h.base_sequence != 0) {
            atomic_fetch_add(&f->problems, 1);
            return 1;
        }
        if (f->produce_calls++ == 0) {
            f->saved = malloc(len);
            memcpy(f->saved, pl, len);
            f->saved_len = len;
            rc = answer_produce(fd, env, VERITY__ERROR_CODE__ERR_NOT_LEADER, h.record_count);
        } else {
            if (len != f->saved_len || memcmp(pl, f->saved, len) != 0)
                atomic_fetch_add(&f->problems, 1);
            rc = answer_produce(fd, env, VERITY__ERROR_CODE__ERR_NONE, h.record_count);
        }
        break;
    }
    default:
        atomic_fetch_add(&f->problems, 1);
        return 1;
    }
    if (rc)
        atomic_fetch_add(&f->problems, 1);
    return 0;
}

static void test_producer_resends_identical_bytes_after_retriable_error(void)
{
    fake_start(retry_fn);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = conn_cfg(5000);
    pc.retry_backoff_ms = 5;
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    struct verity_record r = {.key = "k", .key_len = 1, .value = "v", .value_len = 1};
    struct verity_delivery d;
    CU_ASSERT_EQUAL(verity_produce_sync(p, "t", VERITY_PARTITION_ANY, &r, &d), 0);
    CU_ASSERT_EQUAL(d.offset, 0);
    CU_ASSERT_EQUAL(d.partition, 0);
    int64_t id;
    int16_t epoch;
    verity_producer_id(p, &id, &epoch);
    CU_ASSERT_EQUAL(id, 7);
    CU_ASSERT_EQUAL(epoch, 0);
    verity_producer_free(p, 1000);
    fake_stop();
    CU_ASSERT_EQUAL(fk.produce_calls, 2);
    CU_ASSERT_EQUAL(atomic_load(&fk.problems), 0);
}

static int fenced_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                     size_t len)
{
    if (env->body_case != VERITY__ENVELOPE__BODY_PRODUCE_REQ)
        return retry_fn(f, fd, env, pl, len);
    struct batch_hdr h;
    if (batch_hdr_decode(pl, len, &h) != 0)
        return 1;
    f->produce_calls++;
    return answer_produce(fd, env, VERITY__ERROR_CODE__ERR_FENCED, h.record_count) ? 1 : 0;
}

static void test_fenced_producer_stops_sending(void)
{
    fake_start(fenced_fn);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = conn_cfg(5000);
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    struct verity_record r = {.value = "v", .value_len = 1};
    CU_ASSERT_EQUAL(verity_produce_sync(p, "t", 0, &r, NULL), VERITY_EFENCED);
    CU_ASSERT_EQUAL(verity_produce(p, "t", 0, &r, NULL, NULL), VERITY_EFENCED);
    verity_producer_free(p, 1000);
    fake_stop();
    CU_ASSERT_EQUAL(fk.produce_calls, 1);
}

/* ---- direct writes (issue 16) ------------------------------------------- */

/* The fake keeps the broker's sequence rules for one producer id: a batch
 * at the next sequence is appended (offsets counted here), one below it is
 * a resend (answered as a duplicate with its first offset), one above it
 * arrived out of order: a problem, since the client writes the requests of
 * one partition in the order it numbered them, whichever thread wrote
 * them. Hangs up without answering at the hang_at-th Produce (0: never). */
#define SEQ_MAX 200000
static int64_t seq_offset[SEQ_MAX];
static int seq_next;
static int seq_epoch = -1;
static int64_t seq_records;
static int seq_hang_at;
static atomic_int seq_init_calls;

static int seq_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                  size_t len)
{
    if (env->body_case == VERITY__ENVELOPE__BODY_METADATA_REQ)
        return answer_metadata(fd, env) ? 1 : 0;
    if (env->body_case == VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ) {
        Verity__Envelope r = VERITY__ENVELOPE__INIT;
        Verity__InitProducerResponse ip = VERITY__INIT_PRODUCER_RESPONSE__INIT;
        ip.producer_id = 7;
        ip.producer_epoch = atomic_fetch_add(&seq_init_calls, 1);
        r.body_case = VERITY__ENVELOPE__BODY_INIT_PRODUCER_RESP;
        r.init_producer_resp = &ip;
        return reply(fd, env->correlation_id, &r, NULL, 0) ? 1 : 0;
    }
    if (env->body_case != VERITY__ENVELOPE__BODY_PRODUCE_REQ ||
        env->produce_req->n_batches > 16) {
        atomic_fetch_add(&f->problems, 1);
        return 1;
    }
    if (++f->produce_calls == seq_hang_at)
        return 1;
    size_t nb = env->produce_req->n_batches, pos = 0;
    Verity__ProduceResult xs[16], *xp[16];
    for (size_t k = 0; k < nb; k++) {
        uint32_t blen = env->produce_req->batches[k]->batch_bytes;
        struct batch_hdr h;
        if (blen > len - pos || batch_validate(pl + pos, blen, NULL) != 0 ||
            batch_hdr_decode(pl + pos, blen, &h) != 0 || h.producer_id != 7 ||
            h.base_sequence < 0 || (int64_t)h.base_sequence + h.record_count > SEQ_MAX) {
            atomic_fetch_add(&f->problems, 1);
            return 1;
        }
        pos += blen;
        if (h.producer_epoch != seq_epoch) { /* a new epoch restarts the sequences */
            seq_epoch = h.producer_epoch;
            seq_next = 0;
        }
        Verity__ProduceResult *x = &xs[k];
        verity__produce_result__init(x);
        xp[k] = x;
        x->topic = "t";
        x->partition = 0;
        if (h.base_sequence == seq_next) {
            for (uint32_t i = 0; i < h.record_count; i++)
                seq_offset[seq_next + i] = seq_records + i;
            seq_next += (int)h.record_count;
            x->base_offset = (uint64_t)seq_records;
            seq_records += h.record_count;
        } else if (h.base_sequence < seq_next) {
            x->base_offset = (uint64_t)seq_offset[h.base_sequence];
            x->duplicate = true;
        } else {
            atomic_fetch_add(&f->problems, 1);
            x->error = VERITY__ERROR_CODE__ERR_OUT_OF_ORDER_SEQUENCE;
        }
        x->last_offset = x->base_offset + h.record_count - 1;
        x->high_watermark = (uint64_t)seq_records;
    }
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__ProduceResponse pr = VERITY__PRODUCE_RESPONSE__INIT;
    pr.results = xp;
    pr.n_results = nb;
    r.body_case = VERITY__ENVELOPE__BODY_PRODUCE_RESP;
    r.produce_resp = &pr;
    return reply(fd, env->correlation_id, &r, NULL, 0) ? 1 : 0;
}

#define SEQ_THREADS 4
#define SEQ_PER_THREAD 3000

struct seq_thread {
    struct verity_producer *p;
    int idx;
    int64_t offsets[SEQ_PER_THREAD];
    atomic_int acked;
    atomic_int errors;
    int produce_rc;
};

struct seq_slot {
    struct seq_thread *t;
    int i;
};

static void seq_cb(void *opaque, int err, const struct verity_delivery *d)
{
    struct seq_slot *s = opaque;
    if (err)
        atomic_fetch_add(&s->t->errors, 1);
    else
        s->t->offsets[s->i] = (int64_t)d->offset;
    atomic_fetch_add(&s->t->acked, 1);
}

static void *seq_thread_main(void *arg)
{
    struct seq_thread *t = arg;
    static struct seq_slot slots[SEQ_THREADS][SEQ_PER_THREAD];
    for (int i = 0; i < SEQ_PER_THREAD && t->produce_rc == 0; i++) {
        char v[16];
        int n = snprintf(v, sizeof v, "%d:%d", t->idx, i);
        struct verity_record r = {.value = v, .value_len = (uint32_t)n};
        slots[t->idx][i] = (struct seq_slot){t, i};
        t->produce_rc = verity_produce(t->p, "t", 0, &r, seq_cb, &slots[t->idx][i]);
        if ((i & 7) == 0)
            usleep(50); /* let the connection go idle now and then: direct writes */
    }
    return NULL;
}

/* Four threads produce to one partition while answers come back at once, so
 * requests are written both by the producing threads (idle connection) and
 * by the I/O thread (after answers); hang_at drops the connection once
 * mid-stream. Every record must be acknowledged once, each thread's records
 * at increasing offsets, every batch in sequence order on the wire. */
static void run_seq(int hang_at)
{
    memset(seq_offset, 0, sizeof seq_offset);
    seq_next = 0;
    seq_epoch = -1;
    seq_records = 0;
    seq_hang_at = hang_at;
    atomic_store(&seq_init_calls, 0);
    fake_start(seq_fn);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = conn_cfg(5000);
    pc.retry_backoff_ms = 5;
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    static struct seq_thread th[SEQ_THREADS];
    pthread_t tid[SEQ_THREADS];
    for (int k = 0; k < SEQ_THREADS; k++) {
        memset(&th[k], 0, sizeof th[k]);
        th[k].p = p;
        th[k].idx = k;
        for (int i = 0; i < SEQ_PER_THREAD; i++)
            th[k].offsets[i] = -1;
        pthread_create(&tid[k], NULL, seq_thread_main, &th[k]);
    }
    for (int k = 0; k < SEQ_THREADS; k++)
        pthread_join(tid[k], NULL);
    CU_ASSERT_EQUAL(verity_producer_flush(p, 20000), 0);
    verity_producer_free(p, 1000);
    fake_stop();
    for (int k = 0; k < SEQ_THREADS; k++) {
        CU_ASSERT_EQUAL(th[k].produce_rc, 0);
        CU_ASSERT_EQUAL(atomic_load(&th[k].acked), SEQ_PER_THREAD);
        CU_ASSERT_EQUAL(atomic_load(&th[k].errors), 0);
        bool increasing = true;
        for (int i = 1; i < SEQ_PER_THREAD; i++)
            increasing = increasing && th[k].offsets[i] > th[k].offsets[i - 1];
        CU_ASSERT(increasing);
        CU_ASSERT(th[k].offsets[0] >= 0);
    }
    CU_ASSERT_EQUAL(seq_records, (int64_t)SEQ_THREADS * SEQ_PER_THREAD);
    CU_ASSERT_EQUAL(atomic_load(&fk.problems), 0);
    /* No reset but the scripted one: an answer that raced ahead of its
     * request's bookkeeping would have reset the connection. */
    if (hang_at) {
        /* (>=: the fake also hangs up on a frame it could not read whole
         * within its 50 ms read timeout, which a loaded machine can cause) */
        CU_ASSERT(atomic_load(&fk.conns) >= 2);
    } else {
        CU_ASSERT_EQUAL(atomic_load(&fk.conns), 1);
    }
}

static void test_producer_writes_in_sequence_order_from_any_thread(void)
{
    run_seq(0);
}

static void test_producer_resends_in_order_after_a_drop_mid_stream(void)
{
    run_seq(40);
}

/* ---- consumer ------------------------------------------------------------- */

enum fetch_kind { FETCH_CORRUPT, FETCH_WRONG_OFFSET, FETCH_CONTROL_THEN_DATA };
static enum fetch_kind fetch_kind;

/* Builds the batch(es) a scripted fetch returns into *out (malloc'd). */
static size_t build_fetch(uint8_t **out)
{
    struct batch_builder ctl, data;
    struct batch_meta control = {.attributes = BATCH_ATTR_CONTROL, .producer_id = -1,
                                 .producer_epoch = -1, .base_sequence = -1};
    CU_ASSERT_FATAL(batch_builder_init(&ctl, 4096) == 0 && batch_builder_init(&data, 4096) == 0);
    CU_ASSERT_FATAL(batch_builder_add(&ctl, 1000, BATCH_CONTROL_CHECKPOINT,
                                      (int32_t)strlen(BATCH_CONTROL_CHECKPOINT), "c", 1, NULL,
                                      0) == 0 &&
                    batch_builder_finish(&ctl, &control) == 0);
    CU_ASSERT_FATAL(batch_builder_add(&data, 1000, "k1", 2, "one", 3, NULL, 0) == 0 &&
                    batch_builder_add(&data, 1001, NULL, 0, "two", 3, NULL, 0) == 0 &&
                    batch_builder_finish(&data, NULL) == 0);
    batch_set_base_offset(ctl.buf, 0);
    batch_set_base_offset(data.buf, fetch_kind == FETCH_WRONG_OFFSET ? 5 : 1);
    size_t len = 0;
    uint8_t *buf = malloc(ctl.len + data.len);
    if (fetch_kind == FETCH_CONTROL_THEN_DATA) {
        memcpy(buf, ctl.buf, ctl.len);
        len = ctl.len;
    }
    memcpy(buf + len, data.buf, data.len);
    if (fetch_kind == FETCH_CORRUPT)
        buf[len + data.len - 2] ^= 0x01; /* a value byte: the CRC no longer matches */
    len += data.len;
    batch_builder_deinit(&ctl);
    batch_builder_deinit(&data);
    *out = buf;
    return len;
}

static int fetch_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                    size_t len)
{
    (void)pl;
    (void)len;
    if (env->body_case != VERITY__ENVELOPE__BODY_FETCH_REQ ||
        env->fetch_req->n_partitions != 1) {
        atomic_fetch_add(&f->problems, 1);
        return 1;
    }
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__FetchResponse fr = VERITY__FETCH_RESPONSE__INIT;
    Verity__FetchResult x = VERITY__FETCH_RESULT__INIT, *xp = &x;
    uint8_t *data = NULL;
    size_t n = 0;
    x.topic = "t";
    x.partition = 0;
    x.high_watermark = 3;
    if (env->fetch_req->partitions[0]->offset == 0) {
        n = build_fetch(&data);
        x.records_bytes = (uint32_t)n;
        x.next_offset = 3;
    } else {
        usleep(20000); /* nothing new: a short long-poll */
    }
    fr.results = &xp;
    fr.n_results = 1;
    r.body_case = VERITY__ENVELOPE__BODY_FETCH_RESP;
    r.fetch_resp = &fr;
    if (reply(fd, env->correlation_id, &r, data, n) != 0)
        atomic_fetch_add(&f->problems, 1);
    free(data);
    return 0;
}

/* Polls until messages, an error, or 3 s. */
static int poll_some(struct verity_consumer *c, const struct verity_message **m, size_t *n)
{
    int64_t deadline = mono_ms() + 3000;
    int rc = 0;
    *n = 0;
    while (rc == 0 && *n == 0 && mono_ms() < deadline)
        rc = verity_consumer_poll(c, 100, m, n, NULL);
    return rc;
}

static struct verity_consumer *consumer_at_zero(void)
{
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn = conn_cfg(5000);
    struct verity_consumer *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_consumer_new(&cc, &c), 0);
    CU_ASSERT_EQUAL(verity_consumer_assign(c, "t", 0, VERITY_START_OFFSET, 0), 0);
    return c;
}

static void test_consumer_steps_over_control_batches(void)
{
    fetch_kind = FETCH_CONTROL_THEN_DATA;
    fake_start(fetch_fn);
    struct verity_consumer *c = consumer_at_zero();
    const struct verity_message *m;
    size_t n;
    CU_ASSERT_EQUAL(poll_some(c, &m, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(m[0].offset, 1);
    CU_ASSERT_EQUAL(m[0].key_len, 2);
    CU_ASSERT_EQUAL(memcmp(m[0].value, "one", 3), 0);
    CU_ASSERT_EQUAL(m[1].offset, 2);
    CU_ASSERT_PTR_NULL(m[1].key);
    CU_ASSERT_EQUAL(m[1].timestamp_ms, 1001);
    uint64_t pos = 0, hw = 0;
    CU_ASSERT_EQUAL(verity_consumer_position(c, "t", 0, &pos, &hw), 0);
    CU_ASSERT_EQUAL(pos, 3);
    CU_ASSERT_EQUAL(hw, 3);
    verity_consumer_free(c);
    fake_stop();
    CU_ASSERT_EQUAL(atomic_load(&fk.problems), 0);
}

static void test_consumer_refuses_corrupt_batches(void)
{
    enum fetch_kind kinds[2] = {FETCH_CORRUPT, FETCH_WRONG_OFFSET};
    for (int i = 0; i < 2; i++) {
        fetch_kind = kinds[i];
        fake_start(fetch_fn);
        struct verity_consumer *c = consumer_at_zero();
        const struct verity_message *m;
        size_t n;
        uint32_t part = 99;
        int rc = 0;
        int64_t deadline = mono_ms() + 3000;
        while (rc == 0 && mono_ms() < deadline) {
            rc = verity_consumer_poll(c, 100, &m, &n, &part);
            CU_ASSERT_EQUAL(n, 0); /* nothing of a bad answer is delivered */
        }
        CU_ASSERT_EQUAL(rc, VERITY_ECORRUPT);
        CU_ASSERT_EQUAL(part, 0);
        /* Reported once; the partition has stopped. */
        CU_ASSERT_EQUAL(verity_consumer_poll(c, 50, &m, &n, NULL), 0);
        CU_ASSERT_EQUAL(n, 0);
        verity_consumer_free(c);
        fake_stop();
    }
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"answers_in_any_order_match_by_correlation_id",
         test_answers_in_any_order_match_by_correlation_id},
        {"reads_are_resent_after_a_drop_writes_are_not",
         test_reads_are_resent_after_a_drop_writes_are_not},
        {"unanswered_request_fails_in_bounded_time", test_unanswered_request_fails_in_bounded_time},
        {"malformed_frame_resets_the_connection", test_malformed_frame_resets_the_connection},
        {"refused_hello_is_reported", test_refused_hello_is_reported},
        {"producer_resends_identical_bytes_after_retriable_error",
         test_producer_resends_identical_bytes_after_retriable_error},
        {"fenced_producer_stops_sending", test_fenced_producer_stops_sending},
        {"producer_writes_in_sequence_order_from_any_thread",
         test_producer_writes_in_sequence_order_from_any_thread},
        {"producer_resends_in_order_after_a_drop_mid_stream",
         test_producer_resends_in_order_after_a_drop_mid_stream},
        {"consumer_steps_over_control_batches", test_consumer_steps_over_control_batches},
        {"consumer_refuses_corrupt_batches", test_consumer_refuses_corrupt_batches},
    };
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("client_conn", NULL, NULL);
    if (s == NULL)
        goto fail;
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (CU_add_test(s, tests[i].name, tests[i].fn) == NULL)
            goto fail;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto fail;
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
fail:
    CU_cleanup_registry();
    return 1;
}
