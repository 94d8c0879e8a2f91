/*
 * verityd_powerloss: verityd for the power-loss scenario of the cluster
 * fault tests (tests/cluster/cluster_e2e.py power-loss, issue 10). The same
 * program as verityd (broker/verityd_main.c), with file operations that keep
 * an undo record of every write and truncation not yet made durable, and a
 * power cut on SIGUSR2:
 *
 *   pwrite / ftruncate  before the call, the bytes it will replace (those
 *                       below the file's current size) and the size are
 *                       kept, newest first, per file (by path)
 *   fdatasync / fsync   once the sync returns 0, the records of that file
 *                       taken before the sync began are dropped: those
 *                       writes are durable
 *   SIGUSR2             a thread that waits for it takes the lock (no write
 *                       is in flight then, and none starts again), applies
 *                       every file's records newest first (old bytes back,
 *                       old size back), syncs the files and _exit(9)s. The
 *                       files are left as a power loss right after the last
 *                       successful sync of each would leave them: every
 *                       byte not fdatasync'd is gone, nothing older is.
 *
 * Not modelled: directory entries (a name created, renamed or unlinked
 * survives as it is, as with tests/support/vio_fault.c); writes that bypass
 * the broker's struct vio (signed checkpoint files, the auth store, the
 * data directory lock). A write's undo is taken from the file as the
 * process sees it (page cache), which is the state a sync would have made
 * durable.
 *
 * A sync in flight when the cut comes counts as not done: its file rolls
 * back to the previous sync (a real power cut may keep more; never less).
 *
 * VERITYD_POWERLOSS_LIE=1 makes it a lying disk: every fdatasync/fsync
 * returns 0 and makes nothing durable, so a power cut undoes every write
 * since the start. The harness's negative control (cluster_e2e.py
 * power-loss --lying-disk) runs it to show the check finds lost
 * acknowledged writes when durability is missing.
 *
 * usage: as verityd (every flag and VERITY_* variable); `kill -USR2 PID` is
 * the power cut. Every write takes one lock and a pread of what it replaces:
 * slower than verityd, for tests only.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "broker/broker.h"
#include "storage/vio.h"

#define PL_FILES_MAX 16384
#define PL_FDS_MAX 65536
#define PL_PATH_MAX 1024
#define PL_UNDO_BYTES_MAX (256ull << 20) /* a truncation cutting more is taken as durable */

struct undo {
    struct undo *next; /* older */
    uint64_t seq;
    off_t off;         /* old bytes go back here */
    size_t len;
    off_t old_size;    /* then the file gets this size */
    uint8_t data[];
};

struct pl_file {
    char path[PL_PATH_MAX]; /* "" = slot free (or unlinked) */
    struct undo *undo;      /* newest first */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct pl_file files[PL_FILES_MAX];
static int fdmap[PL_FDS_MAX]; /* fd -> files index + 1, 0 = untracked */
static uint64_t seq;
static bool lie; /* VERITYD_POWERLOSS_LIE=1: syncs succeed and make nothing durable */

static void undo_drop(struct undo **head, uint64_t upto)
{
    /* records are newest first: drop the tail whose seq <= upto */
    struct undo **pp = head;
    while (*pp && (*pp)->seq > upto)
        pp = &(*pp)->next;
    struct undo *u = *pp;
    *pp = NULL;
    while (u) {
        struct undo *n = u->next;
        free(u);
        u = n;
    }
}

static int file_find(const char *path, bool create)
{
    int free_slot = -1;
    for (int i = 0; i < PL_FILES_MAX; i++) {
        if (files[i].path[0] && strcmp(files[i].path, path) == 0)
            return i;
        if (!files[i].path[0] && !files[i].undo && free_slot < 0)
            free_slot = i;
    }
    if (!create || free_slot < 0 || strlen(path) >= PL_PATH_MAX)
        return -1;
    snprintf(files[free_slot].path, PL_PATH_MAX, "%s", path);
    return free_slot;
}

static struct pl_file *file_of_fd(int fd)
{
    return fd >= 0 && fd < PL_FDS_MAX && fdmap[fd] ? &files[fdmap[fd] - 1] : NULL;
}

/* Records what [off, off+n) of fd now holds (below its size) and its size. */
static void keep_undo(struct pl_file *f, int fd, off_t off, size_t n)
{
    struct stat st;
    if (fstat(fd, &st))
        return;
    size_t len = 0;
    if (off < st.st_size)
        len = (size_t)(st.st_size - off) < n ? (size_t)(st.st_size - off) : n;
    if (len > PL_UNDO_BYTES_MAX)
        return;
    struct undo *u = malloc(sizeof *u + len);
    if (!u)
        return;
    u->seq = ++seq;
    u->off = off;
    u->old_size = st.st_size;
    u->len = len;
    size_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, u->data + got, len - got, off + (off_t)got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    u->len = got;
    u->next = f->undo;
    f->undo = u;
}

static int pl_open(void *c, const char *path, int flags, mode_t mode)
{
    int fd = vio_posix.open(vio_posix.ctx, path, flags, mode);
    if (fd < 0)
        return fd;
    pthread_mutex_lock(&mu);
    int i = file_find(path, true);
    if (fd < PL_FDS_MAX)
        fdmap[fd] = i + 1;
    pthread_mutex_unlock(&mu);
    (void)c;
    return fd;
}

static int pl_close(void *c, int fd)
{
    pthread_mutex_lock(&mu);
    if (fd >= 0 && fd < PL_FDS_MAX)
        fdmap[fd] = 0;
    pthread_mutex_unlock(&mu);
    return vio_posix.close(c, fd);
}

static ssize_t pl_pread(void *c, int fd, void *buf, size_t n, off_t off)
{
    return vio_posix.pread(c, fd, buf, n, off);
}

static ssize_t pl_pwrite(void *c, int fd, const void *buf, size_t n, off_t off)
{
    pthread_mutex_lock(&mu);
    struct pl_file *f = file_of_fd(fd);
    if (f)
        keep_undo(f, fd, off, n);
    ssize_t r = vio_posix.pwrite(c, fd, buf, n, off);
    pthread_mutex_unlock(&mu);
    return r;
}

static int pl_sync(void *c, int fd, bool data)
{
    if (lie)
        return 0;
    pthread_mutex_lock(&mu);
    uint64_t upto = seq;
    pthread_mutex_unlock(&mu);
    int rc = data ? vio_posix.fdatasync(c, fd) : vio_posix.fsync(c, fd);
    if (rc == 0) {
        pthread_mutex_lock(&mu);
        struct pl_file *f = file_of_fd(fd);
        if (f)
            undo_drop(&f->undo, upto);
        pthread_mutex_unlock(&mu);
    }
    return rc;
}

static int pl_fdatasync(void *c, int fd) { return pl_sync(c, fd, true); }
static int pl_fsync(void *c, int fd) { return pl_sync(c, fd, false); }

static int pl_ftruncate(void *c, int fd, off_t len)
{
    pthread_mutex_lock(&mu);
    struct pl_file *f = file_of_fd(fd);
    struct stat st;
    if (f && fstat(fd, &st) == 0)
        keep_undo(f, fd, len, st.st_size > len ? (size_t)(st.st_size - len) : 0);
    int r = vio_posix.ftruncate(c, fd, len);
    pthread_mutex_unlock(&mu);
    return r;
}

static int pl_fstat(void *c, int fd, struct stat *st) { return vio_posix.fstat(c, fd, st); }

static int pl_rename(void *c, const char *from, const char *to)
{
    pthread_mutex_lock(&mu);
    int r = vio_posix.rename(c, from, to);
    if (r == 0) {
        int t = file_find(to, false), s = file_find(from, false);
        if (t >= 0) { /* replaced: its name now means the renamed file */
            files[t].path[0] = '\0';
            undo_drop(&files[t].undo, UINT64_MAX);
        }
        if (s >= 0)
            snprintf(files[s].path, PL_PATH_MAX, "%s", to);
    }
    pthread_mutex_unlock(&mu);
    return r;
}

static int pl_unlink(void *c, const char *path)
{
    pthread_mutex_lock(&mu);
    int r = vio_posix.unlink(c, path);
    int i = r == 0 ? file_find(path, false) : -1;
    if (i >= 0) {
        files[i].path[0] = '\0';
        undo_drop(&files[i].undo, UINT64_MAX);
    }
    pthread_mutex_unlock(&mu);
    return r;
}

static int pl_mkdir(void *c, const char *path, mode_t mode) { return vio_posix.mkdir(c, path, mode); }

static const struct vio pl_io = {
    .ctx = NULL,
    .open = pl_open,
    .close = pl_close,
    .pread = pl_pread,
    .pwrite = pl_pwrite,
    .fdatasync = pl_fdatasync,
    .fsync = pl_fsync,
    .ftruncate = pl_ftruncate,
    .fstat = pl_fstat,
    .rename = pl_rename,
    .unlink = pl_unlink,
    .mkdir = pl_mkdir,
};

/* The power cut: every file back to its state at its last sync, then exit
 * without running anything else of the process. */
static void *cut_thread(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;
    while (sigwait(set, &sig) != 0 || sig != SIGUSR2)
        ;
    pthread_mutex_lock(&mu); /* held until _exit: no write runs any more */
    unsigned long nfiles = 0, nundo = 0;
    unsigned long long bytes = 0;
    for (int i = 0; i < PL_FILES_MAX; i++) {
        struct pl_file *f = &files[i];
        if (!f->path[0] || !f->undo)
            continue;
        int fd = open(f->path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        nfiles++;
        for (struct undo *u = f->undo; u; u = u->next) {
            nundo++;
            bytes += u->len;
            size_t put = 0;
            while (put < u->len) {
                ssize_t w = pwrite(fd, u->data + put, u->len - put, u->off + (off_t)put);
                if (w <= 0)
                    break;
                put += (size_t)w;
            }
            if (ftruncate(fd, u->old_size) != 0)
                break;
        }
        (void)fsync(fd);
        close(fd);
    }
    char line[200];
    int n = snprintf(line, sizeof line,
                     "verityd_powerloss: power cut: %lu files rolled back, %lu unsynced writes, "
                     "%llu bytes restored\n",
                     nfiles, nundo, bytes);
    if (n > 0)
        (void)!write(2, line, (size_t)n);
    _exit(9);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *l = getenv("VERITYD_POWERLOSS_LIE");
    lie = l && strcmp(l, "1") == 0;
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    /* blocked before any thread starts, so every thread inherits the mask
     * and only cut_thread takes SIGUSR2 */
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_t t;
    if (pthread_create(&t, NULL, cut_thread, &set) != 0) {
        fprintf(stderr, "verityd_powerloss: cannot start the power-cut thread\n");
        return 1;
    }
    pthread_detach(t);
    return verityd_main(argc, argv, &pl_io);
}
