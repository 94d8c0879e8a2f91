/*
 * verity cluster start|stop|restart|status: a local cluster of 3 or 5
 * brokers on loopback for users and tests (issue 10), and the status of any
 * cluster read from each broker's admin GET /cluster.
 *
 * start picks free loopback ports (client, peer and admin HTTP per broker),
 * writes DIR/cluster.json (the shared configuration: data_dir is given per
 * broker on its command line) and starts one verityd per node with its own
 * data directory DIR/nodeN and log DIR/nodeN.log, then waits until every
 * broker answers /health. DIR/state.json records what stop, restart and
 * status need:
 *
 *   {"bootstrap": "127.0.0.1:P1,...", "verityd": PATH,
 *    "brokers": [{"id", "pid", "listen", "peer", "http", "data_dir"}, ...]}
 *
 * start --relays also picks one relay address per pair of brokers: the lower
 * id gets `--peer-dial HIGHER=RELAY` (node-local, not in the cluster id) and
 * state.json / --json list "relays": [{"from","to","listen","target"}]; the
 * caller runs the relays (tests/cluster/relay.py). restart keeps peer_dial.
 *
 * start --json prints {"bootstrap", "brokers": [{"id","pid","listen","http",
 * "data_dir"}]}. stop sends SIGTERM to each recorded PID, waits up to
 * --timeout-ms (10000) for it to exit, then SIGKILLs it. restart --id N
 * starts broker N again on its directory and ports (after stopping it when
 * it still runs); restart --rejoin passes verityd --rejoin for that start
 * (a broker whose data directory was wiped). The verityd binary: --verityd PATH, else $VERITY_BIN_DIR/
 * verityd, else verityd next to this program.
 *
 * Exit codes: 0 ok, 1 failure, 2 usage.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tools/cli_args.h"
#include "tools/cmds.h"
#include "verity/verity.h"

#define NODES_MAX 5
#define START_TIMEOUT_MS 20000
#define STOP_TIMEOUT_MS 10000
#define HTTP_TIMEOUT_MS 3000
#define HTTP_BODY_MAX (4u << 20)

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity cluster start --nodes 3|5 --dir DIR [--verityd PATH] [--relays] [--json]\n"
            "       verity cluster stop --dir DIR [--timeout-ms MS]\n"
            "       verity cluster restart --dir DIR --id N [--rejoin] [--timeout-ms MS]\n"
            "       verity cluster status [--dir DIR | --broker HTTP,HTTP,...] [--json]\n"
            "start: a local cluster on loopback (free ports, DIR/nodeN data directories,\n"
            "  DIR/cluster.json shared config, DIR/state.json with the PIDs); prints the\n"
            "  bootstrap list and the PIDs (--json: {\"bootstrap\", \"brokers\": [...]}).\n"
            "  --relays: one relay address per pair of brokers; the lower id dials the\n"
            "  higher there (its node-local peer_dial) instead of the peer address. The\n"
            "  caller starts the relays (tests/cluster/relay.py, listed under \"relays\":\n"
            "  from, to, listen, target); until then those links stay down.\n"
            "stop: SIGTERM each broker of DIR/state.json, SIGKILL after --timeout-ms.\n"
            "restart: start broker N again on its directory and ports. --rejoin: its disk\n"
            "  was wiped (replaced); start it with verityd --rejoin (this start only)\n"
            "  so that it votes in no view change until caught up (docs/REPLICATION.md).\n"
            "status: each broker's GET /cluster: links, each partition's primary, view,\n"
            "  commit number and backup lag. --broker takes admin HTTP addresses.\n"
            "exit: 0 ok, 1 failure (status: a broker did not answer), 2 usage\n");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- HTTP ---------------------------------------------------------------- */

/* GET path from host:port (libverity's admin client). Returns the status
 * code with the body in *body (malloc'd, NUL-terminated), or -errno. */
static int http_get(const char *hostport, const char *path, char **body)
{
    return verity_admin_get(hostport, path, HTTP_TIMEOUT_MS, HTTP_BODY_MAX, body, NULL);
}

/* ---- state ---------------------------------------------------------------- */

struct node {
    int id;
    pid_t pid;
    char listen[64];
    char peer[64];
    char http[64];
    char data_dir[PATH_MAX + 16];
    char peer_dial[NODES_MAX * 64]; /* --relays: "ID=RELAY;..." for the nodes it dials */
};

/* --relays: one relay address per pair of brokers (from < to: `from` dials
 * `to` there); the relay itself (tests/cluster/relay.py) is started by the
 * caller and forwards to the peer address of `to`. */
struct relay {
    int from, to;
    char listen[64];
};

struct state {
    char dir[PATH_MAX];
    char verityd[PATH_MAX];
    int n;
    struct node nodes[NODES_MAX];
    int n_relays;
    struct relay relays[NODES_MAX * (NODES_MAX - 1) / 2];
};

static void bootstrap_of(const struct state *s, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < s->n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? "," : "", s->nodes[i].listen);
}

static json_t *node_json(const struct node *nd, bool with_peer)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(nd->id));
    json_object_set_new(o, "pid", json_integer(nd->pid));
    json_object_set_new(o, "listen", json_string(nd->listen));
    if (with_peer)
        json_object_set_new(o, "peer", json_string(nd->peer));
    json_object_set_new(o, "http", json_string(nd->http));
    json_object_set_new(o, "data_dir", json_string(nd->data_dir));
    if (nd->peer_dial[0])
        json_object_set_new(o, "peer_dial", json_string(nd->peer_dial));
    return o;
}

static json_t *state_json(const struct state *s, bool full)
{
    char boot[NODES_MAX * 64];
    bootstrap_of(s, boot, sizeof boot);
    json_t *o = json_object(), *arr = json_array();
    json_object_set_new(o, "bootstrap", json_string(boot));
    if (full)
        json_object_set_new(o, "verityd", json_string(s->verityd));
    for (int i = 0; i < s->n; i++)
        json_array_append_new(arr, node_json(&s->nodes[i], full));
    json_object_set_new(o, "brokers", arr);
    if (s->n_relays) {
        json_t *ra = json_array();
        for (int i = 0; i < s->n_relays; i++) {
            const struct relay *r = &s->relays[i];
            json_t *e = json_object();
            json_object_set_new(e, "from", json_integer(r->from));
            json_object_set_new(e, "to", json_integer(r->to));
            json_object_set_new(e, "listen", json_string(r->listen));
            json_object_set_new(e, "target", json_string(s->nodes[r->to - 1].peer));
            json_array_append_new(ra, e);
        }
        json_object_set_new(o, "relays", ra);
    }
    return o;
}

static int state_save(const struct state *s)
{
    char path[PATH_MAX + 32], tmp[PATH_MAX + 40];
    snprintf(path, sizeof path, "%s/state.json", s->dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    json_t *o = state_json(s, true);
    int rc = json_dump_file(o, tmp, JSON_INDENT(2)) == 0 && rename(tmp, path) == 0 ? 0 : -1;
    json_decref(o);
    if (rc)
        fprintf(stderr, "verity cluster: cannot write %s: %s\n", path, strerror(errno));
    return rc;
}

static int copy_str(char *dst, size_t cap, json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) >= cap)
        return -1;
    strcpy(dst, s);
    return 0;
}

static int state_load(const char *dir, struct state *s)
{
    char path[PATH_MAX + 32];
    memset(s, 0, sizeof *s);
    if (strlen(dir) >= sizeof s->dir)
        return -1;
    strcpy(s->dir, dir);
    snprintf(path, sizeof path, "%s/state.json", dir);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    json_t *arr = o ? json_object_get(o, "brokers") : NULL;
    int rc = arr && json_is_array(arr) && json_array_size(arr) <= NODES_MAX &&
                     copy_str(s->verityd, sizeof s->verityd, json_object_get(o, "verityd")) == 0
                 ? 0
                 : -1;
    for (size_t i = 0; rc == 0 && i < json_array_size(arr); i++) {
        json_t *b = json_array_get(arr, i);
        struct node *nd = &s->nodes[s->n++];
        nd->id = (int)json_integer_value(json_object_get(b, "id"));
        nd->pid = (pid_t)json_integer_value(json_object_get(b, "pid"));
        if (nd->id <= 0 || copy_str(nd->listen, sizeof nd->listen, json_object_get(b, "listen")) ||
            copy_str(nd->peer, sizeof nd->peer, json_object_get(b, "peer")) ||
            copy_str(nd->http, sizeof nd->http, json_object_get(b, "http")) ||
            copy_str(nd->data_dir, sizeof nd->data_dir, json_object_get(b, "data_dir")))
            rc = -1;
        if (rc == 0 && json_object_get(b, "peer_dial") &&
            copy_str(nd->peer_dial, sizeof nd->peer_dial, json_object_get(b, "peer_dial")))
            rc = -1;
    }
    json_t *ra = o ? json_object_get(o, "relays") : NULL;
    for (size_t i = 0; rc == 0 && ra && i < json_array_size(ra) &&
                       i < sizeof s->relays / sizeof s->relays[0];
         i++) {
        json_t *e = json_array_get(ra, i);
        struct relay *r = &s->relays[s->n_relays++];
        r->from = (int)json_integer_value(json_object_get(e, "from"));
        r->to = (int)json_integer_value(json_object_get(e, "to"));
        if (r->to < 1 || r->to > s->n || copy_str(r->listen, sizeof r->listen, json_object_get(e, "listen")))
            rc = -1;
    }
    if (rc)
        fprintf(stderr, "verity cluster: %s: missing or malformed (%s)\n", path,
                o ? "fields" : je.text);
    json_decref(o);
    return rc;
}

/* ---- processes ------------------------------------------------------------ */

/* A free loopback port, held open in *fd until the caller closes it (so
 * the ports of one start are distinct). */
static int free_port(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    *fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (*fd < 0 || bind(*fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(*fd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    return ntohs(a.sin_port);
}

static bool pid_alive(pid_t pid)
{
    if (pid <= 0)
        return false;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
        return false; /* our child, now reaped */
    return kill(pid, 0) == 0;
}

/* Starts verityd for nd (daemon-like: own session, stdout/stderr to
 * DIR/nodeN.log). Returns 0 and sets nd->pid. */
static int spawn(const struct state *s, struct node *nd, bool rejoin)
{
    char cfg[PATH_MAX + 32], logp[PATH_MAX + 32], idbuf[16];
    snprintf(cfg, sizeof cfg, "%s/cluster.json", s->dir);
    snprintf(logp, sizeof logp, "%s/node%d.log", s->dir, nd->id);
    snprintf(idbuf, sizeof idbuf, "%d", nd->id);
    if (mkdir(nd->data_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "verity cluster: mkdir %s: %s\n", nd->data_dir, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int lfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (lfd >= 0) {
            dup2(lfd, 1);
            dup2(lfd, 2);
        }
        if (nul >= 0)
            dup2(nul, 0);
        setsid();
        char *args[12];
        int a = 0;
        args[a++] = (char *)s->verityd;
        args[a++] = "--config";
        args[a++] = cfg;
        args[a++] = "--node-id";
        args[a++] = idbuf;
        args[a++] = "--data-dir";
        args[a++] = nd->data_dir;
        if (nd->peer_dial[0]) {
            args[a++] = "--peer-dial";
            args[a++] = nd->peer_dial;
        }
        if (rejoin)
            args[a++] = "--rejoin"; /* this start only: not kept in state.json */
        args[a] = NULL;
        execv(s->verityd, args);
        fprintf(stderr, "exec %s: %s\n", s->verityd, strerror(errno));
        _exit(127);
    }
    nd->pid = pid;
    return 0;
}

/* Waits until nd answers /health (or its process exits). */
static int wait_up(const struct node *nd, int64_t deadline)
{
    while (now_ms() < deadline) {
        if (!pid_alive(nd->pid))
            return -1;
        char *body = NULL;
        int st = http_get(nd->http, "/health", &body);
        free(body);
        if (st == 200)
            return 0;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

/* SIGTERM, wait up to timeout_ms, then SIGKILL and wait. */
static void stop_one(struct node *nd, int timeout_ms)
{
    if (!pid_alive(nd->pid)) {
        nd->pid = 0;
        return;
    }
    (void)kill(nd->pid, SIGTERM);
    int64_t deadline = now_ms() + timeout_ms;
    while (pid_alive(nd->pid) && now_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (pid_alive(nd->pid)) {
        fprintf(stderr, "verity cluster: broker %d (pid %d) did not stop in %d ms: SIGKILL\n",
                nd->id, (int)nd->pid, timeout_ms);
        (void)kill(nd->pid, SIGKILL);
        deadline = now_ms() + 5000;
        while (pid_alive(nd->pid) && now_ms() < deadline) {
            struct timespec ts = {0, 20 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    nd->pid = 0;
}

static void find_verityd(const char *given, char *out, size_t cap)
{
    const char *bin = getenv("VERITY_BIN_DIR");
    if (given) {
        snprintf(out, cap, "%s", given);
    } else if (bin && bin[0]) {
        snprintf(out, cap, "%s/verityd", bin);
    } else {
        char self[PATH_MAX - 16];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n > 0) {
            self[n] = '\0';
            char *slash = strrchr(self, '/');
            if (slash)
                *slash = '\0';
            snprintf(out, cap, "%s/verityd", self);
        } else {
            snprintf(out, cap, "verityd");
        }
    }
    if (out[0] != '/' && strchr(out, '/')) {
        char abs[PATH_MAX];
        if (realpath(out, abs))
            snprintf(out, cap, "%s", abs);
    }
}

static int write_config(const struct state *s)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/cluster.json", s->dir);
    json_t *o = json_object(), *cl = json_object(), *arr = json_array();
    for (int i = 0; i < s->n; i++) {
        json_t *n = json_object();
        json_object_set_new(n, "id", json_integer(s->nodes[i].id));
        json_object_set_new(n, "listen", json_string(s->nodes[i].listen));
        json_object_set_new(n, "peer", json_string(s->nodes[i].peer));
        json_object_set_new(n, "http", json_string(s->nodes[i].http));
        json_array_append_new(arr, n);
    }
    json_object_set_new(cl, "nodes", arr);
    json_object_set_new(o, "cluster", cl);
    int rc = json_dump_file(o, path, JSON_INDENT(2));
    json_decref(o);
    if (rc)
        fprintf(stderr, "verity cluster: cannot write %s\n", path);
    return rc ? -1 : 0;
}

static int do_start(int nodes, const char *dir, const char *verityd, bool json, bool relays)
{
    struct state s;
    memset(&s, 0, sizeof s);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "verity cluster: mkdir %s: %s\n", dir, strerror(errno));
        return CMD_EXIT_FAIL;
    }
    if (!realpath(dir, s.dir)) {
        fprintf(stderr, "verity cluster: %s: %s\n", dir, strerror(errno));
        return CMD_EXIT_FAIL;
    }
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/state.json", s.dir);
    struct state old;
    if (access(probe, F_OK) == 0 && state_load(s.dir, &old) == 0) {
        for (int i = 0; i < old.n; i++) {
            if (pid_alive(old.nodes[i].pid)) {
                fprintf(stderr, "verity cluster: %s already runs (broker %d, pid %d); "
                        "verity cluster stop --dir %s first\n", s.dir, old.nodes[i].id,
                        (int)old.nodes[i].pid, s.dir);
                return CMD_EXIT_FAIL;
            }
        }
    }
    find_verityd(verityd, s.verityd, sizeof s.verityd);
    if (access(s.verityd, X_OK) != 0) {
        fprintf(stderr, "verity cluster: verityd not found at %s (--verityd PATH)\n", s.verityd);
        return CMD_EXIT_FAIL;
    }
    int fds[NODES_MAX * 3 + NODES_MAX * (NODES_MAX - 1) / 2];
    int nfd = 0, rc = 0;
    s.n = nodes;
    for (int i = 0; i < nodes && rc == 0; i++) {
        struct node *nd = &s.nodes[i];
        nd->id = i + 1;
        int p[3];
        for (int k = 0; k < 3; k++) {
            p[k] = free_port(&fds[nfd++]);
            if (p[k] < 0)
                rc = -1;
        }
        snprintf(nd->listen, sizeof nd->listen, "127.0.0.1:%d", p[0]);
        snprintf(nd->peer, sizeof nd->peer, "127.0.0.1:%d", p[1]);
        snprintf(nd->http, sizeof nd->http, "127.0.0.1:%d", p[2]);
        /* Built from a copy: gcc -O1 (ASan build) reads s.dir as possibly
         * overlapping nd->data_dir (both inside s) and fails -Werror=restrict. */
        char root[sizeof s.dir];
        memcpy(root, s.dir, sizeof root);
        snprintf(nd->data_dir, sizeof nd->data_dir, "%s/node%d", root, nd->id);
    }
    for (int i = 0; relays && i < nodes && rc == 0; i++) {
        for (int j = i + 1; j < nodes && rc == 0; j++) {
            int p = free_port(&fds[nfd++]);
            struct relay *r = &s.relays[s.n_relays++];
            struct node *nd = &s.nodes[i];
            size_t o = strlen(nd->peer_dial);
            if (p < 0)
                rc = -1;
            r->from = i + 1;
            r->to = j + 1;
            snprintf(r->listen, sizeof r->listen, "127.0.0.1:%d", p);
            char ent[sizeof r->listen + 16]; /* via a local: gcc -Wrestrict at -O1 */
            snprintf(ent, sizeof ent, "%s%d=%s", o ? ";" : "", j + 1, r->listen);
            snprintf(nd->peer_dial + o, sizeof nd->peer_dial - o, "%s", ent);
        }
    }
    for (int i = 0; i < nfd; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (rc || write_config(&s) != 0) {
        fprintf(stderr, "verity cluster: no free loopback ports or config not written\n");
        return CMD_EXIT_FAIL;
    }
    for (int i = 0; i < nodes && rc == 0; i++)
        rc = spawn(&s, &s.nodes[i], false);
    if (rc == 0)
        rc = state_save(&s);
    int64_t deadline = now_ms() + START_TIMEOUT_MS;
    for (int i = 0; i < nodes && rc == 0; i++) {
        if (wait_up(&s.nodes[i], deadline) != 0) {
            fprintf(stderr, "verity cluster: broker %d did not come up (see %s/node%d.log)\n",
                    s.nodes[i].id, s.dir, s.nodes[i].id);
            rc = -1;
        }
    }
    if (rc) {
        for (int i = 0; i < nodes; i++)
            stop_one(&s.nodes[i], 2000);
        (void)state_save(&s);
        return CMD_EXIT_FAIL;
    }
    if (json) {
        json_t *o = state_json(&s, false);
        char *txt = json_dumps(o, JSON_COMPACT);
        printf("%s\n", txt);
        free(txt);
        json_decref(o);
    } else {
        char boot[NODES_MAX * 64];
        bootstrap_of(&s, boot, sizeof boot);
        printf("cluster of %d brokers in %s\nbootstrap: %s\n", nodes, s.dir, boot);
        for (int i = 0; i < nodes; i++)
            printf("broker %d: pid %d listen %s http %s data %s\n", s.nodes[i].id,
                   (int)s.nodes[i].pid, s.nodes[i].listen, s.nodes[i].http, s.nodes[i].data_dir);
        printf("VERITY_BROKER=%s\n", boot);
    }
    return CMD_EXIT_OK;
}

static int do_stop(const char *dir, int timeout_ms)
{
    struct state s;
    if (state_load(dir, &s) != 0)
        return CMD_EXIT_FAIL;
    for (int i = 0; i < s.n; i++)
        if (pid_alive(s.nodes[i].pid))
            (void)kill(s.nodes[i].pid, SIGTERM); /* all at once, then wait for each */
    for (int i = 0; i < s.n; i++)
        stop_one(&s.nodes[i], timeout_ms);
    if (state_save(&s) != 0)
        return CMD_EXIT_FAIL;
    printf("stopped %d brokers in %s\n", s.n, s.dir);
    return CMD_EXIT_OK;
}

static int do_restart(const char *dir, int id, int timeout_ms, bool rejoin)
{
    struct state s;
    if (state_load(dir, &s) != 0)
        return CMD_EXIT_FAIL;
    struct node *nd = NULL;
    for (int i = 0; i < s.n; i++)
        if (s.nodes[i].id == id)
            nd = &s.nodes[i];
    if (!nd) {
        fprintf(stderr, "verity cluster: no broker %d in %s\n", id, dir);
        return CMD_EXIT_USAGE;
    }
    stop_one(nd, timeout_ms);
    if (spawn(&s, nd, rejoin) != 0 || state_save(&s) != 0)
        return CMD_EXIT_FAIL;
    if (wait_up(nd, now_ms() + START_TIMEOUT_MS) != 0) {
        fprintf(stderr, "verity cluster: broker %d did not come up (see %s/node%d.log)\n", id,
                s.dir, id);
        return CMD_EXIT_FAIL;
    }
    printf("broker %d: pid %d%s\n", id, (int)nd->pid, rejoin ? " (rejoin)" : "");
    return CMD_EXIT_OK;
}

/* ---- status ----------------------------------------------------------------- */

static void print_status(const char *http, json_t *c)
{
    printf("broker %" JSON_INTEGER_FORMAT " (%s)\n", json_integer_value(json_object_get(c, "node_id")),
           http);
    json_t *nodes = json_object_get(c, "nodes"), *v;
    size_t i;
    json_array_foreach(nodes, i, v) {
        printf("  node %" JSON_INTEGER_FORMAT " listen %s peer %s %s\n",
               json_integer_value(json_object_get(v, "id")),
               json_string_value(json_object_get(v, "listen")) ?: "?",
               json_string_value(json_object_get(v, "peer")) ?: "?",
               json_is_true(json_object_get(v, "connected")) ? "connected" : "-");
    }
    json_t *parts = json_object_get(c, "partitions");
    json_array_foreach(parts, i, v) {
        printf("  %s/%" JSON_INTEGER_FORMAT " %s primary %" JSON_INTEGER_FORMAT
               " view %" JSON_INTEGER_FORMAT " commit %" JSON_INTEGER_FORMAT
               " op %" JSON_INTEGER_FORMAT,
               json_string_value(json_object_get(v, "topic")) ?: "?",
               json_integer_value(json_object_get(v, "partition")),
               json_string_value(json_object_get(v, "role")) ?: "?",
               json_integer_value(json_object_get(v, "primary")),
               json_integer_value(json_object_get(v, "view")),
               json_integer_value(json_object_get(v, "commit")),
               json_integer_value(json_object_get(v, "op")));
        json_t *b, *backups = json_object_get(v, "backups");
        size_t k;
        json_array_foreach(backups, k, b) {
            printf(" backup %" JSON_INTEGER_FORMAT " lag %" JSON_INTEGER_FORMAT,
                   json_integer_value(json_object_get(b, "id")),
                   json_integer_value(json_object_get(b, "lag")));
        }
        if (json_is_true(json_object_get(v, "rejoining")))
            printf(" rejoining (applied %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT ")",
                   json_integer_value(json_object_get(v, "applied")),
                   json_integer_value(json_object_get(v, "rejoin_target")));
        printf("\n");
    }
}

static int do_status(const char *dir, const char *brokers, bool json)
{
    char *list[NODES_MAX * 4];
    size_t n = 0;
    struct state s;
    if (dir) {
        if (state_load(dir, &s) != 0)
            return CMD_EXIT_FAIL;
        for (int i = 0; i < s.n; i++)
            list[n++] = strdup(s.nodes[i].http);
    } else {
        char *copy = strdup(brokers), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t && n < sizeof list / sizeof list[0];
             t = strtok_r(NULL, ",", &save))
            list[n++] = strdup(t);
        free(copy);
    }
    json_t *out = json_array();
    int rc = CMD_EXIT_OK;
    for (size_t i = 0; i < n; i++) {
        char *body = NULL;
        int st = list[i] ? http_get(list[i], "/cluster", &body) : -ENOMEM;
        json_error_t je;
        json_t *c = st == 200 ? json_loads(body, 0, &je) : NULL;
        if (!c) {
            rc = CMD_EXIT_FAIL;
            if (json) {
                json_t *e = json_object();
                json_object_set_new(e, "http", json_string(list[i] ? list[i] : ""));
                json_object_set_new(e, "error", json_string(st < 0 ? strerror(-st)
                                                                  : "no /cluster answer"));
                json_array_append_new(out, e);
            } else {
                printf("broker at %s: %s\n", list[i] ? list[i] : "?",
                       st < 0 ? strerror(-st) : "no /cluster answer (HTTP error or not JSON)");
            }
        } else if (json) {
            json_object_set_new(c, "http", json_string(list[i]));
            json_array_append(out, c);
        } else {
            print_status(list[i], c);
        }
        json_decref(c);
        free(body);
        free(list[i]);
    }
    if (json) {
        json_t *o = json_object();
        json_object_set_new(o, "brokers", out);
        char *txt = json_dumps(o, JSON_COMPACT);
        printf("%s\n", txt);
        free(txt);
        json_decref(o);
    } else {
        json_decref(out);
    }
    return rc;
}

/* ---- arguments ------------------------------------------------------------ */

int cmd_cluster(int argc, char **argv)
{
    enum { O_NODES = 1, O_DIR, O_JSON, O_ID, O_BROKER, O_VERITYD, O_TIMEOUT, O_HELP, O_RELAYS,
           O_REJOIN };
    static const struct option lo[] = {
        {"nodes", required_argument, NULL, O_NODES},   {"dir", required_argument, NULL, O_DIR},
        {"json", no_argument, NULL, O_JSON},           {"id", required_argument, NULL, O_ID},
        {"broker", required_argument, NULL, O_BROKER}, {"verityd", required_argument, NULL, O_VERITYD},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT}, {"help", no_argument, NULL, O_HELP},
        {"relays", no_argument, NULL, O_RELAYS},
        {"rejoin", no_argument, NULL, O_REJOIN},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CMD_EXIT_USAGE : CMD_EXIT_OK;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "start") && strcmp(sub, "stop") && strcmp(sub, "restart") &&
        strcmp(sub, "status")) {
        fprintf(stderr, "verity cluster: unknown subcommand '%s'\n", sub);
        usage(stderr);
        return CMD_EXIT_USAGE;
    }
    int nodes = 0, id = 0, timeout_ms = STOP_TIMEOUT_MS;
    const char *dir = NULL, *broker = NULL, *verityd = NULL;
    bool json = false, relays = false, rejoin = false;
    int c;
    optind = 1;
    while ((c = CLI_GETOPT(argc - 1, argv + 1, "h", lo)) != -1) {
        char *end = NULL;
        switch (c) {
        case O_NODES:
            nodes = (int)strtol(optarg, &end, 10);
            if (*end || (nodes != 3 && nodes != 5))
                return cli_bad_value("verity cluster", "--nodes", optarg, "3 or 5");
            break;
        case O_ID:
            id = (int)strtol(optarg, &end, 10);
            if (*end || id < 1 || id > NODES_MAX)
                return cli_bad_value("verity cluster", "--id", optarg, "a node id 1..5");
            break;
        case O_TIMEOUT:
            timeout_ms = (int)strtol(optarg, &end, 10);
            if (*end || timeout_ms < 0)
                return cli_bad_value("verity cluster", "--timeout-ms", optarg, "milliseconds");
            break;
        case O_DIR:
            dir = optarg;
            break;
        case O_BROKER:
            broker = optarg;
            break;
        case O_VERITYD:
            verityd = optarg;
            break;
        case O_JSON:
            json = true;
            break;
        case O_RELAYS:
            relays = true;
            break;
        case O_REJOIN:
            rejoin = true;
            break;
        case O_HELP:
        case 'h':
            usage(stdout);
            return CMD_EXIT_OK;
        default:
            return cli_bad_args("verity cluster", c, lo, argv + 1, usage);
        }
    }
    if (optind < argc - 1) {
        fprintf(stderr, "verity cluster %s: unexpected argument '%s'\n", sub, argv[optind + 1]);
        return CMD_EXIT_USAGE;
    }
    if (strcmp(sub, "start") == 0) {
        if (!nodes || !dir) {
            fprintf(stderr, "verity cluster start: --nodes 3|5 and --dir DIR are required\n");
            return CMD_EXIT_USAGE;
        }
        return do_start(nodes, dir, verityd, json, relays);
    }
    if (strcmp(sub, "status") == 0) {
        if (!dir == !broker) {
            fprintf(stderr, "verity cluster status: give --dir DIR or --broker HTTP,HTTP,...\n");
            return CMD_EXIT_USAGE;
        }
        return do_status(dir, broker, json);
    }
    if (!dir) {
        fprintf(stderr, "verity cluster %s: --dir DIR is required\n", sub);
        return CMD_EXIT_USAGE;
    }
    if (strcmp(sub, "stop") == 0)
        return do_stop(dir, timeout_ms);
    if (!id) {
        fprintf(stderr, "verity cluster restart: --id N is required\n");
        return CMD_EXIT_USAGE;
    }
    return do_restart(dir, id, timeout_ms, rejoin);
}
