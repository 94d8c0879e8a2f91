/*
 * grset: a set of u64 offsets kept as sorted, disjoint, non-adjacent
 * half-open ranges. The group consumer keeps one per partition for what it
 * holds, what the application acked and what it nacked. Offsets of one
 * partition arrive mostly in ascending order, so adds land at the end and
 * removals at the front; both are O(1) then and O(ranges) at worst.
 *
 * Invariant (grset_ok): r[i].lo < r[i].hi, r[i].hi < r[i+1].lo (a gap of at
 * least one offset between ranges), count == sum of (hi - lo).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/group_int.h"
#include "verity/verify.h"

void grset_init(struct grset *s)
{
    memset(s, 0, sizeof *s);
}

void grset_deinit(struct grset *s)
{
    free(s->r);
    memset(s, 0, sizeof *s);
}

void grset_clear(struct grset *s)
{
    s->n = 0;
    s->count = 0;
}

bool grset_ok(const struct grset *s)
{
    uint64_t count = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->r[i].lo >= s->r[i].hi)
            return false;
        if (i + 1 < s->n && s->r[i].hi >= s->r[i + 1].lo)
            return false;
        count += s->r[i].hi - s->r[i].lo;
    }
    return count == s->count && s->n <= s->cap;
}

static int reserve(struct grset *s, uint32_t n)
{
    if (n <= s->cap)
        return 0;
    uint32_t cap = s->cap ? s->cap : 4;
    while (cap < n) {
        if (cap > UINT32_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    struct grange *r = realloc(s->r, (size_t)cap * sizeof *r);
    if (!r)
        return -ENOMEM;
    s->r = r;
    s->cap = cap;
    return 0;
}

int grset_reserve(struct grset *s, uint32_t extra)
{
    if (extra > UINT32_MAX - s->n)
        return -ENOMEM;
    return reserve(s, s->n + extra);
}

uint32_t grset_find(const struct grset *s, uint64_t off)
{
    /* The common case: at or past the last range. */
    if (s->n == 0 || s->r[s->n - 1].hi <= off)
        return s->n;
    uint32_t lo = 0, hi = s->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->r[mid].hi > off)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

bool grset_contains(const struct grset *s, uint64_t off)
{
    uint32_t i = grset_find(s, off);
    return i < s->n && s->r[i].lo <= off;
}

uint64_t grset_min(const struct grset *s)
{
    return s->n ? s->r[0].lo : UINT64_MAX;
}

int grset_add(struct grset *s, uint64_t lo, uint64_t hi)
{
    VERITY_VERIFY(lo < hi);
    /* Fast path: strictly after the last range, or touching it. */
    if (s->n == 0 || s->r[s->n - 1].hi <= lo) {
        if (s->n && s->r[s->n - 1].hi == lo) {
            s->r[s->n - 1].hi = hi;
            s->count += hi - lo;
            return 0;
        }
        if (reserve(s, s->n + 1))
            return -ENOMEM;
        s->r[s->n++] = (struct grange){lo, hi};
        s->count += hi - lo;
        return 0;
    }
    /* First range that ends at or after lo (touching counts), and the first
     * that starts after hi: everything in [i, j) merges with [lo, hi). */
    uint32_t i = lo ? grset_find(s, lo - 1) : 0;
    uint32_t j = i;
    while (j < s->n && s->r[j].lo <= hi)
        j++;
    if (i == j) {
        if (reserve(s, s->n + 1))
            return -ENOMEM;
        memmove(&s->r[i + 1], &s->r[i], (size_t)(s->n - i) * sizeof s->r[0]);
        s->r[i] = (struct grange){lo, hi};
        s->n++;
        s->count += hi - lo;
        return 0;
    }
    uint64_t nlo = s->r[i].lo < lo ? s->r[i].lo : lo;
    uint64_t nhi = s->r[j - 1].hi > hi ? s->r[j - 1].hi : hi;
    uint64_t removed = 0;
    for (uint32_t k = i; k < j; k++)
        removed += s->r[k].hi - s->r[k].lo;
    s->r[i] = (struct grange){nlo, nhi};
    memmove(&s->r[i + 1], &s->r[j], (size_t)(s->n - j) * sizeof s->r[0]);
    s->n -= j - i - 1;
    s->count = s->count - removed + (nhi - nlo);
    return 0;
}

int grset_remove(struct grset *s, uint64_t lo, uint64_t hi)
{
    if (lo >= hi)
        return 0;
    uint32_t i = grset_find(s, lo);
    if (i == s->n || s->r[i].lo >= hi)
        return 0;
    /* Removing from the middle of one range splits it. */
    if (s->r[i].lo < lo && s->r[i].hi > hi) {
        if (reserve(s, s->n + 1))
            return -ENOMEM;
        memmove(&s->r[i + 2], &s->r[i + 1], (size_t)(s->n - i - 1) * sizeof s->r[0]);
        s->r[i + 1] = (struct grange){hi, s->r[i].hi};
        s->r[i].hi = lo;
        s->n++;
        s->count -= hi - lo;
        return 0;
    }
    uint32_t first_gone = i, end_gone = i;
    if (s->r[i].lo < lo) {
        /* Cut the tail of range i; it stays. */
        s->count -= s->r[i].hi - lo;
        s->r[i].hi = lo;
        first_gone = end_gone = i + 1;
    }
    uint32_t k = first_gone;
    while (k < s->n && s->r[k].hi <= hi) {
        s->count -= s->r[k].hi - s->r[k].lo;
        k++;
    }
    end_gone = k;
    if (k < s->n && s->r[k].lo < hi) {
        /* Cut the head of range k; it stays. */
        s->count -= hi - s->r[k].lo;
        s->r[k].lo = hi;
    }
    if (end_gone > first_gone) {
        memmove(&s->r[first_gone], &s->r[end_gone], (size_t)(s->n - end_gone) * sizeof s->r[0]);
        s->n -= end_gone - first_gone;
    }
    return 0;
}
