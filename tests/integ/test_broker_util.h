/*
 * Harness shared by the broker integration suites (tests/integ/test_broker_*.c):
 * start a real verityd from $VERITY_BIN_DIR on free loopback ports in a
 * mkdtemp data directory, talk to it over raw sockets with the frame codec,
 * stop it by PID. Header-only (static functions) so each suite stays one
 * CUnit program.
 */
#ifndef VERITY_TEST_BROKER_UTIL_H
#define VERITY_TEST_BROKER_UTIL_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/codec.h"
#include "storage/batch.h"
#include "verity/errors.h"
#include "verity/limits.h"

#define BH_TIMEOUT_MS 10000
/* Helpers a suite does not use must not warn. */
#define BH_FN static __attribute__((unused))

struct bh {
    char root[256];    /* mkdtemp directory */
    char data[300];    /* <root>/data */
    char logpath[300]; /* <root>/verityd.log */
    uint16_t port;
    uint16_t http_port;
    pid_t pid;
    uint64_t corr;
};

BH_FN int64_t bh_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A port that was free a moment ago. */
BH_FN uint16_t bh_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    socklen_t len = sizeof a;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    close(fd);
    return ntohs(a.sin_port);
}

BH_FN int bh_connect_port(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

BH_FN int bh_connect(struct bh *h)
{
    return bh_connect_port(h->port);
}

/* Starts verityd on h->data with extra "--key value" pairs (NULL-terminated).
 * Returns 0 once the protocol port accepts connections. */
BH_FN int bh_start(struct bh *h, const char *const *extra)
{
    const char *bin_dir = getenv("VERITY_BIN_DIR");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/verityd", bin_dir ? bin_dir : "build/bin");
    h->port = bh_free_port();
    h->http_port = bh_free_port();
    if (!h->port || !h->http_port)
        return -1;
    char listen[64], http[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", h->port);
    snprintf(http, sizeof http, "127.0.0.1:%u", h->http_port);
    const char *argv[64] = {bin, "--data-dir", h->data, "--listen", listen, "--http", http};
    int argc = 7;
    for (int i = 0; extra && extra[i] && argc < 62; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(h->logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    h->pid = pid;
    int64_t deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    while (bh_mono_ms() < deadline) {
        int fd = bh_connect(h);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            h->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    return -1;
}

/* Sends sig and waits for the exit. Returns the exit status (or 128+signal),
 * -1 on timeout (the broker is then SIGKILLed). */
BH_FN int bh_stop_sig(struct bh *h, int sig)
{
    if (h->pid <= 0)
        return -1;
    kill(h->pid, sig);
    int64_t deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    int st = 0;
    while (bh_mono_ms() < deadline) {
        pid_t w = waitpid(h->pid, &st, WNOHANG);
        if (w == h->pid) {
            h->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(10000);
    }
    kill(h->pid, SIGKILL);
    waitpid(h->pid, &st, 0);
    h->pid = 0;
    return -1;
}

BH_FN int bh_init(struct bh *h, const char *tag)
{
    memset(h, 0, sizeof *h);
    const char *tmp = getenv("TMPDIR");
    snprintf(h->root, sizeof h->root, "%s/verity-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (!mkdtemp(h->root))
        return -1;
    snprintf(h->data, sizeof h->data, "%s/data", h->root);
    snprintf(h->logpath, sizeof h->logpath, "%s/verityd.log", h->root);
    return 0;
}

BH_FN void bh_cleanup(struct bh *h)
{
    if (h->pid > 0)
        (void)bh_stop_sig(h, SIGKILL);
    if (h->root[0]) {
        char cmd[600];
        if (getenv("VERITY_TEST_KEEP")) {
            fprintf(stderr, "(kept %s)\n", h->root);
            return;
        }
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->root);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", h->root);
    }
}

/* ---- requests ------------------------------------------------------------- */

struct bh_resp {
    struct codec_msg *msg;
    uint8_t *payload;
    size_t payload_len;
};

BH_FN void bh_resp_free(struct bh_resp *r)
{
    codec_msg_free(r->msg);
    free(r->payload);
    memset(r, 0, sizeof *r);
}

/* Sends env (version and a fresh correlation id filled in) with payload and
 * reads the answer, which must carry the same correlation id. 0 or error. */
BH_FN int bh_call(struct bh *h, int fd, Verity__Envelope *env, const void *payload, size_t len,
                  struct bh_resp *out)
{
    memset(out, 0, sizeof *out);
    env->version = CODEC_PROTOCOL_VERSION;
    env->correlation_id = ++h->corr;
    int rc = codec_fd_write(fd, env, payload, len, NULL);
    if (rc)
        return rc;
    rc = codec_fd_read(fd, NULL, BH_TIMEOUT_MS, &out->msg, &out->payload, &out->payload_len);
    if (rc)
        return rc;
    if (out->msg->env->correlation_id != env->correlation_id) {
        bh_resp_free(out);
        return VERITY_EPROTO;
    }
    char why[200];
    if (codec_validate_response(out->msg->env, out->payload_len, NULL, why, sizeof why)) {
        fprintf(stderr, "invalid response: %s\n", why);
        bh_resp_free(out);
        return VERITY_EPROTO;
    }
    return 0;
}

/* CreateTopic; returns the wire error (0 on success) or a negative codec error. */
BH_FN int bh_create_topic(struct bh *h, int fd, const char *name, uint32_t partitions,
                          Verity__Durability dur)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__CreateTopicRequest q = VERITY__CREATE_TOPIC_REQUEST__INIT;
    Verity__TopicConfig c = VERITY__TOPIC_CONFIG__INIT;
    c.partitions = partitions;
    c.durability = dur;
    q.name = (char *)name;
    q.config = &c;
    env.body_case = VERITY__ENVELOPE__BODY_CREATE_TOPIC_REQ;
    env.create_topic_req = &q;
    struct bh_resp r;
    int rc = bh_call(h, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    rc = (int)r.msg->env->error;
    if (rc == 0 && r.msg->env->body_case != VERITY__ENVELOPE__BODY_CREATE_TOPIC_RESP)
        rc = -1;
    bh_resp_free(&r);
    return rc;
}

/* InitProducer(pid) -> *pid_out, *epoch_out. Returns the wire error. */
BH_FN int bh_init_producer(struct bh *h, int fd, int64_t pid, int64_t *pid_out, int *epoch_out)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__InitProducerRequest q = VERITY__INIT_PRODUCER_REQUEST__INIT;
    q.producer_id = pid;
    q.client_id = "test";
    env.body_case = VERITY__ENVELOPE__BODY_INIT_PRODUCER_REQ;
    env.init_producer_req = &q;
    struct bh_resp r;
    int rc = bh_call(h, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    rc = (int)r.msg->env->error;
    if (rc == 0) {
        *pid_out = r.msg->env->init_producer_resp->producer_id;
        *epoch_out = r.msg->env->init_producer_resp->producer_epoch;
    }
    bh_resp_free(&r);
    return rc;
}

/* Builds a batch of n records "<tag>-<i>" with producer fields and an
 * optional idempotency key. *out is malloc'd (free()). */
BH_FN int bh_batch(const char *tag, uint32_t n, int64_t pid, int epoch, int32_t seq,
                   const uint8_t *key, uint8_t **out, size_t *len)
{
    struct batch_builder b;
    int rc = batch_builder_init(&b, 4096 + n * 64);
    if (rc)
        return rc;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        char k[64], v[96];
        int kl = snprintf(k, sizeof k, "%s-%u", tag, i);
        int vl = snprintf(v, sizeof v, "value of %s record %u", tag, i);
        rc = batch_builder_add(&b, now + i, k, kl, v, vl, NULL, 0);
    }
    struct batch_meta m = {0, pid, (int16_t)epoch, seq, key};
    if (rc == 0)
        rc = batch_builder_finish(&b, &m);
    if (rc == 0) {
        *out = malloc(b.len);
        if (!*out)
            rc = -ENOMEM;
        else {
            memcpy(*out, b.buf, b.len);
            *len = b.len;
        }
    }
    batch_builder_deinit(&b);
    return rc;
}

struct bh_produced {
    int error; /* wire error of the entry (or the request) */
    uint64_t base_offset;
    uint64_t last_offset;
    bool duplicate;
    char message[200];
};

/* Produces one batch to topic/partition. Returns 0 (see out->error) or a
 * negative transport error. */
BH_FN int bh_produce(struct bh *h, int fd, const char *topic, uint32_t partition,
                     const uint8_t *batch, size_t len, struct bh_produced *out)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ProduceRequest q = VERITY__PRODUCE_REQUEST__INIT;
    Verity__ProduceBatch pb = VERITY__PRODUCE_BATCH__INIT;
    Verity__ProduceBatch *pbp = &pb;
    pb.topic = (char *)topic;
    pb.partition = partition;
    pb.batch_bytes = (uint32_t)len;
    q.n_batches = 1;
    q.batches = &pbp;
    q.timeout_ms = 5000;
    env.body_case = VERITY__ENVELOPE__BODY_PRODUCE_REQ;
    env.produce_req = &q;
    struct bh_resp r;
    memset(out, 0, sizeof *out);
    int rc = bh_call(h, fd, &env, batch, len, &r);
    if (rc)
        return rc;
    const Verity__Envelope *e = r.msg->env;
    if (e->error) {
        out->error = (int)e->error;
        snprintf(out->message, sizeof out->message, "%s", e->error_message);
    } else if (e->body_case != VERITY__ENVELOPE__BODY_PRODUCE_RESP ||
               e->produce_resp->n_results != 1) {
        rc = VERITY_EPROTO;
    } else {
        const Verity__ProduceResult *p = e->produce_resp->results[0];
        out->error = (int)p->error;
        out->base_offset = p->base_offset;
        out->last_offset = p->last_offset;
        out->duplicate = p->duplicate;
        snprintf(out->message, sizeof out->message, "%s", p->error_message);
    }
    bh_resp_free(&r);
    return rc;
}

/* ListTopics round trip: the connection works. Returns the topic count or <0. */
BH_FN int bh_list_topics(struct bh *h, int fd)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__ListTopicsRequest q = VERITY__LIST_TOPICS_REQUEST__INIT;
    env.body_case = VERITY__ENVELOPE__BODY_LIST_TOPICS_REQ;
    env.list_topics_req = &q;
    struct bh_resp r;
    int rc = bh_call(h, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    if (r.msg->env->error || r.msg->env->body_case != VERITY__ENVELOPE__BODY_LIST_TOPICS_RESP)
        rc = -1;
    else
        rc = (int)r.msg->env->list_topics_resp->n_topics;
    bh_resp_free(&r);
    return rc;
}

/* Writes all of buf; 0 or -errno. */
BH_FN int bh_write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads until EOF (or reset) within timeout_ms: true when the peer closed. */
BH_FN bool bh_wait_closed(int fd, int timeout_ms)
{
    int64_t deadline = bh_mono_ms() + timeout_ms;
    uint8_t buf[4096];
    while (bh_mono_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, 100);
        if (pr <= 0)
            continue;
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return true;
    }
    return false;
}

/* Simple HTTP GET to the admin port; returns the malloc'd response (headers
 * and body) or NULL. */
BH_FN char *bh_http_get(struct bh *h, const char *path)
{
    int fd = bh_connect_port(h->http_port);
    if (fd < 0)
        return NULL;
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    if (bh_write_all(fd, req, (size_t)n)) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    int64_t deadline = bh_mono_ms() + BH_TIMEOUT_MS;
    while (buf && bh_mono_ms() < deadline) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (buf)
        buf[len] = '\0';
    return buf;
}

/* ---- consumer groups ---------------------------------------------------------- */

struct bh_group_opts {
    Verity__GroupMode mode;
    Verity__GroupStart start;
    uint64_t start_offset;
    int64_t start_time_ms;
    int64_t lease_ms;
    int64_t session_ms;
    uint32_t max_deliveries;
    const int64_t *backoff_ms; /* n_backoff steps */
    size_t n_backoff;
    const char *dlq_topic;
};

/* CreateGroup over one or more topics. Returns the wire error (0 ok) or a
 * negative transport error; msg (may be NULL) gets the error text. */
BH_FN int bh_create_group(struct bh *h, int fd, const char *group, const char *const *topics,
                          size_t n_topics, const struct bh_group_opts *o, char *msg, size_t cap)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__CreateGroupRequest q = VERITY__CREATE_GROUP_REQUEST__INIT;
    Verity__GroupConfig c = VERITY__GROUP_CONFIG__INIT;
    Verity__GroupPosition pos = VERITY__GROUP_POSITION__INIT;
    c.mode = o->mode;
    c.n_topics = n_topics;
    c.topics = (char **)topics;
    c.lease_ms = o->lease_ms;
    c.session_ms = o->session_ms;
    c.max_deliveries = o->max_deliveries;
    c.n_backoff_ms = o->n_backoff;
    c.backoff_ms = (int64_t *)o->backoff_ms;
    c.dlq_topic = (char *)(o->dlq_topic ? o->dlq_topic : "");
    pos.start = o->start;
    pos.offset = o->start_offset;
    pos.timestamp_ms = o->start_time_ms;
    q.group = (char *)group;
    q.config = &c;
    q.start = &pos;
    env.body_case = VERITY__ENVELOPE__BODY_CREATE_GROUP_REQ;
    env.create_group_req = &q;
    struct bh_resp r;
    int rc = bh_call(h, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    rc = (int)r.msg->env->error;
    if (msg && cap)
        snprintf(msg, cap, "%s", r.msg->env->error_message);
    if (rc == 0 && r.msg->env->body_case != VERITY__ENVELOPE__BODY_CREATE_GROUP_RESP)
        rc = -1;
    bh_resp_free(&r);
    return rc;
}

/* Sends env and returns the wire error (0 ok) or a negative transport
 * error; on 0 *out holds the answer (bh_resp_free), else it is freed. msg
 * gets the error text. */
BH_FN int bh_group_call(struct bh *h, int fd, Verity__Envelope *env, struct bh_resp *out, char *msg,
                        size_t cap)
{
    int rc = bh_call(h, fd, env, NULL, 0, out);
    if (rc)
        return rc;
    rc = (int)out->msg->env->error;
    if (msg && cap)
        snprintf(msg, cap, "%s", out->msg->env->error_message);
    if (rc)
        bh_resp_free(out);
    return rc;
}

/* JoinGroup; *member gets the id. Wire error or negative. */
BH_FN int bh_join(struct bh *h, int fd, const char *group, const char *name,
                  const char *const *topics, size_t n_topics, int64_t session_ms, uint64_t *member,
                  char *msg, size_t cap)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__JoinGroupRequest q = VERITY__JOIN_GROUP_REQUEST__INIT;
    q.group = (char *)group;
    q.member_name = (char *)name;
    q.n_topics = n_topics;
    q.topics = (char **)topics;
    q.session_ms = session_ms;
    env.body_case = VERITY__ENVELOPE__BODY_JOIN_GROUP_REQ;
    env.join_group_req = &q;
    struct bh_resp r;
    int rc = bh_group_call(h, fd, &env, &r, msg, cap);
    if (rc)
        return rc;
    *member = r.msg->env->join_group_resp->member_id;
    bh_resp_free(&r);
    return 0;
}

/* One message a GroupFetch delivered. */
struct bh_msg {
    char topic[VERITY_TOPIC_NAME_MAX + 1];
    uint32_t partition;
    uint64_t offset;
    uint32_t delivery_count;
    char value[128]; /* record value as text (cut) */
};

struct bh_fetched {
    struct bh_msg *m;
    size_t n;
    int64_t lease_deadline_ms;
    int error; /* wire error */
    char message[300];
    bool bad_payload; /* a delivered offset was not in the bytes, or bytes were invalid */
};

BH_FN void bh_fetched_free(struct bh_fetched *f)
{
    free(f->m);
    memset(f, 0, sizeof *f);
}

/* GroupFetch; decodes the payload and keeps only the records in ranges.
 * Returns 0 (see out->error) or a negative transport error. */
BH_FN int bh_gfetch(struct bh *h, int fd, const char *group, uint64_t member, uint32_t max,
                    uint32_t wait_ms, struct bh_fetched *out)
{
    memset(out, 0, sizeof *out);
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__GroupFetchRequest q = VERITY__GROUP_FETCH_REQUEST__INIT;
    q.group = (char *)group;
    q.member_id = member;
    q.max_messages = max;
    q.max_wait_ms = wait_ms;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_FETCH_REQ;
    env.group_fetch_req = &q;
    struct bh_resp r;
    int rc = bh_call(h, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    const Verity__Envelope *e = r.msg->env;
    out->error = (int)e->error;
    snprintf(out->message, sizeof out->message, "%s", e->error_message);
    if (e->error || e->body_case != VERITY__ENVELOPE__BODY_GROUP_FETCH_RESP) {
        if (!e->error)
            rc = VERITY_EPROTO;
        bh_resp_free(&r);
        return rc;
    }
    const Verity__GroupFetchResponse *g = e->group_fetch_resp;
    out->lease_deadline_ms = g->lease_deadline_ms;
    out->m = calloc(g->messages ? g->messages : 1, sizeof *out->m);
    size_t pos = 0, want = 0;
    for (size_t i = 0; i < g->n_results && out->m; i++) {
        const Verity__GroupFetchResult *res = g->results[i];
        size_t end = pos + res->records_bytes;
        for (size_t k = 0; k < res->n_ranges; k++)
            want += res->ranges[k]->count;
        while (pos < end) {
            struct batch_hdr bh;
            if (batch_hdr_decode(r.payload + pos, end - pos, &bh) || bh.length > end - pos ||
                batch_validate(r.payload + pos, bh.length, NULL)) {
                out->bad_payload = true;
                break;
            }
            struct batch_iter it;
            struct batch_record rec;
            batch_iter_init(&it, r.payload + pos, bh.length);
            while (batch_iter_next(&it, &rec) == 1) {
                uint64_t off = bh.base_offset + rec.offset_delta;
                for (size_t k = 0; k < res->n_ranges; k++) {
                    const Verity__GroupDeliveryRange *rg = res->ranges[k];
                    if (off < rg->first_offset || off >= rg->first_offset + rg->count)
                        continue;
                    if (bh.attributes & BATCH_ATTR_CONTROL || out->n >= g->messages) {
                        out->bad_payload = true;
                        break;
                    }
                    struct bh_msg *m = &out->m[out->n++];
                    snprintf(m->topic, sizeof m->topic, "%s", res->topic);
                    m->partition = res->partition;
                    m->offset = off;
                    m->delivery_count = rg->delivery_count;
                    int vl = rec.value_len > 0 ? rec.value_len : 0;
                    if (vl > (int)sizeof m->value - 1)
                        vl = (int)sizeof m->value - 1;
                    memcpy(m->value, rec.value, (size_t)vl);
                    m->value[vl] = '\0';
                }
            }
            pos += bh.length;
        }
        pos = end;
    }
    if (out->n != want || want != g->messages || pos != r.payload_len)
        out->bad_payload = true;
    bh_resp_free(&r);
    return 0;
}

/* Ack of [first, first + count) of one partition (count 0 = 1), or with
 * upto set a cumulative ack up to first. Wire error or negative. */
BH_FN int bh_ack(struct bh *h, int fd, const char *group, uint64_t member, const char *topic,
                 uint32_t partition, uint64_t first, uint32_t count, bool upto, char *msg,
                 size_t cap)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__AckRequest q = VERITY__ACK_REQUEST__INIT;
    Verity__GroupAckRange rg = VERITY__GROUP_ACK_RANGE__INIT;
    Verity__GroupPartitionOffset up = VERITY__GROUP_PARTITION_OFFSET__INIT;
    Verity__GroupAckRange *rp = &rg;
    Verity__GroupPartitionOffset *upp = &up;
    q.group = (char *)group;
    q.member_id = member;
    if (upto) {
        up.topic = (char *)topic;
        up.partition = partition;
        up.offset = first;
        q.n_upto = 1;
        q.upto = &upp;
    } else {
        rg.topic = (char *)topic;
        rg.partition = partition;
        rg.first_offset = first;
        rg.count = count;
        q.n_ranges = 1;
        q.ranges = &rp;
    }
    env.body_case = VERITY__ENVELOPE__BODY_ACK_REQ;
    env.ack_req = &q;
    struct bh_resp r;
    int rc = bh_group_call(h, fd, &env, &r, msg, cap);
    if (rc == 0)
        bh_resp_free(&r);
    return rc;
}

/* Nack (delay_ms as on the wire: 0 schedule, < 0 at once) or, with term,
 * Term. *dead gets NackResponse.dead_lettered (may be NULL). */
BH_FN int bh_nack(struct bh *h, int fd, const char *group, uint64_t member, const char *topic,
                  uint32_t partition, uint64_t offset, int64_t delay_ms, const char *error,
                  bool term, bool *dead, char *msg, size_t cap)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__NackRequest nq = VERITY__NACK_REQUEST__INIT;
    Verity__TermRequest tq = VERITY__TERM_REQUEST__INIT;
    if (term) {
        tq.group = (char *)group;
        tq.member_id = member;
        tq.topic = (char *)topic;
        tq.partition = partition;
        tq.offset = offset;
        tq.error = (char *)error;
        env.body_case = VERITY__ENVELOPE__BODY_TERM_REQ;
        env.term_req = &tq;
    } else {
        nq.group = (char *)group;
        nq.member_id = member;
        nq.topic = (char *)topic;
        nq.partition = partition;
        nq.offset = offset;
        nq.delay_ms = delay_ms;
        nq.error = (char *)error;
        env.body_case = VERITY__ENVELOPE__BODY_NACK_REQ;
        env.nack_req = &nq;
    }
    struct bh_resp r;
    int rc = bh_group_call(h, fd, &env, &r, msg, cap);
    if (rc == 0) {
        if (dead && !term)
            *dead = r.msg->env->nack_resp->dead_lettered;
        bh_resp_free(&r);
    }
    return rc;
}

/* DescribeGroup; on 0 *out holds the answer (bh_resp_free). */
BH_FN int bh_describe(struct bh *h, int fd, const char *group, struct bh_resp *out)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__DescribeGroupRequest q = VERITY__DESCRIBE_GROUP_REQUEST__INIT;
    q.group = (char *)group;
    env.body_case = VERITY__ENVELOPE__BODY_DESCRIBE_GROUP_REQ;
    env.describe_group_req = &q;
    return bh_group_call(h, fd, &env, out, NULL, 0);
}

/* GroupPending (member 0 = all); on 0 *out holds the answer. */
BH_FN int bh_pending(struct bh *h, int fd, const char *group, uint64_t member, int64_t min_age_ms,
                     struct bh_resp *out)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__GroupPendingRequest q = VERITY__GROUP_PENDING_REQUEST__INIT;
    q.group = (char *)group;
    q.member_id = member;
    q.min_age_ms = min_age_ms;
    env.body_case = VERITY__ENVELOPE__BODY_GROUP_PENDING_REQ;
    env.group_pending_req = &q;
    return bh_group_call(h, fd, &env, out, NULL, 0);
}

/* Plain Fetch of one partition from offset: *out is a malloc'd copy of the
 * payload (whole batches), *len its size. Returns the wire error of the
 * partition or the request (0 ok) or a negative transport error. */
BH_FN int bh_fetch_raw(struct bh *h, int fd, const char *topic, uint32_t partition, uint64_t offset,
                       uint8_t **out, size_t *len)
{
    Verity__Envelope env = VERITY__ENVELOPE__INIT;
    Verity__FetchRequest q = VERITY__FETCH_REQUEST__INIT;
    Verity__FetchPartition fp = VERITY__FETCH_PARTITION__INIT;
    Verity__FetchPartition *fpp = &fp;
    fp.topic = (char *)topic;
    fp.partition = partition;
    fp.offset = offset;
    q.n_partitions = 1;
    q.partitions = &fpp;
    env.body_case = VERITY__ENVELOPE__BODY_FETCH_REQ;
    env.fetch_req = &q;
    struct bh_resp r;
    *out = NULL;
    *len = 0;
    int rc = bh_call(h, fd, &env, NULL, 0, &r);
    if (rc)
        return rc;
    rc = (int)r.msg->env->error;
    if (rc == 0)
        rc = (int)r.msg->env->fetch_resp->results[0]->error;
    if (rc == 0) {
        *out = r.payload;
        *len = r.payload_len;
        r.payload = NULL;
    }
    bh_resp_free(&r);
    return rc;
}

#endif
