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
#include <malloc.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "broker/kafka/kafka.h"
#include "broker/tls.h"
#include "broker/auth.h"
#include "broker/peer_tls.h"
#include "storage/checkpoint.h"
#include "storage/clock.h"
#include "verity/errors.h"

int64_t now_ms(void)
{
    return clock_wall_ms();
}

int64_t mono_ns(void)
{
    return clock_mono_ns();
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
        blog(BLOG_ERROR, "signing_key_load_failed", "path=%s error=%s text=\"%s\"", path,
             verity_errname(rc),
             rc == -ENOENT ? "no key at the configured signing_key: create it with `verity keygen "
                             "--out <path without .key>`, or leave signing_key unset to use "
                             "<data_dir>/keys/verity.key, generated on first start"
                           : "not a readable Ed25519 private key (PEM)");
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
    (void)meta_snapshot(b, false); /* failures are logged and counted */
    (void)groups_snapshot(b, false);
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
            (void)part_snapshot(p, false); /* failures are logged and counted */
            part_checkpoint_tick(p, now);
            if (!retain)
                continue;
            b->met.producers_expired += idem_expire_producers(&p->idem, now);
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
    conn_guards_tick(arg);
}

/* Raises the soft descriptor limit to the hard one (every partition holds
 * descriptors, every connection one) and remembers it for the limits. */
static void raise_fd_limit(struct broker *b)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            rl.rlim_cur = was;
    }
    b->fd_limit = rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
    if (rl.rlim_cur != was)
        blog(BLOG_INFO, "fd_limit_raised", "from=%llu to=%llu", (unsigned long long)was,
             (unsigned long long)rl.rlim_cur);
}

/* Sizes the closed segments' descriptor cache: the configured bound, or a
 * quarter of the descriptor limit (the rest is for partitions' active
 * segments and connections). */
static void set_segment_fds(struct broker *b)
{
    uint64_t max = b->cfg.segment_fds_max;
    if (max == 0) {
        max = b->fd_limit == 0 || b->fd_limit == UINT64_MAX ? 16384 : b->fd_limit / 4;
        max = max < 16 ? 16 : max > 16384 ? 16384 : max;
    }
    vlog_fd_cache_set_max(max);
}

/* libevent's own warnings go through the structured log, at most one line
 * a second (an fd shortage can make it repeat itself thousands of times). */
static void libevent_log_cb(int severity, const char *msg)
{
    static int64_t last_ns;
    static uint64_t suppressed;
    if (severity < EVENT_LOG_WARN)
        return;
    int64_t now = mono_ns();
    if (now - last_ns < 1000000000) {
        suppressed++;
        return;
    }
    char q[300];
    blog(BLOG_WARN, "libevent", "text=%s suppressed=%llu", blog_q(msg, q, sizeof q),
         (unsigned long long)suppressed);
    last_ns = now;
    suppressed = 0;
}

/* Writes cfg.ready_file (JSON: pid, listen, http) through a rename, so a
 * reader never sees half of it. Tests and scripts that listen on port 0
 * read the bound ports from it. */
static int write_ready_file(struct broker *b)
{
    char tmp[BCFG_PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", b->cfg.ready_file);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -errno;
    fprintf(f, "{\"pid\":%ld,\"listen\":\"%s\",\"http\":\"%s\"}\n", (long)getpid(),
            b->listen_addr, b->http_addr);
    if (fclose(f) != 0 || rename(tmp, b->cfg.ready_file) != 0) {
        int rc = -errno;
        unlink(tmp);
        return rc;
    }
    return 0;
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

/* SIGHUP: reload the TLS certificates and key. New connections use the new
 * ones; open connections keep theirs (their SSL holds the old context). A
 * reload that fails keeps the old context and says why. */
static void sighup_cb(evutil_socket_t sig, short what, void *arg)
{
    struct broker *b = arg;
    (void)sig;
    (void)what;
    auth_reload(b); /* issue 14: keys, mappings, ACLs, quotas */
    peer_tls_reload(b); /* issue 14: the cluster's peer links */
    if (!b->cfg.tls_cert[0]) {
        blog(BLOG_INFO, "signal", "signal=SIGHUP action=%s (TLS not configured)",
             b->auth ? "auth_reload" : "none");
        return;
    }
    char err[512];
    SSL_CTX *ctx = btls_ctx_new(&b->cfg, err, sizeof err);
    if (!ctx) {
        char q[600];
        b->met.tls_reload_failures++;
        blog(BLOG_ERROR, "tls_reload_failed", "reason=%s (the previous certificates stay in use)",
             blog_q(err, q, sizeof q));
        return;
    }
    SSL_CTX_free(b->tls_ctx);
    b->tls_ctx = ctx;
    b->met.tls_reloads++;
    blog(BLOG_INFO, "tls_reloaded", "cert=%s connections=%zu", b->cfg.tls_cert, b->n_conns);
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
    if (cfg->trace_sample) {
        if (!(b->trace = calloc(1, sizeof *b->trace))) {
            rc = -ENOMEM;
            goto fail;
        }
        b->trace->sample = cfg->trace_sample;
    }
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
    /* One owner per data directory, before anything reads it: a second
     * broker would otherwise run recovery on the live files. */
    pid_t owner = 0;
    if ((rc = dirlock_acquire(&b->lock, cfg->data_dir, &owner, NULL, 0))) {
        if (rc == -EBUSY)
            blog(BLOG_ERROR, "data_dir_locked",
                 "dir=%s owner_pid=%ld text=\"data directory in use by PID %ld\"", cfg->data_dir,
                 (long)owner, (long)owner);
        else
            blog(BLOG_ERROR, "data_dir_lock_failed", "dir=%s error=%s", cfg->data_dir,
                 verity_errname(rc));
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
    b->started_ms = now_ms();
    raise_fd_limit(b);
    set_segment_fds(b);
    event_set_log_callback(libevent_log_cb);
    /* Buffers up to 4 MiB (frames and batches of a busy producer: a
     * librdkafka batch is about 1 MB) come from the heap and are reused
     * while the load lasts: with a 256 KiB threshold each one was a fresh
     * mmap, page-faulted in and unmapped again, and a Kafka W1 spent a
     * third of the broker's CPU there (docs/PERFORMANCE.md). Larger ones
     * come from mmap and go back to the system when freed. Setting the
     * threshold also stops glibc from raising it after the first free (a
     * burst of 16 MiB frames would otherwise stay resident for good). Free
     * heap above 64 MiB is trimmed at once; below it, conn_guards_tick's
     * malloc_trim hands it back once the load has gone. */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    if ((rc = conn_guards_init(b)))
        goto fail;
    if ((rc = load_signing_key(b)))
        goto fail;
    if ((rc = meta_open(b)))
        goto fail;
    if ((rc = groups_open(b)))
        goto fail;
    if (cfg->tls_cert[0]) {
        char err[512];
        if (!(b->tls_ctx = btls_ctx_new(cfg, err, sizeof err))) {
            char q[600];
            blog(BLOG_ERROR, "tls_config_failed", "reason=%s", blog_q(err, q, sizeof q));
            rc = VERITY_EINVAL;
            goto fail;
        }
    }
    if ((rc = auth_open(b))) /* issue 14 */
        goto fail;
    if ((rc = conn_listen(b)) || (rc = http_start(b)) || (rc = kafka_start(b)) ||
        (rc = peer_start(b)))
        goto fail;
    if ((rc = wpush_start(b))) /* issue 11: witnesses */
        goto fail;
    b->sig_term = evsignal_new(b->base, SIGTERM, signal_cb, b);
    b->sig_int = evsignal_new(b->base, SIGINT, signal_cb, b);
    b->sig_hup = evsignal_new(b->base, SIGHUP, sighup_cb, b);
    b->tick_ev = event_new(b->base, -1, EV_PERSIST, tick_cb, b);
    b->stop_ev = event_new(b->base, -1, EV_PERSIST, stop_poll_cb, b);
    struct timeval sec = {1, 0};
    if (!b->sig_term || !b->sig_int || !b->sig_hup || !b->tick_ev || !b->stop_ev ||
        event_add(b->sig_term, NULL) || event_add(b->sig_int, NULL) ||
        event_add(b->sig_hup, NULL) || event_add(b->tick_ev, &sec)) {
        rc = -ENOMEM;
        goto fail;
    }
    b->ready = true;
    if (b->cfg.ready_file[0] && (rc = write_ready_file(b))) {
        blog(BLOG_ERROR, "ready_file_failed", "path=%s error=%s", b->cfg.ready_file,
             verity_errname(rc));
        goto fail;
    }
    blog(BLOG_INFO, "broker_started",
         "node_id=%" PRIu32 " listen=%s http=%s kafka=%s data_dir=%s topics=%zu signed=%s tls=%s",
         cfg->node_id, b->listen_addr, b->http_addr[0] ? b->http_addr : "off", kafka_addr(b),
         cfg->data_dir, b->n_topics, b->signing_key ? "yes" : "no",
         !b->tls_ctx ? "off" : strcmp(cfg->tls_client_auth, "none") == 0 ? "on" : cfg->tls_client_auth);
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
    wpush_stop(b); /* issue 11 */
    peer_stop(b);
    kafka_free(b);
    http_stop(b);
    conn_guards_free(b);
    int grc = groups_close(b, true);
    if (grc && !rc)
        rc = grc;
    /* Before the topics leave memory: a clean stop leaves a snapshot of
     * the metadata, so the next start replays (almost) nothing. */
    if (b->meta.log && vlog_sync(b->meta.log) == 0)
        (void)meta_snapshot(b, true); /* failures are logged and counted */
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
    cluster_stop(b); /* the partitions' groups are closed: now __meta's */
    int mrc = meta_close(b, true);
    if (mrc && !rc)
        rc = mrc;
    if (b->sig_term)
        event_free(b->sig_term);
    if (b->sig_int)
        event_free(b->sig_int);
    if (b->sig_hup)
        event_free(b->sig_hup);
    SSL_CTX_free(b->tls_ctx);
    auth_close(b);
    if (b->tick_ev)
        event_free(b->tick_ev);
    if (b->stop_ev)
        event_free(b->stop_ev);
    if (b->base)
        event_base_free(b->base);
    EVP_PKEY_free(b->signing_key);
    dirlock_release(&b->lock);
    free(b->trace);
    free(b);
    return rc;
}
