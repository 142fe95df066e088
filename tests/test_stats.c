/* SPDX-License-Identifier: MIT */
/* Metrics: per-chunk, per-class and per-thread-cache snapshots, and the text and JSON dumps,
 * checked for content. */
#include "test_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static bp_allocator *one_arena(bool caches)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.chunk_decay_ms = 0;
    if (!caches) cfg.small_cache_size = cfg.normal_cache_size = 0;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

static void test_chunk_stats(void **state)
{
    (void)state;
    bp_allocator *a = one_arena(false);
    assert_int_equal(bp_arena_chunk_stats(a, 0, NULL, 0, sizeof(bp_chunk_stats)), 0);
    bp_buf *big = bp_alloc(a, 1024 * 1024);       /* a quarter of a chunk: q000 */
    bp_buf *small = bp_alloc(a, 64 * 1024);
    bp_chunk_stats cs[4];
    assert_int_equal(bp_arena_chunk_stats(a, 0, cs, 4, sizeof cs[0]), 1);
    assert_int_equal(cs[0].band, 1);
    assert_int_equal(cs[0].chunk_size, 4 << 20);
    assert_int_equal(cs[0].free_bytes, (4 << 20) - (1 << 20) - (64 << 10));
    assert_int_equal(cs[0].longest_free_run, cs[0].free_bytes); /* one run after both */
    assert_int_equal(cs[0].usage, 100 - (int)(cs[0].free_bytes * 100 / (4 << 20)));
    /* A smaller element size gets only that many bytes. */
    struct { unsigned band; } older[2];
    memset(older, 0xEE, sizeof older);
    assert_int_equal(bp_arena_chunk_stats(a, 0, (bp_chunk_stats *)(void *)older, 2, sizeof older[0]), 1);
    assert_int_equal(older[0].band, 1);
    assert_int_equal(older[1].band, 0xEEEEEEEEu);
    bp_release(big);
    bp_release(small);
    bp_allocator_destroy(a);
}

static void test_class_stats(void **state)
{
    (void)state;
    bp_allocator *a = one_arena(false);
    bp_buf *b[3];
    for (int i = 0; i < 3; i++) b[i] = bp_alloc(a, 16);
    long n = bp_arena_class_stats(a, 0, NULL, 0, sizeof(bp_class_stats));
    assert_true(n > 0);
    bp_class_stats *cls = calloc((size_t)n, sizeof *cls);
    assert_int_equal(bp_arena_class_stats(a, 0, cls, (size_t)n, sizeof *cls), n);
    assert_int_equal(cls[0].size, 16);
    assert_int_equal(cls[0].run_bytes, 8192);
    assert_int_equal(cls[0].slots_per_run, 512);
    assert_int_equal(cls[0].subpages, 1);
    assert_int_equal(cls[0].slots_free, 509);
    assert_int_equal(cls[n - 1].size, 28 * 1024);
    assert_int_equal(cls[1].subpages, 0);
    free(cls);
    for (int i = 0; i < 3; i++) bp_release(b[i]);
    bp_allocator_destroy(a);
}

static void test_thread_cache_stats(void **state)
{
    (void)state;
    bp_allocator *a = one_arena(true);
    bp_buf *b[10];
    for (int i = 0; i < 10; i++) b[i] = bp_alloc(a, 32 * 1024);
    for (int i = 0; i < 10; i++) bp_release(b[i]);
    bp_release(bp_alloc(a, 32 * 1024));
    bp_thread_cache_stats tc[2];
    assert_int_equal(bp_allocator_thread_cache_stats(a, tc, 2, sizeof tc[0]), 1);
    assert_int_equal(tc[0].arena, 0);
    assert_int_equal(tc[0].entries, 10);
    assert_int_equal(tc[0].bytes, 10 * 32 * 1024);
    assert_int_equal(tc[0].misses, 10);
    assert_int_equal(tc[0].hits, 1);
    bp_allocator_destroy(a);
}

static void test_errors(void **state)
{
    (void)state;
    bp_allocator *a = one_arena(false);
    bp_allocator *u = bp_allocator_new_unpooled(NULL);
    bp_chunk_stats cs;
    misuse_capture_start();
    assert_int_equal(bp_arena_chunk_stats(NULL, 0, &cs, 1, sizeof cs), BP_EINVAL);
    assert_int_equal(bp_arena_chunk_stats(a, 0, NULL, 1, sizeof cs), BP_EINVAL);
    assert_int_equal(bp_arena_chunk_stats(a, 0, &cs, 1, 0), BP_EINVAL);
    assert_int_equal(bp_arena_chunk_stats(a, 1, &cs, 1, sizeof cs), BP_ERANGE);
    assert_int_equal(bp_arena_class_stats(u, 0, NULL, 0, sizeof(bp_class_stats)), BP_ERANGE);
    assert_int_equal(bp_allocator_print_stats(NULL, stdout), BP_EINVAL);
    assert_int_equal(bp_allocator_print_stats_json(a, NULL), BP_EINVAL);
    misuse_capture_stop();
    assert_int_equal(bp_allocator_thread_cache_stats(u, NULL, 0, sizeof(bp_thread_cache_stats)), 0);
    FILE *full = fopen("/dev/full", "w");
    if (full != NULL) {
        assert_int_equal(bp_allocator_print_stats_json(a, full), BP_EIO);
        fclose(full);
    }
    bp_allocator_destroy(u);
    bp_allocator_destroy(a);
}

static char *dump(bp_allocator *a, bool json)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(json ? bp_allocator_print_stats_json(a, f) : bp_allocator_print_stats(a, f), 0);
    fclose(f);
    return text;
}

static void expect(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL) fail_msg("\"%s\" not in:\n%s", needle, text);
}

/* Balanced brackets and braces outside strings, ending with the top-level object. */
static bool json_well_formed(const char *s)
{
    int depth = 0;
    bool in_string = false;
    for (; *s; s++) {
        if (in_string) {
            if (*s == '\\' && s[1]) s++;
            else if (*s == '"') in_string = false;
            continue;
        }
        if (*s == '"') in_string = true;
        else if (*s == '{' || *s == '[') depth++;
        else if (*s == '}' || *s == ']') {
            if (--depth < 0) return false;
        } else if (*s == ',' && (s[1] == ']' || s[1] == '}')) {
            return false;
        }
    }
    return depth == 0 && !in_string;
}

static void test_text_and_json_dumps(void **state)
{
    (void)state;
    bp_allocator *a = one_arena(true);
    bp_buf *big = bp_alloc(a, 1024 * 1024);
    bp_buf *tiny = bp_alloc(a, 16);
    bp_release(bp_alloc(a, 32 * 1024));
    bp_buf *views[3] = {bp_slice(tiny, 0, 4, NULL), bp_duplicate(big, NULL), bp_retained_slice(big, 0, 8, NULL)};
    char *text = dump(a, false);
    expect(text, "pooled allocator: 1 arenas, page 8192 B, chunk 4194304 B");
    expect(text, "2 buffers alive, 3 views, ");
    expect(text, "chunk in q000: usage 2");
    expect(text, "small class 16 B: 1 subpage with free slots (runs of 8192 B, 512 slots), 384 slots free");
    expect(text, "thread cache 0 (arena 0): 128 regions");
    expect(text, "0 buffers released on another thread, 0 of them taken back by their owner; "
                 "0 bytes of such buffers not back yet");
    free(text);
    char *json = dump(a, true);
    assert_true(json_well_formed(json));
    expect(json, "{\"allocator\": {\"pooled\": true, \"arenas\": 1, \"page_size\": 8192, \"chunk_size\": 4194304");
    expect(json, "\"active_buffers\": 2, \"active_views\": 3, ");
    expect(json, "{\"band\": \"q000\", \"chunks\": [{\"usage\": 2");
    expect(json, "{\"size\": 16, \"run_bytes\": 8192, \"slots_per_run\": 512, \"subpages\": 1, \"slots_free\": 384}");
    expect(json, "\"thread_caches\": [{\"arena\": 0, \"entries\": 128");
    expect(json, "\"object_bytes\": ");
    expect(json, ", \"remote_pending_bytes\": 0},");
    free(json);
    assert_int_equal(bp_view_free(views[0]), 0);
    bp_release(views[2]);
    bp_release(big); /* and views[1] with it */
    bp_release(tiny);
    bp_allocator_stats views_gone;
    assert_int_equal(bp_allocator_get_stats(a, &views_gone, sizeof views_gone), 0);
    assert_int_equal(views_gone.active_views, 0);
    /* A burst bigger than the 64 B bin: the overflow waits in the arena's cache, and both
     * dumps say how much. A burst of 64 KiB buffers bigger than its bin and the arena cache
     * (16 MiB): what overflows both is held back by the arena as runs. */
    bp_buf *burst[400];
    for (int i = 0; i < 400; i++) burst[i] = bp_alloc(a, 64);
    for (int i = 0; i < 400; i++) bp_release(burst[i]);
    for (int i = 0; i < 320; i++) burst[i] = bp_alloc(a, 64 * 1024);
    for (int i = 0; i < 320; i++) bp_release(burst[i]);
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    assert_true(s.arena_cached_entries >= 400 - 256 + 200);
    assert_true(s.arena_cached_bytes >= (400 - 256) * 64 + 200 * 64 * 1024);
    size_t runs = s.arena_cached_runs;
    assert_true(runs > 0);
    assert_int_equal(s.arena_cached_run_bytes, runs * 64 * 1024);
    char line[320];
    text = dump(a, false);
    snprintf(line, sizeof line,
             "arena caches: %zu released buffers (%zu bytes) ready for their threads; %zu freed runs (%zu bytes) "
             "held back from their chunks",
             s.arena_cached_entries, s.arena_cached_bytes, runs, runs * 64 * 1024);
    expect(text, line);
    snprintf(line, sizeof line, "cache %zu (%zu B); runs held %zu (%zu B); chunks ", s.arena_cached_entries,
             s.arena_cached_bytes, runs, runs * 64 * 1024);
    expect(text, line);
    snprintf(line, sizeof line,
             "free inside chunks: %zu bytes of pages (%zu of them still resident), %zu bytes of small slots; ",
             s.free_page_bytes, s.dirty_bytes, s.free_slot_bytes);
    expect(text, line);
    free(text);
    json = dump(a, true);
    assert_true(json_well_formed(json));
    snprintf(line, sizeof line,
             "\"arena_cached_entries\": %zu, \"arena_cached_bytes\": %zu, \"arena_cached_runs\": %zu, "
             "\"arena_cached_run_bytes\": %zu, \"free_page_bytes\": %zu, \"free_slot_bytes\": %zu, "
             "\"object_bytes\": %zu, \"remote_pending_bytes\": %zu}",
             s.arena_cached_entries, s.arena_cached_bytes, runs, runs * 64 * 1024, s.free_page_bytes,
             s.free_slot_bytes, s.object_bytes, s.remote_pending_bytes);
    expect(json, line);
    snprintf(line, sizeof line,
             "\"cached_entries\": %zu, \"cached_bytes\": %zu, \"cached_runs\": %zu, \"cached_run_bytes\": %zu,",
             s.arena_cached_entries, s.arena_cached_bytes, runs, runs * 64 * 1024);
    expect(json, line);
    free(json);
    bp_allocator *u = bp_allocator_new_unpooled(NULL);
    json = dump(u, true);
    assert_true(json_well_formed(json));
    expect(json, "\"pooled\": false");
    expect(json, "\"arenas\": [],\n \"thread_caches\": []}");
    free(json);
    text = dump(u, false);
    expect(text, "unpooled allocator: 0 buffers alive, 0 views, ");
    free(text);
    bp_allocator_destroy(u);
    bp_allocator_destroy(a);
}

/* The parts of mapped memory the stats name add up to it exactly, whatever mix of sizes is
 * live and whatever sits in caches (thread, arena, runs), freed pages, freed slots and
 * retained chunks. */
static void assert_parts_add_up(bp_allocator *a, const char *when)
{
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    size_t parts = s.active_bytes + s.cached_bytes + s.arena_cached_bytes + s.arena_cached_run_bytes +
                   s.free_slot_bytes + s.free_page_bytes + s.retained_chunks * s.chunk_size;
    if (parts != s.mapped_bytes)
        fail_msg("%s: mapped %zu != live %zu + thread caches %zu + arena caches %zu + runs held %zu + free slots "
                 "%zu + free pages %zu + retained %zu x %zu",
                 when, s.mapped_bytes, s.active_bytes, s.cached_bytes, s.arena_cached_bytes, s.arena_cached_run_bytes,
                 s.free_slot_bytes, s.free_page_bytes, s.retained_chunks, s.chunk_size);
    assert_true(s.dirty_bytes <= s.free_page_bytes);
}

static void test_mapped_bytes_are_accounted_for(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = 1;
    cfg.background_purge = 0; /* nothing moves between the reads */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    enum { SLOTS = 3000 };
    bp_buf **live = calloc(SLOTS, sizeof *live);
    uint64_t rng = 42;
    assert_parts_add_up(a, "empty");
    for (int step = 0; step < 60000; step++) {
        size_t i = test_rand(&rng) % SLOTS;
        if (live[i] != NULL) {
            bp_release(live[i]);
            live[i] = NULL;
        } else {
            uint64_t r = test_rand(&rng);
            /* 70 % up to 1 KiB, 25 % up to 64 KiB, 5 % up to 8 MiB (huge above the chunk) */
            size_t n = r % 100 < 70 ? 1 + r % 1024 : r % 100 < 95 ? 1 + r % 65536 : 1 + r % (8 << 20);
            live[i] = bp_alloc_ex(a, n, n, NULL);
            assert_non_null(live[i]);
        }
        if (step % 5000 == 0) assert_parts_add_up(a, "mixed");
    }
    assert_parts_add_up(a, "after the mix");
    bp_allocator_stats mid;
    assert_int_equal(bp_allocator_get_stats(a, &mid, sizeof mid), 0);
    assert_true(mid.object_bytes >= 64 * 3 * 64); /* at least a slab: 64 objects of three 64 B lines */
    assert_true(mid.free_slot_bytes > 0 && mid.free_page_bytes > 0 && mid.active_bytes > 0);
    for (size_t i = 0; i < SLOTS; i++) bp_release(live[i]);
    assert_parts_add_up(a, "all released");
    bp_thread_cache_flush(a);
    assert_parts_add_up(a, "thread cache flushed");
    assert_true(bp_allocator_purge(a) >= 0);
    assert_parts_add_up(a, "purged");
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    assert_int_equal(s.mapped_bytes, 0);
    free(live);
    bp_allocator_destroy(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunk_stats),
        cmocka_unit_test(test_mapped_bytes_are_accounted_for),
        cmocka_unit_test(test_class_stats),
        cmocka_unit_test(test_thread_cache_stats),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_text_and_json_dumps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
