/*
 * verity share fetch | verify | decrypt | check-reveal: the recipient's side.
 *
 * fetch reads a profile (Delta Sharing shape), connects over TLS 1.2+ to its
 * endpoint with the server certificate checked against --cacert (or the
 * system store) and the endpoint's host name, and streams the export to a
 * file. --resume continues a partial file: it keeps the complete lines,
 * asks the gateway for the same export after them, and appends.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "consumer/share/share.h"
#include "tools/cmds.h"

static char verify_err[256];

struct fetch {
    struct event_base *base;
    FILE *out;
    int code;
    bool done;
    struct evbuffer *errbody;
    uint64_t bytes;
};

static int on_verify(int ok, X509_STORE_CTX *ctx)
{
    if (!ok && !verify_err[0])
        snprintf(verify_err, sizeof verify_err, "%s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    return ok;
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct fetch *f = arg;
    struct evbuffer *b = evhttp_request_get_input_buffer(req);
    f->code = evhttp_request_get_response_code(req);
    if (f->code != 200) {
        evbuffer_add_buffer(f->errbody, b);
        return;
    }
    /* Straight to the file, all chains in one writev (nothing goes
     * through f->out's stdio buffer). */
    size_t n;
    while ((n = evbuffer_get_length(b)) > 0) {
        int w = evbuffer_write(b, fileno(f->out));
        if (w <= 0) {
            f->code = -1;
            return;
        }
        f->bytes += (size_t)w;
    }
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct fetch *f = arg;
    f->done = true;
    /* The connection may stay open (keep-alive): stop the loop now. */
    event_base_loopexit(f->base, NULL);
    if (req) {
        f->code = evhttp_request_get_response_code(req);
        if (f->code == 200)
            on_chunk(req, f);
        else
            evbuffer_add_buffer(f->errbody, evhttp_request_get_input_buffer(req));
    }
}

/* Keeps the complete lines of a partial export; returns how many, and the
 * export id from its header line. */
static int resume_point(const char *path, uint64_t *lines, char *eid, size_t cap, bool *complete)
{
    FILE *f = fopen(path, "r+b");
    if (!f)
        return -errno;
    char *line = NULL;
    size_t lc = 0;
    ssize_t got;
    long keep = 0;
    *lines = 0;
    *complete = false;
    eid[0] = '\0';
    while ((got = getline(&line, &lc, f)) > 0 && line[got - 1] == '\n') {
        json_t *j = json_loadb(line, (size_t)got, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (*lines == 0 && json_is_string(json_object_get(j, "export")))
            snprintf(eid, cap, "%s", json_string_value(json_object_get(j, "export")));
        if (type && strcmp(type, "manifest") == 0)
            *complete = true;
        json_decref(j);
        keep += got;
        (*lines)++;
    }
    free(line);
    int rc = ftruncate(fileno(f), keep) == 0 ? 0 : -errno;
    fclose(f);
    return rc;
}

static int share_fetch(int argc, char **argv)
{
    const char *profile = NULL, *out = NULL, *cacert = NULL;
    const char *topics[SHARE_TOPICS_MAX];
    size_t nt = 0;
    bool resume = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (strcmp(argv[i], "--cacert") == 0 && i + 1 < argc)
            cacert = argv[++i];
        else if (strcmp(argv[i], "--topic") == 0 && i + 1 < argc && nt < SHARE_TOPICS_MAX)
            topics[nt++] = argv[++i];
        else if (strcmp(argv[i], "--resume") == 0)
            resume = true;
        else if (argv[i][0] != '-' && !profile)
            profile = argv[i];
        else {
            fprintf(stderr, "verity share fetch: unexpected argument '%s'\n", argv[i]);
            return CMD_EXIT_USAGE;
        }
    }
    if (!profile || !out) {
        fprintf(stderr, "usage: verity share fetch PROFILE -o EXPORT [--cacert CA.pem] "
                        "[--resume] [--topic T]\n");
        return CMD_EXIT_USAGE;
    }
    char *text = NULL, *claims_json = NULL, err[256];
    size_t tl;
    struct share_profile p = {0};
    struct share_claims c;
    int rc = sh_read_file(profile, 1 << 16, &text, &tl);
    if (rc || share_profile_parse(text, tl, &p, err, sizeof err)) {
        fprintf(stderr, "verity share fetch: %s: %s\n", profile, rc ? verity_strerror(rc) : err);
        free(text);
        return CMD_EXIT_FAIL;
    }
    free(text);
    if (paseto_v4_peek(p.token, &claims_json) ||
        share_claims_parse(claims_json, strlen(claims_json), &c)) {
        fprintf(stderr, "verity share fetch: the profile's token is malformed\n");
        free(claims_json);
        share_profile_deinit(&p);
        return CMD_EXIT_FAIL;
    }
    free(claims_json);
    struct evhttp_uri *uri = evhttp_uri_parse(p.endpoint);
    const char *host = uri ? evhttp_uri_get_host(uri) : NULL;
    int port = uri ? evhttp_uri_get_port(uri) : -1;
    const char *base_path = uri && evhttp_uri_get_path(uri) ? evhttp_uri_get_path(uri) : "";
    if (!host) {
        fprintf(stderr, "verity share fetch: bad endpoint %s\n", p.endpoint);
        share_profile_deinit(&p);
        evhttp_uri_free(uri);
        return CMD_EXIT_FAIL;
    }
    if (port < 0)
        port = 443;
    char target[2048], eid[64] = "";
    uint64_t have = 0;
    bool complete = false;
    if (resume && access(out, F_OK) == 0) {
        if ((rc = resume_point(out, &have, eid, sizeof eid, &complete))) {
            fprintf(stderr, "verity share fetch: %s: %s\n", out, verity_strerror(rc));
            goto fail_early;
        }
        if (complete) {
            printf("%s is already complete\n", out);
            share_profile_deinit(&p);
            evhttp_uri_free(uri);
            return CMD_EXIT_OK;
        }
    }
    size_t len = (size_t)snprintf(target, sizeof target, "%s/shares/%s/export", base_path, c.sid);
    char sep = '?';
    for (size_t i = 0; i < nt && len < sizeof target; i++, sep = '&')
        len += (size_t)snprintf(target + len, sizeof target - len, "%ctopic=%s", sep, topics[i]);
    if (have > 0 && eid[0] && len < sizeof target)
        len += (size_t)snprintf(target + len, sizeof target - len, "%cexport=%s&after=%llu", sep,
                                eid, (unsigned long long)have);
    if (len >= sizeof target)
        goto fail_early;

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, on_verify);
    if (cacert ? SSL_CTX_load_verify_locations(ctx, cacert, NULL) != 1
               : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        fprintf(stderr, "verity share fetch: cannot load CA %s\n", cacert ? cacert : "(system)");
        SSL_CTX_free(ctx);
        goto fail_early;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, host);
    SSL_set1_host(ssl, host);
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    struct evhttp_connection *evcon =
        evhttp_connection_base_bufferevent_new(base, NULL, bev, host, (unsigned short)port);
    evhttp_connection_set_timeout(evcon, 60);
    struct fetch f = {0};
    f.base = base;
    f.errbody = evbuffer_new();
    f.out = fopen(out, have ? "ab" : "wb");
    if (!f.out) {
        fprintf(stderr, "verity share fetch: cannot write %s: %s\n", out, strerror(errno));
        rc = CMD_EXIT_FAIL;
        goto done;
    }
    struct evhttp_request *req = evhttp_request_new(on_done, &f);
    evhttp_request_set_chunked_cb(req, on_chunk);
    char auth[SHARE_TOKEN_MAX + 16];
    snprintf(auth, sizeof auth, "Bearer %s", p.token);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Authorization", auth);
    evhttp_add_header(h, "Connection", "close");
    if (evhttp_make_request(evcon, req, EVHTTP_REQ_GET, target) != 0) {
        fprintf(stderr, "verity share fetch: cannot send the request\n");
        rc = CMD_EXIT_FAIL;
        goto done;
    }
    /* The body passes through in chunks of a few hundred KiB that are freed
     * at once: without this glibc gives the heap top back to the kernel
     * after each and faults it in again (a quarter of the fetch's CPU in
     * brk and page faults, docs/PERFORMANCE.md). */
    mallopt(M_MMAP_THRESHOLD, 32 << 20); /* setting the other turns its dynamic value off */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 4 << 20);
    event_base_dispatch(base);
    rc = CMD_EXIT_FAIL;
    if (f.code == 0) {
        unsigned long e = ERR_peek_last_error();
        fprintf(stderr, "verity share fetch: TLS or connection failure to %s:%d%s%s%s\n", host,
                port, verify_err[0] ? ": certificate " : "", verify_err,
                !verify_err[0] && e ? ERR_reason_error_string(e) ? ": " : "" : "");
        if (!verify_err[0] && e && ERR_reason_error_string(e))
            fprintf(stderr, "  (%s)\n", ERR_reason_error_string(e));
    } else if (f.code != 200) {
        size_t n = evbuffer_get_length(f.errbody);
        char *body = calloc(1, n + 1);
        if (body)
            evbuffer_remove(f.errbody, body, n);
        json_t *j = body ? json_loads(body, 0, NULL) : NULL;
        fprintf(stderr, "verity share fetch: refused (HTTP %d): %s: %s\n", f.code,
                json_string_value(json_object_get(j, "error")) ? json_string_value(json_object_get(j, "error")) : "error",
                json_string_value(json_object_get(j, "message")) ? json_string_value(json_object_get(j, "message")) : (body ? body : ""));
        json_decref(j);
        free(body);
    } else {
        printf("wrote %llu bytes to %s%s\n", (unsigned long long)f.bytes, out,
               have ? " (resumed)" : "");
        rc = CMD_EXIT_OK;
    }
done:
    if (f.out && fclose(f.out) != 0)
        rc = CMD_EXIT_FAIL;
    evbuffer_free(f.errbody);
    evhttp_connection_free(evcon);
    event_base_free(base);
    SSL_CTX_free(ctx);
    share_profile_deinit(&p);
    evhttp_uri_free(uri);
    return rc;
fail_early:
    share_profile_deinit(&p);
    evhttp_uri_free(uri);
    return CMD_EXIT_FAIL;
}

static int share_verify(int argc, char **argv)
{
    const char *file = NULL, *key = NULL, *log_key = NULL, *log_vkey = NULL;
    bool json = false, require = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: verity share verify EXPORT --key GATEWAY.pub [--log-key LOG.pub]\n"
                   "                            [--log-vkey VKEY] [--require-proofs] [--json]\n"
                   "  Checks an export offline: the gateway's manifest signature, body digest,\n"
                   "  record count and order, the log's checkpoints and, for each record, its\n"
                   "  inclusion proof against the partition's signed tree checkpoint (the note's\n"
                   "  signature with --log-vkey, the log's C2SP verifier key string from\n"
                   "  `verity proof key`, or --log-key). --require-proofs: every record must\n"
                   "  have a proof. Exit 0 = verified, 1 = not.\n");
            return CMD_EXIT_OK;
        } else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "--log-key") == 0 && i + 1 < argc)
            log_key = argv[++i];
        else if (strcmp(argv[i], "--log-vkey") == 0 && i + 1 < argc)
            log_vkey = argv[++i];
        else if (strcmp(argv[i], "--require-proofs") == 0)
            require = true;
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (argv[i][0] != '-' && !file)
            file = argv[i];
        else {
            fprintf(stderr, "verity share verify: unexpected argument '%s'\n", argv[i]);
            return CMD_EXIT_USAGE;
        }
    }
    if (!file || !key) {
        fprintf(stderr, "usage: verity share verify EXPORT --key GATEWAY.pub [--log-key LOG.pub] "
                        "[--log-vkey VKEY] [--require-proofs] [--json]\n");
        return CMD_EXIT_USAGE;
    }
    EVP_PKEY *gk = NULL, *lk = NULL;
    if (sh_load_public(key, &gk) || (log_key && sh_load_public(log_key, &lk))) {
        fprintf(stderr, "verity share verify: cannot load %s\n", gk ? log_key : key);
        EVP_PKEY_free(gk);
        return CMD_EXIT_FAIL;
    }
    struct verify_report r;
    char err[512] = "";
    int rc = export_verify(file, gk, lk, log_vkey, require, &r, err, sizeof err);
    EVP_PKEY_free(gk);
    EVP_PKEY_free(lk);
    if (json) {
        json_t *j = json_pack("{s:b, s:s, s:s, s:I, s:i, s:I, s:i, s:i, s:I, s:I, s:s}", "ok",
                              rc == 0, "share", r.share, "export", r.export_id, "records",
                              (json_int_t)r.records, "checkpoints", (int)r.checkpoints, "covered",
                              (json_int_t)r.covered, "trees", (int)r.trees, "trees_signed",
                              (int)r.trees_signed, "proof_lines", (json_int_t)r.proof_lines,
                              "proven", (json_int_t)r.proven, "error", rc ? err : "");
        char *s = json_dumps(j, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(j);
    } else if (rc) {
        fprintf(stderr, "verity share verify: FAILED: %s\n", err);
    } else {
        printf("ok: export %s of share %s: %llu records, signature and body digest verify; "
               "%u checkpoints verify, covering %llu records; ",
               r.export_id, r.share, (unsigned long long)r.records, r.checkpoints,
               (unsigned long long)r.covered);
        if (r.trees == 0)
            printf("inclusion proofs: none in this export\n");
        else
            printf("inclusion proofs: %llu of %llu records proven by %llu proofs against %u tree "
                   "checkpoints (%u signature-checked%s)\n",
                   (unsigned long long)r.proven, (unsigned long long)r.records,
                   (unsigned long long)r.proof_lines, r.trees, r.trees_signed,
                   r.trees_signed < r.trees ? "; give --log-vkey or --log-key to check them" : "");
    }
    return rc ? CMD_EXIT_FAIL : CMD_EXIT_OK;
}

static int share_decrypt(int argc, char **argv)
{
    const char *file = NULL, *key = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            out = argv[++i];
        else if (argv[i][0] != '-' && !file)
            file = argv[i];
        else
            return CMD_EXIT_USAGE;
    }
    if (!file || !key || !out) {
        fprintf(stderr, "usage: verity share decrypt EXPORT --key RECIPIENT.key -o OUT\n");
        return CMD_EXIT_USAGE;
    }
    EVP_PKEY *k = NULL;
    if (sh_load_private(key, &k) || EVP_PKEY_get_base_id(k) != EVP_PKEY_X25519) {
        fprintf(stderr, "verity share decrypt: %s is not an X25519 private key\n", key);
        EVP_PKEY_free(k);
        return CMD_EXIT_FAIL;
    }
    uint64_t n;
    char err[256] = "";
    int rc = export_decrypt(file, out, k, &n, err, sizeof err);
    EVP_PKEY_free(k);
    if (rc) {
        fprintf(stderr, "verity share decrypt: %s\n", err[0] ? err : verity_strerror(rc));
        return CMD_EXIT_FAIL;
    }
    printf("decrypted %llu fields into %s\n", (unsigned long long)n, out);
    return CMD_EXIT_OK;
}

static int share_check_reveal(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: verity share check-reveal EXPORT REVEAL.json\n");
        return CMD_EXIT_USAGE;
    }
    json_error_t je;
    json_t *r = json_load_file(argv[2], 0, &je);
    if (!r) {
        fprintf(stderr, "verity share check-reveal: %s: %s\n", argv[2], je.text);
        return CMD_EXIT_FAIL;
    }
    char err[256] = "";
    int rc = export_check_reveal(argv[1], r, err, sizeof err);
    if (rc)
        fprintf(stderr, "verity share check-reveal: FAILED: %s\n", err);
    else
        printf("ok: the revealed value of %s %s matches its commitment\n",
               json_string_value(json_object_get(r, "position")),
               json_string_value(json_object_get(r, "path")));
    json_decref(r);
    return rc ? CMD_EXIT_FAIL : CMD_EXIT_OK;
}

int cmd_share_recipient(const char *sub, int argc, char **argv);
int cmd_share_recipient(const char *sub, int argc, char **argv)
{
    if (strcmp(sub, "fetch") == 0)
        return share_fetch(argc, argv);
    if (strcmp(sub, "verify") == 0)
        return share_verify(argc, argv);
    if (strcmp(sub, "decrypt") == 0)
        return share_decrypt(argc, argv);
    return share_check_reveal(argc, argv);
}
