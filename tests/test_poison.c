/* SPDX-License-Identifier: MIT */
/* Use after release through a raw pointer: in a build where the pool poisons free memory
 * (AddressSanitizer, or BP_VALGRIND under Valgrind) the tool must catch it; and paranoid
 * leak detection holds released bp_buf objects back, so a stale bp_buf keeps failing. */
#include "test_util.h"

#include "allocator.h"
#include "thread.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile uint8_t sink;

static void write_after_release(void)
{
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    bp_buf *b = bp_alloc(a, 64);
    uint8_t *raw = bp_data(b, 0);
    raw[0] = 1;      /* fine: alive */
    bp_release(b);   /* the slot goes back to the thread cache */
    raw[0] = 2;      /* must be caught */
    sink = raw[1];
}

static void test_raw_pointer_after_release_is_caught(void **state)
{
    (void)state;
#if defined(BP__ASAN)
    char err[8192];
    int status = run_child(write_after_release, err, sizeof err);
    assert_false(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (strstr(err, "use-after-poison") == NULL) fail_msg("no use-after-poison report:\n%s", err);
#else
    skip(); /* needs a build with AddressSanitizer; Valgrind: make test-valgrind */
#endif
}

/* Under Valgrind (BP_VALGRIND build): run as `test_poison --write-after-release`. */
static void test_pooled_memory_is_usable_while_alive(void **state)
{
    (void)state;
    /* Every byte of every size class is writable while the buffer lives, and growth in
     * place (into the slot's slack) is too: no false reports from poisoning. */
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    for (size_t size = 1; size < 70000; size = size * 5 / 4 + 1) {
        bp_buf *b = bp_alloc(a, size);
        memset(bp_data(b, 0), 0x5A, size);
        assert_int_equal(bp_ensure_writable(b, size + 16), 0);
        memset(bp_data(b, 0), 0xA5, bp_capacity(b));
        bp_release(b);
    }
    bp_allocator_destroy(a);
}

static void test_paranoid_holds_released_objects_back(void **state)
{
    (void)state;
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.leak_detection = BP_LEAK_PARANOID;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    bp_buf *stale = bp_alloc(a, 32);
    bp_release(stale);
    /* Thousands of allocations later the stale object has not been handed out again. */
    for (int i = 0; i < 2000; i++) {
        bp_buf *b = bp_alloc(a, 32);
        assert_ptr_not_equal(b, stale);
        bp_release(b);
    }
    misuse_capture_start();
    assert_int_equal(bp_write_u32(stale, 1), BP_EFREED);
    misuse_capture_stop();
    assert_int_equal(a->objects.quarantine_count, 2001);
    bp_allocator_destroy(a);

    /* Without it, the object comes straight back (that is what makes steady traffic free). */
    a = bp_allocator_new(NULL, NULL);
    stale = bp_alloc(a, 32);
    bp_release(stale);
    bp_buf *again = bp_alloc(a, 32);
    assert_ptr_equal(again, stale);
    bp_release(again);
    bp_allocator_destroy(a);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--write-after-release") == 0) {
        write_after_release();
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raw_pointer_after_release_is_caught),
        cmocka_unit_test(test_pooled_memory_is_usable_while_alive),
        cmocka_unit_test(test_paranoid_holds_released_objects_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
