/*
 * Data-directory lock (see dirlock.h). The lock file's contents are only a
 * hint for the refusal message: the lock itself is the flock, so a stale PID
 * in the file of a dead owner means nothing and is overwritten.
 */
#include "storage/dirlock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static pid_t read_owner(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long v = strtol(buf, NULL, 10);
    return v > 0 && v < INT_MAX ? (pid_t)v : 0;
}

/* Locks one file; 0, -EBUSY (owner filled) or -errno. create: make the
 * file if missing; otherwise a missing file is -ENOENT. */
static int lock_one(struct dirlock *l, const char *path, bool create, pid_t *owner)
{
    if (l->n >= DIRLOCK_FDS_MAX)
        return -EMLINK;
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        if (e == EWOULDBLOCK) {
            *owner = read_owner(fd);
            close(fd);
            return -EBUSY;
        }
        close(fd);
        return -e;
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    /* The PID is a courtesy to the next owner; failing to write it does not
     * weaken the lock, so it is not an error. */
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)len, 0) != len)
        (void)ftruncate(fd, 0);
    l->fds[l->n++] = fd;
    return 0;
}

int dirlock_acquire(struct dirlock *l, const char *dir, pid_t *owner, char *held_path, size_t cap)
{
    char path[PATH_MAX];
    *owner = 0;
    if (snprintf(path, sizeof path, "%s/%s", dir, DIRLOCK_NAME) >= (int)sizeof path)
        return -ENAMETOOLONG;
    int rc = lock_one(l, path, true, owner);
    if (rc == -EBUSY && held_path && cap)
        snprintf(held_path, cap, "%s", dir);
    return rc;
}

int dirlock_acquire_tree(struct dirlock *l, const char *dir, pid_t *owner, char *held_path,
                         size_t cap)
{
    char real[PATH_MAX], path[PATH_MAX];
    size_t start = l->n;
    int rc = dirlock_acquire(l, dir, owner, held_path, cap);
    if (rc)
        return rc;
    if (!realpath(dir, real))
        goto out_ok; /* the directory's own lock is held; ancestors unknown */
    for (char *slash = strrchr(real, '/'); slash; slash = strrchr(real, '/')) {
        if (slash == real)
            real[1] = '\0';
        else
            *slash = '\0';
        if (snprintf(path, sizeof path, "%s%s%s", real, slash == real ? "" : "/",
                     DIRLOCK_NAME) >= (int)sizeof path)
            break;
        rc = lock_one(l, path, false, owner);
        if (rc == -EBUSY) {
            if (held_path && cap)
                snprintf(held_path, cap, "%s", real);
            goto fail;
        }
        /* An ancestor we cannot open (no file, no permission) has no owner
         * we could collide with through this lock. */
        if (slash == real)
            break;
    }
out_ok:
    return 0;
fail:
    while (l->n > start)
        close(l->fds[--l->n]);
    return rc;
}

void dirlock_release(struct dirlock *l)
{
    while (l->n > 0)
        close(l->fds[--l->n]);
}
