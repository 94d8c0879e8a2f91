/*
 * VERITY_VERIFY(cond): an assertion that stays on in release builds. It is
 * for invariants whose violation would corrupt data (chain continuity,
 * offsets strictly increasing, commit <= op, pending-list consistency): it
 * prints file, line and the condition, then aborts. assert() is for checks
 * that may be compiled out.
 */
#ifndef VERITY_VERIFY_H
#define VERITY_VERIFY_H

#include <stdio.h>
#include <stdlib.h>

#define VERITY_VERIFY(cond)                                                                        \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0)) {                                                        \
            fprintf(stderr, "%s:%d: VERITY_VERIFY(%s) failed\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
