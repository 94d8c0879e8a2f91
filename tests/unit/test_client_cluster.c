/*
 * libverity against a scripted fake cluster (issue 10): up to three fake
 * brokers in this process, each a thread accepting on a loopback port and
 * answering frames through proto/codec.h, each connection served by its own
 * thread. The script decides which broker is primary and when one says
 * NOT_LEADER.
 *
 * Pins: a bootstrap list is parsed and a bad entry refused; the client moves
 * past an address that refuses connections; a request-level NOT_LEADER that
 * names the primary makes the connection move there and the request go again;
 * the producer sends each partition's batches to the primary Metadata names
 * (never to the bootstrap broker), and after a per-partition NOT_LEADER that
 * names a new primary it resends the very same batch bytes (producer id,
 * epoch, sequence) there; a first Metadata that names no primary for the
 * partition is asked again (the producer used to wait until the delivery
 * timeout); the consumer fetches each partition from its primary after a
 * NOT_LEADER.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/verity.h"

#define FAKES 3
#define CONN_THREADS 16

struct fake;
typedef int (*fake_fn)(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                       size_t len);

struct fake {
    int id;                          /* node id 1..FAKES */
    int lfd;
    uint16_t port;
    char addr[32];
    pthread_t th;
    pthread_t conn_th[CONN_THREADS];
    int conn_fd[CONN_THREADS];
    atomic_int n_conn;
    atomic_bool stop;
    atomic_int requests;
    atomic_int produces;
    atomic_int fetches;
};

/* Shared by the fakes' threads under mu. */
static struct {
    pthread_mutex_t mu;
    struct fake f[FAKES];
    fake_fn fn;
    atomic_int problems;
    uint32_t leader;                 /* node id of partition 0's primary */
    uint8_t *saved;                  /* first produced batch */
    size_t saved_len;
    int saved_by;                    /* node that got it */
    int resent_same;                 /* a later node got the same bytes */
} cl = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int reply(int fd, uint64_t corr, Verity__Envelope *env, const void *pl, size_t len)
{
    env->version = CODEC_PROTOCOL_VERSION;
    env->correlation_id = corr;
    return codec_fd_write(fd, env, pl, len, NULL);
}

static int answer_hello(struct fake *f, int fd, uint64_t corr)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__HelloResponse h = VERITY__HELLO_RESPONSE__INIT;
    h.version = 1;
    h.node_id = (uint32_t)f->id;
    h.max_inflight = 64;
    env.body_case = VERITY__ENVELOPE__BODY_HELLO_RESP;
    env.hello_resp = &h;
    return reply(fd, corr, &env, NULL, 0);
}

struct conn_arg {
    struct fake *f;
    int fd;
};

static void *serve(void *arg)
{
    struct conn_arg *a = arg;
    struct fake *f = a->f;
    int fd = a->fd;
    free(a);
    while (!atomic_load(&f->stop)) {
        struct codec_msg *m = NULL;
        uint8_t *pl = NULL;
        size_t len = 0;
        int rc = codec_fd_read(fd, NULL, 50, &m, &pl, &len);
        if (rc == VERITY_ETIMEOUT)
            continue;
        if (rc)
            break;
        int hang = 0;
        if (m->env->body_case == VERITY__ENVELOPE__BODY_HELLO_REQ) {
            hang = answer_hello(f, fd, m->env->correlation_id) != 0;
        } else {
            atomic_fetch_add(&f->requests, 1);
            hang = cl.fn(f, fd, m->env, pl, len);
        }
        codec_msg_free(m);
        free(pl);
        if (hang)
            break;
    }
    shutdown(fd, SHUT_RDWR);
    return NULL;
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
        int k = atomic_load(&f->n_conn);
        struct conn_arg *a = malloc(sizeof *a);
        if (k >= CONN_THREADS || !a) {
            free(a);
            close(fd);
            atomic_fetch_add(&cl.problems, 1);
            continue;
        }
        a->f = f;
        a->fd = fd;
        f->conn_fd[k] = fd;
        pthread_create(&f->conn_th[k], NULL, serve, a);
        atomic_store(&f->n_conn, k + 1);
    }
    return NULL;
}

static void cluster_start(fake_fn fn, uint32_t leader)
{
    cl.fn = fn;
    cl.leader = leader;
    atomic_store(&cl.problems, 0);
    free(cl.saved);
    cl.saved = NULL;
    cl.saved_len = 0;
    cl.saved_by = 0;
    cl.resent_same = 0;
    for (int i = 0; i < FAKES; i++) {
        struct fake *f = &cl.f[i];
        memset(f, 0, sizeof *f);
        f->id = i + 1;
        f->lfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t alen = sizeof a;
        CU_ASSERT_FATAL(f->lfd >= 0 && bind(f->lfd, (struct sockaddr *)&a, sizeof a) == 0 &&
                        listen(f->lfd, 8) == 0 &&
                        getsockname(f->lfd, (struct sockaddr *)&a, &alen) == 0);
        f->port = ntohs(a.sin_port);
        snprintf(f->addr, sizeof f->addr, "127.0.0.1:%u", f->port);
        pthread_create(&f->th, NULL, fake_main, f);
    }
}

static void cluster_stop(void)
{
    for (int i = 0; i < FAKES; i++)
        atomic_store(&cl.f[i].stop, true);
    for (int i = 0; i < FAKES; i++) {
        struct fake *f = &cl.f[i];
        pthread_join(f->th, NULL);
        for (int k = 0; k < atomic_load(&f->n_conn); k++) {
            pthread_join(f->conn_th[k], NULL);
            close(f->conn_fd[k]);
        }
        close(f->lfd);
    }
}

/* A loopback port nobody listens on (bound, then closed). */
static uint16_t dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        return 1;
    close(fd);
    return ntohs(a.sin_port);
}

static struct verity_conn_config conn_cfg(const char *broker)
{
    struct verity_conn_config c;
    verity_conn_config_default(&c);
    c.broker = broker;
    c.request_timeout_ms = 5000;
    c.connect_timeout_ms = 1000;
    c.reconnect_backoff_ms = 10;
    c.reconnect_backoff_max_ms = 50;
    return c;
}

static int not_leader(int fd, uint64_t corr, uint32_t leader)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__BrokerInfo b = VERITY__BROKER_INFO__INIT;
    env.error = VERITY__ERROR_CODE__ERR_NOT_LEADER;
    env.error_message = "not the primary";
    if (leader) {
        b.node_id = leader;
        b.host = "127.0.0.1";
        b.port = cl.f[leader - 1].port;
        env.leader = &b;
    }
    return reply(fd, corr, &env, NULL, 0);
}

static int answer_describe(int fd, uint64_t corr)
{
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__DescribeTopicResponse d = VERITY__DESCRIBE_TOPIC_RESPONSE__INIT;
    Verity__TopicMetadata t = VERITY__TOPIC_METADATA__INIT;
    Verity__TopicConfig c = VERITY__TOPIC_CONFIG__INIT;
    c.partitions = 1;
    c.replication_factor = 3;
    t.name = "t";
    t.config = &c;
    d.topic = &t;
    r.body_case = VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_RESP;
    r.describe_topic_resp = &d;
    return reply(fd, corr, &r, NULL, 0);
}

/* Metadata: three brokers, topic "t" with one partition led by cl.leader. */
static int answer_metadata(struct fake *f, int fd, uint64_t corr)
{
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__MetadataResponse md = VERITY__METADATA_RESPONSE__INIT;
    Verity__BrokerInfo b[FAKES], *bp[FAKES];
    for (int i = 0; i < FAKES; i++) {
        verity__broker_info__init(&b[i]);
        b[i].node_id = (uint32_t)(i + 1);
        b[i].host = "127.0.0.1";
        b[i].port = cl.f[i].port;
        bp[i] = &b[i];
    }
    Verity__TopicMetadata t = VERITY__TOPIC_METADATA__INIT, *tp = &t;
    Verity__TopicConfig c = VERITY__TOPIC_CONFIG__INIT;
    Verity__PartitionMetadata p = VERITY__PARTITION_METADATA__INIT, *pp = &p;
    uint32_t replicas[3] = {1, 2, 3};
    c.partitions = 1;
    c.replication_factor = 3;
    t.name = "t";
    t.config = &c;
    pthread_mutex_lock(&cl.mu);
    p.leader = cl.leader;
    pthread_mutex_unlock(&cl.mu);
    p.replicas = replicas;
    p.n_replicas = 3;
    t.partitions = &pp;
    t.n_partitions = 1;
    md.brokers = bp;
    md.n_brokers = FAKES;
    md.topics = &tp;
    md.n_topics = 1;
    md.node_id = (uint32_t)f->id;
    r.body_case = VERITY__ENVELOPE__BODY_METADATA_RESP;
    r.metadata_resp = &md;
    return reply(fd, corr, &r, NULL, 0);
}

/* ---- bootstrap list and request-level NOT_LEADER ------------------------- */

static void test_bootstrap_list_is_parsed_and_bad_entries_refused(void)
{
    const char *bad[] = {"127.0.0.1:1,,127.0.0.1:2", "127.0.0.1:1,", "127.0.0.1", ",",
                         "127.0.0.1:99999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct verity_conn_config cc = conn_cfg(bad[i]);
        struct verity_client *c = NULL;
        CU_ASSERT_EQUAL(verity_client_new(&cc, &c), VERITY_EINVAL);
        CU_ASSERT_PTR_NULL(c);
    }
    struct verity_conn_config cc = conn_cfg("127.0.0.1:1, 127.0.0.1:2 ,[::1]:3");
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL(verity_client_new(&cc, &c), 0);
    verity_client_free(c);
}

static int describe_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                       size_t len)
{
    (void)pl;
    (void)len;
    if (env->body_case != VERITY__ENVELOPE__BODY_DESCRIBE_TOPIC_REQ) {
        atomic_fetch_add(&cl.problems, 1);
        return 1;
    }
    /* Only the primary answers; the others name it. */
    int rc = (uint32_t)f->id == cl.leader ? answer_describe(fd, env->correlation_id)
                                         : not_leader(fd, env->correlation_id, cl.leader);
    return rc ? 1 : 0;
}

static void test_client_skips_a_dead_address_of_the_list(void)
{
    cluster_start(describe_fn, 1);
    char list[128];
    snprintf(list, sizeof list, "127.0.0.1:%u,%s", dead_port(), cl.f[0].addr);
    struct verity_conn_config cc = conn_cfg(list);
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    CU_ASSERT_EQUAL(verity_client_connect(c, 3000), 0);
    struct verity_topic_info *ti = NULL;
    CU_ASSERT_EQUAL(verity_topic_describe(c, "t", &ti), 0);
    verity_topic_info_free(ti, 1);
    verity_client_free(c);
    cluster_stop();
    CU_ASSERT_EQUAL(atomic_load(&cl.f[0].requests), 1);
    CU_ASSERT_EQUAL(atomic_load(&cl.problems), 0);
}

static void test_request_follows_not_leader_to_the_primary(void)
{
    cluster_start(describe_fn, 3);
    struct verity_conn_config cc = conn_cfg(cl.f[0].addr);
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    struct verity_topic_info *ti = NULL;
    CU_ASSERT_EQUAL(verity_topic_describe(c, "t", &ti), 0);
    if (ti)
        CU_ASSERT_EQUAL(ti->config.replication_factor, 3);
    verity_topic_info_free(ti, 1);
    /* Once moved, the next request goes straight to the primary. */
    CU_ASSERT_EQUAL(verity_topic_describe(c, "t", &ti), 0);
    verity_topic_info_free(ti, 1);
    verity_client_free(c);
    cluster_stop();
    CU_ASSERT_EQUAL(atomic_load(&cl.f[0].requests), 1);
    CU_ASSERT_EQUAL(atomic_load(&cl.f[2].requests), 2);
    CU_ASSERT_EQUAL(atomic_load(&cl.problems), 0);
}

/* ---- producer routing ----------------------------------------------------- */

static int answer_init(int fd, uint64_t corr)
{
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__InitProducerResponse ip = VERITY__INIT_PRODUCER_RESPONSE__INIT;
    ip.producer_id = 42;
    ip.producer_epoch = 3;
    r.body_case = VERITY__ENVELOPE__BODY_INIT_PRODUCER_RESP;
    r.init_producer_resp = &ip;
    return reply(fd, corr, &r, NULL, 0);
}

static int answer_produce(int fd, uint64_t corr, Verity__ErrorCode code, uint32_t records,
                          uint32_t leader, Verity__Acks acks_seen)
{
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    Verity__ProduceResponse pr = VERITY__PRODUCE_RESPONSE__INIT;
    Verity__ProduceResult x = VERITY__PRODUCE_RESULT__INIT, *xp = &x;
    (void)acks_seen;
    x.topic = "t";
    x.partition = 0;
    x.error = code;
    x.leader = leader;
    x.base_offset = 0;
    x.last_offset = records - 1;
    x.high_watermark = records;
    pr.results = &xp;
    pr.n_results = 1;
    r.body_case = VERITY__ENVELOPE__BODY_PRODUCE_RESP;
    r.produce_resp = &pr;
    return reply(fd, corr, &r, NULL, 0);
}

/* Node 1 is the bootstrap broker and answers Metadata and InitProducer; the
 * partition's primary is node 2 until it has seen one Produce, which it
 * refuses with NOT_LEADER naming node 3 (a failover); node 3 must then get
 * the same bytes. A Produce anywhere else is a routing error. */
static int produce_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                      size_t len)
{
    uint64_t corr = env->correlation_id;
    switch (env->body_case) {
    case VERITY__ENVELOPE__BODY_METADATA_REQ:
        return answer_metadata(f, fd, corr) ? 1 : 0;
    case VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ:
        return answer_init(fd, corr) ? 1 : 0;
    case VERITY__ENVELOPE__BODY_PRODUCE_REQ:
        break;
    default:
        atomic_fetch_add(&cl.problems, 1);
        return 1;
    }
    atomic_fetch_add(&f->produces, 1);
    struct batch_hdr h;
    if (len < BATCH_HDR_SIZE || batch_validate(pl, len, NULL) != 0 ||
        batch_hdr_decode(pl, len, &h) != 0 || h.producer_id != 42 || h.producer_epoch != 3 ||
        h.base_sequence != 0 || env->produce_req->acks != VERITY__ACKS__ACKS_LEADER) {
        atomic_fetch_add(&cl.problems, 1);
        return 1;
    }
    pthread_mutex_lock(&cl.mu);
    uint32_t leader = cl.leader;
    int rc;
    if ((uint32_t)f->id != leader) {
        atomic_fetch_add(&cl.problems, 1); /* sent to a broker Metadata did not name */
        rc = answer_produce(fd, corr, VERITY__ERROR_CODE__ERR_NOT_LEADER, h.record_count, leader,
                            0);
    } else if (!cl.saved) {
        cl.saved = malloc(len);
        memcpy(cl.saved, pl, len);
        cl.saved_len = len;
        cl.saved_by = f->id;
        cl.leader = 3; /* failover: node 3 is primary from now on */
        rc = answer_produce(fd, corr, VERITY__ERROR_CODE__ERR_NOT_LEADER, h.record_count, 3, 0);
    } else {
        if (len == cl.saved_len && memcmp(pl, cl.saved, len) == 0 && f->id != cl.saved_by)
            cl.resent_same = 1;
        rc = answer_produce(fd, corr, VERITY__ERROR_CODE__ERR_NONE, h.record_count, 0, 0);
    }
    pthread_mutex_unlock(&cl.mu);
    return rc ? 1 : 0;
}

static void test_producer_routes_to_primary_and_resends_same_bytes_after_failover(void)
{
    cluster_start(produce_fn, 2);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = conn_cfg(cl.f[0].addr);
    pc.retry_backoff_ms = 5;
    pc.acks = VERITY_ACKS_LEADER;
    pc.delivery_timeout_ms = 5000; /* a routing bug fails, not hangs */
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    struct verity_record r = {.key = "k", .key_len = 1, .value = "v", .value_len = 1};
    struct verity_delivery d;
    CU_ASSERT_EQUAL(verity_produce_sync(p, "t", 0, &r, &d), 0);
    CU_ASSERT_FALSE(d.duplicate);
    verity_producer_free(p, 1000);
    cluster_stop();
    CU_ASSERT_EQUAL(atomic_load(&cl.f[0].produces), 0);
    CU_ASSERT_EQUAL(atomic_load(&cl.f[1].produces), 1);
    CU_ASSERT_EQUAL(atomic_load(&cl.f[2].produces), 1);
    CU_ASSERT_EQUAL(cl.resent_same, 1);
    CU_ASSERT_EQUAL(atomic_load(&cl.problems), 0);
}

/* The topic's first Metadata comes from a broker in a view change for the
 * partition: it names no primary (leader 0), before the producer holds any
 * batch of the topic. Later answers name node 2. The producer must ask again
 * and deliver to node 2 (it used to wait for a primary nobody would tell it
 * of until the delivery timeout: docs/REPLICATION.md, "The stall after a kill
 * right after a topic's creation"). */
static atomic_int md_answers;

static int unknown_primary_fn(struct fake *f, int fd, const Verity__Envelope *env,
                              const uint8_t *pl, size_t len)
{
    uint64_t corr = env->correlation_id;
    switch (env->body_case) {
    case VERITY__ENVELOPE__BODY_METADATA_REQ:
        pthread_mutex_lock(&cl.mu);
        cl.leader = atomic_fetch_add(&md_answers, 1) == 0 ? 0 : 2;
        pthread_mutex_unlock(&cl.mu);
        return answer_metadata(f, fd, corr) ? 1 : 0;
    case VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ:
        return answer_init(fd, corr) ? 1 : 0;
    case VERITY__ENVELOPE__BODY_PRODUCE_REQ:
        break;
    default:
        atomic_fetch_add(&cl.problems, 1);
        return 1;
    }
    atomic_fetch_add(&f->produces, 1);
    struct batch_hdr h;
    if (len < BATCH_HDR_SIZE || batch_validate(pl, len, NULL) != 0 ||
        batch_hdr_decode(pl, len, &h) != 0 || h.producer_id != 42 || f->id != 2) {
        atomic_fetch_add(&cl.problems, 1);
        return 1;
    }
    return answer_produce(fd, corr, VERITY__ERROR_CODE__ERR_NONE, h.record_count, 0, 0) ? 1 : 0;
}

static void test_producer_asks_again_when_first_metadata_names_no_primary(void)
{
    atomic_store(&md_answers, 0);
    cluster_start(unknown_primary_fn, 0);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = conn_cfg(cl.f[0].addr);
    pc.acks = VERITY_ACKS_LEADER;
    pc.delivery_timeout_ms = 5000; /* the bug: ETIMEOUT after this */
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    struct verity_record r = {.key = "k", .key_len = 1, .value = "v", .value_len = 1};
    struct verity_delivery d;
    CU_ASSERT_EQUAL(verity_produce_sync(p, "t", 0, &r, &d), 0);
    verity_producer_free(p, 1000);
    cluster_stop();
    CU_ASSERT(atomic_load(&md_answers) >= 2);
    CU_ASSERT_EQUAL(atomic_load(&cl.f[0].produces), 0);
    CU_ASSERT_EQUAL(atomic_load(&cl.f[1].produces), 1);
    CU_ASSERT_EQUAL(atomic_load(&cl.f[2].produces), 0);
    CU_ASSERT_EQUAL(atomic_load(&cl.problems), 0);
}

/* ---- consumer routing ----------------------------------------------------- */

/* ListOffsets and Fetch: only the primary (node 2) answers; node 1, the
 * bootstrap broker, says NOT_LEADER per partition (no primary named), so the
 * consumer must ask Metadata and move. */
static int fetch_fn(struct fake *f, int fd, const Verity__Envelope *env, const uint8_t *pl,
                    size_t len)
{
    (void)pl;
    (void)len;
    uint64_t corr = env->correlation_id;
    bool primary = (uint32_t)f->id == cl.leader;
    Verity__Envelope r = VERITY__ENVELOPE__INIT;
    switch (env->body_case) {
    case VERITY__ENVELOPE__BODY_METADATA_REQ:
        return answer_metadata(f, fd, corr) ? 1 : 0;
    case VERITY__ENVELOPE__BODY_LIST_OFFSETS_REQ: {
        Verity__ListOffsetsResponse lr = VERITY__LIST_OFFSETS_RESPONSE__INIT;
        Verity__ListOffsetsResult x = VERITY__LIST_OFFSETS_RESULT__INIT, *xp = &x;
        x.topic = "t";
        x.partition = 0;
        x.error = primary ? VERITY__ERROR_CODE__ERR_NONE : VERITY__ERROR_CODE__ERR_NOT_LEADER;
        x.offset = 0;
        x.high_watermark = 1;
        lr.results = &xp;
        lr.n_results = 1;
        r.body_case = VERITY__ENVELOPE__BODY_LIST_OFFSETS_RESP;
        r.list_offsets_resp = &lr;
        return reply(fd, corr, &r, NULL, 0) ? 1 : 0;
    }
    case VERITY__ENVELOPE__BODY_FETCH_REQ: {
        atomic_fetch_add(&f->fetches, 1);
        Verity__FetchResponse fr = VERITY__FETCH_RESPONSE__INIT;
        Verity__FetchResult x = VERITY__FETCH_RESULT__INIT, *xp = &x;
        struct batch_builder b;
        x.topic = "t";
        x.partition = 0;
        x.high_watermark = 1;
        x.error = primary ? VERITY__ERROR_CODE__ERR_NONE : VERITY__ERROR_CODE__ERR_NOT_LEADER;
        uint8_t *data = NULL;
        size_t dlen = 0;
        if (primary && env->fetch_req->n_partitions == 1 &&
            env->fetch_req->partitions[0]->offset == 0) {
            if (batch_builder_init(&b, 1024) != 0 ||
                batch_builder_add(&b, 1000, NULL, -1, "hello", 5, NULL, 0) != 0 ||
                batch_builder_finish(&b, NULL) != 0) {
                atomic_fetch_add(&cl.problems, 1);
                return 1;
            }
            batch_set_base_offset(b.buf, 0);
            data = b.buf;
            dlen = b.len;
            x.records_bytes = (uint32_t)dlen;
            x.next_offset = 1;
        }
        fr.results = &xp;
        fr.n_results = 1;
        r.body_case = VERITY__ENVELOPE__BODY_FETCH_RESP;
        r.fetch_resp = &fr;
        int rc = reply(fd, corr, &r, data, dlen);
        if (data)
            batch_builder_deinit(&b);
        return rc ? 1 : 0;
    }
    default:
        atomic_fetch_add(&cl.problems, 1);
        return 1;
    }
}

static void test_consumer_fetches_from_the_primary(void)
{
    cluster_start(fetch_fn, 2);
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn = conn_cfg(cl.f[0].addr);
    cc.fetch_max_wait_ms = 50;
    struct verity_consumer *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_consumer_new(&cc, &c), 0);
    CU_ASSERT_EQUAL(verity_consumer_assign(c, "t", 0, VERITY_START_EARLIEST, 0), 0);
    size_t got = 0;
    for (int i = 0; i < 50 && got == 0; i++) {
        const struct verity_message *m = NULL;
        size_t n = 0;
        CU_ASSERT_EQUAL(verity_consumer_poll(c, 100, &m, &n, NULL), 0);
        if (n == 1 && m[0].value_len == 5 && memcmp(m[0].value, "hello", 5) == 0)
            got = 1;
    }
    CU_ASSERT_EQUAL(got, 1);
    verity_consumer_free(c);
    cluster_stop();
    CU_ASSERT(atomic_load(&cl.f[1].fetches) >= 1);
    CU_ASSERT_EQUAL(atomic_load(&cl.f[2].fetches), 0);
    CU_ASSERT_EQUAL(atomic_load(&cl.problems), 0);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"bootstrap_list_is_parsed_and_bad_entries_refused",
         test_bootstrap_list_is_parsed_and_bad_entries_refused},
        {"client_skips_a_dead_address_of_the_list", test_client_skips_a_dead_address_of_the_list},
        {"request_follows_not_leader_to_the_primary",
         test_request_follows_not_leader_to_the_primary},
        {"producer_routes_to_primary_and_resends_same_bytes_after_failover",
         test_producer_routes_to_primary_and_resends_same_bytes_after_failover},
        {"producer_asks_again_when_first_metadata_names_no_primary",
         test_producer_asks_again_when_first_metadata_names_no_primary},
        {"consumer_fetches_from_the_primary", test_consumer_fetches_from_the_primary},
    };
    signal(SIGPIPE, SIG_IGN);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("client_cluster", NULL, NULL);
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
