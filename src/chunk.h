/* SPDX-License-Identifier: MIT */
/*
 * A chunk: one mapping of chunk_size bytes cut into runs of whole pages (Netty's PoolChunk
 * since 4.1.52). Runs tile the chunk: each page belongs to exactly one run, free or used.
 *
 * Invariants
 * - run_info[first page] and run_info[last page] of every run hold (pages << 1) | free;
 *   pages inside a run hold stale values that are never read (a run's neighbours are found
 *   through the page just before it and the page just after it, always run ends).
 * - No two free runs touch: freeing coalesces with free neighbours on both sides.
 * - Each free run is in exactly one bucket: the largest page class not above its length.
 *   A request for n pages takes, when n is not a page class's length, the lowest run of at
 *   least n pages in n's own bucket (the runs there are shorter than the next class, so
 *   this is the closest fit); else, and for a class's length, the lowest offset in the
 *   first non-empty bucket from the smallest page class >= n up (best fit by bucket,
 *   lowest address first), whose every run is long enough.
 * - free_bytes == chunk_size - pages in used runs * page_size.
 * - Dirty pages (free, and touched since they were last purged, so likely resident) are
 *   marked in `dirty`; those freed since the last purge pass also in `young`. Both bits are
 *   clear for every page of a used run. dirty_pages counts the dirty bits.
 *
 * Metadata (this struct and its arrays) is allocated with malloc, never inside the mapping
 * handed to users. Not thread-safe: the owning arena's lock guards it.
 */
#ifndef BP__CHUNK_H
#define BP__CHUNK_H

#include "size_class.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bp__arena;
struct bp__subpage;

/* A handle names a run, or a slot of a subpage run, inside one chunk:
 *   bits 40..63 run offset in pages | 17..39 run length in pages | 16 subpage | 0..15 slot */
static inline uint64_t bp__handle_make(uint32_t offset, uint32_t pages, bool subpage, uint32_t slot)
{
    return ((uint64_t)offset << 40) | ((uint64_t)pages << 17) | ((uint64_t)subpage << 16) | slot;
}
static inline uint32_t bp__handle_offset(uint64_t h) { return (uint32_t)(h >> 40); }
static inline uint32_t bp__handle_pages(uint64_t h) { return (uint32_t)(h >> 17) & 0x7fffffu; }
static inline bool bp__handle_is_subpage(uint64_t h) { return (h >> 16) & 1u; }
static inline uint32_t bp__handle_slot(uint64_t h) { return (uint32_t)(h & 0xffffu); }

/* An arena's index of the chunks in its lists by every page class they have a free run of
 * (every non-empty bucket, not only the largest): the first chunk of the lowest class from
 * a request's up holds a best fit over all of them. head[k] lists the chunks whose bucket
 * k is non-empty (linked through their fit_links); bit k of nonempty is set <=> head[k]. */
typedef struct bp__fit_index {
    struct bp__chunk *head[128]; /* a class per bit of bp__chunk.nonempty */
    uint64_t nonempty[2];
} bp__fit_index;

typedef struct bp__chunk {
    /* First cache line: what a chunk list's scan for a run reads of every chunk it passes
     * (a busy arena has dozens, mostly not in cache), so that a chunk that cannot serve
     * costs one line. The block is allocated cache-line aligned. */
    struct bp__chunk *next;      /* neighbours in its chunk list */
    size_t free_bytes;
    uint64_t nonempty[2];        /* bit k set <=> page class k's bucket has a run */
    const bp__size_classes *sc;
    struct bp__arena *arena;     /* owner; its lock guards everything below */
    struct bp__chunk *prev;
    uint8_t *base;               /* the mapping, sc->chunk_size bytes */
    /* The rest. */
    unsigned band;               /* index of the chunk list holding it */
    uint64_t empty_since_ms;     /* while retained: when it became empty */
    uint32_t *run_info;          /* per page, see above */
    struct bp__subpage **subpages; /* per page: the subpage whose run starts there */
    uint64_t *avail;             /* per page class: bitmap over pages of free run starts */
    uint64_t *avail_summary;     /* per page class: bit w set <=> avail word w != 0 */
    uint64_t *dirty;             /* per page: free and maybe resident (avail_words words) */
    uint64_t *young;             /* per page: freed since the last purge pass */
    size_t dirty_pages;
    size_t *dirty_sum;           /* NULL, or a sum of dirty_pages over chunks (the arena's
                                    for its lists, or for its retained chunks), kept in step
                                    here */
    uint64_t last_used;          /* the owner's clock at the last run taken or given back */
    unsigned avail_words, summary_words;
    bp__fit_index *fit;          /* the index it is in (its arena's while in the lists), or
                                    NULL: its buckets' changes update it */
    struct bp__chunk **fit_links; /* per page class k: [2k] previous, [2k + 1] next in
                                     fit->head[k]'s list */
} bp__chunk;

/* The lowest set bit at or above k (< 128) of a 128-bit map, or -1: "the first non-empty
 * page class from k up", for a chunk's buckets and the fit index alike. */
static inline int bp__bits128_first_from(const uint64_t bits[2], unsigned k)
{
    for (unsigned w = k / 64; w < 2; w++) {
        uint64_t word = bits[w];
        if (w == k / 64) word &= ~(uint64_t)0 << (k % 64);
        if (word != 0) return (int)(w * 64 + (unsigned)__builtin_ctzll(word));
    }
    return -1;
}

/* Puts the chunk into `fit` under every class it has a free run of, or takes it out of its
 * index; from then on its buckets' changes keep the index in step. */
void bp__chunk_fit_join(bp__chunk *chunk, bp__fit_index *fit);
void bp__chunk_fit_leave(bp__chunk *chunk);

/* Whether `fit` is consistent (links, bits, every listed chunk's bucket non-empty), and
 * lists `memberships` (chunk, class) pairs in all. */
bool bp__fit_index_check(const bp__fit_index *fit, size_t memberships);

/* The shortest free run of bucket `cls` that is at least `pages` long, among its first
 * BP__SHORTEST_RUN_LOOKS runs (lowest first): its offset and, in *length, its pages; -1
 * (and UINT32_MAX) when none of them is long enough. */
#define BP__SHORTEST_RUN_LOOKS 64
long bp__chunk_shortest_run(const bp__chunk *chunk, unsigned cls, uint32_t pages, uint32_t *length);

/* Maps a new chunk, all of it one free run. NULL when memory cannot be had. */
bp__chunk *bp__chunk_new(struct bp__arena *arena, const bp__size_classes *sc);

/* Unmaps the chunk and frees its metadata. */
void bp__chunk_delete(bp__chunk *chunk);

/* Where a run of `pages` pages (1 .. chunk pages) would be taken (see the invariants), or
 * -1 if no free run is long enough. Only a length that is no page class's looks inside a
 * bucket, at the runs of its own. */
long bp__chunk_find_run(const bp__chunk *chunk, uint32_t pages);

/* Takes `pages` pages from the free run starting at `start`, which must be at least that
 * long (an offset bp__chunk_find_run gave for that length): its first pages, or with
 * `high` its last ones (the rest stays free at start). Returns the first page taken. */
uint32_t bp__chunk_take_run(bp__chunk *chunk, uint32_t start, uint32_t pages, bool high);

/* Finds and takes a run of `pages` pages; returns its first page, or -1. */
long bp__chunk_alloc_run(bp__chunk *chunk, uint32_t pages);

/* Returns the run [offset, offset + pages) and coalesces it with free neighbours. */
void bp__chunk_free_run(bp__chunk *chunk, uint32_t offset, uint32_t pages);

/* Gives the OS back the dirty pages that stayed free for a whole pass (all of them with
 * `all`), in as few calls as there are ranges; then every remaining dirty page counts as
 * old for the next pass. Returns the bytes purged. */
size_t bp__chunk_purge(bp__chunk *chunk, bool all);

/* Gives the OS back up to max_pages dirty pages, lowest first: those free since before the
 * last pass, or with `young` any. The pass goes on (nothing becomes old). Returns the bytes
 * purged. */
size_t bp__chunk_purge_some(bp__chunk *chunk, bool young, size_t max_pages);

/* Whether [offset, offset + pages) is exactly one run, in use. */
bool bp__chunk_run_in_use(const bp__chunk *chunk, uint32_t offset, uint32_t pages);

/* Netty's usage: 100 when nothing is free, 0 when all is free, otherwise
 * 100 - free percentage, and 99 rather than 100 while any byte is free. */
int bp__chunk_usage(const bp__chunk *chunk);

/* Length in pages of the longest free run (for tests and stats; O(page classes)). */
uint32_t bp__chunk_longest_free_run(const bp__chunk *chunk);

/* Debug: checks every invariant above; returns false and stops at the first broken one. */
bool bp__chunk_check(const bp__chunk *chunk);

#endif
