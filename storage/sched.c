/*
 * sched_slice_set (sched.h): one sched_setattr call on the calling thread,
 * keeping its policy (SCHED_OTHER) and nice value.
 */
#include "storage/sched.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The kernel's struct sched_attr (include/uapi/linux/sched/types.h), which
 * glibc 2.36 does not declare. */
struct sched_attr_v1 {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;
    uint64_t sched_deadline;
    uint64_t sched_period;
    uint32_t sched_util_min;
    uint32_t sched_util_max;
};

int sched_slice_set(uint32_t us)
{
#if defined(SYS_sched_getattr) && defined(SYS_sched_setattr)
    if (us == 0)
        return 0;
    struct sched_attr_v1 a;
    memset(&a, 0, sizeof a);
    if (syscall(SYS_sched_getattr, 0, &a, (unsigned)sizeof a, 0) != 0)
        return -errno;
    if (a.sched_policy != 0) /* not SCHED_OTHER: the operator chose; leave it */
        return 0;
    a.size = sizeof a;
    a.sched_flags = 0;
    a.sched_runtime = (uint64_t)us * 1000;
    if (syscall(SYS_sched_setattr, 0, &a, 0) != 0)
        return -errno;
    return 0;
#else
    (void)us;
    return -ENOSYS;
#endif
}
