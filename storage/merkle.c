/*
 * merkle: RFC 6962 hashing, the stored tree of a partition (tree.leaves,
 * tree.hashes, tree.state; layout and validity rule in merkle.h and
 * docs/FORMAT.md section 9), proof generation and the pure verifiers.
 *
 * Invariants of a writable tree: the hashes file holds exactly
 * mt_stored_count(size) hashes and the leaves file size * MT_LEAF_SIZE bytes
 * (checked after every append); frontier[l] is the stored hash of the last
 * complete subtree at level l whose index is even, for every l where bit l
 * of size is set. Every read is bounded by size, so a proof never reads past
 * what was appended.
 */
#include "storage/merkle.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "storage/batch.h"
#include "storage/crc32c.h"
#include "verity/errors.h"
#include "verity/verify.h"

#define STATE_MAGIC   "VTS1"
#define STATE_SIZE    48
#define PATH_MAX_TREE 4096

struct mtree {
    char *dir;
    const struct vio *io;
    bool read_only;
    bool stale;
    int fd_leaves;
    int fd_hashes;
    uint64_t size;                      /* leaves appended */
    uint64_t state_size;                /* size named by tree.state at open */
    uint8_t frontier[64][MT_HASH_SIZE]; /* see the file comment */
    /* Read-only shared mappings of the two files (vio_posix only), grown on
     * demand; reads past them fall back to pread. Appends go through pwrite,
     * which the page cache makes visible in the mapping. */
    const uint8_t *map[2]; /* 0: tree.leaves, 1: tree.hashes */
    size_t map_len[2];
    /* Proof caches (owner thread): blk[k] is the base offset of leaf
     * k * MT_TILE_WIDTH for every such leaf below size, so finding the leaf
     * of an offset is a search in memory and then in one run of 256 leaves
     * (19 KB of tree.leaves) instead of ~17 reads scattered over the file;
     * blk_bad when it could not be grown (then the plain search is used).
     * root_n/root: the last root computed (valid while root_n <= size). */
    uint64_t *blk;
    size_t blk_n, blk_cap;
    bool blk_bad;
    bool root_ok;
    uint64_t root_n;
    uint8_t root[MT_HASH_SIZE];
    /* background state sync (mt_sync_async), guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool thread_started;
    bool stop;
    bool req_pending; /* a write_state is queued or running */
    uint64_t req_size;
    uint8_t req_root[MT_HASH_SIZE];
    int async_err; /* first background failure */
};

/* ---- hashing ----------------------------------------------------------- */

/* SHA-256 fetched from the default provider once: EVP_sha256() makes every
 * EVP_DigestInit_ex look the algorithm up again (an implicit fetch, with
 * its lock), which with the EVP_MD_CTX allocation was ~0.3 us of the ~0.45
 * us each of a proof's ~35 hashes cost. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static void sha256_parts(const void *a, size_t alen, const void *b, size_t blen, const void *c,
                         size_t clen, uint8_t out[MT_HASH_SIZE])
{
    unsigned int n = 0;
    pthread_once(&sha256_once, sha256_fetch);
    const EVP_MD *md = sha256_md ? sha256_md : EVP_sha256();
    uint8_t buf[1 + MT_LEAF_SIZE + MT_HASH_SIZE];
    if (alen + blen + clen <= sizeof buf) {
        /* the hashes of a tree: one contiguous one-shot digest */
        if (alen)
            memcpy(buf, a, alen);
        if (blen)
            memcpy(buf + alen, b, blen);
        if (clen)
            memcpy(buf + alen + blen, c, clen);
        VERITY_VERIFY(EVP_Digest(buf, alen + blen + clen, out, &n, md, NULL) == 1 &&
                      n == MT_HASH_SIZE);
        return;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    VERITY_VERIFY(ctx != NULL);
    VERITY_VERIFY(EVP_DigestInit_ex(ctx, md, NULL) == 1);
    if (alen)
        VERITY_VERIFY(EVP_DigestUpdate(ctx, a, alen) == 1);
    if (blen)
        VERITY_VERIFY(EVP_DigestUpdate(ctx, b, blen) == 1);
    if (clen)
        VERITY_VERIFY(EVP_DigestUpdate(ctx, c, clen) == 1);
    VERITY_VERIFY(EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == MT_HASH_SIZE);
    EVP_MD_CTX_free(ctx);
}

void mt_leaf_hash(const uint8_t *data, size_t len, uint8_t out[MT_HASH_SIZE])
{
    static const uint8_t zero = 0x00;
    sha256_parts(&zero, 1, data, len, NULL, 0, out);
}

void mt_node_hash(const uint8_t left[MT_HASH_SIZE], const uint8_t right[MT_HASH_SIZE],
                  uint8_t out[MT_HASH_SIZE])
{
    static const uint8_t one = 0x01;
    sha256_parts(&one, 1, left, MT_HASH_SIZE, right, MT_HASH_SIZE, out);
}

void mt_empty_root(uint8_t out[MT_HASH_SIZE])
{
    sha256_parts(NULL, 0, NULL, 0, NULL, 0, out);
}

void mt_leaf_encode(const struct mt_leaf *l, uint8_t out[MT_LEAF_SIZE])
{
    VERITY_VERIFY(l->record_count > 0);
    put_le64(out, l->base_offset);
    put_le32(out + 8, l->record_count);
    memcpy(out + 12, l->prev_chain, MT_HASH_SIZE);
    memcpy(out + 44, l->chain, MT_HASH_SIZE);
}

int mt_leaf_decode(const uint8_t *buf, size_t len, struct mt_leaf *out)
{
    if (len != MT_LEAF_SIZE)
        return VERITY_ECORRUPT;
    out->base_offset = get_le64(buf);
    out->record_count = get_le32(buf + 8);
    memcpy(out->prev_chain, buf + 12, MT_HASH_SIZE);
    memcpy(out->chain, buf + 44, MT_HASH_SIZE);
    if (out->record_count == 0 || out->base_offset > UINT64_MAX - out->record_count)
        return VERITY_ECORRUPT;
    return 0;
}

int mt_leaf_check_batch(const struct mt_leaf *l, const uint8_t *batch, size_t len)
{
    struct batch_hdr h;
    uint8_t chain[MT_HASH_SIZE];
    if (batch_hdr_decode(batch, len, &h) || h.length != len)
        return VERITY_ECHAIN;
    if (h.base_offset != l->base_offset || h.record_count != l->record_count ||
        memcmp(h.chain, l->chain, MT_HASH_SIZE) != 0)
        return VERITY_ECHAIN;
    batch_chain_compute(l->prev_chain, batch, len, chain);
    return memcmp(chain, l->chain, MT_HASH_SIZE) == 0 ? 0 : VERITY_ECHAIN;
}

/* ---- stored hash layout ------------------------------------------------ */

uint64_t mt_stored_index(int level, uint64_t n)
{
    for (int l = level; l > 0; l--)
        n = 2 * n + 1;
    uint64_t i = 0;
    for (; n > 0; n >>= 1)
        i += n;
    return i + (uint64_t)level;
}

uint64_t mt_stored_count(uint64_t n)
{
    if (n == 0)
        return 0;
    uint64_t c = mt_stored_index(0, n - 1) + 1;
    for (uint64_t i = n - 1; i & 1; i >>= 1)
        c++;
    return c;
}

/* Largest power of two strictly below n (n >= 2). */
static uint64_t split_point(uint64_t n)
{
    VERITY_VERIFY(n >= 2);
    uint64_t k = 1;
    while (k << 1 < n)
        k <<= 1;
    return k;
}

/* ---- verifiers ----------------------------------------------------------- */

int mt_verify_inclusion(const uint8_t leaf_hash[MT_HASH_SIZE], uint64_t index, uint64_t n,
                        const uint8_t (*path)[MT_HASH_SIZE], size_t npath,
                        const uint8_t root[MT_HASH_SIZE])
{
    if (index >= n)
        return VERITY_EINVAL;
    if (npath > MT_PROOF_MAX)
        return VERITY_ECHAIN;
    uint64_t fn = index, sn = n - 1;
    uint8_t r[MT_HASH_SIZE];
    memcpy(r, leaf_hash, MT_HASH_SIZE);
    for (size_t i = 0; i < npath; i++) {
        if (sn == 0)
            return VERITY_ECHAIN;
        if ((fn & 1) || fn == sn) {
            mt_node_hash(path[i], r, r);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            mt_node_hash(r, path[i], r);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0 || memcmp(r, root, MT_HASH_SIZE) != 0)
        return VERITY_ECHAIN;
    return 0;
}

int mt_verify_consistency(uint64_t m, uint64_t n, const uint8_t old_root[MT_HASH_SIZE],
                          const uint8_t new_root[MT_HASH_SIZE], const uint8_t (*path)[MT_HASH_SIZE],
                          size_t npath)
{
    if (m > n)
        return VERITY_EINVAL;
    if (npath > MT_PROOF_MAX)
        return VERITY_ECHAIN;
    if (m == n)
        return npath == 0 && memcmp(old_root, new_root, MT_HASH_SIZE) == 0 ? 0 : VERITY_ECHAIN;
    if (m == 0)
        return npath == 0 ? 0 : VERITY_ECHAIN;
    if (npath == 0)
        return VERITY_ECHAIN;
    size_t i = 0;
    uint8_t fr[MT_HASH_SIZE], sr[MT_HASH_SIZE];
    if ((m & (m - 1)) == 0) {
        /* old_root is the first node of the proof (RFC 9162 step 1) */
        memcpy(fr, old_root, MT_HASH_SIZE);
    } else {
        memcpy(fr, path[0], MT_HASH_SIZE);
        i = 1;
    }
    memcpy(sr, fr, MT_HASH_SIZE);
    uint64_t fn = m - 1, sn = n - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    for (; i < npath; i++) {
        if (sn == 0)
            return VERITY_ECHAIN;
        if ((fn & 1) || fn == sn) {
            mt_node_hash(path[i], fr, fr);
            mt_node_hash(path[i], sr, sr);
            while (!(fn & 1) && fn != 0) {
                fn >>= 1;
                sn >>= 1;
            }
        } else {
            mt_node_hash(sr, path[i], sr);
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0 || memcmp(fr, old_root, MT_HASH_SIZE) != 0 ||
        memcmp(sr, new_root, MT_HASH_SIZE) != 0)
        return VERITY_ECHAIN;
    return 0;
}

/* ---- the stored tree --------------------------------------------------- */

static bool tree_ok(const struct mtree *t)
{
    return t && t->dir && (t->read_only || (t->fd_leaves >= 0 && t->fd_hashes >= 0));
}

static void tree_path(const struct mtree *t, const char *name, char *out)
{
    snprintf(out, PATH_MAX_TREE, "%s/%s", t->dir, name);
}

uint64_t mt_size(const struct mtree *t)
{
    return t->size;
}
uint64_t mt_state_size(const struct mtree *t)
{
    return __atomic_load_n(&t->state_size, __ATOMIC_ACQUIRE);
}
bool mt_stale(const struct mtree *t)
{
    return t->stale;
}
void mt_set_stale(struct mtree *t)
{
    t->stale = true;
}

/* Reads len bytes at off of file w (0 leaves, 1 hashes), which the caller
 * knows were written: from the mapping when there is one, else pread. A
 * proof then costs memory reads, not O(log n) system calls. */
static int tree_read(struct mtree *t, int w, void *out, size_t len, uint64_t off)
{
    int fd = w ? t->fd_hashes : t->fd_leaves;
    if (t->io == &vio_posix && off + len > t->map_len[w]) {
        size_t want = (size_t)(off + len) * 2;
        want = (want + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
        if (t->map[w])
            munmap((void *)t->map[w], t->map_len[w]);
        void *m = mmap(NULL, want, PROT_READ, MAP_SHARED, fd, 0);
        t->map[w] = m == MAP_FAILED ? NULL : m;
        t->map_len[w] = m == MAP_FAILED ? 0 : want;
    }
    if (t->map[w] && off + len <= t->map_len[w]) {
        memcpy(out, t->map[w] + off, len);
        return 0;
    }
    return vio_pread_all(t->io, fd, out, len, (off_t)off);
}

int mt_stored_hash(struct mtree *t, int level, uint64_t idx, uint8_t out[MT_HASH_SIZE])
{
    if (level < 0 || level > 62 || idx >= (t->size >> level))
        return VERITY_EOFFSET;
    uint64_t i = mt_stored_index(level, idx);
    VERITY_VERIFY(i < mt_stored_count(t->size));
    return tree_read(t, 1, out, MT_HASH_SIZE, i * MT_HASH_SIZE);
}

int mt_leaf_get(struct mtree *t, uint64_t index, uint8_t out[MT_LEAF_SIZE])
{
    if (index >= t->size)
        return VERITY_EOFFSET;
    return tree_read(t, 0, out, MT_LEAF_SIZE, index * MT_LEAF_SIZE);
}

/* MTH(D[lo:hi]) for lo aligned to the largest power of two <= hi - lo, as
 * every range produced by the RFC 6962 recursions is: complete subtrees come
 * from one stored hash, the rest from O(log n) of them. */
static int range_hash(struct mtree *t, uint64_t lo, uint64_t hi, uint8_t out[MT_HASH_SIZE])
{
    VERITY_VERIFY(lo < hi && hi <= t->size);
    uint64_t w = hi - lo;
    if ((w & (w - 1)) == 0) {
        int level = __builtin_ctzll(w);
        VERITY_VERIFY(lo % w == 0);
        return mt_stored_hash(t, level, lo >> level, out);
    }
    uint64_t k = split_point(w);
    uint8_t l[MT_HASH_SIZE], r[MT_HASH_SIZE];
    int rc;
    if ((rc = range_hash(t, lo, lo + k, l)) || (rc = range_hash(t, lo + k, hi, r)))
        return rc;
    mt_node_hash(l, r, out);
    return 0;
}

int mt_root(struct mtree *t, uint64_t n, uint8_t out[MT_HASH_SIZE])
{
    if (n > t->size)
        return VERITY_EOFFSET;
    if (n == 0) {
        mt_empty_root(out);
        return 0;
    }
    if (t->root_ok && t->root_n == n) {
        memcpy(out, t->root, MT_HASH_SIZE);
        return 0;
    }
    int rc = range_hash(t, 0, n, out);
    if (!rc) {
        t->root_ok = true;
        t->root_n = n;
        memcpy(t->root, out, MT_HASH_SIZE);
    }
    return rc;
}

/* Records leaf index's base offset in blk when index starts a run. */
static void blk_note(struct mtree *t, uint64_t index, uint64_t base)
{
    if (t->blk_bad || index % MT_TILE_WIDTH != 0)
        return;
    if (index / MT_TILE_WIDTH != t->blk_n) {
        t->blk_bad = true; /* not in step: never trust it again */
        return;
    }
    if (t->blk_n == t->blk_cap) {
        size_t cap = t->blk_cap ? t->blk_cap * 2 : 256;
        uint64_t *p = realloc(t->blk, cap * sizeof *p);
        if (!p) {
            t->blk_bad = true;
            return;
        }
        t->blk = p;
        t->blk_cap = cap;
    }
    t->blk[t->blk_n++] = base;
}

/* Builds blk for the leaves below size (open). */
static void blk_build(struct mtree *t)
{
    uint8_t buf[MT_LEAF_SIZE];
    t->blk_n = 0;
    for (uint64_t i = 0; i < t->size && !t->blk_bad; i += MT_TILE_WIDTH) {
        if (mt_leaf_get(t, i, buf))
            t->blk_bad = true;
        else
            blk_note(t, i, get_le64(buf));
    }
}

int mt_find_offset(struct mtree *t, uint64_t n, uint64_t offset, uint64_t *index_out)
{
    uint8_t buf[MT_LEAF_SIZE];
    struct mt_leaf l;
    uint64_t lo = 0, hi = n;
    int rc;
    if (n > t->size)
        return VERITY_EOFFSET;
    if (!t->blk_bad && n > 0) {
        /* the run of leaves that holds offset, from memory */
        VERITY_VERIFY(t->blk_n == (t->size + MT_TILE_WIDTH - 1) / MT_TILE_WIDTH);
        size_t blo = 0, bhi = (size_t)((n + MT_TILE_WIDTH - 1) / MT_TILE_WIDTH);
        while (blo < bhi) {
            size_t mid = blo + (bhi - blo) / 2;
            if (t->blk[mid] <= offset)
                blo = mid + 1;
            else
                bhi = mid;
        }
        if (blo == 0)
            return VERITY_EOFFSET;
        lo = (uint64_t)(blo - 1) * MT_TILE_WIDTH;
        hi = lo + MT_TILE_WIDTH < n ? lo + MT_TILE_WIDTH : n;
        lo++; /* leaf lo - 1 starts at or before offset */
    }
    /* first leaf whose base_offset > offset, then step back one */
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if ((rc = mt_leaf_get(t, mid, buf)) || (rc = mt_leaf_decode(buf, sizeof buf, &l)))
            return rc;
        if (l.base_offset <= offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return VERITY_EOFFSET;
    if ((rc = mt_leaf_get(t, lo - 1, buf)) || (rc = mt_leaf_decode(buf, sizeof buf, &l)))
        return rc;
    if (offset >= l.base_offset + l.record_count)
        return VERITY_EOFFSET;
    *index_out = lo - 1;
    return 0;
}

/* PATH(m, D[lo:hi]) appended deepest first. */
static int inclusion_path(struct mtree *t, uint64_t m, uint64_t lo, uint64_t hi,
                          uint8_t (*path)[MT_HASH_SIZE], size_t *np)
{
    if (hi - lo == 1)
        return 0;
    uint64_t k = split_point(hi - lo);
    int rc;
    if (m < k) {
        if ((rc = inclusion_path(t, m, lo, lo + k, path, np)))
            return rc;
        rc = range_hash(t, lo + k, hi, path[*np]);
    } else {
        if ((rc = inclusion_path(t, m - k, lo + k, hi, path, np)))
            return rc;
        rc = range_hash(t, lo, lo + k, path[*np]);
    }
    if (rc)
        return rc;
    VERITY_VERIFY(*np < MT_PROOF_MAX);
    (*np)++;
    return 0;
}

int mt_prove_inclusion(struct mtree *t, uint64_t index, uint64_t n, uint8_t (*path)[MT_HASH_SIZE],
                       size_t *npath)
{
    *npath = 0;
    if (n > t->size || index >= n)
        return VERITY_EOFFSET;
    return inclusion_path(t, index, 0, n, path, npath);
}

/* SUBPROOF(m, D[lo:hi], b) appended in RFC 6962 order. */
static int consistency_path(struct mtree *t, uint64_t m, uint64_t lo, uint64_t hi, bool b,
                            uint8_t (*path)[MT_HASH_SIZE], size_t *np)
{
    int rc;
    uint64_t n = hi - lo;
    if (m == n) {
        if (b)
            return 0;
        VERITY_VERIFY(*np < MT_PROOF_MAX);
        if ((rc = range_hash(t, lo, hi, path[*np])))
            return rc;
        (*np)++;
        return 0;
    }
    uint64_t k = split_point(n);
    if (m <= k) {
        if ((rc = consistency_path(t, m, lo, lo + k, b, path, np)))
            return rc;
        rc = range_hash(t, lo + k, hi, path[*np]);
    } else {
        if ((rc = consistency_path(t, m - k, lo + k, hi, false, path, np)))
            return rc;
        rc = range_hash(t, lo, lo + k, path[*np]);
    }
    if (rc)
        return rc;
    VERITY_VERIFY(*np < MT_PROOF_MAX);
    (*np)++;
    return 0;
}

int mt_prove_consistency(struct mtree *t, uint64_t m, uint64_t n, uint8_t (*path)[MT_HASH_SIZE],
                         size_t *npath)
{
    *npath = 0;
    if (n > t->size || m > n)
        return VERITY_EOFFSET;
    if (m == 0 || m == n)
        return 0;
    return consistency_path(t, m, 0, n, true, path, npath);
}

/* ---- open, append, sync ------------------------------------------------ */

static int load_frontier(struct mtree *t)
{
    int rc;
    for (int l = 0; l < 63; l++) {
        if (!((t->size >> l) & 1))
            continue;
        if ((rc = mt_stored_hash(t, l, (t->size >> l) - 1, t->frontier[l])))
            return rc;
    }
    return 0;
}

static int read_state(struct mtree *t, uint64_t *size, uint8_t root[MT_HASH_SIZE])
{
    char path[PATH_MAX_TREE];
    uint8_t buf[STATE_SIZE];
    tree_path(t, "tree.state", path);
    int fd = t->io->open(t->io->ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd == -ENOENT ? VERITY_ENOTFOUND : fd;
    int rc = vio_pread_all(t->io, fd, buf, sizeof buf, 0);
    (void)t->io->close(t->io->ctx, fd);
    if (rc)
        return VERITY_ECORRUPT;
    if (memcmp(buf, STATE_MAGIC, 4) != 0 || get_le32(buf + 44) != crc32c(0, buf, 44))
        return VERITY_ECORRUPT;
    *size = get_le64(buf + 4);
    memcpy(root, buf + 12, MT_HASH_SIZE);
    return 0;
}

static int file_size(struct mtree *t, int fd, uint64_t *out)
{
    struct stat st;
    int rc = t->io->fstat(t->io->ctx, fd, &st);
    if (rc)
        return rc;
    *out = (uint64_t)st.st_size;
    return 0;
}

/* Largest size whose leaves and hashes both fit in the files. */
static uint64_t complete_size(uint64_t leaves_bytes, uint64_t hashes_bytes)
{
    uint64_t n = leaves_bytes / MT_LEAF_SIZE;
    uint64_t h = hashes_bytes / MT_HASH_SIZE;
    while (n > 0 && mt_stored_count(n) > h)
        n--;
    return n;
}

static int cut_files(struct mtree *t, uint64_t n)
{
    int rc;
    if ((rc = t->io->ftruncate(t->io->ctx, t->fd_leaves, (off_t)(n * MT_LEAF_SIZE))))
        return rc;
    return t->io->ftruncate(t->io->ctx, t->fd_hashes, (off_t)(mt_stored_count(n) * MT_HASH_SIZE));
}

int mt_open(const char *dir, const struct vio *io, bool read_only, struct mtree **out)
{
    char path[PATH_MAX_TREE];
    struct mtree *t = calloc(1, sizeof *t);
    int rc;
    if (!t)
        return -ENOMEM;
    t->io = io ? io : &vio_posix;
    t->read_only = read_only;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->fd_leaves = t->fd_hashes = -1;
    if (!(t->dir = strdup(dir))) {
        rc = -ENOMEM;
        goto fail;
    }
    int flags = read_only ? O_RDONLY : O_RDWR | O_CREAT;
    tree_path(t, "tree.leaves", path);
    if ((t->fd_leaves = t->io->open(t->io->ctx, path, flags, 0644)) < 0) {
        rc = t->fd_leaves == -ENOENT ? VERITY_ENOTFOUND : t->fd_leaves;
        t->fd_leaves = -1;
        goto fail;
    }
    tree_path(t, "tree.hashes", path);
    if ((t->fd_hashes = t->io->open(t->io->ctx, path, flags, 0644)) < 0) {
        rc = t->fd_hashes == -ENOENT ? VERITY_ENOTFOUND : t->fd_hashes;
        t->fd_hashes = -1;
        goto fail;
    }
    uint64_t lb, hb, ssize = 0;
    uint8_t sroot[MT_HASH_SIZE], root[MT_HASH_SIZE];
    if ((rc = file_size(t, t->fd_leaves, &lb)) || (rc = file_size(t, t->fd_hashes, &hb)))
        goto fail;
    uint64_t avail = complete_size(lb, hb);
    int src = read_state(t, &ssize, sroot);
    if (src == 0 && ssize <= avail) {
        t->state_size = ssize;
        t->size = ssize;
        if ((rc = mt_root(t, ssize, root)))
            goto fail;
        if (memcmp(root, sroot, MT_HASH_SIZE) != 0)
            t->size = t->state_size = 0; /* hashes disagree with the state: rebuild */
    }
    if (read_only) {
        t->size = avail;
    } else {
        /* everything past the synced size is recomputed from the log */
        if ((rc = cut_files(t, t->size)))
            goto fail;
        if ((rc = load_frontier(t)))
            goto fail;
    }
    t->root_ok = false; /* computed for a size that may have been cut */
    blk_build(t);
    VERITY_VERIFY(tree_ok(t));
    *out = t;
    return 0;
fail:
    mt_close(t);
    return rc;
}

void mt_close(struct mtree *t)
{
    if (!t)
        return;
    if (t->thread_started) {
        pthread_mutex_lock(&t->mu);
        t->stop = true;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    for (int w = 0; w < 2; w++)
        if (t->map[w])
            munmap((void *)t->map[w], t->map_len[w]);
    if (t->fd_leaves >= 0)
        (void)t->io->close(t->io->ctx, t->fd_leaves);
    if (t->fd_hashes >= 0)
        (void)t->io->close(t->io->ctx, t->fd_hashes);
    free(t->blk);
    free(t->dir);
    free(t);
}

int mt_append(struct mtree *t, const uint8_t leaf[MT_LEAF_SIZE])
{
    uint8_t hashes[64][MT_HASH_SIZE];
    int rc;
    VERITY_VERIFY(tree_ok(t) && !t->read_only);
    if (t->stale)
        return VERITY_EREADONLY;
    uint64_t n = t->size;
    size_t k = 0;
    mt_leaf_hash(leaf, MT_LEAF_SIZE, hashes[k++]);
    int level = 0;
    for (uint64_t m = n; m & 1; m >>= 1, level++) {
        mt_node_hash(t->frontier[level], hashes[k - 1], hashes[k]);
        k++;
    }
    uint64_t hpos = mt_stored_count(n);
    VERITY_VERIFY(hpos + k == mt_stored_count(n + 1));
    rc =
        vio_pwrite_all(t->io, t->fd_hashes, hashes, k * MT_HASH_SIZE, (off_t)(hpos * MT_HASH_SIZE));
    if (!rc)
        rc = vio_pwrite_all(t->io, t->fd_leaves, leaf, MT_LEAF_SIZE, (off_t)(n * MT_LEAF_SIZE));
    if (rc) {
        if (cut_files(t, n))
            t->stale = true;
        return rc;
    }
    memcpy(t->frontier[level], hashes[k - 1], MT_HASH_SIZE);
    t->size = n + 1;
    blk_note(t, n, get_le64(leaf));
    return 0;
}

int mt_truncate(struct mtree *t, uint64_t n)
{
    int rc;
    VERITY_VERIFY(!t->read_only);
    if (n >= t->size)
        return 0;
    if ((rc = cut_files(t, n)))
        return rc;
    t->size = n;
    if (t->state_size > n)
        t->state_size = n;
    if (t->root_n > n)
        t->root_ok = false;
    if (t->blk_n > (n + MT_TILE_WIDTH - 1) / MT_TILE_WIDTH)
        t->blk_n = (size_t)((n + MT_TILE_WIDTH - 1) / MT_TILE_WIDTH);
    return load_frontier(t);
}

/* fdatasyncs both files, then replaces tree.state with (size, root). Only
 * uses fds and paths, so the background thread may run it while the owner
 * appends: everything below size was written before it started. */
static int write_state(struct mtree *t, uint64_t size, const uint8_t root[MT_HASH_SIZE])
{
    char path[PATH_MAX_TREE], tmp[PATH_MAX_TREE];
    uint8_t buf[STATE_SIZE];
    int rc, fd = -1;
    if ((rc = t->io->fdatasync(t->io->ctx, t->fd_hashes)) ||
        (rc = t->io->fdatasync(t->io->ctx, t->fd_leaves)))
        return rc;
    memcpy(buf, STATE_MAGIC, 4);
    put_le64(buf + 4, size);
    memcpy(buf + 12, root, MT_HASH_SIZE);
    put_le32(buf + 44, crc32c(0, buf, 44));
    tree_path(t, "tree.state.tmp", tmp);
    tree_path(t, "tree.state", path);
    if ((fd = t->io->open(t->io->ctx, tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0)
        return fd;
    rc = vio_pwrite_all(t->io, fd, buf, sizeof buf, 0);
    if (!rc)
        rc = t->io->fdatasync(t->io->ctx, fd);
    int crc = t->io->close(t->io->ctx, fd);
    if (!rc)
        rc = crc;
    if (!rc)
        rc = t->io->rename(t->io->ctx, tmp, path);
    if (!rc)
        rc = vio_fsync_dir(t->io, t->dir);
    return rc;
}

static void *sync_thread(void *arg)
{
    struct mtree *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        while (!t->req_pending && !t->stop)
            pthread_cond_wait(&t->cv, &t->mu);
        if (!t->req_pending && t->stop)
            break;
        uint64_t size = t->req_size;
        uint8_t root[MT_HASH_SIZE];
        memcpy(root, t->req_root, MT_HASH_SIZE);
        pthread_mutex_unlock(&t->mu);
        int rc = write_state(t, size, root);
        pthread_mutex_lock(&t->mu);
        if (rc)
            t->async_err = rc;
        else
            __atomic_store_n(&t->state_size, size, __ATOMIC_RELEASE);
        t->req_pending = false;
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* Waits until the background thread has nothing in flight. */
static void sync_idle(struct mtree *t)
{
    if (!t->thread_started)
        return;
    pthread_mutex_lock(&t->mu);
    while (t->req_pending)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

int mt_sync(struct mtree *t)
{
    uint8_t root[MT_HASH_SIZE];
    int rc;
    VERITY_VERIFY(tree_ok(t) && !t->read_only);
    if (t->stale)
        return VERITY_EREADONLY;
    sync_idle(t);
    if ((rc = mt_root(t, t->size, root)) || (rc = write_state(t, t->size, root)))
        return rc;
    __atomic_store_n(&t->state_size, t->size, __ATOMIC_RELEASE);
    return 0;
}

int mt_sync_async(struct mtree *t)
{
    uint8_t root[MT_HASH_SIZE];
    int rc;
    VERITY_VERIFY(tree_ok(t) && !t->read_only);
    if (t->stale)
        return VERITY_EREADONLY;
    if (!t->thread_started) {
        if ((rc = -pthread_create(&t->thread, NULL, sync_thread, t)))
            return rc;
        t->thread_started = true;
    }
    if ((rc = mt_root(t, t->size, root)))
        return rc;
    pthread_mutex_lock(&t->mu);
    rc = t->async_err;
    if (!rc && !t->req_pending) {
        t->req_size = t->size;
        memcpy(t->req_root, root, MT_HASH_SIZE);
        t->req_pending = true;
        pthread_cond_signal(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}
