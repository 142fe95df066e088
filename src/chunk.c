/* SPDX-License-Identifier: MIT */
/*
 * Runs of pages inside a chunk: split on allocation, coalesced on free, bucketed by page
 * class with a two-level bitmap per bucket so that "lowest free run of at least n pages"
 * costs a few word scans, whatever the chunk size.
 */
#include "chunk.h"

#include "common.h"
#include "os.h"

#include <stdlib.h>
#include <string.h>

static inline uint32_t run_info_make(uint32_t pages, bool free) { return (pages << 1) | free; }
static inline uint32_t run_info_pages(uint32_t info) { return info >> 1; }
static inline bool run_info_free(uint32_t info) { return info & 1u; }

static inline uint64_t *bucket_words(const bp__chunk *c, unsigned cls)
{
    return c->avail + (size_t)cls * c->avail_words;
}

static inline uint64_t *bucket_summary(const bp__chunk *c, unsigned cls)
{
    return c->avail_summary + (size_t)cls * c->summary_words;
}

static void mark_run(bp__chunk *c, uint32_t offset, uint32_t pages, bool free)
{
    uint32_t info = run_info_make(pages, free);
    c->run_info[offset] = info;
    c->run_info[offset + pages - 1] = info;
}

static void fit_link(bp__chunk *c, unsigned k)
{
    bp__fit_index *fit = c->fit;
    bp__chunk *head = fit->head[k];
    c->fit_links[2 * k] = NULL;
    c->fit_links[2 * k + 1] = head;
    if (head != NULL) head->fit_links[2 * k] = c;
    fit->head[k] = c;
    fit->nonempty[k / 64] |= (uint64_t)1 << (k % 64);
}

static void fit_unlink(bp__chunk *c, unsigned k)
{
    bp__fit_index *fit = c->fit;
    bp__chunk *prev = c->fit_links[2 * k], *next = c->fit_links[2 * k + 1];
    if (prev != NULL) prev->fit_links[2 * k + 1] = next;
    else fit->head[k] = next;
    if (next != NULL) next->fit_links[2 * k] = prev;
    if (fit->head[k] == NULL) fit->nonempty[k / 64] &= ~((uint64_t)1 << (k % 64));
}

void bp__chunk_fit_join(bp__chunk *c, bp__fit_index *fit)
{
    BP__ASSERT(c->fit == NULL);
    c->fit = fit;
    for (unsigned w = 0; w < 2; w++)
        for (uint64_t bits = c->nonempty[w]; bits != 0; bits &= bits - 1)
            fit_link(c, w * 64 + (unsigned)__builtin_ctzll(bits));
}

void bp__chunk_fit_leave(bp__chunk *c)
{
    if (c->fit == NULL) return;
    for (unsigned w = 0; w < 2; w++)
        for (uint64_t bits = c->nonempty[w]; bits != 0; bits &= bits - 1)
            fit_unlink(c, w * 64 + (unsigned)__builtin_ctzll(bits));
    c->fit = NULL;
}

bool bp__fit_index_check(const bp__fit_index *fit, size_t memberships)
{
    size_t seen = 0;
    for (unsigned k = 0; k < 128; k++) {
        bool bit = (fit->nonempty[k / 64] >> (k % 64)) & 1;
        if (bit != (fit->head[k] != NULL)) return false;
        const bp__chunk *prev = NULL;
        for (const bp__chunk *c = fit->head[k]; c != NULL; prev = c, c = c->fit_links[2 * k + 1]) {
            if (c->fit != fit || c->fit_links[2 * k] != prev || !((c->nonempty[k / 64] >> (k % 64)) & 1))
                return false;
            if (++seen > memberships) return false;
        }
    }
    return seen == memberships;
}

static void bucket_insert(bp__chunk *c, uint32_t offset, uint32_t pages)
{
    unsigned cls = bp__page_class_floor(c->sc, pages);
    uint64_t *words = bucket_words(c, cls);
    words[offset / 64] |= (uint64_t)1 << (offset % 64);
    bucket_summary(c, cls)[offset / 4096] |= (uint64_t)1 << ((offset / 64) % 64);
    uint64_t bit = (uint64_t)1 << (cls % 64);
    if (!(c->nonempty[cls / 64] & bit)) {
        c->nonempty[cls / 64] |= bit;
        if (c->fit != NULL) fit_link(c, cls);
    }
    mark_run(c, offset, pages, true);
}

static void bucket_remove(bp__chunk *c, uint32_t offset, uint32_t pages)
{
    unsigned cls = bp__page_class_floor(c->sc, pages);
    uint64_t *words = bucket_words(c, cls);
    words[offset / 64] &= ~((uint64_t)1 << (offset % 64));
    if (words[offset / 64] != 0) return;
    uint64_t *summary = bucket_summary(c, cls);
    summary[offset / 4096] &= ~((uint64_t)1 << ((offset / 64) % 64));
    if (summary[offset / 4096] != 0) return;
    for (unsigned s = 0; s < c->summary_words; s++)
        if (summary[s] != 0) return;
    c->nonempty[cls / 64] &= ~((uint64_t)1 << (cls % 64));
    if (c->fit != NULL) fit_unlink(c, cls);
}

/* Lowest run start in a bucket known to be non-empty. */
static uint32_t bucket_lowest(const bp__chunk *c, unsigned cls)
{
    const uint64_t *summary = bucket_summary(c, cls);
    const uint64_t *words = bucket_words(c, cls);
    for (unsigned s = 0; s < c->summary_words; s++) {
        if (summary[s] == 0) continue;
        unsigned w = s * 64 + (unsigned)__builtin_ctzll(summary[s]);
        return w * 64 + (unsigned)__builtin_ctzll(words[w]);
    }
    BP__ASSERT(!"bucket_lowest on an empty bucket");
    return 0;
}

bp__chunk *bp__chunk_new(struct bp__arena *arena, const bp__size_classes *sc)
{
    unsigned pages = sc->chunk_pages;
    unsigned avail_words = (pages + 63) / 64;
    unsigned summary_words = (avail_words + 63) / 64;
    size_t nclasses = sc->npage_classes;

    /* One block for the struct and its arrays; 8-byte arrays first keeps them aligned. */
    size_t bytes = sizeof(bp__chunk) + (nclasses * (avail_words + summary_words) + 2 * avail_words) * sizeof(uint64_t) +
                   2 * nclasses * sizeof(bp__chunk *) + pages * sizeof(struct bp__subpage *) +
                   pages * sizeof(uint32_t);
    bytes = (bytes + BP__CACHE_LINE - 1) & ~(size_t)(BP__CACHE_LINE - 1);
    bp__chunk *c = aligned_alloc(BP__CACHE_LINE, bytes); /* see the struct's first line */
    if (c == NULL) return NULL;
    memset(c, 0, bytes);
    c->base = bp__os_map(sc->chunk_size);
    if (c->base == NULL) {
        free(c);
        return NULL;
    }
    BP__POISON(c->base, sc->chunk_size); /* nothing in it is handed out yet */
    c->arena = arena;
    c->sc = sc;
    c->avail_words = avail_words;
    c->summary_words = summary_words;
    c->avail = (uint64_t *)(c + 1);
    c->avail_summary = c->avail + nclasses * avail_words;
    c->dirty = c->avail_summary + nclasses * summary_words;
    c->young = c->dirty + avail_words; /* a fresh mapping: nothing resident, nothing dirty */
    c->fit_links = (bp__chunk **)(c->young + avail_words);
    c->subpages = (struct bp__subpage **)(c->fit_links + 2 * nclasses);
    c->run_info = (uint32_t *)(c->subpages + pages);
    c->free_bytes = sc->chunk_size;
    bucket_insert(c, 0, pages);
    return c;
}

void bp__chunk_delete(bp__chunk *chunk)
{
    if (chunk == NULL) return;
    BP__UNPOISON(chunk->base, chunk->sc->chunk_size); /* the next mapping there starts clean */
    bp__os_unmap(chunk->base, chunk->sc->chunk_size);
    free(chunk);
}

/* Bits set in x. Not __builtin_popcountll: without -mpopcnt (baseline x86-64) that is a
 * call into libgcc on every run allocation. */
static inline unsigned count_bits(uint64_t x)
{
    x -= (x >> 1) & 0x5555555555555555ull;
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
}

/* Sets (or clears) bits [from, from + n) of a page bitmap across words; returns how many
 * changed. */
static BP__NOINLINE size_t set_page_bits_long(uint64_t *bits, uint32_t from, uint32_t n, bool value)
{
    size_t changed = 0;
    while (n > 0) {
        uint32_t w = from / 64, bit = from % 64, len = 64 - bit < n ? 64 - bit : n;
        uint64_t mask = (len == 64 ? ~(uint64_t)0 : (((uint64_t)1 << len) - 1)) << bit;
        changed += count_bits(value ? mask & ~bits[w] : mask & bits[w]);
        bits[w] = value ? bits[w] | mask : bits[w] & ~mask;
        from += len;
        n -= len;
    }
    return changed;
}

/* The same, inline for a range inside one word (every run of up to 64 pages that does not
 * straddle a word: most of them), without the loop's prologue. */
static inline size_t set_page_bits(uint64_t *bits, uint32_t from, uint32_t n, bool value)
{
    if (BP__UNLIKELY(from % 64 + n > 64)) return set_page_bits_long(bits, from, n, value);
    uint64_t mask = (n == 64 ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1)) << (from % 64);
    uint64_t *word = &bits[from / 64];
    uint64_t flips = value ? mask & ~*word : mask & *word;
    *word ^= flips;
    return flips == 0 ? 0 : count_bits(flips);
}

static inline void note_dirty(bp__chunk *c, size_t pages)
{
    c->dirty_pages += pages;
    if (c->dirty_sum != NULL) *c->dirty_sum += pages;
}

static inline void note_clean(bp__chunk *c, size_t pages)
{
    c->dirty_pages -= pages;
    if (c->dirty_sum != NULL) *c->dirty_sum -= pages;
}

/* Pages of word w to purge now: dirty, and (unless all) not freed since the last pass. */
static inline uint64_t ripe_pages(const bp__chunk *c, unsigned w, bool all)
{
    return c->dirty[w] & (all ? ~(uint64_t)0 : ~c->young[w]);
}

/* Purges ripe pages (with `all`, every dirty one) from the lowest up, a range a call,
 * until max_pages have gone; returns how many went. */
static size_t purge_pages(bp__chunk *c, bool all, size_t max_pages)
{
    size_t purged = 0;
    const unsigned shift = c->sc->page_shift;
    const uint32_t limit = c->avail_words * 64;
    uint32_t page = 0;
    while (page < limit && purged < max_pages) {
        unsigned w = page / 64;
        uint64_t ripe = ripe_pages(c, w, all) & (~(uint64_t)0 << (page % 64));
        if (ripe == 0) {
            page = (w + 1) * 64;
            continue;
        }
        uint32_t start = w * 64 + (uint32_t)__builtin_ctzll(ripe), end = start;
        while (end < limit) { /* the first page past start that is not ripe */
            uint64_t unripe = ~ripe_pages(c, end / 64, all) & (~(uint64_t)0 << (end % 64));
            if (unripe != 0) {
                end = end / 64 * 64 + (uint32_t)__builtin_ctzll(unripe);
                break;
            }
            end = (end / 64 + 1) * 64;
        }
        if (end - start > max_pages - purged) end = start + (uint32_t)(max_pages - purged);
        bp__os_purge(c->base + ((size_t)start << shift), (size_t)(end - start) << shift);
        purged += end - start;
        note_clean(c, set_page_bits(c->dirty, start, end - start, false));
        set_page_bits(c->young, start, end - start, false); /* young pages are dirty ones */
        page = end;
    }
    return purged;
}

size_t bp__chunk_purge(bp__chunk *c, bool all)
{
    size_t pages = purge_pages(c, all, SIZE_MAX);
    memset(c->young, 0, c->avail_words * sizeof *c->young);
    return pages << c->sc->page_shift;
}

size_t bp__chunk_purge_some(bp__chunk *c, bool young, size_t max_pages)
{
    return purge_pages(c, young, max_pages) << c->sc->page_shift;
}

/* The lowest run of at least `pages` pages in bucket cls, or -1. */
static long bucket_first_fit(const bp__chunk *c, unsigned cls, uint32_t pages)
{
    const uint64_t *summary = bucket_summary(c, cls);
    const uint64_t *words = bucket_words(c, cls);
    for (unsigned s = 0; s < c->summary_words; s++) {
        for (uint64_t sw = summary[s]; sw != 0; sw &= sw - 1) {
            unsigned w = s * 64 + (unsigned)__builtin_ctzll(sw);
            for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1) {
                uint32_t offset = w * 64 + (unsigned)__builtin_ctzll(bits);
                if (run_info_pages(c->run_info[offset]) >= pages) return offset;
            }
        }
    }
    return -1;
}

long bp__chunk_shortest_run(const bp__chunk *c, unsigned cls, uint32_t pages, uint32_t *length)
{
    const uint64_t *summary = bucket_summary(c, cls);
    const uint64_t *words = bucket_words(c, cls);
    long best = -1;
    uint32_t best_pages = UINT32_MAX;
    unsigned looked = 0;
    for (unsigned s = 0; s < c->summary_words; s++) {
        for (uint64_t sw = summary[s]; sw != 0; sw &= sw - 1) {
            unsigned w = s * 64 + (unsigned)__builtin_ctzll(sw);
            for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1) {
                uint32_t offset = w * 64 + (unsigned)__builtin_ctzll(bits);
                uint32_t run = run_info_pages(c->run_info[offset]);
                if (run >= pages && run < best_pages) {
                    best = offset;
                    best_pages = run;
                    if (run == pages) goto done;
                }
                if (++looked == BP__SHORTEST_RUN_LOOKS) goto done;
            }
        }
    }
done:
    *length = best_pages;
    return best;
}

long bp__chunk_find_run(const bp__chunk *c, uint32_t pages)
{
    BP__ASSERT(pages >= 1 && pages <= c->sc->chunk_pages);
    if (((size_t)pages << c->sc->page_shift) > c->free_bytes) return -1;
    unsigned ceil = bp__page_class_ceil(c->sc, pages);
    if (c->sc->page_class_pages[ceil] != pages) {
        unsigned own = ceil - 1; /* pages is no class's length: its bucket is the one below */
        if (c->nonempty[own / 64] & ((uint64_t)1 << (own % 64))) {
            long offset = bucket_first_fit(c, own, pages);
            if (offset >= 0) return offset;
        }
    }
    int cls = bp__bits128_first_from(c->nonempty, ceil);
    return cls < 0 ? -1 : (long)bucket_lowest(c, (unsigned)cls);
}

uint32_t bp__chunk_take_run(bp__chunk *c, uint32_t start, uint32_t pages, bool high)
{
    uint32_t run_pages = run_info_pages(c->run_info[start]);
    BP__ASSERT(run_pages >= pages && run_info_free(c->run_info[start]));
    bucket_remove(c, start, run_pages);
    uint32_t offset = high ? start + run_pages - pages : start;
    if (run_pages > pages) bucket_insert(c, high ? start : start + pages, run_pages - pages);
    mark_run(c, offset, pages, false);
    c->free_bytes -= (size_t)pages << c->sc->page_shift;
    note_clean(c, set_page_bits(c->dirty, offset, pages, false));
    set_page_bits(c->young, offset, pages, false);
    return offset;
}

long bp__chunk_alloc_run(bp__chunk *c, uint32_t pages)
{
    long offset = bp__chunk_find_run(c, pages);
    if (offset >= 0) bp__chunk_take_run(c, (uint32_t)offset, pages, false);
    return offset;
}

void bp__chunk_free_run(bp__chunk *c, uint32_t offset, uint32_t pages)
{
    BP__ASSERT(!run_info_free(c->run_info[offset]) && run_info_pages(c->run_info[offset]) == pages);
    c->free_bytes += (size_t)pages << c->sc->page_shift;
    note_dirty(c, set_page_bits(c->dirty, offset, pages, true)); /* it was used: resident */
    set_page_bits(c->young, offset, pages, true);
    if (offset > 0 && run_info_free(c->run_info[offset - 1])) {
        uint32_t left_pages = run_info_pages(c->run_info[offset - 1]);
        offset -= left_pages;
        bucket_remove(c, offset, left_pages);
        pages += left_pages;
    }
    uint32_t end = offset + pages;
    if (end < c->sc->chunk_pages && run_info_free(c->run_info[end])) {
        uint32_t right_pages = run_info_pages(c->run_info[end]);
        bucket_remove(c, end, right_pages);
        pages += right_pages;
    }
    bucket_insert(c, offset, pages);
}

bool bp__chunk_run_in_use(const bp__chunk *c, uint32_t offset, uint32_t pages)
{
    if (pages == 0 || offset >= c->sc->chunk_pages || pages > c->sc->chunk_pages - offset) return false;
    uint32_t info = run_info_make(pages, false);
    return c->run_info[offset] == info && c->run_info[offset + pages - 1] == info;
}

int bp__chunk_usage(const bp__chunk *c)
{
    if (c->free_bytes == 0) return 100;
    /* chunk_size = chunk_pages << page_shift, chunk_pages a power of two: shifts, not a
     * 64-bit division on every allocation and free of a run. */
    unsigned chunk_shift = c->sc->page_shift + (unsigned)__builtin_ctz(c->sc->chunk_pages);
    int free_percent = (int)((c->free_bytes * 100) >> chunk_shift);
    if (free_percent == 0) return 99;
    return 100 - free_percent;
}

uint32_t bp__chunk_longest_free_run(const bp__chunk *c)
{
    int cls = -1;
    for (int k = (int)c->sc->npage_classes - 1; k >= 0; k--) {
        if (c->nonempty[k / 64] & ((uint64_t)1 << (k % 64))) {
            cls = k;
            break;
        }
    }
    if (cls < 0) return 0;
    /* Runs in the top bucket differ in length; walk them all. */
    uint32_t longest = 0;
    const uint64_t *words = bucket_words(c, (unsigned)cls);
    for (unsigned w = 0; w < c->avail_words; w++) {
        for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1) {
            uint32_t offset = w * 64 + (unsigned)__builtin_ctzll(bits);
            uint32_t pages = run_info_pages(c->run_info[offset]);
            if (pages > longest) longest = pages;
        }
    }
    return longest;
}

bool bp__chunk_check(const bp__chunk *c)
{
    const bp__size_classes *sc = c->sc;
    size_t used_pages = 0;
    bool previous_free = false;
    for (uint32_t page = 0; page < sc->chunk_pages;) {
        uint32_t info = c->run_info[page];
        uint32_t pages = run_info_pages(info);
        if (pages == 0 || page + pages > sc->chunk_pages) return false;
        if (c->run_info[page + pages - 1] != info) return false;
        bool free = run_info_free(info);
        if (free && previous_free) return false; /* two free runs touching */
        for (uint32_t k = page; k < page + pages && !free; k++) /* used pages are never dirty */
            if (((c->dirty[k / 64] | c->young[k / 64]) >> (k % 64)) & 1u) return false;
        unsigned cls = bp__page_class_floor(sc, pages);
        bool in_bucket = (bucket_words(c, cls)[page / 64] >> (page % 64)) & 1u;
        if (free != in_bucket) return false;
        if (!free) used_pages += pages;
        previous_free = free;
        page += pages;
    }
    /* Every bucket bit must name a free run of that bucket. */
    for (unsigned cls = 0; cls < sc->npage_classes; cls++) {
        const uint64_t *words = bucket_words(c, cls);
        bool any = false;
        for (unsigned w = 0; w < c->avail_words; w++) {
            for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1) {
                uint32_t offset = w * 64 + (unsigned)__builtin_ctzll(bits);
                uint32_t info = c->run_info[offset];
                if (!run_info_free(info) || bp__page_class_floor(sc, run_info_pages(info)) != cls)
                    return false;
                any = true;
            }
            bool summary_bit = (bucket_summary(c, cls)[w / 64] >> (w % 64)) & 1u;
            if (summary_bit != (words[w] != 0)) return false;
        }
        bool nonempty_bit = (c->nonempty[cls / 64] >> (cls % 64)) & 1u;
        if (nonempty_bit != any) return false;
    }
    size_t dirty = 0;
    for (unsigned w = 0; w < c->avail_words; w++) {
        if (c->young[w] & ~c->dirty[w]) return false; /* young pages are dirty */
        dirty += count_bits(c->dirty[w]);
    }
    return dirty == c->dirty_pages && c->free_bytes == sc->chunk_size - (used_pages << sc->page_shift);
}
