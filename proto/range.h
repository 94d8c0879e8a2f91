/*
 * A half-open range of offsets [lo, hi), the one shape every offset set in
 * Verity uses: the group state machine's done ranges (broker/group/) and the
 * group consumer's held/acked/nacked sets (client/group_rset.c).
 */
#ifndef VERITY_PROTO_RANGE_H
#define VERITY_PROTO_RANGE_H

#include <stdint.h>

struct grange {
    uint64_t lo;
    uint64_t hi; /* exclusive */
};

#endif
