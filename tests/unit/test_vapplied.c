/*
 * The applied-position ring (broker/vsr/vapplied.c): the newest valid entry
 * the log still holds wins; damaged, misplaced or too-new entries are
 * ignored; a short or empty file yields nothing.
 */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <string.h>

#include "broker/vsr/vapplied.h"

static uint8_t file[VAPPLIED_FILE_SIZE];

static void put(uint64_t op, uint64_t end)
{
    struct vsr_state st;
    memset(&st, 0, sizeof st);
    st.op = op;
    memset(st.checksum, (int)(op & 0xff), sizeof st.checksum);
    memset(st.digest, (int)((op * 7) & 0xff), sizeof st.digest);
    uint8_t e[VAPPLIED_ENTRY_SIZE];
    uint64_t at = vapplied_encode(&st, end, e);
    CU_ASSERT_FATAL(at + VAPPLIED_ENTRY_SIZE <= sizeof file);
    memcpy(file + at, e, sizeof e);
}

static void test_pick(void)
{
    struct vsr_state st;
    uint64_t end = 99;
    memset(file, 0, sizeof file);
    CU_ASSERT_FALSE(vapplied_pick(file, sizeof file, 1000, &st, &end));
    CU_ASSERT_EQUAL(end, 0);
    CU_ASSERT_EQUAL(st.op, 0);
    for (uint64_t op = 1; op <= 100; op++) /* the ring wraps: ops 37..100 remain */
        put(op, op * 10);
    CU_ASSERT_TRUE(vapplied_pick(file, sizeof file, 100000, &st, &end));
    CU_ASSERT_EQUAL(st.op, 100);
    CU_ASSERT_EQUAL(end, 1000);
    CU_ASSERT_EQUAL(st.checksum[0], 100);
    CU_ASSERT_EQUAL(st.digest[5], (700 & 0xff));
    /* the log lost its tail: the newest entry it still holds */
    CU_ASSERT_TRUE(vapplied_pick(file, sizeof file, 555, &st, &end));
    CU_ASSERT_EQUAL(st.op, 55);
    CU_ASSERT_EQUAL(end, 550);
    /* a log shorter than every entry kept */
    CU_ASSERT_FALSE(vapplied_pick(file, sizeof file, 100, &st, &end));
    /* a flipped bit in the newest entry: the one before wins */
    size_t at = (100 % VAPPLIED_ENTRIES) * VAPPLIED_ENTRY_SIZE;
    file[at + 20] ^= 0x10;
    CU_ASSERT_TRUE(vapplied_pick(file, sizeof file, 100000, &st, &end));
    CU_ASSERT_EQUAL(st.op, 99);
    file[at + 20] ^= 0x10;
    /* a valid entry copied into the wrong slot is not trusted */
    memcpy(file + ((99 % VAPPLIED_ENTRIES) * VAPPLIED_ENTRY_SIZE), file + at, VAPPLIED_ENTRY_SIZE);
    memset(file + at, 0, VAPPLIED_ENTRY_SIZE);
    CU_ASSERT_TRUE(vapplied_pick(file, sizeof file, 100000, &st, &end));
    CU_ASSERT_EQUAL(st.op, 98);
    /* a torn (short) file: only whole entries count */
    CU_ASSERT_TRUE(vapplied_pick(file, 3 * VAPPLIED_ENTRY_SIZE + 17, 100000, &st, &end));
    CU_ASSERT_EQUAL(st.op, 66); /* slots 0..2 hold ops 64, 65, 66 */
    CU_ASSERT_FALSE(vapplied_pick(file, VAPPLIED_ENTRY_SIZE - 1, 100000, &st, &end));
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("vapplied", NULL, NULL);
    CU_add_test(s, "newest valid entry the log holds; damage and misplacement ignored", test_pick);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
