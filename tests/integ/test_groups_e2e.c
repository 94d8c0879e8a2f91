/*
 * Consumer groups end to end: a real verityd from $VERITY_BIN_DIR on a free
 * loopback port with a mkdtemp data directory, real member processes, the
 * verity CLI.
 *
 * kill_mid_batch (ordered and shared): a 4-partition topic of 200,000
 * messages (20,000 with VERITY_TEST_QUICK=1) is read by three member
 * processes (this binary re-executed as "member"). Each member writes what
 * it received (partition, offset, delivery count, the id in the value) to
 * its own file before acking, and what the broker confirmed as acked from
 * its result callback; both files survive a kill -9. Once member 0 has
 * received a tenth of the messages it confirms its earlier acks, records
 * its current batch and stops with that batch leased: the test kills it
 * with SIGKILL. Afterwards:
 *   - every message is acknowledged exactly once (confirmed acks, all
 *     members together), and the ids are what the producer wrote there;
 *   - what the killed member held (received, never acked) was delivered
 *     to the others with delivery count 2, and nothing else was delivered
 *     twice;
 *   - ordered mode: every member received each partition's offsets in
 *     strictly increasing order.
 *
 * poison_message_dead_lettered_and_replayed: a member that always nacks one
 * message sends it to the dead-letter topic after max_deliveries; the dead
 * letter's headers name source topic, partition, offset, group, delivery
 * count and the last error; `verity dlq replay` moves it back to the source
 * topic (a second replay moves nothing); `verity dlq list` then shows none.
 *
 * ordered_rebalance_moves_leased_partitions: in-process members. A holds a
 * batch without acking it when B joins; the partitions that move to B take
 * A's leases with them. A learns the new assignment from its next fetch
 * (the generation changed); B fetches once, getting A's returned leases
 * with a raised delivery count, and holds them; then A acks its batch: the
 * acks of what B now holds fail (ELEASE), the rest succeed (A is their
 * owner, or their last holder while they wait). Everything ends acked,
 * nobody gets a message after another member's answered ack, and each
 * member sees every partition in increasing offset order.
 *
 * deleted_group_stops_member: a member joins (member callback), a join
 * naming a topic the group does not read is refused, and once the group is
 * deleted the member's poll reports VERITY_ENOTFOUND.
 *
 * cli_group_commands: `verity consume --group`, `verity group
 * list|describe|pending|reset|delete` with --json, and the exit codes
 * (1 refused, 2 usage, 3 unreachable).
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "tests/integ/test_broker_util.h"
#include "tests/support/tutil.h"
#include "verity/group.h"
#include "verity/verity.h"

#define PARTS 4
#define MEMBERS 3
#define VALUE_LEN 64
#define SESSION_MS 1500
#define RUN_TIMEOUT_MS 90000

static struct bh br;
static char addr[64];
static char self_exe[512];

/* ---- records the members write ----------------------------------------------- */

struct recv_rec {                 /* one message received */
    uint32_t partition;
    uint32_t delivery_count;
    uint64_t offset;
    uint64_t id;
};

struct ack_rec {                  /* a range the broker confirmed as acked */
    uint32_t partition;
    uint32_t count;
    uint64_t first;
};

static int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
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

/* ---- the member process ------------------------------------------------------ */

static volatile sig_atomic_t member_stop;

static void member_on_term(int sig)
{
    (void)sig;
    member_stop = 1;
}

struct member {
    int ack_fd;
    atomic_uint_fast64_t ack_failures;
};

static void member_result(void *opaque, int err, const struct verity_group_result *r)
{
    struct member *m = opaque;
    if (r->op != VERITY_GROUP_OP_ACK)
        return;
    if (err) {
        atomic_fetch_add(&m->ack_failures, 1);
        return;
    }
    struct ack_rec a = {r->partition, r->count, r->first_offset};
    if (write_all(m->ack_fd, &a, sizeof a) != 0)
        _exit(20);
}

/*
 * member BROKER GROUP TOPIC DIR INDEX KILL_AFTER
 * Protocol on stdin/stdout: prints "J" once joined, waits for one byte on
 * stdin before fetching; a member with KILL_AFTER > 0 prints "M" and stops
 * with its current batch leased once it has received KILL_AFTER messages.
 */
static int member_main(int argc, char **argv)
{
    if (argc != 8)
        return 2;
    const char *broker = argv[2], *group = argv[3], *topic = argv[4], *dir = argv[5];
    int idx = atoi(argv[6]);
    long long kill_after = atoll(argv[7]);
    char path[600];
    struct member m = {0};
    snprintf(path, sizeof path, "%s/m%d.ack", dir, idx);
    m.ack_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
    snprintf(path, sizeof path, "%s/m%d.recv", dir, idx);
    int recv_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
    if (m.ack_fd < 0 || recv_fd < 0)
        return 3;
    struct sigaction sa = {.sa_handler = member_on_term};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);

    const char *topics[] = {topic};
    struct verity_group_consumer_config cfg;
    verity_group_consumer_config_default(&cfg);
    cfg.conn.broker = broker;
    cfg.group = group;
    cfg.topics = topics;
    cfg.n_topics = 1;
    char name[32];
    snprintf(name, sizeof name, "member-%d", idx);
    cfg.member_name = name;
    cfg.fetch_max = 1000;
    cfg.fetch_max_wait_ms = 200;
    cfg.queue_max = 0; /* lease only while polling: the victim holds one batch */
    cfg.result_cb = member_result;
    cfg.opaque = &m;
    struct verity_group_consumer *g = NULL;
    if (verity_group_consumer_new(&cfg, &g) != 0 || verity_group_connect(g, 10000) != 0)
        return 4;
    if (write_all(1, "J\n", 2) != 0)
        return 5;
    char go;
    if (read(0, &go, 1) != 1)
        return 6;

    struct recv_rec *recs = malloc(sizeof *recs * 65536);
    uint64_t received = 0;
    int rc = 0;
    while (!member_stop && rc == 0) {
        const struct verity_group_message *msgs;
        size_t n = 0;
        rc = verity_group_poll(g, 500, &msgs, &n);
        if (rc || n == 0)
            continue;
        for (size_t i = 0; i < n; i++) {
            uint64_t id = UINT64_MAX;
            if (msgs[i].msg.value_len == VALUE_LEN)
                memcpy(&id, msgs[i].msg.value, 8);
            recs[i] = (struct recv_rec){msgs[i].msg.partition, msgs[i].delivery_count,
                                        msgs[i].msg.offset, id};
        }
        received += n;
        bool victim = kill_after > 0 && received >= (uint64_t)kill_after;
        if (victim) {
            /* Everything acked before this batch is confirmed and on file. */
            if (verity_group_commit(g, 10000) != 0)
                return 7;
        }
        if (write_all(recv_fd, recs, n * sizeof *recs) != 0)
            return 8;
        if (victim) {
            if (write_all(1, "M\n", 2) != 0)
                return 9;
            for (;;)
                pause(); /* holding this batch's leases until SIGKILL */
        }
        rc = verity_group_ack_many(g, msgs, n);
    }
    if (rc == 0)
        rc = verity_group_commit(g, 10000);
    verity_group_consumer_free(g, 5000);
    free(recs);
    close(recv_fd);
    close(m.ack_fd);
    return rc ? 10 : 0;
}

/* ---- the test's side ------------------------------------------------------- */

struct proc {
    pid_t pid;
    int to;    /* its stdin */
    int from;  /* its stdout */
};

static int spawn_member(struct proc *p, const char *group, const char *topic, const char *dir,
                        int idx, uint64_t kill_after)
{
    int in[2], out[2];
    if (pipe(in) || pipe(out))
        return -1;
    char sidx[16], skill[32];
    snprintf(sidx, sizeof sidx, "%d", idx);
    snprintf(skill, sizeof skill, "%" PRIu64, kill_after);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execl(self_exe, self_exe, "member", addr, group, topic, dir, sidx, skill, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->pid = pid;
    p->to = in[1];
    p->from = out[0];
    return 0;
}

/* Reads one status letter from a member within timeout_ms; 0 on timeout/EOF. */
static char read_status(struct proc *p, int timeout_ms)
{
    struct pollfd pf = {.fd = p->from, .events = POLLIN};
    if (poll(&pf, 1, timeout_ms) <= 0)
        return 0;
    char buf[2];
    return read(p->from, buf, 2) >= 1 ? buf[0] : 0;
}

/* Stops a member by PID: sig, then SIGKILL if it has not exited in 10 s.
 * Returns its exit status (128+signal when killed). */
static int stop_proc(struct proc *p, int sig)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    int st = 0;
    for (int i = 0; i < 1000; i++) {
        if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
            p->pid = 0;
            break;
        }
        usleep(10000);
    }
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
        p->pid = 0;
    }
    close(p->to);
    close(p->from);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Reads a whole file; *n gets the byte count. NULL when missing. */
static void *slurp(const char *path, size_t *n)
{
    *n = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return NULL;
    }
    uint8_t *buf = malloc((size_t)st.st_size + 1);
    size_t got = 0;
    while (buf && got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    *n = got;
    return buf;
}

/* Runs the verity CLI with args (NULL-terminated), stdout to out_path (may
 * be NULL), stdin from in_path (may be NULL); returns its exit status, -1 on
 * a timeout (it is killed). */
static int run_cli(const char *const *args, const char *out_path, const char *in_path,
                   int timeout_ms)
{
    const char *bin_dir = getenv("VERITY_BIN_DIR");
    char bin[512];
    snprintf(bin, sizeof bin, "%s/verity", bin_dir ? bin_dir : "build/bin");
    const char *argv[32] = {bin};
    int argc = 1;
    for (int i = 0; args[i] && argc < 31; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0)
            dup2(fd, 1);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 2);
        int in = open(in_path ? in_path : "/dev/null", O_RDONLY);
        if (in >= 0)
            dup2(in, 0);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int64_t deadline = bh_mono_ms() + timeout_ms;
    int st = 0;
    while (bh_mono_ms() < deadline) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* ---- setup helpers ---------------------------------------------------------- */

struct produced {
    uint64_t *id_at[PARTS];       /* per partition, offset -> id + 1 (0: no message) */
    uint64_t hwm[PARTS];
    uint64_t n;
};

struct prod_state {
    uint64_t *off_of;             /* id -> offset */
    uint32_t *part_of;
    atomic_uint_fast64_t acked;
    atomic_uint_fast64_t errors;
};

static struct prod_state *g_prod;

static void on_produced_id(void *opaque, int err, const struct verity_delivery *d)
{
    uint64_t id = (uintptr_t)opaque;
    if (err) {
        atomic_fetch_add(&g_prod->errors, 1);
        return;
    }
    g_prod->off_of[id] = d->offset;
    g_prod->part_of[id] = d->partition;
    atomic_fetch_add(&g_prod->acked, 1);
}

/* Creates topic with PARTS partitions and writes n messages: id i goes to
 * partition i % PARTS, value = id (8 bytes) + filler. Fills *out. */
static int produce_topic(const char *topic, uint64_t n, struct produced *out)
{
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = addr;
    struct verity_client *c = NULL;
    struct verity_topic_config tc = {.partitions = PARTS};
    if (verity_client_new(&conn, &c) || verity_client_connect(c, 10000) ||
        verity_topic_create(c, topic, &tc, NULL)) {
        verity_client_free(c);
        return -1;
    }
    struct prod_state s = {.off_of = calloc(n, sizeof(uint64_t)),
                           .part_of = calloc(n, sizeof(uint32_t))};
    g_prod = &s;
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = addr;
    pc.idempotence = true;
    struct verity_producer *p = NULL;
    int rc = s.off_of && s.part_of ? verity_producer_new(&pc, &p) : -ENOMEM;
    uint8_t value[VALUE_LEN];
    memset(value, 'v', sizeof value);
    for (uint64_t i = 0; rc == 0 && i < n; i++) {
        memcpy(value, &i, 8);
        struct verity_record r = {.value = value, .value_len = VALUE_LEN};
        rc = verity_produce(p, topic, (int32_t)(i % PARTS), &r, on_produced_id,
                            (void *)(uintptr_t)i);
    }
    if (rc == 0)
        rc = verity_producer_flush(p, 60000);
    verity_producer_free(p, 10000);
    if (rc == 0 && (atomic_load(&s.acked) != n || atomic_load(&s.errors)))
        rc = -EIO;
    struct verity_topic_info *t = NULL;
    if (rc == 0 && (rc = verity_topic_describe(c, topic, &t)) == 0) {
        for (uint32_t p2 = 0; p2 < PARTS; p2++) {
            out->hwm[p2] = t->partitions[p2].high_watermark;
            out->id_at[p2] = calloc(out->hwm[p2] + 1, sizeof(uint64_t));
        }
        verity_topic_info_free(t, 1);
        for (uint64_t i = 0; i < n; i++) {
            uint32_t pp = s.part_of[i];
            if (pp >= PARTS || s.off_of[i] >= out->hwm[pp] || !out->id_at[pp]) {
                rc = -EIO;
                break;
            }
            out->id_at[pp][s.off_of[i]] = i + 1;
        }
        out->n = n;
    }
    free(s.off_of);
    free(s.part_of);
    verity_client_free(c);
    return rc;
}

static void produced_free(struct produced *p)
{
    for (int i = 0; i < PARTS; i++)
        free(p->id_at[i]);
    memset(p, 0, sizeof *p);
}

static int create_group(const char *name, const char *topic, enum verity_group_mode mode,
                        int64_t session_ms, uint32_t max_deliveries, bool no_backoff)
{
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = addr;
    struct verity_group_admin *ga = NULL;
    const char *topics[] = {topic};
    struct verity_group_config gc = {.mode = mode,
                                     .topics = topics,
                                     .n_topics = 1,
                                     .session_ms = session_ms,
                                     .max_deliveries = max_deliveries};
    if (no_backoff) {
        gc.n_backoff = 1;
        gc.backoff_ms[0] = 0;
    }
    int rc = verity_group_admin_new(&conn, &ga);
    if (rc == 0)
        rc = verity_group_admin_connect(ga, 10000);
    if (rc == 0)
        rc = verity_group_create(ga, name, &gc, VERITY_GROUP_START_EARLIEST, 0, NULL, NULL);
    verity_group_admin_free(ga);
    return rc;
}

/* ---- kill mid-batch ------------------------------------------------------------ */

static uint64_t messages(void)
{
    return tu_quick() ? 20000 : 200000;
}

struct tally {
    uint8_t *acks[PARTS];         /* confirmed acks per offset */
    uint64_t acked_distinct;
};

/* Reads new ack records of member file path from *pos on into t. */
static void tally_acks(struct tally *t, const struct produced *pr, const char *path, size_t *pos)
{
    size_t n;
    uint8_t *buf = slurp(path, &n);
    if (!buf)
        return;
    size_t end = n - n % sizeof(struct ack_rec);
    for (; *pos < end; *pos += sizeof(struct ack_rec)) {
        struct ack_rec a;
        memcpy(&a, buf + *pos, sizeof a);
        for (uint64_t o = a.first; a.partition < PARTS && o < a.first + a.count; o++) {
            if (o >= pr->hwm[a.partition])
                continue;
            if (t->acks[a.partition][o]++ == 0)
                t->acked_distinct++;
        }
    }
    free(buf);
}

static void run_kill_mid_batch(enum verity_group_mode mode)
{
    const char *mname = verity_group_mode_name(mode);
    char topic[64], group[64], dir[300];
    snprintf(topic, sizeof topic, "e2e-%s", mname);
    snprintf(group, sizeof group, "g-%s", mname);
    snprintf(dir, sizeof dir, "%s/%s", br.root, mname);
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0755), 0);
    uint64_t n = messages();
    struct produced pr = {0};
    CU_ASSERT_EQUAL_FATAL(produce_topic(topic, n, &pr), 0);
    CU_ASSERT_EQUAL_FATAL(create_group(group, topic, mode, SESSION_MS, 0, false), 0);

    struct proc members[MEMBERS] = {0};
    for (int i = 0; i < MEMBERS; i++)
        CU_ASSERT_EQUAL_FATAL(spawn_member(&members[i], group, topic, dir, i, i == 0 ? n / 10 : 0),
                              0);
    /* Everyone joins before anyone fetches, so no join moves a partition
     * with leases on it. */
    for (int i = 0; i < MEMBERS; i++)
        CU_ASSERT_EQUAL_FATAL(read_status(&members[i], 15000), 'J');
    for (int i = 0; i < MEMBERS; i++)
        CU_ASSERT_EQUAL_FATAL(write(members[i].to, "G", 1), 1);
    char st = read_status(&members[0], RUN_TIMEOUT_MS);
    CU_ASSERT_EQUAL(st, 'M');
    kill(members[0].pid, SIGKILL);
    CU_ASSERT_EQUAL(stop_proc(&members[0], SIGKILL), 128 + SIGKILL);

    /* Until every message is acknowledged (confirmed by the broker). */
    struct tally t = {0};
    for (int p = 0; p < PARTS; p++)
        t.acks[p] = calloc(pr.hwm[p] + 1, 1);
    size_t pos[MEMBERS] = {0};
    int64_t deadline = bh_mono_ms() + RUN_TIMEOUT_MS;
    while (t.acked_distinct < n && bh_mono_ms() < deadline) {
        for (int i = 0; i < MEMBERS; i++) {
            char path[600];
            snprintf(path, sizeof path, "%s/m%d.ack", dir, i);
            tally_acks(&t, &pr, path, &pos[i]);
        }
        usleep(50000);
    }
    for (int i = 1; i < MEMBERS; i++)
        CU_ASSERT_EQUAL(stop_proc(&members[i], SIGTERM), 0);
    for (int i = 0; i < MEMBERS; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/m%d.ack", dir, i);
        tally_acks(&t, &pr, path, &pos[i]);
    }

    /* Every message acknowledged exactly once; no control offset acked. */
    uint64_t once = 0, twice = 0, missing = 0, stray = 0;
    for (int p = 0; p < PARTS; p++)
        for (uint64_t o = 0; o < pr.hwm[p]; o++) {
            bool msg = pr.id_at[p][o] != 0;
            uint8_t a = t.acks[p][o];
            if (!msg && a)
                stray++;
            else if (msg && a == 0)
                missing++;
            else if (msg && a == 1)
                once++;
            else if (msg)
                twice++;
        }
    fprintf(stderr, "\n[%s] %" PRIu64 " messages: acked once %" PRIu64 ", more %" PRIu64
                    ", never %" PRIu64 ", stray %" PRIu64 "\n",
            mname, n, once, twice, missing, stray);
    CU_ASSERT_EQUAL(once, n);
    CU_ASSERT_EQUAL(twice, 0);
    CU_ASSERT_EQUAL(missing, 0);
    CU_ASSERT_EQUAL(stray, 0);

    /* Receipts: ids right; the victim's unacked batch went to the others
     * with count 2; nothing else came twice; ordered: increasing offsets. */
    /* victim_held: bit 0 the victim held it unacked at the kill, bit 1
     * another member received it with delivery count 2. */
    uint8_t *victim_held[PARTS];
    for (int p = 0; p < PARTS; p++)
        victim_held[p] = calloc(pr.hwm[p] + 1, 1);
    uint64_t wrong_id = 0, victim_unacked = 0, redelivered_ok = 0, redelivered_other = 0;
    uint64_t order_breaks = 0, victim_recv = 0;
    for (int i = 0; i < MEMBERS; i++) {
        char path[600];
        size_t len;
        snprintf(path, sizeof path, "%s/m%d.recv", dir, i);
        struct recv_rec *r = slurp(path, &len);
        size_t cnt = len / sizeof *r;
        uint64_t last[PARTS];
        bool any[PARTS] = {false};
        for (size_t k = 0; r && k < cnt; k++) {
            uint32_t p = r[k].partition;
            if (p >= PARTS || r[k].offset >= pr.hwm[p] ||
                pr.id_at[p][r[k].offset] != r[k].id + 1) {
                wrong_id++;
                continue;
            }
            if (mode == VERITY_GROUP_ORDERED && any[p] && r[k].offset <= last[p])
                order_breaks++;
            any[p] = true;
            last[p] = r[k].offset;
            if (i == 0)
                victim_recv++;
            if (i > 0 && r[k].delivery_count == 2)
                victim_held[p][r[k].offset] |= 2;
            else if (r[k].delivery_count != 1)
                redelivered_other++;
        }
        free(r);
    }
    /* The victim's held batch: what it received but never confirmed acked. */
    {
        char path[600];
        size_t len, alen;
        snprintf(path, sizeof path, "%s/m0.recv", dir);
        struct recv_rec *r = slurp(path, &len);
        snprintf(path, sizeof path, "%s/m0.ack", dir);
        struct ack_rec *a = slurp(path, &alen);
        uint8_t *vacked[PARTS];
        for (int p = 0; p < PARTS; p++)
            vacked[p] = calloc(pr.hwm[p] + 1, 1);
        for (size_t k = 0; a && k < alen / sizeof *a; k++)
            for (uint64_t o = a[k].first; a[k].partition < PARTS && o < a[k].first + a[k].count &&
                                          o < pr.hwm[a[k].partition];
                 o++)
                vacked[a[k].partition][o] = 1;
        for (size_t k = 0; r && k < len / sizeof *r; k++) {
            uint32_t p = r[k].partition;
            if (p < PARTS && r[k].offset < pr.hwm[p] && !vacked[p][r[k].offset])
                victim_held[p][r[k].offset] |= 1;
        }
        for (int p = 0; p < PARTS; p++)
            free(vacked[p]);
        free(r);
        free(a);
    }
    uint64_t held_not_redelivered = 0, count2_not_held = 0;
    for (int p = 0; p < PARTS; p++)
        for (uint64_t o = 0; o < pr.hwm[p]; o++) {
            uint8_t v = victim_held[p][o];
            if (v & 1)
                victim_unacked++;
            if (v == 3)
                redelivered_ok++;
            else if (v == 1)
                held_not_redelivered++;
            else if (v == 2)
                count2_not_held++;
        }
    fprintf(stderr, "[%s] victim received %" PRIu64 ", held unacked at the kill %" PRIu64
                    ", redelivered with count 2 %" PRIu64 ", other redeliveries %" PRIu64
                    ", ordered breaks %" PRIu64 "\n",
            mname, victim_recv, victim_unacked, redelivered_ok, redelivered_other, order_breaks);
    CU_ASSERT_EQUAL(wrong_id, 0);
    CU_ASSERT(victim_recv >= n / 10);
    CU_ASSERT(victim_unacked > 0);
    CU_ASSERT_EQUAL(held_not_redelivered, 0);
    CU_ASSERT_EQUAL(count2_not_held, 0);
    CU_ASSERT_EQUAL(redelivered_ok, victim_unacked);
    CU_ASSERT_EQUAL(redelivered_other, 0);
    CU_ASSERT_EQUAL(order_breaks, 0);
    for (int p = 0; p < PARTS; p++) {
        free(victim_held[p]);
        free(t.acks[p]);
    }
    produced_free(&pr);
}

static void test_ordered_kill_mid_batch(void)
{
    run_kill_mid_batch(VERITY_GROUP_ORDERED);
}

static void test_shared_kill_mid_batch(void)
{
    run_kill_mid_batch(VERITY_GROUP_SHARED);
}

/* ---- poison message ------------------------------------------------------------ */

#define POISON_ID 5
#define POISON_MSGS 10
#define POISON_DELIVERIES 3

struct poison_state {
    atomic_int dead_lettered;     /* nack answered with dead_lettered */
    atomic_int nacks;
    atomic_int errors;
};

static void poison_result(void *opaque, int err, const struct verity_group_result *r)
{
    struct poison_state *s = opaque;
    if (err)
        atomic_fetch_add(&s->errors, 1);
    if (r->op == VERITY_GROUP_OP_NACK) {
        atomic_fetch_add(&s->nacks, 1);
        if (r->dead_lettered)
            atomic_fetch_add(&s->dead_lettered, 1);
    }
}

/* Reads every record of topic/partition 0 (at most cap) into values and
 * offsets; hdrs_out (may be NULL) gets the first record's headers as
 * "key=value" lines. Returns the count. */
static size_t read_topic(const char *topic, char values[][VALUE_LEN + 1], uint64_t *offsets,
                         size_t cap, char *hdrs_out, size_t hdrs_cap)
{
    struct verity_consumer_config cc;
    verity_consumer_config_default(&cc);
    cc.conn.broker = addr;
    cc.fetch_max_wait_ms = 100;
    struct verity_consumer *c = NULL;
    size_t got = 0;
    if (verity_consumer_new(&cc, &c) != 0)
        return 0;
    if (verity_consumer_assign(c, topic, 0, VERITY_START_EARLIEST, 0) != 0) {
        verity_consumer_free(c);
        return 0;
    }
    int64_t deadline = bh_mono_ms() + 3000;
    while (bh_mono_ms() < deadline) {
        const struct verity_message *m;
        size_t n = 0;
        if (verity_consumer_poll(c, 200, &m, &n, NULL) != 0)
            break;
        for (size_t i = 0; i < n && got < cap; i++, got++) {
            size_t l = m[i].value_len > 0 ? (size_t)m[i].value_len : 0;
            if (l > VALUE_LEN)
                l = VALUE_LEN;
            memcpy(values[got], m[i].value, l);
            values[got][l] = '\0';
            offsets[got] = m[i].offset;
            if (got == 0 && hdrs_out) {
                size_t pos = 0;
                for (uint32_t h = 0; h < m[i].header_count; h++) {
                    int w = snprintf(hdrs_out + pos, hdrs_cap - pos, "%.*s=%.*s\n",
                                     (int)m[i].headers[h].key_len, m[i].headers[h].key,
                                     m[i].headers[h].value_len > 0 ? m[i].headers[h].value_len : 0,
                                     m[i].headers[h].value ? (const char *)m[i].headers[h].value
                                                           : "");
                    if (w > 0 && (size_t)w < hdrs_cap - pos)
                        pos += (size_t)w;
                }
            }
        }
    }
    verity_consumer_free(c);
    return got;
}

static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

static void test_poison_message_dead_lettered_and_replayed(void)
{
    const char *topic = "poison";
    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = addr;
    struct verity_client *c = NULL;
    struct verity_topic_config tc = {.partitions = 1};
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&conn, &c), 0);
    CU_ASSERT_EQUAL_FATAL(verity_client_connect(c, 10000), 0);
    CU_ASSERT_EQUAL_FATAL(verity_topic_create(c, topic, &tc, NULL), 0);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = addr;
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    for (int i = 0; i < POISON_MSGS; i++) {
        char v[32];
        int vl = i == POISON_ID ? snprintf(v, sizeof v, "POISON") : snprintf(v, sizeof v, "m%d", i);
        struct verity_header h = {"trace", 5, "t-1", 3};
        struct verity_record r = {.value = v, .value_len = vl, .key = "k", .key_len = 1,
                                  .headers = &h, .header_count = 1};
        CU_ASSERT_EQUAL(verity_produce_sync(p, topic, 0, &r, NULL), 0);
    }
    verity_producer_free(p, 5000);
    CU_ASSERT_EQUAL_FATAL(create_group("gp", topic, VERITY_GROUP_SHARED, 0, POISON_DELIVERIES, true),
                          0);

    struct poison_state ps = {0};
    const char *topics[] = {topic};
    struct verity_group_consumer_config cfg;
    verity_group_consumer_config_default(&cfg);
    cfg.conn.broker = addr;
    cfg.group = "gp";
    cfg.topics = topics;
    cfg.n_topics = 1;
    cfg.fetch_max_wait_ms = 100;
    cfg.result_cb = poison_result;
    cfg.opaque = &ps;
    struct verity_group_consumer *g = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_group_consumer_new(&cfg, &g), 0);
    CU_ASSERT_EQUAL_FATAL(verity_group_connect(g, 10000), 0);
    int poison_seen = 0, others = 0;
    uint32_t max_count = 0;
    int64_t deadline = bh_mono_ms() + 20000;
    while (atomic_load(&ps.dead_lettered) == 0 && bh_mono_ms() < deadline) {
        const struct verity_group_message *m;
        size_t n = 0;
        CU_ASSERT_EQUAL_FATAL(verity_group_poll(g, 200, &m, &n), 0);
        for (size_t i = 0; i < n; i++) {
            if (m[i].msg.value_len == 6 && memcmp(m[i].msg.value, "POISON", 6) == 0) {
                poison_seen++;
                if (m[i].delivery_count > max_count)
                    max_count = m[i].delivery_count;
                CU_ASSERT_EQUAL(verity_group_nack(g, m[i].msg.topic, m[i].msg.partition,
                                                  m[i].msg.offset, 0, "poison pill"),
                                0);
            } else {
                others++;
                CU_ASSERT_EQUAL(verity_group_ack(g, m[i].msg.topic, m[i].msg.partition,
                                                 m[i].msg.offset),
                                0);
            }
        }
    }
    CU_ASSERT_EQUAL(verity_group_commit(g, 10000), 0);
    verity_group_consumer_free(g, 5000);
    CU_ASSERT_EQUAL(atomic_load(&ps.dead_lettered), 1);
    CU_ASSERT_EQUAL(poison_seen, POISON_DELIVERIES);
    CU_ASSERT_EQUAL(max_count, POISON_DELIVERIES);
    CU_ASSERT_EQUAL(others, POISON_MSGS - 1);
    CU_ASSERT_EQUAL(atomic_load(&ps.errors), 0);

    /* The dead letter and its headers. */
    static char values[64][VALUE_LEN + 1];
    uint64_t offs[64];
    char hdrs[2048] = "";
    size_t nd = read_topic("poison.dlq", values, offs, 64, hdrs, sizeof hdrs);
    CU_ASSERT_EQUAL_FATAL(nd, 1);
    CU_ASSERT_STRING_EQUAL(values[0], "POISON");
    char want[128];
    CU_ASSERT_TRUE(has_line(hdrs, "verity.source.topic=poison"));
    CU_ASSERT_TRUE(has_line(hdrs, "verity.source.partition=0"));
    snprintf(want, sizeof want, "verity.source.offset=%d", POISON_ID);
    CU_ASSERT_TRUE(has_line(hdrs, want));
    CU_ASSERT_TRUE(has_line(hdrs, "verity.group=gp"));
    snprintf(want, sizeof want, "verity.delivery_count=%d", POISON_DELIVERIES);
    CU_ASSERT_TRUE(has_line(hdrs, want));
    CU_ASSERT_TRUE(has_line(hdrs, "verity.error=poison pill"));
    CU_ASSERT_TRUE(has_line(hdrs, "trace=t-1")); /* the record's own header stays */

    /* dlq list shows it; replay moves it back; a second replay moves nothing. */
    char out[600];
    snprintf(out, sizeof out, "%s/dlq.out", br.root);
    const char *list[] = {"dlq", "list", "--group", "gp", "--json", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(list, out, NULL, 20000), 0);
    size_t len;
    char *text = slurp(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    text[len] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"source_offset\":5"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"error\":\"poison pill\""));
    free(text);
    const char *replay[] = {"dlq", "replay", "--group", "gp", "--json", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(replay, out, NULL, 30000), 0);
    text = slurp(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    text[len] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"topic\":\"poison\""));
    free(text);
    /* --json prints one JSON document: an empty array when nothing is left. */
    CU_ASSERT_EQUAL(run_cli(replay, out, NULL, 30000), 0);
    text = slurp(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    text[len] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "[]")); /* nothing left to move */
    CU_ASSERT_PTR_NULL(strstr(text, "\"topic\""));
    free(text);
    CU_ASSERT_EQUAL(run_cli(list, out, NULL, 20000), 0);
    text = slurp(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    text[len] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "[]"));
    free(text);

    size_t ns = read_topic(topic, values, offs, 64, NULL, 0);
    CU_ASSERT_EQUAL(ns, POISON_MSGS + 1);
    if (ns == POISON_MSGS + 1) {
        CU_ASSERT_STRING_EQUAL(values[POISON_MSGS], "POISON");
        CU_ASSERT(offs[POISON_MSGS] > offs[POISON_MSGS - 1]);
    }
    verity_client_free(c);
}

/* ---- ordered rebalance ---------------------------------------------------------- */

#define REB_MSGS 4000

struct reb_member {
    int idx;
    struct verity_group_consumer *g;
    uint64_t last[PARTS];
    bool any[PARTS];
    uint64_t order_breaks;
    atomic_uint_fast64_t ack_fail;
    atomic_uint_fast64_t ack_results; /* messages any ack result reported */
    atomic_uint_fast64_t ack_already; /* reported VERITY_EALREADY */
};

/* Per message: which member's ack was answered first (0 none, 1 + idx) and
 * the global step it happened at; receipts by member with their step. */
struct reb_book {
    _Atomic uint8_t acked_by[PARTS][REB_MSGS];
    _Atomic uint64_t acked_at[PARTS][REB_MSGS];
    uint8_t got_by[PARTS][REB_MSGS];      /* bit per member */
    uint32_t dc_b[PARTS][REB_MSGS];       /* B's highest delivery count */
    uint64_t got_at[2][PARTS][REB_MSGS];  /* step of the member's last receipt */
    _Atomic uint8_t a_ok[PARTS][REB_MSGS]; /* A's ack answered with success */
    atomic_uint_fast64_t step;
    atomic_uint_fast64_t acked;
};

static struct reb_book *rb;

static void reb_result(void *opaque, int err, const struct verity_group_result *r)
{
    struct reb_member *m = opaque;
    if (r->op != VERITY_GROUP_OP_ACK)
        return;
    atomic_fetch_add(&m->ack_results, r->count);
    if (err == VERITY_EALREADY)
        atomic_fetch_add(&m->ack_already, r->count);
    if (err) {
        atomic_fetch_add(&m->ack_fail, r->count);
        return;
    }
    uint64_t at = atomic_fetch_add(&rb->step, 1);
    for (uint64_t o = r->first_offset; r->partition < PARTS && o < r->first_offset + r->count &&
                                       o < REB_MSGS;
         o++) {
        if (m->idx == 0)
            atomic_store(&rb->a_ok[r->partition][o], 1);
        uint8_t zero = 0;
        if (atomic_compare_exchange_strong(&rb->acked_by[r->partition][o], &zero,
                                           (uint8_t)(1 + m->idx))) {
            atomic_store(&rb->acked_at[r->partition][o], at);
            atomic_fetch_add(&rb->acked, 1);
        }
    }
}

static int reb_new(struct reb_member *m, int idx)
{
    const char *topics[] = {"reb"};
    struct verity_group_consumer_config cfg;
    verity_group_consumer_config_default(&cfg);
    cfg.conn.broker = addr;
    cfg.group = "g-reb";
    cfg.topics = topics;
    cfg.n_topics = 1;
    cfg.fetch_max = 100;
    cfg.fetch_max_wait_ms = 50;
    cfg.queue_max = 0;
    cfg.result_cb = reb_result;
    cfg.opaque = m;
    m->idx = idx;
    int rc = verity_group_consumer_new(&cfg, &m->g);
    return rc ? rc : verity_group_connect(m->g, 10000);
}

/* One poll of member m: records receipts and order; acks unless hold. */
static size_t reb_poll(struct reb_member *m, bool hold, struct verity_group_offset *held,
                       size_t *n_held)
{
    const struct verity_group_message *msgs;
    size_t n = 0;
    if (verity_group_poll(m->g, 100, &msgs, &n) != 0)
        return 0;
    uint64_t at = atomic_fetch_add(&rb->step, 1);
    for (size_t i = 0; i < n; i++) {
        uint32_t p = msgs[i].msg.partition;
        uint64_t o = msgs[i].msg.offset;
        if (p >= PARTS || o >= REB_MSGS)
            continue;
        if (m->any[p] && o <= m->last[p])
            m->order_breaks++;
        m->any[p] = true;
        m->last[p] = o;
        rb->got_by[p][o] |= (uint8_t)(1u << m->idx);
        rb->got_at[m->idx][p][o] = at;
        if (m->idx == 1 && msgs[i].delivery_count > rb->dc_b[p][o])
            rb->dc_b[p][o] = msgs[i].delivery_count;
        if (hold && held)
            held[(*n_held)++] = (struct verity_group_offset){(char *)msgs[i].msg.topic, p, o};
    }
    if (!hold && n)
        CU_ASSERT_EQUAL(verity_group_ack_many(m->g, msgs, n), 0);
    return n;
}

static void test_ordered_rebalance_moves_leased_partitions(void)
{
    struct produced pr = {0};
    CU_ASSERT_EQUAL_FATAL(produce_topic("reb", REB_MSGS, &pr), 0);
    uint64_t total = 0;
    for (int p = 0; p < PARTS; p++) {
        CU_ASSERT_FATAL(pr.hwm[p] <= REB_MSGS);
        for (uint64_t o = 0; o < pr.hwm[p]; o++)
            total += pr.id_at[p][o] != 0;
    }
    CU_ASSERT_EQUAL_FATAL(create_group("g-reb", "reb", VERITY_GROUP_ORDERED, 0, 0, false), 0);
    rb = calloc(1, sizeof *rb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rb);
    struct reb_member a = {0}, b = {0};
    CU_ASSERT_EQUAL_FATAL(reb_new(&a, 0), 0);

    /* A alone owns every partition and holds leases on all of them. */
    static struct verity_group_offset held[1100];
    size_t n_held = 0;
    int64_t deadline = bh_mono_ms() + 10000;
    while (bh_mono_ms() < deadline && n_held + 100 <= 1000 &&
           !(a.any[0] && a.any[1] && a.any[2] && a.any[3]))
        reb_poll(&a, true, held, &n_held);
    CU_ASSERT_FATAL(a.any[0] && a.any[1] && a.any[2] && a.any[3]);
    uint32_t gen0 = 0;
    verity_group_member_id(a.g, NULL, &gen0);

    /* B joins: half the partitions move, with A's leases on them. */
    CU_ASSERT_EQUAL_FATAL(reb_new(&b, 1), 0);
    uint32_t gen = gen0;
    deadline = bh_mono_ms() + 10000;
    while (gen == gen0 && bh_mono_ms() < deadline) {
        reb_poll(&a, false, NULL, NULL);
        verity_group_member_id(a.g, NULL, &gen);
    }
    CU_ASSERT(gen > gen0); /* A learned the rebalance from its fetches */
    /* B takes over what moved, starting with A's returned leases. */
    static struct verity_group_offset b_held[200];
    size_t n_b_held = 0;
    deadline = bh_mono_ms() + 10000;
    while (n_b_held == 0 && bh_mono_ms() < deadline)
        reb_poll(&b, true, b_held, &n_b_held);
    /* Let the acks of A's earlier polls be answered first, so the count
     * below is of the held messages alone. */
    int prior = verity_group_commit(a.g, 10000);
    CU_ASSERT(prior != VERITY_ETIMEOUT);
    uint64_t results0 = atomic_load(&a.ack_results);
    for (size_t i = 0; i < n_held; i++)
        CU_ASSERT_EQUAL(verity_group_ack(a.g, held[i].topic, held[i].partition, held[i].offset),
                        0);
    /* Commit is a barrier: it returns once every ack queued before it was
     * answered, including acks resent one by one after their batch failed,
     * and it reports the refusal of those that moved (issue 7, defect 4). */
    CU_ASSERT_EQUAL(verity_group_commit(a.g, 10000), VERITY_ELEASE);
    CU_ASSERT_EQUAL(atomic_load(&a.ack_results) - results0, n_held);
    for (size_t i = 0; i < n_b_held; i++)
        CU_ASSERT_EQUAL(
            verity_group_ack(b.g, b_held[i].topic, b_held[i].partition, b_held[i].offset), 0);

    deadline = bh_mono_ms() + 30000;
    while (atomic_load(&rb->acked) < total && bh_mono_ms() < deadline) {
        reb_poll(&a, false, NULL, NULL);
        reb_poll(&b, false, NULL, NULL);
    }
    CU_ASSERT_EQUAL(verity_group_commit(a.g, 10000) == VERITY_ETIMEOUT, 0);
    CU_ASSERT_EQUAL(verity_group_commit(b.g, 10000) == VERITY_ETIMEOUT, 0);
    verity_group_consumer_free(a.g, 5000);
    verity_group_consumer_free(b.g, 5000);

    uint64_t unacked = 0, moved_not_redelivered = 0, after_other = 0, moved = 0;
    for (int p = 0; p < PARTS; p++)
        for (uint64_t o = 0; o < pr.hwm[p]; o++) {
            if (!pr.id_at[p][o])
                continue;
            uint8_t by = atomic_load(&rb->acked_by[p][o]);
            if (by == 0)
                unacked++;
            /* A receipt after another member's answered ack. */
            for (int m = 0; m < 2 && by; m++)
                if (m != by - 1 && (rb->got_by[p][o] & (1u << m)) &&
                    rb->got_at[m][p][o] > atomic_load(&rb->acked_at[p][o]))
                    after_other++;
        }
    for (size_t i = 0; i < n_held; i++) {
        uint32_t p = held[i].partition;
        uint64_t o = held[i].offset;
        if (!(rb->got_by[p][o] & 2u))
            continue;
        moved++;
        if (rb->dc_b[p][o] < 2)
            moved_not_redelivered++;
    }
    fprintf(stderr, "\n[rebalance] %" PRIu64 " messages, A held %zu, %" PRIu64
                    " of them went to B; A's refused acks %" PRIu64 ", order breaks %" PRIu64
                    "/%" PRIu64 "\n",
            total, n_held, moved, (uint64_t)atomic_load(&a.ack_fail), a.order_breaks,
            b.order_breaks);
    CU_ASSERT_EQUAL(unacked, 0);
    CU_ASSERT_EQUAL(after_other, 0);
    CU_ASSERT_EQUAL(moved_not_redelivered, 0);
    /* A's acks of what B holds now fail; the rest of its batch it still
     * acks as the last holder (or as owner). */
    CU_ASSERT(moved > 0);
    CU_ASSERT_EQUAL(atomic_load(&a.ack_fail), moved);
    /* No stray success: A's ack of a held message that went to B was
     * refused (ELEASE) or named as acknowledged by B first (EALREADY). */
    uint64_t stray = 0;
    for (size_t i = 0; i < n_held; i++)
        if ((rb->got_by[held[i].partition][held[i].offset] & 2u) &&
            atomic_load(&rb->a_ok[held[i].partition][held[i].offset]))
            stray++;
    CU_ASSERT_EQUAL(stray, 0);
    CU_ASSERT_EQUAL(a.order_breaks, 0);
    CU_ASSERT_EQUAL(b.order_breaks, 0);
    /* Something moved: B owns half of the partitions A had leases on. */
    bool b_got_any = false;
    for (int p = 0; p < PARTS; p++)
        for (uint64_t o = 0; o < pr.hwm[p] && !b_got_any; o++)
            b_got_any = rb->got_by[p][o] & 2u;
    CU_ASSERT_TRUE(b_got_any);
    free(rb);
    rb = NULL;
    produced_free(&pr);
}

/* ---- a deleted group stops its members -------------------------------------------- */

struct joins {
    atomic_int n;
    atomic_uint_fast64_t last_member;
};

static void count_joins(void *opaque, uint64_t member_id, uint32_t generation,
                        const struct verity_group_offset *assigned, size_t n)
{
    struct joins *j = opaque;
    (void)generation;
    (void)assigned;
    (void)n;
    atomic_fetch_add(&j->n, 1);
    atomic_store(&j->last_member, member_id);
}

static void test_deleted_group_stops_member(void)
{
    struct produced pr = {0};
    CU_ASSERT_EQUAL_FATAL(produce_topic("del", 100, &pr), 0);
    CU_ASSERT_EQUAL_FATAL(create_group("g-del", "del", VERITY_GROUP_SHARED, 0, 0, false), 0);
    struct joins j = {0};
    const char *topics[] = {"del"};
    struct verity_group_consumer_config cfg;
    verity_group_consumer_config_default(&cfg);
    cfg.conn.broker = addr;
    cfg.group = "g-del";
    cfg.topics = topics;
    cfg.n_topics = 1;
    cfg.fetch_max_wait_ms = 100;
    cfg.member_cb = count_joins;
    cfg.opaque = &j;
    struct verity_group_consumer *g = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_group_consumer_new(&cfg, &g), 0);
    CU_ASSERT_EQUAL_FATAL(verity_group_connect(g, 10000), 0);
    uint64_t id = 0;
    verity_group_member_id(g, &id, NULL);
    CU_ASSERT(id != 0);
    CU_ASSERT_EQUAL(atomic_load(&j.n), 1);
    CU_ASSERT_EQUAL(atomic_load(&j.last_member), id);
    const struct verity_group_message *m;
    size_t n = 0;
    int64_t deadline = bh_mono_ms() + 5000;
    while (n == 0 && bh_mono_ms() < deadline)
        CU_ASSERT_EQUAL_FATAL(verity_group_poll(g, 200, &m, &n), 0);
    CU_ASSERT(n > 0);
    /* Joining a group for a topic it does not read is refused. */
    const char *wrong[] = {"poison"};
    struct verity_group_consumer_config bad = cfg;
    bad.topics = wrong;
    bad.member_cb = NULL;
    struct verity_group_consumer *g2 = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_group_consumer_new(&bad, &g2), 0);
    CU_ASSERT_EQUAL(verity_group_connect(g2, 10000), VERITY_EINVAL);
    verity_group_consumer_free(g2, 0);

    struct verity_conn_config conn;
    verity_conn_config_default(&conn);
    conn.broker = addr;
    struct verity_group_admin *ga = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_group_admin_new(&conn, &ga), 0);
    CU_ASSERT_EQUAL(verity_group_delete(ga, "g-del"), 0);
    verity_group_admin_free(ga);
    int rc = 0;
    deadline = bh_mono_ms() + 10000;
    while (rc == 0 && bh_mono_ms() < deadline)
        rc = verity_group_poll(g, 200, &m, &n);
    CU_ASSERT_EQUAL(rc, VERITY_ENOTFOUND);
    CU_ASSERT_EQUAL(verity_group_ack(g, "del", 0, 0), VERITY_ENOTFOUND);
    verity_group_consumer_free(g, 1000);
    produced_free(&pr);
}

/* ---- CLI ---------------------------------------------------------------------- */

static json_t *load_json(const char *path)
{
    json_error_t e;
    return json_load_file(path, 0, &e);
}

static void test_cli_group_commands(void)
{
    struct produced pr = {0};
    CU_ASSERT_EQUAL_FATAL(produce_topic("cli", 400, &pr), 0);
    char out[600], in[600];
    snprintf(out, sizeof out, "%s/cli.out", br.root);
    snprintf(in, sizeof in, "%s/cli.in", br.root);

    /* consume --group creates the group, leases, prints delivery counts, acks. */
    const char *cons[] = {"consume", "cli", "--group", "gc", "--mode", "shared", "--format",
                          "json", "--count", "7", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(cons, out, NULL, 20000), 0);
    size_t len;
    char *text = slurp(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    text[len] = '\0';
    int lines = 0;
    for (char *l = text; (l = strstr(l, "\"delivery_count\":1")) != NULL; l++)
        lines++;
    CU_ASSERT_EQUAL(lines, 7);
    free(text);

    /* --ack manual: nack the first (at once), skip nothing else. */
    FILE *f = fopen(in, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("nack 0 try later\nack\nack\n", f);
    fclose(f);
    const char *man[] = {"consume", "cli", "--group", "gc", "--ack", "manual", "--format", "json",
                         "--count", "3", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(man, out, in, 20000), 0);

    const char *desc[] = {"group", "describe", "gc", "--json", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(desc, out, NULL, 20000), 0);
    json_t *d = load_json(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(d, "mode")), "shared");
    /* 7 + 2 acked, the nacked one is waiting or back in the queue. */
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(d, "unacked")), 400 - 9);
    CU_ASSERT_EQUAL(json_array_size(json_object_get(d, "partitions")), PARTS);
    json_decref(d);

    const char *list[] = {"group", "list", "--json", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(list, out, NULL, 20000), 0);
    d = load_json(out);
    CU_ASSERT_TRUE(json_is_array(d));
    bool found = false;
    for (size_t i = 0; i < json_array_size(d); i++)
        found = found || strcmp(json_string_value(json_object_get(json_array_get(d, i), "name")),
                                "gc") == 0;
    CU_ASSERT_TRUE(found);
    json_decref(d);

    const char *pend[] = {"group", "pending", "gc", "--json", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(pend, out, NULL, 20000), 0);
    d = load_json(out);
    CU_ASSERT_PTR_NOT_NULL(d);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(d, "total")), 0); /* members left */
    json_decref(d);

    const char *reset[] = {"group", "reset", "gc", "--to", "latest", "--json", "--broker", addr,
                           NULL};
    CU_ASSERT_EQUAL(run_cli(reset, out, NULL, 20000), 0);
    CU_ASSERT_EQUAL(run_cli(desc, out, NULL, 20000), 0);
    d = load_json(out);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(d, "unacked")), 0);
    json_decref(d);

    /* Exit codes: refused 1, usage 2, unreachable 3. */
    const char *mode_clash[] = {"consume", "cli", "--group", "gc", "--mode", "ordered",
                                "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(mode_clash, NULL, NULL, 20000), 1);
    const char *del[] = {"group", "delete", "gc", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(del, NULL, NULL, 20000), 0);
    CU_ASSERT_EQUAL(run_cli(del, NULL, NULL, 20000), 1);
    CU_ASSERT_EQUAL(run_cli(desc, NULL, NULL, 20000), 1);
    const char *bad[] = {"group", "describe", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(bad, NULL, NULL, 20000), 2);
    const char *badname[] = {"group", "describe", "no way", "--broker", addr, NULL};
    CU_ASSERT_EQUAL(run_cli(badname, NULL, NULL, 20000), 2);
    const char *help[] = {"dlq", "--help", NULL};
    CU_ASSERT_EQUAL(run_cli(help, NULL, NULL, 20000), 0);
    char nowhere[32];
    snprintf(nowhere, sizeof nowhere, "127.0.0.1:%u", bh_free_port());
    const char *unreach[] = {"group", "list", "--broker", nowhere, NULL};
    CU_ASSERT_EQUAL(run_cli(unreach, NULL, NULL, 20000), 3);
    const char *unreach2[] = {"consume", "cli", "--group", "gx", "--broker", nowhere, NULL};
    CU_ASSERT_EQUAL(run_cli(unreach2, NULL, NULL, 20000), 3);
    const char *unreach3[] = {"dlq", "list", "--group", "gx", "--broker", nowhere, NULL};
    CU_ASSERT_EQUAL(run_cli(unreach3, NULL, NULL, 20000), 3);
    produced_free(&pr);
}

/* ---- main ---------------------------------------------------------------------- */

static int suite_init(void)
{
    if (bh_init(&br, "groups-e2e") != 0)
        return -1;
    const char *extra[] = {"--log-level", "warn", NULL};
    if (bh_start(&br, extra) != 0) {
        fprintf(stderr, "cannot start verityd (VERITY_BIN_DIR=%s)\n", getenv("VERITY_BIN_DIR"));
        return -1;
    }
    snprintf(addr, sizeof addr, "127.0.0.1:%u", br.port);
    return 0;
}

static int suite_clean(void)
{
    if (br.pid > 0 && bh_stop_sig(&br, SIGTERM) != 0)
        fprintf(stderr, "verityd did not exit cleanly\n");
    bh_cleanup(&br);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "member") == 0)
        return member_main(argc, argv);
    ssize_t l = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (l <= 0)
        return 1;
    self_exe[l] = '\0';
    signal(SIGPIPE, SIG_IGN);
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"ordered_kill_mid_batch", test_ordered_kill_mid_batch},
        {"shared_kill_mid_batch", test_shared_kill_mid_batch},
        {"poison_message_dead_lettered_and_replayed",
         test_poison_message_dead_lettered_and_replayed},
        {"ordered_rebalance_moves_leased_partitions",
         test_ordered_rebalance_moves_leased_partitions},
        {"deleted_group_stops_member", test_deleted_group_stops_member},
        {"cli_group_commands", test_cli_group_commands},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("groups_e2e", suite_init, suite_clean);
    if (s == NULL)
        goto fail;
    /* VERITY_TEST_ONLY=name runs one test (for repeated runs). */
    const char *only = getenv("VERITY_TEST_ONLY");
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if ((!only || !*only || strcmp(only, tests[i].name) == 0) &&
            CU_add_test(s, tests[i].name, tests[i].fn) == NULL)
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
