/*
 * vio_fault: a struct vio that wraps vio_posix and injects storage faults on
 * demand, for the storage engine's fault and crash tests. Real files, real
 * system calls; only the armed faults and the simulated crash are fiction.
 *
 *   struct vio_fault *f = vio_fault_new();
 *   const struct vio *io = vio_fault_io(f);        hand io to vlog_open()
 *   int id = vio_fault_arm(f, &(struct vio_fault_rule){
 *       .op = VF_PWRITE, .kind = VF_TORN, .path_suffix = ".log",
 *       .after_n = 3, .count = 1 });               the 4th .log write tears
 *   ...
 *   CU_ASSERT_EQUAL(vio_fault_fired(f, id), 1);
 *   CU_ASSERT_EQUAL(vio_fault_crash(f), 0);        power loss
 *   vio_fault_free(f);
 *
 * A rule matches a call when its op is the call's op and path_suffix is NULL,
 * empty, or a suffix of the call's path (a full path is its own suffix). Calls
 * on a descriptor use the path it was opened with, or the new name once the
 * file is renamed through the table; for rename() the path is `from`. Each rule counts its matching calls: the first
 * after_n pass through, then the rule fires on the next `count` matching calls
 * (count -1 = forever, 0 is taken as 1). When several rules are due on one
 * call, the earliest armed fires and the others stay due for the next match.
 *
 * The faults, and what a test should expect from the code under test:
 *
 *   VF_EIO, VF_ENOSPC (any op)  The call does nothing and returns -EIO or
 *       -ENOSPC. Exception: close releases the descriptor anyway, as Linux
 *       does. A pwrite that fails this way wrote nothing; the caller must
 *       report the error (ENOSPC goes to the producer) and must not treat
 *       the batch as appended.
 *
 *   VF_SHORT (pwrite)  Writes only the first `len` bytes (0 = half the
 *       buffer; clamped to 1..n-1) and returns that count. Only calls with
 *       n >= 2 match. vio_pwrite_all() loops and completes the write; a
 *       caller that takes one pwrite for the whole buffer leaves a hole.
 *
 *   VF_TORN (pwrite)  Writes the first `len` bytes (0 = half; clamped to
 *       0..n-1), then returns -EIO; the prefix stays in the file. Recovery
 *       must find the torn tail, cut it and record the cut.
 *
 *   VF_EIO on VF_FDATASYNC / VF_FSYNC  Returns -EIO without syncing. Every
 *       byte of that file that was not yet durable is lost at the next
 *       vio_fault_crash(), and, like Linux after a writeback error, a later
 *       sync of the file that succeeds does not bring it back: the file's
 *       durable length is frozen from the failure on. So a caller that
 *       retries the sync and trusts the retry loses acknowledged data; the
 *       log must turn read-only instead (VERITY_EREADONLY).
 *
 *   VF_BITFLIP (pread)  A read whose returned bytes cover file byte
 *       `position` comes back with bit `bit` (0..7) of that byte inverted;
 *       the file is unchanged. Only reads covering `position` match, so
 *       after_n and count count those. The CRC32C check must reject the
 *       batch (VERITY_ECORRUPT); a second read without the rule is clean.
 *
 * vio_fault_crash() simulates power loss. Per path, the table tracks the
 * durable length: the file's size when it was first opened through the table,
 * raised to the size the file had when a successful fdatasync/fsync of it
 * began. ftruncate below it and writes below it lower it to the new length or
 * the write's offset (a conservative model of in-place rewrites). The crash
 * truncates every file that was written or truncated through the table back to
 * its durable length (a file created and never synced ends empty); bytes below
 * the durable length are untouched. Afterwards every descriptor opened before
 * the crash is dead: each call on it returns -EIO, except close, which
 * releases it. Reopen the files through the table, as a restarted process
 * would. Directory entries are not modelled: names created, renamed or
 * unlinked survive the crash as they are. Stop the threads that use the table
 * before calling vio_fault_crash().
 *
 * Thread safety: every function may be called from any thread; one mutex
 * guards the rules, counters and file tracking, and is not held across the
 * real system calls (a slow fdatasync does not block a concurrent pwrite).
 */
#ifndef VERITY_TESTS_VIO_FAULT_H
#define VERITY_TESTS_VIO_FAULT_H

#include <stdint.h>
#include <sys/types.h>

#include "storage/vio.h"

enum vf_op {
    VF_OPEN,
    VF_CLOSE,
    VF_PREAD,
    VF_PWRITE,
    VF_FDATASYNC,
    VF_FSYNC,
    VF_FTRUNCATE,
    VF_FSTAT,
    VF_RENAME,
    VF_UNLINK,
    VF_MKDIR,
    VF_OP_COUNT,
};

enum vf_kind {
    VF_NONE = 0, /* invalid: a rule must name its fault */
    VF_EIO,      /* any op: nothing done, -EIO */
    VF_ENOSPC,   /* any op: nothing done, -ENOSPC */
    VF_SHORT,    /* pwrite: writes len bytes, returns len */
    VF_TORN,     /* pwrite: writes len bytes, returns -EIO */
    VF_BITFLIP,  /* pread: bit `bit` of file byte `position` read inverted */
};

#define VIO_FAULT_RULES_MAX 32

struct vio_fault_rule {
    enum vf_op op;
    enum vf_kind kind;
    const char *path_suffix; /* NULL or "" = every path; copied by vio_fault_arm */
    uint64_t after_n;        /* matching calls that pass before the rule fires */
    int64_t count;           /* times it fires; -1 = forever, 0 = once */
    size_t len;              /* VF_SHORT, VF_TORN: bytes written; 0 = half */
    off_t position;          /* VF_BITFLIP: file offset of the flipped byte */
    unsigned bit;            /* VF_BITFLIP: 0..7 */
};

struct vio_fault;

/* Returns a new table with no rules armed, or NULL when out of memory. Free it
 * with vio_fault_free() after every descriptor opened through it is closed. */
struct vio_fault *vio_fault_new(void);

/* Frees f; NULL is a no-op. Does not close descriptors or touch files. */
void vio_fault_free(struct vio_fault *f);

/* Returns the operations table, valid until vio_fault_free(f). */
const struct vio *vio_fault_io(struct vio_fault *f);

/* Arms a copy of *rule (the path suffix is copied too). Returns the rule id
 * (>= 0, for vio_fault_fired), -EINVAL for a kind that the op cannot have, a
 * bit above 7 or a negative position, -ENOSPC when VIO_FAULT_RULES_MAX rules
 * are armed, or -ENOMEM. */
int vio_fault_arm(struct vio_fault *f, const struct vio_fault_rule *rule)
    __attribute__((warn_unused_result));

/* Removes every rule; call counters and file tracking stay. Ids are reused. */
void vio_fault_disarm_all(struct vio_fault *f);

/* Returns how many times rule `id` injected its fault (0 for unknown ids). */
uint64_t vio_fault_fired(struct vio_fault *f, int id);

/* Returns how many calls of op went through the table, faulted or not. */
uint64_t vio_fault_calls(struct vio_fault *f, enum vf_op op);

/* Stores in *len_out how many bytes of path would survive a crash now.
 * Returns 0, or -ENOENT when path was never opened through the table (or was
 * unlinked or replaced since). path must be spelled as it was opened. */
int vio_fault_durable_len(struct vio_fault *f, const char *path, off_t *len_out)
    __attribute__((warn_unused_result));

/* Simulates power loss, as described above. Returns 0, or the first -errno
 * met while truncating (the other files are still truncated). */
int vio_fault_crash(struct vio_fault *f) __attribute__((warn_unused_result));

#endif
