/* SPDX-License-Identifier: MIT */
/* Configuration: defaults, validation with named settings, environment variables. */
#include "test_util.h"

#include "os.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const env_names[] = {"BYTEPOOL_PAGE_SIZE", "BYTEPOOL_CHUNK_SIZE", "BYTEPOOL_ARENAS",
                                        "BYTEPOOL_RECYCLER_CAPACITY", "BYTEPOOL_SMALL_CACHE_SIZE",
                                        "BYTEPOOL_NORMAL_CACHE_SIZE", "BYTEPOOL_MAX_CACHED_SIZE",
                                        "BYTEPOOL_CACHE_TRIM_INTERVAL", "BYTEPOOL_CHUNK_DECAY_MS", "BYTEPOOL_DIRTY_DECAY_MS",
                                        "BYTEPOOL_LEAK_DETECTION", "BYTEPOOL_LEAK_SAMPLING_INTERVAL",
                                        "BYTEPOOL_ARENA_CACHE_SIZE", "BYTEPOOL_ARENA_CACHE_MAX_BYTES",
                                        "BYTEPOOL_RUN_CACHE_SIZE", "BYTEPOOL_RELEASE_CHECK",
                                        "BYTEPOOL_BACKGROUND_PURGE", "BYTEPOOL_DIRTY_MAX_PERCENT",
                                        "BYTEPOOL_CACHE_CLASS_MAX_BYTES"};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++) unsetenv(env_names[i]);
    return 0;
}

static void test_defaults(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    assert_int_equal(cfg.page_size, 8192);
    assert_int_equal(cfg.chunk_size, 4 << 20);
    assert_int_equal(cfg.arenas, 2 * bp__os_cpu_count());
    assert_int_equal(cfg.recycler_capacity, 4096);
    assert_int_equal(cfg.small_cache_size, 256);
    assert_int_equal(cfg.normal_cache_size, 64);
    assert_int_equal(cfg.max_cached_size, 65536);
    assert_int_equal(cfg.cache_trim_interval, 8192);
    assert_int_equal(cfg.chunk_decay_ms, 1000);
    assert_int_equal(cfg.dirty_decay_ms, 1000);
    assert_int_equal(cfg.dirty_max_percent, 10);
    assert_int_equal(cfg.leak_detection, BP_LEAK_DISABLED);
    assert_int_equal(cfg.leak_sampling_interval, 128);
    assert_int_equal(cfg.arena_cache_size, 8192);
    assert_int_equal(cfg.arena_cache_max_bytes, 16 << 20);
    assert_int_equal(cfg.cache_class_max_bytes, 1024 * 1024);
    assert_int_equal(cfg.run_cache_size, 1024);
    assert_int_equal(cfg.release_check, 0);
    assert_int_equal(cfg.background_purge, 1);
    char why[128] = "";
    assert_int_equal(bp_config_validate(&cfg, why, sizeof why), 0);
}

static void expect_invalid(const bp_config *cfg, const char *message)
{
    char why[160] = "";
    assert_int_equal(bp_config_validate(cfg, why, sizeof why), BP_EINVAL);
    assert_string_equal(why, message);
    int err = 0;
    misuse_capture_start();
    assert_null(bp_allocator_new(cfg, &err));
    misuse_capture_stop();
    assert_int_equal(err, BP_EINVAL);
    assert_non_null(strstr(last_misuse.message, message));
}

static void test_invalid_settings_are_named(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.page_size = 3000;
    expect_invalid(&cfg, "page_size=3000: must be a power of two");
    cfg.page_size = 2048;
    expect_invalid(&cfg, "page_size=2048: must be between 4096 and 65536");
    cfg.page_size = 131072;
    expect_invalid(&cfg, "page_size=131072: must be between 4096 and 65536");
    bp_config_init(&cfg);
    cfg.chunk_size = 5 << 20;
    expect_invalid(&cfg, "chunk_size=5242880: must be a power of two");
    cfg.chunk_size = 32768; /* 4 pages of 8 KiB */
    expect_invalid(&cfg, "chunk_size=32768: must be at least 8 pages (8 x page_size)");
    cfg.chunk_size = (size_t)2 << 30;
    expect_invalid(&cfg, "chunk_size=2147483648: must not exceed 1 GiB");
    bp_config_init(&cfg);
    cfg.arenas = 0;
    expect_invalid(&cfg, "arenas=0: must be between 1 and 1024");
    cfg.arenas = 1025;
    expect_invalid(&cfg, "arenas=1025: must be between 1 and 1024");
    bp_config_init(&cfg);
    cfg.recycler_capacity = (1u << 20) + 1;
    expect_invalid(&cfg, "recycler_capacity=1048577: must not exceed 1048576");
    bp_config_init(&cfg);
    cfg.chunk_decay_ms = 3600001;
    expect_invalid(&cfg, "chunk_decay_ms=3600001: must not exceed 3600000 (one hour)");
    bp_config_init(&cfg);
    cfg.dirty_decay_ms = 3600001;
    expect_invalid(&cfg, "dirty_decay_ms=3600001: must not exceed 3600000 (one hour), or be 4294967295 (never)");
    cfg.dirty_decay_ms = BP_DECAY_NEVER;
    assert_int_equal(bp_config_validate(&cfg, NULL, 0), 0);
    bp_config_init(&cfg);
    cfg.max_cached_size = cfg.chunk_size + 1; /* every normal class: valid */
    assert_int_equal(bp_config_validate(&cfg, NULL, 0), 0);
    cfg.max_cached_size = ((size_t)1 << 30) + 1;
    expect_invalid(&cfg, "max_cached_size=1073741825: must not exceed 1 GiB");
    cfg.max_cached_size = 0;
    cfg.small_cache_size = 65537;
    expect_invalid(&cfg, "small_cache_size=65537: must not exceed 65536");
    bp_config_init(&cfg);
    cfg.arena_cache_size = 65537;
    expect_invalid(&cfg, "arena_cache_size=65537: must not exceed 65536");
    bp_config_init(&cfg);
    cfg.arena_cache_max_bytes = ((size_t)1 << 30) + 1;
    expect_invalid(&cfg, "arena_cache_max_bytes=1073741825: must not exceed 1 GiB");
    bp_config_init(&cfg);
    cfg.cache_class_max_bytes = ((size_t)1 << 30) + 1;
    expect_invalid(&cfg, "cache_class_max_bytes=1073741825: must not exceed 1 GiB");
    bp_config_init(&cfg);
    cfg.run_cache_size = 65537;
    expect_invalid(&cfg, "run_cache_size=65537: must not exceed 65536");
    cfg.run_cache_size = 65536;
    assert_int_equal(bp_config_validate(&cfg, NULL, 0), 0);
    cfg.release_check = 2;
    expect_invalid(&cfg, "release_check=2: must be 0 (off) or 1 (on)");
    cfg.release_check = 1;
    cfg.background_purge = 2;
    expect_invalid(&cfg, "background_purge=2: must be 0 (off) or 1 (on)");
    cfg.background_purge = 0;
    assert_int_equal(bp_config_validate(&cfg, NULL, 0), 0);
    cfg.dirty_max_percent = 1001;
    expect_invalid(&cfg, "dirty_max_percent=1001: must not exceed 1000");
    cfg.dirty_max_percent = 1000;
    assert_int_equal(bp_config_validate(&cfg, NULL, 0), 0);
    cfg.dirty_max_percent = 0;
    assert_int_equal(bp_config_validate(&cfg, NULL, 0), 0);
    assert_int_equal(bp_config_validate(NULL, NULL, 0), BP_EINVAL);
}

static void test_env_values_are_parsed(void **state)
{
    (void)state;
    setenv("BYTEPOOL_PAGE_SIZE", "16K", 1);
    setenv("BYTEPOOL_CHUNK_SIZE", "1M", 1);
    setenv("BYTEPOOL_ARENAS", "3", 1);
    setenv("BYTEPOOL_RECYCLER_CAPACITY", "0", 1);
    setenv("BYTEPOOL_SMALL_CACHE_SIZE", "17", 1);
    setenv("BYTEPOOL_NORMAL_CACHE_SIZE", "3", 1);
    setenv("BYTEPOOL_MAX_CACHED_SIZE", "64K", 1);
    setenv("BYTEPOOL_CACHE_TRIM_INTERVAL", "100", 1);
    setenv("BYTEPOOL_CHUNK_DECAY_MS", "0", 1);
    setenv("BYTEPOOL_DIRTY_DECAY_MS", "250", 1);
    setenv("BYTEPOOL_ARENA_CACHE_SIZE", "0", 1);
    setenv("BYTEPOOL_ARENA_CACHE_MAX_BYTES", "2M", 1);
    setenv("BYTEPOOL_RUN_CACHE_SIZE", "5", 1);
    setenv("BYTEPOOL_RELEASE_CHECK", "1", 1);
    setenv("BYTEPOOL_BACKGROUND_PURGE", "0", 1);
    setenv("BYTEPOOL_DIRTY_MAX_PERCENT", "3", 1);
    setenv("BYTEPOOL_CACHE_CLASS_MAX_BYTES", "1M", 1);
    bp_config cfg;
    char why[160] = "";
    assert_int_equal(bp_config_from_env(&cfg, why, sizeof why), 0);
    assert_string_equal(why, "");
    assert_int_equal(cfg.page_size, 16384);
    assert_int_equal(cfg.chunk_size, 1 << 20);
    assert_int_equal(cfg.arenas, 3);
    assert_int_equal(cfg.recycler_capacity, 0);
    assert_int_equal(cfg.small_cache_size, 17);
    assert_int_equal(cfg.normal_cache_size, 3);
    assert_int_equal(cfg.max_cached_size, 65536);
    assert_int_equal(cfg.cache_trim_interval, 100);
    assert_int_equal(cfg.chunk_decay_ms, 0);
    assert_int_equal(cfg.dirty_decay_ms, 250);
    assert_int_equal(cfg.arena_cache_size, 0);
    assert_int_equal(cfg.arena_cache_max_bytes, 2 << 20);
    assert_int_equal(cfg.cache_class_max_bytes, 1 << 20);
    assert_int_equal(cfg.run_cache_size, 5);
    assert_int_equal(cfg.release_check, 1);
    assert_int_equal(cfg.background_purge, 0);
    assert_int_equal(cfg.dirty_max_percent, 3);
    setenv("BYTEPOOL_CHUNK_SIZE", "1g", 1);
    assert_int_equal(bp_config_from_env(&cfg, why, sizeof why), 0);
    assert_int_equal(cfg.chunk_size, 1 << 30);
    clear_env(NULL);
}

static void expect_env_refused(const char *name, const char *value, const char *message)
{
    clear_env(NULL);
    setenv(name, value, 1);
    bp_config cfg;
    cfg.arenas = 77; /* overwritten with the defaults, whatever happens */
    char why[160] = "";
    assert_int_equal(bp_config_from_env(&cfg, why, sizeof why), BP_EINVAL);
    assert_string_equal(why, message);
    bp_config defaults;
    bp_config_init(&defaults);
    assert_memory_equal(&cfg, &defaults, sizeof cfg);
    clear_env(NULL);
}

static void test_env_garbage_is_refused_with_its_name(void **state)
{
    (void)state;
    expect_env_refused("BYTEPOOL_PAGE_SIZE", "abc", "BYTEPOOL_PAGE_SIZE=abc: not a number");
    expect_env_refused("BYTEPOOL_PAGE_SIZE", "8192 ", "BYTEPOOL_PAGE_SIZE=8192 : not a size (digits, optionally K, M or G)");
    expect_env_refused("BYTEPOOL_PAGE_SIZE", "8KB", "BYTEPOOL_PAGE_SIZE=8KB: not a size (digits, optionally K, M or G)");
    expect_env_refused("BYTEPOOL_PAGE_SIZE", "-8192", "BYTEPOOL_PAGE_SIZE=-8192: not a number");
    expect_env_refused("BYTEPOOL_PAGE_SIZE", "", "BYTEPOOL_PAGE_SIZE=: not a number");
    expect_env_refused("BYTEPOOL_PAGE_SIZE", "3000", "BYTEPOOL_PAGE_SIZE=3000: must be a power of two");
    expect_env_refused("BYTEPOOL_CHUNK_SIZE", "99999999999999999999999", "BYTEPOOL_CHUNK_SIZE=99999999999999999999999: too large");
    expect_env_refused("BYTEPOOL_CHUNK_SIZE", "17179869184G", "BYTEPOOL_CHUNK_SIZE=17179869184G: too large");
    expect_env_refused("BYTEPOOL_ARENAS", "4K", "BYTEPOOL_ARENAS=4K: not a whole number");
    expect_env_refused("BYTEPOOL_ARENAS", "5000000000", "BYTEPOOL_ARENAS=5000000000: too large");
    expect_env_refused("BYTEPOOL_ARENAS", "0", "BYTEPOOL_ARENAS=0: must be between 1 and 1024");
    expect_env_refused("BYTEPOOL_CHUNK_SIZE", "16K", "BYTEPOOL_CHUNK_SIZE=16K: must be at least 8 pages (8 x page_size)");
    expect_env_refused("BYTEPOOL_RELEASE_CHECK", "yes", "BYTEPOOL_RELEASE_CHECK=yes: not a number");
    expect_env_refused("BYTEPOOL_RELEASE_CHECK", "2", "BYTEPOOL_RELEASE_CHECK=2: must be 0 (off) or 1 (on)");
}

static void default_with_bad_env(void)
{
    setenv("BYTEPOOL_CHUNK_SIZE", "lots", 1);
    _exit(bp_allocator_default() == NULL ? 0 : 1);
}

static void default_with_good_env(void)
{
    setenv("BYTEPOOL_ARENAS", "3", 1);
    bp_allocator *a = bp_allocator_default();
    bp_allocator_stats s;
    if (a == NULL || bp_allocator_get_stats(a, &s, sizeof s) != 0) _exit(2);
    bp_allocator_destroy(a); /* ignored for the default allocator */
    _exit(s.arenas == 3 && bp_allocator_default() == a ? 0 : 1);
}

static void test_default_allocator_follows_env(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(exit_code(run_child(default_with_bad_env, err, sizeof err)), 0);
    assert_string_equal(err, "bytepool: default allocator not created: BYTEPOOL_CHUNK_SIZE=lots: not a number\n");
    assert_int_equal(exit_code(run_child(default_with_good_env, err, sizeof err)), 0);
    assert_string_equal(err, "");
}

static void test_every_valid_geometry_works(void **state)
{
    (void)state;
    static const size_t pages[] = {4096, 8192, 16384, 65536};
    for (size_t p = 0; p < sizeof pages / sizeof pages[0]; p++) {
        for (size_t chunk = pages[p] * 8; chunk <= ((size_t)16 << 20); chunk *= 4) {
            bp_config cfg;
            bp_config_init(&cfg);
            cfg.page_size = pages[p];
            cfg.chunk_size = chunk;
            cfg.arenas = 1;
            bp_allocator *a = bp_allocator_new(&cfg, NULL);
            assert_non_null(a);
            /* The largest small, the smallest normal, a whole chunk, and huge. */
            size_t sizes[] = {1, 4 * pages[p] - 1, 4 * pages[p], chunk, chunk + 1};
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
                bp_buf *b = bp_alloc(a, sizes[i]);
                assert_non_null(b);
                assert_int_equal(bp_set_u8(b, sizes[i] - 1, 0x5A), 0);
                uint8_t v;
                assert_int_equal(bp_get_u8(b, sizes[i] - 1, &v), 0);
                assert_int_equal(v, 0x5A);
                assert_int_equal(bp_release(b), 1);
            }
            bp_allocator_stats s;
            bp_allocator_get_stats(a, &s, sizeof s);
            assert_int_equal(s.active_bytes, 0);
            bp_allocator_destroy(a);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_invalid_settings_are_named),
        cmocka_unit_test(test_env_values_are_parsed),
        cmocka_unit_test(test_env_garbage_is_refused_with_its_name),
        cmocka_unit_test(test_default_allocator_follows_env),
        cmocka_unit_test(test_every_valid_geometry_works),
    };
    return cmocka_run_group_tests(tests, clear_env, NULL);
}
