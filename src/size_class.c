/* SPDX-License-Identifier: MIT */
/*
 * Size class table. Everything here is computed once per allocator; the hot lookups are
 * the table in the allocator's head (bp__allocator_head.classes) and the inline
 * bp__size_class_of in size_class.h.
 */
#include "size_class.h"

#include "common.h"

#include <string.h>

/* Classes 0..3 are 16, 32, 48, 64; after that each group g (g >= 0) spans
 * (64 << g, 128 << g] in four steps of 16 << g. */
size_t bp__size_class_size_compute(unsigned index)
{
    if (index < 4) return (size_t)16 * (index + 1);
    unsigned group = (index - 4) / 4;
    unsigned step = (index - 4) % 4;
    return ((size_t)64 << group) + (size_t)(step + 1) * ((size_t)16 << group);
}

static size_t lcm_pages(size_t slot, size_t page)
{
    size_t run = page;
    while (run % slot != 0) run += page;
    return run;
}

void bp__size_classes_init(bp__size_classes *sc, size_t page_size, size_t chunk_size)
{
    memset(sc, 0, sizeof *sc);
    sc->page_size = page_size;
    sc->chunk_size = chunk_size;
    sc->page_shift = bp__log2(page_size);
    sc->chunk_pages = (unsigned)(chunk_size >> sc->page_shift);

    unsigned n = 0;
    while (n < BP__MAX_CLASSES && bp__size_class_size_compute(n) <= chunk_size) {
        size_t size = bp__size_class_size_compute(n);
        sc->class_size[n] = size;
        sc->page_class_of[n] = -1;
        if (size < 4 * page_size) {
            size_t run = lcm_pages(size, page_size);
            sc->run_pages[n] = (uint32_t)(run >> sc->page_shift);
            sc->run_slots[n] = (uint32_t)(run / size);
            sc->nsmall = n + 1;
        } else {
            sc->run_pages[n] = (uint32_t)(size >> sc->page_shift);
            sc->run_slots[n] = 1;
        }
        if (size % page_size == 0) {
            sc->page_class_of[n] = (int16_t)sc->npage_classes;
            sc->page_class_pages[sc->npage_classes++] = (uint32_t)(size >> sc->page_shift);
        }
        n++;
    }
    sc->nclasses = n;
}

void bp__size_class_table_init(uint8_t *table, size_t entries)
{
    for (size_t i = 0; i < entries; i++) table[i] = (uint8_t)bp__size_class_compute(i << BP__LOG2_QUANTUM);
}
