/*
 * witness_push: offers partitions' checkpoints to C2SP tlog-witnesses and
 * keeps their cosignatures (see witness_push.h).
 *
 * Per (partition, witness) at most one request is in flight. A round is
 * one tree size n of one partition: Verity signs the checkpoint of n once
 * and offers it to every witness with the proof from that witness's last
 * known size (wsize, read from witness-<id>.size at first use, else 0):
 *
 *   200  the body's cosignature lines must verify with the witness's key
 *        over this note (else `witness_bad_cosignature`); the lines join
 *        the round, the round becomes the served cosigned checkpoint, and
 *        wsize = n.
 *   409  (text/x.tlog.size) the witness holds another size S: when S is
 *        not the size we sent and S <= n, resend once from S; otherwise
 *        (same size with another root, or a larger tree than ours) it is a
 *        split view: `witness_conflict`, not retried for this round.
 *   422  the proof does not connect the witness's tree to ours: a fork,
 *        `witness_conflict`, not retried for this round.
 *   else (403, 404, 400, 5xx, bad answer) `witness_rejected`; no answer
 *        (refused, timeout) `witness_unreachable`; both retried after
 *        witness_interval_ms.
 *
 * Cosignatures are kept only for the newest round that has any; its note
 * plus the lines is written to <partition>/tree.cosigned and each
 * witness's size to witness-<id>.size, through a rename but without an
 * fsync (they are re-obtained from the witnesses after a crash, and a lost
 * size costs one 409 round trip), so no fsync runs on the event loop.
 */
#include "broker/witness_push.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "broker/blog.h"
#include "broker/broker_int.h"
#include "storage/merkle.h"
#include "storage/note.h"
#include "storage/proof.h"
#include "storage/tproof.h"
#include "verity/errors.h"

#define WP_BUCKETS   1024
#define WP_RESP_MAX  (64u << 10)
#define WP_URL_MAX   512

struct wp_witness {
    char url[WP_URL_MAX];
    char host[256];
    uint16_t port;
    char host_hdr[300]; /* the Host header: host[:port], [v6] in brackets */
    char path[WP_URL_MAX + 32]; /* <prefix>/add-checkpoint */
    char vkey_text[NOTE_VKEY_MAX + 1];
    struct note_vkey vkey;
    struct evhttp_connection *conn;
    /* counters since start (metrics) */
    uint64_t requests, cosigned, conflicts, rejected, errors, bad_cosig;
    int64_t last_cosigned_ms;
    /* witness_unreachable / witness_rejected: at most one line per witness
     * per WP_LOG_MS (every partition meets the same dead witness) */
    int64_t log_ms;
    uint64_t log_suppressed;
};

#define WP_LOG_MS 10000

/* True when a routine failure line for w may be written now; else counts it. */
static bool log_ok(struct wp_witness *w)
{
    int64_t now = now_ms();
    if (w->log_ms && now - w->log_ms < WP_LOG_MS) {
        w->log_suppressed++;
        return false;
    }
    w->log_ms = now;
    return true;
}

struct wp_part {
    struct wp_part *hnext;
    char topic[VERITY_TOPIC_NAME_MAX + 1];
    uint32_t id;
    char *dir;
    uint64_t wsize[WPUSH_MAX]; /* the size each witness holds for this origin, as far as known */
    bool busy[WPUSH_MAX];      /* a request in flight */
    bool stuck[WPUSH_MAX];     /* refused this round as inconsistent: not offered again */
    bool retried[WPUSH_MAX];   /* this round was already resent after a 409 */
    uint64_t round_size;       /* 0: no round yet */
    char round_note[PROOF_CHECKPOINT_MAX];
    size_t round_len;
    char *lines[WPUSH_MAX];    /* cosignature lines of the round's note */
    char *best;                /* served: a note plus lines (NUL-terminated) */
    uint64_t best_size;
    int64_t offered_ms;
};

struct wp_call {
    struct wpush *wp;
    struct wp_part *pp;
    int w;
    uint64_t old, size;
    char note[PROOF_CHECKPOINT_MAX];
    size_t note_len;
    TAILQ_ENTRY(wp_call) link;
};

struct wpush {
    struct broker *b;
    struct wp_witness w[WPUSH_MAX];
    int n;
    struct evdns_base *dns;
    struct event *tick;
    struct wp_part *buckets[WP_BUCKETS];
    TAILQ_HEAD(, wp_call) calls;
};

/* ---- configuration ----------------------------------------------------- */

/* Splits "http://HOST[:PORT][/PREFIX]" into w's host, port and path. */
static int parse_url(const char *url, struct wp_witness *w)
{
    if (strncmp(url, "http://", 7) != 0 || strlen(url) >= WP_URL_MAX)
        return VERITY_EINVAL;
    const char *p = url + 7;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    char hp[300];
    if (hl == 0 || hl >= sizeof hp)
        return VERITY_EINVAL;
    memcpy(hp, p, hl);
    hp[hl] = '\0';
    if (bcfg_split_hostport(hp, w->host, sizeof w->host, &w->port)) {
        if (strchr(hp, ':') || hl >= sizeof w->host)
            return VERITY_EINVAL;
        memcpy(w->host, hp, hl + 1);
        w->port = 80;
    }
    if (w->port == 0 || !w->host[0])
        return VERITY_EINVAL;
    const char *prefix = slash ? slash : "";
    size_t pl = strlen(prefix);
    while (pl > 0 && prefix[pl - 1] == '/')
        pl--;
    snprintf(w->path, sizeof w->path, "%.*s/add-checkpoint", (int)pl, prefix);
    snprintf(w->url, sizeof w->url, "%s", url);
    bool v6 = strchr(w->host, ':') != NULL;
    if (w->port == 80)
        snprintf(w->host_hdr, sizeof w->host_hdr, v6 ? "[%s]" : "%s", w->host);
    else
        snprintf(w->host_hdr, sizeof w->host_hdr, v6 ? "[%s]:%u" : "%s:%u", w->host,
                 (unsigned)w->port);
    return 0;
}

/* Parses the witnesses text into ws (*n entries). */
static int parse_config(const char *text, struct wp_witness *ws, int *n, char *err, size_t cap)
{
    char buf[WPUSH_TEXT_MAX];
    *n = 0;
    if (strlen(text) >= sizeof buf) {
        snprintf(err, cap, "witnesses: longer than %d bytes", WPUSH_TEXT_MAX - 1);
        return VERITY_EINVAL;
    }
    snprintf(buf, sizeof buf, "%s", text);
    char *save = NULL;
    for (char *item = strtok_r(buf, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        while (*item == ' ' || *item == '\t' || *item == '\n')
            item++;
        if (!*item)
            continue;
        if (*n >= WPUSH_MAX) {
            snprintf(err, cap, "witnesses: more than %d", WPUSH_MAX);
            return VERITY_EINVAL;
        }
        struct wp_witness *w = &ws[*n];
        memset(w, 0, sizeof *w);
        char *sp = strpbrk(item, " \t");
        if (!sp) {
            snprintf(err, cap, "witnesses: expected \"URL VKEY\" in \"%.60s\"", item);
            return VERITY_EINVAL;
        }
        *sp = '\0';
        char *vk = sp + 1;
        while (*vk == ' ' || *vk == '\t')
            vk++;
        size_t vl = strcspn(vk, " \t\n");
        vk[vl] = '\0';
        if (parse_url(item, w)) {
            snprintf(err, cap, "witnesses: bad URL \"%.60s\" (expected http://HOST:PORT[/PREFIX])",
                     item);
            return VERITY_EINVAL;
        }
        if (vl > NOTE_VKEY_MAX || note_vkey_parse(vk, &w->vkey) ||
            w->vkey.type != NOTE_TYPE_COSIG) {
            snprintf(err, cap,
                     "witnesses: \"%.60s\" is not a cosignature verifier key (type 0x04, "
                     "`verity witness --print-key`)",
                     vk);
            return VERITY_EINVAL;
        }
        snprintf(w->vkey_text, sizeof w->vkey_text, "%s", vk);
        for (int i = 0; i < *n; i++)
            if (ws[i].vkey.id == w->vkey.id && strcmp(ws[i].vkey.name, w->vkey.name) == 0) {
                snprintf(err, cap, "witnesses: key %s listed twice", w->vkey.name);
                return VERITY_EINVAL;
            }
        (*n)++;
    }
    return 0;
}

int wpush_check_config(const char *text, char *err, size_t cap)
{
    static struct wp_witness ws[WPUSH_MAX];
    int n;
    return parse_config(text, ws, &n, err, cap);
}

/* ---- partition state --------------------------------------------------- */

static unsigned part_hash(const char *topic, uint32_t id)
{
    uint32_t h = 2166136261u;
    for (const char *p = topic; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ id) * 16777619u;
    return h % WP_BUCKETS;
}

static void size_path(const struct wp_part *pp, const struct wp_witness *w, char *out, size_t cap)
{
    snprintf(out, cap, "%s/witness-%08" PRIx32 ".size", pp->dir, w->vkey.id);
}

static struct wp_part *part_get(struct wpush *wp, const char *topic, uint32_t id, const char *dir)
{
    unsigned h = part_hash(topic, id);
    for (struct wp_part *pp = wp->buckets[h]; pp; pp = pp->hnext)
        if (pp->id == id && strcmp(pp->topic, topic) == 0)
            return pp;
    struct wp_part *pp = calloc(1, sizeof *pp);
    if (!pp || !(pp->dir = strdup(dir))) {
        free(pp);
        return NULL;
    }
    snprintf(pp->topic, sizeof pp->topic, "%s", topic);
    pp->id = id;
    for (int i = 0; i < wp->n; i++) {
        char path[BCFG_PATH_MAX + 64];
        size_path(pp, &wp->w[i], path, sizeof path);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%" SCNu64, &pp->wsize[i]) != 1)
                pp->wsize[i] = 0;
            fclose(f);
        }
    }
    pp->hnext = wp->buckets[h];
    wp->buckets[h] = pp;
    return pp;
}

static struct wp_part *part_find(struct wpush *wp, const char *topic, uint32_t id)
{
    for (struct wp_part *pp = wp->buckets[part_hash(topic, id)]; pp; pp = pp->hnext)
        if (pp->id == id && strcmp(pp->topic, topic) == 0)
            return pp;
    return NULL;
}

static void round_clear(struct wp_part *pp)
{
    for (int i = 0; i < WPUSH_MAX; i++) {
        free(pp->lines[i]);
        pp->lines[i] = NULL;
        pp->stuck[i] = pp->retried[i] = false;
    }
}

static void part_free(struct wp_part *pp)
{
    round_clear(pp);
    free(pp->best);
    free(pp->dir);
    free(pp);
}

/* Replaces path with data through a rename; no fsync (see the file comment). */
static int write_file(const char *path, const char *data, size_t len)
{
    char tmp[BCFG_PATH_MAX + 80];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    int rc = write(fd, data, len) == (ssize_t)len ? 0 : -EIO;
    if (close(fd) != 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        (void)unlink(tmp);
    return rc;
}

/* The round's note plus every line collected becomes the served one. */
static void publish_round(struct wpush *wp, struct wp_part *pp)
{
    size_t len = pp->round_len;
    for (int i = 0; i < wp->n; i++)
        if (pp->lines[i])
            len += strlen(pp->lines[i]);
    char *s = malloc(len + 1);
    if (!s)
        return;
    memcpy(s, pp->round_note, pp->round_len);
    size_t o = pp->round_len;
    for (int i = 0; i < wp->n; i++)
        if (pp->lines[i]) {
            size_t l = strlen(pp->lines[i]);
            memcpy(s + o, pp->lines[i], l);
            o += l;
        }
    s[o] = '\0';
    free(pp->best);
    pp->best = s;
    pp->best_size = pp->round_size;
    char path[BCFG_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/tree.cosigned", pp->dir);
    int rc = write_file(path, s, o);
    if (rc)
        blog(BLOG_WARN, "witness_state_write_failed", "topic=%s partition=%" PRIu32 " path=%s error=%s",
             pp->topic, pp->id, path, verity_errname(rc));
}

static void save_size(struct wpush *wp, struct wp_part *pp, int w)
{
    char path[BCFG_PATH_MAX + 64], txt[32];
    size_path(pp, &wp->w[w], path, sizeof path);
    int l = snprintf(txt, sizeof txt, "%" PRIu64 "\n", pp->wsize[w]);
    int rc = write_file(path, txt, (size_t)l);
    if (rc)
        blog(BLOG_WARN, "witness_state_write_failed", "topic=%s partition=%" PRIu32 " path=%s error=%s",
             pp->topic, pp->id, path, verity_errname(rc));
}

/* ---- requests ------------------------------------------------------------ */

static void on_response(struct evhttp_request *req, void *arg);

/* The partition's log with a usable tree, or NULL (deleted, failed). */
static struct vlog *part_log(struct wpush *wp, struct wp_part *pp)
{
    struct partition *p = NULL;
    char msg[128];
    if (topic_partition(wp->b, pp->topic, pp->id, &p, msg, sizeof msg) || !p->log ||
        !vlog_tree(p->log))
        return NULL;
    return p->log;
}

/* Sends the round's checkpoint to witness w with the proof from old. */
static void offer(struct wpush *wp, struct wp_part *pp, int w, uint64_t old)
{
    struct wp_witness *wi = &wp->w[w];
    struct vlog *log = part_log(wp, pp);
    if (!log || pp->busy[w])
        return;
    if (old > pp->round_size) {
        /* the witness cosigned a larger tree of this origin than we have */
        pp->stuck[w] = true;
        wi->conflicts++;
        blog(BLOG_ERROR, "witness_conflict",
             "topic=%s partition=%" PRIu32 " witness=%s size=%" PRIu64 " witness_size=%" PRIu64
             " reason=witness_ahead",
             pp->topic, pp->id, wi->vkey.name, pp->round_size, old);
        return;
    }
    struct tproof_witness_req r = {.old_size = old, .note = pp->round_note,
                                   .note_len = pp->round_len};
    uint8_t path[MT_PROOF_MAX][MT_HASH_SIZE];
    char *body = NULL;
    size_t blen = 0;
    int rc = mt_prove_consistency(vlog_tree(log), old, pp->round_size, path, &r.npath);
    if (!rc && r.npath > TPROOF_WITNESS_PROOF_MAX)
        rc = VERITY_ELIMIT;
    if (!rc) {
        memcpy(r.path, path, r.npath * MT_HASH_SIZE);
        rc = tproof_witness_format(&r, &body, &blen);
    }
    struct wp_call *c = rc ? NULL : calloc(1, sizeof *c);
    struct evhttp_request *req = c ? evhttp_request_new(on_response, c) : NULL;
    if (!req) {
        free(body);
        free(c);
        blog(BLOG_WARN, "witness_rejected",
             "topic=%s partition=%" PRIu32 " witness=%s status=0 reason=local_error error=%s",
             pp->topic, pp->id, wi->vkey.name, verity_errname(rc ? rc : -ENOMEM));
        return;
    }
    c->wp = wp;
    c->pp = pp;
    c->w = w;
    c->old = old;
    c->size = pp->round_size;
    memcpy(c->note, pp->round_note, pp->round_len);
    c->note_len = pp->round_len;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", wi->host_hdr);
    evhttp_add_header(h, "Content-Type", "text/plain; charset=utf-8");
    evbuffer_add(evhttp_request_get_output_buffer(req), body, blen);
    free(body);
    TAILQ_INSERT_TAIL(&wp->calls, c, link);
    pp->busy[w] = true;
    wi->requests++;
    if (evhttp_make_request(wi->conn, req, EVHTTP_REQ_POST, wi->path) != 0) {
        /* libevent failed before queueing; the request is its to free */
        TAILQ_REMOVE(&wp->calls, c, link);
        free(c);
        pp->busy[w] = false;
        wi->errors++;
        if (log_ok(wi)) {
            blog(BLOG_WARN, "witness_unreachable",
                 "topic=%s partition=%" PRIu32 " witness=%s url=%s suppressed=%" PRIu64, pp->topic,
                 pp->id, wi->vkey.name, wi->url, wi->log_suppressed);
            wi->log_suppressed = 0;
        }
    }
}

/* First line of a body, quoted for the log. */
static const char *first_line(const char *body, char *q, size_t cap)
{
    char line[160];
    size_t l = strcspn(body, "\n");
    if (l >= sizeof line)
        l = sizeof line - 1;
    memcpy(line, body, l);
    line[l] = '\0';
    return blog_q(line, q, cap);
}

/* A 200's body: keeps the lines that verify with the witness's key. */
static void got_cosignature(struct wpush *wp, struct wp_call *c, const char *body, size_t blen)
{
    struct wp_part *pp = c->pp;
    struct wp_witness *wi = &wp->w[c->w];
    bool ok = tproof_cosig_check(c->note, c->note_len, body, blen, &wi->vkey) == 0;
    if (!ok) {
        wi->bad_cosig++;
        char q[200];
        blog(BLOG_ERROR, "witness_bad_cosignature",
             "topic=%s partition=%" PRIu32 " witness=%s size=%" PRIu64 " answer=%s", pp->topic,
             pp->id, wi->vkey.name, c->size, first_line(body, q, sizeof q));
        return;
    }
    wi->cosigned++;
    wi->last_cosigned_ms = now_ms();
    if (pp->wsize[c->w] != c->size) {
        pp->wsize[c->w] = c->size;
        save_size(wp, pp, c->w);
    }
    blog(BLOG_DEBUG, "witness_cosigned", "topic=%s partition=%" PRIu32 " witness=%s size=%" PRIu64,
         pp->topic, pp->id, wi->vkey.name, c->size);
    if (c->size != pp->round_size)
        return; /* an older round: the witness moved on, our served one is newer */
    char *line = malloc(blen + 1);
    if (!line)
        return;
    memcpy(line, body, blen);
    line[blen] = '\0';
    free(pp->lines[c->w]);
    pp->lines[c->w] = line;
    publish_round(wp, pp);
}

static void on_response(struct evhttp_request *req, void *arg)
{
    struct wp_call *c = arg;
    struct wpush *wp = c->wp;
    struct wp_part *pp = c->pp;
    struct wp_witness *wi = &wp->w[c->w];
    TAILQ_REMOVE(&wp->calls, c, link);
    pp->busy[c->w] = false;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    char body[WP_RESP_MAX + 1];
    size_t blen = 0;
    if (req && code > 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t have = evbuffer_get_length(in);
        blen = have > WP_RESP_MAX ? WP_RESP_MAX : have;
        evbuffer_copyout(in, body, blen);
    }
    body[blen] = '\0';
    const char *ctype = req ? evhttp_find_header(evhttp_request_get_input_headers(req),
                                                 "Content-Type")
                            : NULL;
    char q[200];
    if (code == 0) {
        wi->errors++;
        if (log_ok(wi)) {
            blog(BLOG_WARN, "witness_unreachable",
                 "topic=%s partition=%" PRIu32 " witness=%s url=%s suppressed=%" PRIu64, pp->topic,
                 pp->id, wi->vkey.name, wi->url, wi->log_suppressed);
            wi->log_suppressed = 0;
        }
    } else if (code == 200) {
        got_cosignature(wp, c, body, blen);
    } else if (code == 409 && ctype && strncmp(ctype, "text/x.tlog.size", 16) == 0) {
        uint64_t theirs = 0;
        bool parsed = tproof_size_parse(body, blen, &theirs) == 0;
        if (parsed && theirs != c->old && theirs <= c->size && !pp->retried[c->w] &&
            c->size == pp->round_size) {
            /* it holds another size of the same tree: resend from there */
            pp->retried[c->w] = true;
            pp->wsize[c->w] = theirs;
            offer(wp, pp, c->w, theirs);
        } else {
            pp->stuck[c->w] = c->size == pp->round_size;
            wi->conflicts++;
            blog(BLOG_ERROR, "witness_conflict",
                 "topic=%s partition=%" PRIu32 " witness=%s size=%" PRIu64 " old=%" PRIu64
                 " witness_size=%s reason=%s",
                 pp->topic, pp->id, wi->vkey.name, c->size, c->old, first_line(body, q, sizeof q),
                 !parsed             ? "bad_size"
                 : theirs > c->size  ? "witness_ahead"
                 : theirs == c->old  ? "same_size_other_root"
                                     : "size_moved_again");
        }
    } else if (code == 422) {
        pp->stuck[c->w] = c->size == pp->round_size;
        wi->conflicts++;
        blog(BLOG_ERROR, "witness_conflict",
             "topic=%s partition=%" PRIu32 " witness=%s size=%" PRIu64 " old=%" PRIu64
             " reason=proof_refused",
             pp->topic, pp->id, wi->vkey.name, c->size, c->old);
    } else {
        wi->rejected++;
        if (log_ok(wi)) {
            blog(BLOG_WARN, "witness_rejected",
                 "topic=%s partition=%" PRIu32 " witness=%s status=%d answer=%s suppressed=%" PRIu64,
                 pp->topic, pp->id, wi->vkey.name, code, first_line(body, q, sizeof q),
                 wi->log_suppressed);
            wi->log_suppressed = 0;
        }
    }
    free(c);
}

/* ---- the tick ------------------------------------------------------------ */

static void part_tick(struct wpush *wp, struct topic *t, struct partition *p, int64_t now)
{
    const struct broker_config *cfg = &wp->b->cfg;
    uint64_t n = 0;
    if (!p->log || p->error || !vlog_tree(p->log) || proof_durable_size(p->log, &n) || n == 0)
        return;
    struct wp_part *pp = part_get(wp, t->name, p->id, p->dir);
    if (!pp)
        return;
    if (n < pp->round_size) {
        /* a new log under the same name (topic deleted and created again) */
        round_clear(pp);
        pp->round_size = 0;
    }
    bool due = now - pp->offered_ms >= (int64_t)cfg->witness_interval_ms ||
               (cfg->witness_every_batches && n >= pp->round_size + cfg->witness_every_batches);
    if (!due)
        return;
    if (n > pp->round_size) {
        struct proof_signer s;
        if (proof_signer_init(&s, wp->b->signing_key, cfg->tlog_name, t->name, p->id))
            return;
        int nl = proof_checkpoint(p->log, &s, n, pp->round_note, sizeof pp->round_note);
        if (nl < 0)
            return;
        round_clear(pp);
        pp->round_size = n;
        pp->round_len = (size_t)nl;
    }
    pp->offered_ms = now;
    for (int i = 0; i < wp->n; i++)
        if (!pp->busy[i] && !pp->lines[i] && !pp->stuck[i])
            offer(wp, pp, i, pp->wsize[i]);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct wpush *wp = arg;
    struct broker *b = wp->b;
    if (!b->ready || b->stopping)
        return;
    int64_t now = now_ms();
    struct topic *t;
    TAILQ_FOREACH(t, &b->topics, link)
    {
        if (!t->ready || t->deleting)
            continue;
        for (uint32_t i = 0; i < t->cfg.partitions; i++)
            if (t->parts[i])
                part_tick(wp, t, t->parts[i], now);
    }
}

/* ---- start, stop, read --------------------------------------------------- */

static bool numeric_host(const char *h)
{
    struct evutil_addrinfo hints = {.ai_flags = EVUTIL_AI_NUMERICHOST}, *ai = NULL;
    if (evutil_getaddrinfo(h, NULL, &hints, &ai) != 0)
        return false;
    evutil_freeaddrinfo(ai);
    return true;
}

int wpush_start(struct broker *b)
{
    char err[256];
    if (!b->cfg.witnesses[0])
        return 0;
    if (!b->signing_key) {
        blog(BLOG_WARN, "witness_push_off", "reason=%s", "no signing key");
        return 0;
    }
    struct wpush *wp = calloc(1, sizeof *wp);
    if (!wp)
        return -ENOMEM;
    wp->b = b;
    TAILQ_INIT(&wp->calls);
    int rc = parse_config(b->cfg.witnesses, wp->w, &wp->n, err, sizeof err);
    if (rc) {
        char q[300];
        blog(BLOG_ERROR, "witness_config_failed", "reason=%s", blog_q(err, q, sizeof q));
        free(wp);
        return rc;
    }
    b->wpush = wp;
    for (int i = 0; i < wp->n; i++)
        if (!numeric_host(wp->w[i].host) && !wp->dns &&
            !(wp->dns = evdns_base_new(b->base, EVDNS_BASE_INITIALIZE_NAMESERVERS)))
            rc = -ENOMEM;
    struct timeval tmo = {b->cfg.witness_timeout_ms / 1000,
                          (b->cfg.witness_timeout_ms % 1000) * 1000};
    for (int i = 0; i < wp->n && !rc; i++) {
        struct wp_witness *w = &wp->w[i];
        if (!(w->conn = evhttp_connection_base_new(b->base, wp->dns, w->host, w->port))) {
            rc = -ENOMEM;
            break;
        }
        evhttp_connection_set_timeout_tv(w->conn, &tmo);
        evhttp_connection_set_retries(w->conn, 0);
    }
    uint32_t period = b->cfg.witness_interval_ms;
    if (b->cfg.witness_every_batches && period > 200)
        period = 200; /* look at growth often; offer when it is due */
    if (period > 1000)
        period = 1000;
    struct timeval tv = {period / 1000, (period % 1000) * 1000};
    if (!rc && (!(wp->tick = event_new(b->base, -1, EV_PERSIST, tick_cb, wp)) ||
                event_add(wp->tick, &tv)))
        rc = -ENOMEM;
    if (rc) {
        blog(BLOG_ERROR, "witness_config_failed", "reason=setup error=%s", verity_errname(rc));
        wpush_stop(b);
        return rc;
    }
    for (int i = 0; i < wp->n; i++)
        blog(BLOG_INFO, "witness_push_started", "witness=%s url=%s interval_ms=%" PRIu32
             " every_batches=%" PRIu32,
             wp->w[i].vkey.name, wp->w[i].url, b->cfg.witness_interval_ms,
             b->cfg.witness_every_batches);
    return 0;
}

void wpush_stop(struct broker *b)
{
    struct wpush *wp = b->wpush;
    if (!wp)
        return;
    if (wp->tick)
        event_free(wp->tick);
    /* Freeing a connection drops its queued requests without calling back. */
    for (int i = 0; i < wp->n; i++)
        if (wp->w[i].conn)
            evhttp_connection_free(wp->w[i].conn);
    struct wp_call *c;
    while ((c = TAILQ_FIRST(&wp->calls))) {
        TAILQ_REMOVE(&wp->calls, c, link);
        free(c);
    }
    if (wp->dns)
        evdns_base_free(wp->dns, 0);
    for (int h = 0; h < WP_BUCKETS; h++)
        while (wp->buckets[h]) {
            struct wp_part *pp = wp->buckets[h];
            wp->buckets[h] = pp->hnext;
            part_free(pp);
        }
    free(wp);
    b->wpush = NULL;
}

const char *wpush_cosigned(struct broker *b, const char *topic, uint32_t partition, uint64_t *size)
{
    struct wpush *wp = b->wpush;
    struct wp_part *pp = wp ? part_find(wp, topic, partition) : NULL;
    if (!pp || !pp->best)
        return NULL;
    *size = pp->best_size;
    return pp->best;
}

/* A key name as a Prometheus label value (no quote or backslash to escape). */
static const char *label(const char *name, char *out, size_t cap)
{
    size_t i = 0;
    for (; name[i] && i + 1 < cap; i++)
        out[i] = name[i] == '"' || name[i] == '\\' ? '_' : name[i];
    out[i] = '\0';
    return out;
}

void wpush_metrics_render(struct broker *b, struct evbuffer *o)
{
    struct wpush *wp = b->wpush;
    if (!wp)
        return;
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } fam[] = {
        {"verity_witness_requests_total", "counter", "add-checkpoint requests sent to the witness.",
         offsetof(struct wp_witness, requests)},
        {"verity_witness_cosignatures_total", "counter",
         "Cosignatures received that verified with the witness's key.",
         offsetof(struct wp_witness, cosigned)},
        {"verity_witness_conflicts_total", "counter",
         "Answers saying the witness holds another tree for the origin (409 same size or larger, "
         "422).",
         offsetof(struct wp_witness, conflicts)},
        {"verity_witness_rejections_total", "counter",
         "Other error answers (400, 403, 404, 5xx).", offsetof(struct wp_witness, rejected)},
        {"verity_witness_bad_cosignatures_total", "counter",
         "200 answers whose cosignature did not verify with the configured key.",
         offsetof(struct wp_witness, bad_cosig)},
        {"verity_witness_errors_total", "counter", "Requests without an answer (refused, timeout).",
         offsetof(struct wp_witness, errors)},
    };
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        met_family(o, fam[f].name, fam[f].type, fam[f].help);
        for (int i = 0; i < wp->n; i++) {
            char q[NOTE_NAME_MAX + 1];
            uint64_t v = *(const uint64_t *)((const char *)&wp->w[i] + fam[f].off);
            evbuffer_add_printf(o, "%s{witness=\"%s\"} %" PRIu64 "\n", fam[f].name,
                                label(wp->w[i].vkey.name, q, sizeof q), v);
        }
    }
    met_family(o, "verity_witness_last_cosignature_timestamp_seconds", "gauge",
               "When the witness's last verified cosignature arrived (0: none yet).");
    for (int i = 0; i < wp->n; i++) {
        char q[NOTE_NAME_MAX + 1];
        evbuffer_add_printf(o, "verity_witness_last_cosignature_timestamp_seconds{witness=\"%s\"} %.3f\n",
                            label(wp->w[i].vkey.name, q, sizeof q),
                            (double)wp->w[i].last_cosigned_ms / 1000.0);
    }
}
