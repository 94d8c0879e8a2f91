/*
 * Proofs checked by a verifier nobody on this team wrote: Go's
 * golang.org/x/mod/sumdb/note and sumdb/tlog (tests/go/proofcheck, built by
 * `make` from Debian's golang-golang-x-mod-dev), next to Verity's own.
 *
 *  - logs of 1, 2, 3, 255, 256, 257 and 1,000,003 batches (20,011 with
 *    VERITY_TEST_QUICK): every inclusion proof of the small logs, about a
 *    thousand sampled in the large one, consistency proofs between many
 *    size pairs,
 *    accepted by both verifiers; a flipped bit in a proof hash, the leaf,
 *    the leaf hash, the index, the tree size, the checkpoint's root or size
 *    line, or its signature rejected by both;
 *  - note.Open accepts a checkpoint with the published verifier key and
 *    refuses one with a changed byte; `verity proof verify` agrees;
 *  - `verity witness` cosigns with a valid consistency proof (200), refuses
 *    a fork (409), a stale old size (409) and a bad proof (422), and its
 *    cosignature verifies in C and in Go;
 *  - a real verityd serves C2SP tiles from which the Go tile client
 *    rebuilds the signed root and checks every entry bundle;
 *  - a real verityd pushes its checkpoints to real `verity witness`
 *    processes (witnesses, by interval and by growth): honest cosignatures
 *    arrive, are served and verify in C and Go; a forked witness, one that
 *    does not know the log, one answering with another key and one that is
 *    down are logged, counted and add nothing.
 */
#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/merkle.h"
#include "storage/note.h"
#include "storage/proof.h"
#include "storage/tproof.h"
#include "storage/vlog.h"
#include "tests/support/tbroker.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"
#include "verity/verity.h"

#define NAME "verity.example/test"

static char *root;
static EVP_PKEY *key;
static char vkey[NOTE_VKEY_MAX + 1];
static struct note_vkey vk;
static char bin_verity[512], bin_verityd[512], bin_check[600];

static int suite_init(void)
{
    char kp[600], pp[600];
    const char *bd = getenv("VERITY_BIN_DIR");
    snprintf(bin_verity, sizeof bin_verity, "%s/verity", bd ? bd : "build/bin");
    snprintf(bin_verityd, sizeof bin_verityd, "%s/verityd", bd ? bd : "build/bin");
    snprintf(bin_check, sizeof bin_check, "%s/../go/proofcheck", bd ? bd : "build/bin");
    root = tu_tmpdir("proofs");
    snprintf(kp, sizeof kp, "%s/log.key", root);
    snprintf(pp, sizeof pp, "%s/log.pub", root);
    if (ckpt_keygen(kp, pp) || ckpt_load_private(kp, &key))
        return -1;
    if (note_vkey_format(NAME, NOTE_TYPE_ED25519, key, vkey, sizeof vkey) ||
        note_vkey_parse(vkey, &vk))
        return -1;
    if (access(bin_check, X_OK) != 0) {
        fprintf(stderr, "test_proofs: %s missing (make builds it with Go)\n", bin_check);
        return -1;
    }
    return 0;
}

static int suite_clean(void)
{
    EVP_PKEY_free(key);
    if (!getenv("VERITY_TEST_KEEP"))
        tu_rmrf(root);
    free(root);
    return 0;
}

/* Runs argv with stdin/stdout redirected (NULL: inherit); exit status. */
static int run(char *const argv[], const char *in, const char *out)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (in) {
            int fd = open(in, O_RDONLY);
            if (fd < 0 || dup2(fd, 0) < 0)
                _exit(126);
        }
        if (out) {
            int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0 || dup2(fd, 1) < 0)
                _exit(126);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    return b;
}

/* Builds a log of n single-record batches with the tree (durability os,
 * no checkpoint batches, abandoned open so the tree has exactly n leaves). */
static struct vlog *build_log(const char *dir, uint64_t n)
{
    struct vlog_config cfg;
    struct vlog *log = NULL;
    struct batch_builder b;
    uint64_t bad = 0;
    vlog_config_default(&cfg);
    cfg.durability = VLOG_DURABILITY_OS;
    cfg.checkpoint_records = 0;
    cfg.signing_key = key;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, 4096), 0);
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &cfg, 1000, &log, &bad), 0);
    for (uint64_t i = 0; i < n; i++) {
        CU_ASSERT_EQUAL_FATAL(tu_build_batch(&b, "p", i, 1, 16, 1000 + (int64_t)i), 0);
        CU_ASSERT_EQUAL_FATAL(vlog_append(log, b.buf, b.len, 1000, NULL), 0);
    }
    batch_builder_deinit(&b);
    CU_ASSERT_EQUAL(mt_size(vlog_tree(log)), n);
    return log;
}

static void put_line(FILE *f, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    fprintf(f, "%s\n", s);
    free(s);
}

static bool c_accepts(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_t *sum = NULL;
    int rc = proof_verify_text(s, strlen(s), &vk, 1, &sum);
    json_decref(sum);
    free(s);
    return rc == 0;
}

/* Flips one bit of a base64 field (decoded, re-encoded). */
static void flip_b64(json_t *o, const char *k, size_t byte)
{
    const char *s = json_string_value(json_object_get(o, k));
    uint8_t buf[256];
    char out[400];
    long n = note_b64_decode(s, strlen(s), buf, sizeof buf);
    CU_ASSERT_FATAL(n > 0);
    buf[byte % (size_t)n] ^= 0x10;
    note_b64_encode(buf, (size_t)n, out);
    json_object_set_new(o, k, json_string(out));
}

/* Changes one character of the note in field k at line index li (0 origin,
 * 1 size, 2 root, 4 signature line) */
static void bend_note(json_t *o, const char *k, int li)
{
    char *s = strdup(json_string_value(json_object_get(o, k)));
    char *p = s;
    for (int i = 0; i < li; i++)
        p = strchr(p, '\n') + 1;
    if (li == 4)
        p += strlen("\xe2\x80\x94 " NAME " ") + 10;
    *p = *p == 'A' ? 'B' : *p == '9' ? '8' : *p == '1' ? '2' : 'A';
    json_object_set_new(o, k, json_string(s));
    free(s);
}

/* The tampered variants of one proof (without its tlog_proof text). */
static int write_tampered(FILE *f, json_t *p, int *c_rejected)
{
    int n = 0;
    bool incl = strcmp(json_string_value(json_object_get(p, "type")), "inclusion") == 0;
    size_t np = json_array_size(json_object_get(p, "proof"));
    for (int v = 0; v < 9; v++) {
        json_t *t = json_deep_copy(p);
        json_object_del(t, "tlog_proof");
        json_object_del(t, "batch");
        const char *note = incl ? "checkpoint" : "new_checkpoint";
        switch (v) {
        case 0: /* a proof hash */
            if (np == 0)
                goto skip;
            {
                json_t *a = json_object_get(t, "proof");
                json_t *h = json_array_get(a, np / 2);
                json_t *w = json_object();
                json_object_set(w, "x", h);
                flip_b64(w, "x", 7);
                json_array_set(a, np / 2, json_object_get(w, "x"));
                json_decref(w);
            }
            break;
        case 1:
            if (!incl)
                goto skip;
            flip_b64(t, "leaf", 50);
            break;
        case 2:
            if (!incl)
                goto skip;
            flip_b64(t, "leaf_hash", 3);
            break;
        case 3:
            json_object_set_new(
                t, incl ? "tree_size" : "new_size",
                json_integer(
                    json_integer_value(json_object_get(t, incl ? "tree_size" : "new_size")) + 1));
            break;
        case 4:
            if (incl) {
                json_int_t i = json_integer_value(json_object_get(t, "index"));
                json_int_t n2 = json_integer_value(json_object_get(t, "tree_size"));
                if ((i ^ 1) >= n2)
                    goto skip;
                json_object_set_new(t, "index", json_integer(i ^ 1));
            } else {
                json_int_t m = json_integer_value(json_object_get(t, "old_size"));
                json_object_set_new(t, "old_size", json_integer(m + 1));
            }
            break;
        case 5:
            bend_note(t, note, 2); /* root line */
            break;
        case 6:
            bend_note(t, note, 1); /* size line */
            break;
        case 7:
            bend_note(t, note, 4); /* signature */
            break;
        case 8:
            if (incl)
                goto skip;
            bend_note(t, "old_checkpoint", 2);
            break;
        }
        if (!c_accepts(t))
            (*c_rejected)++;
        put_line(f, t);
        n++;
    skip:
        json_decref(t);
    }
    return n;
}

/* Runs the Go verifier over a JSON-lines file; counts "ok" lines. */
static int go_check(const char *in, int *lines_out)
{
    char out[700];
    snprintf(out, sizeof out, "%s.out", in);
    char *argv[] = {bin_check, "lines", vkey, NULL};
    CU_ASSERT_EQUAL_FATAL(run(argv, in, out), 0);
    size_t len = 0;
    char *s = slurp(out, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    int ok = 0, lines = 0;
    for (char *p = s; *p; p = strchr(p, '\n') + 1) {
        lines++;
        if (strncmp(p, "ok\n", 3) == 0)
            ok++;
        if (!strchr(p, '\n'))
            break;
    }
    free(s);
    *lines_out = lines;
    return ok;
}

static void check_log(uint64_t n, bool all)
{
    char dir[600], good[700], bad[700];
    snprintf(dir, sizeof dir, "%s/log%" PRIu64, root, n);
    snprintf(good, sizeof good, "%s/good.jsonl", dir);
    snprintf(bad, sizeof bad, "%s/bad.jsonl", dir);
    struct vlog *log = build_log(dir, n);
    struct proof_signer s;
    CU_ASSERT_EQUAL_FATAL(proof_signer_init(&s, key, NAME, "t", 0), 0);
    FILE *fg = fopen(good, "w"), *fb = fopen(bad, "w");
    CU_ASSERT_FATAL(fg && fb);
    int ngood = 0, nbad = 0, c_ok = 0, c_rej = 0;
    uint64_t step = all ? 1 : n / 997 + 1;
    uint64_t seed = n * 2654435761u + 17;
    for (uint64_t i = 0; i < n; i += step) {
        uint64_t off =
            all ? i : (seed = seed * 6364136223846793005ull + 1442695040888963407ull) % n;
        json_t *j = NULL;
        CU_ASSERT_EQUAL_FATAL(proof_inclusion(log, &s, off, 0, true, &j), 0);
        CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "index")), (json_int_t)off);
        c_ok += c_accepts(j);
        put_line(fg, j);
        ngood++;
        if (i % (all ? 1 : 7) == 0)
            nbad += write_tampered(fb, j, &c_rej);
        json_decref(j);
    }
    /* consistency: every pair for tiny logs, a spread of pairs otherwise */
    for (uint64_t m = 1; m <= n; m += (n <= 8 ? 1 : n / 23 + 1)) {
        for (uint64_t k = m; k <= n; k += (n <= 8 ? 1 : n / 17 + 1)) {
            json_t *j = NULL;
            CU_ASSERT_EQUAL_FATAL(proof_consistency(log, &s, m, k, &j), 0);
            c_ok += c_accepts(j);
            put_line(fg, j);
            ngood++;
            if (k > m)
                nbad += write_tampered(fb, j, &c_rej);
            json_decref(j);
        }
    }
    fclose(fg);
    fclose(fb);
    int lines = 0;
    int go_ok = go_check(good, &lines);
    CU_ASSERT_EQUAL(lines, ngood);
    CU_ASSERT_EQUAL(go_ok, ngood);
    CU_ASSERT_EQUAL(c_ok, ngood);
    int bad_ok = go_check(bad, &lines);
    CU_ASSERT_EQUAL(lines, nbad);
    CU_ASSERT_EQUAL(bad_ok, 0);
    CU_ASSERT_EQUAL(c_rej, nbad);
    printf("\n    log of %" PRIu64 " batches: %d proofs accepted by C and Go, %d tampered "
           "rejected by both ",
           n, ngood, nbad);
    vlog_abandon(log);
}

static void test_small_logs(void)
{
    static const uint64_t sizes[] = {1, 2, 3, 255, 256, 257};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        check_log(sizes[i], true);
}

static void test_large_log(void)
{
    /* about 15 s on the 2-core CI machine; VERITY_TEST_QUICK shrinks it */
    check_log(tu_quick() ? 20011 : 1000003, false);
}

/* note.Open and `verity proof verify` on a CLI-made proof. */
static void test_note_open_and_cli(void)
{
    char data[600], part[700], kf[700], cp[700], cp2[700], pf[700];
    snprintf(data, sizeof data, "%s/data", root);
    snprintf(part, sizeof part, "%s/topics/orders/3", data);
    char topics[700];
    snprintf(topics, sizeof topics, "%s/topics", data);
    mkdir(data, 0755);
    mkdir(topics, 0755);
    snprintf(topics, sizeof topics, "%s/topics/orders", data);
    mkdir(topics, 0755);
    struct vlog *log = build_log(part, 300);
    CU_ASSERT_EQUAL(vlog_close(log, 2000), 0);
    snprintf(kf, sizeof kf, "%s/log.key", root);
    snprintf(cp, sizeof cp, "%s/cp.note", root);
    snprintf(cp2, sizeof cp2, "%s/cp2.note", root);
    snprintf(pf, sizeof pf, "%s/p.tlog-proof", root);
    char *a1[] = {bin_verity, "proof",      "checkpoint", "orders", "3",  "--data-dir",
                  data,       "--key-file", kf,           "--name", NAME, NULL};
    CU_ASSERT_EQUAL_FATAL(run(a1, NULL, cp), 0);
    char *g1[] = {bin_check, "note", vkey, cp, NULL};
    CU_ASSERT_EQUAL(run(g1, NULL, "/dev/null"), 0);
    size_t len = 0;
    char *s = slurp(cp, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    for (size_t i = 0; i < len; i += len / 9 + 1) {
        if (s[i] == '\n')
            continue;
        s[i] ^= 1;
        FILE *f = fopen(cp2, "w");
        fwrite(s, 1, len, f);
        fclose(f);
        char *g2[] = {bin_check, "note", vkey, cp2, NULL};
        CU_ASSERT_NOT_EQUAL(run(g2, NULL, "/dev/null"), 0);
        s[i] ^= 1;
    }
    free(s);
    char *a2[] = {bin_verity, "proof",      "inclusion", "orders", "3",  "214", "--data-dir",
                  data,       "--key-file", kf,          "--name", NAME, NULL};
    CU_ASSERT_EQUAL_FATAL(run(a2, NULL, pf), 0);
    char *a3[] = {bin_verity, "proof", "verify", pf, "--key", vkey, NULL};
    CU_ASSERT_EQUAL(run(a3, NULL, "/dev/null"), 0);
    s = slurp(pf, &len);
    char *idx = strstr(s, "index 214");
    CU_ASSERT_PTR_NOT_NULL_FATAL(idx);
    idx[8] = '5';
    FILE *f = fopen(pf, "w");
    fwrite(s, 1, len, f);
    fclose(f);
    free(s);
    CU_ASSERT_EQUAL(run(a3, NULL, "/dev/null"), 1);
}

/* ---- a tiny HTTP/1.0 client over loopback ---------------------------------- */

static int http(uint16_t port, const char *method, const char *path, const char *body, char *resp,
                size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char hdr[512];
    size_t bl = body ? strlen(body) : 0;
    int hl = snprintf(hdr, sizeof hdr,
                      "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n", method,
                      path, bl);
    if (write(fd, hdr, (size_t)hl) != hl || (bl && write(fd, body, bl) != (ssize_t)bl)) {
        close(fd);
        return -1;
    }
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd, resp + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    resp[n] = '\0';
    close(fd);
    int code = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
        return -1;
    char *b = strstr(resp, "\r\n\r\n");
    if (b)
        memmove(resp, b + 4, strlen(b + 4) + 1);
    return code;
}

static pid_t spawn(char *const argv[], const char *logpath)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static bool wait_port(uint16_t port, pid_t pid)
{
    for (int i = 0; i < 2000; i++) {
        char r[64];
        if (http(port, "GET", "/", NULL, r, sizeof r) > 0)
            return true;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return false;
        usleep(10000);
    }
    return false;
}

static void stop(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Witness request for tree size n of log, from old size m. */
static char *witness_body(struct vlog *log, const struct proof_signer *s, uint64_t m, uint64_t n,
                          bool flip)
{
    struct tproof_witness_req r = {.old_size = m};
    char note[PROOF_CHECKPOINT_MAX];
    uint8_t path[MT_PROOF_MAX][MT_HASH_SIZE];
    size_t np = 0;
    CU_ASSERT_EQUAL_FATAL(mt_prove_consistency(vlog_tree(log), m, n, path, &np), 0);
    memcpy(r.path, path, np * MT_HASH_SIZE);
    r.npath = np;
    if (flip && np)
        r.path[np - 1][0] ^= 1;
    int nl = proof_checkpoint(log, s, n, note, sizeof note);
    CU_ASSERT_FATAL(nl > 0);
    r.note = note;
    r.note_len = (size_t)nl;
    char *out = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL_FATAL(tproof_witness_format(&r, &out, &len), 0);
    return out;
}

static void test_witness(void)
{
    char dir[600], wkf[700], wpf[700], state[700], wlog[700], listen[64], vk2[NOTE_VKEY_MAX + 1];
    snprintf(dir, sizeof dir, "%s/wlog", root);
    snprintf(wkf, sizeof wkf, "%s/w.key", root);
    snprintf(wpf, sizeof wpf, "%s/w.pub", root);
    snprintf(state, sizeof state, "%s/wstate", root);
    snprintf(wlog, sizeof wlog, "%s/witness.log", root);
    CU_ASSERT_EQUAL_FATAL(ckpt_keygen(wkf, wpf), 0);
    uint16_t port = tb_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    char *wa[] = {
        bin_verity,           "witness", "--listen", listen,        "--key-file", wkf, "--name",
        "witness.example/w1", "--log",   vkey,       "--state-dir", state,        NULL};
    pid_t pid = spawn(wa, wlog);
    CU_ASSERT_FATAL(wait_port(port, pid));
    char *pk[] = {bin_verity, "witness", "--print-key",        "--key-file",
                  wkf,        "--name",  "witness.example/w1", NULL};
    char vkf[700];
    snprintf(vkf, sizeof vkf, "%s/w.vkey", root);
    CU_ASSERT_EQUAL_FATAL(run(pk, NULL, vkf), 0);
    char *v2 = slurp(vkf, NULL);
    snprintf(vk2, sizeof vk2, "%s", v2);
    vk2[strcspn(vk2, "\n")] = '\0';
    free(v2);
    struct note_vkey keys[2];
    keys[0] = vk;
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vk2, &keys[1]), 0);

    struct vlog *log = build_log(dir, 100);
    struct proof_signer s;
    CU_ASSERT_EQUAL_FATAL(proof_signer_init(&s, key, NAME, "orders", 3), 0);
    static char resp[8192];
    /* first contact: old 0 -> 200, cosignature verifies (C and Go) */
    char *b = witness_body(log, &s, 0, 40, false);
    CU_ASSERT_EQUAL(http(port, "POST", "/add-checkpoint", b, resp, sizeof resp), 200);
    char note[PROOF_CHECKPOINT_MAX + 1024];
    int nl = proof_checkpoint(log, &s, 40, note, sizeof note);
    strcat(note, resp);
    size_t tlen = 0;
    uint32_t mask = 0;
    CU_ASSERT_EQUAL(note_open(note, strlen(note), keys, 2, &tlen, &mask), 0);
    CU_ASSERT_EQUAL(mask, 3u);
    CU_ASSERT(nl > 0);
    char cf[700];
    snprintf(cf, sizeof cf, "%s/cosigned.note", root);
    FILE *f = fopen(cf, "w");
    fputs(note, f);
    fclose(f);
    char *g[] = {bin_check, "cosig", vkey, vk2, cf, NULL};
    CU_ASSERT_EQUAL(run(g, NULL, "/dev/null"), 0);
    free(b);
    /* extend 40 -> 77 with a valid proof -> 200 */
    b = witness_body(log, &s, 40, 77, false);
    CU_ASSERT_EQUAL(http(port, "POST", "/add-checkpoint", b, resp, sizeof resp), 200);
    free(b);
    /* stale old size -> 409 with the latest size */
    b = witness_body(log, &s, 40, 90, false);
    CU_ASSERT_EQUAL(http(port, "POST", "/add-checkpoint", b, resp, sizeof resp), 409);
    CU_ASSERT_STRING_EQUAL(resp, "77\n");
    free(b);
    /* bad proof 77 -> 90 -> 422 */
    b = witness_body(log, &s, 77, 90, true);
    CU_ASSERT_EQUAL(http(port, "POST", "/add-checkpoint", b, resp, sizeof resp), 422);
    free(b);
    /* fork: same size 77, another root, validly signed -> 409 */
    char text[512], fork[1024];
    uint8_t other[MT_HASH_SIZE];
    CU_ASSERT_EQUAL_FATAL(mt_root(vlog_tree(log), 76, other), 0);
    int tl = note_checkpoint_text(s.origin, 77, other, text, sizeof text);
    int fl = note_sign(text, (size_t)tl, NAME, key, fork, sizeof fork);
    CU_ASSERT_FATAL(fl > 0);
    char body[2048];
    snprintf(body, sizeof body, "old 77\n\n%.*s", fl, fork);
    CU_ASSERT_EQUAL(http(port, "POST", "/add-checkpoint", body, resp, sizeof resp), 409);
    /* a checkpoint signed by another key -> 403; unknown origin -> 404 */
    snprintf(body, sizeof body, "old 77\n\n%s", text);
    EVP_PKEY *wk = NULL;
    CU_ASSERT_EQUAL_FATAL(ckpt_load_private(wkf, &wk), 0);
    fl = note_sign(text, (size_t)tl, NAME, wk, fork, sizeof fork);
    snprintf(body, sizeof body, "old 77\n\n%.*s", fl, fork);
    CU_ASSERT_EQUAL(http(port, "POST", "/add-checkpoint", body, resp, sizeof resp), 403);
    tl = note_checkpoint_text("elsewhere.example/log", 77, other, text, sizeof text);
    fl = note_sign(text, (size_t)tl, NAME, key, fork, sizeof fork);
    snprintf(body, sizeof body, "old 0\n\n%.*s", fl, fork);
    CU_ASSERT_EQUAL(http(port, "POST", "/add-checkpoint", body, resp, sizeof resp), 404);
    CU_ASSERT_EQUAL(http(port, "POST", "/add-checkpoint", "garbage", resp, sizeof resp), 400);
    EVP_PKEY_free(wk);
    vlog_abandon(log);

    /* Verity's own client: `verity proof cosign`, twice, the log growing in
     * between; the cosigned checkpoint is kept in the partition directory. */
    char data[600], part[700], kf[700], url[128], cos[800];
    snprintf(data, sizeof data, "%s/data", root);
    snprintf(part, sizeof part, "%s/topics/orders/4", data);
    snprintf(kf, sizeof kf, "%s/log.key", root);
    snprintf(url, sizeof url, "http://%s", listen);
    snprintf(cos, sizeof cos, "%s/tree.cosigned", part);
    log = build_log(part, 120);
    CU_ASSERT_EQUAL(vlog_close(log, 2000), 0);
    char *cs[] = {bin_verity, "proof",         "cosign", "orders", "4",  "--data-dir",
                  data,       "--key-file",    kf,       "--name", NAME, "--witness",
                  url,        "--witness-key", vk2,      NULL};
    CU_ASSERT_EQUAL(run(cs, NULL, "/dev/null"), 0);
    char *g2[] = {bin_check, "cosig", vkey, vk2, cos, NULL};
    CU_ASSERT_EQUAL(run(g2, NULL, "/dev/null"), 0);
    struct vlog_config cfg;
    vlog_config_default(&cfg);
    cfg.signing_key = key;
    uint64_t bad = 0;
    CU_ASSERT_EQUAL_FATAL(vlog_open(part, &cfg, 3000, &log, &bad), 0);
    struct batch_builder bb;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&bb, 4096), 0);
    for (int i = 0; i < 30; i++) {
        CU_ASSERT_EQUAL_FATAL(tu_build_batch(&bb, "q", (uint64_t)i, 2, 16, 3000), 0);
        CU_ASSERT_EQUAL_FATAL(vlog_append(log, bb.buf, bb.len, 3000, NULL), 0);
    }
    batch_builder_deinit(&bb);
    CU_ASSERT_EQUAL(vlog_close(log, 4000), 0);
    CU_ASSERT_EQUAL(run(cs, NULL, "/dev/null"), 0); /* old 121 -> 152, with a proof */
    CU_ASSERT_EQUAL(run(g2, NULL, "/dev/null"), 0);
    char *cn = slurp(cos, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(cn);
    CU_ASSERT_PTR_NOT_NULL(strstr(cn, "\n152\n"));
    free(cn);
    stop(pid);
}

static void tile_delivery(void *opaque, int err, const struct verity_delivery *d)
{
    if (err)
        __atomic_add_fetch((int *)opaque, 1, __ATOMIC_RELAXED);
}

/* A real broker serves tiles; the Go tile client rebuilds the root. */
static void test_tiles_from_broker(void)
{
    struct tbroker tb;
    char http_addr[64], logp[700], prefix[128], kf[700];
    CU_ASSERT_EQUAL_FATAL(tb_init(&tb, "proofs-tiles"), 0);
    /* This broker is spawned here (not by tb_start), so it needs a port
     * known before it starts. */
    snprintf(tb.addr, sizeof tb.addr, "127.0.0.1:%u", (unsigned)tb_free_port());
    uint16_t hport = tb_free_port();
    snprintf(http_addr, sizeof http_addr, "127.0.0.1:%u", hport);
    snprintf(logp, sizeof logp, "%s", tb.log);
    snprintf(kf, sizeof kf, "%s/log.key", root);
    char *a[] = {bin_verityd, "--data-dir",  tb.data,         "--listen", tb.addr,
                 "--http",    http_addr,     "--signing-key", kf,         "--tlog-name",
                 NAME,        "--log-level", "warn",          NULL};
    pid_t pid = spawn(a, logp);
    CU_ASSERT_FATAL(wait_port(hport, pid));
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = tb.addr;
    struct verity_client *c = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
    CU_ASSERT_EQUAL_FATAL(verity_client_connect(c, 10000), 0);
    struct verity_topic_config tc = {.partitions = 1, .durability = VERITY_DURABILITY_GROUP};
    CU_ASSERT_EQUAL_FATAL(verity_topic_create(c, "orders", &tc, NULL), 0);
    verity_client_free(c);
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = cc;
    pc.batch_records = 1; /* one batch per record: many leaves */
    struct verity_producer *p = NULL;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    int errs = 0;
    int nrec = tu_quick() ? 300 : 700;
    for (int i = 0; i < nrec; i++) {
        char v[32];
        int vl = snprintf(v, sizeof v, "record-%d", i);
        struct verity_record r = {.value = v, .value_len = vl};
        CU_ASSERT_EQUAL_FATAL(verity_produce(p, "orders", 0, &r, tile_delivery, &errs), 0);
    }
    CU_ASSERT_EQUAL(verity_producer_flush(p, 30000), 0);
    verity_producer_free(p, 5000);
    CU_ASSERT_EQUAL(errs, 0);
    static char resp[1 << 16];
    CU_ASSERT_EQUAL(http(hport, "GET", "/v1/proof/key", NULL, resp, sizeof resp), 200);
    CU_ASSERT_EQUAL(strncmp(resp, vkey, strlen(vkey)), 0);
    snprintf(prefix, sizeof prefix, "http://%s/tlog/orders/0", http_addr);
    char *g[] = {bin_check, "tiles", prefix, vkey, NULL};
    CU_ASSERT_EQUAL(run(g, NULL, NULL), 0);
    /* the admin API's proofs verify too */
    CU_ASSERT_EQUAL(http(hport, "GET", "/v1/proof/inclusion?topic=orders&partition=0&offset=123",
                         NULL, resp, sizeof resp),
                    200);
    json_t *sum = NULL;
    CU_ASSERT_EQUAL(proof_verify_text(resp, strlen(resp), &vk, 1, &sum), 0);
    json_decref(sum);
    CU_ASSERT_EQUAL(http(hport, "GET", "/tlog/orders/0/tile/0/x999/999", NULL, resp, sizeof resp),
                    404);
    CU_ASSERT_EQUAL(http(hport, "GET", "/tlog/orders/0/tile/9/000", NULL, resp, sizeof resp), 400);
    stop(pid);
    tb.pid = 0;
    tb_free(&tb);
}

/* Produces n single-record batches to topic partition 0 (creating the
 * topic first when create is set). */
static void produce_n(const char *addr, const char *topic, int n, bool create)
{
    struct verity_conn_config cc;
    verity_conn_config_default(&cc);
    cc.broker = addr;
    if (create) {
        struct verity_client *c = NULL;
        CU_ASSERT_EQUAL_FATAL(verity_client_new(&cc, &c), 0);
        CU_ASSERT_EQUAL_FATAL(verity_client_connect(c, 10000), 0);
        struct verity_topic_config tc = {.partitions = 1,
                                         .durability = VERITY_DURABILITY_GROUP};
        CU_ASSERT_EQUAL_FATAL(verity_topic_create(c, topic, &tc, NULL), 0);
        verity_client_free(c);
    }
    struct verity_producer_config pc;
    verity_producer_config_default(&pc);
    pc.conn = cc;
    pc.batch_records = 1;
    struct verity_producer *p = NULL;
    int errs = 0;
    CU_ASSERT_EQUAL_FATAL(verity_producer_new(&pc, &p), 0);
    for (int i = 0; i < n; i++) {
        char v[32];
        int vl = snprintf(v, sizeof v, "w-%d", i);
        struct verity_record r = {.value = v, .value_len = vl};
        CU_ASSERT_EQUAL_FATAL(verity_produce(p, topic, 0, &r, tile_delivery, &errs), 0);
    }
    CU_ASSERT_EQUAL(verity_producer_flush(p, 30000), 0);
    verity_producer_free(p, 5000);
    CU_ASSERT_EQUAL(errs, 0);
}

/* A `verity witness` on a free port: key file <root>/<tag>.key (made when
 * missing), trusting log_vkey; its vkey (under wname) in vkey_out. */
static pid_t start_witness(const char *tag, const char *wname, const char *log_vkey,
                           uint16_t *port, char *vkey_out, size_t cap)
{
    char kf[700], pf[700], st[700], lg[700], listen[64], vf[700];
    snprintf(kf, sizeof kf, "%s/%s.key", root, tag);
    snprintf(pf, sizeof pf, "%s/%s.pub", root, tag);
    snprintf(st, sizeof st, "%s/%s-state", root, tag);
    snprintf(lg, sizeof lg, "%s/%s.log", root, tag);
    snprintf(vf, sizeof vf, "%s/%s.vkey", root, tag);
    if (access(kf, F_OK) != 0)
        CU_ASSERT_EQUAL_FATAL(ckpt_keygen(kf, pf), 0);
    *port = tb_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%u", *port);
    char *pk[] = {bin_verity, "witness", "--print-key", "--key-file", kf, "--name", (char *)wname,
                  NULL};
    CU_ASSERT_EQUAL_FATAL(run(pk, NULL, vf), 0);
    char *v = slurp(vf, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    v[strcspn(v, "\n")] = '\0';
    snprintf(vkey_out, cap, "%s", v);
    free(v);
    char *wa[] = {bin_verity, "witness", "--listen", listen, "--key-file", kf, "--name",
                  (char *)wname, "--log", (char *)log_vkey, "--state-dir", st, NULL};
    pid_t pid = spawn(wa, lg);
    CU_ASSERT_FATAL(wait_port(*port, pid));
    return pid;
}

/* The value of a metric line "<name>{witness="<w>"} V", or -1. */
static double metric(const char *text, const char *name, const char *w)
{
    char pat[400];
    snprintf(pat, sizeof pat, "\n%s{witness=\"%s\"} ", name, w);
    const char *p = strstr(text, pat);
    return p ? strtod(p + strlen(pat), NULL) : -1;
}

/* Polls the broker's cosigned checkpoint until its size is at least min and
 * it carries lines from every key in keys (bits of want), at most 30 s. */
static bool wait_cosigned(uint16_t hport, uint64_t min, const struct note_vkey *keys, size_t nk,
                          uint32_t want, char *out, size_t cap)
{
    for (int i = 0; i < 3000; i++) {
        if (http(hport, "GET", "/v1/proof/cosigned?topic=orders&partition=0", NULL, out, cap) ==
            200) {
            size_t tl = 0;
            uint32_t mask = 0;
            char o[NOTE_ORIGIN_MAX + 1];
            uint64_t sz = 0;
            uint8_t r[MT_HASH_SIZE];
            if (note_open(out, strlen(out), keys, nk, &tl, &mask) == 0 &&
                (mask & want) == want &&
                note_checkpoint_parse(out, tl, o, sizeof o, &sz, r) == 0 && sz >= min)
                return true;
        }
        usleep(10000);
    }
    return false;
}

/*
 * The broker pushes checkpoints to real `verity witness` processes on its
 * own: two honest witnesses cosign and their lines are served (admin API,
 * tiles checkpoint, tree.cosigned) and verify in C and Go, also after the
 * log grew (old size -> new size with a consistency proof) and after a
 * restart (sizes read back); a forked witness (its state is another tree
 * of the same origin), one that does not know the log, one whose answer
 * does not verify with the configured key and one that is down are each
 * logged and counted, and change nothing served.
 */
static void test_witness_push(void)
{
    struct tbroker tb;
    char http_addr[64], logp[700], kf[700], wl[4096], fdir[700], url3[64];
    char vk1[NOTE_VKEY_MAX + 1], vk2[NOTE_VKEY_MAX + 1], vk3[NOTE_VKEY_MAX + 1];
    char vk4[NOTE_VKEY_MAX + 1], vk5[NOTE_VKEY_MAX + 1], vk5b[NOTE_VKEY_MAX + 1];
    char other_vkey[NOTE_VKEY_MAX + 1];
    uint16_t p1, p2, p3, p4, p5, p5b;
    snprintf(kf, sizeof kf, "%s/log.key", root);
    pid_t w1 = start_witness("pw1", "witness.example/w1", vkey, &p1, vk1, sizeof vk1);
    pid_t w2 = start_witness("pw2", "witness.example/w2", vkey, &p2, vk2, sizeof vk2);
    pid_t w3 = start_witness("pw3", "witness.example/w3", vkey, &p3, vk3, sizeof vk3);
    /* w4 trusts another log only: our origin is unknown to it (404) */
    {
        char okf[700], opf[700];
        EVP_PKEY *ok = NULL;
        snprintf(okf, sizeof okf, "%s/other.key", root);
        snprintf(opf, sizeof opf, "%s/other.pub", root);
        CU_ASSERT_EQUAL_FATAL(ckpt_keygen(okf, opf), 0);
        CU_ASSERT_EQUAL_FATAL(ckpt_load_private(okf, &ok), 0);
        CU_ASSERT_EQUAL_FATAL(note_vkey_format("other.example/log", NOTE_TYPE_ED25519, ok,
                                               other_vkey, sizeof other_vkey),
                              0);
        EVP_PKEY_free(ok);
    }
    pid_t w4 = start_witness("pw4", "witness.example/w4", other_vkey, &p4, vk4, sizeof vk4);
    /* w5 signs with one key; the broker is told another key of that name */
    pid_t w5 = start_witness("pw5", "witness.example/w5", vkey, &p5, vk5, sizeof vk5);
    pid_t w5b = start_witness("pw5b", "witness.example/w5", vkey, &p5b, vk5b, sizeof vk5b);
    stop(w5b);
    uint16_t p6 = tb_free_port(); /* nothing listens there */

    /* Fork w3: it cosigns another tree of the same origin (same key and
     * name, other records) through `verity proof cosign`. */
    snprintf(fdir, sizeof fdir, "%s/forkdata", root);
    char fpart[800];
    snprintf(fpart, sizeof fpart, "%s/topics/orders/0", fdir);
    for (char *sl = fpart + strlen(root) + 1; (sl = strchr(sl, '/')); sl++) {
        *sl = '\0';
        mkdir(fpart, 0755);
        *sl = '/';
    }
    struct vlog *flog = build_log(fpart, 7);
    CU_ASSERT_EQUAL(vlog_close(flog, 2000), 0);
    snprintf(url3, sizeof url3, "http://127.0.0.1:%u", p3);
    char *cs[] = {bin_verity, "proof", "cosign", "orders", "0", "--data-dir", fdir, "--key-file",
                  kf, "--name", NAME, "--witness", url3, "--witness-key", vk3, NULL};
    CU_ASSERT_EQUAL_FATAL(run(cs, NULL, "/dev/null"), 0);

    snprintf(wl, sizeof wl,
             "http://127.0.0.1:%u %s;http://127.0.0.1:%u/ %s; http://127.0.0.1:%u %s;"
             "http://127.0.0.1:%u %s;http://127.0.0.1:%u %s;http://127.0.0.1:%u %s",
             p1, vk1, p2, vk2, p3, vk3, p4, vk4, p5, vk5b, p6, vk1);
    /* the same key twice is refused at start (exit 2, the message names it) */
    CU_ASSERT_EQUAL_FATAL(tb_init(&tb, "proofs-wpush"), 0);
    snprintf(logp, sizeof logp, "%s", tb.log);
    snprintf(tb.addr, sizeof tb.addr, "127.0.0.1:%u", (unsigned)tb_free_port());
    uint16_t hport = tb_free_port();
    snprintf(http_addr, sizeof http_addr, "127.0.0.1:%u", hport);
    char *bad[] = {bin_verityd, "--data-dir", tb.data, "--witnesses", wl, "--http", "off", NULL};
    CU_ASSERT_EQUAL(run(bad, NULL, "/dev/null"), 2);
    /* w6 is down and named with w1's key: replace it by its own unused key */
    char vk6[NOTE_VKEY_MAX + 1];
    {
        char k6[700], p6f[700];
        EVP_PKEY *k = NULL;
        snprintf(k6, sizeof k6, "%s/pw6.key", root);
        snprintf(p6f, sizeof p6f, "%s/pw6.pub", root);
        CU_ASSERT_EQUAL_FATAL(ckpt_keygen(k6, p6f), 0);
        CU_ASSERT_EQUAL_FATAL(ckpt_load_private(k6, &k), 0);
        CU_ASSERT_EQUAL_FATAL(
            note_vkey_format("witness.example/w6", NOTE_TYPE_COSIG, k, vk6, sizeof vk6), 0);
        EVP_PKEY_free(k);
    }
    snprintf(wl, sizeof wl,
             "http://127.0.0.1:%u %s;http://127.0.0.1:%u/ %s; http://127.0.0.1:%u %s;"
             "http://127.0.0.1:%u %s;http://127.0.0.1:%u %s;http://127.0.0.1:%u %s",
             p1, vk1, p2, vk2, p3, vk3, p4, vk4, p5, vk5b, p6, vk6);
    char *a[] = {bin_verityd, "--data-dir", tb.data, "--listen", tb.addr, "--http", http_addr,
                 "--signing-key", kf, "--tlog-name", NAME, "--log-level", "info", "--witnesses", wl,
                 "--witness-interval-ms", "200", "--witness-timeout-ms", "2000", NULL};
    pid_t pid = spawn(a, logp);
    CU_ASSERT_FATAL(wait_port(hport, pid));
    produce_n(tb.addr, "orders", 40, true);

    struct note_vkey keys[4];
    keys[0] = vk;
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vk1, &keys[1]), 0);
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vk2, &keys[2]), 0);
    CU_ASSERT_EQUAL_FATAL(note_vkey_parse(vk3, &keys[3]), 0);
    static char cos[8192], resp[8192], met[1 << 16];
    CU_ASSERT_FATAL(wait_cosigned(hport, 40, keys, 3, 7, cos, sizeof cos));
    /* what was cosigned verifies in Go with each witness key */
    char cf[700];
    snprintf(cf, sizeof cf, "%s/pushed.note", root);
    FILE *f = fopen(cf, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(cos, f);
    fclose(f);
    char *g1[] = {bin_check, "cosig", vkey, vk1, cf, NULL};
    char *g2[] = {bin_check, "cosig", vkey, vk2, cf, NULL};
    char *g3[] = {bin_check, "cosig", vkey, vk3, cf, NULL};
    CU_ASSERT_EQUAL(run(g1, NULL, "/dev/null"), 0);
    CU_ASSERT_EQUAL(run(g2, NULL, "/dev/null"), 0);
    CU_ASSERT_NOT_EQUAL(run(g3, NULL, "/dev/null"), 0); /* the forked witness signed nothing */
    /* the tiles checkpoint carries the same lines when it is the current size */
    CU_ASSERT_EQUAL(http(hport, "GET", "/tlog/orders/0/checkpoint", NULL, resp, sizeof resp), 200);
    CU_ASSERT_STRING_EQUAL(resp, cos);
    char tcpath[800];
    snprintf(tcpath, sizeof tcpath, "%s/topics/orders/0/tree.cosigned", tb.data);
    char *onfile = slurp(tcpath, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(onfile);
    CU_ASSERT_STRING_EQUAL(onfile, cos);
    free(onfile);

    /* every bad witness was handled: logged and counted, nothing kept */
    for (int i = 0; i < 3000; i++) {
        CU_ASSERT_EQUAL_FATAL(http(hport, "GET", "/metrics", NULL, met, sizeof met), 200);
        if (metric(met, "verity_witness_conflicts_total", "witness.example/w3") >= 1 &&
            metric(met, "verity_witness_rejections_total", "witness.example/w4") >= 1 &&
            metric(met, "verity_witness_bad_cosignatures_total", "witness.example/w5") >= 1 &&
            metric(met, "verity_witness_errors_total", "witness.example/w6") >= 1)
            break;
        usleep(10000);
    }
    CU_ASSERT(metric(met, "verity_witness_conflicts_total", "witness.example/w3") >= 1);
    CU_ASSERT(metric(met, "verity_witness_rejections_total", "witness.example/w4") >= 1);
    CU_ASSERT(metric(met, "verity_witness_bad_cosignatures_total", "witness.example/w5") >= 1);
    CU_ASSERT(metric(met, "verity_witness_errors_total", "witness.example/w6") >= 1);
    CU_ASSERT(metric(met, "verity_witness_cosignatures_total", "witness.example/w1") >= 1);
    CU_ASSERT_EQUAL(metric(met, "verity_witness_cosignatures_total", "witness.example/w3"), 0);
    CU_ASSERT_EQUAL(metric(met, "verity_witness_conflicts_total", "witness.example/w1"), 0);
    CU_ASSERT_PTR_NULL(strstr(cos, "witness.example/w3"));
    CU_ASSERT_PTR_NULL(strstr(cos, "witness.example/w5"));
    char *lg = slurp(logp, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(lg);
    CU_ASSERT_PTR_NOT_NULL(strstr(lg, "event=witness_conflict topic=orders partition=0 "
                                      "witness=witness.example/w3"));
    CU_ASSERT_PTR_NOT_NULL(strstr(lg, "event=witness_rejected topic=orders partition=0 "
                                      "witness=witness.example/w4 status=404"));
    CU_ASSERT_PTR_NOT_NULL(strstr(lg, "event=witness_bad_cosignature topic=orders partition=0 "
                                      "witness=witness.example/w5"));
    CU_ASSERT_PTR_NOT_NULL(strstr(lg, "event=witness_unreachable topic=orders partition=0 "
                                      "witness=witness.example/w6"));
    free(lg);

    /* the log grows: both witnesses move on (each checks the proof) */
    uint64_t size1 = 0;
    {
        char o[NOTE_ORIGIN_MAX + 1];
        uint8_t r[MT_HASH_SIZE];
        CU_ASSERT_EQUAL(note_checkpoint_parse(cos, strlen(cos), o, sizeof o, &size1, r), 0);
    }
    produce_n(tb.addr, "orders", 25, false);
    CU_ASSERT(wait_cosigned(hport, size1 + 25, keys, 3, 7, cos, sizeof cos));
    /* a restart: the sizes the witnesses hold are read back, no 409 needed;
     * now offered by growth (every 5 batches), the interval being a minute */
    stop(pid);
    char *a2[] = {bin_verityd, "--data-dir", tb.data, "--listen", tb.addr, "--http", http_addr,
                  "--signing-key", kf, "--tlog-name", NAME, "--log-level", "info", "--witnesses",
                  wl, "--witness-interval-ms", "60000", "--witness-every-batches", "5",
                  "--witness-timeout-ms", "2000", NULL};
    pid = spawn(a2, logp);
    CU_ASSERT_FATAL(wait_port(hport, pid));
    uint64_t size2 = 0;
    CU_ASSERT_FATAL(wait_cosigned(hport, size1 + 25, keys, 3, 7, cos, sizeof cos));
    {
        char o[NOTE_ORIGIN_MAX + 1];
        uint8_t r[MT_HASH_SIZE];
        CU_ASSERT_EQUAL(note_checkpoint_parse(cos, strlen(cos), o, sizeof o, &size2, r), 0);
    }
    produce_n(tb.addr, "orders", 10, false); /* only growth can trigger the next offer */
    CU_ASSERT(wait_cosigned(hport, size2 + 10, keys, 3, 7, cos, sizeof cos));
    CU_ASSERT_EQUAL(http(hport, "GET", "/metrics", NULL, met, sizeof met), 200);
    CU_ASSERT_EQUAL(metric(met, "verity_witness_conflicts_total", "witness.example/w1"), 0);
    CU_ASSERT_EQUAL(metric(met, "verity_witness_conflicts_total", "witness.example/w2"), 0);
    stop(pid);
    tb.pid = 0;
    tb_free(&tb);
    stop(w1);
    stop(w2);
    stop(w3);
    stop(w4);
    stop(w5);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"logs of 1, 2, 3, 255, 256, 257 batches: C and Go agree", test_small_logs},
        {"a log of 1,000,003 batches, sampled", test_large_log},
        {"note.Open and verity proof verify", test_note_open_and_cli},
        {"witness round trip: 200, 409, 422, 403, 404; verity proof cosign", test_witness},
        {"tiles from a real broker rebuild the signed root", test_tiles_from_broker},
        {"the broker pushes checkpoints to witnesses; bad witnesses are handled",
         test_witness_push},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("proofs", suite_init, suite_clean);
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
