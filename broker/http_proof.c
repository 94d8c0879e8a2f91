/*
 * Admin HTTP: proofs and C2SP tiles of each partition's Merkle tree
 * (storage/merkle.h, storage/proof.h). Read-only, GET/HEAD, reached through
 * http.c's fallback handler (http_proof_handle), on the event loop thread
 * that also appends, so the tree is read from its only thread.
 *
 *   GET /v1/proof/key                                  verifier key string
 *   GET /v1/proof/checkpoint?topic=T&partition=P       signed checkpoint note
 *   GET /v1/proof/inclusion?topic=T&partition=P&offset=O[&size=N][&format=tlog-proof]
 *   GET /v1/proof/consistency?topic=T&partition=P&old=M[&new=N]
 *   GET /v1/proof/leaves?topic=T&partition=P&offset=O&size=N[&count=K]
 *                                      inclusion proofs of up to K (256)
 *                                      consecutive leaves from the one holding
 *                                      O, without a checkpoint (the sharing
 *                                      gateway's bulk read)
 *   GET /v1/proof/cosigned?topic=T&partition=P         the newest checkpoint witnesses
 *                                      cosigned (witness_push.c): Verity's
 *                                      note plus their cosignature lines;
 *                                      404 when none yet
 *   GET /tlog/<topic>/<partition>/checkpoint           c2sp.org/tlog-tiles
 *                                      (with the witnesses' cosignatures
 *                                      when they cosigned the current size)
 *   GET /tlog/<topic>/<partition>/tile/<L>/<N>[.p/<W>]
 *   GET /tlog/<topic>/<partition>/tile/entries/<N>[.p/<W>]
 *
 * Only the durable prefix is signed or served (proof_durable_size). A tile
 * is served when every hash it holds is in that prefix; a level-L tile hash
 * i is the stored hash of the complete subtree at level 8L, index N*256+i.
 * Entry bundles hold each leaf's 76-byte leaf data, u16 BE length first.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "broker/broker_int.h"
#include "storage/merkle.h"
#include "storage/proof.h"
#include "verity/errors.h"

#define TLOG_PREFIX "/tlog/"

static void send_body(struct evhttp_request *req, int code, const char *type, const void *p,
                      size_t n, bool immutable)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(b, p, n);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control",
                      immutable ? "public, max-age=31536000, immutable" : "no-cache, max-age=2");
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
}

static void send_err(struct evhttp_request *req, int rc)
{
    int code = rc == VERITY_ENOTFOUND || rc == VERITY_EOFFSET ? 404
               : rc == VERITY_EINVAL                          ? 400
               : rc == VERITY_EUNSUPPORTED                    ? 501
                                                              : 500;
    char msg[160];
    int n = snprintf(msg, sizeof msg, "%s\n", verity_strerror(rc));
    send_body(req, code, "text/plain", msg, (size_t)n, false);
}

static int signer_for(struct broker *b, const char *topic, uint32_t part, struct proof_signer *s)
{
    if (!b->signing_key)
        return VERITY_EUNSUPPORTED;
    return proof_signer_init(s, b->signing_key, b->cfg.tlog_name, topic, part);
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (!s || !*s || *s == '-')
        return VERITY_EINVAL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return VERITY_EINVAL;
    *out = v;
    return 0;
}

static int find_log(struct broker *b, const char *topic, const char *part, struct vlog **log,
                    uint32_t *pid)
{
    uint64_t p;
    struct partition *pt = NULL;
    char msg[128];
    if (!topic || parse_u64(part, &p) || p > UINT32_MAX)
        return VERITY_EINVAL;
    int rc = topic_partition(b, topic, (uint32_t)p, &pt, msg, sizeof msg);
    if (rc)
        return rc;
    if (!pt->log)
        return VERITY_ENOTFOUND;
    *log = pt->log;
    *pid = (uint32_t)p;
    return 0;
}

static void send_json(struct evhttp_request *req, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    if (!s) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    send_body(req, 200, "application/json", s, strlen(s), false);
    free(s);
}

/* /v1/proof/... */
static void h_proof_api(struct broker *b, struct evhttp_request *req, const char *what)
{
    struct evkeyvalq q;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *query = evhttp_uri_get_query(u);
    TAILQ_INIT(&q);
    if (query && evhttp_parse_query_str(query, &q) != 0)
        return send_err(req, VERITY_EINVAL);
    const char *topic = evhttp_find_header(&q, "topic");
    struct vlog *log = NULL;
    struct proof_signer s;
    uint32_t part = 0;
    json_t *j = NULL;
    int rc = 0;
    if (strcmp(what, "key") == 0) {
        char vkey[NOTE_VKEY_MAX + 1];
        if (!b->signing_key)
            rc = VERITY_EUNSUPPORTED;
        else if (!(rc = note_vkey_format(b->cfg.tlog_name, NOTE_TYPE_ED25519, b->signing_key, vkey,
                                         sizeof vkey - 1))) {
            strcat(vkey, "\n");
            send_body(req, 200, "text/plain; charset=utf-8", vkey, strlen(vkey), false);
        }
        goto out;
    }
    if ((rc = find_log(b, topic, evhttp_find_header(&q, "partition"), &log, &part)) ||
        (rc = signer_for(b, topic, part, &s)))
        goto out;
    uint64_t a = 0, n = 0;
    const char *size = evhttp_find_header(&q, "size");
    if (size && (rc = parse_u64(size, &n)))
        goto out;
    if (strcmp(what, "cosigned") == 0) {
        uint64_t cs = 0;
        const char *note = wpush_cosigned(b, topic, part, &cs);
        if (!note)
            rc = VERITY_ENOTFOUND;
        else
            send_body(req, 200, "text/plain; charset=utf-8", note, strlen(note), false);
    } else if (strcmp(what, "checkpoint") == 0) {
        char note[PROOF_CHECKPOINT_MAX];
        if (!n && (rc = proof_durable_size(log, &n)))
            goto out;
        int nl = proof_checkpoint(log, &s, n, note, sizeof note);
        if (nl < 0)
            rc = nl;
        else
            send_body(req, 200, "text/plain; charset=utf-8", note, (size_t)nl, false);
    } else if (strcmp(what, "inclusion") == 0) {
        if ((rc = parse_u64(evhttp_find_header(&q, "offset"), &a)) ||
            (rc = proof_inclusion(log, &s, a, n, true, &j)))
            goto out;
        const char *fmt = evhttp_find_header(&q, "format");
        if (fmt && strcmp(fmt, "tlog-proof") == 0) {
            const char *t = json_string_value(json_object_get(j, "tlog_proof"));
            send_body(req, 200, "text/plain; charset=utf-8", t, strlen(t), false);
        } else {
            send_json(req, j);
        }
    } else if (strcmp(what, "leaves") == 0) {
        const char *cs = evhttp_find_header(&q, "count");
        uint64_t count = PROOF_LEAVES_MAX;
        if ((rc = parse_u64(evhttp_find_header(&q, "offset"), &a)) ||
            (cs && (rc = parse_u64(cs, &count))) ||
            (rc = count == 0 || count > PROOF_LEAVES_MAX ? VERITY_EINVAL : 0) ||
            (rc = proof_leaves(log, a, n, (uint32_t)count, &j)))
            goto out;
        send_json(req, j);
    } else if (strcmp(what, "consistency") == 0) {
        const char *nw = evhttp_find_header(&q, "new");
        if ((rc = parse_u64(evhttp_find_header(&q, "old"), &a)) ||
            (nw && (rc = parse_u64(nw, &n))) || (rc = proof_consistency(log, &s, a, n, &j)))
            goto out;
        send_json(req, j);
    } else {
        rc = VERITY_ENOTFOUND;
    }
out:
    if (rc)
        send_err(req, rc);
    json_decref(j);
    evhttp_clear_headers(&q);
}

/* Parses "<x001/x234/>067[.p/<W>]" into n and w (256 when full). */
static int parse_tile_index(const char *p, uint64_t *n, uint32_t *w)
{
    uint64_t v = 0;
    *w = MT_TILE_WIDTH;
    for (int guard = 0; guard < 8; guard++) {
        bool x = *p == 'x';
        if (x)
            p++;
        if (!(p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
              p[2] <= '9'))
            return VERITY_EINVAL;
        v = v * 1000 + (uint64_t)((p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0'));
        p += 3;
        if (x) {
            if (*p++ != '/')
                return VERITY_EINVAL;
            continue;
        }
        if (*p == '\0') {
            *n = v;
            return 0;
        }
        uint64_t wv;
        if (strncmp(p, ".p/", 3) != 0 || parse_u64(p + 3, &wv) || wv == 0 || wv >= MT_TILE_WIDTH ||
            p[3] == '0')
            return VERITY_EINVAL;
        *n = v;
        *w = (uint32_t)wv;
        return 0;
    }
    return VERITY_EINVAL;
}

static void h_tile(struct evhttp_request *req, struct vlog *log, uint64_t size, const char *rest)
{
    struct mtree *t = vlog_tree(log);
    uint64_t n;
    uint32_t w;
    int rc;
    bool entries = strncmp(rest, "entries/", 8) == 0;
    int level = 0;
    if (entries) {
        rest += 8;
    } else {
        if (rest[0] < '0' || rest[0] > '7' || rest[1] != '/')
            return send_err(req, VERITY_EINVAL);
        level = rest[0] - '0';
        rest += 2;
    }
    if ((rc = parse_tile_index(rest, &n, &w)))
        return send_err(req, rc);
    int hl = MT_TILE_HEIGHT * level; /* level of the tile's hashes in the tree */
    if (n > (UINT64_MAX >> 9) >> hl || ((n * MT_TILE_WIDTH + w) << hl) > size)
        return send_err(req, VERITY_EOFFSET);
    uint8_t *buf = malloc(MT_TILE_WIDTH * (2 + MT_LEAF_SIZE));
    size_t len = 0;
    if (!buf)
        return send_err(req, -ENOMEM);
    for (uint32_t i = 0; i < w && !rc; i++) {
        uint64_t idx = n * MT_TILE_WIDTH + i;
        if (entries) {
            buf[len] = 0;
            buf[len + 1] = MT_LEAF_SIZE;
            rc = mt_leaf_get(t, idx, buf + len + 2);
            len += 2 + MT_LEAF_SIZE;
        } else {
            rc = mt_stored_hash(t, hl, idx, buf + len);
            len += MT_HASH_SIZE;
        }
    }
    if (rc)
        send_err(req, rc);
    else
        send_body(req, 200, "application/octet-stream", buf, len, true);
    free(buf);
}

/* /tlog/<topic>/<partition>/... */
static void h_tlog(struct broker *b, struct evhttp_request *req, const char *path)
{
    char topic[VERITY_TOPIC_NAME_MAX + 1], part[16];
    const char *p = path + strlen(TLOG_PREFIX);
    const char *s1 = strchr(p, '/');
    const char *s2 = s1 ? strchr(s1 + 1, '/') : NULL;
    if (!s1 || !s2 || (size_t)(s1 - p) > VERITY_TOPIC_NAME_MAX || s2 - s1 - 1 >= (long)sizeof part)
        return send_err(req, VERITY_ENOTFOUND);
    memcpy(topic, p, (size_t)(s1 - p));
    topic[s1 - p] = '\0';
    memcpy(part, s1 + 1, (size_t)(s2 - s1 - 1));
    part[s2 - s1 - 1] = '\0';
    struct vlog *log = NULL;
    struct proof_signer s;
    uint32_t pid;
    uint64_t size = 0;
    int rc;
    if ((rc = find_log(b, topic, part, &log, &pid)) || (rc = signer_for(b, topic, pid, &s)) ||
        (rc = proof_durable_size(log, &size)))
        return send_err(req, rc);
    const char *rest = s2 + 1;
    if (strcmp(rest, "checkpoint") == 0) {
        char note[PROOF_CHECKPOINT_MAX];
        uint64_t cs = 0;
        const char *cos = wpush_cosigned(b, topic, pid, &cs);
        if (cos && cs == size) /* the same note, plus the witnesses' lines */
            return send_body(req, 200, "text/plain; charset=utf-8", cos, strlen(cos), false);
        int nl = proof_checkpoint(log, &s, size, note, sizeof note);
        if (nl < 0)
            return send_err(req, nl);
        return send_body(req, 200, "text/plain; charset=utf-8", note, (size_t)nl, false);
    }
    if (strncmp(rest, "tile/", 5) == 0)
        return h_tile(req, log, size, rest + 5);
    send_err(req, VERITY_ENOTFOUND);
}

bool http_proof_handle(struct broker *b, struct evhttp_request *req)
{
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    if (!path)
        return false;
    if (strncmp(path, "/v1/proof/", 10) == 0) {
        h_proof_api(b, req, path + 10);
        return true;
    }
    if (strncmp(path, TLOG_PREFIX, strlen(TLOG_PREFIX)) == 0) {
        char *dec = evhttp_uridecode(path, 0, NULL);
        if (!dec) {
            evhttp_send_error(req, 500, NULL);
            return true;
        }
        h_tlog(b, req, dec);
        free(dec);
        return true;
    }
    return false;
}
