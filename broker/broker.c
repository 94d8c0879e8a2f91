/*
 * The broker shell: startup (data directory, signing key, metadata replay,
 * listeners), the 1-second housekeeping tick (idempotency key expiry,
 * retention, segment age), signals and the graceful shutdown.
 *
 * Shutdown (SIGTERM / SIGINT): stop accepting, mark not ready, answer every
 * long-polling fetch with what is ready, wait up to shutdown_timeout_ms for
 * the requests in flight (produces waiting for durability finish within a
 * group-commit delay), close the connections, leave the loop. broker_free
 * then closes every log, which syncs and writes a checkpoint.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/kafka/kafka.h"
#include "storage/checkpoint.h"
#include "verity/errors.h"

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Loads the signing key, generating the default one on first start. */
static int load_signing_key(struct broker *b)
{
    char path[BCFG_PATH_MAX + 64], pub[BCFG_PATH_MAX + 64];
    bool is_default = b->cfg.signing_key[0] == '\0';
    int rc;
    if (is_default) {
        snprintf(path, sizeof path, "%s/keys", b->cfg.data_dir);
        if (mkdir(path, 0700) && errno != EEXIST)
            return -errno;
        snprintf(path, sizeof path, "%s/keys/verity.key", b->cfg.data_dir);
        snprintf(pub, sizeof pub, "%s/keys/verity.pub", b->cfg.data_dir);
        if (access(path, F_OK) != 0) {
            if ((rc = ckpt_keygen(path, pub))) {
                blog(BLOG_ERROR, "signing_key_generate_failed", "path=%s error=%s", path,
                     verity_errname(rc));
                return rc;
            }
            blog(BLOG_INFO, "signing_key_generated", "path=%s public=%s", path, pub);
        }
    } else {
        snprintf(path, sizeof path, "%s", b->cfg.signing_key);
    }
    if ((rc = ckpt_load_private(path, &b->signing_key))) {
        blog(BLOG_ERROR, "signing_key_load_failed", "path=%s error=%s", path, verity_errname(rc));
        return rc;
    }
    return 0;
}

static void housekeeping(struct broker *b)
{
    int64_t now = now_ms();
    groups_skip_control_tails(b);
    bool retain = now - b->last_retention_ms >= (int64_t)b->cfg.retention_check_ms;
    if (retain)
        b->last_retention_ms = now;
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if (!t->ready || t->deleting)
            continue;
        for (uint32_t i = 0; i < t->cfg.partitions; i++) {
            struct partition *p = t->parts[i];
            if (!p || !p->log || p->error)
                continue;
            idem_expire(&p->idem, now);
            if (!retain)
                continue;
            int rc = vlog_maybe_roll(p->log, now);
            if (rc)
                blog(BLOG_WARN, "segment_roll_failed", "topic=%s partition=%" PRIu32 " error=%s",
                     t->name, i, verity_errname(rc));
            rc = vlog_retain(p->log, now);
            if (rc > 0)
                blog(BLOG_INFO, "retention", "topic=%s partition=%" PRIu32 " segments_deleted=%d",
                     t->name, i, rc);
            else if (rc < 0)
                blog(BLOG_WARN, "retention_failed", "topic=%s partition=%" PRIu32 " error=%s",
                     t->name, i, verity_errname(rc));
        }
    }
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    housekeeping(arg);
}

/* Runs every 20 ms during shutdown until nothing is in flight. */
static void stop_poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    (void)fd;
    (void)what;
    size_t inflight = conn_inflight_total(b) + kafka_inflight_total(b);
    if (inflight > 0 && mono_ns() < b->stop_deadline_ns)
        return;
    if (inflight > 0)
        blog(BLOG_WARN, "shutdown_timeout", "requests_dropped=%zu", inflight);
    event_del(b->stop_ev);
    conn_close_all(b);
    kafka_close_all(b);
    event_base_loopexit(b->base, NULL);
}

void broker_stop(struct broker *b)
{
    if (b->stopping)
        return;
    b->stopping = true;
    blog(BLOG_INFO, "shutdown_started", "inflight=%zu connections=%zu", conn_inflight_total(b),
         b->n_conns);
    conn_stop_accepting(b);
    kafka_stop_accepting(b);
    /* Long-polls answer now with what is ready. */
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        for (uint32_t i = 0; i < t->cfg.partitions; i++) {
            struct partition *p = t->parts[i];
            while (p && !TAILQ_EMPTY(&p->fetchers))
                fetch_link_wake(TAILQ_FIRST(&p->fetchers), true);
        }
    }
    for (struct bgroup *bg = b->groups.list; bg; bg = bg->next)
        while (!TAILQ_EMPTY(&bg->waiters))
            gfetch_fail(TAILQ_FIRST(&bg->waiters)->f, 0, NULL);
    b->stop_deadline_ns = mono_ns() + (int64_t)b->cfg.shutdown_timeout_ms * 1000000;
    struct timeval tv = {0, 20000};
    if (!b->stop_ev || event_add(b->stop_ev, &tv)) {
        conn_close_all(b);
        kafka_close_all(b);
        event_base_loopexit(b->base, NULL);
        return;
    }
    stop_poll_cb(-1, 0, b);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    blog(BLOG_INFO, "signal", "signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    broker_stop(arg);
}

int broker_new(const struct broker_config *cfg, struct broker **out)
{
    static bool threads_ready;
    int rc;
    *out = NULL;
    if (!threads_ready) {
        if (evthread_use_pthreads())
            return -ENOMEM;
        threads_ready = true;
    }
    struct broker *b = calloc(1, sizeof *b);
    if (!b)
        return -ENOMEM;
    b->cfg = *cfg;
    TAILQ_INIT(&b->topics);
    TAILQ_INIT(&b->conns);
    TAILQ_INIT(&b->meta.ops);
    codec_limits_default(&b->limits);
    b->limits.frame_bytes_max = cfg->max_frame_bytes;
    b->limits.batch_bytes_max = cfg->max_batch_bytes;
    if (b->limits.envelope_bytes_max > cfg->max_frame_bytes - 4)
        b->limits.envelope_bytes_max = cfg->max_frame_bytes - 4;
    b->last_retention_ms = now_ms();
    if (getrandom(b->idem_seed, sizeof b->idem_seed, 0) != (ssize_t)sizeof b->idem_seed) {
        rc = -errno;
        goto fail;
    }
    blog_set_level((enum blog_level)blog_level_parse(cfg->log_level));
    if (mkdir(cfg->data_dir, 0755) && errno != EEXIST) {
        rc = -errno;
        blog(BLOG_ERROR, "data_dir_failed", "dir=%s error=%s", cfg->data_dir, verity_errname(rc));
        goto fail;
    }
    char topics[BCFG_PATH_MAX + 16];
    snprintf(topics, sizeof topics, "%s/topics", cfg->data_dir);
    if (mkdir(topics, 0755) && errno != EEXIST) {
        rc = -errno;
        goto fail;
    }
    b->base = event_base_new();
    if (!b->base) {
        rc = -ENOMEM;
        goto fail;
    }
    if ((rc = load_signing_key(b)))
        goto fail;
    if ((rc = meta_open(b)))
        goto fail;
    if ((rc = groups_open(b)))
        goto fail;
    if ((rc = conn_listen(b)) || (rc = http_start(b)) || (rc = kafka_start(b)))
        goto fail;
    b->sig_term = evsignal_new(b->base, SIGTERM, signal_cb, b);
    b->sig_int = evsignal_new(b->base, SIGINT, signal_cb, b);
    b->tick_ev = event_new(b->base, -1, EV_PERSIST, tick_cb, b);
    b->stop_ev = event_new(b->base, -1, EV_PERSIST, stop_poll_cb, b);
    struct timeval sec = {1, 0};
    if (!b->sig_term || !b->sig_int || !b->tick_ev || !b->stop_ev || event_add(b->sig_term, NULL) ||
        event_add(b->sig_int, NULL) || event_add(b->tick_ev, &sec)) {
        rc = -ENOMEM;
        goto fail;
    }
    b->ready = true;
    blog(BLOG_INFO, "broker_started",
         "node_id=%" PRIu32 " listen=%s http=%s kafka=%s data_dir=%s topics=%zu signed=%s",
         cfg->node_id, b->listen_addr, b->http_addr[0] ? b->http_addr : "off", kafka_addr(b),
         cfg->data_dir, b->n_topics,
         b->signing_key ? "yes" : "no");
    *out = b;
    return 0;
fail:
    (void)broker_free(b);
    return rc;
}

int broker_run(struct broker *b)
{
    int rc = event_base_dispatch(b->base);
    b->ready = false;
    if (rc < 0)
        return -EIO;
    return b->stopping ? 0 : VERITY_ECLOSED;
}

int broker_free(struct broker *b)
{
    int rc = 0;
    if (!b)
        return 0;
    b->ready = false;
    conn_stop_accepting(b);
    conn_close_all(b);
    kafka_free(b);
    http_stop(b);
    int grc = groups_close(b, true);
    if (grc && !rc)
        rc = grc;
    struct topic *t;
    while ((t = TAILQ_FIRST(&b->topics))) {
        for (uint32_t i = 0; i < t->cfg.partitions; i++) {
            int prc = part_close(t->parts[i], VERITY_ECLOSED, true);
            if (prc && !rc)
                rc = prc;
            t->parts[i] = NULL;
        }
        topic_remove(b, t);
    }
    int mrc = meta_close(b, true);
    if (mrc && !rc)
        rc = mrc;
    if (b->sig_term)
        event_free(b->sig_term);
    if (b->sig_int)
        event_free(b->sig_int);
    if (b->tick_ev)
        event_free(b->tick_ev);
    if (b->stop_ev)
        event_free(b->stop_ev);
    if (b->base)
        event_base_free(b->base);
    EVP_PKEY_free(b->signing_key);
    free(b);
    return rc;
}
