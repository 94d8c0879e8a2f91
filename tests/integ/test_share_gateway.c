/*
 * The sharing gateway end to end: a real verityd (tests/support/tbroker), a
 * real verity-gateway over TLS with certificates this test makes with
 * OpenSSL, and the real `verity share` CLI on the owner's and the
 * recipient's side.
 *
 *   1. a share over two topics, a time range, a predicate and six field
 *      rules (hash, mask, generalise, drop, encrypt, keep) yields exactly the
 *      matching records with exactly those fields transformed; HMAC
 *      pseudonyms are stable within a share and differ across shares; the
 *      recipient decrypts; tokenize / date_shift / replace in a second share
 *   2. expired, revoked, tampered, foreign-key, out-of-scope, replayed
 *      one-time and rate-limited (per token and per address) requests are
 *      refused with their error and audited
 *   3. verify accepts the untouched export (with the log's checkpoints) and
 *      rejects a changed byte, a dropped or reordered record, a changed
 *      manifest, a forged signature; reveal / check-reveal; a resumed fetch
 *      gives the same bytes
 *   4. TLS: plaintext on the TLS port, a TLS 1.0/1.1-only client, an expired
 *      server certificate on the client side
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "consumer/share/share.h"
#include "storage/note.h"
#include "tests/support/tbroker.h"
#include "tests/support/tutil.h"

#define T0 1767225600000LL /* 2026-01-01T00:00:00Z */
#define VISITS 40
#define LABS 12
#define NOISE 10050        /* past one checkpoint interval (10,000 records) */

static struct tbroker br;
static char root[512], keys[600], gw_pub[700], rcpt_key[600], rcpt_pub[600];
static char crt[600], key[600], old_crt[600], old_key[600], log_pub[700];
static pid_t gw1, gw2;
static uint16_t port1, port2;
static uint8_t secret[32];

/* ---- helpers ------------------------------------------------------------------------------ */

static void pathf(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", root, name);
}

/* Runs `verity ARGS...`; stdout+stderr into out (NUL-terminated). Exit code. */
static int cli(char *out, size_t cap, const char *const *args)
{
    char bin[600], outp[600];
    const char *dir = getenv("VERITY_BIN_DIR");
    snprintf(bin, sizeof bin, "%s/verity", dir ? dir : "build/bin");
    pathf(outp, sizeof outp, "cli.out");
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        const char *argv[64] = {bin};
        int n = 1;
        for (; args[n - 1] && n < 63; n++)
            argv[n] = args[n - 1];
        argv[n] = NULL;
        setenv("VERITY_BROKER", br.addr, 1);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    FILE *f = fopen(outp, "rb");
    size_t got = f ? fread(out, 1, cap - 1, f) : 0;
    if (f)
        fclose(f);
    out[got] = '\0';
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int write_cert(const char *crt_path, const char *key_path, long from_s, long to_s)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    int rc = -1;
    if (!k || !x)
        goto out;
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(tu_now_ms() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_set_pubkey(x, k);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
    X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    if (!san || !bc)
        goto out;
    X509_add_ext(x, san, -1);
    X509_add_ext(x, bc, -1);
    X509_EXTENSION_free(san);
    X509_EXTENSION_free(bc);
    if (!X509_sign(x, k, EVP_sha256()))
        goto out;
    FILE *f = fopen(crt_path, "w");
    FILE *g = fopen(key_path, "w");
    if (f && g && PEM_write_X509(f, x) && PEM_write_PrivateKey(g, k, NULL, NULL, 0, NULL, NULL))
        rc = 0;
    if (f)
        fclose(f);
    if (g)
        fclose(g);
out:
    X509_free(x);
    EVP_PKEY_free(k);
    return rc;
}

static int write_x25519(const char *priv, const char *pub)
{
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_X25519, NULL);
    int rc = -1;
    if (ctx && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &k) == 1) {
        FILE *f = fopen(priv, "w"), *g = fopen(pub, "w");
        if (f && g && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) && PEM_write_PUBKEY(g, k))
            rc = 0;
        if (f)
            fclose(f);
        if (g)
            fclose(g);
    }
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(k);
    return rc;
}

static int tcp_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static char proofs_url[96]; /* http://<broker admin HTTP> */

static pid_t start_gateway(uint16_t port, const char *c, const char *k, const char *rate_addr,
                           const char *rate_tok, const char *logname)
{
    char bin[600], listen[64], logp[600];
    const char *dir = getenv("VERITY_BIN_DIR");
    snprintf(bin, sizeof bin, "%s/verity-gateway", dir ? dir : "build/bin");
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    pathf(logp, sizeof logp, logname);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        /* gw1 (the valid certificate) puts proofs in its exports, gw2 does not */
        bool proofs = strcmp(logname, "gw1.log") == 0;
        execl(bin, bin, "--keys", keys, "--cert", c, "--tls-key", k, "--listen", listen,
              "--broker", br.addr, "--rate-addr", rate_addr, "--rate-token", rate_tok,
              proofs ? "--proofs" : (char *)NULL, proofs_url, (char *)NULL);
        _exit(127);
    }
    int64_t deadline = tu_now_ms() + 20000;
    while (tu_now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        int fd = tcp_connect(port);
        if (fd >= 0) {
            close(fd);
            return pid;
        }
        poll(NULL, 0, 20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void stop_pid(pid_t *pid)
{
    if (*pid > 0) {
        kill(*pid, SIGTERM);
        int64_t deadline = tu_now_ms() + 10000;
        int st;
        while (waitpid(*pid, &st, WNOHANG) == 0) {
            if (tu_now_ms() > deadline) {
                kill(*pid, SIGKILL);
                waitpid(*pid, &st, 0);
                break;
            }
            poll(NULL, 0, 10);
        }
    }
    *pid = 0;
}

/* A minimal HTTPS GET (no certificate check: this is the attacker's or the
 * test's client). Returns the status code, 0 when TLS fails. */
static int https_get(uint16_t port, const char *path, const char *token, int max_version,
                     char *body, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int code = 0;
    body[0] = '\0';
    if (max_version) {
        SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
        SSL_CTX_set_max_proto_version(ctx, max_version);
        SSL_CTX_set_cipher_list(ctx, "DEFAULT:@SECLEVEL=0");
    }
    int fd = tcp_connect(port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (fd >= 0 && SSL_connect(ssl) == 1) {
        char req[8192];
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%s%sConnection: close\r\n\r\n",
                         path, token ? "Authorization: Bearer " : "", token ? token : "",
                         token ? "\r\n" : "");
        SSL_write(ssl, req, n);
        size_t got = 0;
        int r;
        while (got + 1 < cap && (r = SSL_read(ssl, body + got, (int)(cap - 1 - got))) > 0)
            got += (size_t)r;
        body[got] = '\0';
        sscanf(body, "HTTP/1.%*d %d", &code);
    }
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return code;
}

/* ---- data ------------------------------------------------------------------------------------- */

static void visit_doc(int i, char *out, size_t cap)
{
    snprintf(out, cap,
             "{\"patient_id\":\"p%d\",\"visit_date\":\"2026-03-%02dT09:30:00Z\",\"diagnosis\":\"dx%d\","
             "\"name\":\"Patient %d\",\"card\":\"41111111111%05d\",\"ssn\":\"123-45-%04d\","
             "\"type\":\"%s\",\"internal\":\"do not share\"}",
             i % 4, i % 28 + 1, i, i, i, i, i % 3 == 0 ? "visit" : "call");
}

static void lab_doc(int i, char *out, size_t cap)
{
    snprintf(out, cap,
             "{\"patient_id\":\"p%d\",\"visit_date\":\"2026-04-%02d\",\"diagnosis\":\"lab%d\","
             "\"name\":\"Lab %d\",\"card\":\"5500000000%06d\",\"ssn\":\"987-65-%04d\",\"type\":\"%s\","
             "\"acct\":\"ACCT-%d\",\"result\":%d}",
             i % 4, i % 28 + 1, i, i, i, i, i % 2 == 0 ? "visit" : "call", i, 100 + i);
}

static int produce_all(void)
{
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn.broker = br.addr;
    struct verity_producer *p = NULL;
    if (verity_producer_new(&pc, &p))
        return -1;
    char doc[512];
    int rc = 0;
    for (int i = 0; i < VISITS && !rc; i++) {
        visit_doc(i, doc, sizeof doc);
        struct verity_record r = {.value = doc, .value_len = (int32_t)strlen(doc),
                                  .timestamp_ms = T0 + i * 1000};
        rc = verity_produce(p, "visits", i % 2, &r, NULL, NULL);
    }
    for (int i = 0; i < LABS && !rc; i++) {
        lab_doc(i, doc, sizeof doc);
        struct verity_record r = {.value = doc, .value_len = (int32_t)strlen(doc),
                                  .timestamp_ms = T0 + i * 1000};
        rc = verity_produce(p, "labs", 0, &r, NULL, NULL);
    }
    for (int i = 0; i < 5 && !rc; i++) {
        struct verity_record r = {.value = "{\"type\":\"visit\"}", .value_len = 16,
                                  .timestamp_ms = T0 + 50000};
        rc = verity_produce(p, "other", 0, &r, NULL, NULL);
    }
    for (int i = 0; i < NOISE && !rc; i++) {
        struct verity_record r = {.value = "{\"type\":\"noise\"}", .value_len = 16,
                                  .timestamp_ms = T0 + 100000};
        rc = verity_produce(p, "visits", 0, &r, NULL, NULL);
    }
    if (!rc)
        rc = verity_producer_flush(p, 30000);
    verity_producer_free(p, 5000);
    return rc;
}

static int suite_init(void)
{
    if (tb_init(&br, "share") != 0)
        return -1;
    /* the admin HTTP API serves the inclusion proofs gw1 puts in exports */
    snprintf(br.http, sizeof br.http, "127.0.0.1:%u", tb_free_port());
    snprintf(proofs_url, sizeof proofs_url, "http://%s", br.http);
    if (tb_start(&br) != 0)
        return -1;
    snprintf(root, sizeof root, "%s", br.root);
    pathf(keys, sizeof keys, "keys");
    snprintf(gw_pub, sizeof gw_pub, "%s/gateway.pub", keys);
    pathf(rcpt_key, sizeof rcpt_key, "rcpt.key");
    pathf(rcpt_pub, sizeof rcpt_pub, "rcpt.pub");
    pathf(crt, sizeof crt, "tls.crt");
    pathf(key, sizeof key, "tls.key");
    pathf(old_crt, sizeof old_crt, "expired.crt");
    pathf(old_key, sizeof old_key, "expired.key");
    snprintf(log_pub, sizeof log_pub, "%s/keys/verity.pub", br.data);
    char out[4096];
    if (cli(out, sizeof out, (const char *[]){"share", "init", "--keys", keys, NULL}) != 0) {
        fprintf(stderr, "share init: %s\n", out);
        return -1;
    }
    char sp[700], *s = NULL;
    size_t n;
    snprintf(sp, sizeof sp, "%s/gateway.secret", keys);
    if (sh_read_file(sp, 256, &s, &n) || (s[64] = '\0', sh_unhex(s, secret, 32))) {
        free(s);
        return -1;
    }
    free(s);
    if (write_cert(crt, key, -3600, 86400) || write_cert(old_crt, old_key, -3 * 86400, -86400) ||
        write_x25519(rcpt_key, rcpt_pub))
        return -1;
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = br.addr;
    struct verity_client *c = NULL;
    if (verity_client_new(&cc, &c) || verity_client_connect(c, 10000))
        return -1;
    struct verity_topic_config t2 = {.partitions = 2}, t1 = {.partitions = 1};
    int rc = verity_topic_create(c, "visits", &t2, NULL) || verity_topic_create(c, "labs", &t1, NULL) ||
             verity_topic_create(c, "other", &t1, NULL);
    verity_client_free(c);
    if (rc || produce_all())
        return -1;
    port1 = tb_free_port();
    port2 = tb_free_port();
    gw1 = start_gateway(port1, crt, key, "1000,1000", "2,6", "gw1.log");
    gw2 = start_gateway(port2, old_crt, old_key, "1,3", "100,100", "gw2.log");
    return gw1 > 0 && gw2 > 0 ? 0 : -1;
}

static int suite_clean(void)
{
    stop_pid(&gw1);
    stop_pid(&gw2);
    tb_stop(&br, SIGTERM);
    tb_free(&br);
    return 0;
}

/* Creates a share; fills its id and profile path. Extra args end with NULL. */
static int create_share(const char *name, char *id_out, char *profile_out, const char *const *extra)
{
    char endpoint[64], out[8192];
    snprintf(endpoint, sizeof endpoint, "https://127.0.0.1:%u/v1", port1);
    snprintf(profile_out, 600, "%s/%s.share", root, name);
    const char *args[64] = {"share", "create", "--json", "--keys", keys, "--endpoint", endpoint,
                            "--recipient", "Acme Insurance", "--contact", "privacy@acme.example",
                            "--purpose", "claim 1234", "--profile", profile_out};
    int n = 15;
    bool has_exp = false;
    for (int i = 0; extra[i] && n < 62; i++) {
        has_exp |= strncmp(extra[i], "--expires", 9) == 0;
        args[n++] = extra[i];
    }
    if (!has_exp) {
        args[n++] = "--expires-in";
        args[n++] = "1d";
    }
    args[n] = NULL;
    int rc = cli(out, sizeof out, args);
    if (rc != 0) {
        fprintf(stderr, "share create: %s\n", out);
        return -1;
    }
    json_t *j = json_loads(out, 0, NULL);
    const char *id = json_string_value(json_object_get(j, "share"));
    if (!id) {
        json_decref(j);
        return -1;
    }
    snprintf(id_out, SHARE_ID_LEN + 1, "%s", id);
    json_decref(j);
    return 0;
}

static char *profile_token(const char *profile)
{
    char *text = NULL;
    size_t n;
    struct share_profile p;
    if (sh_read_file(profile, 1 << 16, &text, &n) || share_profile_parse(text, n, &p, NULL, 0)) {
        free(text);
        return NULL;
    }
    free(text);
    char *t = strdup(p.token);
    share_profile_deinit(&p);
    return t;
}

static int fetch(const char *profile, const char *out_file, char *out, size_t cap)
{
    return cli(out, cap, (const char *[]){"share", "fetch", profile, "-o", out_file, "--cacert", crt,
                                          NULL});
}

/* Loads the record lines of an export into an array (manifest excluded). */
static json_t *records_of(const char *path, json_t **header_out)
{
    json_t *arr = json_array();
    FILE *f = fopen(path, "rb");
    char *l = NULL;
    size_t c = 0;
    while (f && getline(&l, &c, f) > 0) {
        json_t *j = json_loads(l, 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        if (type && strcmp(type, "record") == 0)
            json_array_append(arr, j);
        else if (type && strcmp(type, "export") == 0 && header_out)
            *header_out = json_incref(j);
        json_decref(j);
    }
    free(l);
    if (f)
        fclose(f);
    return arr;
}

static void expect_hash(const struct xf_keys *k, const char *orig, const char *got)
{
    json_t *v = json_string(orig);
    char *c = sh_canon(v);
    uint8_t mac[32];
    char b[48], want[64];
    CU_ASSERT_FATAL(sh_hmac(k->hash, 32, c, strlen(c), mac) == 0);
    sh_b64url_enc(mac, 32, b);
    snprintf(want, sizeof want, "h1:%s", b);
    CU_ASSERT_STRING_EQUAL(got, want);
    free(c);
    json_decref(v);
}

/* ---- 1. transformations ---------------------------------------------------------------------- */

static char s1_id[SHARE_ID_LEN + 1], s1_profile[600], s1_export[600];

static void test_share_exports_exactly_the_scoped_transformed_records(void)
{
    char out[8192];
    CU_ASSERT_EQUAL_FATAL(
        create_share("s1", s1_id, s1_profile,
                     (const char *[]){"--topic", "visits", "--topic", "labs", "--from-time",
                                      "2026-01-01T00:00:06Z", "--to-time", "2026-01-01T00:00:33Z",
                                      "--where", "/type==\"visit\"", "--field", "/patient_id=hash",
                                      "--field", "/card=mask:last:4", "--field",
                                      "/visit_date=generalise:month", "--field", "/name=drop",
                                      "--field", "/ssn=encrypt", "--field", "/diagnosis=keep",
                                      "--recipient-key", rcpt_pub, "--max-uses", "5", NULL}),
        0);
    pathf(s1_export, sizeof s1_export, "s1.ndjson");
    int rc = fetch(s1_profile, s1_export, out, sizeof out);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    json_t *hdr = NULL, *recs = records_of(s1_export, &hdr);
    const char *eid = json_string_value(json_object_get(hdr, "export"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(eid);
    struct xf_keys k;
    CU_ASSERT_FATAL(xf_keys_derive(secret, s1_id, &k) == 0);
    EVP_PKEY *rk = NULL;
    CU_ASSERT_FATAL(sh_load_private(rcpt_key, &rk) == 0);
    /* expected: type visit, 6 s <= ts <= 33 s, from visits and labs */
    size_t want = 0, seen = 0;
    for (int i = 0; i < VISITS; i++)
        want += i % 3 == 0 && i >= 6 && i <= 33;
    for (int i = 0; i < LABS; i++)
        want += i % 2 == 0 && i >= 6 && i <= 33;
    CU_ASSERT_EQUAL(json_array_size(recs), want);
    size_t idx;
    json_t *r;
    json_array_foreach(recs, idx, r) {
        const char *topic = json_string_value(json_object_get(r, "topic"));
        int64_t ts = json_integer_value(json_object_get(r, "ts"));
        int i = (int)((ts - T0) / 1000);
        char doc[512];
        bool visits = strcmp(topic, "visits") == 0;
        CU_ASSERT(visits || strcmp(topic, "labs") == 0);
        if (visits)
            visit_doc(i, doc, sizeof doc);
        else
            lab_doc(i, doc, sizeof doc);
        json_t *orig = json_loads(doc, 0, NULL), *v = json_object_get(r, "value");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(orig, "type")), "visit");
        CU_ASSERT(i >= 6 && i <= 33);
        /* exactly the allowed fields, each as configured */
        CU_ASSERT_EQUAL(json_object_size(v), 5);
        expect_hash(&k, json_string_value(json_object_get(orig, "patient_id")),
                    json_string_value(json_object_get(v, "patient_id")));
        const char *card = json_string_value(json_object_get(orig, "card"));
        char masked[64];
        snprintf(masked, sizeof masked, "************%s", card + strlen(card) - 4);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "card")), masked);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "visit_date")),
                               visits ? "2026-03" : "2026-04");
        CU_ASSERT_PTR_NULL(json_object_get(v, "name"));
        CU_ASSERT_PTR_NULL(json_object_get(v, "internal"));
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "diagnosis")),
                               json_string_value(json_object_get(orig, "diagnosis")));
        json_t *plain = NULL;
        CU_ASSERT_EQUAL(xf_decrypt(rk, json_object_get(v, "ssn"), "/ssn",
                                   json_string_value(json_object_get(r, "pos")), &plain),
                        0);
        CU_ASSERT_STRING_EQUAL(json_string_value(plain), json_string_value(json_object_get(orig, "ssn")));
        json_decref(plain);
        /* commitments for every field not kept as is */
        json_t *cm = json_object_get(r, "commit");
        CU_ASSERT_EQUAL(json_object_size(cm), 5);
        CU_ASSERT_PTR_NULL(json_object_get(cm, "/diagnosis"));
        json_decref(orig);
        seen++;
    }
    CU_ASSERT_EQUAL(seen, want);
    /* the recipient's CLI decrypts too */
    char dec[600];
    pathf(dec, sizeof dec, "s1.plain.ndjson");
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"share", "decrypt", s1_export, "--key",
                                                           rcpt_key, "-o", dec, NULL}),
                    0);
    char *text = NULL;
    size_t n;
    CU_ASSERT_FATAL(sh_read_file(dec, 1 << 22, &text, &n) == 0);
    CU_ASSERT(strstr(text, "\"plaintext\":\"123-45-0006\"") != NULL);
    free(text);
    EVP_PKEY_free(rk);
    json_decref(recs);
    json_decref(hdr);
}

static void test_hash_pseudonyms_stable_within_share_differ_across(void)
{
    char id[SHARE_ID_LEN + 1], prof[600], exp[600], out[4096];
    CU_ASSERT_EQUAL_FATAL(create_share("s2", id, prof,
                                       (const char *[]){"--topic", "visits", "--to-offset", "20",
                                                        "--field", "/patient_id=hash", NULL}),
                          0);
    pathf(exp, sizeof exp, "s2.ndjson");
    CU_ASSERT_EQUAL_FATAL(fetch(prof, exp, out, sizeof out), 0);
    json_t *a = records_of(s1_export, NULL), *b = records_of(exp, NULL);
    CU_ASSERT(json_array_size(b) >= 20);
    /* within s2: the same patient, the same pseudonym; four patients, four */
    json_t *by_patient = json_object();
    size_t i;
    json_t *r;
    json_array_foreach(b, i, r) {
        int64_t ts = json_integer_value(json_object_get(r, "ts"));
        char p[16];
        snprintf(p, sizeof p, "p%d", (int)((ts - T0) / 1000) % 4);
        const char *ps = json_string_value(json_object_get(json_object_get(r, "value"), "patient_id"));
        const json_t *prev = json_object_get(by_patient, p);
        if (prev) {
            CU_ASSERT_STRING_EQUAL(json_string_value(prev), ps);
        } else {
            json_object_set_new(by_patient, p, json_string(ps));
        }
    }
    CU_ASSERT_EQUAL(json_object_size(by_patient), 4);
    /* across shares: no pseudonym of s1 appears in s2 */
    json_array_foreach(a, i, r) {
        const char *ps = json_string_value(json_object_get(json_object_get(r, "value"), "patient_id"));
        const char *k;
        json_t *v;
        json_object_foreach(by_patient, k, v) {
            CU_ASSERT_STRING_NOT_EQUAL(json_string_value(v), ps);
        }
    }
    json_decref(by_patient);
    json_decref(a);
    json_decref(b);
}

static void test_tokenize_date_shift_replace_in_an_export(void)
{
    char id[SHARE_ID_LEN + 1], prof[600], exp[600], out[4096];
    CU_ASSERT_EQUAL_FATAL(
        create_share("s3", id, prof,
                     (const char *[]){"--topic", "labs", "--field", "/acct=tokenize", "--field",
                                      "/visit_date=date_shift:/patient_id:20", "--field",
                                      "/diagnosis=replace:\"withheld\"", "--field",
                                      "/result=generalise:ranges:0-105=low,106-=high", NULL}),
        0);
    pathf(exp, sizeof exp, "s3.ndjson");
    CU_ASSERT_EQUAL_FATAL(fetch(prof, exp, out, sizeof out), 0);
    json_t *recs = records_of(exp, NULL);
    CU_ASSERT_EQUAL(json_array_size(recs), LABS);
    int shift_of[4] = {99, 99, 99, 99};
    size_t i;
    json_t *r;
    json_array_foreach(recs, i, r) {
        json_t *v = json_object_get(r, "value");
        int n = (int)((json_integer_value(json_object_get(r, "ts")) - T0) / 1000);
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "diagnosis")), "withheld");
        CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(v, "result")), 100 + n <= 105 ? "low" : "high");
        /* the owner turns the token back */
        char want[32];
        snprintf(want, sizeof want, "\"ACCT-%d\"", n);
        CU_ASSERT_EQUAL(cli(out, sizeof out,
                            (const char *[]){"share", "detokenize", "--keys", keys, "--share", id,
                                             json_string_value(json_object_get(v, "acct")), NULL}),
                        0);
        CU_ASSERT(strncmp(out, want, strlen(want)) == 0);
        /* one shift per patient, within 20 days */
        int64_t got_ms, orig_ms;
        char orig[16];
        snprintf(orig, sizeof orig, "2026-04-%02d", n % 28 + 1);
        CU_ASSERT_FATAL(sh_time_parse(json_string_value(json_object_get(v, "visit_date")), &got_ms) == 0);
        CU_ASSERT_FATAL(sh_time_parse(orig, &orig_ms) == 0);
        int shift = (int)((got_ms - orig_ms) / 86400000);
        CU_ASSERT(shift >= -20 && shift <= 20);
        if (shift_of[n % 4] == 99)
            shift_of[n % 4] = shift;
        CU_ASSERT_EQUAL(shift, shift_of[n % 4]);
    }
    json_decref(recs);
}

/* ---- 2. refusals ------------------------------------------------------------------------------- */

static char *audit_json(void)
{
    static char out[1 << 20];
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"share", "audit", "--json", NULL}), 0);
    return out;
}

static bool audited(const char *share, const char *outcome)
{
    json_t *arr = json_loads(audit_json(), 0, NULL);
    size_t i;
    json_t *a;
    bool found = false;
    json_array_foreach(arr, i, a) {
        const char *s = json_string_value(json_object_get(a, "share"));
        const char *o = json_string_value(json_object_get(a, "outcome"));
        if (o && strcmp(o, outcome) == 0 && (!share || (s && strcmp(s, share) == 0)))
            found = true;
    }
    json_decref(arr);
    return found;
}

static void test_refusals_are_typed_and_audited(void)
{
    char id[SHARE_ID_LEN + 1], prof[600], path[128], body[8192], out[4096];
    const char *base[] = {"--topic", "visits", "--to-offset", "5", "--field", "/diagnosis=keep", NULL};
    /* expired */
    CU_ASSERT_EQUAL_FATAL(create_share("expired", id, prof,
                                       (const char *[]){"--topic", "visits", "--field",
                                                        "/diagnosis=keep", "--expires-at",
                                                        "2026-01-01T00:00:00Z", NULL}),
                          0);
    char *tok = profile_token(prof);
    snprintf(path, sizeof path, "/v1/shares/%s/export", id);
    CU_ASSERT_EQUAL(https_get(port1, path, tok, 0, body, sizeof body), 401);
    CU_ASSERT(strstr(body, "\"error\":\"expired\"") != NULL);
    CU_ASSERT(audited(id, "expired"));
    free(tok);
    /* revoked */
    CU_ASSERT_EQUAL_FATAL(create_share("revoked", id, prof, base), 0);
    tok = profile_token(prof);
    snprintf(path, sizeof path, "/v1/shares/%s", id);
    CU_ASSERT_EQUAL(https_get(port1, path, tok, 0, body, sizeof body), 200);
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"share", "revoke", id, "--reason",
                                                           "contract ended", NULL}),
                    0);
    CU_ASSERT_EQUAL(https_get(port1, path, tok, 0, body, sizeof body), 403);
    CU_ASSERT(strstr(body, "\"error\":\"revoked\"") != NULL);
    CU_ASSERT(audited(id, "revoked"));
    CU_ASSERT(audited(id, "ok")); /* the revocation itself (share_revoke) */
    free(tok);
    /* tampered: one character of the payload changed */
    CU_ASSERT_EQUAL_FATAL(create_share("tampered", id, prof, base), 0);
    tok = profile_token(prof);
    snprintf(path, sizeof path, "/v1/shares/%s", id);
    tok[15] = tok[15] == 'a' ? 'b' : 'a';
    CU_ASSERT_EQUAL(https_get(port1, path, tok, 0, body, sizeof body), 401);
    CU_ASSERT(strstr(body, "\"error\":\"tampered\"") != NULL);
    free(tok);
    /* signed by another key, for a share that exists */
    EVP_PKEY *other = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
    CU_ASSERT_FATAL(EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &other) == 1);
    EVP_PKEY_CTX_free(ctx);
    struct share_db db;
    share_db_init(&db);
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = br.addr;
    struct verity_client *c = NULL;
    struct verity_consumer *cons = NULL;
    CU_ASSERT_FATAL(verity_client_new(&cc, &c) == 0 && verity_client_connect(c, 5000) == 0);
    CU_ASSERT_FATAL(share_db_catch_up(&db, c, &cons, br.addr, 10000) == 0);
    struct share_entry *e = share_db_find(&db, id);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_FATAL(share_token_issue(other, &e->spec, &tok) == 0);
    CU_ASSERT_EQUAL(https_get(port1, path, tok, 0, body, sizeof body), 401);
    CU_ASSERT(strstr(body, "\"error\":\"tampered\"") != NULL);
    CU_ASSERT(audited(NULL, "tampered"));
    free(tok);
    verity_consumer_free(cons);
    verity_client_free(c);
    share_db_deinit(&db);
    EVP_PKEY_free(other);
    /* out of scope: a topic not shared, another share's id */
    CU_ASSERT_EQUAL_FATAL(create_share("scope", id, prof, base), 0);
    tok = profile_token(prof);
    snprintf(path, sizeof path, "/v1/shares/%s/export?topic=other", id);
    CU_ASSERT_EQUAL(https_get(port1, path, tok, 0, body, sizeof body), 403);
    CU_ASSERT(strstr(body, "\"error\":\"out_of_scope\"") != NULL);
    snprintf(path, sizeof path, "/v1/shares/%s/export", s1_id);
    CU_ASSERT_EQUAL(https_get(port1, path, tok, 0, body, sizeof body), 403);
    CU_ASSERT(audited(id, "out_of_scope"));
    /* no token at all */
    CU_ASSERT_EQUAL(https_get(port1, path, NULL, 0, body, sizeof body), 401);
    free(tok);
    /* one-time: the second fetch is a replay */
    const char *once[] = {"--topic", "visits", "--to-offset", "5", "--field", "/diagnosis=keep",
                          "--max-uses", "1", NULL};
    CU_ASSERT_EQUAL_FATAL(create_share("once", id, prof, once), 0);
    char exp[600];
    pathf(exp, sizeof exp, "once.ndjson");
    CU_ASSERT_EQUAL(fetch(prof, exp, out, sizeof out), 0);
    CU_ASSERT_EQUAL(fetch(prof, exp, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "uses_exhausted") != NULL);
    CU_ASSERT(audited(id, "uses_exhausted"));
    /* rate limited per token (2/s, burst 6) */
    CU_ASSERT_EQUAL_FATAL(create_share("rate", id, prof, base), 0);
    tok = profile_token(prof);
    snprintf(path, sizeof path, "/v1/shares/%s", id);
    int ok = 0, limited = 0;
    int64_t t_start = tu_now_ms();
    for (int i = 0; i < 20; i++) {
        int code = https_get(port1, path, tok, 0, body, sizeof body);
        ok += code == 200;
        limited += code == 429;
        if (code == 429)
            CU_ASSERT(strstr(body, "\"error\":\"rate_limited\"") != NULL);
    }
    /* burst 6, then 2 per second: never more than that passes */
    CU_ASSERT(ok >= 6);
    CU_ASSERT(ok <= 6 + 2 * (tu_now_ms() - t_start) / 1000 + 1);
    CU_ASSERT(limited >= 1);
    CU_ASSERT(audited(id, "rate_limited"));
    /* rate limited per address (gateway 2: 1/s, burst 3), before any token check */
    limited = 0;
    for (int i = 0; i < 6; i++)
        limited += https_get(port2, "/v1/shares", tok, 0, body, sizeof body) == 429;
    CU_ASSERT(limited >= 2);
    free(tok);
    /* the audit topic is an ordinary log: verify it offline like any partition */
    char audit_dir[700];
    snprintf(audit_dir, sizeof audit_dir, "%s/topics/%s/0", br.data, SHARE_AUDIT_TOPIC);
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"log", "verify", audit_dir, "--pubkey",
                                                           log_pub, NULL}),
                    0);
    CU_ASSERT(strstr(out, "OK") != NULL);
}

/* ---- 3. verification ----------------------------------------------------------------------------- */

static int verify_cli(const char *file, char *out, size_t cap)
{
    return cli(out, cap, (const char *[]){"share", "verify", file, "--key", gw_pub, "--log-key",
                                          log_pub, "--json", NULL});
}

static int rewrite(const char *in, const char *outp, int drop, int swap_a, int swap_b,
                   const char *from, const char *to)
{
    char *text = NULL;
    size_t n;
    if (sh_read_file(in, 1 << 24, &text, &n))
        return -1;
    char *lines[4096];
    size_t nl = 0;
    for (char *p = text; *p && nl < 4096;) {
        lines[nl++] = p;
        char *e = strchr(p, '\n');
        if (!e)
            break;
        *e = '\0';
        p = e + 1;
    }
    FILE *f = fopen(outp, "wb");
    for (size_t i = 0; i < nl; i++) {
        size_t j = (int)i == swap_a ? (size_t)swap_b : (int)i == swap_b ? (size_t)swap_a : i;
        if ((int)i == drop)
            continue;
        char *l = lines[j], *hit = from ? strstr(l, from) : NULL;
        if (hit)
            fprintf(f, "%.*s%s%s\n", (int)(hit - l), l, to, hit + strlen(from));
        else
            fprintf(f, "%s\n", l);
    }
    fclose(f);
    free(text);
    return 0;
}

static void test_verify_accepts_untouched_rejects_every_tampering(void)
{
    char out[8192], p[600];
    CU_ASSERT_EQUAL(verify_cli(s1_export, out, sizeof out), 0);
    json_t *j = json_loads(out, 0, NULL);
    CU_ASSERT(json_is_true(json_object_get(j, "ok")));
    json_decref(j);
    /* a share over the visits partition with the checkpoint: covered records */
    char id[SHARE_ID_LEN + 1], prof[600], exp[600];
    CU_ASSERT_EQUAL_FATAL(create_share("ckpt", id, prof,
                                       (const char *[]){"--topic", "visits", "--where",
                                                        "/type==\"visit\"", "--field",
                                                        "/diagnosis=keep", NULL}),
                          0);
    pathf(exp, sizeof exp, "ckpt.ndjson");
    CU_ASSERT_EQUAL_FATAL(fetch(prof, exp, out, sizeof out), 0);
    CU_ASSERT_EQUAL(verify_cli(exp, out, sizeof out), 0);
    j = json_loads(out, 0, NULL);
    CU_ASSERT(json_integer_value(json_object_get(j, "checkpoints")) >= 1);
    CU_ASSERT(json_integer_value(json_object_get(j, "covered")) >= 1);
    json_decref(j);
    /* a checkpoint checked against another log key fails */
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"share", "verify", exp, "--key", gw_pub,
                                                           "--log-key", gw_pub, NULL}),
                    1);
    /* changed byte, dropped record, reordered records, changed manifest */
    pathf(p, sizeof p, "t_byte.ndjson");
    rewrite(s1_export, p, -1, -1, -1, "\"diagnosis\":\"dx6\"", "\"diagnosis\":\"dx7\"");
    CU_ASSERT_EQUAL(verify_cli(p, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "digest") != NULL);
    pathf(p, sizeof p, "t_drop.ndjson");
    rewrite(s1_export, p, 2, -1, -1, NULL, NULL);
    CU_ASSERT_EQUAL(verify_cli(p, out, sizeof out), 1);
    pathf(p, sizeof p, "t_swap.ndjson");
    rewrite(s1_export, p, -1, 1, 2, NULL, NULL);
    CU_ASSERT_EQUAL(verify_cli(p, out, sizeof out), 1);
    pathf(p, sizeof p, "t_manifest.ndjson");
    rewrite(s1_export, p, -1, -1, -1, "\"purpose\":\"claim 1234\",\"x25519\"", "\"purpose\":\"marketing\",\"x25519\"");
    CU_ASSERT_EQUAL(verify_cli(p, out, sizeof out), 1);
    CU_ASSERT(strstr(out, "signature") != NULL);
    /* forged: the manifest's signature replaced by one from another key */
    pathf(p, sizeof p, "t_sig.ndjson");
    char *text = NULL;
    size_t n;
    CU_ASSERT_FATAL(sh_read_file(s1_export, 1 << 24, &text, &n) == 0);
    char *sig = strstr(text, "\"signature\":\"");
    CU_ASSERT_FATAL(sig != NULL);
    sig += 13;
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
    CU_ASSERT(sh_write_file(p, text, n, 0600) == 0);
    free(text);
    CU_ASSERT_EQUAL(verify_cli(p, out, sizeof out), 1);
}

/* ---- 3b. inclusion proofs (issue 11 in exports) ------------------------------------------------ */

typedef void (*mutate_fn)(json_t *lines); /* lines: body lines, then the manifest */

/* Rewrites an export as a dishonest gateway holding the gateway key would:
 * mutate changes lines, then the body digest, line counts and signature are
 * made consistent again. Only the proofs can then catch the change. */
static int resign(const char *in, const char *outp, mutate_fn mutate)
{
    json_t *lines = json_array();
    FILE *f = fopen(in, "rb");
    char *l = NULL;
    size_t c = 0;
    while (f && getline(&l, &c, f) > 0)
        json_array_append_new(lines, json_loads(l, 0, NULL));
    free(l);
    if (f)
        fclose(f);
    size_t n = json_array_size(lines);
    if (n < 2)
        return -1;
    mutate(lines);
    n = json_array_size(lines);
    json_t *m = json_array_get(lines, n - 1);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    FILE *o = fopen(outp, "wb");
    uint64_t proofs = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        json_t *j = json_array_get(lines, i);
        char *t = json_dumps(j, JSON_COMPACT);
        EVP_DigestUpdate(md, t, strlen(t));
        EVP_DigestUpdate(md, "\n", 1);
        fprintf(o, "%s\n", t);
        free(t);
        proofs += strcmp(json_string_value(json_object_get(j, "type")), "proof") == 0;
    }
    uint8_t d[32];
    unsigned dl = 32;
    char ds[48], sigs[96];
    EVP_DigestFinal_ex(md, d, &dl);
    EVP_MD_CTX_free(md);
    sh_b64url_enc(d, 32, ds);
    json_object_set_new(m, "body_sha256", json_string(ds));
    json_object_set_new(m, "lines", json_integer((json_int_t)(n - 1)));
    json_object_set_new(json_object_get(m, "proofs"), "lines", json_integer((json_int_t)proofs));
    json_object_del(m, "signature");
    char *canon = sh_canon(m), kp[700];
    size_t tl = strlen("VERITY-SHARE-MANIFEST-1\n"), cl = strlen(canon), sl = 64;
    uint8_t *msg = malloc(tl + cl), sig[64];
    memcpy(msg, "VERITY-SHARE-MANIFEST-1\n", tl);
    memcpy(msg + tl, canon, cl);
    snprintf(kp, sizeof kp, "%s/gateway.key", keys);
    EVP_PKEY *sk = NULL;
    int rc = sh_load_private(kp, &sk);
    EVP_MD_CTX *sm = EVP_MD_CTX_new();
    if (!rc && (EVP_DigestSignInit(sm, NULL, NULL, NULL, sk) != 1 ||
                EVP_DigestSign(sm, sig, &sl, msg, tl + cl) != 1))
        rc = -1;
    EVP_MD_CTX_free(sm);
    EVP_PKEY_free(sk);
    sh_b64url_enc(sig, 64, sigs);
    json_object_set_new(m, "signature", json_string(sigs));
    char *mt = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    fprintf(o, "%s\n", mt);
    free(mt);
    fclose(o);
    free(canon);
    free(msg);
    json_decref(lines);
    return rc;
}

static json_t *first_of(json_t *lines, const char *type)
{
    for (size_t i = 0; i < json_array_size(lines); i++) {
        json_t *j = json_array_get(lines, i);
        if (strcmp(json_string_value(json_object_get(j, "type")), type) == 0)
            return j;
    }
    return NULL;
}

static void mut_none(json_t *lines) { (void)lines; }

static void mut_proof_hash(json_t *lines)
{
    json_t *path = json_object_get(first_of(lines, "proof"), "proof");
    char h[64];
    snprintf(h, sizeof h, "%s", json_string_value(json_array_get(path, 0)));
    h[0] = h[0] == 'A' ? 'B' : 'A';
    json_array_set_new(path, 0, json_string(h));
}

static void mut_leaf(json_t *lines)
{
    json_t *p = first_of(lines, "proof");
    uint8_t leaf[76];
    long n = note_b64_decode(json_string_value(json_object_get(p, "leaf")),
                             strlen(json_string_value(json_object_get(p, "leaf"))), leaf, 76);
    if (n != 76)
        return;
    leaf[8] ^= 1; /* the batch's record count */
    char b[128];
    note_b64_encode(leaf, 76, b);
    json_object_set_new(p, "leaf", json_string(b));
}

/* A record of one batch presented under another batch's proof. */
static void mut_drop_proof(json_t *lines)
{
    for (size_t i = 0, seen = 0; i < json_array_size(lines); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(lines, i), "type")),
                   "proof") == 0 && ++seen == 2) {
            json_array_remove(lines, i);
            return;
        }
}

/* The manifest claims the partition's tree had another root. */
static void mut_note(json_t *lines)
{
    json_t *m = json_array_get(lines, json_array_size(lines) - 1);
    json_t *src = json_array_get(json_object_get(m, "sources"), 0);
    json_t *tree = json_object_get(src, "tree");
    char note[2048];
    snprintf(note, sizeof note, "%s", json_string_value(json_object_get(tree, "note")));
    char *nl = strchr(strchr(note, '\n') + 1, '\n') + 1; /* the root line */
    nl[0] = nl[0] == 'A' ? 'B' : 'A';
    json_object_set_new(tree, "note", json_string(note));
}

static int verify_proofs(const char *file, const char *vkey, char *out, size_t cap)
{
    return cli(out, cap, (const char *[]){"share", "verify", file, "--key", gw_pub, "--log-vkey",
                                          vkey, "--require-proofs", "--json", NULL});
}

static void test_export_proofs_verify_and_tampered_proofs_fail(void)
{
    char out[8192], p[600], vkey[512];
    char *body = NULL;
    size_t bl;
    int st = sp_http_get(proofs_url, "/v1/proof/key", &body, &bl);
    CU_ASSERT_EQUAL_FATAL(st, 200);
    snprintf(vkey, sizeof vkey, "%.*s", (int)strcspn(body, "\n"), body);
    free(body);
    /* every record of the untouched export is proven, notes signed */
    CU_ASSERT_EQUAL(verify_proofs(s1_export, vkey, out, sizeof out), 0);
    json_t *j = json_loads(out, 0, NULL);
    json_int_t recs = json_integer_value(json_object_get(j, "records"));
    CU_ASSERT(recs > 0);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "proven")), recs);
    CU_ASSERT(json_integer_value(json_object_get(j, "proof_lines")) >= 2);
    CU_ASSERT(json_integer_value(json_object_get(j, "trees")) >= 2);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "trees_signed")),
                    json_integer_value(json_object_get(j, "trees")));
    json_decref(j);
    /* with only the log's PEM key, the notes verify too */
    CU_ASSERT_EQUAL(verify_cli(s1_export, out, sizeof out), 0);
    CU_ASSERT(strstr(out, "\"trees_signed\":0") == NULL);
    /* the independent Go verifier (sumdb/note, sumdb/tlog) agrees */
    char go[700];
    const char *dir = getenv("VERITY_BIN_DIR");
    snprintf(go, sizeof go, "%s/../go/proofcheck", dir ? dir : "build/bin");
    bool have_go = access(go, X_OK) == 0;
    if (have_go) {
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "'%s' export '%s' '%s' >/dev/null", go, vkey, s1_export);
        CU_ASSERT_EQUAL(system(cmd), 0);
    } else {
        fprintf(stderr, "    (%s missing: Go check of exports skipped)\n", go);
    }
    /* re-signed by the gateway key but otherwise unchanged: still fine */
    pathf(p, sizeof p, "t_resigned.ndjson");
    CU_ASSERT_EQUAL_FATAL(resign(s1_export, p, mut_none), 0);
    CU_ASSERT_EQUAL(verify_proofs(p, vkey, out, sizeof out), 0);
    /* a dishonest gateway (it holds its key) cannot fake the log's proofs */
    static const struct {
        const char *name;
        mutate_fn fn;
        const char *expect;
    } cases[] = {{"t_proofhash.ndjson", mut_proof_hash, "does not lead to the signed root"},
                 {"t_leaf.ndjson", mut_leaf, "inclusion proof"},
                 {"t_dropproof.ndjson", mut_drop_proof, "no inclusion proof"},
                 {"t_note.ndjson", mut_note, "does not verify with the log key"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pathf(p, sizeof p, cases[i].name);
        CU_ASSERT_EQUAL_FATAL(resign(s1_export, p, cases[i].fn), 0);
        CU_ASSERT_EQUAL(verify_proofs(p, vkey, out, sizeof out), 1);
        if (!strstr(out, cases[i].expect))
            fprintf(stderr, "    %s: %s\n", cases[i].name, out);
        CU_ASSERT(strstr(out, cases[i].expect) != NULL);
        if (have_go) {
            char cmd[2048];
            snprintf(cmd, sizeof cmd, "'%s' export '%s' '%s' >/dev/null 2>&1", go, vkey, p);
            CU_ASSERT_NOT_EQUAL(system(cmd), 0);
        }
    }
    /* a tampered record is caught by the digest before any proof */
    pathf(p, sizeof p, "t_rec.ndjson");
    rewrite(s1_export, p, -1, -1, -1, "\"diagnosis\":\"dx6\"", "\"diagnosis\":\"dx7\"");
    CU_ASSERT_EQUAL(verify_proofs(p, vkey, out, sizeof out), 1);
}

static void test_reveal_matches_commitment_wrong_value_does_not(void)
{
    char out[8192], rev[600];
    json_t *recs = records_of(s1_export, NULL);
    const char *pos = json_string_value(json_object_get(json_array_get(recs, 0), "pos"));
    CU_ASSERT_EQUAL_FATAL(cli(out, sizeof out, (const char *[]){"share", "reveal", "--keys", keys,
                                                                 "--share", s1_id, "--pos", pos,
                                                                 "--path", "/name", NULL}),
                          0);
    pathf(rev, sizeof rev, "reveal.json");
    CU_ASSERT(sh_write_file(rev, out, strlen(out), 0600) == 0);
    CU_ASSERT(strstr(out, "\"value\":\"Patient ") != NULL);
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"share", "check-reveal", s1_export, rev, NULL}), 0);
    json_t *r = json_load_file(rev, 0, NULL);
    json_object_set_new(r, "value", json_string("Somebody Else"));
    json_dump_file(r, rev, 0);
    json_decref(r);
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"share", "check-reveal", s1_export, rev, NULL}), 1);
    json_decref(recs);
}

static void test_resumed_fetch_gives_the_same_bytes(void)
{
    char part[600], out[4096];
    pathf(part, sizeof part, "resume.ndjson");
    /* keep the first 40% of the export, cut in the middle of a line */
    char *text = NULL;
    size_t n;
    CU_ASSERT_FATAL(sh_read_file(s1_export, 1 << 24, &text, &n) == 0);
    CU_ASSERT(sh_write_file(part, text, n * 2 / 5, 0600) == 0);
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"share", "fetch", s1_profile, "-o", part,
                                                           "--cacert", crt, "--resume", NULL}),
                    0);
    CU_ASSERT(strstr(out, "resumed") != NULL);
    char *again = NULL;
    size_t m;
    CU_ASSERT_FATAL(sh_read_file(part, 1 << 24, &again, &m) == 0);
    /* everything up to the manifest's own time is identical; the manifest
     * is re-signed at the end of the resumed request */
    char *a_m = strstr(text, "{\"body_sha256\""), *b_m = strstr(again, "{\"body_sha256\"");
    CU_ASSERT_FATAL(a_m && b_m);
    CU_ASSERT_EQUAL(a_m - text, b_m - again);
    CU_ASSERT(memcmp(text, again, (size_t)(a_m - text)) == 0);
    CU_ASSERT(strncmp(a_m, b_m, 60) == 0); /* same body digest */
    CU_ASSERT_EQUAL(verify_cli(part, out, sizeof out), 0);
    free(text);
    free(again);
}

/* ---- 4. TLS --------------------------------------------------------------------------------------- */

static void test_tls_plaintext_old_versions_expired_cert_refused(void)
{
    /* plaintext HTTP on the TLS port: no HTTP answer */
    int fd = tcp_connect(port1);
    CU_ASSERT_FATAL(fd >= 0);
    const char *req = "GET /v1/shares HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    CU_ASSERT(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    char buf[256] = {0};
    ssize_t got = read(fd, buf, sizeof buf - 1);
    CU_ASSERT(got <= 0 || strncmp(buf, "HTTP/", 5) != 0);
    close(fd);
    /* a client offering only TLS 1.0 / 1.1 fails the handshake ... */
    char body[4096];
    CU_ASSERT_EQUAL(https_get(port1, "/v1/shares", NULL, TLS1_1_VERSION, body, sizeof body), 0);
    CU_ASSERT_EQUAL(https_get(port1, "/v1/shares", NULL, TLS1_VERSION, body, sizeof body), 0);
    /* ... where the same client with TLS 1.2 gets an HTTP answer */
    CU_ASSERT_EQUAL(https_get(port1, "/v1/shares", NULL, TLS1_2_VERSION, body, sizeof body), 401);
    /* an expired server certificate: the recipient's fetch refuses it */
    char prof[600], out[4096], exp[600], endpoint[64];
    snprintf(endpoint, sizeof endpoint, "https://127.0.0.1:%u/v1", port2);
    pathf(prof, sizeof prof, "expired-cert.share");
    char *tok = profile_token(s1_profile);
    char *p = share_profile_dump(endpoint, tok, T0 + 86400000LL * 3650);
    CU_ASSERT(sh_write_file(prof, p, strlen(p), 0600) == 0);
    free(p);
    free(tok);
    pathf(exp, sizeof exp, "expired-cert.ndjson");
    CU_ASSERT_EQUAL(cli(out, sizeof out, (const char *[]){"share", "fetch", prof, "-o", exp,
                                                           "--cacert", old_crt, NULL}),
                    1);
    CU_ASSERT(strstr(out, "expired") != NULL);
}

int main(void)
{
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("share_gateway", suite_init, suite_clean);
    CU_add_test(s, "1 scoped, filtered, transformed export", test_share_exports_exactly_the_scoped_transformed_records);
    CU_add_test(s, "1 hash pseudonyms per share", test_hash_pseudonyms_stable_within_share_differ_across);
    CU_add_test(s, "1 tokenize, date_shift, replace, ranges", test_tokenize_date_shift_replace_in_an_export);
    CU_add_test(s, "2 refusals typed and audited", test_refusals_are_typed_and_audited);
    CU_add_test(s, "3 verify untouched / tampered", test_verify_accepts_untouched_rejects_every_tampering);
    CU_add_test(s, "3 proofs in exports: verify, tampered proofs fail (C and Go)", test_export_proofs_verify_and_tampered_proofs_fail);
    CU_add_test(s, "3 reveal and check-reveal", test_reveal_matches_commitment_wrong_value_does_not);
    CU_add_test(s, "3 resumed fetch", test_resumed_fetch_gives_the_same_bytes);
    CU_add_test(s, "4 TLS negatives", test_tls_plaintext_old_versions_expired_cert_refused);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
