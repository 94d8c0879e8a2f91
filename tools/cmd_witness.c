/*
 * verity witness: a small C2SP tlog-witness (c2sp.org/tlog-witness) that
 * cosigns checkpoints (c2sp.org/tlog-cosignature, Ed25519, type 0x04) of
 * the logs it trusts, after checking each is consistent with the last one
 * it cosigned for that origin.
 *
 *   verity witness --listen HOST:PORT --key-file FILE --name NAME
 *                  --log VKEY [--log VKEY ...] --state-dir DIR
 *   verity witness --print-key --key-file FILE --name NAME
 *
 * A log key named N vouches for the origins N and N/... (Verity's origins
 * are <key name>/<topic>/<partition>). POST /add-checkpoint answers as the
 * spec says: 404 unknown origin, 403 no trusted signature, 400 malformed
 * or old size above the checkpoint size, 409 (body: latest size, type
 * text/x.tlog.size) when the old size is not the latest cosigned size or
 * the same size comes with another root, 422 when the consistency proof
 * fails, 200 with the cosignature line otherwise. State per origin is one
 * file in DIR (SHA-256 of the origin, hex), replaced atomically before the
 * answer; requests run one at a time on one thread, so check-and-update is
 * atomic.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/sha.h>

#include "storage/checkpoint.h"
#include "storage/merkle.h"
#include "storage/note.h"
#include "storage/tproof.h"
#include "tools/cmds.h"
#include "verity/errors.h"

#define WIT_LOGS_MAX 16
#define WIT_BODY_MAX (64u << 10)
#define WIT_PATH_MAX 4096

struct witness {
    EVP_PKEY *key;
    const char *name;
    const char *state_dir;
    struct note_vkey logs[WIT_LOGS_MAX];
    size_t nlogs;
    struct event_base *base;
};

static void witness_usage(FILE *f)
{
    fprintf(f, "usage: verity witness --listen HOST:PORT --key-file FILE --name NAME\n"
               "                      --log VKEY [--log VKEY ...] --state-dir DIR\n"
               "       verity witness --print-key --key-file FILE --name NAME\n"
               "  Serves POST /add-checkpoint (c2sp.org/tlog-witness) and cosigns\n"
               "  consistent checkpoints of the trusted logs. --print-key prints the\n"
               "  witness's cosignature verifier key (type 0x04). Keys: `verity keygen`.\n");
}

static void state_path(const struct witness *w, const char *origin, char *out)
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    SHA256((const uint8_t *)origin, strlen(origin), md);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    snprintf(out, WIT_PATH_MAX, "%s/%s", w->state_dir, hex);
}

/* 0 with the stored size/root, or size 0 when nothing was cosigned yet. */
static int state_load(const struct witness *w, const char *origin, uint64_t *size, uint8_t *root)
{
    char path[WIT_PATH_MAX], buf[128];
    state_path(w, origin, path);
    *size = 0;
    memset(root, 0, MT_HASH_SIZE);
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char b64[64];
    if (sscanf(buf, "%" SCNu64 " %63s", size, b64) != 2 ||
        note_b64_decode(b64, strlen(b64), root, MT_HASH_SIZE) != MT_HASH_SIZE)
        return VERITY_ECORRUPT;
    return 0;
}

static int state_store(const struct witness *w, const char *origin, uint64_t size,
                       const uint8_t *root)
{
    char path[WIT_PATH_MAX], tmp[WIT_PATH_MAX + 8], b64[48], buf[128];
    state_path(w, origin, path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    note_b64_encode(root, MT_HASH_SIZE, b64);
    int n = snprintf(buf, sizeof buf, "%" PRIu64 " %s\n", size, b64);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -errno;
    int rc = write(fd, buf, (size_t)n) == n ? 0 : -EIO;
    if (!rc && fdatasync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    if (!rc) {
        int dfd = open(w->state_dir, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            if (fsync(dfd) != 0)
                rc = -errno;
            close(dfd);
        }
    }
    return rc;
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  const char *body)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(b, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static bool origin_trusted(const struct note_vkey *k, const char *origin)
{
    size_t n = strlen(k->name);
    return strncmp(origin, k->name, n) == 0 && (origin[n] == '\0' || origin[n] == '/');
}

/* The checks of add-checkpoint, in the spec's order; fills the reply. */
static void add_checkpoint(struct witness *w, struct evhttp_request *req, const char *body,
                           size_t len)
{
    struct tproof_witness_req r;
    struct note_vkey keys[WIT_LOGS_MAX];
    char origin[NOTE_ORIGIN_MAX + 1], line[512], msg[64];
    uint8_t root[MT_HASH_SIZE], old_root[MT_HASH_SIZE];
    uint64_t size = 0, latest = 0;
    size_t nk = 0, tlen = 0;
    if (tproof_witness_parse(body, len, &r))
        return reply(req, 400, "Bad Request", "text/plain", "malformed request body\n");
    const char *nl = memchr(r.note, '\n', r.note_len);
    if (!nl || nl == r.note || (size_t)(nl - r.note) > NOTE_ORIGIN_MAX)
        return reply(req, 400, "Bad Request", "text/plain", "malformed checkpoint\n");
    memcpy(origin, r.note, (size_t)(nl - r.note));
    origin[nl - r.note] = '\0';
    for (size_t i = 0; i < w->nlogs; i++)
        if (origin_trusted(&w->logs[i], origin))
            keys[nk++] = w->logs[i];
    if (nk == 0)
        return reply(req, 404, "Not Found", "text/plain", "unknown log origin\n");
    if (note_open(r.note, r.note_len, keys, nk, &tlen, NULL))
        return reply(req, 403, "Forbidden", "text/plain", "no trusted log signature verifies\n");
    char parsed[NOTE_ORIGIN_MAX + 1];
    if (note_checkpoint_parse(r.note, tlen, parsed, sizeof parsed, &size, root))
        return reply(req, 400, "Bad Request", "text/plain", "malformed checkpoint\n");
    if (r.old_size > size)
        return reply(req, 400, "Bad Request", "text/plain", "old size above checkpoint size\n");
    if (state_load(w, origin, &latest, old_root))
        return reply(req, 500, "Internal Server Error", "text/plain", "state unreadable\n");
    if (r.old_size != latest) {
        snprintf(msg, sizeof msg, "%" PRIu64 "\n", latest);
        return reply(req, 409, "Conflict", "text/x.tlog.size", msg);
    }
    if (r.old_size == size) {
        if (r.npath != 0 || (size > 0 && memcmp(root, old_root, MT_HASH_SIZE) != 0)) {
            snprintf(msg, sizeof msg, "%" PRIu64 "\n", latest);
            return reply(req, 409, "Conflict", "text/x.tlog.size", msg);
        }
    } else if (mt_verify_consistency(r.old_size, size, old_root, root,
                                     (const uint8_t(*)[MT_HASH_SIZE])r.path, r.npath)) {
        return reply(req, 422, "Unprocessable Entity", "text/plain",
                     "consistency proof does not verify\n");
    }
    if (state_store(w, origin, size, root))
        return reply(req, 500, "Internal Server Error", "text/plain", "cannot persist state\n");
    int ll =
        note_cosign_line(r.note, tlen, w->name, w->key, (uint64_t)time(NULL), line, sizeof line);
    if (ll < 0)
        return reply(req, 500, "Internal Server Error", "text/plain", "cannot sign\n");
    reply(req, 200, "OK", "text/plain; charset=utf-8", line);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct witness *w = arg;
    const char *uri = evhttp_request_get_uri(req);
    if (strcmp(uri, "/add-checkpoint") != 0)
        return reply(req, 404, "Not Found", "text/plain", "only POST /add-checkpoint\n");
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST)
        return reply(req, 405, "Method Not Allowed", "text/plain", "POST only\n");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len == 0 || len > WIT_BODY_MAX)
        return reply(req, 400, "Bad Request", "text/plain", "empty or oversized body\n");
    char *body = malloc(len + 1);
    if (!body)
        return reply(req, 500, "Internal Server Error", "text/plain", "out of memory\n");
    evbuffer_copyout(in, body, len);
    body[len] = '\0';
    add_checkpoint(w, req, body, len);
    free(body);
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    struct witness *w = arg;
    event_base_loopexit(w->base, NULL);
}

static int serve(struct witness *w, const char *listen_addr)
{
    char host[256];
    const char *colon = strrchr(listen_addr, ':');
    if (!colon || (size_t)(colon - listen_addr) >= sizeof host)
        return VERITY_EINVAL;
    memcpy(host, listen_addr, (size_t)(colon - listen_addr));
    host[colon - listen_addr] = '\0';
    int port = atoi(colon + 1);
    w->base = event_base_new();
    struct evhttp *http = w->base ? evhttp_new(w->base) : NULL;
    if (!http)
        return -ENOMEM;
    evhttp_set_max_body_size(http, WIT_BODY_MAX);
    evhttp_set_max_headers_size(http, 8192);
    evhttp_set_timeout(http, 30);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_POST | EVHTTP_REQ_GET);
    evhttp_set_gencb(http, on_request, w);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(http, host, (uint16_t)port);
    if (!s) {
        fprintf(stderr, "verity witness: cannot listen on %s\n", listen_addr);
        evhttp_free(http);
        event_base_free(w->base);
        return -EADDRINUSE;
    }
    struct event *sigint = evsignal_new(w->base, SIGINT, on_signal, w);
    struct event *sigterm = evsignal_new(w->base, SIGTERM, on_signal, w);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    printf("verity witness: %s listening on %s\n", w->name, listen_addr);
    fflush(stdout);
    event_base_dispatch(w->base);
    event_free(sigint);
    event_free(sigterm);
    evhttp_free(http);
    event_base_free(w->base);
    return 0;
}

int cmd_witness(int argc, char **argv)
{
    struct witness w = {0};
    const char *listen_addr = NULL, *key_file = NULL;
    bool print_key = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            witness_usage(stdout);
            return CMD_EXIT_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("verity witness 0.1.0 (c2sp.org/tlog-witness, tlog-cosignature v1.0.1)\n");
            return CMD_EXIT_OK;
        } else if (strcmp(a, "--print-key") == 0) {
            print_key = true;
        } else if (strcmp(a, "--listen") == 0 && more) {
            listen_addr = argv[++i];
        } else if (strcmp(a, "--key-file") == 0 && more) {
            key_file = argv[++i];
        } else if (strcmp(a, "--name") == 0 && more) {
            w.name = argv[++i];
        } else if (strcmp(a, "--state-dir") == 0 && more) {
            w.state_dir = argv[++i];
        } else if (strcmp(a, "--log") == 0 && more) {
            if (w.nlogs >= WIT_LOGS_MAX || note_vkey_parse(argv[++i], &w.logs[w.nlogs]) ||
                w.logs[w.nlogs].type != NOTE_TYPE_ED25519) {
                fprintf(stderr, "verity witness: bad log key '%s'\n", argv[i]);
                return CMD_EXIT_USAGE;
            }
            w.nlogs++;
        } else {
            fprintf(stderr, "verity witness: unexpected argument '%s'\n", a);
            witness_usage(stderr);
            return CMD_EXIT_USAGE;
        }
    }
    if (!key_file || !w.name || !note_name_ok(w.name)) {
        witness_usage(stderr);
        return CMD_EXIT_USAGE;
    }
    int rc = ckpt_load_private(key_file, &w.key);
    if (rc) {
        fprintf(stderr, "verity witness: cannot load %s: %s\n", key_file, verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    if (print_key) {
        char vkey[NOTE_VKEY_MAX + 1];
        rc = note_vkey_format(w.name, NOTE_TYPE_COSIG, w.key, vkey, sizeof vkey);
        if (!rc)
            printf("%s\n", vkey);
        EVP_PKEY_free(w.key);
        return rc ? CMD_EXIT_FAIL : CMD_EXIT_OK;
    }
    if (!listen_addr || !w.state_dir || w.nlogs == 0) {
        witness_usage(stderr);
        EVP_PKEY_free(w.key);
        return CMD_EXIT_USAGE;
    }
    if (mkdir(w.state_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "verity witness: cannot create %s\n", w.state_dir);
        EVP_PKEY_free(w.key);
        return CMD_EXIT_FAIL;
    }
    rc = serve(&w, listen_addr);
    EVP_PKEY_free(w.key);
    return rc ? CMD_EXIT_FAIL : CMD_EXIT_OK;
}
