/*
 * State transfer helpers (xfer.h): copying whole batches out of a log and
 * appending a peer's chunk exactly.
 */
#include "broker/xfer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/batch.h"
#include "storage/vlog.h"
#include "verity/errors.h"

int64_t xfer_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int xfer_append_chunk(struct vlog *log, const uint8_t *data, uint32_t len)
{
    for (uint32_t pos = 0; pos < len;) {
        struct batch_hdr h;
        uint32_t left = len - pos;
        int rc = batch_hdr_decode(data + pos, left, &h);
        if (rc)
            return rc;
        if (h.length == 0 || h.length > left)
            return VERITY_EPROTO;
        struct vlog_append_info ai;
        /* vlog_append_exact does not modify the bytes */
        if ((rc = vlog_append_exact(log, (uint8_t *)(uintptr_t)(data + pos), h.length, &ai)))
            return rc;
        pos += h.length;
    }
    return 0;
}

int xfer_read_chunk(struct vlog *log, uint64_t from, uint64_t end, uint8_t *buf, size_t cap,
                    size_t *len)
{
    *len = 0;
    if (from == end)
        return 0;
    if (from > end)
        return VERITY_EOFFSET;
    return vlog_read_copy(log, from, end, buf, cap, len);
}

int xfer_log_scan(struct vlog *log, uint64_t *bad_offset)
{
    struct vlog_info info;
    vlog_get_info(log, &info);
    size_t cap = 1u << 20;
    uint8_t *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    for (uint64_t off = info.start_offset; off < info.end_offset;) {
        size_t len = 0;
        rc = vlog_read_copy(log, off, info.end_offset, buf, cap, &len);
        if (rc == VERITY_ELIMIT && cap < (64u << 20)) {
            /* one batch larger than the buffer: grow once */
            free(buf);
            cap = 64u << 20;
            if (!(buf = malloc(cap)))
                return -ENOMEM;
            continue;
        }
        if (rc || len == 0) {
            if (!rc)
                rc = VERITY_ECORRUPT;
            *bad_offset = off;
            break;
        }
        /* advance past the whole batches read */
        uint64_t next = off;
        for (size_t pos = 0; pos < len;) {
            struct batch_hdr h;
            if (batch_hdr_decode(buf + pos, len - pos, &h) || h.length == 0) {
                rc = VERITY_ECORRUPT;
                break;
            }
            next = h.base_offset + h.record_count;
            pos += h.length;
        }
        if (rc || next <= off) {
            rc = rc ? rc : VERITY_ECORRUPT;
            *bad_offset = off;
            break;
        }
        off = next;
    }
    free(buf);
    return rc;
}

int xfer_move_aside(const char *dir, int64_t now_ms, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/damaged-%lld", dir, (long long)now_ms);
    if (n < 0 || (size_t)n >= cap)
        return -ENAMETOOLONG;
    if (mkdir(out, 0755))
        return -errno;
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "vsr") ||
            !strncmp(e->d_name, "damaged-", 8))
            continue;
        char from[PATH_MAX], to[PATH_MAX];
        if ((size_t)snprintf(from, sizeof from, "%s/%s", dir, e->d_name) >= sizeof from ||
            (size_t)snprintf(to, sizeof to, "%s/%s", out, e->d_name) >= sizeof to) {
            rc = -ENAMETOOLONG;
            break;
        }
        if (rename(from, to)) {
            rc = -errno;
            break;
        }
    }
    closedir(d);
    if (rc == 0) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            (void)fsync(fd);
            close(fd);
        }
    }
    return rc;
}
