/* SPDX-License-Identifier: MIT */
/*
 * A subpage: one run of pages cut into equal slots of one small size class, with a bitmap
 * of the slots in use (Netty's PoolSubpage). A subpage with a free slot sits in its
 * arena's pool for that class, so a small allocation finds a slot without searching chunks.
 *
 * Invariants
 * - nfree == nslots - (bits set in used), 0 <= nfree <= nslots.
 * - in_pool <=> nfree > 0; a subpage leaves the pool when its last slot is taken and comes
 *   back when one is freed.
 * - Every word before search_from has no free slot, so the lowest free slot is found from
 *   there (slots are handed out lowest address first).
 * Guarded by the owning arena's lock.
 */
#ifndef BP__SUBPAGE_H
#define BP__SUBPAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bp__chunk;

typedef struct bp__subpage {
    struct bp__chunk *chunk;
    struct bp__subpage *prev, *next; /* links in the arena's pool for this class */
    uint32_t run_offset, run_pages;  /* the run, in pages of the chunk */
    uint32_t slot_size;
    uint32_t nslots, nfree;
    uint32_t search_from;            /* first bitmap word that may have a free slot */
    unsigned class_index;
    bool in_pool;
    uint64_t used[];                 /* bit s set <=> slot s is handed out */
} bp__subpage;

/* The arena's list of subpages of one class that have a free slot. */
typedef struct bp__subpage_pool {
    bp__subpage *head;
    size_t count;
} bp__subpage_pool;

bp__subpage *bp__subpage_new(struct bp__chunk *chunk, uint32_t run_offset, uint32_t run_pages,
                             unsigned class_index, uint32_t slot_size, uint32_t nslots);
void bp__subpage_delete(bp__subpage *sp);

/* Takes the lowest min(n, nfree) free slots (n > 0; the subpage must have one), a bitmap
 * word at a time, into slots[] in address order; returns how many. Leaves the pool when
 * full. */
unsigned bp__subpage_alloc_slots(bp__subpage *sp, bp__subpage_pool *pool, uint32_t *slots, unsigned n);

/* Frees a slot. Returns true when the subpage is now empty and should give its run back:
 * it is then already out of the pool. An empty subpage that is the pool's only member is
 * kept (returns false), so a class in steady use does not map and unmap runs. */
bool bp__subpage_free_slot(bp__subpage *sp, bp__subpage_pool *pool, uint32_t slot);

void bp__subpage_pool_push(bp__subpage_pool *pool, bp__subpage *sp);
void bp__subpage_pool_remove(bp__subpage_pool *pool, bp__subpage *sp);

#endif
