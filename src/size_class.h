/* SPDX-License-Identifier: MIT */
/*
 * Size classes: jemalloc's table, as Netty >= 4.1.52 uses it. A 16-byte quantum and four
 * classes per doubling: 16 32 48 64 | 80 96 112 128 | 160 192 224 256 | 320 ... so no
 * class wastes more than 20% of a request above 64 bytes. Classes run up to the chunk size;
 * above it a request is huge (an exact mapping of its own).
 *
 *   small   class_size < 4 pages (<= 28 KiB with 8 KiB pages): a slot of a subpage run
 *   normal  class_size >= 4 pages, <= chunk size: a run of whole pages
 *   huge    > chunk size
 *
 * Classes whose size is a whole number of pages are also "page classes"; chunks bucket
 * their free runs by page class.
 */
#ifndef BP__SIZE_CLASS_H
#define BP__SIZE_CLASS_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>

#define BP__LOG2_QUANTUM 4
/* BP__MAX_CLASSES (at least the 4 + 4 * 24 classes up to a 1 GiB chunk) is in bytepool.h, whose thread
 * cache head has a bin per class, and so is BP__INLINE_SIZE_LIMIT: sizes up to it are looked
 * up in a table (an allocator's, bp__allocator_head.classes). */

typedef struct bp__size_classes {
    size_t page_size;
    size_t chunk_size;
    unsigned page_shift;
    unsigned chunk_pages;
    unsigned nclasses;       /* classes 0 .. nclasses-1 have class_size <= chunk_size */
    unsigned nsmall;         /* classes 0 .. nsmall-1 are small */
    unsigned npage_classes;  /* page classes, in size order */
    size_t class_size[BP__MAX_CLASSES];
    uint32_t run_pages[BP__MAX_CLASSES];   /* pages of a run of this class */
    uint32_t run_slots[BP__MAX_CLASSES];   /* small: slots in a run; normal: 1 */
    int16_t page_class_of[BP__MAX_CLASSES]; /* page class index, or -1 if not page-sized */
    uint32_t page_class_pages[BP__MAX_CLASSES]; /* pages of each page class */
} bp__size_classes;

/* Builds the table for a page and chunk size (powers of two, chunk >= 8 pages, as
 * bp_config_validate ensures). */
void bp__size_classes_init(bp__size_classes *sc, size_t page_size, size_t chunk_size);

/* Fills a lookup table of `entries` bytes: entry (size + 15) >> 4 is the smallest class
 * >= size (the same for every chunk size; entry 0, for size 0, is class 0). */
void bp__size_class_table_init(uint8_t *table, size_t entries);

/* The smallest class >= size, computed without the table; valid for any size below
 * 2^62 and independent of the chunk size (it may exceed nclasses). Inline: the allocation
 * fast path computes normal classes with it (a few instructions, no call). */
static inline unsigned bp__size_class_compute(size_t size)
{
    if (size <= 64) return size == 0 ? 0 : (unsigned)((size - 1) >> BP__LOG2_QUANTUM);
    unsigned lg = bp__log2(size - 1);       /* size - 1 lies in [2^lg, 2^(lg+1)) */
    unsigned group = lg - 6;
    unsigned step = (unsigned)((size - 1) >> (lg - 2)) - 4; /* which quarter of the group */
    return 4 + 4 * group + step;
}

/* The size of class `index`, computed (not looked up). */
size_t bp__size_class_size_compute(unsigned index);

/* The smallest class >= size, or sc->nclasses when size is huge. O(1). */
static inline unsigned bp__size_class_of(const bp__size_classes *sc, size_t size)
{
    return size > sc->chunk_size ? sc->nclasses : bp__size_class_compute(size);
}

static inline int bp__size_class_is_small(const bp__size_classes *sc, unsigned index)
{
    return index < sc->nsmall;
}

/* Page class of the smallest page class holding at least `pages` pages (1 .. chunk_pages).
 * A whole number of pages always lands on a page class: below 4 pages the classes step by
 * at most half a page, from 4 pages on every class is a page multiple. Inline: every run
 * split and merge asks, several times. */
static inline unsigned bp__page_class_ceil(const bp__size_classes *sc, uint32_t pages)
{
    unsigned cls = bp__size_class_compute((size_t)pages << sc->page_shift);
    BP__ASSERT(cls < sc->nclasses && sc->page_class_of[cls] >= 0);
    return (unsigned)sc->page_class_of[cls];
}

/* Page class of the largest page class holding at most `pages` pages (1 .. chunk_pages). */
static inline unsigned bp__page_class_floor(const bp__size_classes *sc, uint32_t pages)
{
    unsigned ceil = bp__page_class_ceil(sc, pages);
    return sc->page_class_pages[ceil] > pages ? ceil - 1 : ceil;
}

#endif
