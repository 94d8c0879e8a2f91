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

#endif
