/*
 * Tamper tests: logs written by the real writer (storage/vlog.h), altered
 * the way an attacker or a failing disk would, then checked with the offline
 * verifier (storage/verify.h) and the `verity log verify` binary.
 *
 * The expected finding is computed here from the batch positions recorded
 * while writing (through vlog_read, the writer's own index of what it
 * wrote), never from the verifier: the offset of the batch that holds the
 * damaged byte, or the first batch whose place in the chain was taken.
 *
 * Seeds: VERITY_TEST_SEED=<n> replays a run; the seed is printed.
 * VERITY_TEST_QUICK=1 writes a smaller log and flips fewer bits.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "storage/verify.h"
#include "storage/vlog.h"
#include "verity/errors.h"

#define NOW0 1700000000000LL

static char g_root[] = "/tmp/verity-tamper-XXXXXX";
static char g_pub_path[512];
static EVP_PKEY *key_a; /* the log's signer; its public half is what auditors trust */
static EVP_PKEY *key_b; /* a forger's key */
static uint64_t g_seed;
static bool g_quick;

/* ---- deterministic randomness --------------------------------------------- */

static uint64_t rng_s;
static uint64_t rng(void)
{
    rng_s ^= rng_s >> 12;
    rng_s ^= rng_s << 25;
    rng_s ^= rng_s >> 27;
    return rng_s * 0x2545F4914F6CDD1Dull;
}

/* ---- what the writer wrote --------------------------------------------------- */

struct bpos {
    uint64_t seg_base;    /* segment file holding the batch */
    uint64_t position;    /* byte position in that file */
    uint64_t length;
    uint64_t base_offset;
    uint32_t count;
    bool control;
    bool checkpoint;
    uint64_t global;      /* byte position in the concatenation of all segments */
};

struct layout {
    char dir[512];
    struct bpos *b;
    size_t n, cap;
    uint64_t total_bytes;
    uint64_t end_offset;
};

static void layout_free(struct layout *L)
{
    free(L->b);
    L->b = NULL;
    L->n = L->cap = 0;
}

static void seg_name(uint64_t base, char *out, size_t cap)
{
    snprintf(out, cap, "%020" PRIu64 ".log", base);
}

static void seg_path(const char *dir, uint64_t base, char *out, size_t cap)
{
    char name[32];
    seg_name(base, name, sizeof name);
    snprintf(out, cap, "%s/%s", dir, name);
}

/* Appends to L every batch between *recorded_end and the log's end, located
 * with vlog_read (one batch per call). */
static void record_batches(struct vlog *log, struct layout *L, uint64_t *recorded_end)
{
    struct vlog_info info;
    vlog_get_info(log, &info);
    while (*recorded_end < info.end_offset) {
        struct vlog_span sp;
        size_t n = 0;
        CU_ASSERT_EQUAL_FATAL(vlog_read(log, *recorded_end, info.end_offset, 1, &sp, 1, &n), 0);
        CU_ASSERT_EQUAL_FATAL(n, 1);
        vlog_spans_close(&sp, n);
        CU_ASSERT_EQUAL_FATAL(sp.base_offset, *recorded_end);
        if (L->n == L->cap) {
            L->cap = L->cap ? L->cap * 2 : 256;
            L->b = realloc(L->b, L->cap * sizeof *L->b);
            CU_ASSERT_PTR_NOT_NULL_FATAL(L->b);
        }
        struct bpos *p = &L->b[L->n++];
        memset(p, 0, sizeof *p);
        p->position = sp.position;
        p->length = sp.length;
        p->base_offset = sp.base_offset;
        p->count = (uint32_t)(sp.end_offset - sp.base_offset);
        *recorded_end = sp.end_offset;
    }
}

/* Fills seg_base, global, control and checkpoint for every recorded batch,
 * and checks that the recorded batches tile every segment file exactly. */
static void layout_finish(struct layout *L)
{
    struct verify_segment *segs = NULL;
    size_t nseg = 0;
    CU_ASSERT_EQUAL_FATAL(verify_list_segments(L->dir, &segs, &nseg), 0);
    CU_ASSERT_FATAL(nseg > 0);
    uint64_t global = 0;
    size_t si = 0, bi = 0;
    for (si = 0; si < nseg; si++) {
        uint64_t pos = 0;
        char path[700];
        snprintf(path, sizeof path, "%s/%s", L->dir, segs[si].name);
        int fd = open(path, O_RDONLY);
        CU_ASSERT_FATAL(fd >= 0);
        while (bi < L->n && (si + 1 == nseg || L->b[bi].base_offset < segs[si + 1].base_offset)) {
            struct bpos *p = &L->b[bi++];
            uint8_t hdr[BATCH_HDR_SIZE];
            CU_ASSERT_EQUAL_FATAL(p->position, pos);
            p->seg_base = segs[si].base_offset;
            p->global = global + pos;
            CU_ASSERT_EQUAL_FATAL(pread(fd, hdr, sizeof hdr, (off_t)pos), (ssize_t)sizeof hdr);
            CU_ASSERT_EQUAL_FATAL(get_le64(hdr + 8), p->base_offset);
            p->control = (hdr[53] & BATCH_ATTR_CONTROL) != 0;
            if (p->control) {
                uint8_t *b = malloc(p->length);
                struct batch_iter it;
                struct batch_record r;
                CU_ASSERT_PTR_NOT_NULL_FATAL(b);
                CU_ASSERT_EQUAL_FATAL(pread(fd, b, p->length, (off_t)pos), (ssize_t)p->length);
                batch_iter_init(&it, b, p->length);
                CU_ASSERT_EQUAL_FATAL(batch_iter_next(&it, &r), 1);
                p->checkpoint = r.key_len == (int32_t)strlen(BATCH_CONTROL_CHECKPOINT) &&
                                memcmp(r.key, BATCH_CONTROL_CHECKPOINT, (size_t)r.key_len) == 0;
                free(b);
            }
            pos += p->length;
        }
        CU_ASSERT_EQUAL_FATAL(pos, segs[si].size);
        global += segs[si].size;
        close(fd);
    }
    CU_ASSERT_EQUAL_FATAL(bi, L->n);
    L->total_bytes = global;
    free(segs);
}

struct write_opts {
    uint64_t bytes;             /* stop after about this many bytes */
    uint64_t segment_bytes;
    uint32_t checkpoint_records;
    uint32_t records_per_batch;
    uint32_t value_max;
    EVP_PKEY *key;
};

/* Writes a log with the real writer and records where every batch went. */
static void write_log(const char *dir, const struct write_opts *o, struct layout *L)
{
    struct vlog_config cfg;
    struct vlog *log = NULL;
    struct batch_builder bb;
    uint64_t recorded_end = 0, written = 0, bad = 0;
    int64_t now = NOW0;
    memset(L, 0, sizeof *L);
    snprintf(L->dir, sizeof L->dir, "%s", dir);
    vlog_config_default(&cfg);
    cfg.durability = VLOG_DURABILITY_OS;
    cfg.segment_bytes = o->segment_bytes;
    cfg.checkpoint_records = o->checkpoint_records;
    cfg.signing_key = o->key;
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &cfg, now, &log, &bad), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&bb, 4u << 20), 0);
    uint8_t *val = malloc(o->value_max + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(val);
    uint64_t rec = 0;
    while (written < o->bytes) {
        batch_builder_reset(&bb);
        for (uint32_t i = 0; i < o->records_per_batch; i++, rec++) {
            char key[32];
            int klen = snprintf(key, sizeof key, "key-%" PRIu64, rec);
            size_t vlen = (size_t)(rng() % (o->value_max + 1));
            for (size_t j = 0; j < vlen; j++)
                val[j] = (uint8_t)rng();
            struct batch_header_kv h = {(const uint8_t *)"src", 3, (const uint8_t *)"tamper", 6};
            CU_ASSERT_EQUAL_FATAL(batch_builder_add(&bb, now + (int64_t)(rec % 1000), key, klen,
                                                    val, (int32_t)vlen, &h, 1),
                                  0);
        }
        CU_ASSERT_EQUAL_FATAL(batch_builder_finish(&bb, NULL), 0);
        struct vlog_append_info ai;
        CU_ASSERT_EQUAL_FATAL(vlog_append(log, bb.buf, bb.len, now, &ai), 0);
        written += bb.len;
        now++;
        record_batches(log, L, &recorded_end);
    }
    /* End on a checkpoint of our own so close adds nothing unrecorded. */
    CU_ASSERT_EQUAL_FATAL(vlog_checkpoint(log, now), 0);
    record_batches(log, L, &recorded_end);
    L->end_offset = recorded_end;
    CU_ASSERT_EQUAL_FATAL(vlog_close(log, now), 0);
    free(val);
    batch_builder_deinit(&bb);
    layout_finish(L);
}

/* Index of the batch holding global byte g. */
static size_t batch_at(const struct layout *L, uint64_t g)
{
    size_t lo = 0, hi = L->n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (L->b[mid].global <= g)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* ---- file helpers ---------------------------------------------------------- */

static void flip_bit(const char *dir, uint64_t seg_base, uint64_t pos, unsigned bit)
{
    char path[700];
    uint8_t c;
    seg_path(dir, seg_base, path, sizeof path);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(pread(fd, &c, 1, (off_t)pos), 1);
    c ^= (uint8_t)(1u << bit);
    CU_ASSERT_EQUAL_FATAL(pwrite(fd, &c, 1, (off_t)pos), 1);
    close(fd);
}

static uint8_t *read_batch(const struct layout *L, size_t i)
{
    char path[700];
    const struct bpos *p = &L->b[i];
    uint8_t *b = malloc(p->length);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    seg_path(L->dir, p->seg_base, path, sizeof path);
    int fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(pread(fd, b, p->length, (off_t)p->position), (ssize_t)p->length);
    close(fd);
    return b;
}

static void write_batch_in_place(const struct layout *L, size_t i, const uint8_t *b)
{
    char path[700];
    const struct bpos *p = &L->b[i];
    seg_path(L->dir, p->seg_base, path, sizeof path);
    int fd = open(path, O_WRONLY);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL_FATAL(pwrite(fd, b, p->length, (off_t)p->position), (ssize_t)p->length);
    close(fd);
}

static void recrc(uint8_t *b, size_t len) { put_le32(b + BATCH_OFF_CRC, batch_crc_compute(b, len)); }

/* Pointer to the 160-byte checkpoint payload inside a checkpoint batch. */
static uint8_t *ckpt_value(uint8_t *b, size_t len)
{
    struct batch_iter it;
    struct batch_record r;
    batch_iter_init(&it, b, len);
    CU_ASSERT_EQUAL_FATAL(batch_iter_next(&it, &r), 1);
    CU_ASSERT_EQUAL_FATAL(r.value_len, CKPT_PAYLOAD_SIZE);
    return (uint8_t *)r.value;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static const char *subdir(const char *name)
{
    static char b[4][512];
    static int k;
    char *p = b[k++ % 4];
    snprintf(p, sizeof b[0], "%s/%s", g_root, name);
    return p;
}

/* Runs the verifier with the trusted key; returns its result. */
static int verify(const char *dir, EVP_PKEY *pub, struct verify_report *rep)
{
    return verify_log_dir(dir, pub, NULL, NULL, rep);
}

static void expect_finding(const struct verify_report *rep, int rc, int code, uint64_t offset,
                           uint64_t seg_base)
{
    char name[32];
    seg_name(seg_base, name, sizeof name);
    CU_ASSERT(rep->found);
    CU_ASSERT_EQUAL(rc, code);
    CU_ASSERT_EQUAL(rep->finding.code, code);
    CU_ASSERT_EQUAL(rep->finding.offset, offset);
    CU_ASSERT_STRING_EQUAL(rep->finding.segment, name);
    if (rc != code || rep->finding.offset != offset)
        printf("\n  expected %s at %" PRIu64 " (%s), got %s at %" PRIu64 " (%s): %s\n",
               verity_errname(code), offset, name, verity_errname(rep->finding.code),
               rep->finding.offset, rep->finding.segment, rep->finding.reason);
}

/* ---- (a) bit flips in a large multi-segment log ------------------------------ */

static struct layout big;

static void test_clean_log_verifies(void)
{
    struct verify_report rep;
    uint64_t data = 0, ckpts = 0;
    for (size_t i = 0; i < big.n; i++) {
        if (!big.b[i].control)
            data += big.b[i].count;
        ckpts += big.b[i].checkpoint;
    }
    int rc = verify(big.dir, key_a, &rep);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_FALSE(rep.found);
    CU_ASSERT(rep.segments >= 4);
    CU_ASSERT_EQUAL(rep.batches, big.n);
    CU_ASSERT_EQUAL(rep.bytes, big.total_bytes);
    CU_ASSERT_EQUAL(rep.records, data);
    CU_ASSERT_EQUAL(rep.checkpoints_verified, ckpts);
    CU_ASSERT(ckpts >= 3);
    CU_ASSERT_EQUAL(rep.end_offset, big.end_offset);
    CU_ASSERT(rep.origin_checked);
    /* Without a key: same verdict, but origin is not established. */
    rc = verify(big.dir, NULL, &rep);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_FALSE(rep.origin_checked);
    CU_ASSERT_EQUAL(rep.checkpoints_verified, ckpts);
}

static void flip_and_check(uint64_t g, unsigned bit)
{
    struct verify_report rep;
    size_t i = batch_at(&big, g);
    const struct bpos *p = &big.b[i];
    uint64_t pos = p->position + (g - p->global);
    flip_bit(big.dir, p->seg_base, pos, bit);
    int rc = verify(big.dir, key_a, &rep);
    flip_bit(big.dir, p->seg_base, pos, bit);
    CU_ASSERT(rep.found);
    CU_ASSERT(rc < 0);
    CU_ASSERT_EQUAL(rep.finding.offset, p->base_offset);
    char name[32];
    seg_name(p->seg_base, name, sizeof name);
    CU_ASSERT_STRING_EQUAL(rep.finding.segment, name);
    CU_ASSERT_EQUAL(rep.finding.position, p->position);
    CU_ASSERT(rc == VERITY_ECORRUPT || rc == VERITY_ECHAIN || rc == VERITY_EVERSION ||
              rc == VERITY_EBADBATCH || rc == VERITY_ELIMIT || rc == VERITY_EUNSUPPORTED);
    if (!rep.found || rep.finding.offset != p->base_offset)
        printf("\n  flip at %s+%" PRIu64 " bit %u (batch at %" PRIu64 "): got %s at %" PRIu64
               ": %s\n",
               name, pos, bit, p->base_offset, verity_errname(rc), rep.finding.offset,
               rep.finding.reason);
}

static void test_random_bit_flips_found_at_their_batch(void)
{
    int rounds = g_quick ? 4 : 20;
    for (int r = 0; r < rounds; r++)
        flip_and_check(rng() % big.total_bytes, (unsigned)(rng() % 8));
    struct verify_report rep;
    CU_ASSERT_EQUAL(verify(big.dir, key_a, &rep), 0); /* every bit was restored */
}

/* Flips aimed at each header field of random batches (some outside the CRC)
 * and inside checkpoint batches, which random positions rarely hit. */
static void test_bit_flips_in_header_fields_and_checkpoints(void)
{
    static const unsigned field_pos[] = {0, 3, 4, 7, 8, 15, 16, 47, 48, 52, 53, 56, 60, 64, 72,
                                         80, 88, 90, 92, 96, 111};
    size_t nf = sizeof field_pos / sizeof field_pos[0];
    for (size_t k = 0; k < nf; k += g_quick ? 4 : 1) {
        size_t i = (size_t)(rng() % big.n);
        flip_and_check(big.b[i].global + field_pos[k], (unsigned)(rng() % 8));
    }
    size_t ckpts[64], nck = 0;
    for (size_t i = 0; i < big.n && nck < 64; i++)
        if (big.b[i].checkpoint)
            ckpts[nck++] = i;
    CU_ASSERT_FATAL(nck > 0);
    for (int r = 0; r < 3; r++) {
        const struct bpos *p = &big.b[ckpts[rng() % nck]];
        flip_and_check(p->global + rng() % p->length, (unsigned)(rng() % 8));
    }
    /* The very last byte of the log (in the final checkpoint). */
    flip_and_check(big.total_bytes - 1, 0);
}

/* ---- (b) structural tampering with recomputed CRCs --------------------------- */

struct held {
    uint8_t *b;
    size_t len;
    bool checkpoint;
};

static struct write_opts small_opts(void)
{
    return (struct write_opts){.bytes = 1500u << 10, .segment_bytes = 256u << 10,
                               .checkpoint_records = 2000, .records_per_batch = 20,
                               .value_max = 600, .key = key_a};
}

/* Loads every batch of L into memory, in order. */
static struct held *load_all(const struct layout *L)
{
    struct held *h = calloc(L->n, sizeof *h);
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    for (size_t i = 0; i < L->n; i++) {
        h[i].b = read_batch(L, i);
        h[i].len = L->b[i].length;
        h[i].checkpoint = L->b[i].checkpoint;
    }
    return h;
}

static void free_held(struct held *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(h[i].b);
    free(h);
}

struct rewrite {
    bool chains;         /* recompute every chain hash */
    EVP_PKEY *resign;    /* rewrite checkpoints consistently and sign with this key */
    uint64_t seg_bytes;
    size_t gap_after;    /* 1 + index of a batch after which 5 offsets are skipped; 0 = none */
    uint64_t count_skew; /* added to record_count in re-signed checkpoints */
};

/* The thorough tamperer: deletes the segment files, then lays the batches
 * out again from offset 0 with rewritten base offsets and fresh CRCs (and,
 * on request, fresh chains and re-signed checkpoints), in segments named by
 * their new first offsets. */
static void rewrite_log(const char *dir, struct held *h, size_t n, const struct rewrite *rw)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || strcmp(de->d_name, "anchor") == 0)
            continue;
        char path[800];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        CU_ASSERT_EQUAL(unlink(path), 0);
    }
    closedir(d);
    uint8_t prev[32] = {0};
    uint64_t next = 0, data = 0, seg_size = 0;
    int fd = -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t *b = h[i].b;
        uint32_t count = get_le32(b + 56);
        batch_set_base_offset(b, next);
        if (h[i].checkpoint && rw->resign) {
            struct ckpt ck = {.offset = next, .record_count = data + rw->count_skew,
                              .time_ms = NOW0};
            memcpy(ck.chain, prev, 32);
            CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, rw->resign, ckpt_value(b, h[i].len)), 0);
        }
        recrc(b, h[i].len);
        if (rw->chains) {
            uint8_t c[32];
            batch_chain_compute(prev, b, h[i].len, c);
            batch_set_chain(b, c);
        }
        memcpy(prev, b + BATCH_OFF_CHAIN, 32);
        if (fd < 0 || seg_size + h[i].len > rw->seg_bytes) {
            char path[700];
            if (fd >= 0)
                close(fd);
            seg_path(dir, next, path, sizeof path);
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            CU_ASSERT_FATAL(fd >= 0);
            seg_size = 0;
        }
        CU_ASSERT_EQUAL_FATAL(pwrite(fd, b, h[i].len, (off_t)seg_size), (ssize_t)h[i].len);
        seg_size += h[i].len;
        if (!(b[53] & BATCH_ATTR_CONTROL))
            data += count;
        next += count;
        if (rw->gap_after == i + 1)
            next += 5;
    }
    if (fd >= 0)
        close(fd);
}

/* Segment base (in the rewritten layout) that holds offset, by listing. */
static uint64_t seg_holding(const char *dir, uint64_t offset)
{
    struct verify_segment *segs = NULL;
    size_t n = 0;
    uint64_t base = 0;
    CU_ASSERT_EQUAL_FATAL(verify_list_segments(dir, &segs, &n), 0);
    for (size_t i = 0; i < n; i++)
        if (segs[i].base_offset <= offset)
            base = segs[i].base_offset;
    free(segs);
    return base;
}

/* A data batch in the middle of the log with data batches around it. */
static size_t pick_middle_data_batch(const struct layout *L)
{
    for (size_t i = L->n / 2; i + 2 < L->n; i++)
        if (!L->b[i].control && !L->b[i + 1].control && !L->b[i - 1].control)
            return i;
    CU_FAIL_FATAL("no data batch in the middle");
    return 0;
}

static void test_removed_batch_found_by_chain(void)
{
    const char *dir = subdir("removed");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    CU_ASSERT_EQUAL_FATAL(verify(dir, key_a, &rep), 0);
    struct held *h = load_all(&L);
    size_t k = pick_middle_data_batch(&L);
    uint64_t at = L.b[k].base_offset;
    free(h[k].b);
    memmove(h + k, h + k + 1, (L.n - k - 1) * sizeof *h);
    rewrite_log(dir, h, L.n - 1, &(struct rewrite){.seg_bytes = o.segment_bytes});
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECHAIN, at, seg_holding(dir, at));
    free_held(h, L.n - 1);
    layout_free(&L);
    rm_tree(dir);
}

static void test_reordered_batches_found_by_chain(void)
{
    const char *dir = subdir("reordered");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    struct held *h = load_all(&L);
    size_t k = pick_middle_data_batch(&L);
    uint64_t at = L.b[k].base_offset;
    struct held t = h[k];
    h[k] = h[k + 1];
    h[k + 1] = t;
    rewrite_log(dir, h, L.n, &(struct rewrite){.seg_bytes = o.segment_bytes});
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECHAIN, at, seg_holding(dir, at));
    free_held(h, L.n);
    layout_free(&L);
    rm_tree(dir);
}

static void test_replaced_batch_found_by_chain(void)
{
    const char *dir = subdir("replaced");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    size_t k = pick_middle_data_batch(&L);
    uint8_t *orig = read_batch(&L, k);
    uint32_t count = get_le32(orig + 56);
    /* A different batch with the same record count, so every later offset
     * still lines up; it carries the original's offset and chain field. */
    struct batch_builder bb;
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&bb, 1u << 20), 0);
    for (uint32_t i = 0; i < count; i++)
        CU_ASSERT_EQUAL_FATAL(batch_builder_add(&bb, NOW0, "forged", 6, "evil", 4, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_finish(&bb, NULL), 0);
    batch_set_base_offset(bb.buf, L.b[k].base_offset);
    batch_set_chain(bb.buf, orig + BATCH_OFF_CHAIN);
    CU_ASSERT_EQUAL_FATAL(batch_validate(bb.buf, bb.len, NULL), 0);
    /* Splice it in place of the original (the file changes length). */
    char path[700];
    seg_path(dir, L.b[k].seg_base, path, sizeof path);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    size_t tail = (size_t)st.st_size - (L.b[k].position + L.b[k].length);
    uint8_t *rest = malloc(tail + 1);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0 && rest);
    CU_ASSERT_EQUAL_FATAL(pread(fd, rest, tail, (off_t)(L.b[k].position + L.b[k].length)),
                          (ssize_t)tail);
    CU_ASSERT_EQUAL_FATAL(pwrite(fd, bb.buf, bb.len, (off_t)L.b[k].position), (ssize_t)bb.len);
    CU_ASSERT_EQUAL_FATAL(pwrite(fd, rest, tail, (off_t)(L.b[k].position + bb.len)), (ssize_t)tail);
    CU_ASSERT_EQUAL_FATAL(ftruncate(fd, (off_t)(L.b[k].position + bb.len + tail)), 0);
    close(fd);
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECHAIN, L.b[k].base_offset, L.b[k].seg_base);
    CU_ASSERT_EQUAL(rep.finding.position, L.b[k].position);
    free(rest);
    free(orig);
    batch_builder_deinit(&bb);
    layout_free(&L);
    rm_tree(dir);
}

/* First checkpoint at or after batch index k in L; its offset after one
 * batch of `shift` records before it was removed. */
static uint64_t next_checkpoint_offset(const struct layout *L, size_t k, uint64_t shift)
{
    for (size_t i = k; i < L->n; i++)
        if (L->b[i].checkpoint)
            return L->b[i].base_offset - shift;
    CU_FAIL_FATAL("no checkpoint after the tampered batch");
    return 0;
}

/* Even a tamperer who recomputes every chain hash is caught by the next
 * signed checkpoint; one who also rewrites and re-signs the checkpoints is
 * caught by the trusted public key. */
static void test_rechained_removal_found_by_checkpoint(void)
{
    const char *dir = subdir("rechained");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    struct held *h = load_all(&L);
    size_t k = pick_middle_data_batch(&L);
    uint64_t shift = L.b[k].count;
    uint64_t ck_at = next_checkpoint_offset(&L, k + 1, shift);
    free(h[k].b);
    memmove(h + k, h + k + 1, (L.n - k - 1) * sizeof *h);
    rewrite_log(dir, h, L.n - 1, &(struct rewrite){.chains = true, .seg_bytes = o.segment_bytes});
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECHAIN, ck_at, seg_holding(dir, ck_at));
    CU_ASSERT_PTR_NOT_NULL(strstr(rep.finding.reason, "checkpoint"));

    /* Now with every checkpoint rewritten to match and re-signed. */
    rewrite_log(dir, h, L.n - 1,
                &(struct rewrite){.chains = true, .resign = key_b, .seg_bytes = o.segment_bytes});
    rc = verify(dir, key_a, &rep);
    uint64_t first_ck = next_checkpoint_offset(&L, 0, 0);
    if (first_ck > L.b[k].base_offset)
        first_ck -= shift;
    expect_finding(&rep, rc, VERITY_ESIGNATURE, first_ck, seg_holding(dir, first_ck));
    /* Self-consistent: only the trusted key exposes it. */
    CU_ASSERT_EQUAL(verify(dir, NULL, &rep), 0);
    CU_ASSERT_FALSE(rep.origin_checked);
    CU_ASSERT_EQUAL(verify(dir, key_b, &rep), 0);
    free_held(h, L.n - 1);
    layout_free(&L);
    rm_tree(dir);
}

/* A gap in the offsets, with every chain recomputed over the new offsets,
 * is still caught by offset continuity, at the first batch past the gap. */
static void test_offset_gap_found_by_continuity(void)
{
    const char *dir = subdir("gap");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    struct held *h = load_all(&L);
    size_t k = pick_middle_data_batch(&L);
    uint64_t at = L.b[k + 1].base_offset;
    rewrite_log(dir, h, L.n,
                &(struct rewrite){.chains = true, .seg_bytes = o.segment_bytes, .gap_after = k + 1});
    /* The batch after the gap now says at + 5; when it opens a segment, the
     * segment's name is what gives it away first. */
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECHAIN, at, seg_holding(dir, at + 5));
    CU_ASSERT(strstr(rep.finding.reason, "base offset") != NULL ||
              strstr(rep.finding.reason, "segment file") != NULL);
    free_held(h, L.n);
    layout_free(&L);
    rm_tree(dir);
}

/* A checkpoint signed by the real key but counting the wrong number of data
 * records (a writer bug, or an insider) is reported. */
static void test_checkpoint_with_wrong_record_count_found(void)
{
    const char *dir = subdir("bad-count");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    struct held *h = load_all(&L);
    /* Re-laying the log out unchanged with the real key verifies clean... */
    rewrite_log(dir, h, L.n,
                &(struct rewrite){.chains = true, .resign = key_a, .seg_bytes = o.segment_bytes});
    CU_ASSERT_EQUAL(verify(dir, key_a, &rep), 0);
    /* ...while one extra record claimed is found at the first checkpoint. */
    rewrite_log(dir, h, L.n,
                &(struct rewrite){.chains = true, .resign = key_a, .seg_bytes = o.segment_bytes,
                                  .count_skew = 1});
    uint64_t first_ck = next_checkpoint_offset(&L, 0, 0);
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECHAIN, first_ck, seg_holding(dir, first_ck));
    CU_ASSERT_PTR_NOT_NULL(strstr(rep.finding.reason, "data records"));
    free_held(h, L.n);
    layout_free(&L);
    rm_tree(dir);
}

/* ---- (c) forged checkpoints ---------------------------------------------------- */

static size_t pick_checkpoint(const struct layout *L)
{
    for (size_t i = 1; i + 1 < L->n; i++)
        if (L->b[i].checkpoint)
            return i;
    CU_FAIL_FATAL("no checkpoint in the middle of the log");
    return 0;
}

static void test_forged_checkpoint_payload_fails_signature(void)
{
    const char *dir = subdir("forged-payload");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    size_t k = pick_checkpoint(&L);
    uint8_t *b = read_batch(&L, k);
    uint8_t *v = ckpt_value(b, L.b[k].length);
    for (int field = 0; field < 3; field++) {
        uint8_t *saved = malloc(L.b[k].length);
        CU_ASSERT_PTR_NOT_NULL_FATAL(saved);
        memcpy(saved, b, L.b[k].length);
        if (field == 0)
            put_le64(v + 48, get_le64(v + 48) + 1); /* record_count */
        else if (field == 1)
            v[16] ^= 0x40;                          /* chain */
        else
            put_le64(v + 56, get_le64(v + 56) + 1); /* time */
        recrc(b, L.b[k].length);
        write_batch_in_place(&L, k, b);
        int rc = verify(dir, key_a, &rep);
        expect_finding(&rep, rc, VERITY_ESIGNATURE, L.b[k].base_offset, L.b[k].seg_base);
        memcpy(b, saved, L.b[k].length);
        write_batch_in_place(&L, k, b);
        free(saved);
    }
    CU_ASSERT_EQUAL(verify(dir, key_a, &rep), 0);
    free(b);
    layout_free(&L);
    rm_tree(dir);
}

static void test_checkpoint_resigned_with_other_key_fails(void)
{
    const char *dir = subdir("forged-key");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    size_t k = pick_checkpoint(&L);
    uint8_t *b = read_batch(&L, k);
    uint8_t *v = ckpt_value(b, L.b[k].length);
    struct ckpt ck;
    CU_ASSERT_EQUAL_FATAL(ckpt_decode(v, CKPT_PAYLOAD_SIZE, &ck), 0);
    CU_ASSERT_EQUAL_FATAL(ckpt_encode(&ck, key_b, v), 0); /* same statement, forger's key */
    recrc(b, L.b[k].length);
    write_batch_in_place(&L, k, b);
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ESIGNATURE, L.b[k].base_offset, L.b[k].seg_base);
    CU_ASSERT_PTR_NOT_NULL(strstr(rep.finding.reason, "different key"));
    free(b);
    layout_free(&L);
    rm_tree(dir);
}

/* ---- torn tail, missing segment, recovery, anchor --------------------------- */

static void test_torn_tail_reported_then_recovered(void)
{
    const char *dir = subdir("torn");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    const struct bpos *last = &L.b[L.n - 1];
    char path[700];
    seg_path(dir, last->seg_base, path, sizeof path);
    CU_ASSERT_EQUAL_FATAL(truncate(path, (off_t)(last->position + last->length / 2)), 0);
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECORRUPT, last->base_offset, last->seg_base);
    CU_ASSERT(rep.torn_tail);
    CU_ASSERT_EQUAL(rep.end_offset, last->base_offset);

    /* The writer cuts the tail on open and says so in a recovery record. */
    struct vlog_config cfg;
    struct vlog *log = NULL;
    uint64_t bad = 0;
    vlog_config_default(&cfg);
    cfg.segment_bytes = o.segment_bytes;
    cfg.signing_key = key_a;
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &cfg, NOW0 + 100000, &log, &bad), 0);
    CU_ASSERT_EQUAL(vlog_close(log, NOW0 + 100001), 0);
    rc = verify(dir, key_a, &rep);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(rep.recovery_records, 1);
    CU_ASSERT_EQUAL_FATAL(rep.recoveries_listed, 1);
    CU_ASSERT_EQUAL(rep.recoveries[0].offset, last->base_offset);
    CU_ASSERT_PTR_NOT_NULL(strstr(rep.recoveries[0].text, "cut_offset_first"));
    layout_free(&L);
    rm_tree(dir);
}

static void test_missing_segment_found(void)
{
    const char *dir = subdir("missing-seg");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    struct verify_segment *segs = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(verify_list_segments(dir, &segs, &n), 0);
    CU_ASSERT_FATAL(n >= 3);
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, segs[1].name);
    CU_ASSERT_EQUAL_FATAL(unlink(path), 0);
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECHAIN, segs[1].base_offset, segs[2].base_offset);
    free(segs);
    layout_free(&L);
    rm_tree(dir);
}

/* Segment names are not hashed; the verifier checks them anyway. */
static void test_renamed_segment_found(void)
{
    const char *dir = subdir("renamed-seg");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    struct verify_segment *segs = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL_FATAL(verify_list_segments(dir, &segs, &n), 0);
    CU_ASSERT_FATAL(n >= 3);
    char from[700], to[700];
    snprintf(from, sizeof from, "%s/%s", dir, segs[2].name);
    seg_path(dir, segs[2].base_offset + 1, to, sizeof to);
    CU_ASSERT_EQUAL_FATAL(rename(from, to), 0);
    int rc = verify(dir, key_a, &rep);
    expect_finding(&rep, rc, VERITY_ECHAIN, segs[2].base_offset, segs[2].base_offset + 1);
    CU_ASSERT_EQUAL(rep.finding.position, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(rep.finding.reason, "segment file"));
    free(segs);
    layout_free(&L);
    rm_tree(dir);
}

static void test_anchor_after_retention(void)
{
    const char *dir = subdir("anchor");
    struct layout L;
    struct write_opts o = small_opts();
    struct verify_report rep;
    write_log(dir, &o, &L);
    struct vlog_config cfg;
    struct vlog *log = NULL;
    uint64_t bad = 0;
    vlog_config_default(&cfg);
    cfg.segment_bytes = o.segment_bytes;
    cfg.signing_key = key_a;
    cfg.retention_bytes = 600u << 10;
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &cfg, NOW0 + 5000, &log, &bad), 0);
    int deleted = vlog_retain(log, NOW0 + 5001);
    CU_ASSERT_FATAL(deleted > 0);
    CU_ASSERT_EQUAL(vlog_close(log, NOW0 + 5002), 0);

    int rc = verify(dir, key_a, &rep);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT(rep.anchored);
    CU_ASSERT(rep.start_offset > 0);
    if (rc)
        printf("\n  %s at %" PRIu64 ": %s\n", verity_errname(rc), rep.finding.offset,
               rep.finding.reason);

    /* An anchor re-signed by someone else. */
    struct ckpt anc;
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_read(dir, &anc, NULL), 0);
    struct ckpt good = anc;
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_write(dir, &anc, key_b), 0);
    rc = verify(dir, key_a, &rep);
    CU_ASSERT_EQUAL(rc, VERITY_ESIGNATURE);
    CU_ASSERT_STRING_EQUAL(rep.finding.segment, "anchor");
    /* An anchor with a different chain, properly signed, breaks the chain. */
    anc = good;
    anc.chain[0] ^= 1;
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_write(dir, &anc, key_a), 0);
    rc = verify(dir, key_a, &rep);
    CU_ASSERT_EQUAL(rc, VERITY_ECHAIN);
    CU_ASSERT_EQUAL(rep.finding.offset, good.offset);
    /* No anchor at all. */
    char path[700];
    snprintf(path, sizeof path, "%s/anchor", dir);
    CU_ASSERT_EQUAL_FATAL(unlink(path), 0);
    rc = verify(dir, key_a, &rep);
    CU_ASSERT_EQUAL(rc, VERITY_ECHAIN);
    CU_ASSERT_PTR_NOT_NULL(strstr(rep.finding.reason, "no anchor"));
    layout_free(&L);
    rm_tree(dir);
}

/* Random bytes, random-length garbage after valid batches, and odd
 * directories never crash the verifier (run under ASan) and always give a
 * finding or an error. */
static void test_garbage_never_crashes_the_verifier(void)
{
    const char *dir = subdir("garbage");
    struct verify_report rep;
    char path[700];
    /* A directory that does not exist: an error, not a finding. */
    CU_ASSERT_EQUAL(verify(subdir("does-not-exist"), key_a, &rep), -ENOENT);
    CU_ASSERT_FALSE(rep.found);
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0755), 0);
    /* No segments: a finding (there is nothing to vouch for). */
    CU_ASSERT_EQUAL(verify(dir, key_a, &rep), VERITY_ENOTFOUND);
    CU_ASSERT(rep.found);

    struct layout L;
    struct write_opts o = small_opts();
    o.bytes = 64u << 10;
    o.segment_bytes = 1u << 20;
    rm_tree(dir);
    write_log(dir, &o, &L);
    seg_path(dir, 0, path, sizeof path);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    uint8_t *orig = malloc((size_t)st.st_size);
    FILE *f = fopen(path, "rb");
    CU_ASSERT_FATAL(orig && f);
    CU_ASSERT_EQUAL_FATAL(fread(orig, 1, (size_t)st.st_size, f), (size_t)st.st_size);
    fclose(f);
    int rounds = g_quick ? 50 : 300;
    for (int r = 0; r < rounds; r++) {
        /* Keep a prefix of whole or partial batches, then garbage. */
        size_t keep = (size_t)(rng() % (uint64_t)st.st_size);
        size_t junk = (size_t)(rng() % 4096);
        uint8_t *buf = malloc(keep + junk + 1);
        CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
        memcpy(buf, orig, keep);
        for (size_t i = 0; i < junk; i++)
            buf[keep + i] = (uint8_t)rng();
        if (junk >= BATCH_HDR_SIZE && rng() % 2) { /* a plausible header */
            memcpy(buf + keep, "VRB1", 4);
            put_le32(buf + keep + 4, (uint32_t)(BATCH_HDR_SIZE + rng() % 8192));
            buf[keep + 52] = 1;
            memset(buf + keep + 53, 0, 3);
        }
        f = fopen(path, "wb");
        CU_ASSERT_FATAL(f != NULL);
        CU_ASSERT_EQUAL(fwrite(buf, 1, keep + junk, f), keep + junk);
        fclose(f);
        free(buf);
        int rc = verify(dir, key_a, &rep);
        CU_ASSERT(rc != 0 || keep + junk == 0 || (junk == 0 && rep.end_offset > 0));
        CU_ASSERT(rc == 0 || rep.found);
    }
    free(orig);
    layout_free(&L);
    rm_tree(dir);

    /* A log whose offsets would run past 2^64 - 1: a finding, not an abort. */
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0755), 0);
    uint64_t base = UINT64_MAX - 1;
    struct ckpt anc = {.offset = base};
    CU_ASSERT_EQUAL_FATAL(ckpt_anchor_write(dir, &anc, NULL), 0);
    struct batch_builder bb;
    uint8_t zero[32] = {0}, chain[32];
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&bb, 1024), 0);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL_FATAL(batch_builder_add(&bb, NOW0, "k", 1, "v", 1, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(batch_builder_finish(&bb, NULL), 0);
    batch_set_base_offset(bb.buf, base);
    batch_chain_compute(zero, bb.buf, bb.len, chain);
    batch_set_chain(bb.buf, chain);
    seg_path(dir, base, path, sizeof path);
    f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_EQUAL(fwrite(bb.buf, 1, bb.len, f), bb.len);
    fclose(f);
    CU_ASSERT_EQUAL(verify(dir, NULL, &rep), VERITY_ECORRUPT);
    CU_ASSERT(rep.found);
    CU_ASSERT_EQUAL(rep.finding.offset, base);
    batch_builder_deinit(&bb);
    rm_tree(dir);
}

/* ---- (d) the CLI ---------------------------------------------------------------- */

/* Runs argv with stdout captured into out (NUL-terminated). Returns the exit
 * status, or -1 if it did not exit normally within 60 s (then it is killed). */
static int run_capture(char *const argv[], char *out, size_t cap)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(pfd[1], STDOUT_FILENO);
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO); /* usage text is not what we check */
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pfd[1]);
    size_t n = 0;
    time_t deadline = time(NULL) + 60;
    for (;;) {
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        int pr = poll(&p, 1, 200);
        if (pr > 0) {
            ssize_t r = read(pfd[0], out + n, cap - 1 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
            if (n == cap - 1)
                break;
        }
        if (time(NULL) > deadline) {
            kill(pid, SIGKILL);
            break;
        }
    }
    out[n] = '\0';
    close(pfd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_cli_verify_exit_codes_and_json(void)
{
    const char *bindir = getenv("VERITY_BIN_DIR");
    if (!bindir) {
        CU_FAIL("VERITY_BIN_DIR is not set");
        return;
    }
    char bin[600], out[1 << 16];
    snprintf(bin, sizeof bin, "%s/verity", bindir);
    char *clean_argv[] = {bin, "log", "verify", big.dir, "--pubkey", g_pub_path, "--json", NULL};
    int st = run_capture(clean_argv, out, sizeof out);
    CU_ASSERT_EQUAL(st, 0);
    json_error_t err;
    json_t *j = json_loads(out, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(json_is_true(json_object_get(j, "ok")));
    CU_ASSERT(json_is_null(json_object_get(j, "finding")));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(j, "end_offset")), (json_int_t)big.end_offset);
    CU_ASSERT(json_is_true(json_object_get(j, "origin_checked")));
    json_decref(j);

    /* Tamper one byte in the middle of a batch halfway through the log. */
    size_t i = big.n / 2;
    const struct bpos *p = &big.b[i];
    uint64_t pos = p->position + p->length / 2;
    flip_bit(big.dir, p->seg_base, pos, 5);
    st = run_capture(clean_argv, out, sizeof out);
    char *human_argv[] = {bin, "log", "verify", big.dir, "--pubkey", g_pub_path, NULL};
    char human[1 << 14];
    int st2 = run_capture(human_argv, human, sizeof human);
    flip_bit(big.dir, p->seg_base, pos, 5);
    CU_ASSERT_EQUAL(st, 1);
    CU_ASSERT_EQUAL(st2, 1);
    j = json_loads(out, 0, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT(json_is_false(json_object_get(j, "ok")));
    json_t *f = json_object_get(j, "finding");
    CU_ASSERT(json_is_object(f));
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(f, "offset")), (json_int_t)p->base_offset);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(f, "code")), "ECORRUPT");
    char name[32];
    seg_name(p->seg_base, name, sizeof name);
    CU_ASSERT_STRING_EQUAL(json_string_value(json_object_get(f, "segment")), name);
    CU_ASSERT_EQUAL(json_integer_value(json_object_get(f, "position")), (json_int_t)p->position);
    json_decref(j);
    char want[64];
    snprintf(want, sizeof want, "FAIL at offset %" PRIu64 " ", p->base_offset);
    CU_ASSERT_PTR_NOT_NULL(strstr(human, want));

    /* Usage errors exit 2. */
    char *bad_argv[] = {bin, "log", "verify", NULL};
    CU_ASSERT_EQUAL(run_capture(bad_argv, out, sizeof out), 2);
    char *bad_key[] = {bin, "log", "verify", big.dir, "--pubkey", "/nonexistent.pub", NULL};
    CU_ASSERT_EQUAL(run_capture(bad_key, out, sizeof out), 2);
}

/* ---- suite ------------------------------------------------------------------------ */

static int suite_init(void)
{
    const char *q = getenv("VERITY_TEST_QUICK");
    const char *s = getenv("VERITY_TEST_SEED");
    g_quick = q && *q == '1';
    g_seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    rng_s = g_seed * 0x9E3779B97F4A7C15ull | 1;
    printf("test_tamper: VERITY_TEST_SEED=%" PRIu64 "\n", g_seed);
    if (!mkdtemp(g_root))
        return -1;
    key_a = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    key_b = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!key_a || !key_b)
        return -1;
    snprintf(g_pub_path, sizeof g_pub_path, "%s/signer.pub", g_root);
    FILE *f = fopen(g_pub_path, "w");
    if (!f || PEM_write_PUBKEY(f, key_a) != 1)
        return -1;
    fclose(f);
    return 0;
}

static int suite_clean(void)
{
    layout_free(&big);
    EVP_PKEY_free(key_a);
    EVP_PKEY_free(key_b);
    rm_tree(g_root);
    return 0;
}

/* Writes the large log once, for the bit-flip and CLI tests: about 100 MB
 * in 16 MiB segments (40 MB in 8 MiB segments when quick). */
static void test_write_large_log(void)
{
    struct write_opts o = {.bytes = g_quick ? 40u << 20 : 100u << 20,
                           .segment_bytes = g_quick ? 8u << 20 : 16u << 20,
                           .checkpoint_records = 20000,
                           .records_per_batch = 64,
                           .value_max = 2000,
                           .key = key_a};
    write_log(subdir("big"), &o, &big);
    CU_ASSERT(big.total_bytes >= o.bytes);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"write_large_log", test_write_large_log},
        {"clean_log_verifies", test_clean_log_verifies},
        {"random_bit_flips_found_at_their_batch", test_random_bit_flips_found_at_their_batch},
        {"bit_flips_in_header_fields_and_checkpoints",
         test_bit_flips_in_header_fields_and_checkpoints},
        {"cli_verify_exit_codes_and_json", test_cli_verify_exit_codes_and_json},
        {"removed_batch_found_by_chain", test_removed_batch_found_by_chain},
        {"reordered_batches_found_by_chain", test_reordered_batches_found_by_chain},
        {"replaced_batch_found_by_chain", test_replaced_batch_found_by_chain},
        {"rechained_removal_found_by_checkpoint", test_rechained_removal_found_by_checkpoint},
        {"offset_gap_found_by_continuity", test_offset_gap_found_by_continuity},
        {"checkpoint_with_wrong_record_count_found", test_checkpoint_with_wrong_record_count_found},
        {"forged_checkpoint_payload_fails_signature",
         test_forged_checkpoint_payload_fails_signature},
        {"checkpoint_resigned_with_other_key_fails", test_checkpoint_resigned_with_other_key_fails},
        {"torn_tail_reported_then_recovered", test_torn_tail_reported_then_recovered},
        {"missing_segment_found", test_missing_segment_found},
        {"renamed_segment_found", test_renamed_segment_found},
        {"anchor_after_retention", test_anchor_after_retention},
        {"garbage_never_crashes_the_verifier", test_garbage_never_crashes_the_verifier},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("tamper", suite_init, suite_clean);
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
