/*
 * Offline verifier (see verify.h). Reads a partition directory without the
 * writer's code and checks, for every batch in order:
 *
 *   1. the header decodes and the batch lies wholly in its segment (a batch
 *      cut short at the very end of the last segment is a torn tail);
 *   2. batch_validate: CRC32C and every record;
 *   3. base_offset == the previous batch's base_offset + record_count, and
 *      each segment's file name == the offset its first batch must have;
 *   4. for a checkpoint control batch: the payload decodes and its signature
 *      verifies (with the trusted key when one is given) -- checked before
 *      the chain so a forged checkpoint is named as such;
 *   5. chain_hash == SHA-256(prev_chain || batch[0,16) || batch[48,len)),
 *      where prev_chain starts as 32 zero bytes for a log that starts at
 *      offset 0, or as the chain in <dir>/anchor (whose offset must equal the
 *      oldest segment's base and whose signature must verify);
 *   6. for a checkpoint: offset == its batch's base_offset, chain == the
 *      chain of the batch before it, record_count == data records below it.
 *
 * Recovery control batches are counted and listed. The run stops at the
 * first finding and names the offset the bad batch should have had, the
 * segment file and the byte position.
 *
 * Invariants: expected (the next offset) only grows, by each valid batch's
 * record_count; prev_chain is always the chain of the last batch that passed
 * every check (or the starting chain).
 */
#include "storage/verify.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/batch.h"
#include "storage/checkpoint.h"
#include "verity/errors.h"
#include "verity/limits.h"
#include "verity/verify.h"

#define SEGMENT_DIGITS 20
#define PROGRESS_EVERY_BYTES (64u << 20)

_Static_assert(VERIFY_READ_BUFFER >= VERITY_BATCH_BYTES_MAX + BATCH_HDR_SIZE,
               "the read buffer must hold the largest batch batch_hdr_decode accepts");
_Static_assert(SEGMENT_DIGITS + 4 < VERIFY_SEGMENT_NAME_MAX, "segment name buffer");

/* ---- segment listing ----------------------------------------------------- */

/* Parses "<20 digits>.log"; false for any other name or a value past 2^64-1. */
static bool segment_name_parse(const char *name, uint64_t *base)
{
    if (strlen(name) != SEGMENT_DIGITS + 4 || strcmp(name + SEGMENT_DIGITS, ".log") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < SEGMENT_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *base = v;
    return true;
}

static int segment_cmp(const void *a, const void *b)
{
    const struct verify_segment *x = a, *y = b;
    return x->base_offset < y->base_offset ? -1 : x->base_offset > y->base_offset;
}

int verify_list_segments(const char *dir, struct verify_segment **out, size_t *n_out)
{
    struct verify_segment *segs = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        uint64_t base;
        struct stat st;
        if (!segment_name_parse(de->d_name, &base))
            continue;
        if (fstatat(dirfd(d), de->d_name, &st, 0) != 0) {
            rc = -errno;
            goto out;
        }
        if (!S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct verify_segment *p = realloc(segs, ncap * sizeof *segs);
            if (!p) {
                rc = -ENOMEM;
                goto out;
            }
            segs = p;
            cap = ncap;
        }
        segs[n].base_offset = base;
        segs[n].size = (uint64_t)st.st_size;
        memcpy(segs[n].name, de->d_name, SEGMENT_DIGITS + 5);
        n++;
        errno = 0;
    }
    if (errno)
        rc = -errno;
out:
    closedir(d);
    if (rc) {
        free(segs);
        return rc;
    }
    if (n)
        qsort(segs, n, sizeof *segs, segment_cmp);
    for (size_t i = 1; i < n; i++)
        VERITY_VERIFY(segs[i - 1].base_offset < segs[i].base_offset);
    *out = segs;
    *n_out = n;
    return 0;
}

/* ---- sequential reader --------------------------------------------------- */

int verify_reader_init(struct verify_reader *r, const struct vio *io)
{
    memset(r, 0, sizeof *r);
    r->io = io ? io : &vio_posix;
    r->fd = -1;
    r->buf = malloc(VERIFY_READ_BUFFER);
    return r->buf ? 0 : -ENOMEM;
}

static void reader_close_fd(struct verify_reader *r)
{
    if (r->fd >= 0)
        (void)r->io->close(r->io->ctx, r->fd); /* read-only file: nothing to lose */
    r->fd = -1;
}

void verify_reader_deinit(struct verify_reader *r)
{
    if (!r->buf)
        return;
    reader_close_fd(r);
    free(r->buf);
    r->buf = NULL;
}

int verify_reader_open(struct verify_reader *r, const char *dir, const struct verify_segment *seg)
{
    char path[4096];
    struct stat st;
    reader_close_fd(r);
    r->start = r->end = 0;
    r->file_pos = r->file_size = 0;
    r->torn = false;
    r->zero_tail = 0;
    int n = snprintf(path, sizeof path, "%s/%s", dir, seg->name);
    if (n < 0 || (size_t)n >= sizeof path)
        return -ENAMETOOLONG;
    int fd = r->io->open(r->io->ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    int rc = r->io->fstat(r->io->ctx, fd, &st);
    if (rc) {
        (void)r->io->close(r->io->ctx, fd);
        return rc;
    }
    r->fd = fd;
    /* A hint for the kernel's read-ahead; harmless if fd is not a real file. */
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    /* A live log may grow while we read; we verify what existed at open. */
    r->file_size = (uint64_t)st.st_size;
    return 0;
}

/* Makes at least want bytes readable at buf[start] if the file still has
 * them, reading as much as fits so that reads stay large. 0 or -errno. */
static int reader_fill(struct verify_reader *r, size_t want)
{
    VERITY_VERIFY(want <= VERIFY_READ_BUFFER && r->start <= r->end);
    if (r->end - r->start >= want)
        return 0;
    memmove(r->buf, r->buf + r->start, r->end - r->start);
    r->end -= r->start;
    r->start = 0;
    while (r->end < want && r->file_pos < r->file_size) {
        size_t room = VERIFY_READ_BUFFER - r->end;
        uint64_t left = r->file_size - r->file_pos;
        size_t n = left < room ? (size_t)left : room;
        ssize_t got = r->io->pread(r->io->ctx, r->fd, r->buf + r->end, n, (off_t)r->file_pos);
        if (got == -EINTR)
            continue;
        if (got < 0)
            return (int)got;
        if (got == 0) { /* the file shrank under us: treat as its end */
            r->file_size = r->file_pos;
            break;
        }
        r->end += (size_t)got;
        r->file_pos += (uint64_t)got;
    }
    VERITY_VERIFY(r->end <= VERIFY_READ_BUFFER);
    return 0;
}

/* True when every byte from buf[start] to the end of the file is zero.
 * Reads past the buffer with its own small reads; consumes nothing. */
static bool rest_is_zero(struct verify_reader *r)
{
    static const uint8_t zero[4096];
    for (size_t i = r->start; i < r->end; i++)
        if (r->buf[i])
            return false;
    uint8_t tmp[4096];
    for (uint64_t pos = r->file_pos; pos < r->file_size;) {
        size_t n = r->file_size - pos < sizeof tmp ? (size_t)(r->file_size - pos) : sizeof tmp;
        ssize_t got = r->io->pread(r->io->ctx, r->fd, tmp, n, (off_t)pos);
        if (got == -EINTR)
            continue;
        if (got <= 0)
            return got == 0; /* shrank under us: its end; a read error is not zero */
        if (memcmp(tmp, zero, (size_t)got) != 0)
            return false;
        pos += (uint64_t)got;
    }
    return true;
}

int verify_reader_next(struct verify_reader *r, const uint8_t **batch, size_t *len,
                       uint64_t *position)
{
    struct batch_hdr h;
    VERITY_VERIFY(r->fd >= 0);
    *position = r->file_pos - (r->end - r->start);
    int rc = reader_fill(r, BATCH_HDR_SIZE);
    if (rc)
        return rc;
    size_t avail = r->end - r->start;
    if (avail == 0)
        return 0;
    size_t head = avail < BATCH_HDR_SIZE ? avail : BATCH_HDR_SIZE;
    bool zero_head = true;
    for (size_t i = 0; i < head && zero_head; i++)
        zero_head = r->buf[r->start + i] == 0;
    if (zero_head && rest_is_zero(r)) {
        r->zero_tail = r->file_size - *position;
        r->start = r->end;
        r->file_pos = r->file_size;
        return 0;
    }
    if (avail < BATCH_HDR_SIZE) {
        r->torn = true;
        return VERITY_ECORRUPT;
    }
    if ((rc = batch_hdr_decode(r->buf + r->start, avail, &h)))
        return rc;
    if ((rc = reader_fill(r, h.length)))
        return rc;
    if (r->end - r->start < h.length) {
        r->torn = true;
        return VERITY_ECORRUPT;
    }
    *batch = r->buf + r->start;
    *len = h.length;
    r->start += h.length;
    return 1;
}

/* ---- verifier ------------------------------------------------------------ */

struct vstate {
    const char *dir;
    EVP_PKEY *pub;                   /* borrowed; NULL = embedded keys */
    struct verify_report *rep;
    uint8_t prev_chain[32];
    uint64_t expected;               /* offset the next batch must start at */
    uint64_t data_below;             /* data records below expected, anchor included */
    const char *segment;             /* current segment name */
    verify_progress_fn progress;
    void *progress_arg;
    uint64_t bytes_total;
    uint64_t bytes_done;
    uint64_t progress_last;
};

static int finding(struct vstate *st, int code, uint64_t position, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the first finding and returns its code. */
static int finding(struct vstate *st, int code, uint64_t position, const char *fmt, ...)
{
    struct verify_report *rep = st->rep;
    VERITY_VERIFY(code < 0 && !rep->found);
    rep->found = true;
    rep->finding.code = code;
    rep->finding.offset = st->expected;
    rep->finding.position = position;
    snprintf(rep->finding.segment, sizeof rep->finding.segment, "%s",
             st->segment ? st->segment : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rep->finding.reason, sizeof rep->finding.reason, fmt, ap);
    va_end(ap);
    return code;
}

static void hex8(const uint8_t *p, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[16] = '\0';
}

/* Explains why a signed payload failed ckpt_verify. */
static const char *signature_why(const struct ckpt *ck, EVP_PKEY *pub)
{
    if (!pub)
        return "does not verify with the key it embeds";
    uint8_t raw[32];
    size_t n = sizeof raw;
    if (EVP_PKEY_get_raw_public_key(pub, raw, &n) == 1 && n == sizeof raw &&
        memcmp(raw, ck->pubkey, sizeof raw) != 0)
        return "was signed by a different key than the given public key";
    return "does not verify with the given public key";
}

/* Checks a signed-statement payload's signature under the run's trust
 * policy. what names it in the reason ("checkpoint", "anchor"). */
static int check_signature(struct vstate *st, const uint8_t *payload, const struct ckpt *ck,
                           uint64_t position, const char *what)
{
    if (!ck->is_signed) {
        if (st->pub)
            return finding(st, VERITY_ESIGNATURE, position,
                           "%s at offset %" PRIu64 " is unsigned, but a public key was given",
                           what, ck->offset);
        if (strcmp(what, "checkpoint") == 0)
            st->rep->checkpoints_unsigned++;
        return 0;
    }
    int rc = ckpt_verify(payload, CKPT_PAYLOAD_SIZE, st->pub);
    if (rc == VERITY_ESIGNATURE)
        return finding(st, rc, position, "%s signature %s", what, signature_why(ck, st->pub));
    if (rc)
        return finding(st, rc, position, "%s cannot be verified: %s", what, verity_strerror(rc));
    return 0;
}

/* Starting chain: zeros at offset 0, else the anchor, which must match the
 * oldest segment and carry a good signature. */
static int check_anchor(struct vstate *st, uint64_t first_base)
{
    uint8_t raw[CKPT_PAYLOAD_SIZE];
    struct ckpt anc;
    memset(st->prev_chain, 0, sizeof st->prev_chain);
    st->data_below = 0;
    if (first_base == 0)
        return 0;
    st->segment = "anchor";
    int rc = ckpt_anchor_read(st->dir, &anc, raw);
    if (rc == VERITY_ENOTFOUND)
        return finding(st, VERITY_ECHAIN, 0,
                       "the log starts at offset %" PRIu64 " but there is no anchor file",
                       first_base);
    if (rc)
        return finding(st, rc, 0, "anchor file unreadable: %s",
                       verity_strerror(rc));
    if ((rc = check_signature(st, raw, &anc, 0, "anchor")))
        return rc;
    if (anc.offset != first_base)
        return finding(st, VERITY_ECHAIN, 0,
                       "anchor is for offset %" PRIu64 " but the oldest segment starts at %" PRIu64,
                       anc.offset, first_base);
    memcpy(st->prev_chain, anc.chain, sizeof st->prev_chain);
    st->data_below = anc.record_count;
    st->rep->anchored = true;
    return 0;
}

enum control_kind { CONTROL_NONE, CONTROL_CHECKPOINT, CONTROL_RECOVERY, CONTROL_STATE };

/* The single record of a validated control batch, and what kind it is. */
static int control_record(struct vstate *st, const uint8_t *b, size_t len, uint64_t position,
                          struct batch_record *rec, enum control_kind *kind)
{
    struct batch_iter it;
    batch_iter_init(&it, b, len);
    VERITY_VERIFY(batch_iter_next(&it, rec) == 1); /* batch_validate passed */
    size_t klen = rec->key_len > 0 ? (size_t)rec->key_len : 0;
    if (klen == strlen(BATCH_CONTROL_CHECKPOINT) &&
        memcmp(rec->key, BATCH_CONTROL_CHECKPOINT, klen) == 0)
        *kind = CONTROL_CHECKPOINT;
    else if (klen == strlen(BATCH_CONTROL_RECOVERY) &&
             memcmp(rec->key, BATCH_CONTROL_RECOVERY, klen) == 0)
        *kind = CONTROL_RECOVERY;
    else if (klen == strlen(BATCH_CONTROL_STATE) && memcmp(rec->key, BATCH_CONTROL_STATE, klen) == 0)
        *kind = CONTROL_STATE;
    else
        return finding(st, VERITY_EUNSUPPORTED, position, "control batch of unknown type");
    return 0;
}

static void note_recovery(struct vstate *st, uint64_t offset, const struct batch_record *rec)
{
    struct verify_report *rep = st->rep;
    rep->recovery_records++;
    if (rep->recoveries_listed == VERIFY_RECOVERIES_MAX)
        return;
    struct verify_recovery_note *n = &rep->recoveries[rep->recoveries_listed++];
    size_t len = rec->value_len > 0 ? (size_t)rec->value_len : 0;
    if (len > sizeof n->text - 1)
        len = sizeof n->text - 1;
    n->offset = offset;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = rec->value[i];
        n->text[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    n->text[len] = '\0';
}

static int check_header_error(struct vstate *st, int rc, const struct verify_reader *r,
                              uint64_t position, bool last_segment)
{
    if (r->torn && last_segment) {
        st->rep->torn_tail = true;
        return finding(st, VERITY_ECORRUPT, position,
                       "torn tail: the log ends inside a batch (%" PRIu64
                       " trailing bytes at position %" PRIu64 ")",
                       r->file_size - position, position);
    }
    if (r->torn)
        return finding(st, VERITY_ECORRUPT, position,
                       "segment ends inside a batch but is not the last segment");
    if (rc == VERITY_ECORRUPT || rc == VERITY_EVERSION)
        return finding(st, rc, position, "no valid batch header at this position (%s)",
                       verity_strerror(rc));
    return finding(st, rc, position, "read error: %s", verity_strerror(rc));
}

/* Steps 2-6 of the file comment for one batch. */
static int check_batch(struct vstate *st, const uint8_t *b, size_t len, uint64_t position)
{
    struct batch_hdr h;
    struct batch_record rec;
    struct ckpt ck;
    enum control_kind kind = CONTROL_NONE;
    uint8_t chain[32];
    int rc = batch_validate(b, len, NULL);
    if (rc) {
        uint32_t stored = get_le32(b + BATCH_OFF_CRC), computed = batch_crc_compute(b, len);
        if (stored != computed)
            return finding(st, rc, position, "CRC32C mismatch: stored %08" PRIx32
                           ", computed %08" PRIx32, stored, computed);
        return finding(st, rc, position, "batch fails validation: %s", verity_strerror(rc));
    }
    VERITY_VERIFY(batch_hdr_decode(b, len, &h) == 0 && h.length == len);
    if (h.base_offset != st->expected)
        return finding(st, VERITY_ECHAIN, position,
                       "batch has base offset %" PRIu64 ", expected %" PRIu64
                       " (a batch was removed, duplicated or moved)",
                       h.base_offset, st->expected);
    if (h.record_count > UINT64_MAX - st->expected)
        return finding(st, VERITY_ECORRUPT, position, "offsets run past 2^64 - 1");
    if (h.attributes & BATCH_ATTR_CONTROL) {
        if ((rc = control_record(st, b, len, position, &rec, &kind)))
            return rc;
        if (kind == CONTROL_CHECKPOINT) {
            if (rec.value_len != CKPT_PAYLOAD_SIZE ||
                ckpt_decode(rec.value, CKPT_PAYLOAD_SIZE, &ck) != 0)
                return finding(st, VERITY_ECORRUPT, position, "checkpoint payload is malformed");
            if ((rc = check_signature(st, rec.value, &ck, position, "checkpoint")))
                return rc;
        }
    }
    batch_chain_compute(st->prev_chain, b, len, chain);
    if (memcmp(chain, h.chain, sizeof chain) != 0) {
        /* Show 8 bytes from the first that differs, so the two never look alike. */
        size_t d = 0;
        while (d < sizeof chain && chain[d] == h.chain[d])
            d++;
        if (d > sizeof chain - 8)
            d = sizeof chain - 8;
        char want[17], got[17];
        hex8(chain + d, want);
        hex8(h.chain + d, got);
        return finding(st, VERITY_ECHAIN, position,
                       "chain hash does not link to the previous batch (bytes %zu..%zu: stored "
                       "%s, computed %s)",
                       d, d + 7, got, want);
    }
    if (kind == CONTROL_CHECKPOINT) {
        if (ck.offset != h.base_offset)
            return finding(st, VERITY_ECHAIN, position,
                           "checkpoint claims offset %" PRIu64 " but sits at offset %" PRIu64,
                           ck.offset, h.base_offset);
        if (memcmp(ck.chain, st->prev_chain, sizeof ck.chain) != 0)
            return finding(st, VERITY_ECHAIN, position,
                           "checkpoint chain differs from the chain hash of the batch before it");
        if (ck.record_count != st->data_below)
            return finding(st, VERITY_ECHAIN, position,
                           "checkpoint counts %" PRIu64 " data records below it, the log has %" PRIu64,
                           ck.record_count, st->data_below);
        if (ck.is_signed)
            st->rep->checkpoints_verified++;
    } else if (kind == CONTROL_RECOVERY) {
        note_recovery(st, h.base_offset, &rec);
    } else if (kind == CONTROL_STATE) {
        st->rep->state_marks++;
    }

    uint64_t before = st->expected;
    memcpy(st->prev_chain, h.chain, sizeof st->prev_chain);
    st->expected += h.record_count;
    VERITY_VERIFY(st->expected > before);
    if (h.attributes & BATCH_ATTR_CONTROL) {
        st->rep->control_batches++;
    } else {
        st->rep->records += h.record_count;
        st->data_below += h.record_count;
    }
    st->rep->batches++;
    st->rep->bytes += len;
    return 0;
}

static void progress_tick(struct vstate *st, uint64_t bytes, bool force)
{
    st->bytes_done += bytes;
    if (!st->progress)
        return;
    if (force || st->bytes_done - st->progress_last >= PROGRESS_EVERY_BYTES) {
        st->progress_last = st->bytes_done;
        st->progress(st->progress_arg, st->bytes_done, st->bytes_total);
    }
}

static int check_segment(struct vstate *st, struct verify_reader *r,
                         const struct verify_segment *seg, bool last)
{
    const uint8_t *b;
    size_t len;
    uint64_t position = 0;
    st->segment = seg->name;
    if (seg->base_offset != st->expected)
        return finding(st, VERITY_ECHAIN, 0,
                       "segment file %s starts at offset %" PRIu64 ", expected %" PRIu64
                       " (a segment is missing or renamed)",
                       seg->name, seg->base_offset, st->expected);
    int rc = verify_reader_open(r, st->dir, seg);
    if (rc)
        return finding(st, rc, 0, "cannot open segment: %s", verity_strerror(rc));
    st->rep->segments++;
    while ((rc = verify_reader_next(r, &b, &len, &position)) == 1) {
        if ((rc = check_batch(st, b, len, position)))
            return rc;
        progress_tick(st, len, false);
    }
    if (rc < 0)
        return check_header_error(st, rc, r, position, last);
    if (r->zero_tail && !last)
        return finding(st, VERITY_ECORRUPT, position,
                       "segment is not the last but ends in %" PRIu64
                       " zero bytes (only the active segment has a zero tail)",
                       r->zero_tail);
    return 0;
}

int verify_log_dir_io(const char *dir, EVP_PKEY *pub, verify_progress_fn progress,
                      void *progress_arg, const struct vio *io, struct verify_report *out)
{
    struct verify_segment *segs = NULL;
    struct verify_reader r = {.fd = -1};
    size_t n = 0;
    struct vstate st = {
        .dir = dir, .pub = pub, .rep = out, .progress = progress, .progress_arg = progress_arg};
    memset(out, 0, sizeof *out);
    out->origin_checked = pub != NULL;
    int rc = verify_list_segments(dir, &segs, &n);
    if (rc)
        return rc;
    if (n == 0) {
        st.segment = "";
        rc = finding(&st, VERITY_ENOTFOUND, 0, "no segment files (<20 digits>.log) in %s", dir);
        goto out;
    }
    if ((rc = verify_reader_init(&r, io)))
        goto out;
    for (size_t i = 0; i < n; i++)
        st.bytes_total += segs[i].size;
    out->start_offset = segs[0].base_offset;
    st.expected = segs[0].base_offset;
    if ((rc = check_anchor(&st, segs[0].base_offset)))
        goto out;
    for (size_t i = 0; i < n && !rc; i++)
        rc = check_segment(&st, &r, &segs[i], i + 1 == n);
    progress_tick(&st, 0, true);
out:
    out->end_offset = st.expected;
    memcpy(out->chain, st.prev_chain, sizeof out->chain);
    VERITY_VERIFY(rc == 0 || out->found || rc == -ENOMEM);
    VERITY_VERIFY(!out->found || rc == out->finding.code);
    verify_reader_deinit(&r);
    free(segs);
    return rc;
}

int verify_log_dir(const char *dir, EVP_PKEY *pub, verify_progress_fn progress, void *progress_arg,
                   struct verify_report *out)
{
    return verify_log_dir_io(dir, pub, progress, progress_arg, NULL, out);
}
