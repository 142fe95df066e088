/* SPDX-License-Identifier: MIT */
/* Leak detection: reports with the right stacks, deduplicated, once; nothing for a clean
 * run; access records and hints; sampling; the default allocator at exit; the helper
 * libraries loaded only when needed, and reports without libdw.
 *
 * The functions whose names a report shows are not static: when frames are named by dladdr
 * (the leak_dladdr entry runs every test so), only exported functions have names. */
#include "test_util.h"

#include "leak.h"
#include "tcache.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

static char report[16384];
static int reports;

static void capture(const char *text, void *user_data)
{
    (void)user_data;
    reports++;
    snprintf(report, sizeof report, "%s", text);
}

static int setup(void **state)
{
    (void)state;
    report[0] = '\0';
    reports = 0;
    bp_set_leak_sink(capture, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bp_set_leak_sink(NULL, NULL);
    return 0;
}

static bp_allocator *allocator_at(unsigned level, unsigned interval)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.leak_detection = level;
    cfg.leak_sampling_interval = interval;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

/* The barrier after each call keeps it from being a tail call, which would take the
 * helper's frame off the stack. The line of the first call is checked in the report. */
#define NO_TAIL_CALL() __asm__ volatile("" ::: "memory")

static int leaky_function_line; /* the line of its bp_alloc, which the report names */

__attribute__((noinline)) bp_buf *leaky_function(bp_allocator *a)
{
    leaky_function_line = __LINE__ + 1;
    bp_buf *b = bp_alloc(a, 256);
    NO_TAIL_CALL();
    return b;
}

__attribute__((noinline)) bp_buf *another_leak(bp_allocator *a)
{
    bp_buf *b = bp_alloc(a, 1000);
    NO_TAIL_CALL();
    return b;
}

static void expect_in_report(const char *needle)
{
    if (strstr(report, needle) == NULL) fail_msg("report lacks \"%s\":\n%s", needle, report);
}

/* Whether this run's reports should name file:line: bytepool was built with libdw's headers
 * and BYTEPOOL_LEAK_SYMBOLIZER does not ask for dladdr (libdw itself is installed where
 * libdw-dev is). */
static bool libdw_expected(void)
{
#ifdef BP__HAVE_LIBDW
    const char *setting = getenv("BYTEPOOL_LEAK_SYMBOLIZER");
    return setting == NULL || strcasecmp(setting, "dladdr") != 0;
#else
    return false;
#endif
}

static void expect_line(const char *file_line)
{
    assert_int_equal(bp__leak_has_line_info(), libdw_expected());
    if (!libdw_expected()) return; /* names only */
    if (strstr(report, file_line) == NULL) fail_msg("report lacks %s:\n%s", file_line, report);
}

/* Expects the stack that follows `header` in `text` to begin at `function`: "#0 function ("
 * with libdw; with dladdr "function+0x", after nothing but the unnamed frames of bytepool's
 * internal functions (dladdr cannot name them in the static library the tests link). */
static void expect_stack_from(const char *text, const char *header, const char *function, bool line_info)
{
    const char *at = strstr(text, header);
    if (at == NULL) fail_msg("report lacks \"%s\":\n%s", header, text);
    at += strlen(header);
    char frame[128];
    if (line_info) {
        snprintf(frame, sizeof frame, "\n    #0 %s (", function);
        if (strncmp(at, frame, strlen(frame)) != 0) fail_msg("%s not first after \"%s\":\n%s", function, header, text);
        return;
    }
    for (int k = 0;; k++) {
        snprintf(frame, sizeof frame, "\n    #%d %s+0x", k, function);
        if (strncmp(at, frame, strlen(frame)) == 0) return;
        snprintf(frame, sizeof frame, "\n    #%d 0x", k);
        if (strncmp(at, frame, strlen(frame)) != 0) fail_msg("no %s after \"%s\":\n%s", function, header, text);
        at = strchr(at + 1, '\n');
        if (at == NULL) fail_msg("no %s after \"%s\":\n%s", function, header, text);
    }
}

static void expect_stack(const char *header, const char *function)
{
    expect_stack_from(report, header, function, bp__leak_has_line_info());
}

/* Whether the library `soname` is loaded in this process (dlopen loads nothing here). */
static bool is_loaded(const char *soname)
{
    void *handle = dlopen(soname, RTLD_NOW | RTLD_NOLOAD);
    if (handle != NULL) dlclose(handle);
    return handle != NULL;
}

#ifdef BP__HAVE_LIBUNWIND
#  define LIBUNWIND_EXPECTED true
#else
#  define LIBUNWIND_EXPECTED false
#endif

/* Runs first: nothing in this process has tracked a buffer or named a frame before. The
 * program links neither library; bytepool loads libunwind at the first tracked buffer and
 * libdw at the first report that names frames, and not at all when it is not to use them. */
static void test_libraries_load_on_need(void **state)
{
    (void)state;
    assert_false(is_loaded("libunwind.so.8"));
    assert_false(is_loaded("libdw.so.1"));
    bp_allocator *a = allocator_at(BP_LEAK_DISABLED, 1);
    for (int i = 0; i < 100; i++) assert_non_null(leaky_function(a));
    assert_int_equal(bp_leak_report(a), 0);
    bp_allocator_destroy(a);
    a = allocator_at(BP_LEAK_PARANOID, 1);
    assert_false(is_loaded("libunwind.so.8")); /* detection on, nothing tracked yet */
    assert_int_equal(bp_release(leaky_function(a)), 1);
    assert_int_equal(bp_leak_report(a), 0); /* nothing to name */
    assert_int_equal(is_loaded("libunwind.so.8"), LIBUNWIND_EXPECTED);
    assert_false(is_loaded("libdw.so.1"));
    assert_non_null(leaky_function(a));
    assert_int_equal(bp_leak_report(a), 1);
    assert_int_equal(is_loaded("libdw.so.1"), libdw_expected());
    char leak_line[32];
    snprintf(leak_line, sizeof leak_line, "test_leak.c:%d)", leaky_function_line);
    expect_line(leak_line);
    expect_stack("1 buffer (256 bytes) allocated at:", "leaky_function");
    bp_allocator_destroy(a);
}

void test_leaks_are_reported_once_with_their_stacks(void **state)
{
    (void)state;
    bp_allocator *a = allocator_at(BP_LEAK_PARANOID, 128);
    volatile int three = 3; /* a loop the compiler keeps: one call site, one stack with dladdr too */
    for (int i = 0; i < three; i++) assert_non_null(leaky_function(a));
    assert_non_null(another_leak(a));
    bp_release(leaky_function(a)); /* released: not a leak */
    assert_int_equal(bp_leak_report(a), 4);
    assert_int_equal(reports, 1);
    expect_in_report("bytepool LEAK: 4 buffers were never released (paranoid leak detection)");
    expect_stack("3 buffers (768 bytes) allocated at:", "leaky_function");
    expect_stack("1 buffer (1000 bytes) allocated at:", "another_leak");
    char leak_line_a[32];
    snprintf(leak_line_a, sizeof leak_line_a, "test_leak.c:%d)", leaky_function_line);
    expect_line(leak_line_a);
    expect_in_report("test_leaks_are_reported_once_with_their_stacks");
    assert_null(strstr(report, "bp_alloc")); /* bytepool's own frames are left out */
    /* Named once: nothing new to say, and destroy says nothing either. */
    assert_int_equal(bp_leak_report(a), 0);
    bp_allocator_destroy(a);
    assert_int_equal(reports, 1);
}

static void test_clean_program_reports_nothing(void **state)
{
    (void)state;
    bp_allocator *a = allocator_at(BP_LEAK_PARANOID, 128);
    for (int i = 0; i < 1000; i++) {
        bp_buf *b = bp_alloc(a, (size_t)i * 10);
        bp_buf *s = bp_retained_slice(b, 0, 0, NULL);
        bp_retain(b);
        bp_release(b);
        bp_release(s);
        bp_release(b);
    }
    assert_int_equal(bp_leak_report(a), 0);
    bp_allocator_destroy(a);
    assert_int_equal(reports, 0);
    assert_string_equal(report, "");
}

__attribute__((noinline)) void decode(bp_buf *b)
{
    bp_touch(b, "decoded a frame");
    NO_TAIL_CALL();
}

static void test_advanced_records_accesses_and_hints(void **state)
{
    (void)state;
    bp_allocator *a = allocator_at(BP_LEAK_ADVANCED, 1);
    bp_buf *b = bp_alloc(a, 64);
    bp_retain(b);
    decode(b);
    bp_release(b); /* still one reference left: leaked */
    bp_allocator_destroy(a);
    assert_int_equal(reports, 1);
    expect_in_report("1 buffer (64 bytes) allocated at:");
    expect_in_report("access 1 of 3: retain");
    expect_stack("access 2 of 3: touch, hint: decoded a frame", "decode");
    expect_in_report("access 3 of 3: release");
}

static void test_only_the_last_four_accesses_are_kept(void **state)
{
    (void)state;
    bp_allocator *a = allocator_at(BP_LEAK_PARANOID, 1);
    bp_buf *b = bp_alloc(a, 16);
    for (int i = 0; i < 10; i++) bp_touch(b, "again");
    assert_int_equal(bp_leak_report(a), 1);
    assert_null(strstr(report, "access 6 of 10"));
    expect_in_report("access 7 of 10: touch");
    expect_in_report("access 10 of 10: touch");
    bp_release(b);
    bp_allocator_destroy(a);
}

static void test_sampling_and_disabled(void **state)
{
    (void)state;
    bp_allocator *a = allocator_at(BP_LEAK_SIMPLE, 4);
    for (int i = 0; i < 4000; i++) assert_non_null(bp_alloc(a, 32));
    /* 1 in 4 on average, at random gaps of 1 to 7: 1000 expected, standard deviation ~16 */
    long tracked = bp_leak_report(a);
    assert_in_range(tracked, 900, 1100);
    expect_in_report("simple leak detection tracks 1 buffer in 4");
    assert_null(strstr(report, "access")); /* simple keeps no access records */
    bp_allocator_destroy(a);
    reports = 0;
    a = allocator_at(BP_LEAK_DISABLED, 1);
    for (int i = 0; i < 100; i++) assert_non_null(bp_alloc(a, 32));
    assert_int_equal(bp_leak_report(a), 0);
    bp_allocator_destroy(a);
    assert_int_equal(reports, 0);
}

/* With leak detection on, the buffers not tracked take the allocation fast path; one clock
 * stops it before each tracked one and each scheduled trim. Counts stay exact through a mix
 * of fast allocations (a warm bin), slow ones (refills) and a region taken for growth, which
 * counts toward the trim but is no buffer to track. */
static void test_sampling_counts_fast_allocations(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.leak_detection = BP_LEAK_SIMPLE;
    cfg.leak_sampling_interval = 3;
    cfg.cache_trim_interval = 10;
    bp__tcache_fixed_sampling(true); /* every 3rd exactly, the first first */
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    for (int i = 0; i < 60; i++) assert_int_equal(bp_release(bp_alloc(a, 32)), 1); /* #1-#60 */
    assert_int_equal(bp_leak_report(a), 0);                                          /* all released */
    bp_buf *kept[99];
    for (int i = 0; i < 99; i++) { /* #61-#159: tracked are #61, #64, ..., #157 */
        kept[i] = bp_alloc(a, 32);
        assert_non_null(kept[i]);
        if (i == 49) assert_int_equal(bp_ensure_writable(kept[i], 1000), 0); /* a region: trim clock only */
    }
    assert_int_equal(bp_leak_report(a), 33);
    bp_allocator_stats st;
    assert_int_equal(bp_allocator_get_stats(a, &st, sizeof st), 0);
    assert_int_equal(st.cache_trims, 16); /* 159 buffers + 1 region = 160 allocations */
    assert_true(st.cache_hits > 100);     /* most came from the warm bin */
    for (int i = 0; i < 99; i++) assert_int_equal(bp_release(kept[i]), 1);
    reports = 0;
    assert_int_equal(bp_leak_report(a), 0);
    bp_allocator_destroy(a);
    assert_int_equal(reports, 0);
    bp__tcache_fixed_sampling(false);
}

/* A loop that allocates two buffers a turn and leaks the second: sampled every 128th buffer
 * exactly, only first buffers would ever be tracked and the leak never seen; at random gaps
 * about half the samples land on it. */
__attribute__((noinline)) void allocate_pairs_leaking_the_second(bp_allocator *a, int turns)
{
    for (int i = 0; i < turns; i++) {
        bp_buf *kept = bp_alloc(a, 64);
        bp_buf *leaked = bp_alloc(a, 64);
        assert_non_null(kept);
        assert_non_null(leaked);
        assert_int_equal(bp_release(kept), 1);
    }
}

static void test_sampling_finds_a_leak_in_a_repeating_pattern(void **state)
{
    (void)state;
    bp__tcache_fixed_sampling(true);
    bp_allocator *a = allocator_at(BP_LEAK_SIMPLE, 128);
    allocate_pairs_leaking_the_second(a, 4000);
    assert_int_equal(bp_leak_report(a), 0); /* what a fixed gap would report: nothing */
    bp_allocator_destroy(a);
    bp__tcache_fixed_sampling(false);
    reports = 0;
    a = allocator_at(BP_LEAK_SIMPLE, 128);
    allocate_pairs_leaking_the_second(a, 4000);
    /* ~62 samples over 8000 buffers (sd ~5), about half of them on leaked ones (31, sd ~4):
     * neither none (a gap in step with the pattern, on the kept buffer) nor nearly all (in
     * step, on the leaked one) */
    long found = bp_leak_report(a);
    assert_in_range(found, 10, 50);
    expect_in_report("allocate_pairs_leaking_the_second");
    bp_allocator_destroy(a);
}

static void test_touch_errors(void **state)
{
    (void)state;
    bp_allocator *a = allocator_at(BP_LEAK_DISABLED, 1);
    bp_buf *b = bp_alloc(a, 8);
    assert_int_equal(bp_touch(b, "untracked: nothing to do"), 0);
    bp_release(b);
    misuse_capture_start();
    assert_int_equal(bp_touch(b, "x"), BP_EFREED);
    assert_int_equal(bp_touch(NULL, "x"), BP_EINVAL);
    assert_int_equal(bp_leak_report(NULL), BP_EINVAL);
    misuse_capture_stop();
    bp_allocator_destroy(a);
}

static void test_leak_settings(void **state)
{
    (void)state;
    setenv("BYTEPOOL_LEAK_DETECTION", "Paranoid", 1);
    setenv("BYTEPOOL_LEAK_SAMPLING_INTERVAL", "64", 1);
    bp_config cfg;
    char why[160] = "";
    assert_int_equal(bp_config_from_env(&cfg, why, sizeof why), 0);
    assert_int_equal(cfg.leak_detection, BP_LEAK_PARANOID);
    assert_int_equal(cfg.leak_sampling_interval, 64);
    setenv("BYTEPOOL_LEAK_DETECTION", "sometimes", 1);
    assert_int_equal(bp_config_from_env(&cfg, why, sizeof why), BP_EINVAL);
    assert_string_equal(why, "BYTEPOOL_LEAK_DETECTION=sometimes: not a level (disabled, simple, advanced or paranoid)");
    unsetenv("BYTEPOOL_LEAK_DETECTION");
    setenv("BYTEPOOL_LEAK_SAMPLING_INTERVAL", "0", 1);
    assert_int_equal(bp_config_from_env(&cfg, why, sizeof why), BP_EINVAL);
    assert_string_equal(why, "BYTEPOOL_LEAK_SAMPLING_INTERVAL=0: must be between 1 and 1073741824");
    unsetenv("BYTEPOOL_LEAK_SAMPLING_INTERVAL");
    bp_config_init(&cfg);
    assert_int_equal(cfg.leak_detection, BP_LEAK_DISABLED);
    assert_int_equal(cfg.leak_sampling_interval, 128);
    cfg.leak_detection = 4;
    assert_int_equal(bp_config_validate(&cfg, why, sizeof why), BP_EINVAL);
    assert_string_equal(why, "leak_detection=4: must be 0 (disabled), 1 (simple), 2 (advanced) or 3 (paranoid)");
}

static void leak_from_default_allocator_then_exit(void)
{
    bp_set_leak_sink(NULL, NULL); /* the default: stderr */
    setenv("BYTEPOOL_LEAK_DETECTION", "paranoid", 1);
    bp_buf *b = leaky_function(bp_allocator_default());
    exit(b != NULL ? 0 : 1); /* exit(), not _exit(): atexit handlers run */
}

static void test_default_allocator_reports_at_exit(void **state)
{
    (void)state;
    char err[8192];
    assert_int_equal(exit_code(run_child(leak_from_default_allocator_then_exit, err, sizeof err)), 0);
    assert_non_null(strstr(err, "bytepool LEAK: 1 buffer was never released"));
    expect_stack_from(err, "1 buffer (256 bytes) allocated at:", "leaky_function", libdw_expected());
}

/* Sets BYTEPOOL_LEAK_SYMBOLIZER (NULL: unsets it) and makes bytepool choose again, loading
 * `soname` as libdw; returns the previous setting (static storage) for restore_naming. */
static const char *set_naming(const char *setting, const char *soname)
{
    static char previous[64];
    const char *now = getenv("BYTEPOOL_LEAK_SYMBOLIZER");
    snprintf(previous, sizeof previous, "%s", now != NULL ? now : "");
    if (setting != NULL) setenv("BYTEPOOL_LEAK_SYMBOLIZER", setting, 1);
    else unsetenv("BYTEPOOL_LEAK_SYMBOLIZER");
    bp__leak_symbolizer_reset(soname);
    return now != NULL ? previous : NULL;
}

static void restore_naming(const char *previous)
{
    set_naming(previous, NULL);
    assert_int_equal(bp__leak_has_line_info(), libdw_expected());
}

/* One leak from leaky_function, reported; returns the count. */
__attribute__((noinline)) long report_one_leak(void)
{
    bp_allocator *a = allocator_at(BP_LEAK_PARANOID, 1);
    assert_non_null(leaky_function(a));
    long n = bp_leak_report(a);
    bp_allocator_destroy(a);
    return n;
}

/* Without libdw, frames are named by dladdr: exported functions with their offsets, no
 * file:line, and bytepool's own frames (unnamed but for the exported ones) still left out.
 * The report says why there is no file:line. */
void test_report_without_libdw_names_exported_functions(void **state)
{
    (void)state;
    const char *previous = set_naming(NULL, "libbytepool-test-no-such-library.so.1");
    assert_false(bp__leak_has_line_info());
    assert_int_equal(report_one_leak(), 1);
    expect_in_report("bytepool LEAK: 1 buffer was never released (paranoid leak detection).\n");
    expect_stack("1 buffer (256 bytes) allocated at:", "leaky_function");
    const char *leaky = strstr(report, " leaky_function+0x");
    const char *caller = strstr(report, " report_one_leak+0x");
    const char *test = strstr(report, " test_report_without_libdw_names_exported_functions+0x");
    if (caller == NULL || test == NULL || !(leaky < caller && caller < test))
        fail_msg("report lacks the callers' names in order:\n%s", report);
    assert_null(strstr(report, "test_leak.c:"));
    assert_null(strstr(report, "bp_"));
#ifdef BP__HAVE_LIBDW
    expect_in_report("\n  (frames without file:line: libbytepool-test-no-such-library.so.1: cannot open shared object file");
#else
    assert_null(strstr(report, "frames without file:line"));
#endif
    restore_naming(previous);
}

/* A libdw that lacks a function bytepool uses is not used at all (libc stands in for it). */
static void test_report_when_libdw_lacks_a_function(void **state)
{
    (void)state;
    const char *previous = set_naming("libdw", "libc.so.6");
    assert_false(bp__leak_has_line_info());
    assert_int_equal(report_one_leak(), 1);
    expect_stack("1 buffer (256 bytes) allocated at:", "leaky_function");
    assert_null(strstr(report, "test_leak.c:"));
#ifdef BP__HAVE_LIBDW
    expect_in_report("\n  (frames without file:line: ");
    expect_in_report("undefined symbol: dwfl_begin)\n");
#endif
    restore_naming(previous);
}

/* BYTEPOOL_LEAK_SYMBOLIZER: dladdr never loads libdw and says nothing about it; libdw (any
 * case) is the default; anything else is named in the report and libdw is used. */
static void test_symbolizer_setting(void **state)
{
    (void)state;
    const char *previous = set_naming("DLADDR", "libbytepool-test-no-such-library.so.1");
    assert_false(bp__leak_has_line_info());
    assert_int_equal(report_one_leak(), 1);
    expect_stack("1 buffer (256 bytes) allocated at:", "leaky_function");
    assert_null(strstr(report, "\n  (")); /* asked for: no note */
    set_naming("LibDW", NULL);
    assert_int_equal(report_one_leak(), 1);
    assert_null(strstr(report, "\n  ("));
#ifdef BP__HAVE_LIBDW
    assert_true(bp__leak_has_line_info());
    expect_stack("1 buffer (256 bytes) allocated at:", "leaky_function");
    expect_in_report("test_leak.c:");
#endif
    set_naming("addr2line", NULL);
    assert_int_equal(report_one_leak(), 1);
    expect_in_report("\n  (BYTEPOOL_LEAK_SYMBOLIZER=addr2line is neither libdw nor dladdr)\n");
    set_naming("addr2line", "libbytepool-test-no-such-library.so.1");
    assert_int_equal(report_one_leak(), 1);
#ifdef BP__HAVE_LIBDW
    expect_in_report("\n  (BYTEPOOL_LEAK_SYMBOLIZER=addr2line is neither libdw nor dladdr; frames without file:line: "
                     "libbytepool-test-no-such-library.so.1: cannot open shared object file");
#else
    expect_in_report("\n  (BYTEPOOL_LEAK_SYMBOLIZER=addr2line is neither libdw nor dladdr)\n");
#endif
    restore_naming(previous);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_libraries_load_on_need, setup, teardown), /* first */
        cmocka_unit_test_setup_teardown(test_leaks_are_reported_once_with_their_stacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clean_program_reports_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_advanced_records_accesses_and_hints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_only_the_last_four_accesses_are_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sampling_and_disabled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sampling_counts_fast_allocations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sampling_finds_a_leak_in_a_repeating_pattern, setup, teardown),
        cmocka_unit_test_setup_teardown(test_touch_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leak_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_allocator_reports_at_exit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_without_libdw_names_exported_functions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_when_libdw_lacks_a_function, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symbolizer_setting, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
