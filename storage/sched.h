/*
 * Scheduling hint for latency-critical threads (issue 16).
 *
 * Linux's EEVDF scheduler (6.6+; per-task slices since 6.12) lets a
 * SCHED_OTHER thread ask for a shorter time slice (sched_attr.sched_runtime).
 * Its CPU share does not change; what changes is that its virtual deadline
 * comes sooner, so when it wakes on a busy CPU it preempts a task with the
 * default slice (about 0.7-3 ms) instead of queueing behind it. The broker's
 * loop and commit threads and libverity's I/O thread run for microseconds
 * per wake-up and are woken per message: on a machine whose cores are busy,
 * their wake-up latency is the tail.
 */
#ifndef VERITY_STORAGE_SCHED_H
#define VERITY_STORAGE_SCHED_H

#include <stdint.h>

/* Asks for a slice of us microseconds for the calling thread (the kernel
 * clamps it to 100 us .. 100 ms); threads it creates afterwards inherit it.
 * us == 0 leaves the thread as it is. Returns 0 or -errno (-ENOSYS, -EINVAL
 * or -E2BIG from a kernel without per-task slices: nothing changed). */
int sched_slice_set(uint32_t us) __attribute__((warn_unused_result));

#endif
