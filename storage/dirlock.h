/*
 * One owner per data directory: an exclusive flock(2) on <dir>/verity.lock,
 * taken before anything reads or writes the directory and held for the
 * owner's lifetime. The lock file holds the owner's PID (text, one line) so
 * a refused second owner can say who has it. flock is released by the
 * kernel when the owner dies, however it dies, so a lock left by a killed
 * broker never blocks the next start: the file stays, the lock does not.
 */
#ifndef VERITY_STORAGE_DIRLOCK_H
#define VERITY_STORAGE_DIRLOCK_H

#include <stddef.h>
#include <sys/types.h>

#define DIRLOCK_NAME "verity.lock"

/* Up to this many locks one process holds (the directory and ancestors). */
#define DIRLOCK_FDS_MAX 16

struct dirlock {
    int fds[DIRLOCK_FDS_MAX]; /* open lock files, -1 when unused */
    size_t n;
};

/* Takes the exclusive lock of dir (creating verity.lock; dir must exist)
 * and writes this process's PID into it. Returns 0; -EBUSY when another
 * process holds it (*owner its PID, 0 if unreadable, path in held_path);
 * or -errno. The lock is kept in l until dirlock_release. */
int dirlock_acquire(struct dirlock *l, const char *dir, pid_t *owner, char *held_path,
                    size_t cap) __attribute__((warn_unused_result));

/* For offline tools writing a log directory: takes dir's own lock and the
 * lock of every ancestor that has a verity.lock (a broker's data directory
 * above a partition). Same returns as dirlock_acquire; on -EBUSY nothing
 * is held. */
int dirlock_acquire_tree(struct dirlock *l, const char *dir, pid_t *owner, char *held_path,
                         size_t cap) __attribute__((warn_unused_result));

/* Releases every lock in l (the files stay). Safe on a zeroed or released l. */
void dirlock_release(struct dirlock *l);

#endif
