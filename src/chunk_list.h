/* SPDX-License-Identifier: MIT */
/*
 * Chunk lists: chunks grouped by usage into bands (Netty's PoolChunkList), so allocation
 * prefers chunks that are already well used and a chunk that empties can be unmapped.
 *
 *   band   usage range   after alloc, usage >= max: move up    after free, usage < min: move down
 *   qInit  [-, 25)       -> q000                               never (stays, never unmapped)
 *   q000   [1, 50)       -> q025                               unmapped (it is empty)
 *   q025   [25, 75)      -> q050                               -> q000
 *   q050   [50, 100)     -> q075                               -> q025
 *   q075   [75, 100)     -> q100                               -> q050
 *   q100   [100, -]      -                                     -> q075
 *
 * A move continues as far as the usage demands. Guarded by the arena's lock.
 *
 * Besides the list of all its chunks, a band files each chunk under the page class of its
 * largest free run (jemalloc keeps its extents by size the same way): a request for a run
 * of class p takes the first chunk filed at the lowest class >= p - one bitmap scan, no
 * walk over chunks that cannot serve it (with hundreds of fragmented chunks that walk was
 * most of a normal allocation). Every change to a chunk's runs goes through this file, which
 * files the chunk again.
 */
#ifndef BP__CHUNK_LIST_H
#define BP__CHUNK_LIST_H

#include "chunk.h"

#include <stdbool.h>
#include <stddef.h>

enum { BP__Q_INIT, BP__Q000, BP__Q025, BP__Q050, BP__Q075, BP__Q100, BP__NBANDS };

#define BP__MAX_PAGE_CLASSES 128 /* bp__chunk.nonempty has this many bits */

typedef struct bp__chunk_list {
    bp__chunk *head;
    bp__chunk *by_class[BP__MAX_PAGE_CLASSES]; /* chunks by largest free run class */
    uint64_t filed[2];          /* bit k set <=> by_class[k] != NULL */
    struct bp__chunk_list *up, *down; /* down is NULL for q000 (empty chunks are unmapped)
                                         and the list itself for qInit */
    int min_usage, max_usage;
    size_t count;
    unsigned band;
} bp__chunk_list;

/* Sets up the six bands of one arena, linked as in the table. */
void bp__chunk_lists_init(bp__chunk_list lists[BP__NBANDS]);

/* Band names for stats: "qInit", "q000", ... */
const char *bp__chunk_band_name(unsigned band);

/* Puts a chunk into `list`, or further up if its usage demands. */
void bp__chunk_list_add(bp__chunk_list *list, bp__chunk *chunk);

void bp__chunk_list_remove(bp__chunk_list *list, bp__chunk *chunk);

/* How many chunks filed under one class a pick looks at. */
#define BP__CHUNK_PICK_SPAN 8

/* Of the chunks filed under page class k (there must be one), among the first
 * BP__CHUNK_PICK_SPAN the one with the most dirty pages: its free pages are likelier still
 * resident, and using them spares a page fault for each, and leaves pages long given back
 * given back. */
bp__chunk *bp__chunk_list_pick(const bp__chunk_list *list, unsigned k);

/* For a length that is no page class's, whose own class is `own` (the class below its
 * ceiling): a chunk filed under own with a free run of at least `pages` pages (at
 * *offset, see bp__chunk_find_run), preferring one with that many dirty pages, among the
 * first 2 * BP__CHUNK_PICK_SPAN; NULL if none of them has one. */
bp__chunk *bp__chunk_list_pick_fit(const bp__chunk_list *list, uint32_t pages, unsigned own, long *offset);

/* To be called after a run was taken from `chunk` (a member of `list`): files it again and
 * moves it up as its usage demands. */
void bp__chunk_list_took(bp__chunk_list *list, bp__chunk *chunk);

/* Takes a run of `pages` pages (page_class = bp__page_class_ceil(pages)) from the chunk
 * the list picks at the lowest class with room (bp__chunk_list_pick); on success returns
 * the offset and stores the chunk in *out. Returns -1 when no chunk in the list has room. */
long bp__chunk_list_alloc_run(bp__chunk_list *list, uint32_t pages, unsigned page_class, bp__chunk **out);

/* To be called after a run of `chunk` (a member of `list`) was freed: files it again and
 * moves it down as its usage demands. Returns false when the chunk emptied below q000: it
 * has then been taken out of every list and the caller must delete it. */
bool bp__chunk_list_after_free(bp__chunk_list *list, bp__chunk *chunk);

/* Debug: every chunk of the list filed under its largest free run's class, every filed
 * chunk a member, the bitmap matching the class lists. */
bool bp__chunk_list_check(const bp__chunk_list *list);

#endif
