/*
 * group_assign: ordered-mode partition assignment, sticky and balanced.
 *
 * With P partitions and M members every member owns floor(P/M) or
 * ceil(P/M) partitions. After a join or leave: partitions of departed
 * members become orphans; the P mod M members that own the most keep
 * ceil(P/M) (ties: lower slot first), the rest floor(P/M); a member above
 * its quota gives up its highest-numbered partitions; orphans go, lowest
 * partition first, to members below quota in that same order. A member
 * keeps every partition it owned up to its quota, so only the partitions
 * that must move do. The result depends only on the previous assignment and
 * the member set, so replay rebuilds it exactly. Runs inside apply (JOIN,
 * LEAVE) and cannot fail once gassign_reserve succeeded.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/group/group_int.h"
#include "verity/verify.h"

int gassign_reserve(struct group *g, uint32_t n_members)
{
    if (n_members == 0)
        return 0;
    uint32_t need = (g->n_parts + n_members - 1) / n_members;
    for (uint32_t s = 0; s < g->cap_slots; s++) {
        struct gmember *m = &g->members[s];
        if (m->cap_parts >= need)
            continue;
        uint32_t *p = realloc(m->parts, need * sizeof(*p));
        if (!p)
            return -ENOMEM;
        m->parts = p;
        m->cap_parts = need;
    }
    return 0;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y);
}

void gassign_rebalance(struct group *g)
{
    uint32_t cnt[GROUP_MEMBERS_MAX], quota[GROUP_MEMBERS_MAX], order[GROUP_MEMBERS_MAX];
    uint64_t key[GROUP_MEMBERS_MAX];
    uint32_t nm = 0;
    memset(cnt, 0, sizeof(cnt));
    for (uint32_t p = 0; p < g->n_parts; p++) {
        uint32_t o = g->parts[p].owner;
        if (o != GNIL && (o >= g->n_slots || g->members[o].id == 0))
            g->parts[p].owner = o = GNIL;
        if (o != GNIL)
            cnt[o]++;
    }
    for (uint32_t s = 0; s < g->n_slots; s++) {
        g->members[s].n_parts = 0;
        if (g->members[s].id)
            order[nm++] = s;
    }
    VERITY_VERIFY(nm == g->n_members);
    if (nm == 0)
        return;
    /* Most partitions first, then lower slot. */
    for (uint32_t i = 0; i < nm; i++)
        key[i] = ((uint64_t)(UINT32_MAX - cnt[order[i]]) << 32) | order[i];
    qsort(key, nm, sizeof(key[0]), u64_cmp);
    for (uint32_t i = 0; i < nm; i++)
        order[i] = (uint32_t)key[i];
    uint32_t base = g->n_parts / nm, extra = g->n_parts % nm;
    for (uint32_t i = 0; i < nm; i++)
        quota[order[i]] = base + (i < extra ? 1 : 0);
    for (uint32_t p = g->n_parts; p-- > 0;) {
        uint32_t o = g->parts[p].owner;
        if (o != GNIL && cnt[o] > quota[o]) {
            g->parts[p].owner = GNIL;
            cnt[o]--;
        }
    }
    uint32_t k = 0;
    for (uint32_t p = 0; p < g->n_parts; p++) {
        if (g->parts[p].owner != GNIL)
            continue;
        while (k < nm && cnt[order[k]] >= quota[order[k]])
            k++;
        VERITY_VERIFY(k < nm);
        g->parts[p].owner = order[k];
        cnt[order[k]]++;
    }
    for (uint32_t p = 0; p < g->n_parts; p++) {
        struct gmember *m = &g->members[g->parts[p].owner];
        VERITY_VERIFY(m->n_parts < m->cap_parts);
        m->parts[m->n_parts++] = p;
    }
}
