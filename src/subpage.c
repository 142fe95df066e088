/* SPDX-License-Identifier: MIT */
/*
 * Slots of one small size class inside a run. A used-bitmap plus a search hint: allocation
 * is a scan for the first word with a zero bit, starting at the hint.
 */
#include "subpage.h"

#include "common.h"

#include <stdlib.h>

bp__subpage *bp__subpage_new(struct bp__chunk *chunk, uint32_t run_offset, uint32_t run_pages,
                             unsigned class_index, uint32_t slot_size, uint32_t nslots)
{
    size_t words = (nslots + 63) / 64;
    bp__subpage *sp = calloc(1, sizeof *sp + words * sizeof(uint64_t));
    if (sp == NULL) return NULL;
    sp->chunk = chunk;
    sp->run_offset = run_offset;
    sp->run_pages = run_pages;
    sp->class_index = class_index;
    sp->slot_size = slot_size;
    sp->nslots = nslots;
    sp->nfree = nslots;
    /* Bits past the last slot are marked used so that the scan never returns them. */
    if (nslots % 64 != 0) sp->used[words - 1] = ~(uint64_t)0 << (nslots % 64);
    return sp;
}

void bp__subpage_delete(bp__subpage *sp) { free(sp); }

void bp__subpage_pool_push(bp__subpage_pool *pool, bp__subpage *sp)
{
    BP__ASSERT(!sp->in_pool);
    sp->prev = NULL;
    sp->next = pool->head;
    if (pool->head != NULL) pool->head->prev = sp;
    pool->head = sp;
    pool->count++;
    sp->in_pool = true;
}

void bp__subpage_pool_remove(bp__subpage_pool *pool, bp__subpage *sp)
{
    BP__ASSERT(sp->in_pool);
    if (sp->prev != NULL) sp->prev->next = sp->next;
    else pool->head = sp->next;
    if (sp->next != NULL) sp->next->prev = sp->prev;
    sp->prev = sp->next = NULL;
    pool->count--;
    sp->in_pool = false;
}

unsigned bp__subpage_alloc_slots(bp__subpage *sp, bp__subpage_pool *pool, uint32_t *slots, unsigned n)
{
    BP__ASSERT(sp->nfree > 0 && n > 0);
    unsigned want = n < sp->nfree ? n : sp->nfree, got = 0;
    uint32_t w = sp->search_from;
    for (;;) {
        /* The free bits of one word are taken in one go, lowest first; bits past the last
         * slot are never free (see bp__subpage_new), so a free bit is a real slot. */
        uint64_t free_bits = ~sp->used[w];
        while (free_bits != 0 && got < want) {
            slots[got++] = w * 64 + (uint32_t)__builtin_ctzll(free_bits);
            free_bits &= free_bits - 1;
        }
        sp->used[w] = ~free_bits;
        if (got == want) break;
        w++;
    }
    sp->search_from = w;
    sp->nfree -= want;
    if (sp->nfree == 0) bp__subpage_pool_remove(pool, sp);
    return want;
}

bool bp__subpage_free_slot(bp__subpage *sp, bp__subpage_pool *pool, uint32_t slot)
{
    uint32_t w = slot / 64;
    uint64_t mask = (uint64_t)1 << (slot % 64);
    BP__ASSERT(slot < sp->nslots && (sp->used[w] & mask));
    sp->used[w] &= ~mask;
    if (w < sp->search_from) sp->search_from = w;
    if (sp->nfree++ == 0) bp__subpage_pool_push(pool, sp);
    if (sp->nfree < sp->nslots || pool->count == 1) return false;
    bp__subpage_pool_remove(pool, sp);
    return true;
}
