/*
 * Offline log verifier: the auditor's reading of a partition directory.
 *
 * It deliberately shares no code with the writer (storage/vlog.c): it lists
 * the segment files itself, reads them sequentially through a bounded buffer,
 * and checks every batch against docs/FORMAT.md using only the format
 * primitives (storage/batch.h, storage/checkpoint.h). A bug in the writer's
 * recovery or read path therefore cannot hide a bad log from the verifier.
 *
 * Memory is bounded whatever the log size: one read buffer of
 * VERIFY_READ_BUFFER bytes (large enough for the biggest batch the format
 * allows) plus the segment list.
 *
 * Threads: no shared state; each call owns what it allocates.
 */
#ifndef VERITY_STORAGE_VERIFY_H
#define VERITY_STORAGE_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "storage/vio.h"

#define VERIFY_READ_BUFFER (16u << 20)   /* bytes; holds a maximal batch */
#define VERIFY_REASON_MAX 256
#define VERIFY_SEGMENT_NAME_MAX 32       /* "<20 digits>.log" plus NUL fits */
#define VERIFY_RECOVERIES_MAX 16         /* recovery records listed in a report */
#define VERIFY_RECOVERY_TEXT_MAX 256

/* ---- segment listing and sequential reading ----------------------------- */

struct verify_segment {
    uint64_t base_offset;                 /* from the file name */
    uint64_t size;                        /* bytes, at listing time */
    char name[VERIFY_SEGMENT_NAME_MAX];   /* "<base %020>.log" */
};

/*
 * Lists the files of dir named exactly <20 decimal digits>.log, sorted by
 * base offset. Other files (indexes, anchor, temporaries) are ignored.
 * Returns 0 with *out (malloc'ed, the caller frees it with free(); NULL when
 * *n_out is 0), or -errno when dir cannot be read.
 */
int verify_list_segments(const char *dir, struct verify_segment **out, size_t *n_out)
    __attribute__((warn_unused_result));

/* Reads one segment's batches front to back with large sequential reads. */
struct verify_reader {
    const struct vio *io;     /* borrowed */
    uint8_t *buf;             /* owned, VERIFY_READ_BUFFER bytes */
    size_t start;             /* first unconsumed byte in buf */
    size_t end;               /* one past the last byte read into buf */
    int fd;                   /* -1 when no segment is open */
    uint64_t file_size;       /* at open */
    uint64_t file_pos;        /* file position of buf[end] */
    bool torn;                /* set when the file ends inside a batch */
    uint64_t zero_tail;       /* zero bytes after the last batch (docs/FORMAT.md) */
};

/* Allocates the buffer. io NULL = vio_posix. 0 or -ENOMEM. */
int verify_reader_init(struct verify_reader *r, const struct vio *io)
    __attribute__((warn_unused_result));
void verify_reader_deinit(struct verify_reader *r);
/* Opens <dir>/<seg->name>, closing any segment open before. 0 or -errno. */
int verify_reader_open(struct verify_reader *r, const char *dir, const struct verify_segment *seg)
    __attribute__((warn_unused_result));
/*
 * Returns 1 with the next batch in *batch (borrowed; valid until the next
 * call) and its byte position in the segment, 0 at a clean end of file, or
 * an error: VERITY_ECORRUPT / VERITY_EVERSION when the header does not
 * decode (batch_hdr_decode), VERITY_ECORRUPT with r->torn set when the file
 * ends inside a header or batch, -errno on a read error. *position is set
 * on errors too. Only the header is checked here, not the CRC or records.
 * The zero tail (docs/FORMAT.md "Preallocated tail"): when the header bytes
 * at a batch position are all zero and so is every byte from there to the
 * end of the file, that is the clean end (0), with r->zero_tail set to the
 * count of those bytes. Zero header bytes followed by any nonzero byte are
 * not an end: the header fails to decode (VERITY_ECORRUPT).
 */
int verify_reader_next(struct verify_reader *r, const uint8_t **batch, size_t *len,
                       uint64_t *position) __attribute__((warn_unused_result));

/* ---- the verifier -------------------------------------------------------- */

/* The first thing found wrong. */
struct verify_finding {
    int code;                              /* VERITY_ECORRUPT, VERITY_ECHAIN, VERITY_ESIGNATURE, ..., or -errno */
    uint64_t offset;                       /* the offset the bad batch should have had */
    char segment[VERIFY_SEGMENT_NAME_MAX]; /* segment file name; "anchor" or "" when not in one */
    uint64_t position;                     /* byte position in that file */
    char reason[VERIFY_REASON_MAX];        /* one human sentence */
};

struct verify_recovery_note {
    uint64_t offset;                       /* offset of the recovery control batch */
    char text[VERIFY_RECOVERY_TEXT_MAX];   /* its JSON value, truncated, non-printables as '?' */
};

struct verify_report {
    uint32_t segments;              /* segment files read */
    uint64_t batches;               /* valid batches, data and control */
    uint64_t records;               /* data (non-control) records in the segments */
    uint64_t control_batches;
    uint64_t bytes;                 /* bytes of valid batches */
    uint64_t checkpoints_verified;  /* checkpoints whose signature verified */
    uint64_t checkpoints_unsigned;  /* accepted without a signature (no pubkey given) */
    uint64_t recovery_records;
    uint64_t state_marks;           /* BATCH_CONTROL_STATE batches (a state installed from a peer) */
    uint64_t start_offset;          /* first offset stored (the oldest segment's base) */
    uint64_t end_offset;            /* offset after the last valid batch */
    bool anchored;                  /* the log starts after an anchor */
    bool origin_checked;            /* a public key was given: signatures prove origin */
    uint8_t chain[32];              /* chain hash of the last valid batch (or the anchor's) */
    bool found;                     /* a finding was made; see finding */
    bool torn_tail;                 /* the finding is a partial batch at the end of the log */
    struct verify_finding finding;
    size_t recoveries_listed;       /* <= VERIFY_RECOVERIES_MAX */
    struct verify_recovery_note recoveries[VERIFY_RECOVERIES_MAX];
};

/* Called now and then during a run: bytes read so far and the total. */
typedef void (*verify_progress_fn)(void *arg, uint64_t bytes_done, uint64_t bytes_total);

/*
 * Verifies the log in dir: batch structure and CRC, base offset continuity
 * within and across segments, segment names, the SHA-256 chain from offset 0
 * or from <dir>/anchor, every checkpoint (payload, position, chain, record
 * count, signature), and lists recovery records. pub (borrowed, may be NULL)
 * is the Ed25519 key that must have signed every checkpoint and the anchor;
 * without it signatures are checked against the key each payload embeds,
 * which proves integrity but not origin (out->origin_checked is false).
 * progress may be NULL. Stops at the first finding.
 *
 * Returns 0 when the log verified clean; the finding's code (negative) with
 * out->found set; or a negative code with out->found false when the
 * verification could not run (dir unreadable, out of memory).
 */
int verify_log_dir(const char *dir, EVP_PKEY *pub, verify_progress_fn progress, void *progress_arg,
                   struct verify_report *out) __attribute__((warn_unused_result));

/* Same, reading through io (NULL = vio_posix), for fault-injection tests. */
int verify_log_dir_io(const char *dir, EVP_PKEY *pub, verify_progress_fn progress,
                      void *progress_arg, const struct vio *io, struct verify_report *out)
    __attribute__((warn_unused_result));

#endif
