/*
 * verity-gateway: serves shares over HTTPS (evhttp + bufferevent_openssl,
 * TLS 1.2 minimum).
 *
 *   GET /v1/shares                 the share the bearer token grants
 *   GET /v1/shares/<id>            its description (recipient, policy, scope)
 *   GET /v1/shares/<id>/export     NDJSON export, streamed, ending with the
 *                                  signed manifest (share_export.c);
 *                                  ?topic=T (repeatable) narrows the topics,
 *                                  ?export=EID&after=N resumes export EID
 *                                  after its first N lines
 *
 * Every request: rate limit per client address, then the token (PASETO
 * v4.public, offline: signature and expiry), rate limit per share, then
 * online against the shares topic (known, scope digest equal, not revoked,
 * not expired, uses left). Every refusal and every export is appended to
 * the audit topic.
 *
 * One thread: the libevent loop. Calls to the broker (catch up with the
 * shares topic, append a use or an audit record) are synchronous libverity
 * calls on this thread, a few milliseconds each on loopback.
 *
 * Memory per export is bounded: one source partition is read at a time with
 * a consumer whose fetch and queue sizes are capped (EXPORT_FETCH_BYTES,
 * EXPORT_QUEUE_BYTES), each poll is turned into one chunk of at most about
 * EXPORT_CHUNK_BYTES that is handed to the socket, and the next poll waits
 * until that chunk has been written out. At most exports_max exports run at
 * once.
 *
 * Resumable: a new export appends a "use" record naming its id and the exact
 * offset range of every source partition; a resume re-reads those same
 * ranges, recomputes every line (all transformations are deterministic for a
 * given export id) and the body digest, and sends only the lines after N.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "consumer/share/share.h"
#include "verity/verify.h"

#define GW_VERSION "0.1.0"
#define EXPORT_CHUNK_BYTES (256u << 10)
#define EXPORT_FETCH_BYTES (1u << 20)
#define EXPORT_QUEUE_BYTES (4u << 20)
#define EXPORT_SOURCES_MAX 1024u
#define RL_SLOTS 1024u
#define HTTP_HEADERS_MAX (16u << 10)
#define STATE_TIMEOUT_MS 5000

struct rl_slot {
    char key[80];
    double tokens;
    int64_t last_ms;
};

/* Token buckets keyed by a string; the least recently used slot is reused. */
struct rl {
    double rate;                  /* tokens per second (0: no limit) */
    double burst;
    struct rl_slot slots[RL_SLOTS];
};

struct gw {
    struct event_base *base;
    struct evhttp *http;
    SSL_CTX *ssl;
    EVP_PKEY *sk;                 /* gateway Ed25519 key: tokens, manifests */
    uint8_t secret[32];           /* per-share keys derive from it */
    const char *broker;
    struct verity_client *admin;
    struct verity_producer *prod;
    struct verity_consumer *state_cons;
    struct share_db db;
    struct rl rl_addr, rl_tok;
    uint32_t exports_active, exports_max;
    char endpoint[128];
    const char *proofs;           /* http://HOST:PORT of the broker's admin API, or NULL */
};

struct exp {
    struct gw *g;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct share_entry *e;        /* entries live as long as the db */
    struct xf_keys keys;
    char eid[40];
    char client[64];
    struct export_source *src;
    size_t nsrc, cur;
    struct verity_consumer *cons; /* reading src[cur] */
    const struct verity_message *msgs; /* the last poll's messages (owned by cons) */
    size_t nmsgs, mi;             /* how many, and the next to turn into a line */
    uint64_t line;                /* body lines made (0 = header) */
    uint64_t records;
    uint64_t after;               /* lines the client already holds */
    uint64_t skipped;             /* records not JSON objects */
    EVP_MD_CTX *md;
    struct event *timer;
    struct evbuffer *line_buf;    /* one proof line being built */
    struct xf_plan plan;          /* how records become lines (share_line.c) */
    struct sh_buf rec_line;       /* one record line being built */
    /* inclusion proofs of the current source (share_proof.c) */
    size_t proof_src;             /* the source the cache below belongs to */
    json_t *leaves;               /* the last /v1/proof/leaves items */
    size_t leaf_pos;              /* the next item to look at */
    bool have_leaf, leaves_end;   /* a proof line was sent / the tree ends before */
    uint64_t leaf_base;           /* offsets of the last proven batch */
    uint32_t leaf_count;
    uint64_t proof_lines;
};

static volatile sig_atomic_t stopping;
static bool g_scan = true;        /* the scanner path of share_line.c */

/* ---- rate limits ------------------------------------------------------------------ */

static bool rl_take(struct rl *r, const char *key, int64_t now)
{
    if (r->rate <= 0)
        return true;
    struct rl_slot *s = NULL, *old = &r->slots[0];
    for (uint32_t i = 0; i < RL_SLOTS; i++) {
        if (strcmp(r->slots[i].key, key) == 0) {
            s = &r->slots[i];
            break;
        }
        if (r->slots[i].last_ms < old->last_ms)
            old = &r->slots[i];
    }
    if (!s) {
        s = old;
        snprintf(s->key, sizeof s->key, "%s", key);
        s->tokens = r->burst;
        s->last_ms = now;
    }
    s->tokens += (double)(now - s->last_ms) / 1000.0 * r->rate;
    if (s->tokens > r->burst)
        s->tokens = r->burst;
    s->last_ms = now;
    if (s->tokens < 1.0)
        return false;
    s->tokens -= 1.0;
    return true;
}

/* ---- replies and audit ------------------------------------------------------------ */

static void audit(struct gw *g, json_t *a)
{
    if (!a)
        return;
    int rc = share_append(g->prod, SHARE_AUDIT_TOPIC, a);
    if (rc)
        fprintf(stderr, "verity-gateway: audit append failed: %s\n", verity_strerror(rc));
    json_decref(a);
}

static void reply_json(struct evhttp_request *req, int code, const char *reason, json_t *body)
{
    struct evbuffer *b = evbuffer_new();
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (b && s)
        evbuffer_add_printf(b, "%s\n", s);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, reason, b);
    if (b)
        evbuffer_free(b);
    free(s);
    json_decref(body);
}

/* Refuses the request with a typed error and audits the refusal. */
static void refuse(struct gw *g, struct evhttp_request *req, int code, const char *outcome,
                   const char *msg, const struct share_spec *s, const char *sid,
                   const char *client, const char *path)
{
    json_t *a = share_audit_new("refusal", outcome, s, client, sh_now_ms());
    if (a && !s && sid)
        json_object_set_new(a, "share", json_string(sid));
    if (a) {
        json_object_set_new(a, "message", json_string(msg));
        json_object_set_new(a, "request", json_string(path));
    }
    audit(g, a);
    static const struct {
        int code;
        const char *reason;
    } reasons[] = {{400, "Bad Request"}, {401, "Unauthorized"}, {403, "Forbidden"},
                   {404, "Not Found"},   {429, "Too Many Requests"}, {503, "Service Unavailable"}};
    const char *reason = "Error";
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (reasons[i].code == code)
            reason = reasons[i].reason;
    if (code == 429)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    reply_json(req, code, reason, json_pack("{s:s, s:s}", "error", outcome, "message", msg));
}

/* ---- export ------------------------------------------------------------------------ */

static void exp_free(struct exp *x)
{
    if (!x)
        return;
    if (x->evcon)
        evhttp_connection_set_closecb(x->evcon, NULL, NULL);
    if (x->timer)
        event_free(x->timer);
    verity_consumer_free(x->cons);
    for (size_t i = 0; i < x->nsrc; i++) {
        free(x->src[i].topic);
        free(x->src[i].tree_note);
    }
    free(x->src);
    json_decref(x->leaves);
    EVP_MD_CTX_free(x->md);
    if (x->line_buf)
        evbuffer_free(x->line_buf);
    xf_plan_deinit(&x->plan);
    sh_buf_free(&x->rec_line);
    OPENSSL_cleanse(&x->keys, sizeof x->keys);
    sh_hmac_forget();
    x->g->exports_active--;
    free(x);
}

/* Appends one body line: hashed always, sent only past x->after. */
static int emit(struct exp *x, struct evbuffer *out, json_t *line)
{
    /* Insertion order is deterministic (a resumed export re-creates the
     * same bytes); sorting keys would only cost time. */
    char *s = json_dumps(line, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    size_t n = strlen(s);
    s[n] = '\n'; /* json_dumps leaves room: replace the NUL, length kept below */
    int rc = 0;
    if (n + 1 > SHARE_LINE_MAX) {
        rc = VERITY_ELIMIT;
    } else {
        EVP_DigestUpdate(x->md, s, n + 1);
        if (x->line >= x->after && evbuffer_add(out, s, n + 1) != 0)
            rc = -ENOMEM;
        x->line++;
    }
    free(s);
    return rc;
}

/* Appends one prepared body line (the contents of lb, ending in '\n'). */
static int emit_raw(struct exp *x, struct evbuffer *out, struct evbuffer *lb)
{
    size_t n = evbuffer_get_length(lb);
    if (n > SHARE_LINE_MAX)
        return VERITY_ELIMIT;
    const unsigned char *p = evbuffer_pullup(lb, -1);
    if (!p)
        return -ENOMEM;
    EVP_DigestUpdate(x->md, p, n);
    int rc = 0;
    if (x->line >= x->after && evbuffer_add(out, p, n) != 0)
        rc = -ENOMEM;
    x->line++;
    return rc;
}

static bool b64_chars(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              *s == '+' || *s == '/' || *s == '='))
            return false;
    return true;
}

/* One proof line from a /v1/proof/leaves item. The broker's strings are
 * checked to be base64 before they are written between quotes. */
static int emit_proof(struct exp *x, struct evbuffer *out, const struct export_source *src,
                      const json_t *it)
{
    const json_t *path = json_object_get(it, "proof"), *idx = json_object_get(it, "index");
    const char *leaf = json_string_value(json_object_get(it, "leaf"));
    if (!json_is_integer(idx) || !b64_chars(leaf) || !json_is_array(path))
        return VERITY_ECORRUPT;
    struct evbuffer *lb = x->line_buf;
    evbuffer_drain(lb, evbuffer_get_length(lb));
    evbuffer_add_printf(lb, "{\"type\":\"proof\",\"topic\":\"%s\",\"partition\":%u,\"index\":%lld,"
                            "\"leaf\":\"%s\",\"proof\":[",
                        src->topic, src->partition, (long long)json_integer_value(idx), leaf);
    for (size_t i = 0; i < json_array_size(path); i++) {
        const char *h = json_string_value(json_array_get(path, i));
        if (!b64_chars(h))
            return VERITY_ECORRUPT;
        evbuffer_add_printf(lb, "%s\"%s\"", i ? "," : "", h);
    }
    evbuffer_add(lb, "]}\n", 3);
    x->proof_lines++;
    return emit_raw(x, out, lb);
}

/* Makes sure a proof line for the batch holding offset off precedes the
 * record's line: reuses the last one, or takes the next from the cached
 * proofs, fetching up to 256 more from the broker when they run out.
 * Records whose batch lies beyond the source's tree stay unproven. */
static int prove(struct exp *x, struct evbuffer *out, struct export_source *src, uint64_t off)
{
    if (!src->tree_note)
        return 0;
    if (x->proof_src != x->cur) {
        json_decref(x->leaves);
        x->leaves = NULL;
        x->leaf_pos = 0;
        x->have_leaf = x->leaves_end = false;
        x->proof_src = x->cur;
    }
    if (x->have_leaf && off >= x->leaf_base && off - x->leaf_base < x->leaf_count) {
        src->proven++;
        return 0;
    }
    for (int fetched = 0; !x->leaves_end; fetched++) {
        while (x->leaves && x->leaf_pos < json_array_size(x->leaves)) {
            const json_t *it = json_array_get(x->leaves, x->leaf_pos);
            uint8_t leaf[SP_LEAF_SIZE];
            uint64_t base;
            uint32_t count;
            if (sp_leaf_decode(json_object_get(it, "leaf"), leaf, &base, &count))
                return VERITY_ECORRUPT;
            if (off < base)
                return 0; /* not in the tree's batches (cannot happen: fetched from off) */
            x->leaf_pos++;
            if (off - base < count) {
                x->have_leaf = true;
                x->leaf_base = base;
                x->leaf_count = count;
                src->proven++;
                return emit_proof(x, out, src, it);
            }
        }
        if (fetched) {
            x->leaves_end = true;
            break;
        }
        json_decref(x->leaves);
        x->leaves = NULL;
        x->leaf_pos = 0;
        int rc = sp_leaves_fetch(x->g->proofs, src->topic, src->partition, off, src->tree_size,
                                 &x->leaves);
        if (rc == VERITY_EOFFSET)
            x->leaves_end = true;
        else if (rc)
            return rc;
    }
    return 0;
}

/*
 * jansson's allocator. Turning a record into its line builds a few JSON
 * trees (the parsed record, the allowed fields, the commitments) that all
 * die before the next record; malloc and free for each of their nodes were
 * a third of the gateway's CPU (perf, docs/PERFORMANCE.md). While arena.on,
 * jansson allocates from a bump arena that arena_begin resets per record;
 * freeing an arena pointer is a no-op, anything else (and anything that
 * does not fit) is plain malloc/free. arena.live counts arena allocations
 * not yet freed: it must be 0 when the record is done, or a tree escaped
 * the record (VERITY_VERIFY aborts rather than reuse memory in use).
 * Single thread (the event loop).
 */
#define ARENA_BYTES (512u << 10)
static struct {
    char *base;
    size_t used;
    bool on;
    long live;
} arena;

static bool in_arena(const void *p)
{
    return arena.base && (const char *)p >= arena.base && (const char *)p < arena.base + ARENA_BYTES;
}

static void *ar_malloc(size_t n)
{
    size_t a = (n + 15) & ~(size_t)15;
    if (arena.on && a >= n && ARENA_BYTES - arena.used >= a) {
        void *p = arena.base + arena.used;
        arena.used += a;
        arena.live++;
        return p;
    }
    return malloc(n);
}

static void ar_free(void *p)
{
    if (in_arena(p))
        arena.live--;
    else
        free(p);
}

static void arena_begin(void)
{
    VERITY_VERIFY(arena.live == 0);
    arena.used = 0;
    arena.on = arena.base != NULL;
}

static void arena_end(void)
{
    arena.on = false;
    VERITY_VERIFY(arena.live == 0);
}

/* Appends one body line of n bytes (ending in '\n'). */
static int emit_bytes(struct exp *x, struct evbuffer *out, const char *p, size_t n)
{
    if (n > SHARE_LINE_MAX)
        return VERITY_ELIMIT;
    EVP_DigestUpdate(x->md, p, n);
    int rc = 0;
    if (x->line >= x->after && evbuffer_add(out, p, n) != 0)
        rc = -ENOMEM;
    x->line++;
    return rc;
}

/* One source record: its line (share_line.c), preceded by the proof line
 * of its batch when the export carries proofs. */
static int emit_record(struct exp *x, struct evbuffer *out, struct export_source *src,
                       const struct verity_message *m)
{
    const struct xf_rec r = {
        .topic = src->topic, .partition = src->partition, .offset = (uint64_t)m->offset,
        .ts_ms = m->timestamp_ms, .value = m->value,
        .len = m->value && m->value_len > 0 ? (size_t)m->value_len : 0, .index = x->records,
    };
    char err[128];
    x->rec_line.n = 0;
    arena_begin();
    int rc = xf_line(&x->plan, &x->e->spec, &x->keys, x->eid, &r, &x->rec_line, err, sizeof err);
    arena_end();
    if (rc == XF_LINE_NOT_OBJECT)
        x->skipped++;
    if (rc)
        return rc < 0 ? rc : 0;
    /* proofs are fetched and kept outside the record arena */
    if ((rc = prove(x, out, src, (uint64_t)m->offset)))
        return rc;
    x->records++;
    return emit_bytes(x, out, x->rec_line.p, x->rec_line.n);
}

static void exp_finish(struct exp *x, struct evbuffer *out)
{
    uint8_t d[32];
    unsigned dl = 32;
    EVP_DigestFinal_ex(x->md, d, &dl);
    int64_t now = sh_now_ms();
    char *m = export_manifest(x->g->sk, &x->e->spec, x->eid, x->records, x->line,
                              x->proof_lines, d, x->src, x->nsrc, now);
    if (m)
        evbuffer_add(out, m, strlen(m));
    json_t *a = share_audit_new("export", m ? "ok" : "failed", &x->e->spec, x->client, now);
    if (a) {
        char ds[48];
        json_t *ck = json_array();
        sh_b64url_enc(d, 32, ds);
        for (size_t i = 0; i < x->nsrc; i++)
            json_array_append_new(
                ck, json_pack("{s:s, s:I, s:I, s:I, s:b}", "topic", x->src[i].topic, "partition",
                              (json_int_t)x->src[i].partition, "from", (json_int_t)x->src[i].from,
                              "to", (json_int_t)x->src[i].to, "checkpoint", x->src[i].has_ckpt));
        json_object_set_new(a, "export", json_string(x->eid));
        json_object_set_new(a, "record_count", json_integer((json_int_t)x->records));
        uint64_t proven = 0;
        for (size_t i = 0; i < x->nsrc; i++)
            proven += x->src[i].proven;
        json_object_set_new(a, "records_proven", json_integer((json_int_t)proven));
        json_object_set_new(a, "body_sha256", json_string(ds));
        json_object_set_new(a, "sources", ck);
        json_object_set_new(a, "resumed_after", json_integer((json_int_t)x->after));
    }
    audit(x->g, a);
    free(m);
}

static void pump(struct exp *x);

static void on_chunk_sent(struct evhttp_connection *evcon, void *arg)
{
    pump(arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    pump(arg);
}

static void on_close(struct evhttp_connection *evcon, void *arg)
{
    struct exp *x = arg;
    json_t *a = share_audit_new("export", "aborted", &x->e->spec, x->client, sh_now_ms());
    if (a) {
        json_object_set_new(a, "export", json_string(x->eid));
        json_object_set_new(a, "record_count", json_integer((json_int_t)x->records));
    }
    audit(x->g, a);
    x->evcon = NULL;
    exp_free(x);
}

/* Moves to the next source when the current one is read to its end. */
static int source_step(struct exp *x, bool *done_out)
{
    struct export_source *src = &x->src[x->cur];
    *done_out = false;
    if (!x->cons) {
        if (src->from >= src->to) {
            *done_out = true;
            return 0;
        }
        struct verity_consumer_config cc;
        verity_consumer_config_default(&cc);
        cc.conn.broker = x->g->broker;
        cc.fetch_max_bytes = EXPORT_FETCH_BYTES;
        cc.partition_max_bytes = EXPORT_FETCH_BYTES;
        cc.queue_bytes_max = EXPORT_QUEUE_BYTES;
        cc.fetch_max_wait_ms = 100;
        int rc = verity_consumer_new(&cc, &x->cons);
        if (!rc)
            rc = verity_consumer_assign(x->cons, src->topic, src->partition, VERITY_START_OFFSET,
                                        (int64_t)src->from);
        return rc;
    }
    uint64_t next, hwm;
    if (x->mi < x->nmsgs)
        return 0; /* lines still to make from the last poll */
    if (verity_consumer_position(x->cons, src->topic, src->partition, &next, &hwm) == 0 &&
        next >= src->to) {
        src->has_ckpt = verity_consumer_checkpoint(x->cons, src->topic, src->partition, src->ckpt,
                                                   &src->ckpt_batch) == 0;
        verity_consumer_free(x->cons);
        x->cons = NULL;
        x->msgs = NULL;
        x->nmsgs = x->mi = 0;
        *done_out = true;
    }
    return 0;
}

static void pump(struct exp *x)
{
    struct evbuffer *out = evbuffer_new();
    int rc = out ? 0 : -ENOMEM;
    bool wait = false, finished = false;
    while (!rc && evbuffer_get_length(out) < EXPORT_CHUNK_BYTES) {
        if (x->cur == x->nsrc) {
            exp_finish(x, out);
            finished = true;
            break;
        }
        bool done;
        if ((rc = source_step(x, &done)))
            break;
        if (done) {
            x->cur++;
            continue;
        }
        /* One poll may hold megabytes: turn it into lines a chunk at a
         * time, so the output (and the memory) stays near one chunk. */
        struct export_source *src = &x->src[x->cur];
        if (x->mi < x->nmsgs) {
            while (!rc && x->mi < x->nmsgs && evbuffer_get_length(out) < EXPORT_CHUNK_BYTES) {
                const struct verity_message *m = &x->msgs[x->mi++];
                if (m->offset < src->to)
                    rc = emit_record(x, out, src, m);
            }
            continue;
        }
        if ((rc = verity_consumer_poll(x->cons, 0, &x->msgs, &x->nmsgs, NULL)))
            break;
        x->mi = 0;
        if (x->nmsgs == 0 && !(source_step(x, &done) == 0 && done ? (x->cur++, true) : false)) {
            wait = true;
            break;
        }
    }
    if (rc) {
        fprintf(stderr, "verity-gateway: export %s failed: %s\n", x->eid, verity_strerror(rc));
        json_t *a = share_audit_new("export", "failed", &x->e->spec, x->client, sh_now_ms());
        if (a)
            json_object_set_new(a, "export", json_string(x->eid));
        audit(x->g, a);
        /* Ends the chunked body without a manifest: the recipient's verify
         * fails ("the last line is not a manifest"). */
        evhttp_send_reply_end(x->req);
        exp_free(x);
    } else if (finished) {
        evhttp_send_reply_chunk(x->req, out);
        evhttp_send_reply_end(x->req);
        exp_free(x);
    } else if (evbuffer_get_length(out) > 0) {
        evhttp_send_reply_chunk_with_cb(x->req, out, on_chunk_sent, x);
    } else if (wait) {
        struct timeval tv = {0, 2000};
        evtimer_add(x->timer, &tv);
    }
    if (out)
        evbuffer_free(out);
}

/* Fills x->src for a new export: every partition of the requested topics,
 * from the share's start (offset or time) to the current high watermark
 * (or the share's end offset). */
static int resolve_sources(struct exp *x, const char **topics, size_t nt)
{
    const struct share_spec *s = &x->e->spec;
    int rc;
    x->src = calloc(EXPORT_SOURCES_MAX, sizeof *x->src);
    if (!x->src)
        return -ENOMEM;
    for (size_t t = 0; t < nt; t++) {
        struct verity_topic_info *ti = NULL;
        if ((rc = verity_topic_describe(x->g->admin, topics[t], &ti)))
            return rc;
        for (uint32_t p = 0; p < ti->partition_count; p++) {
            if (x->nsrc == EXPORT_SOURCES_MAX) {
                verity_topic_info_free(ti, 1);
                return VERITY_ELIMIT;
            }
            struct export_source *src = &x->src[x->nsrc++];
            src->topic = strdup(topics[t]);
            src->partition = p;
            uint64_t start = ti->partitions[p].start_offset, end = ti->partitions[p].high_watermark;
            if (s->from_offset >= 0 && (uint64_t)s->from_offset > start)
                start = (uint64_t)s->from_offset;
            if (s->from_time_ms != INT64_MIN) {
                struct verity_offsets o;
                if ((rc = verity_list_offsets(x->g->admin, topics[t], p, VERITY_OFFSET_TIMESTAMP,
                                              s->from_time_ms, &o))) {
                    verity_topic_info_free(ti, 1);
                    return rc;
                }
                if (o.offset > start)
                    start = o.offset;
            }
            if (s->to_offset >= 0 && (uint64_t)s->to_offset < end)
                end = (uint64_t)s->to_offset;
            src->from = start;
            src->to = end > start ? end : start;
        }
        verity_topic_info_free(ti, 1);
    }
    return 0;
}

/* With --proofs: each source's signed tree checkpoint. A new export takes
 * the broker's current one (none when the broker keeps no tree); a resumed
 * export asks for the size its use record names, so that it recomputes the
 * same proof lines (notes are Ed25519: the same bytes again). */
static int fetch_trees(struct exp *x, bool resume)
{
    for (size_t i = 0; x->g->proofs && i < x->nsrc; i++) {
        struct export_source *src = &x->src[i];
        if (src->from >= src->to || (resume && src->tree_size == 0))
            continue;
        uint64_t want = src->tree_size;
        int rc = sp_checkpoint_fetch(x->g->proofs, src->topic, src->partition, want,
                                     &src->tree_note, &src->tree_size);
        if (rc && !want && (rc == VERITY_EUNSUPPORTED || rc == VERITY_ENOTFOUND)) {
            fprintf(stderr, "verity-gateway: no tree for %s/%u (%s): exported without proofs\n",
                    src->topic, src->partition, verity_strerror(rc));
            src->tree_size = 0;
            continue;
        }
        if (rc) {
            fprintf(stderr, "verity-gateway: checkpoint of %s/%u from %s: %s\n", src->topic,
                    src->partition, x->g->proofs, verity_strerror(rc));
            return rc;
        }
    }
    return 0;
}

static json_t *sources_json(const struct exp *x)
{
    json_t *a = json_array();
    for (size_t i = 0; i < x->nsrc; i++)
        json_array_append_new(a, json_pack("{s:s, s:I, s:I, s:I, s:I}", "topic", x->src[i].topic,
                                           "partition", (json_int_t)x->src[i].partition, "from",
                                           (json_int_t)x->src[i].from, "to",
                                           (json_int_t)x->src[i].to, "tree_size",
                                           (json_int_t)x->src[i].tree_size));
    return a;
}

static int sources_from_use(struct exp *x, const json_t *use)
{
    const json_t *a = json_object_get(use, "sources");
    size_t n = json_array_size(a);
    if (n > EXPORT_SOURCES_MAX)
        return VERITY_ELIMIT;
    x->src = calloc(n ? n : 1, sizeof *x->src);
    if (!x->src)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *topic;
        json_int_t p, f, t;
        if (json_unpack((json_t *)json_array_get(a, i), "{s:s, s:I, s:I, s:I}", "topic", &topic,
                        "partition", &p, "from", &f, "to", &t))
            return VERITY_ECORRUPT;
        x->src[i].topic = strdup(topic);
        x->src[i].partition = (uint32_t)p;
        x->src[i].from = (uint64_t)f;
        x->src[i].to = (uint64_t)t;
        json_int_t ts = json_integer_value(json_object_get(json_array_get(a, i), "tree_size"));
        x->src[i].tree_size = ts > 0 ? (uint64_t)ts : 0;
        x->nsrc++;
    }
    return 0;
}

static void h_export(struct gw *g, struct evhttp_request *req, struct share_entry *e,
                     const char *client, const char *path, struct evkeyvalq *q)
{
    const struct share_spec *s = &e->spec;
    const char *topics[SHARE_TOPICS_MAX];
    size_t nt = 0;
    const char *resume = NULL, *after = NULL;
    for (struct evkeyval *kv = q->tqh_first; kv; kv = kv->next.tqe_next) {
        if (strcmp(kv->key, "topic") == 0) {
            if (!share_has_topic(s, kv->value) || nt == SHARE_TOPICS_MAX) {
                refuse(g, req, 403, "out_of_scope", "topic is not part of this share", s, NULL,
                       client, path);
                return;
            }
            topics[nt++] = kv->value;
        } else if (strcmp(kv->key, "export") == 0) {
            resume = kv->value;
        } else if (strcmp(kv->key, "after") == 0) {
            after = kv->value;
        } else {
            refuse(g, req, 400, "bad_request", "unknown query parameter", s, NULL, client, path);
            return;
        }
    }
    if (nt == 0)
        for (uint32_t i = 0; i < s->topic_count; i++)
            topics[nt++] = s->topics[i];
    const json_t *use = resume ? json_object_get(e->exports, resume) : NULL;
    if (resume && !use) {
        refuse(g, req, 404, "unknown_export", "no such export of this share", s, NULL, client,
               path);
        return;
    }
    if (!resume && s->max_uses && e->uses >= s->max_uses) {
        refuse(g, req, 403, "uses_exhausted",
               "this share has no uses left (a one-time share already fetched)", s, NULL, client,
               path);
        return;
    }
    if (g->exports_active >= g->exports_max) {
        refuse(g, req, 503, "busy", "too many exports running", s, NULL, client, path);
        return;
    }
    struct exp *x = calloc(1, sizeof *x);
    if (!x) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    g->exports_active++;
    x->g = g;
    x->req = req;
    x->e = e;
    snprintf(x->client, sizeof x->client, "%s", client);
    x->md = EVP_MD_CTX_new();
    x->timer = evtimer_new(g->base, on_timer, x);
    x->line_buf = evbuffer_new();
    int rc = x->md && x->timer && x->line_buf && EVP_DigestInit_ex(x->md, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
    if (!rc)
        rc = xf_plan_init(&x->plan, s);
    if (!rc && !g_scan)
        x->plan.fast = false;
    if (!rc)
        rc = xf_keys_derive(g->secret, s->id, &x->keys);
    if (!rc && resume) {
        char *end = NULL;
        snprintf(x->eid, sizeof x->eid, "%s", resume);
        x->after = after ? strtoull(after, &end, 10) : 0;
        if (after && (*end || !*after))
            rc = VERITY_EINVAL;
        if (!rc)
            rc = sources_from_use(x, use);
        if (!rc)
            rc = fetch_trees(x, true);
    } else if (!rc) {
        uint8_t r[16];
        rc = sh_random(r, sizeof r);
        sh_hex(r, sizeof r, x->eid);
        if (!rc)
            rc = resolve_sources(x, topics, nt);
        if (!rc)
            rc = fetch_trees(x, false);
        if (!rc) {
            json_t *u = json_pack("{s:s, s:s, s:s, s:o, s:I, s:s}", "type", "use", "share", s->id,
                                  "export", x->eid, "sources", sources_json(x), "time_ms",
                                  (json_int_t)sh_now_ms(), "client", client);
            rc = u ? share_append(g->prod, SHARE_STATE_TOPIC, u) : -ENOMEM;
            json_decref(u);
            if (!rc)
                rc = share_db_catch_up(&g->db, g->admin, &g->state_cons, g->broker,
                                       STATE_TIMEOUT_MS);
        }
    }
    if (rc) {
        refuse(g, req, rc == VERITY_EINVAL ? 400 : 503, "failed", verity_strerror(rc), s, NULL,
               client, path);
        exp_free(x);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/x-ndjson");
    evhttp_add_header(h, "Verity-Export", x->eid);
    evhttp_send_reply_start(req, 200, "OK");
    x->evcon = evhttp_request_get_connection(req);
    evhttp_connection_set_closecb(x->evcon, on_close, x);
    /* line 0: the header, part of the signed body */
    struct evbuffer *out = evbuffer_new();
    json_t *hdr = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s?, s:i}", "type", "export", "version", 1,
                            "share", s->id, "export", x->eid, "recipient", s->rcpt.name, "purpose",
                            s->rcpt.purpose, "policy_version", (int)s->policy_version);
    if (out && hdr && emit(x, out, hdr) == 0 && evbuffer_get_length(out) > 0)
        evhttp_send_reply_chunk(req, out);
    json_decref(hdr);
    if (out)
        evbuffer_free(out);
    pump(x);
}

static void h_describe(struct evhttp_request *req, const struct share_entry *e)
{
    const struct share_spec *s = &e->spec;
    json_t *j = share_spec_to_json(s);
    char exp[32];
    sh_time_fmt(s->expires_ms, exp);
    json_object_set_new(j, "expirationTime", json_string(exp));
    json_object_set_new(j, "uses", json_integer(e->uses));
    reply_json(req, 200, "OK", j);
}

/* ---- requests ---------------------------------------------------------------------- */

static void on_request(struct evhttp_request *req, void *arg)
{
    struct gw *g = arg;
    char client[64] = "?";
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    char *addr = NULL;
    ev_uint16_t port = 0;
    if (evcon) {
        evhttp_connection_get_peer(evcon, &addr, &port);
        if (addr)
            snprintf(client, sizeof client, "%s", addr);
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!path)
        path = "/";
    int64_t now = sh_now_ms();
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        reply_json(req, 405, "Method Not Allowed",
                   json_pack("{s:s, s:s}", "error", "method", "message", "only GET"));
        return;
    }
    if (!rl_take(&g->rl_addr, client, now)) {
        refuse(g, req, 429, "rate_limited", "too many requests from this address", NULL, NULL,
               client, path);
        return;
    }
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (!auth || strncmp(auth, "Bearer ", 7) != 0) {
        refuse(g, req, 401, "no_token", "an Authorization: Bearer token is required", NULL, NULL,
               client, path);
        return;
    }
    struct share_claims c;
    int rc = share_token_check(g->sk, auth + 7, &c);
    if (rc) {
        refuse(g, req, 401, rc == VERITY_ESIGNATURE ? "tampered" : "malformed_token",
               rc == VERITY_ESIGNATURE
                   ? "token signature does not verify (altered, or signed by another key)"
                   : "not a valid v4.public share token",
               NULL, NULL, client, path);
        return;
    }
    if (c.exp_ms <= now) {
        refuse(g, req, 401, "expired", "the share has expired", NULL, c.sid, client, path);
        return;
    }
    if (!rl_take(&g->rl_tok, c.sid, now)) {
        refuse(g, req, 429, "rate_limited", "too many requests for this share", NULL, c.sid,
               client, path);
        return;
    }
    if ((rc = share_db_catch_up(&g->db, g->admin, &g->state_cons, g->broker, STATE_TIMEOUT_MS))) {
        refuse(g, req, 503, "unavailable", "cannot read the shares topic", NULL, c.sid, client,
               path);
        return;
    }
    struct share_entry *e = share_db_find(&g->db, c.sid);
    uint8_t d[32];
    if (!e) {
        refuse(g, req, 401, "unknown_share", "no such share", NULL, c.sid, client, path);
        return;
    }
    if (share_scope_digest(&e->spec, d) || CRYPTO_memcmp(d, c.scope, 32) != 0) {
        refuse(g, req, 401, "tampered", "the token's scope differs from the share's", &e->spec,
               NULL, client, path);
        return;
    }
    if (e->revoked) {
        refuse(g, req, 403, "revoked", "the share was revoked", &e->spec, NULL, client, path);
        return;
    }
    if (e->spec.expires_ms <= now) {
        refuse(g, req, 401, "expired", "the share has expired", &e->spec, NULL, client, path);
        return;
    }
    if (strcmp(path, "/v1/shares") == 0) {
        reply_json(req, 200, "OK",
                   json_pack("{s:[{s:s, s:s}]}", "items", "name", e->spec.id, "id", e->spec.id));
        return;
    }
    const char *pre = "/v1/shares/";
    if (strncmp(path, pre, strlen(pre)) != 0) {
        refuse(g, req, 404, "not_found", "no such path", &e->spec, NULL, client, path);
        return;
    }
    const char *id = path + strlen(pre);
    size_t idlen = strcspn(id, "/");
    const char *rest = id + idlen;
    if (idlen != SHARE_ID_LEN || CRYPTO_memcmp(id, e->spec.id, SHARE_ID_LEN) != 0) {
        refuse(g, req, 403, "out_of_scope", "the token does not grant this share", &e->spec, NULL,
               client, path);
        return;
    }
    if (*rest == '\0') {
        h_describe(req, e);
        return;
    }
    if (strcmp(rest, "/export") != 0) {
        refuse(g, req, 404, "not_found", "no such path", &e->spec, NULL, client, path);
        return;
    }
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    if (query && evhttp_parse_query_str(query, &q) != 0) {
        refuse(g, req, 400, "bad_request", "bad query string", &e->spec, NULL, client, path);
        return;
    }
    h_export(g, req, e, client, path, &q);
    evhttp_clear_headers(&q);
}

/* ---- setup --------------------------------------------------------------------------- */

static struct bufferevent *bevcb(struct event_base *base, void *arg)
{
    SSL *ssl = SSL_new(arg);
    if (!ssl)
        return NULL;
    return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                          BEV_OPT_CLOSE_ON_FREE);
}

static SSL_CTX *tls_server(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ERR_print_errors_fp(stderr);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    return ctx;
}

static int load_secret(const char *path, uint8_t out[32])
{
    char *s = NULL;
    size_t n;
    int rc = sh_read_file(path, 256, &s, &n);
    if (rc)
        return rc;
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    rc = sh_unhex(s, out, 32);
    OPENSSL_cleanse(s, n);
    free(s);
    return rc;
}

static int parse_rate(const char *s, double *rate, double *burst)
{
    char *end;
    *rate = strtod(s, &end);
    *burst = *rate < 1 ? 1 : *rate;
    if (*end == ',') {
        *burst = strtod(end + 1, &end);
    }
    return *end || *rate < 0 || *burst < 1 ? -1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: verity-gateway --keys DIR --cert CERT.pem --tls-key KEY.pem [options]\n"
            "  Serves shares over HTTPS (TLS 1.2+): GET /v1/shares, /v1/shares/<id>,\n"
            "  /v1/shares/<id>/export. See docs/SHARING.md.\n"
            "  --keys DIR          gateway.key (Ed25519), gateway.secret (from `verity share init`)\n"
            "  --cert FILE         TLS certificate chain (PEM)\n"
            "  --tls-key FILE      TLS private key (PEM)\n"
            "  --listen HOST:PORT  (default 127.0.0.1:9743)\n"
            "  --broker HOST:PORT  (default $VERITY_BROKER or %s)\n"
            "  --rate-addr R[,B]   requests/s per client address, burst B (default 50,100; 0 off)\n"
            "  --rate-token R[,B]  requests/s per share token (default 10,20; 0 off)\n"
            "  --exports-max N     exports running at once (default 16)\n"
            "  --proofs URL        the broker's admin HTTP API (http://HOST:PORT): put the\n"
            "                      inclusion proof of every exported record's batch and each\n"
            "                      partition's signed tree checkpoint in the export\n"
            "  --help, --version\n",
            VERITY_BROKER_DEFAULT);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    stopping = 1;
    event_base_loopexit(arg, NULL);
}

static int split_hostport(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= cap)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end || p > 65535)
        return -1;
    *port = (uint16_t)p;
    return 0;
}

static struct gw g;

int main(int argc, char **argv)
{
    const char *keys = NULL, *cert = NULL, *tls_key = NULL, *listen = "127.0.0.1:9743",
               *broker = NULL, *rate_addr = "50,100", *rate_tok = "10,20";
    long exports_max = 16;
    static const struct option opts[] = {
        {"keys", 1, 0, 'k'},       {"cert", 1, 0, 'c'},       {"tls-key", 1, 0, 't'},
        {"listen", 1, 0, 'l'},     {"broker", 1, 0, 'b'},     {"rate-addr", 1, 0, 'a'},
        {"rate-token", 1, 0, 'r'}, {"exports-max", 1, 0, 'x'}, {"help", 0, 0, 'h'},
        {"version", 0, 0, 'V'},    {"proofs", 1, 0, 'p'},     {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'k': keys = optarg; break;
        case 'c': cert = optarg; break;
        case 't': tls_key = optarg; break;
        case 'l': listen = optarg; break;
        case 'b': broker = optarg; break;
        case 'a': rate_addr = optarg; break;
        case 'r': rate_tok = optarg; break;
        case 'x': exports_max = strtol(optarg, NULL, 10); break;
        case 'p': g.proofs = optarg; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("verity-gateway %s\n", GW_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!keys || !cert || !tls_key || optind != argc || exports_max < 1 || exports_max > 1024) {
        usage(stderr);
        return 2;
    }
    /* VERITY_GW_ARENA=0 turns the arena off (to measure what it saves) */
    const char *ae = getenv("VERITY_GW_ARENA");
    arena.base = ae && strcmp(ae, "0") == 0 ? NULL : malloc(ARENA_BYTES);
    json_set_alloc_funcs(ar_malloc, ar_free);
    /* VERITY_GW_SCAN=0: every record through the jansson tree path
     * (share_line.c), to measure what the scanner path saves */
    const char *se = getenv("VERITY_GW_SCAN");
    g_scan = !(se && strcmp(se, "0") == 0);
    /* Export chunks of a few hundred KiB and libverity's fetch responses
     * (a MiB each, client/conn.c) are made and freed over and over: take
     * them from the heap and keep its freed top, instead of mmap/munmap or
     * trimming and faulting the pages in again each time (page faults were
     * ~8 % of the gateway's CPU). Setting one of these turns glibc's
     * dynamic mmap threshold off, so both are set. */
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    g.broker = verity_broker_resolve(broker);
    g.exports_max = (uint32_t)exports_max;
    if (parse_rate(rate_addr, &g.rl_addr.rate, &g.rl_addr.burst) ||
        parse_rate(rate_tok, &g.rl_tok.rate, &g.rl_tok.burst)) {
        fprintf(stderr, "verity-gateway: bad rate (R or R,B)\n");
        return 2;
    }
    char path[4200], host[256];
    uint16_t port;
    int rc;
    snprintf(path, sizeof path, "%s/gateway.key", keys);
    if ((rc = sh_load_private(path, &g.sk))) {
        fprintf(stderr, "verity-gateway: cannot load %s: %s\n", path, verity_strerror(rc));
        return 1;
    }
    snprintf(path, sizeof path, "%s/gateway.secret", keys);
    if ((rc = load_secret(path, g.secret))) {
        fprintf(stderr, "verity-gateway: cannot load %s: %s\n", path, verity_strerror(rc));
        return 1;
    }
    if (!(g.ssl = tls_server(cert, tls_key))) {
        fprintf(stderr, "verity-gateway: cannot load the TLS certificate or key\n");
        return 1;
    }
    if (split_hostport(listen, host, sizeof host, &port)) {
        fprintf(stderr, "verity-gateway: bad --listen '%s'\n", listen);
        return 2;
    }
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = g.broker;
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = g.broker;
    pc.idempotence = true;
    if ((rc = verity_client_new(&cc, &g.admin)) || (rc = verity_client_connect(g.admin, 10000)) ||
        (rc = share_topics_ensure(g.admin)) || (rc = verity_producer_new(&pc, &g.prod)) ||
        (rc = share_db_catch_up(&g.db, g.admin, &g.state_cons, g.broker, 20000))) {
        fprintf(stderr, "verity-gateway: broker %s: %s\n", g.broker, verity_strerror(rc));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    g.base = event_base_new();
    g.http = g.base ? evhttp_new(g.base) : NULL;
    if (!g.http)
        return 1;
    evhttp_set_bevcb(g.http, bevcb, g.ssl);
    evhttp_set_max_headers_size(g.http, HTTP_HEADERS_MAX);
    evhttp_set_max_body_size(g.http, 1024);
    evhttp_set_timeout(g.http, 60);
    evhttp_set_allowed_methods(g.http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(g.http, on_request, &g);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(g.http, host, port);
    if (!bs) {
        fprintf(stderr, "verity-gateway: cannot listen on %s\n", listen);
        return 1;
    }
    struct event *sig_int = evsignal_new(g.base, SIGINT, on_signal, g.base);
    struct event *sig_term = evsignal_new(g.base, SIGTERM, on_signal, g.base);
    event_add(sig_int, NULL);
    event_add(sig_term, NULL);
    unsigned long long nshares = 0;
    for (struct share_entry *e = g.db.head; e; e = e->next)
        nshares++;
    printf("verity-gateway: listening on https://%s (broker %s, %llu shares)\n", listen, g.broker,
           nshares);
    fflush(stdout);
    event_base_dispatch(g.base);
    event_free(sig_int);
    event_free(sig_term);
    evhttp_free(g.http);
    event_base_free(g.base);
    SSL_CTX_free(g.ssl);
    verity_producer_free(g.prod, 5000);
    verity_consumer_free(g.state_cons);
    verity_client_free(g.admin);
    share_db_deinit(&g.db);
    EVP_PKEY_free(g.sk);
    OPENSSL_cleanse(g.secret, sizeof g.secret);
    return 0;
}
