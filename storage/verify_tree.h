/*
 * verify_tree: an offline check of a partition's Merkle tree files against
 * its segments (rules in verify_tree.c). Used by `verity log verify` and
 * tests/unit/test_crash.c.
 */
#ifndef VERITY_VERIFY_TREE_H
#define VERITY_VERIFY_TREE_H

#include <stdbool.h>
#include <stdint.h>

struct verify_tree_report {
    bool present;           /* tree files exist */
    uint64_t leaves;        /* complete leaves on disk */
    uint64_t batches;       /* batches in the segments (from first_checked on) */
    uint64_t first_checked; /* first leaf compared (> 0 after retention) */
    uint64_t tree_behind;   /* batches without a leaf yet (filled on the next open) */
    uint64_t notes_checked; /* checkpoint batches whose tree note verified and matched */
    bool found;
    int code;
    uint64_t leaf; /* the leaf of the finding */
    char reason[160];
};

/* 0 when the tree matches the log (or there is no tree); the finding's
 * code with out->found; or an error when the check could not run. */
int verify_tree_dir(const char *dir, struct verify_tree_report *out)
    __attribute__((warn_unused_result));

#endif
