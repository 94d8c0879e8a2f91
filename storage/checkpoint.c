/*
 * Checkpoints and anchors: encode, decode, sign and verify the 160-byte
 * checkpoint payload (layout in checkpoint.h and docs/FORMAT.md), Ed25519 key
 * files, and the anchor file that carries the chain across deleted segments.
 *
 * A payload is valid only if: it is exactly 160 bytes, version is 1, no flag
 * other than bit 0 is set, the reserved bytes are zero, and, when unsigned,
 * the public key and signature fields are all zero. A signed payload is
 * authentic only if its signature verifies over "VERITY-CKPT-1" ||
 * bytes[0,96) with the Ed25519 key the caller trusts; the embedded key is the
 * signer's claim, which proves integrity but not origin.
 *
 * Anchor file (<dir>/anchor, 164 bytes): "VRA1" || payload. It is replaced
 * atomically: write <dir>/anchor.tmp, fdatasync, rename over anchor, fsync
 * the directory, so a crash leaves either the old or the new anchor.
 *
 * Signing uses OpenSSL 3 EVP one-shot Ed25519 (EVP_DigestSign with a NULL
 * digest). Every function is reentrant; OpenSSL objects are never shared
 * between calls except the caller's borrowed keys, which OpenSSL allows to be
 * used concurrently for signing and verifying.
 */
#include "storage/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "storage/batch.h"
#include "storage/vio.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define CKPT_VERSION 1
#define CKPT_FLAG_SIGNED 0x01u
#define CKPT_SIGNED_BYTES 96 /* the signature covers bytes [0, 96) */
#define CKPT_OFF_PUBKEY 64
#define CKPT_OFF_SIG 96
#define CKPT_KEY_SIZE 32
#define CKPT_SIG_SIZE 64

static const char sign_context[] = "VERITY-CKPT-1"; /* 13 bytes, no NUL signed */

_Static_assert(CKPT_OFF_SIG + CKPT_SIG_SIZE == CKPT_PAYLOAD_SIZE, "payload layout");
_Static_assert(CKPT_OFF_PUBKEY + CKPT_KEY_SIZE == CKPT_SIGNED_BYTES, "payload layout");

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* The message Ed25519 signs: context string, then the first 96 payload bytes. */
static size_t sign_message(const uint8_t *payload, uint8_t *msg)
{
    size_t n = sizeof sign_context - 1;
    memcpy(msg, sign_context, n);
    memcpy(msg + n, payload, CKPT_SIGNED_BYTES);
    return n + CKPT_SIGNED_BYTES;
}

static bool is_ed25519(EVP_PKEY *key) { return EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519; }

int ckpt_encode(struct ckpt *ck, EVP_PKEY *key, uint8_t *out)
{
    uint8_t msg[sizeof sign_context - 1 + CKPT_SIGNED_BYTES];
    EVP_MD_CTX *md = NULL;
    int rc = 0;

    if (key && !is_ed25519(key))
        return VERITY_EINVAL;
    memset(out, 0, CKPT_PAYLOAD_SIZE);
    out[0] = CKPT_VERSION;
    out[1] = key ? CKPT_FLAG_SIGNED : 0;
    put_le64(out + 8, ck->offset);
    memcpy(out + 16, ck->chain, 32);
    put_le64(out + 48, ck->record_count);
    put_le64(out + 56, (uint64_t)ck->time_ms);
    ck->is_signed = key != NULL;
    if (!key) {
        memset(ck->pubkey, 0, sizeof ck->pubkey);
        memset(ck->signature, 0, sizeof ck->signature);
        return 0;
    }

    size_t klen = CKPT_KEY_SIZE;
    if (EVP_PKEY_get_raw_public_key(key, out + CKPT_OFF_PUBKEY, &klen) != 1 ||
        klen != CKPT_KEY_SIZE) {
        rc = VERITY_EINVAL;
        goto out;
    }
    size_t mlen = sign_message(out, msg);
    size_t slen = CKPT_SIG_SIZE;
    md = EVP_MD_CTX_new();
    if (!md) {
        rc = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSignInit(md, NULL, NULL, NULL, key) != 1 ||
        EVP_DigestSign(md, out + CKPT_OFF_SIG, &slen, msg, mlen) != 1 || slen != CKPT_SIG_SIZE) {
        rc = VERITY_EINVAL;
        goto out;
    }
    memcpy(ck->pubkey, out + CKPT_OFF_PUBKEY, CKPT_KEY_SIZE);
    memcpy(ck->signature, out + CKPT_OFF_SIG, CKPT_SIG_SIZE);
    VERITY_VERIFY(out[1] == CKPT_FLAG_SIGNED && get_le64(out + 8) == ck->offset);
out:
    EVP_MD_CTX_free(md);
    if (rc)
        memset(out, 0, CKPT_PAYLOAD_SIZE);
    return rc;
}

int ckpt_decode(const uint8_t *buf, size_t len, struct ckpt *out)
{
    if (len != CKPT_PAYLOAD_SIZE)
        return VERITY_ECORRUPT;
    if (buf[0] != CKPT_VERSION || (buf[1] & ~CKPT_FLAG_SIGNED) != 0 || !all_zero(buf + 2, 6))
        return VERITY_ECORRUPT;
    bool is_signed = (buf[1] & CKPT_FLAG_SIGNED) != 0;
    if (!is_signed && !all_zero(buf + CKPT_OFF_PUBKEY, CKPT_KEY_SIZE + CKPT_SIG_SIZE))
        return VERITY_ECORRUPT;
    memset(out, 0, sizeof *out);
    out->offset = get_le64(buf + 8);
    memcpy(out->chain, buf + 16, 32);
    out->record_count = get_le64(buf + 48);
    out->time_ms = (int64_t)get_le64(buf + 56);
    out->is_signed = is_signed;
    memcpy(out->pubkey, buf + CKPT_OFF_PUBKEY, CKPT_KEY_SIZE);
    memcpy(out->signature, buf + CKPT_OFF_SIG, CKPT_SIG_SIZE);
    VERITY_VERIFY(out->is_signed || all_zero(out->pubkey, sizeof out->pubkey));
    return 0;
}

int ckpt_verify(const uint8_t *buf, size_t len, EVP_PKEY *pub)
{
    uint8_t msg[sizeof sign_context - 1 + CKPT_SIGNED_BYTES];
    struct ckpt ck;
    EVP_PKEY *embedded = NULL;
    EVP_MD_CTX *md = NULL;
    int rc = ckpt_decode(buf, len, &ck);
    if (rc)
        return rc;
    if (!ck.is_signed)
        return VERITY_ESIGNATURE;
    if (pub) {
        /* The payload names its signer; it must be the key the caller trusts. */
        uint8_t raw[CKPT_KEY_SIZE];
        size_t klen = sizeof raw;
        if (!is_ed25519(pub) || EVP_PKEY_get_raw_public_key(pub, raw, &klen) != 1 ||
            klen != CKPT_KEY_SIZE)
            return VERITY_EINVAL;
        if (memcmp(raw, ck.pubkey, CKPT_KEY_SIZE) != 0)
            return VERITY_ESIGNATURE;
    } else {
        embedded = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, ck.pubkey, CKPT_KEY_SIZE);
        if (!embedded)
            return VERITY_ESIGNATURE; /* not a valid curve point */
        pub = embedded;
    }
    size_t mlen = sign_message(buf, msg);
    md = EVP_MD_CTX_new();
    if (!md) {
        rc = -ENOMEM;
        goto out;
    }
    if (EVP_DigestVerifyInit(md, NULL, NULL, NULL, pub) != 1) {
        rc = VERITY_EINVAL;
        goto out;
    }
    rc = EVP_DigestVerify(md, buf + CKPT_OFF_SIG, CKPT_SIG_SIZE, msg, mlen) == 1
             ? 0
             : VERITY_ESIGNATURE;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(embedded);
    return rc;
}

/* ---- key files ---------------------------------------------------------- */

/* Writes key to path (created, never overwritten) as PEM, with mode; the
 * file is fsynced before close. On failure the partial file is removed. */
static int write_pem(const char *path, EVP_PKEY *key, bool private_key, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return errno == EEXIST ? VERITY_EEXIST : -errno;
    int rc = 0;
    FILE *f = NULL;
    if (fchmod(fd, mode) != 0) { /* exact mode whatever the umask */
        rc = -errno;
        close(fd);
        goto out;
    }
    f = fdopen(fd, "w");
    if (!f) {
        rc = -errno;
        close(fd);
        goto out;
    }
    int ok = private_key ? PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)
                         : PEM_write_PUBKEY(f, key);
    if (ok != 1)
        rc = VERITY_EINVAL;
    if (fflush(f) != 0 && !rc)
        rc = -errno;
    if (fsync(fileno(f)) != 0 && !rc)
        rc = -errno;
    if (fclose(f) != 0 && !rc)
        rc = -errno;
out:
    if (rc)
        unlink(path);
    return rc;
}

int ckpt_keygen(const char *key_path, const char *pub_path)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!key)
        return -ENOMEM;
    int rc = write_pem(key_path, key, true, 0600);
    if (!rc) {
        rc = write_pem(pub_path, key, false, 0644);
        if (rc)
            unlink(key_path); /* never leave half a key pair */
    }
    EVP_PKEY_free(key);
    return rc;
}

int ckpt_load_private(const char *path, EVP_PKEY **out)
{
    *out = NULL;
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!key)
        return VERITY_EINVAL;
    if (!is_ed25519(key)) {
        EVP_PKEY_free(key);
        return VERITY_EINVAL;
    }
    *out = key;
    return 0;
}

int ckpt_load_public(const char *path, EVP_PKEY **out)
{
    *out = NULL;
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    EVP_PKEY *key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    if (!key) {
        /* A private key file also carries the public half; accept it. */
        rewind(f);
        key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    }
    fclose(f);
    if (!key)
        return VERITY_EINVAL;
    if (!is_ed25519(key)) {
        EVP_PKEY_free(key);
        return VERITY_EINVAL;
    }
    *out = key;
    return 0;
}

/* ---- anchor ------------------------------------------------------------- */

static int anchor_path(const char *dir, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int ckpt_anchor_write_io(const char *dir, struct ckpt *ck, EVP_PKEY *key, const struct vio *io)
{
    char tmp[4096], dst[4096];
    uint8_t raw[CKPT_ANCHOR_SIZE];
    int fd = -1;
    int rc;
    if (!io)
        io = &vio_posix;
    if ((rc = anchor_path(dir, "anchor.tmp", tmp, sizeof tmp)) ||
        (rc = anchor_path(dir, "anchor", dst, sizeof dst)))
        return rc;
    memcpy(raw, CKPT_ANCHOR_MAGIC, 4);
    if ((rc = ckpt_encode(ck, key, raw + 4)))
        return rc;
    fd = io->open(io->ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    if ((rc = vio_pwrite_all(io, fd, raw, sizeof raw, 0)))
        goto fail;
    if ((rc = io->fdatasync(io->ctx, fd)))
        goto fail;
    rc = io->close(io->ctx, fd);
    fd = -1;
    if (rc)
        goto fail;
    if ((rc = io->rename(io->ctx, tmp, dst)))
        goto fail;
    return vio_fsync_dir(io, dir);
fail:
    if (fd >= 0)
        (void)io->close(io->ctx, fd);
    (void)io->unlink(io->ctx, tmp);
    return rc;
}

int ckpt_anchor_write(const char *dir, struct ckpt *ck, EVP_PKEY *key)
{
    return ckpt_anchor_write_io(dir, ck, key, &vio_posix);
}

int ckpt_anchor_read_io(const char *dir, struct ckpt *out, uint8_t *raw_out_or_null,
                        const struct vio *io)
{
    char path[4096];
    uint8_t raw[CKPT_ANCHOR_SIZE];
    struct stat st;
    int rc;
    if (!io)
        io = &vio_posix;
    if ((rc = anchor_path(dir, "anchor", path, sizeof path)))
        return rc;
    int fd = io->open(io->ctx, path, O_RDONLY, 0);
    if (fd == -ENOENT)
        return VERITY_ENOTFOUND;
    if (fd < 0)
        return fd;
    if ((rc = io->fstat(io->ctx, fd, &st)))
        goto out;
    if (st.st_size != CKPT_ANCHOR_SIZE) {
        rc = VERITY_ECORRUPT;
        goto out;
    }
    if ((rc = vio_pread_all(io, fd, raw, sizeof raw, 0)))
        goto out;
    if (memcmp(raw, CKPT_ANCHOR_MAGIC, 4) != 0) {
        rc = VERITY_ECORRUPT;
        goto out;
    }
    if ((rc = ckpt_decode(raw + 4, CKPT_PAYLOAD_SIZE, out)))
        goto out;
    if (raw_out_or_null)
        memcpy(raw_out_or_null, raw + 4, CKPT_PAYLOAD_SIZE);
out:
    (void)io->close(io->ctx, fd);
    return rc;
}

int ckpt_anchor_read(const char *dir, struct ckpt *out, uint8_t *raw_out_or_null)
{
    return ckpt_anchor_read_io(dir, out, raw_out_or_null, &vio_posix);
}
