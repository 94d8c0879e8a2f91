/*
 * verity proof cosign TOPIC PARTITION --witness URL --witness-key VKEY
 *   [--data-dir DIR] [--key-file FILE] [--name NAME] [--json]
 *
 * Sends the partition's current signed checkpoint to a C2SP tlog-witness
 * (POST <URL>/add-checkpoint with a consistency proof from the size that
 * witness last cosigned), checks the cosignature it returns with the
 * witness's verifier key (type 0x04), and keeps it next to Verity's own
 * signature:
 *   <partition dir>/tree.cosigned          the checkpoint note with Verity's
 *                                          signature and the cosignature lines
 *   <partition dir>/witness-<key id>.size  the size that witness cosigned
 * Both are replaced atomically. On 409 (the witness has another size) it
 * retries once from the size the witness names. Plain HTTP/1.0 over TCP;
 * put a TLS proxy in front for remote witnesses.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "storage/checkpoint.h"
#include "storage/merkle.h"
#include "storage/note.h"
#include "storage/proof.h"
#include "storage/tproof.h"
#include "storage/vlog.h"
#include "tools/cmds.h"
#include "verity/errors.h"

#define COSIGN_RESP_MAX (64u << 10)

/* POSTs body to http://host:port/path; returns the status, the body in resp
 * (NUL-terminated) and whether Content-Type was text/x.tlog.size. */
static int http_post(const char *url, const char *body, size_t blen, char *resp, size_t cap,
                     bool *is_size)
{
    char host[256], port[16] = "80", path[512];
    const char *p = strncmp(url, "http://", 7) == 0 ? url + 7 : NULL;
    if (!p)
        return VERITY_EINVAL;
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= sizeof host)
        return VERITY_EINVAL;
    memcpy(host, p, hl);
    host[hl] = '\0';
    char *colon = strrchr(host, ':');
    if (colon) {
        snprintf(port, sizeof port, "%s", colon + 1);
        *colon = '\0';
    }
    snprintf(path, sizeof path, "%s/add-checkpoint", slash ? slash : "");
    if (strncmp(path, "//", 2) == 0)
        memmove(path, path + 1, strlen(path));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai)
        return -EHOSTUNREACH;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        int e = -errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return e;
    }
    freeaddrinfo(ai);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char hdr[1024];
    int n = snprintf(hdr, sizeof hdr,
                     "POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     path, host, blen);
    if (write(fd, hdr, (size_t)n) != n || write(fd, body, blen) != (ssize_t)blen) {
        close(fd);
        return -EIO;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, resp + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = '\0';
    int code = 0;
    if (sscanf(resp, "HTTP/1.%*d %d", &code) != 1)
        return VERITY_EPROTO;
    char *b = strstr(resp, "\r\n\r\n");
    if (!b)
        return VERITY_EPROTO;
    *b = '\0';
    *is_size = strcasestr(resp, "Content-Type: text/x.tlog.size") != NULL;
    memmove(resp, b + 4, strlen(b + 4) + 1);
    return code;
}

static int write_atomic(const char *path, const char *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -errno;
    int rc = write(fd, data, len) == (ssize_t)len ? 0 : -EIO;
    if (!rc && fdatasync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && !rc)
        rc = -errno;
    if (!rc && rename(tmp, path) != 0)
        rc = -errno;
    return rc;
}

/* The request body for old size m to the checkpoint note of size n. */
static int make_body(struct vlog *log, uint64_t m, uint64_t n, const char *note, size_t nl,
                     char **body, size_t *blen)
{
    struct tproof_witness_req r = {.old_size = m, .note = note, .note_len = nl};
    uint8_t path[MT_PROOF_MAX][MT_HASH_SIZE];
    int rc = mt_prove_consistency(vlog_tree(log), m, n, path, &r.npath);
    if (rc)
        return rc;
    if (r.npath > TPROOF_WITNESS_PROOF_MAX)
        return VERITY_ELIMIT;
    memcpy(r.path, path, r.npath * MT_HASH_SIZE);
    return tproof_witness_format(&r, body, blen);
}

int cmd_proof_cosign(struct vlog *log, const struct proof_signer *s, const char *dir,
                     const char *url, const char *wvkey, bool json)
{
    struct note_vkey wk;
    char note[PROOF_CHECKPOINT_MAX], spath[4200], cpath[4200];
    static char resp[COSIGN_RESP_MAX];
    uint64_t n = 0, old = 0;
    int rc;
    if (note_vkey_parse(wvkey, &wk) || wk.type != NOTE_TYPE_COSIG) {
        fprintf(stderr,
                "verity proof cosign: --witness-key must be a cosignature vkey (type 0x04)\n");
        return VERITY_EINVAL;
    }
    if ((rc = proof_durable_size(log, &n)))
        return rc;
    int nl = proof_checkpoint(log, s, n, note, sizeof note);
    if (nl < 0)
        return nl;
    snprintf(spath, sizeof spath, "%s/witness-%08" PRIx32 ".size", dir, wk.id);
    snprintf(cpath, sizeof cpath, "%s/tree.cosigned", dir);
    FILE *f = fopen(spath, "r");
    if (f) {
        if (fscanf(f, "%" SCNu64, &old) != 1)
            old = 0;
        fclose(f);
    }
    int code = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        char *body = NULL;
        size_t blen = 0;
        bool is_size = false;
        if (old > n)
            return VERITY_ECHAIN; /* the witness saw a larger tree than ours */
        if ((rc = make_body(log, old, n, note, (size_t)nl, &body, &blen)))
            return rc;
        code = http_post(url, body, blen, resp, sizeof resp, &is_size);
        free(body);
        if (code < 0)
            return code;
        if (code == 409 && is_size && attempt == 0) {
            uint64_t theirs;
            if (sscanf(resp, "%" SCNu64, &theirs) != 1)
                return VERITY_EPROTO;
            old = theirs;
            continue;
        }
        break;
    }
    if (code != 200) {
        fprintf(stderr, "verity proof cosign: witness answered %d: %s", code, resp);
        return VERITY_EPROTO;
    }
    /* the cosigned note: Verity's signature plus the witness's lines */
    size_t rl = strlen(resp);
    char *both = malloc((size_t)nl + rl + 1);
    if (!both)
        return -ENOMEM;
    memcpy(both, note, (size_t)nl);
    memcpy(both + nl, resp, rl + 1);
    size_t tlen = 0;
    uint32_t mask = 0;
    rc = note_open(both, (size_t)nl + rl, &wk, 1, &tlen, &mask);
    if (rc) {
        fprintf(stderr, "verity proof cosign: the witness's answer does not verify with its key\n");
        free(both);
        return rc;
    }
    char sz[32];
    int zl = snprintf(sz, sizeof sz, "%" PRIu64 "\n", n);
    if (!(rc = write_atomic(cpath, both, (size_t)nl + rl)))
        rc = write_atomic(spath, sz, (size_t)zl);
    if (!rc) {
        if (json) {
            json_t *j = json_pack("{s:s,s:I,s:I,s:s}", "origin", s->origin, "tree_size",
                                  (json_int_t)n, "old_size", (json_int_t)old, "checkpoint", both);
            char *o = json_dumps(j, JSON_INDENT(2));
            puts(o);
            free(o);
            json_decref(j);
        } else {
            fputs(both, stdout);
        }
    }
    free(both);
    return rc;
}
