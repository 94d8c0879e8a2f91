/*
 * A bump allocator for jansson on the hot path. Parsing an event with
 * jansson's default allocator costs a malloc per value and a free per
 * value when the batch is dropped; measured, that was half of the worker's
 * CPU. With the arena, jansson allocates from large blocks and free is a
 * no-op; prj_arena_reset() makes every block reusable once the caller has
 * dropped every jansson value it allocated since the last reset (the
 * worker: after a batch is committed or dropped).
 *
 * Only the thread that uses jansson may call these (the worker's polling
 * thread). The config is parsed before the arena is enabled and freed
 * after prj_arena_disable() has given jansson malloc and free back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/project/prj.h"

#define ARENA_BLOCK (4u << 20)

struct block {
    struct block *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

static struct block *head;         /* block in use */
static struct block *spare;        /* blocks reset, ready for reuse */
static struct block *full;         /* blocks filled since the last reset */

static struct block *block_new(size_t size)
{
    struct block *b = malloc(sizeof *b + size);
    if (!b)
        return NULL;
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

static void *arena_malloc(size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!head || head->used + n > head->size) {
        if (head) {
            head->next = full;
            full = head;
        }
        if (spare && n <= spare->size) {
            head = spare;
            spare = spare->next;
            head->next = NULL;
            head->used = 0;
        } else {
            head = block_new(n > ARENA_BLOCK ? n : ARENA_BLOCK);
            if (!head)
                return NULL;
        }
    }
    void *p = head->data + head->used;
    head->used += n;
    return p;
}

static void arena_free(void *p)
{
    (void)p;
}

void prj_arena_enable(void)
{
    json_set_alloc_funcs(arena_malloc, arena_free);
}

void prj_arena_reset(void)
{
    while (full) {
        struct block *b = full;
        full = b->next;
        if (b->size == ARENA_BLOCK) {
            b->next = spare;
            spare = b;
        } else {
            free(b);
        }
    }
    if (head)
        head->used = 0;
}

void prj_arena_disable(void)
{
    json_set_alloc_funcs(malloc, free);
    prj_arena_reset();
    struct block *lists[] = {head, spare};
    for (size_t i = 0; i < 2; i++)
        while (lists[i]) {
            struct block *b = lists[i];
            lists[i] = b->next;
            free(b);
        }
    head = spare = NULL;
}
