/*
 * verity bench: the four workloads of the peer benchmark
 * (/work/shared/bench-peers/README.md) run through libverity against a
 * Verity broker, so the figures compare with Redis Streams and NATS
 * JetStream measured on the same machine.
 *
 *   W1  1,000,000 x 100-byte messages, at most 1000 sent and unacknowledged
 *   W2  20,000 messages one at a time (send, wait for the ack, next)
 *   W3  read back the 1,000,000 messages of W1 as fast as possible (a plain
 *       fetch by a single reader until consumer groups exist)
 *   W4  100,000 messages at 10,000/s; end-to-end latency to a consumer that
 *       follows with long polls
 *
 * --group ordered|shared runs W3 and W4 through a consumer group of that
 * mode instead (include/verity/group.h), as the peers do: W3 creates a group
 * at W1's first message and one member fetches up to 1000 messages per
 * request and acks each batch, the ack riding with the next fetch (the
 * member asks for batch k+1 only when the application polls again, so one
 * fetch is out at a time, as XREADGROUP + XACK); the clock stops when the
 * broker has confirmed every ack. W3 checks every message arrives once, in
 * order, with delivery count 1, and holds W1's bytes. W4's consumer is a
 * group member that keeps two fetches of "up to 1000, answer as soon as any
 * is there" out (a continuous pull, as the NATS client's) and acks what it
 * got as in W3. --prefetch lets the W3 member keep one fetch out while the
 * application works on the previous batch (not the peers' rule; reported as
 * prefetch=1).
 *
 * The constants and the payload generator (xorshift64* with the same seed,
 * restarted for each workload as each peer client process does) are copied
 * from the peers' src/common.h; percentiles are nearest-rank; RESULT lines use
 * the same keys (msgs_per_s, MB_per_s, p50_us, p99_us, p999_us, max_us,
 * mean_us), with peer=verity.
 *
 * The mode is the durability of the topic each workload creates: durable ->
 * `always` (the broker acks after an fdatasync that covers the message;
 * group commit allowed), relaxed -> `os` (acked once written; the OS writes
 * back). Every workload gets a fresh, empty one-partition topic; W3 reads
 * W1's. --broker-pid PID adds srv_cpu_s (the broker's user+system CPU during
 * the workload, from /proc) and cli_cpu_s (this process's, every thread) to
 * each line. Progress goes to stderr, results
 * to stdout (RESULT lines, or JSON lines with --json).
 *
 * Exit codes: 0 every workload ran and checked out, 1 a workload failed
 * (a FAILED line says which), 2 usage, 3 the broker cannot be reached.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "storage/clock.h"
#include "tools/stats.h"
#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "tools/latplot.h"
#include "verity/group.h"
#include "verity/verity.h"

#define EXIT_UNREACHABLE 3

/* From bench-peers/src/common.h: the workload definition. */
#define PAYLOAD 100
#define W1_MSGS 1000000
#define W1_WINDOW 1000
#define W2_MSGS 20000
#define W3_BATCH 1000
#define W4_RATE 10000
#define W4_SECS 10
#define W4_MSGS (W4_RATE * W4_SECS)

/* A fetch of W3_BATCH records: payload plus per-record framing. */
#define W3_FETCH_BYTES (W3_BATCH * (PAYLOAD + 12))

static void sleep_until_ns(int64_t t)
{
    struct timespec ts = {t / 1000000000LL, t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* xorshift64*, seeded as in common.h; restarted per workload. */
static uint64_t rng_state;

static uint64_t rng64(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

/* n payloads of PAYLOAD random bytes, back to back (common.h's make_payloads
 * from a fresh generator). NULL when out of memory. */
static uint8_t *make_payloads(size_t n)
{
    size_t len = n * PAYLOAD;
    uint8_t *p = malloc(len + 8);
    if (!p)
        return NULL;
    rng_state = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t r = rng64();
        memcpy(p + i, &r, 8);
    }
    return p;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts lat (ns) and formats the percentile keys of common.h's fmt_lat. */
static void fmt_lat(char *out, size_t cap, int64_t *lat, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)lat[i];
    qsort(lat, n, sizeof lat[0], cmp_i64);
    snprintf(out, cap, "p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f",
             stats_pct(lat, n, 0.50) / 1e3, stats_pct(lat, n, 0.99) / 1e3, stats_pct(lat, n, 0.999) / 1e3,
             n ? lat[n - 1] / 1e3 : 0.0, n ? sum / n / 1e3 : 0.0);
}

/* A log2 histogram of sorted latencies on stderr. */
static void histogram(const char *w, const int64_t *lat, size_t n)
{
    fprintf(stderr, "[%s] latency histogram (us, upper bound: count):", w);
    size_t i = 0;
    for (int64_t bound = 16; i < n; bound *= 2) {
        size_t c = 0;
        while (i < n && lat[i] / 1000 < bound) {
            i++;
            c++;
        }
        if (c)
            fprintf(stderr, " <%" PRId64 ":%zu", bound, c);
    }
    fputc('\n', stderr);
}

/* ---- the run ------------------------------------------------------------- */

struct bench {
    const char *broker;
    const char *mode;               /* "durable" | "relaxed" */
    enum verity_durability durability;
    uint32_t replicas;              /* --replicas (cluster): the topics' replication factor */
    bool json;
    bool keep;
    long broker_pid;                /* 0: unknown */
    const char *group;              /* --group: "ordered" | "shared", NULL: plain fetch */
    enum verity_group_mode group_mode;
    bool prefetch;                  /* --prefetch: group member keeps a fetch out */
    struct verity_client *admin;
    char w1_topic[96];              /* W1's topic, for W3 */
    bool w1_ok;
    bool failed;
    double cpu0;
    double cli0;                    /* this process's CPU at the workload's start */
    const char *plot;               /* --plot FILE.svg */
    const char *peers;              /* --peers FILE: RESULT lines of bench-peers */
    const char *trace_admin;        /* --trace HOST:PORT: the broker's admin HTTP */
    int64_t *kept[5];               /* sorted latencies of W2 / W4 for the plot */
    size_t kept_n[5];
};

/* Keeps a copy of a workload's sorted latencies for --plot. */
static void keep_lat(struct bench *b, int w, const int64_t *sorted, size_t n)
{
    if (!b->plot || n == 0)
        return;
    free(b->kept[w]);
    b->kept[w] = malloc(n * sizeof *sorted);
    if (b->kept[w])
        memcpy(b->kept[w], sorted, n * sizeof *sorted);
    b->kept_n[w] = b->kept[w] ? n : 0;
}

/* The broker's user+system CPU seconds so far (-1 when unknown). */
static double broker_cpu(const struct bench *b)
{
    if (b->broker_pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", b->broker_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* After ") ": state is field 3; utime and stime are fields 14 and 15. */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* This process's user+system CPU (its libverity threads included). */
static double self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void workload_begin(struct bench *b)
{
    b->cpu0 = broker_cpu(b);
    b->cli0 = self_cpu();
}

/* Prints one result: "RESULT peer=verity mode=M workload=W <kv>" or JSON. */
static void emit(struct bench *b, const char *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void emit(struct bench *b, const char *w, const char *fmt, ...)
{
    char kv[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv, sizeof kv, fmt, ap);
    va_end(ap);
    double cli1 = self_cpu(), cpu1 = broker_cpu(b);
    if (b->cpu0 >= 0 && cpu1 >= 0) {
        size_t l = strlen(kv);
        snprintf(kv + l, sizeof kv - l, " srv_cpu_s=%.2f cli_cpu_s=%.2f", cpu1 - b->cpu0,
                 cli1 - b->cli0);
    }
    if (!b->json) {
        printf("RESULT peer=verity mode=%s workload=%s %s\n", b->mode, w, kv);
        fflush(stdout);
        return;
    }
    json_t *o = json_object();
    json_object_set_new(o, "peer", json_string("verity"));
    json_object_set_new(o, "mode", json_string(b->mode));
    json_object_set_new(o, "workload", json_string(w));
    char *save = NULL;
    for (char *tok = strtok_r(kv, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char *end;
        double v = strtod(eq + 1, &end);
        json_object_set_new(o, tok, *end ? json_string(eq + 1) : json_real(v));
    }
    char *s = json_dumps(o, JSON_COMPACT);
    if (s)
        puts(s);
    free(s);
    json_decref(o);
    fflush(stdout);
}

static void failed(struct bench *b, const char *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void failed(struct bench *b, const char *w, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    b->failed = true;
    fprintf(stderr, "[%s %s] FAILED: %s\n", w, b->mode, why);
    if (b->json)
        printf("{\"peer\":\"verity\",\"mode\":\"%s\",\"workload\":\"%s\",\"failed\":true}\n",
               b->mode, w);
    else
        printf("FAILED peer=verity mode=%s workload=%s\n", b->mode, w);
    fflush(stdout);
}

static void progress(const char *w, const char *mode, uint64_t done, uint64_t total, int64_t t0,
                     int64_t *last)
{
    int64_t t = clock_mono_ns();
    if (t - *last < 250000000LL && done != total)
        return;
    *last = t;
    double s = (t - t0) / 1e9;
    fprintf(stderr, "\r[%s %s] %" PRIu64 "/%" PRIu64 "  %.0f msg/s   ", w, mode, done, total,
            s > 0 ? done / s : 0.0);
    if (done == total)
        fputc('\n', stderr);
}

/* Creates a fresh one-partition topic for workload w. */
static int make_topic(struct bench *b, const char *w, char *name, size_t cap)
{
    snprintf(name, cap, "bench-%s-%s-%ld-%lld", w, b->mode, (long)getpid(),
             (long long)(clock_mono_ns() % 1000000000LL));
    struct verity_topic_config tc = {.partitions = 1, .durability = b->durability,
                                     .replication_factor = b->replicas};
    int rc = verity_topic_create(b->admin, name, &tc, NULL);
    if (rc)
        fprintf(stderr, "create topic %s: %s\n", name, verity_last_error_message());
    return rc;
}

static void drop_topic(struct bench *b, const char *name)
{
    if (!b->keep && name[0] && verity_topic_delete(b->admin, name) != 0)
        fprintf(stderr, "delete topic %s: %s\n", name, verity_last_error_message());
}

static struct verity_producer *new_producer(struct bench *b)
{
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = b->broker;
    pc.linger_ms = 0;
    pc.block_ms = 60000;
    struct verity_producer *p = NULL;
    return verity_producer_new(&pc, &p) == 0 ? p : NULL;
}

/* ---- W1 --------------------------------------------------------------------- */

/*
 * The window: at most W1_WINDOW messages sent and not yet acknowledged. The
 * sender sleeps only when the window is full, and the delivery callback wakes
 * it once W1_WAKE slots are free (or at the end), not once per message: a
 * wake-up per message costs more than the message.
 */
#define W1_WAKE 64

struct w1_state {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint_fast64_t sent;
    atomic_uint_fast64_t acked;
    atomic_bool waiting;
    atomic_uint_fast64_t errors;
    atomic_int first_err;
    int64_t last_ack_ns;
};

static void w1_cb(void *opaque, int err, const struct verity_delivery *d)
{
    struct w1_state *s = opaque;
    (void)d;
    if (err) {
        atomic_fetch_add(&s->errors, 1);
        int zero = 0;
        atomic_compare_exchange_strong(&s->first_err, &zero, err);
    }
    uint64_t acked = atomic_fetch_add(&s->acked, 1) + 1;
    if (acked == W1_MSGS)
        s->last_ack_ns = clock_mono_ns();
    if (atomic_load(&s->waiting) &&
        (acked == W1_MSGS || atomic_load(&s->sent) - acked <= W1_WINDOW - W1_WAKE)) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

/* Blocks until one more message fits in the window. */
static void w1_wait_room(struct w1_state *s)
{
    if (atomic_load(&s->sent) - atomic_load(&s->acked) < W1_WINDOW)
        return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->waiting, true);
    while (atomic_load(&s->sent) - atomic_load(&s->acked) >= W1_WINDOW)
        pthread_cond_wait(&s->cv, &s->mu);
    atomic_store(&s->waiting, false);
    pthread_mutex_unlock(&s->mu);
}

static void w1(struct bench *b)
{
    uint8_t *pl = make_payloads(W1_MSGS);
    struct verity_producer *p = new_producer(b);
    struct w1_state s = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    if (!pl || !p || make_topic(b, "w1", b->w1_topic, sizeof b->w1_topic) != 0) {
        failed(b, "W1", "setup");
        goto out;
    }
    workload_begin(b);
    int64_t t0 = clock_mono_ns(), last = t0;
    int rc = 0;
    for (uint64_t i = 0; i < W1_MSGS && rc == 0; i++) {
        w1_wait_room(&s);
        struct verity_record r = {.value = pl + i * PAYLOAD, .value_len = PAYLOAD};
        atomic_fetch_add(&s.sent, 1);
        rc = verity_produce(p, b->w1_topic, 0, &r, w1_cb, &s);
        if ((i & 1023) == 0)
            progress("W1", b->mode, atomic_load(&s.acked), W1_MSGS, t0, &last);
    }
    if (rc == 0)
        rc = verity_producer_flush(p, 120000);
    progress("W1", b->mode, atomic_load(&s.acked), W1_MSGS, t0, &last);
    int64_t el = s.last_ack_ns - t0;
    if (rc || atomic_load(&s.errors) || atomic_load(&s.acked) != W1_MSGS) {
        failed(b, "W1", "%s; %" PRIu64 " acked, %" PRIu64 " errors (%s)", verity_strerror(rc),
               (uint64_t)atomic_load(&s.acked), (uint64_t)atomic_load(&s.errors),
               verity_strerror(atomic_load(&s.first_err)));
        goto out;
    }
    /* Not timed: the log holds the messages (checkpoints take offsets too). */
    struct verity_topic_info *t = NULL;
    if (verity_topic_describe(b->admin, b->w1_topic, &t) != 0 || t->partition_count != 1 ||
        t->partitions[0].high_watermark < W1_MSGS) {
        failed(b, "W1", "the log does not hold %d messages", W1_MSGS);
        verity_topic_info_free(t, t ? 1 : 0);
        goto out;
    }
    double disk_mb = t->partitions[0].size_bytes / 1048576.0;
    verity_topic_info_free(t, 1);
    b->w1_ok = true;
    double sec = el / 1e9;
    emit(b, "W1", "msgs=%d secs=%.3f msgs_per_s=%.0f MB_per_s=%.2f disk_MB=%.0f", W1_MSGS, sec,
         W1_MSGS / sec, W1_MSGS * (double)PAYLOAD / sec / 1e6, disk_mb);
out:
    verity_producer_free(p, 10000);
    free(pl);
}

/* ---- W2 --------------------------------------------------------------------- */

static void w2(struct bench *b)
{
    char topic[96] = "";
    uint8_t *pl = make_payloads(W2_MSGS);
    int64_t *lat = malloc(sizeof *lat * W2_MSGS);
    struct verity_producer *p = new_producer(b);
    if (!pl || !lat || !p || make_topic(b, "w2", topic, sizeof topic) != 0) {
        failed(b, "W2", "setup");
        goto out;
    }
    /* The producer id is granted in the background: wait for it untimed. */
    int64_t id;
    int16_t epoch;
    for (int i = 0; i < 500; i++) {
        verity_producer_id(p, &id, &epoch);
        if (id > 0)
            break;
        usleep(10000);
    }
    workload_begin(b);
    int64_t t0 = clock_mono_ns(), last = t0;
    for (int i = 0; i < W2_MSGS; i++) {
        struct verity_record r = {.value = pl + (size_t)i * PAYLOAD, .value_len = PAYLOAD};
        int64_t t = clock_mono_ns();
        int rc = verity_produce_sync(p, topic, 0, &r, NULL);
        lat[i] = clock_mono_ns() - t;
        if (rc) {
            failed(b, "W2", "message %d: %s", i, verity_strerror(rc));
            goto out;
        }
        progress("W2", b->mode, (uint64_t)i + 1, W2_MSGS, t0, &last);
    }
    int64_t el = clock_mono_ns() - t0;
    char buf[256];
    fmt_lat(buf, sizeof buf, lat, W2_MSGS);
    histogram("W2", lat, W2_MSGS);
    keep_lat(b, 2, lat, W2_MSGS);
    emit(b, "W2", "msgs=%d msgs_per_s=%.0f %s", W2_MSGS, W2_MSGS / (el / 1e9), buf);
out:
    verity_producer_free(p, 10000);
    drop_topic(b, topic);
    free(pl);
    free(lat);
}

/* ---- W3 --------------------------------------------------------------------- */

static struct verity_consumer *new_consumer(struct bench *b, uint32_t max_wait_ms)
{
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = b->broker;
    cc.fetch_max_wait_ms = max_wait_ms;
    cc.fetch_min_bytes = 1;
    cc.partition_max_bytes = W3_FETCH_BYTES;
    cc.fetch_max_bytes = W3_FETCH_BYTES;
    struct verity_consumer *c = NULL;
    return verity_consumer_new(&cc, &c) == 0 ? c : NULL;
}

static void w3(struct bench *b)
{
    if (!b->w1_ok) {
        failed(b, "W3", "needs the messages of W1");
        return;
    }
    uint8_t *pl = make_payloads(W1_MSGS); /* what W1 sent, to check against */
    struct verity_consumer *c = new_consumer(b, 100);
    if (!pl || !c) {
        failed(b, "W3", "setup");
        goto out;
    }
    workload_begin(b);
    int64_t t0 = clock_mono_ns(), last = t0;
    uint64_t got = 0, wrong = 0;
    int rc = verity_consumer_assign(c, b->w1_topic, 0, VERITY_START_EARLIEST, 0);
    int64_t deadline = t0 + 120 * 1000000000LL;
    while (rc == 0 && got < W1_MSGS && clock_mono_ns() < deadline) {
        const struct verity_message *m;
        size_t n;
        rc = verity_consumer_poll(c, 1000, &m, &n, NULL);
        for (size_t i = 0; rc == 0 && i < n && got < W1_MSGS; i++, got++)
            if (m[i].value_len != PAYLOAD || memcmp(m[i].value, pl + got * PAYLOAD, PAYLOAD))
                wrong++;
        progress("W3", b->mode, got, W1_MSGS, t0, &last);
    }
    int64_t el = clock_mono_ns() - t0;
    if (rc || got != W1_MSGS || wrong) {
        failed(b, "W3", "%s; %" PRIu64 " of %d messages, %" PRIu64 " differ from what W1 sent",
               verity_strerror(rc), got, W1_MSGS, wrong);
        goto out;
    }
    double sec = el / 1e9;
    emit(b, "W3", "msgs=%d secs=%.3f msgs_per_s=%.0f MB_per_s=%.2f fetch_bytes=%d", W1_MSGS, sec,
         W1_MSGS / sec, W1_MSGS * (double)PAYLOAD / sec / 1e6, W3_FETCH_BYTES);
out:
    verity_consumer_free(c);
    free(pl);
}

/* ---- W3 / W4 through a consumer group ------------------------------------------ */

/* Creates group `name` of b's mode on topic, starting at its first message. */
static int make_group(struct bench *b, const char *topic, char *name, size_t cap)
{
    snprintf(name, cap, "bench-%s-%ld-%lld", b->group, (long)getpid(),
             (long long)(clock_mono_ns() % 1000000000LL));
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = b->broker;
    struct verity_group_admin *ga = NULL;
    int rc = verity_group_admin_new(&conn, &ga);
    if (rc == 0) {
        const char *topics[] = {topic};
        struct verity_group_config gc = {.mode = b->group_mode, .topics = topics, .n_topics = 1};
        rc = verity_group_create(ga, name, &gc, VERITY_GROUP_START_EARLIEST, 0, NULL, NULL);
        if (rc)
            fprintf(stderr, "create group %s: %s\n", name, verity_last_error_message());
    }
    verity_group_admin_free(ga);
    return rc;
}

/* continuous: two fetches out at once (W4's "continuous pull", as the NATS
 * client keeps pull requests outstanding), else one, sent when the
 * application polls (or kept out meanwhile with --prefetch). */
static struct verity_group_consumer *new_member(struct bench *b, const char *group,
                                                const char *topic, uint32_t max_wait_ms,
                                                bool continuous)
{
    const char *topics[] = {topic};
    struct verity_group_consumer_config gc;
    verity_group_consumer_config_default(&gc);
    gc.conn.broker = b->broker;
    gc.group = group;
    gc.topics = topics;
    gc.n_topics = 1;
    gc.member_name = "verity bench";
    gc.fetch_max = W3_BATCH;
    gc.fetch_max_wait_ms = max_wait_ms;
    gc.queue_max = b->prefetch || continuous ? W3_BATCH : 0;
    gc.fetch_inflight = continuous ? 2 : 1;
    struct verity_group_consumer *g = NULL;
    if (verity_group_consumer_new(&gc, &g) != 0)
        return NULL;
    if (verity_group_connect(g, 5000) != 0) {
        verity_group_consumer_free(g, 0);
        return NULL;
    }
    return g;
}

static void w3_group(struct bench *b)
{
    char group[128] = "";
    uint8_t *pl = make_payloads(W1_MSGS);
    struct verity_group_consumer *g = NULL;
    if (!pl || make_group(b, b->w1_topic, group, sizeof group) != 0 ||
        !(g = new_member(b, group, b->w1_topic, 100, false))) {
        failed(b, "W3", "group setup");
        goto out;
    }
    workload_begin(b);
    int64_t t0 = clock_mono_ns(), last = t0;
    uint64_t got = 0, wrong = 0, redelivered = 0, prev = 0;
    int rc = 0;
    int64_t deadline = t0 + 120 * 1000000000LL;
    while (rc == 0 && got < W1_MSGS && clock_mono_ns() < deadline) {
        const struct verity_group_message *m;
        size_t n;
        rc = verity_group_poll(g, 1000, &m, &n);
        for (size_t i = 0; rc == 0 && i < n; i++, got++) {
            /* One partition, one member: W1's messages in offset order. */
            const struct verity_message *x = &m[i].msg;
            if (got >= W1_MSGS || x->value_len != PAYLOAD ||
                memcmp(x->value, pl + got * PAYLOAD, PAYLOAD) || (got && x->offset <= prev))
                wrong++;
            redelivered += m[i].delivery_count != 1;
            prev = x->offset;
        }
        if (rc == 0 && n)
            rc = verity_group_ack_many(g, m, n);
        progress("W3", b->mode, got, W1_MSGS, t0, &last);
    }
    if (rc == 0)
        rc = verity_group_commit(g, 30000); /* every ack confirmed */
    int64_t el = clock_mono_ns() - t0;
    if (rc || got != W1_MSGS || wrong || redelivered) {
        failed(b, "W3", "%s; %" PRIu64 " of %d messages, %" PRIu64 " wrong, %" PRIu64
               " redelivered", verity_strerror(rc), got, W1_MSGS, wrong, redelivered);
        goto out;
    }
    double sec = el / 1e9;
    emit(b, "W3", "msgs=%d secs=%.3f msgs_per_s=%.0f MB_per_s=%.2f group=%s batch=%d prefetch=%d",
         W1_MSGS, sec, W1_MSGS / sec, W1_MSGS * (double)PAYLOAD / sec / 1e6, b->group, W3_BATCH,
         b->prefetch);
out:
    verity_group_consumer_free(g, 5000);
    free(pl);
}

/* ---- W4 --------------------------------------------------------------------- */

struct w4_state {
    struct verity_consumer *c;
    struct verity_group_consumer *g; /* --group: the member instead of c */
    const char *topic;
    int64_t *lat;
    uint64_t got;
    int err;
    int64_t deadline;
    atomic_uint_fast64_t acked;
    atomic_uint_fast64_t ack_errors;
    /* --trace: client times by offset (< TRACE_OFFSETS), 0 = not seen */
    int64_t *t_sent, *t_ack, *t_recv;
    int64_t *t_call; /* --trace: how long each verity_produce call took, by message */
};

#define TRACE_OFFSETS (2 * W4_MSGS) /* data plus the checkpoints' control offsets */

/* Records the latency of one received value; false when it is malformed. */
static bool w4_record(struct w4_state *s, const struct verity_message *m, int64_t recv)
{
    int64_t sent;
    if (m->value_len != PAYLOAD)
        return false;
    memcpy(&sent, m->value, 8);
    if (s->t_recv && m->offset < TRACE_OFFSETS) {
        s->t_sent[m->offset] = sent;
        s->t_recv[m->offset] = recv;
    }
    if (s->got < W4_MSGS)
        s->lat[s->got] = recv - sent;
    s->got++;
    return true;
}

static void *w4_consumer(void *arg)
{
    struct w4_state *s = arg;
    while (s->got < W4_MSGS && clock_mono_ns() < s->deadline) {
        size_t n;
        int rc;
        int64_t recv;
        if (s->g) {
            const struct verity_group_message *m;
            rc = verity_group_poll(s->g, 100, &m, &n);
            recv = clock_mono_ns();
            for (size_t i = 0; rc == 0 && i < n; i++)
                if (!w4_record(s, &m[i].msg, recv))
                    rc = VERITY_ECORRUPT;
            if (rc == 0 && n)
                rc = verity_group_ack_many(s->g, m, n);
        } else {
            const struct verity_message *m;
            rc = verity_consumer_poll(s->c, 100, &m, &n, NULL);
            recv = clock_mono_ns();
            for (size_t i = 0; rc == 0 && i < n; i++)
                if (!w4_record(s, &m[i], recv))
                    rc = VERITY_ECORRUPT;
        }
        if (rc) {
            s->err = rc;
            break;
        }
    }
    if (s->g && s->err == 0)
        s->err = verity_group_commit(s->g, 30000);
    return NULL;
}

static void w4_cb(void *opaque, int err, const struct verity_delivery *d)
{
    struct w4_state *s = opaque;
    if (s->t_ack && !err && d->offset < TRACE_OFFSETS)
        s->t_ack[d->offset] = clock_mono_ns();
    if (err)
        atomic_fetch_add(&s->ack_errors, 1);
    atomic_fetch_add(&s->acked, 1);
}

/* GET path from the admin HTTP server at hostport; the body (malloc'd,
 * NUL-terminated) of a 200 answer, or NULL. */
static char *http_get(const char *hostport, const char *path)
{
    char *body = NULL;
    int st = verity_admin_get(hostport, path, 30000, 256u << 20, &body, NULL);
    if (st != 200) {
        free(body);
        return NULL;
    }
    return body;
}

/* The stages of one message's path, as differences of the times below. */
enum { T_SENT, T_RECV, T_APP0, T_APP1, T_SYNC0, T_SYNC1, T_COMMIT, T_ANSWER, T_ACK, T_DELIVER,
       T_CONSUMED, T_N };
static const struct {
    const char *name;
    int from, to;
} stages[] = {
    {"enqueue_to_broker_recv", T_SENT, T_RECV},  {"recv_to_append", T_RECV, T_APP0},
    {"append", T_APP0, T_APP1},                 {"append_to_sync_start", T_APP1, T_SYNC0},
    {"sync", T_SYNC0, T_SYNC1},                 {"sync_to_commit", T_SYNC1, T_COMMIT},
    {"append_to_commit", T_APP1, T_COMMIT},     {"commit_to_answer", T_COMMIT, T_ANSWER},
    {"answer_to_client_ack", T_ANSWER, T_ACK},  {"commit_to_delivery", T_COMMIT, T_DELIVER},
    {"delivery_to_consumer", T_DELIVER, T_CONSUMED}, {"total_enqueue_to_consumer", T_SENT, T_CONSUMED},
};
#define N_STAGES (sizeof stages / sizeof stages[0])

/* --trace: joins the broker's sampled rows (GET /debug/trace) with the
 * client's times by offset and prints TRACE lines: p50/p99 per stage. */
static void w4_trace(struct bench *b, const struct w4_state *s)
{
    char *body = http_get(b->trace_admin, "/debug/trace");
    if (!body) {
        fprintf(stderr, "[W4] --trace: GET http://%s/debug/trace failed\n", b->trace_admin);
        return;
    }
    size_t cap = 8192, n = 0;
    int64_t (*rows)[T_N] = calloc(cap, sizeof *rows);
    char *save = NULL;
    for (char *line = strtok_r(body, "\n", &save); rows && line && n < cap;
         line = strtok_r(NULL, "\n", &save)) {
        char topic[256];
        unsigned long long off;
        long long v[8];
        if (sscanf(line, "TRACE topic=%255s partition=%*u offset=%llu recv=%lld append0=%lld "
                         "append1=%lld sync0=%lld sync1=%lld commit=%lld answer=%lld deliver=%lld",
                   topic, &off, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 10 ||
            strcmp(topic, s->topic) != 0 || off >= TRACE_OFFSETS || !s->t_recv[off])
            continue;
        int64_t *r = rows[n++];
        r[T_SENT] = s->t_sent[off];
        r[T_RECV] = v[0];
        r[T_APP0] = v[1];
        r[T_APP1] = v[2];
        /* relaxed mode: no sync of its own (the newest one may predate it) */
        r[T_SYNC0] = v[4] >= v[2] ? v[3] : 0;
        r[T_SYNC1] = v[4] >= v[2] ? v[4] : 0;
        r[T_COMMIT] = v[5];
        r[T_ANSWER] = v[6];
        r[T_ACK] = s->t_ack[off];
        r[T_DELIVER] = v[7];
        r[T_CONSUMED] = s->t_recv[off];
    }
    free(body);
    int64_t *d = rows ? malloc(sizeof *d * (n > W4_MSGS ? n : W4_MSGS)) : NULL;
    if (d) {
        /* The client's own part of "enqueue": the verity_produce call
         * (append, and with an idle connection the write itself). */
        memcpy(d, s->t_call, sizeof *d * W4_MSGS);
        qsort(d, W4_MSGS, sizeof *d, cmp_i64);
        double sum = 0;
        for (size_t i = 0; i < W4_MSGS; i++)
            sum += (double)d[i];
        printf("TRACE peer=verity mode=%s workload=W4%s%s stage=produce_call n=%d p50_us=%.1f "
               "p99_us=%.1f mean_us=%.1f max_us=%.1f\n",
               b->mode, b->group ? "-" : "", b->group ? b->group : "", W4_MSGS,
               stats_pct(d, W4_MSGS, 0.5) / 1e3, stats_pct(d, W4_MSGS, 0.99) / 1e3,
               sum / W4_MSGS / 1e3, d[W4_MSGS - 1] / 1e3);
        fprintf(stderr, "  %-26s n=%-5d p50 %8.1f  p99 %8.1f  mean %8.1f\n", "produce_call",
                W4_MSGS, stats_pct(d, W4_MSGS, 0.5) / 1e3, stats_pct(d, W4_MSGS, 0.99) / 1e3,
                sum / W4_MSGS / 1e3);
    }
    fprintf(stderr, "[W4] path of %zu sampled messages (us):\n", n);
    for (size_t k = 0; d && k < N_STAGES; k++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            int64_t a = rows[i][stages[k].from], z = rows[i][stages[k].to];
            if (a && z)
                d[m++] = z - a;
        }
        if (m == 0)
            continue;
        qsort(d, m, sizeof *d, cmp_i64);
        double sum = 0;
        for (size_t i = 0; i < m; i++)
            sum += (double)d[i];
        printf("TRACE peer=verity mode=%s workload=W4%s%s stage=%s n=%zu p50_us=%.1f p99_us=%.1f "
               "mean_us=%.1f max_us=%.1f\n",
               b->mode, b->group ? "-" : "", b->group ? b->group : "", stages[k].name, m,
               stats_pct(d, m, 0.5) / 1e3, stats_pct(d, m, 0.99) / 1e3, sum / (double)m / 1e3,
               d[m - 1] / 1e3);
        fprintf(stderr, "  %-26s n=%-5zu p50 %8.1f  p99 %8.1f  mean %8.1f\n", stages[k].name, m,
                stats_pct(d, m, 0.5) / 1e3, stats_pct(d, m, 0.99) / 1e3, sum / (double)m / 1e3);
    }
    fflush(stdout);
    free(d);
    free(rows);
}

static void w4(struct bench *b)
{
    char topic[96] = "", group[128] = "";
    struct w4_state s = {.topic = topic};
    uint8_t *rnd = make_payloads(1);
    s.lat = malloc(sizeof *s.lat * W4_MSGS);
    if (b->trace_admin) {
        s.t_sent = calloc(TRACE_OFFSETS, sizeof *s.t_sent);
        s.t_ack = calloc(TRACE_OFFSETS, sizeof *s.t_ack);
        s.t_recv = calloc(TRACE_OFFSETS, sizeof *s.t_recv);
        s.t_call = calloc(W4_MSGS, sizeof *s.t_call);
    }
    struct verity_producer *p = new_producer(b);
    bool ok = rnd && s.lat && p &&
              (!b->trace_admin || (s.t_sent && s.t_ack && s.t_recv && s.t_call)) &&
              make_topic(b, "w4", topic, sizeof topic) == 0;
    if (ok && b->group)
        ok = make_group(b, topic, group, sizeof group) == 0 &&
             (s.g = new_member(b, group, topic, 100, true)) != NULL;
    else if (ok)
        ok = (s.c = new_consumer(b, 100)) != NULL &&
             verity_consumer_assign(s.c, topic, 0, VERITY_START_EARLIEST, 0) == 0;
    if (!ok) {
        failed(b, "W4", "setup");
        goto out;
    }
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    int64_t id;
    int16_t epoch;
    for (int i = 0; i < 500; i++) {
        verity_producer_id(p, &id, &epoch);
        if (id > 0)
            break;
        usleep(10000);
    }
    workload_begin(b);
    s.deadline = clock_mono_ns() + (int64_t)(W4_SECS + 10) * 1000000000LL;
    pthread_t th;
    pthread_create(&th, NULL, w4_consumer, &s);
    usleep(200000); /* the consumer is now waiting in a long poll */

    uint8_t pl[PAYLOAD];
    memcpy(pl, rnd, PAYLOAD);
    int64_t max_lag = 0, start = clock_mono_ns() + 1000000, lastsend = start, lastp = start;
    int rc = 0;
    for (long i = 0; i < W4_MSGS && rc == 0; i++) {
        int64_t due = start + i * (1000000000LL / W4_RATE);
        int64_t t = clock_mono_ns();
        if (t < due) {
            sleep_until_ns(due);
            t = clock_mono_ns();
        }
        if (t - due > max_lag)
            max_lag = t - due;
        memcpy(pl, &t, 8);
        struct verity_record r = {.value = pl, .value_len = PAYLOAD};
        rc = verity_produce(p, topic, 0, &r, w4_cb, &s);
        if (s.t_call)
            s.t_call[i] = clock_mono_ns() - t;
        lastsend = t;
        if ((i & 1023) == 0)
            progress("W4", b->mode, (uint64_t)i, W4_MSGS, start, &lastp);
    }
    double send_rate = (W4_MSGS - 1) / ((lastsend - start) / 1e9);
    if (rc == 0)
        rc = verity_producer_flush(p, 30000);
    pthread_join(th, NULL);
    progress("W4", b->mode, W4_MSGS, W4_MSGS, start, &lastp);
    uint64_t got = s.got < W4_MSGS ? s.got : W4_MSGS;
    if (rc || s.err || s.got != W4_MSGS || atomic_load(&s.ack_errors)) {
        failed(b, "W4", "%s / %s; received %" PRIu64 " of %d, %" PRIu64 " ack errors",
               verity_strerror(rc), verity_strerror(s.err), s.got, W4_MSGS,
               (uint64_t)atomic_load(&s.ack_errors));
        goto out;
    }
    char buf[256];
    fmt_lat(buf, sizeof buf, s.lat, got);
    histogram("W4", s.lat, got);
    keep_lat(b, 4, s.lat, got);
    if (b->group)
        emit(b, "W4", "sent=%d recv=%" PRIu64 " send_rate=%.0f max_sched_lag_us=%.0f %s group=%s",
             W4_MSGS, s.got, send_rate, max_lag / 1e3, buf, b->group);
    else
        emit(b, "W4", "sent=%d recv=%" PRIu64 " send_rate=%.0f max_sched_lag_us=%.0f %s", W4_MSGS,
             s.got, send_rate, max_lag / 1e3, buf);
    if (b->trace_admin)
        w4_trace(b, &s);
out:
    verity_producer_free(p, 10000);
    verity_group_consumer_free(s.g, 5000);
    verity_consumer_free(s.c);
    drop_topic(b, topic);
    free(rnd);
    free(s.lat);
    free(s.t_sent);
    free(s.t_ack);
    free(s.t_recv);
    free(s.t_call);
}

/* ---- --plot ----------------------------------------------------------------- */

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define PEER_RUNS 32

/* One peer/mode/workload of the --peers file: its runs' figures. */
struct peer_fig {
    char peer[24], mode[16], wl[8];
    double v[4][PEER_RUNS]; /* p50, p99, p999, max */
    size_t runs;
};

static double median_of(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_dbl);
    return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Reads RESULT lines (bench-peers' results-*.txt, or saved `verity bench`
 * output) into figs; returns how many figures, -1 when the file cannot be
 * read. Lines it does not understand are skipped. */
static int read_peers(const char *path, struct peer_fig *figs, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[1024];
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "RESULT ", 7) != 0)
            continue;
        char peer[24] = "", mode[16] = "", wl[8] = "";
        double v[4] = {0, 0, 0, 0};
        static const char *const keys[4] = {"p50_us=", "p99_us=", "p999_us=", "max_us="};
        char *save = NULL;
        for (char *t = strtok_r(line + 7, " \n", &save); t; t = strtok_r(NULL, " \n", &save)) {
            if (strncmp(t, "peer=", 5) == 0)
                snprintf(peer, sizeof peer, "%s", t + 5);
            else if (strncmp(t, "mode=", 5) == 0)
                snprintf(mode, sizeof mode, "%s", t + 5);
            else if (strncmp(t, "workload=", 9) == 0)
                snprintf(wl, sizeof wl, "%s", t + 9);
            for (int k = 0; k < 4; k++)
                if (strncmp(t, keys[k], strlen(keys[k])) == 0)
                    v[k] = strtod(t + strlen(keys[k]), NULL);
        }
        if (!peer[0] || (strcmp(wl, "W2") != 0 && strcmp(wl, "W4") != 0) || v[1] <= 0)
            continue;
        size_t i = 0;
        while (i < n && (strcmp(figs[i].peer, peer) || strcmp(figs[i].mode, mode) ||
                         strcmp(figs[i].wl, wl)))
            i++;
        if (i == n) {
            if (n == cap)
                continue;
            memset(&figs[n], 0, sizeof figs[n]);
            snprintf(figs[n].peer, sizeof figs[n].peer, "%s", peer);
            snprintf(figs[n].mode, sizeof figs[n].mode, "%s", mode);
            snprintf(figs[n].wl, sizeof figs[n].wl, "%s", wl);
            n++;
        }
        if (figs[i].runs < PEER_RUNS) {
            for (int k = 0; k < 4; k++)
                figs[i].v[k][figs[i].runs] = v[k];
            figs[i].runs++;
        }
    }
    fclose(f);
    return (int)n;
}

/* Writes --plot: W2 and W4 of this run, with the peers' medians of the same
 * mode (relaxed also shows NATS' only mode) beside them. */
static int write_plot(struct bench *b)
{
    struct peer_fig figs[32];
    int nf = 0;
    if (b->peers && (nf = read_peers(b->peers, figs, 32)) < 0) {
        fprintf(stderr, "verity bench: --peers %s: %s\n", b->peers, strerror(errno));
        return -1;
    }
    struct latplot_panel panels[2];
    size_t np = 0;
    for (int w = 2; w <= 4; w += 2) {
        if (!b->kept_n[w])
            continue;
        struct latplot_panel *pn = &panels[np++];
        memset(pn, 0, sizeof *pn);
        snprintf(pn->title, sizeof pn->title, "W%d %s%s%s", w, b->mode, b->group ? ", group " : "",
                 b->group ? b->group : "");
        struct latplot_series *s = &pn->s[pn->ns++];
        snprintf(s->name, sizeof s->name, "verity %s", b->mode);
        s->sorted_ns = b->kept[w];
        s->n = b->kept_n[w];
        for (int i = 0; i < nf && pn->ns < 8; i++) {
            struct peer_fig *fg = &figs[i];
            bool same = strcmp(fg->mode, b->mode) == 0 ||
                        (strcmp(b->mode, "relaxed") == 0 && strcmp(fg->mode, "default") == 0);
            if (fg->wl[1] - '0' != w || !same)
                continue;
            s = &pn->s[pn->ns++];
            snprintf(s->name, sizeof s->name, "%s %s (median of %zu)", fg->peer, fg->mode, fg->runs);
            s->n = w == 2 ? W2_MSGS : W4_MSGS;
            s->p50_us = median_of(fg->v[0], fg->runs);
            s->p99_us = median_of(fg->v[1], fg->runs);
            s->p999_us = median_of(fg->v[2], fg->runs);
            s->max_us = median_of(fg->v[3], fg->runs);
        }
    }
    if (np == 0) {
        fprintf(stderr, "verity bench: --plot: no W2 or W4 latencies to plot\n");
        return -1;
    }
    FILE *f = fopen(b->plot, "w");
    if (!f) {
        fprintf(stderr, "verity bench: --plot %s: %s\n", b->plot, strerror(errno));
        return -1;
    }
    char title[160];
    snprintf(title, sizeof title, "verity bench, mode %s; latency in us by percentile%s%s", b->mode,
             b->peers ? "; peers from " : "", b->peers ? b->peers : "");
    latplot_svg(f, title, panels, np);
    if (fclose(f) != 0) {
        fprintf(stderr, "verity bench: --plot %s: %s\n", b->plot, strerror(errno));
        return -1;
    }
    fprintf(stderr, "[plot] wrote %s\n", b->plot);
    return 0;
}

/* ---- command line --------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity bench [--broker HOST:PORT] [--workload W1|W2|W3|W4|all|LIST]\n"
            "                    [--mode durable|relaxed] [--broker-pid PID] [--keep] [--json]\n"
            "                    [--group ordered|shared [--prefetch]] [--plot FILE.svg [--peers FILE]]\n"
            "                    [--trace ADMIN_HOST:PORT] [--replicas 1|3|5]\n"
            "Runs the peer benchmark's workloads (bench-peers/README.md) against a broker:\n"
            "  W1  %d x %d-byte messages, at most %d unacknowledged\n"
            "  W2  %d messages one at a time (latency)\n"
            "  W3  read W1's %d messages back (runs W1 first when not selected)\n"
            "  W4  %d messages at %d/s, end-to-end latency to a following consumer\n"
            "LIST is comma separated (W1,W3). --mode: durable = topic durability always,\n"
            "relaxed = os. --broker-pid adds the broker's and this client's CPU seconds\n"
            "(srv_cpu_s, cli_cpu_s).\n"
            "--group runs W3 and W4 through a consumer group of that mode (fetch up to %d,\n"
            "ack each batch with the next fetch); --prefetch keeps one fetch out meanwhile.\n"
            "--plot writes an SVG of W2's and W4's latency by percentile; --peers adds the\n"
            "medians of the RESULT lines in FILE (bench-peers results-*.txt) of the same mode.\n"
            "--trace joins W4's client times with the broker's sampled path trace (verityd\n"
            "--trace-sample N, GET /debug/trace on its admin port) and prints TRACE lines:\n"
            "p50/p99 per stage (enqueue, broker receive, append, sync, commit, answer, ack,\n"
            "delivery, consumer).\n"
            "--replicas: on a cluster (--broker a,b,c), the topics' replication factor.\n"
            "Prints RESULT lines (JSON lines with --json) on stdout, progress on stderr.\n"
            "exit: 0 ok, 1 a workload failed, 2 usage, 3 broker unreachable\n",
            W1_MSGS, PAYLOAD, W1_WINDOW, W2_MSGS, W1_MSGS, W4_MSGS, W4_RATE, W3_BATCH);
}

enum { OPT_BROKER = 256, OPT_WORKLOAD, OPT_MODE, OPT_PID, OPT_KEEP, OPT_JSON, OPT_HELP,
       OPT_GROUP, OPT_PREFETCH, OPT_PLOT, OPT_PEERS, OPT_TRACE, OPT_REPLICAS };

static const struct option long_opts[] = {
    {"broker", required_argument, NULL, OPT_BROKER},
    {"workload", required_argument, NULL, OPT_WORKLOAD},
    {"mode", required_argument, NULL, OPT_MODE},
    {"broker-pid", required_argument, NULL, OPT_PID},
    {"keep", no_argument, NULL, OPT_KEEP},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {"group", required_argument, NULL, OPT_GROUP},
    {"prefetch", no_argument, NULL, OPT_PREFETCH},
    {"plot", required_argument, NULL, OPT_PLOT},
    {"peers", required_argument, NULL, OPT_PEERS},
    {"trace", required_argument, NULL, OPT_TRACE},
    {"replicas", required_argument, NULL, OPT_REPLICAS},
    {NULL, 0, NULL, 0},
};

/* Parses "W1,W3" / "all" into want[1..4]. */
static bool parse_workloads(const char *s, bool want[5])
{
    if (strcmp(s, "all") == 0) {
        want[1] = want[2] = want[3] = want[4] = true;
        return true;
    }
    char buf[64];
    if (strlen(s) >= sizeof buf)
        return false;
    strcpy(buf, s);
    char *save = NULL;
    bool any = false;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if ((t[0] != 'W' && t[0] != 'w') || t[1] < '1' || t[1] > '4' || t[2])
            return false;
        want[t[1] - '0'] = any = true;
    }
    return any;
}

int cmd_bench(int argc, char **argv)
{
    struct bench b = {.mode = "durable", .durability = VERITY_DURABILITY_ALWAYS};
    bool want[5] = {false, true, true, true, true};
    char *end;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = CLI_GETOPT(argc, argv, "h", long_opts)) != -1) {
        switch (c) {
        case OPT_BROKER:
            b.broker = optarg;
            break;
        case OPT_REPLICAS:
            b.replicas = (uint32_t)strtoul(optarg, &end, 10);
            if (*end || (b.replicas != 1 && b.replicas != 3 && b.replicas != 5))
                goto bad;
            break;
        case OPT_WORKLOAD:
            memset(want, 0, sizeof want);
            if (!parse_workloads(optarg, want))
                goto bad;
            break;
        case OPT_MODE:
            if (strcmp(optarg, "durable") == 0) {
                b.mode = "durable";
                b.durability = VERITY_DURABILITY_ALWAYS;
            } else if (strcmp(optarg, "relaxed") == 0) {
                b.mode = "relaxed";
                b.durability = VERITY_DURABILITY_OS;
            } else {
                goto bad;
            }
            break;
        case OPT_PID:
            errno = 0;
            b.broker_pid = strtol(optarg, &end, 10);
            if (!optarg[0] || *end || errno || b.broker_pid <= 0)
                goto bad;
            break;
        case OPT_KEEP:
            b.keep = true;
            break;
        case OPT_JSON:
            b.json = true;
            break;
        case OPT_GROUP:
            if (verity_group_mode_parse(optarg, &b.group_mode) != 0)
                goto bad;
            b.group = verity_group_mode_name(b.group_mode);
            break;
        case OPT_PREFETCH:
            b.prefetch = true;
            break;
        case OPT_PLOT:
            b.plot = optarg;
            break;
        case OPT_PEERS:
            b.peers = optarg;
            break;
        case OPT_TRACE:
            b.trace_admin = optarg;
            break;
        case OPT_HELP:
        case 'h':
            usage(stdout);
            return CMD_EXIT_OK;
        default:
            goto bad;
        }
    }
    if (optind != argc || (b.prefetch && !b.group) || (b.peers && !b.plot))
        goto bad;

    if (b.peers && access(b.peers, R_OK) != 0) {
        fprintf(stderr, "verity bench: --peers %s: %s\n", b.peers, strerror(errno));
        return CMD_EXIT_FAIL;
    }
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = b.broker;
    int rc = verity_client_new(&conn, &b.admin);
    if (rc) {
        fprintf(stderr, "verity bench: %s: %s\n", verity_broker_resolve(b.broker),
                cli_strerror(verity_broker_resolve(b.broker), rc));
        return rc == VERITY_EINVAL ? CMD_EXIT_USAGE : CMD_EXIT_FAIL;
    }
    if ((rc = verity_client_connect(b.admin, 5000)) != 0) {
        fprintf(stderr, "verity bench: cannot reach broker %s: %s\n",
                verity_broker_resolve(b.broker), cli_strerror(verity_broker_resolve(b.broker), rc));
        verity_client_free(b.admin);
        return EXIT_UNREACHABLE;
    }
    /* W3 alone still needs W1's messages: W1 runs (and reports) first. */
    if (want[1] || want[3])
        w1(&b);
    if (want[3] && b.group)
        w3_group(&b);
    else if (want[3])
        w3(&b);
    drop_topic(&b, b.w1_topic);
    if (want[2])
        w2(&b);
    if (want[4])
        w4(&b);
    verity_client_free(b.admin);
    if (b.plot && write_plot(&b) != 0)
        b.failed = true;
    for (int i = 0; i < 5; i++)
        free(b.kept[i]);
    return b.failed ? CMD_EXIT_FAIL : CMD_EXIT_OK;
bad:
    return cli_bad_args("verity bench", c, long_opts, argv, usage);
}
