/*
 * The closed segments' descriptor cache (storage/vlog_fdc.c, vlog.h): a log
 * with many closed segments holds a bounded number of descriptors however
 * it is read; reads through evictions return the right bytes; a span handed
 * out by vlog_read keeps reading its own bytes after its segment's cached
 * descriptor was evicted (and its number reused), after retention deleted
 * the file, and while another thread evicts; an open that meets EMFILE gives
 * the cache's descriptors back and succeeds.
 *
 * Descriptors are counted in /proc/self/fd, so the bound is the process's,
 * not the cache's own bookkeeping.
 */
#include <CUnit/Basic.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "storage/batch.h"
#include "storage/vlog.h"
#include "tests/support/tutil.h"
#include "verity/errors.h"

#define BATCHES 240       /* about four per 4 KiB segment: 60 segments */
#define SEG_BYTES 4096
#define LOG_FDS_MAX 8     /* what an open log may hold beyond the cache: active segment, indexes */

/* A log and what each batch in it should read back as. */
struct fixture {
    char *dir;
    struct vlog *log;
    uint64_t base[BATCHES + 1];  /* base offset of batch i; base[BATCHES] = end */
    uint8_t *bytes[BATCHES];     /* the stored batch (stamped by the append) */
    size_t len[BATCHES];
};

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory's own */
}

static void open_log(struct fixture *f, const char *dir, uint64_t retention_bytes)
{
    struct vlog_config c;
    vlog_config_default(&c);
    c.durability = VLOG_DURABILITY_OS;
    c.segment_bytes = SEG_BYTES;
    c.checkpoint_records = 0;
    c.tree_off = true;
    c.retention_bytes = retention_bytes;
    CU_ASSERT_EQUAL_FATAL(vlog_open(dir, &c, tu_now_ms(), &f->log, NULL), 0);
}

/* Builds a log of BATCHES batches of 4 records (~900 bytes each). */
static void fixture_make(struct fixture *f, const char *tag, uint64_t retention_bytes)
{
    struct batch_builder b;
    memset(f, 0, sizeof *f);
    f->dir = tu_tmpdir(tag);
    open_log(f, f->dir, retention_bytes);
    CU_ASSERT_EQUAL_FATAL(batch_builder_init(&b, 1 << 16), 0);
    for (uint32_t i = 0; i < BATCHES; i++) {
        struct vlog_append_info ai;
        CU_ASSERT_EQUAL_FATAL(tu_build_batch(&b, tag, (uint64_t)i * 4, 4, 200, 1000 + i), 0);
        CU_ASSERT_EQUAL_FATAL(vlog_append(f->log, b.buf, b.len, 1000 + i, &ai), 0);
        f->base[i] = ai.base_offset;
        f->base[i + 1] = ai.last_offset + 1;
        f->bytes[i] = malloc(b.len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(f->bytes[i]);
        memcpy(f->bytes[i], b.buf, b.len); /* as stamped: base offset and chain */
        f->len[i] = b.len;
    }
    batch_builder_deinit(&b);
    struct vlog_info info;
    vlog_get_info(f->log, &info);
    CU_ASSERT_FATAL(info.segments >= 50);
}

static void fixture_free(struct fixture *f)
{
    if (f->log)
        CU_ASSERT_EQUAL(vlog_close(f->log, tu_now_ms()), 0);
    for (int i = 0; i < BATCHES; i++)
        free(f->bytes[i]);
    tu_rmrf(f->dir);
    free(f->dir);
}

/* Batch i through vlog_read_copy: 0 when the bytes are the stored ones. */
static int check_copy(struct fixture *f, int i)
{
    static __thread uint8_t buf[1 << 14];
    size_t len = 0;
    int rc = vlog_read_copy(f->log, f->base[i], f->base[i + 1], buf, sizeof buf, &len);
    if (rc)
        return rc;
    return len == f->len[i] && memcmp(buf, f->bytes[i], len) == 0 ? 0 : VERITY_ECORRUPT;
}

/* Batch i through a span's own descriptor: 0 when the bytes are right. */
static int check_span(struct fixture *f, int i, const struct vlog_span *sp)
{
    uint8_t buf[1 << 14];
    if (sp->length != f->len[i] || sp->base_offset != f->base[i] || sp->length > sizeof buf)
        return VERITY_EOFFSET;
    if (pread(sp->fd, buf, sp->length, (off_t)sp->position) != (ssize_t)sp->length)
        return -EIO;
    return memcmp(buf, f->bytes[i], sp->length) == 0 ? 0 : VERITY_ECORRUPT;
}

static int read_span(struct fixture *f, int i, struct vlog_span *sp)
{
    size_t n = 0;
    int rc = vlog_read(f->log, f->base[i], f->base[i + 1], 1, sp, 1, &n);
    return rc ? rc : n == 1 ? 0 : VERITY_ENOTFOUND;
}

/* Reads every batch both ways in the given direction; returns the most
 * descriptors seen open beyond f0. */
static int read_all(struct fixture *f, bool backwards, int f0)
{
    int most = 0;
    for (int k = 0; k < BATCHES; k++) {
        int i = backwards ? BATCHES - 1 - k : k;
        struct vlog_span sp;
        CU_ASSERT_EQUAL(check_copy(f, i), 0);
        CU_ASSERT_EQUAL_FATAL(read_span(f, i, &sp), 0);
        CU_ASSERT_EQUAL(check_span(f, i, &sp), 0);
        int held = count_fds() - f0;
        if (held > most)
            most = held;
        vlog_spans_close(&sp, 1);
        CU_ASSERT_EQUAL(sp.fd, -1);
    }
    return most;
}

static void test_many_segments_hold_bounded_descriptors(void)
{
    struct fixture f;
    struct vlog_fd_cache_stats st0, st;
    vlog_fd_cache_set_max(2);
    vlog_fd_cache_get_stats(&st0);
    int f0 = count_fds();
    fixture_make(&f, "fdc-bound", 0);
    /* Rolling 60 times left at most two closed segments open. */
    int after_write = count_fds() - f0;
    CU_ASSERT(after_write <= LOG_FDS_MAX + 2);
    int most = read_all(&f, false, f0);
    int back = read_all(&f, true, f0);
    most = most > back ? most : back;
    if (most > LOG_FDS_MAX + 2 + 1)
        fprintf(stderr, "descriptors held: %d beyond the start\n", most);
    CU_ASSERT(most <= LOG_FDS_MAX + 2 + 1); /* + the span being checked */
    vlog_fd_cache_get_stats(&st);
    CU_ASSERT(st.open <= 2);
    CU_ASSERT_EQUAL(st.max, 2);
    CU_ASSERT(st.opens - st0.opens >= 50);
    CU_ASSERT(st.evictions - st0.evictions >= 50);

    /* Reopening checks every closed segment and keeps two of them open. */
    CU_ASSERT_EQUAL(vlog_close(f.log, tu_now_ms()), 0);
    CU_ASSERT_EQUAL(count_fds(), f0); /* nothing leaked: spans, cache, log */
    open_log(&f, f.dir, 0);
    CU_ASSERT(count_fds() - f0 <= LOG_FDS_MAX + 2);
    CU_ASSERT(read_all(&f, false, f0) <= LOG_FDS_MAX + 2 + 1);
    CU_ASSERT_EQUAL(vlog_close(f.log, tu_now_ms()), 0);
    f.log = NULL;
    CU_ASSERT_EQUAL(count_fds(), f0);
    vlog_fd_cache_get_stats(&st);
    CU_ASSERT_EQUAL(st.open, 0);
    fixture_free(&f);

    /* Lowering the bound closes what is over it at once. */
    vlog_fd_cache_set_max(100);
    fixture_make(&f, "fdc-shrink", 0);
    vlog_fd_cache_get_stats(&st);
    CU_ASSERT(st.open >= 50);
    vlog_fd_cache_set_max(3);
    vlog_fd_cache_get_stats(&st);
    CU_ASSERT(st.open <= 3);
    CU_ASSERT(count_fds() - f0 <= LOG_FDS_MAX + 3);
    fixture_free(&f);
}

static void test_held_span_reads_its_bytes_after_eviction(void)
{
    struct fixture f;
    vlog_fd_cache_set_max(1);
    fixture_make(&f, "fdc-held", 64 * 1024);
    /* A fetch holds a span of the first segment... */
    struct vlog_span held;
    CU_ASSERT_EQUAL_FATAL(read_span(&f, 0, &held), 0);
    CU_ASSERT_EQUAL(held.segment, 0);
    CU_ASSERT_EQUAL(check_span(&f, 0, &held), 0);
    /* ...while reads of every other segment evict its cached descriptor
     * and reuse descriptor numbers. */
    for (int i = BATCHES - 1; i > 0; i--)
        CU_ASSERT_EQUAL(check_copy(&f, i), 0);
    /* The segment opened again serves identical bytes; so does the span. */
    struct vlog_span again;
    CU_ASSERT_EQUAL_FATAL(read_span(&f, 0, &again), 0);
    CU_ASSERT_EQUAL(again.segment, held.segment);
    CU_ASSERT_EQUAL(again.position, held.position);
    CU_ASSERT_EQUAL(check_span(&f, 0, &again), 0);
    CU_ASSERT_EQUAL(check_span(&f, 0, &held), 0);
    CU_ASSERT_EQUAL(check_copy(&f, 0), 0);
    vlog_spans_close(&again, 1);
    /* Retention deletes the file: the held span still reads its bytes. */
    CU_ASSERT(vlog_retain(f.log, tu_now_ms()) > 0);
    struct vlog_span gone;
    size_t n = 0;
    CU_ASSERT_EQUAL(vlog_read(f.log, 0, 1, 1, &gone, 1, &n), VERITY_EOFFSET);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(check_span(&f, 0, &held), 0);
    vlog_spans_close(&held, 1);
    fixture_free(&f);
}

struct reader {
    struct fixture f;
    int rounds;
    int bad;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    for (int k = 0; k < r->rounds; k++) {
        for (int i = 0; i < BATCHES; i++) {
            int j = (k & 1) ? BATCHES - 1 - i : i;
            struct vlog_span sp;
            if (check_copy(&r->f, j) != 0)
                r->bad++;
            if (read_span(&r->f, j, &sp) != 0) {
                r->bad++;
                continue;
            }
            if (check_span(&r->f, j, &sp) != 0)
                r->bad++;
            vlog_spans_close(&sp, 1);
        }
    }
    return NULL;
}

/* Two logs, each read by its own thread, share a cache of two: each evicts
 * the other's descriptors, never one a read is using. */
static void test_two_threads_share_a_small_cache(void)
{
    static struct reader r[2];
    vlog_fd_cache_set_max(2);
    fixture_make(&r[0].f, "fdc-t0", 0);
    fixture_make(&r[1].f, "fdc-t1", 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        r[i].rounds = tu_quick() ? 2 : 4;
        r[i].bad = 0;
        CU_ASSERT_EQUAL_FATAL(pthread_create(&t[i], NULL, reader_main, &r[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(r[i].bad, 0);
    }
    struct vlog_fd_cache_stats st;
    vlog_fd_cache_get_stats(&st);
    CU_ASSERT(st.open <= 2);
    fixture_free(&r[0].f);
    fixture_free(&r[1].f);
}

/* Highest descriptor number open now. */
static int max_fd(void)
{
    DIR *d = opendir("/proc/self/fd");
    int most = -1;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));) {
        int n = atoi(e->d_name);
        if (e->d_name[0] != '.' && n > most && n != dirfd(d))
            most = n;
    }
    closedir(d);
    return most;
}

static void test_emfile_gives_cached_descriptors_back(void)
{
    struct fixture f;
    struct vlog_fd_cache_stats st0, st;
    vlog_fd_cache_set_max(1000);
    fixture_make(&f, "fdc-emfile", 0); /* every closed segment's descriptor cached */
    vlog_fd_cache_get_stats(&st0);
    CU_ASSERT(st0.open >= 50);
    /* Empty the cache, then leave room for only a few descriptors (and the
     * holes the emptying left below them). */
    vlog_fd_cache_set_max(1);
    vlog_fd_cache_set_max(1000);
    vlog_fd_cache_get_stats(&st0);
    struct rlimit was, low;
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_NOFILE, &was), 0);
    low = was;
    low.rlim_cur = (rlim_t)max_fd() + 6;
    CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_NOFILE, &low), 0);
    /* Fill the holes below the limit too, then free three numbers. */
    static int filler[4096];
    int n_fill = 0;
    while (n_fill < 4096 && (filler[n_fill] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
        n_fill++;
    CU_ASSERT_EQUAL(errno, EMFILE);
    for (int k = 0; k < 3 && n_fill > 0; k++)
        close(filler[--n_fill]);
    int bad = 0;
    for (int i = 0; i < BATCHES; i++) {
        int rc = check_copy(&f, i);
        if (rc && !bad++)
            fprintf(stderr, "batch %d: %s\n", i, verity_errname(rc));
    }
    CU_ASSERT_EQUAL(setrlimit(RLIMIT_NOFILE, &was), 0);
    while (n_fill > 0)
        close(filler[--n_fill]);
    CU_ASSERT_EQUAL(bad, 0);
    vlog_fd_cache_get_stats(&st);
    CU_ASSERT(st.evictions > st0.evictions); /* only EMFILE evicts under a bound of 1000 */
    fixture_free(&f);
    vlog_fd_cache_set_max(VLOG_SEGMENT_FDS_DEFAULT);
}

int main(void)
{
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"many closed segments hold a bounded number of descriptors",
         test_many_segments_hold_bounded_descriptors},
        {"a held span reads its bytes after eviction, reopen and retention",
         test_held_span_reads_its_bytes_after_eviction},
        {"two threads share a cache of two", test_two_threads_share_a_small_cache},
        {"EMFILE gives the cached descriptors back", test_emfile_gives_cached_descriptors_back},
    };
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vlog_fdc", NULL, NULL);
    for (size_t i = 0; s && i < sizeof tests / sizeof tests[0]; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
