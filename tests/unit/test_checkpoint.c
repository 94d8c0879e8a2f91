/*
 * Checkpoints (storage/checkpoint.h): sign/verify round trip, forged
 * payloads (any byte changed, re-signed with another key, signer key
 * swapped) fail with the real public key, decode's structure checks, the
 * anchor file (round trip, atomic replace, failed sync or rename leaves the
 * old anchor), and key files (keygen, load, refusal to overwrite, wrong key
 * types).
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "tests/support/vio_fault.h"
#include "verity/errors.h"

static char g_dir[] = "/tmp/verity-ckpt-XXXXXX";
static EVP_PKEY *key_a, *key_b; /* two signers */

static void sample(struct ckpt *ck)
{
    memset(ck, 0, sizeof *ck);
    ck->offset = 123456789012ull;
    for (int i = 0; i < 32; i++)
        ck->chain[i] = (uint8_t)(i * 7 + 1);
    ck->record_count = 98765;
    ck->time_ms = 1700000000123LL;
}

static void raw_pub(EVP_PKEY *k, uint8_t out[32])
{
    size_t n = 32;
    CU_ASSERT_FATAL(EVP_PKEY_get_raw_public_key(k, out, &n) == 1 && n == 32);
}

static const char *path_in(const char *sub, const char *name)
{
    static char bufs[4][512];
    static int seq;
    char *b = bufs[seq++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s%s%s", g_dir, sub, *sub ? "/" : "", name);
    return b;
}

static const char *mksub(const char *name)
{
    static char b[512];
    snprintf(b, sizeof b, "%s/%s", g_dir, name);
    CU_ASSERT_FATAL(mkdir(b, 0755) == 0);
    return b;
}

/* ---- sign / verify ---------------------------------------------------------- */

static void test_sign_verify_round_trip(void)
{
    struct ckpt ck, back;
    uint8_t buf[CKPT_PAYLOAD_SIZE], pk[32];
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, key_a, buf), 0);
    CU_ASSERT(ck.is_signed);
    raw_pub(key_a, pk);
    CU_ASSERT(memcmp(ck.pubkey, pk, 32) == 0);
    /* Layout: version, flags, offset, chain, count, time, key, signature. */
    CU_ASSERT_EQUAL(buf[0], 1);
    CU_ASSERT_EQUAL(buf[1], 1);
    CU_ASSERT_EQUAL(get_le64(buf + 8), ck.offset);
    CU_ASSERT(memcmp(buf + 16, ck.chain, 32) == 0);
    CU_ASSERT_EQUAL(get_le64(buf + 48), ck.record_count);
    CU_ASSERT_EQUAL((int64_t)get_le64(buf + 56), ck.time_ms);
    CU_ASSERT(memcmp(buf + 64, pk, 32) == 0);
    CU_ASSERT(memcmp(buf + 96, ck.signature, 64) == 0);

    CU_ASSERT_EQUAL_FATAL(ckpt_decode(buf, sizeof buf, &back), 0);
    CU_ASSERT_EQUAL(back.offset, ck.offset);
    CU_ASSERT(memcmp(back.chain, ck.chain, 32) == 0);
    CU_ASSERT_EQUAL(back.record_count, ck.record_count);
    CU_ASSERT_EQUAL(back.time_ms, ck.time_ms);
    CU_ASSERT(back.is_signed);
    CU_ASSERT(memcmp(back.signature, ck.signature, 64) == 0);

    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, key_a), 0);
    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, NULL), 0);
}

/* The signature is an Ed25519 signature over "VERITY-CKPT-1" || bytes[0,96),
 * checked here with OpenSSL directly rather than through ckpt_verify. */
static void test_signature_covers_context_and_first_96_bytes(void)
{
    struct ckpt ck;
    uint8_t buf[CKPT_PAYLOAD_SIZE], msg[13 + 96];
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, key_a, buf), 0);
    memcpy(msg, "VERITY-CKPT-1", 13);
    memcpy(msg + 13, buf, 96);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    CU_ASSERT_FATAL(md != NULL);
    CU_ASSERT_EQUAL_FATAL(EVP_DigestVerifyInit(md, NULL, NULL, NULL, key_a), 1);
    CU_ASSERT_EQUAL(EVP_DigestVerify(md, buf + 96, 64, msg, sizeof msg), 1);
    EVP_MD_CTX_free(md);
}

static void test_any_changed_byte_fails_verification(void)
{
    struct ckpt ck;
    uint8_t buf[CKPT_PAYLOAD_SIZE];
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, key_a, buf), 0);
    for (size_t i = 0; i < sizeof buf; i++) {
        for (unsigned bit = 0; bit < 8; bit += 3) {
            buf[i] ^= (uint8_t)(1u << bit);
            int rc = ckpt_verify(buf, sizeof buf, key_a);
            CU_ASSERT_NOT_EQUAL(rc, 0);
            /* Field and signature bytes are forgeries; bytes 0..7 are structure. */
            if (i >= 8) {
                CU_ASSERT_EQUAL(rc, VERITY_ESIGNATURE);
            } else {
                CU_ASSERT(rc == VERITY_ECORRUPT || rc == VERITY_ESIGNATURE);
            }
            buf[i] ^= (uint8_t)(1u << bit);
        }
    }
    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, key_a), 0);
}

static void test_resigned_with_other_key_fails_with_real_key(void)
{
    struct ckpt ck;
    uint8_t good[CKPT_PAYLOAD_SIZE], forged[CKPT_PAYLOAD_SIZE];
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, key_a, good), 0);
    ck.record_count += 1000; /* the forger's claim */
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, key_b, forged), 0);
    CU_ASSERT_EQUAL(ckpt_verify(forged, sizeof forged, key_a), VERITY_ESIGNATURE);
    /* It is internally consistent: only the trusted key tells it apart. */
    CU_ASSERT_EQUAL(ckpt_verify(forged, sizeof forged, NULL), 0);
    CU_ASSERT_EQUAL(ckpt_verify(forged, sizeof forged, key_b), 0);
    /* Swapping in the real signer's key without its signature fails too. */
    memcpy(forged + 64, good + 64, 32);
    CU_ASSERT_EQUAL(ckpt_verify(forged, sizeof forged, key_a), VERITY_ESIGNATURE);
    CU_ASSERT_EQUAL(ckpt_verify(forged, sizeof forged, NULL), VERITY_ESIGNATURE);
    /* The real one, checked with the wrong key, fails. */
    CU_ASSERT_EQUAL(ckpt_verify(good, sizeof good, key_b), VERITY_ESIGNATURE);
}

static void test_unsigned_checkpoint(void)
{
    struct ckpt ck, back;
    uint8_t buf[CKPT_PAYLOAD_SIZE];
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, NULL, buf), 0);
    CU_ASSERT_FALSE(ck.is_signed);
    CU_ASSERT_EQUAL(buf[1], 0);
    CU_ASSERT_EQUAL_FATAL(ckpt_decode(buf, sizeof buf, &back), 0);
    CU_ASSERT_FALSE(back.is_signed);
    CU_ASSERT_EQUAL(back.offset, ck.offset);
    /* Nothing to verify: an unsigned checkpoint never passes ckpt_verify. */
    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, key_a), VERITY_ESIGNATURE);
    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, NULL), VERITY_ESIGNATURE);
    /* Unsigned with junk in the key/signature area is malformed. */
    buf[100] = 1;
    CU_ASSERT_EQUAL(ckpt_decode(buf, sizeof buf, &back), VERITY_ECORRUPT);
}

static void test_decode_checks_structure(void)
{
    struct ckpt ck, back;
    uint8_t buf[CKPT_PAYLOAD_SIZE + 1];
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, key_a, buf), 0);
    CU_ASSERT_EQUAL(ckpt_decode(buf, CKPT_PAYLOAD_SIZE - 1, &back), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(ckpt_decode(buf, CKPT_PAYLOAD_SIZE + 1, &back), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(ckpt_verify(buf, CKPT_PAYLOAD_SIZE - 1, key_a), VERITY_ECORRUPT);
    buf[0] = 2;
    CU_ASSERT_EQUAL(ckpt_decode(buf, CKPT_PAYLOAD_SIZE, &back), VERITY_ECORRUPT);
    buf[0] = 1;
    buf[1] = 3;
    CU_ASSERT_EQUAL(ckpt_decode(buf, CKPT_PAYLOAD_SIZE, &back), VERITY_ECORRUPT);
    buf[1] = 1;
    buf[5] = 1;
    CU_ASSERT_EQUAL(ckpt_decode(buf, CKPT_PAYLOAD_SIZE, &back), VERITY_ECORRUPT);
    buf[5] = 0;
    CU_ASSERT_EQUAL(ckpt_decode(buf, CKPT_PAYLOAD_SIZE, &back), 0);
}

static void test_encode_rejects_non_ed25519_key(void)
{
    struct ckpt ck;
    uint8_t buf[CKPT_PAYLOAD_SIZE];
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ec);
    sample(&ck);
    CU_ASSERT_EQUAL(ckpt_encode(&ck, ec, buf), VERITY_EINVAL);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, key_a, buf), 0);
    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, ec), VERITY_EINVAL);
    EVP_PKEY_free(ec);
}

/* ---- anchor ------------------------------------------------------------------ */

static void test_anchor_round_trip(void)
{
    const char *dir = mksub("anchor-rt");
    struct ckpt ck, back;
    uint8_t raw[CKPT_PAYLOAD_SIZE];
    struct stat st;
    CU_ASSERT_EQUAL(ckpt_anchor_read(dir, &back, raw), VERITY_ENOTFOUND);
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_write(dir, &ck, key_a), 0);
    CU_ASSERT_EQUAL_FATAL(stat(path_in("anchor-rt", "anchor"), &st), 0);
    CU_ASSERT_EQUAL(st.st_size, CKPT_ANCHOR_SIZE);
    CU_ASSERT_NOT_EQUAL(stat(path_in("anchor-rt", "anchor.tmp"), &st), 0);
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_read(dir, &back, raw), 0);
    CU_ASSERT_EQUAL(back.offset, ck.offset);
    CU_ASSERT(memcmp(back.chain, ck.chain, 32) == 0);
    CU_ASSERT_EQUAL(back.record_count, ck.record_count);
    CU_ASSERT_EQUAL(back.time_ms, ck.time_ms);
    CU_ASSERT(back.is_signed);
    CU_ASSERT_EQUAL(ckpt_verify(raw, sizeof raw, key_a), 0);
    CU_ASSERT_EQUAL(ckpt_verify(raw, sizeof raw, key_b), VERITY_ESIGNATURE);

    /* The file is "VRA1" then the payload. */
    uint8_t file[CKPT_ANCHOR_SIZE];
    FILE *f = fopen(path_in("anchor-rt", "anchor"), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fread(file, 1, sizeof file, f), sizeof file);
    fclose(f);
    CU_ASSERT(memcmp(file, "VRA1", 4) == 0);
    CU_ASSERT(memcmp(file + 4, raw, CKPT_PAYLOAD_SIZE) == 0);

    /* Replacing it leaves the new one. */
    ck.offset += 10;
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_write(dir, &ck, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_read(dir, &back, NULL), 0);
    CU_ASSERT_EQUAL(back.offset, ck.offset);
    CU_ASSERT_FALSE(back.is_signed);
}

static void test_anchor_read_rejects_damaged_files(void)
{
    const char *dir = mksub("anchor-bad");
    struct ckpt ck, back;
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_write(dir, &ck, key_a), 0);
    const char *p = path_in("anchor-bad", "anchor");
    int fd = open(p, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    /* Bad magic. */
    CU_ASSERT_EQUAL(pwrite(fd, "XRA1", 4, 0), 4);
    CU_ASSERT_EQUAL(ckpt_anchor_read(dir, &back, NULL), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(pwrite(fd, "VRA1", 4, 0), 4);
    CU_ASSERT_EQUAL(ckpt_anchor_read(dir, &back, NULL), 0);
    /* Wrong size. */
    CU_ASSERT_EQUAL(ftruncate(fd, CKPT_ANCHOR_SIZE - 1), 0);
    CU_ASSERT_EQUAL(ckpt_anchor_read(dir, &back, NULL), VERITY_ECORRUPT);
    CU_ASSERT_EQUAL(ftruncate(fd, 0), 0);
    CU_ASSERT_EQUAL(ckpt_anchor_read(dir, &back, NULL), VERITY_ECORRUPT);
    close(fd);
}

/* A failed fdatasync or rename of the new anchor leaves the old anchor in
 * place and no temporary behind. */
static void test_anchor_write_failure_keeps_old_anchor(void)
{
    const char *dir = mksub("anchor-fault");
    struct ckpt ck, back;
    struct stat st;
    struct vio_fault *f = vio_fault_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_write(dir, &ck, key_a), 0);
    uint64_t old_offset = ck.offset;

    int id = vio_fault_arm(f, &(struct vio_fault_rule){.op = VF_FDATASYNC, .kind = VF_EIO,
                                                        .path_suffix = "anchor.tmp"});
    CU_ASSERT_FATAL(id >= 0);
    ck.offset = old_offset + 1;
    CU_ASSERT_EQUAL(ckpt_anchor_write_io(dir, &ck, key_a, vio_fault_io(f)), -EIO);
    CU_ASSERT_EQUAL(vio_fault_fired(f, id), 1);
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_read(dir, &back, NULL), 0);
    CU_ASSERT_EQUAL(back.offset, old_offset);
    CU_ASSERT_NOT_EQUAL(stat(path_in("anchor-fault", "anchor.tmp"), &st), 0);

    vio_fault_disarm_all(f);
    id = vio_fault_arm(f, &(struct vio_fault_rule){.op = VF_RENAME, .kind = VF_EIO});
    CU_ASSERT_FATAL(id >= 0);
    CU_ASSERT_EQUAL(ckpt_anchor_write_io(dir, &ck, key_a, vio_fault_io(f)), -EIO);
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_read(dir, &back, NULL), 0);
    CU_ASSERT_EQUAL(back.offset, old_offset);
    CU_ASSERT_NOT_EQUAL(stat(path_in("anchor-fault", "anchor.tmp"), &st), 0);

    /* With the faults gone the same write succeeds and syncs the directory. */
    vio_fault_disarm_all(f);
    uint64_t fsyncs = vio_fault_calls(f, VF_FSYNC);
    CU_ASSERT_EQUAL(ckpt_anchor_write_io(dir, &ck, key_a, vio_fault_io(f)), 0);
    CU_ASSERT(vio_fault_calls(f, VF_FSYNC) > fsyncs);
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_read_io(dir, &back, NULL, vio_fault_io(f)), 0);
    CU_ASSERT_EQUAL(back.offset, old_offset + 1);
    vio_fault_free(f);
}

/* ---- key files --------------------------------------------------------------- */

static void test_keygen_then_load_signs_and_verifies(void)
{
    const char *kp = path_in("", "k1.key"), *pp = path_in("", "k1.pub");
    struct stat st;
    EVP_PKEY *priv = NULL, *pub = NULL, *pub_from_priv = NULL;
    CU_ASSERT_EQUAL_FATAL(ckpt_keygen(kp, pp), 0);
    CU_ASSERT_EQUAL_FATAL(stat(kp, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL_FATAL(ckpt_load_private(kp, &priv), 0);
    CU_ASSERT_EQUAL_FATAL(ckpt_load_public(pp, &pub), 0);
    CU_ASSERT_EQUAL_FATAL(ckpt_load_public(kp, &pub_from_priv), 0);

    struct ckpt ck;
    uint8_t buf[CKPT_PAYLOAD_SIZE];
    sample(&ck);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, priv, buf), 0);
    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, pub), 0);
    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, pub_from_priv), 0);
    CU_ASSERT_EQUAL(ckpt_verify(buf, sizeof buf, key_a), VERITY_ESIGNATURE);
    /* A public key file cannot sign. */
    EVP_PKEY *nope = NULL;
    CU_ASSERT_NOT_EQUAL(ckpt_load_private(pp, &nope), 0);
    CU_ASSERT_PTR_NULL(nope);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pub);
    EVP_PKEY_free(pub_from_priv);
}

static void test_keygen_refuses_to_overwrite(void)
{
    const char *kp = path_in("", "k2.key"), *pp = path_in("", "k2.pub");
    EVP_PKEY *a = NULL, *b = NULL;
    uint8_t ra[32], rb[32];
    CU_ASSERT_EQUAL_FATAL(ckpt_keygen(kp, pp), 0);
    CU_ASSERT_EQUAL_FATAL(ckpt_load_public(pp, &a), 0);
    CU_ASSERT_EQUAL(ckpt_keygen(kp, pp), VERITY_EEXIST);
    CU_ASSERT_EQUAL_FATAL(ckpt_load_public(pp, &b), 0);
    raw_pub(a, ra);
    raw_pub(b, rb);
    CU_ASSERT(memcmp(ra, rb, 32) == 0);
    /* A missing public half with an existing private key: still refused, and
     * the private key is untouched. */
    CU_ASSERT_EQUAL(unlink(pp), 0);
    CU_ASSERT_EQUAL(ckpt_keygen(kp, pp), VERITY_EEXIST);
    EVP_PKEY_free(b);
    b = NULL;
    CU_ASSERT_EQUAL_FATAL(ckpt_load_public(kp, &b), 0);
    raw_pub(b, rb);
    CU_ASSERT(memcmp(ra, rb, 32) == 0);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void test_load_rejects_missing_garbage_and_other_key_types(void)
{
    EVP_PKEY *k = NULL;
    CU_ASSERT_EQUAL(ckpt_load_private(path_in("", "missing.key"), &k), -ENOENT);
    CU_ASSERT_EQUAL(ckpt_load_public(path_in("", "missing.pub"), &k), -ENOENT);
    const char *junk = path_in("", "junk.pem");
    FILE *f = fopen(junk, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
    CU_ASSERT_EQUAL(ckpt_load_private(junk, &k), VERITY_EINVAL);
    CU_ASSERT_EQUAL(ckpt_load_public(junk, &k), VERITY_EINVAL);
    CU_ASSERT_PTR_NULL(k);

    const char *ecp = path_in("", "ec.pem");
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    CU_ASSERT_PTR_NOT_NULL_FATAL(ec);
    f = fopen(ecp, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(PEM_write_PrivateKey(f, ec, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
    EVP_PKEY_free(ec);
    CU_ASSERT_EQUAL(ckpt_load_private(ecp, &k), VERITY_EINVAL);
    CU_ASSERT_EQUAL(ckpt_load_public(ecp, &k), VERITY_EINVAL);
    CU_ASSERT_PTR_NULL(k);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int suite_init(void)
{
    if (!mkdtemp(g_dir))
        return -1;
    key_a = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    key_b = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    return key_a && key_b ? 0 : -1;
}

static int suite_clean(void)
{
    EVP_PKEY_free(key_a);
    EVP_PKEY_free(key_b);
    return nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"sign_verify_round_trip", test_sign_verify_round_trip},
        {"signature_covers_context_and_first_96_bytes",
         test_signature_covers_context_and_first_96_bytes},
        {"any_changed_byte_fails_verification", test_any_changed_byte_fails_verification},
        {"resigned_with_other_key_fails_with_real_key",
         test_resigned_with_other_key_fails_with_real_key},
        {"unsigned_checkpoint", test_unsigned_checkpoint},
        {"decode_checks_structure", test_decode_checks_structure},
        {"encode_rejects_non_ed25519_key", test_encode_rejects_non_ed25519_key},
        {"anchor_round_trip", test_anchor_round_trip},
        {"anchor_read_rejects_damaged_files", test_anchor_read_rejects_damaged_files},
        {"anchor_write_failure_keeps_old_anchor", test_anchor_write_failure_keeps_old_anchor},
        {"keygen_then_load_signs_and_verifies", test_keygen_then_load_signs_and_verifies},
        {"keygen_refuses_to_overwrite", test_keygen_refuses_to_overwrite},
        {"load_rejects_missing_garbage_and_other_key_types",
         test_load_rejects_missing_garbage_and_other_key_types},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("checkpoint", suite_init, suite_clean);
    if (s == NULL)
        goto fail;
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (CU_add_test(s, tests[i].name, tests[i].fn) == NULL)
            goto fail;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto fail;
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
fail:
    CU_cleanup_registry();
    return 1;
}
