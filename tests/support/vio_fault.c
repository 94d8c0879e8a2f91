/*
 * vio_fault: the fault-injecting file operations table (see vio_fault.h for
 * the faults and the crash model).
 *
 * State, all guarded by f->mu:
 *   - rules[]: the armed rules, each with its count of matching calls (seen)
 *     and of injections (fired).
 *   - files: one record per path opened through the table, holding the
 *     durable length. Records are reference counted: the path list holds one
 *     reference while the name is live (dropped by unlink, by a rename over
 *     it, and by the crash), and every open descriptor holds one, so a
 *     descriptor whose name went away still finds its (now unlisted) record.
 *   - fds[]: indexed by descriptor number; file is NULL when the descriptor
 *     was not opened through the table; dead after a crash.
 *
 * Invariants: a listed record has a unique path among listed records;
 * refs >= 1 while anything points at it; 0 <= durable. The mutex is never
 * held across a real system call, so a slow fdatasync does not stall a
 * concurrent pwrite; each fault decision is made under the lock before the
 * call, and tracking is updated under the lock after it.
 */
#include "tests/support/vio_fault.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "verity/verify.h"

struct vf_rule {
    bool armed;
    struct vio_fault_rule r; /* r.path_suffix points at suffix */
    char *suffix;            /* owned copy; NULL = every path */
    uint64_t seen;           /* matching calls so far */
    uint64_t fired;          /* injections so far */
};

struct vf_file {
    char *path;            /* owned; the current name while listed */
    off_t durable;         /* bytes that survive a crash */
    bool reg;              /* regular file: only these are truncated */
    bool dirty;            /* written or truncated through the table */
    bool frozen;           /* a sync failed: durable may only shrink */
    bool listed;           /* reachable by path from f->files */
    unsigned refs;         /* list reference + open descriptors */
    struct vf_file *next;  /* next listed record */
};

struct vf_fd {
    struct vf_file *file; /* NULL = not opened through the table */
    bool dead;            /* opened before a crash */
};

struct vio_fault {
    pthread_mutex_t mu;
    struct vio io;                          /* ctx = this */
    struct vf_rule rules[VIO_FAULT_RULES_MAX];
    uint64_t calls[VF_OP_COUNT];
    struct vf_file *files;                  /* listed records */
    struct vf_fd *fds;                      /* indexed by descriptor */
    size_t fds_cap;
};

static bool file_ok(const struct vf_file *r)
{
    return r != NULL && r->path != NULL && r->durable >= 0 && r->refs >= 1;
}

static void lock(struct vio_fault *f)
{
    VERITY_VERIFY(pthread_mutex_lock(&f->mu) == 0);
}

static void unlock(struct vio_fault *f)
{
    VERITY_VERIFY(pthread_mutex_unlock(&f->mu) == 0);
}

/* ---- records ------------------------------------------------------------ */

static void file_unref(struct vf_file *r)
{
    assert(file_ok(r));
    if (--r->refs == 0) {
        VERITY_VERIFY(!r->listed);
        free(r->path);
        free(r);
    }
}

static struct vf_file *file_find(struct vio_fault *f, const char *path)
{
    for (struct vf_file *r = f->files; r != NULL; r = r->next) {
        assert(file_ok(r) && r->listed);
        if (strcmp(r->path, path) == 0)
            return r;
    }
    return NULL;
}

/* Removes r from the path list and drops the list's reference. */
static void file_unlist(struct vio_fault *f, struct vf_file *r)
{
    VERITY_VERIFY(r->listed);
    for (struct vf_file **p = &f->files; *p != NULL; p = &(*p)->next) {
        if (*p == r) {
            *p = r->next;
            r->next = NULL;
            r->listed = false;
            file_unref(r);
            return;
        }
    }
    VERITY_VERIFY(!"listed record missing from the list");
}

/* Returns the descriptor's entry, or NULL when fd was not opened here. */
static struct vf_fd *fd_get(struct vio_fault *f, int fd)
{
    if (fd < 0 || (size_t)fd >= f->fds_cap || f->fds[fd].file == NULL)
        return NULL;
    assert(file_ok(f->fds[fd].file));
    return &f->fds[fd];
}

/* ---- rules -------------------------------------------------------------- */

static bool suffix_match(const char *suffix, const char *path)
{
    if (suffix == NULL)
        return true;
    if (path == NULL)
        return false;
    size_t ls = strlen(suffix), lp = strlen(path);
    return ls <= lp && memcmp(path + lp - ls, suffix, ls) == 0;
}

/* Counts the call against rule x and returns whether x fires on it. */
static bool rule_turn(struct vf_rule *x)
{
    int64_t count = x->r.count == 0 ? 1 : x->r.count;
    x->seen++;
    return x->seen > x->r.after_n && (count < 0 || x->fired < (uint64_t)count);
}

/* Counts the call (op on path, n bytes for pwrite) against every matching
 * rule except bit flips, and copies the first rule that fires into *out.
 * Returns whether one fired. Caller holds the lock. */
static bool pick(struct vio_fault *f, enum vf_op op, const char *path, size_t n,
                 struct vio_fault_rule *out)
{
    bool hit = false;
    for (int i = 0; i < VIO_FAULT_RULES_MAX; i++) {
        struct vf_rule *x = &f->rules[i];
        if (!x->armed || x->r.op != op || x->r.kind == VF_BITFLIP ||
            !suffix_match(x->suffix, path))
            continue;
        if (x->r.kind == VF_SHORT && n < 2)
            continue;
        if (rule_turn(x) && !hit) {
            x->fired++;
            *out = x->r;
            hit = true;
        }
    }
    return hit;
}

/* The -errno of a rule that makes the call do nothing. */
static int fail_code(const struct vio_fault_rule *r)
{
    VERITY_VERIFY(r->kind == VF_EIO || r->kind == VF_ENOSPC);
    return r->kind == VF_EIO ? -EIO : -ENOSPC;
}

/* The shared prologue of every descriptor call: counts it, refuses dead
 * descriptors with -EIO, and consults the rules. Returns 0 to go on with the
 * real call (*hit tells whether *rule applies), or a negative code to return. */
static int fd_enter(struct vio_fault *f, enum vf_op op, int fd, size_t n, bool *hit,
                    struct vio_fault_rule *rule)
{
    int rc = 0;
    lock(f);
    f->calls[op]++;
    struct vf_fd *e = fd_get(f, fd);
    *hit = false;
    if (e != NULL && e->dead)
        rc = -EIO;
    else
        *hit = pick(f, op, e != NULL ? e->file->path : NULL, n, rule);
    unlock(f);
    return rc;
}

/* ---- the table ---------------------------------------------------------- */

static int f_open(void *ctx, const char *path, int flags, mode_t mode)
{
    struct vio_fault *f = ctx;
    struct vio_fault_rule rule;
    lock(f);
    f->calls[VF_OPEN]++;
    bool hit = pick(f, VF_OPEN, path, 0, &rule);
    unlock(f);
    if (hit)
        return fail_code(&rule);

    /* Allocate before the real open so nothing can fail after it. */
    struct vf_file *fresh = calloc(1, sizeof(*fresh));
    char *copy = strdup(path);
    if (fresh == NULL || copy == NULL) {
        free(fresh);
        free(copy);
        return -ENOMEM;
    }
    int fd = open(path, flags | O_CLOEXEC, mode);
    if (fd < 0) {
        int err = -errno;
        free(fresh);
        free(copy);
        return err;
    }
    struct stat st;
    bool have_st = fstat(fd, &st) == 0;

    lock(f);
    if ((size_t)fd >= f->fds_cap) {
        size_t cap = f->fds_cap ? f->fds_cap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        struct vf_fd *grown = realloc(f->fds, cap * sizeof(*grown));
        if (grown == NULL) {
            unlock(f);
            free(fresh);
            free(copy);
            (void)close(fd); /* read-only use: nothing was written through it */
            return -ENOMEM;
        }
        memset(grown + f->fds_cap, 0, (cap - f->fds_cap) * sizeof(*grown));
        f->fds = grown;
        f->fds_cap = cap;
    }
    struct vf_file *r = file_find(f, path);
    if (r == NULL) {
        r = fresh;
        fresh = NULL;
        r->path = copy;
        copy = NULL;
        r->reg = have_st && S_ISREG(st.st_mode);
        r->durable = r->reg ? st.st_size : 0;
        r->listed = true;
        r->refs = 1;
        r->next = f->files;
        f->files = r;
    } else if ((flags & O_TRUNC) && r->reg) {
        r->durable = 0;
        r->dirty = true;
    }
    /* A descriptor closed behind the table's back may have been reused. */
    if (f->fds[fd].file != NULL)
        file_unref(f->fds[fd].file);
    r->refs++;
    f->fds[fd] = (struct vf_fd){ .file = r, .dead = false };
    assert(file_ok(r));
    unlock(f);
    free(fresh);
    free(copy);
    return fd;
}

static int f_close(void *ctx, int fd)
{
    struct vio_fault *f = ctx;
    struct vio_fault_rule rule;
    bool hit = false;
    lock(f);
    f->calls[VF_CLOSE]++;
    struct vf_fd *e = fd_get(f, fd);
    if (e == NULL || !e->dead)
        hit = pick(f, VF_CLOSE, e != NULL ? e->file->path : NULL, 0, &rule);
    /* Forget the descriptor before the kernel can hand its number out again. */
    if (e != NULL) {
        file_unref(e->file);
        *e = (struct vf_fd){ 0 };
    }
    unlock(f);
    int rc = close(fd) ? -errno : 0;
    return hit ? fail_code(&rule) : rc;
}

static ssize_t f_pread(void *ctx, int fd, void *buf, size_t n, off_t off)
{
    struct vio_fault *f = ctx;
    struct vio_fault_rule rule;
    bool hit;
    int rc = fd_enter(f, VF_PREAD, fd, n, &hit, &rule);
    if (rc < 0)
        return rc;
    if (hit)
        return fail_code(&rule);
    ssize_t got = pread(fd, buf, n, off);
    if (got < 0)
        return -errno;
    if (got == 0)
        return 0;

    lock(f);
    struct vf_fd *e = fd_get(f, fd);
    const char *path = e != NULL ? e->file->path : NULL;
    for (int i = 0; i < VIO_FAULT_RULES_MAX; i++) {
        struct vf_rule *x = &f->rules[i];
        if (!x->armed || x->r.op != VF_PREAD || x->r.kind != VF_BITFLIP ||
            !suffix_match(x->suffix, path))
            continue;
        if (x->r.position < off || x->r.position - off >= got)
            continue;
        if (rule_turn(x)) {
            x->fired++;
            ((unsigned char *)buf)[x->r.position - off] ^= (unsigned char)(1u << x->r.bit);
        }
    }
    unlock(f);
    return got;
}

static ssize_t f_pwrite(void *ctx, int fd, const void *buf, size_t n, off_t off)
{
    struct vio_fault *f = ctx;
    struct vio_fault_rule rule;
    bool hit;
    int rc = fd_enter(f, VF_PWRITE, fd, n, &hit, &rule);
    if (rc < 0)
        return rc;
    size_t len_now = n;
    bool torn = false;
    if (hit) {
        size_t want = rule.len ? rule.len : n / 2;
        switch (rule.kind) {
        case VF_SHORT:
            assert(n >= 2);
            len_now = want < 1 ? 1 : want > n - 1 ? n - 1 : want;
            break;
        case VF_TORN:
            len_now = n == 0 ? 0 : want > n - 1 ? n - 1 : want;
            torn = true;
            break;
        default:
            return fail_code(&rule);
        }
    }
    ssize_t w = len_now > 0 ? pwrite(fd, buf, len_now, off) : 0;
    if (w < 0)
        return -errno;
    VERITY_VERIFY((size_t)w <= len_now);
    if (w > 0) {
        lock(f);
        struct vf_fd *e = fd_get(f, fd);
        if (e != NULL && e->file->reg) {
            e->file->dirty = true;
            if (off < e->file->durable)
                e->file->durable = off;
        }
        unlock(f);
    }
    return torn ? -EIO : w;
}

/* fdatasync and fsync: a successful sync makes durable everything the file
 * held when it began; a failed one (injected or real) freezes the record. */
static int sync_common(struct vio_fault *f, enum vf_op op, int fd)
{
    struct vio_fault_rule rule;
    bool hit;
    int rc = fd_enter(f, op, fd, 0, &hit, &rule);
    if (rc < 0)
        return rc;
    struct stat st;
    bool have_st = false;
    if (hit) {
        rc = fail_code(&rule);
    } else {
        have_st = fstat(fd, &st) == 0;
        int s = op == VF_FSYNC ? fsync(fd) : fdatasync(fd);
        rc = s ? -errno : 0;
    }
    lock(f);
    struct vf_fd *e = fd_get(f, fd);
    if (e != NULL && e->file->reg) {
        struct vf_file *r = e->file;
        if (rc < 0)
            r->frozen = true;
        else if (have_st && !r->frozen)
            r->durable = st.st_size;
        assert(file_ok(r));
    }
    unlock(f);
    return rc;
}

static int f_fdatasync(void *ctx, int fd)
{
    return sync_common(ctx, VF_FDATASYNC, fd);
}

static int f_fsync(void *ctx, int fd)
{
    return sync_common(ctx, VF_FSYNC, fd);
}

static int f_ftruncate(void *ctx, int fd, off_t len)
{
    struct vio_fault *f = ctx;
    struct vio_fault_rule rule;
    bool hit;
    int rc = fd_enter(f, VF_FTRUNCATE, fd, 0, &hit, &rule);
    if (rc < 0)
        return rc;
    if (hit)
        return fail_code(&rule);
    if (ftruncate(fd, len))
        return -errno;
    lock(f);
    struct vf_fd *e = fd_get(f, fd);
    if (e != NULL && e->file->reg) {
        e->file->dirty = true;
        if (len < e->file->durable)
            e->file->durable = len;
    }
    unlock(f);
    return 0;
}

static int f_fstat(void *ctx, int fd, struct stat *st)
{
    struct vio_fault *f = ctx;
    struct vio_fault_rule rule;
    bool hit;
    int rc = fd_enter(f, VF_FSTAT, fd, 0, &hit, &rule);
    if (rc < 0)
        return rc;
    if (hit)
        return fail_code(&rule);
    return fstat(fd, st) ? -errno : 0;
}

/* Counts a path call and consults the rules; returns 0 or the injected code. */
static int path_enter(struct vio_fault *f, enum vf_op op, const char *path)
{
    struct vio_fault_rule rule;
    lock(f);
    f->calls[op]++;
    bool hit = pick(f, op, path, 0, &rule);
    unlock(f);
    return hit ? fail_code(&rule) : 0;
}

static int f_rename(void *ctx, const char *from, const char *to)
{
    struct vio_fault *f = ctx;
    int rc = path_enter(f, VF_RENAME, from);
    if (rc < 0)
        return rc;
    char *copy = strdup(to);
    if (copy == NULL)
        return -ENOMEM;
    if (rename(from, to)) {
        rc = -errno;
        free(copy);
        return rc;
    }
    lock(f);
    struct vf_file *r = file_find(f, from);
    struct vf_file *victim = file_find(f, to);
    if (victim != NULL && victim != r)
        file_unlist(f, victim);
    if (r != NULL && r != victim) {
        free(r->path);
        r->path = copy;
        copy = NULL;
    }
    unlock(f);
    free(copy);
    return 0;
}

static int f_unlink(void *ctx, const char *path)
{
    struct vio_fault *f = ctx;
    int rc = path_enter(f, VF_UNLINK, path);
    if (rc < 0)
        return rc;
    if (unlink(path))
        return -errno;
    lock(f);
    struct vf_file *r = file_find(f, path);
    if (r != NULL)
        file_unlist(f, r);
    unlock(f);
    return 0;
}

static int f_mkdir(void *ctx, const char *path, mode_t mode)
{
    struct vio_fault *f = ctx;
    int rc = path_enter(f, VF_MKDIR, path);
    if (rc < 0)
        return rc;
    return mkdir(path, mode) ? -errno : 0;
}

/* ---- API ---------------------------------------------------------------- */

struct vio_fault *vio_fault_new(void)
{
    struct vio_fault *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    if (pthread_mutex_init(&f->mu, NULL) != 0) {
        free(f);
        return NULL;
    }
    f->io = (struct vio){
        .ctx = f,
        .open = f_open,
        .close = f_close,
        .pread = f_pread,
        .pwrite = f_pwrite,
        .fdatasync = f_fdatasync,
        .fsync = f_fsync,
        .ftruncate = f_ftruncate,
        .fstat = f_fstat,
        .rename = f_rename,
        .unlink = f_unlink,
        .mkdir = f_mkdir,
    };
    return f;
}

void vio_fault_free(struct vio_fault *f)
{
    if (f == NULL)
        return;
    vio_fault_disarm_all(f);
    for (size_t i = 0; i < f->fds_cap; i++)
        if (f->fds[i].file != NULL)
            file_unref(f->fds[i].file);
    while (f->files != NULL)
        file_unlist(f, f->files);
    free(f->fds);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const struct vio *vio_fault_io(struct vio_fault *f)
{
    return &f->io;
}

static bool rule_valid(const struct vio_fault_rule *r)
{
    if ((unsigned)r->op >= VF_OP_COUNT || r->count < -1)
        return false;
    switch (r->kind) {
    case VF_EIO:
    case VF_ENOSPC:
        return true;
    case VF_SHORT:
    case VF_TORN:
        return r->op == VF_PWRITE;
    case VF_BITFLIP:
        return r->op == VF_PREAD && r->bit <= 7 && r->position >= 0;
    default:
        return false;
    }
}

int vio_fault_arm(struct vio_fault *f, const struct vio_fault_rule *rule)
{
    if (!rule_valid(rule))
        return -EINVAL;
    char *suffix = NULL;
    if (rule->path_suffix != NULL && rule->path_suffix[0] != '\0') {
        suffix = strdup(rule->path_suffix);
        if (suffix == NULL)
            return -ENOMEM;
    }
    int id = -ENOSPC;
    lock(f);
    for (int i = 0; i < VIO_FAULT_RULES_MAX; i++) {
        if (!f->rules[i].armed) {
            f->rules[i] = (struct vf_rule){ .armed = true, .r = *rule, .suffix = suffix };
            f->rules[i].r.path_suffix = suffix;
            id = i;
            break;
        }
    }
    unlock(f);
    if (id < 0)
        free(suffix);
    return id;
}

void vio_fault_disarm_all(struct vio_fault *f)
{
    lock(f);
    for (int i = 0; i < VIO_FAULT_RULES_MAX; i++) {
        free(f->rules[i].suffix);
        f->rules[i] = (struct vf_rule){ 0 };
    }
    unlock(f);
}

uint64_t vio_fault_fired(struct vio_fault *f, int id)
{
    if (id < 0 || id >= VIO_FAULT_RULES_MAX)
        return 0;
    lock(f);
    uint64_t n = f->rules[id].armed ? f->rules[id].fired : 0;
    unlock(f);
    return n;
}

uint64_t vio_fault_calls(struct vio_fault *f, enum vf_op op)
{
    if ((unsigned)op >= VF_OP_COUNT)
        return 0;
    lock(f);
    uint64_t n = f->calls[op];
    unlock(f);
    return n;
}

int vio_fault_durable_len(struct vio_fault *f, const char *path, off_t *len_out)
{
    int rc = -ENOENT;
    lock(f);
    const struct vf_file *r = file_find(f, path);
    if (r != NULL) {
        *len_out = r->durable;
        rc = 0;
    }
    unlock(f);
    return rc;
}

/* Cuts the file at path down to len if it is longer. Returns 0 or -errno;
 * a file that no longer exists has nothing to lose. */
static int cut_to(const char *path, off_t len)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st))
        rc = -errno;
    else if (st.st_size > len && ftruncate(fd, len))
        rc = -errno;
    if (close(fd) && rc == 0)
        rc = -errno;
    return rc;
}

int vio_fault_crash(struct vio_fault *f)
{
    int rc = 0;
    lock(f);
    for (struct vf_file *r = f->files; r != NULL; r = r->next) {
        assert(file_ok(r));
        if (!r->reg || !r->dirty)
            continue;
        int c = cut_to(r->path, r->durable);
        if (c < 0 && rc == 0)
            rc = c;
    }
    while (f->files != NULL)
        file_unlist(f, f->files);
    for (size_t i = 0; i < f->fds_cap; i++)
        if (f->fds[i].file != NULL)
            f->fds[i].dead = true;
    unlock(f);
    return rc;
}
