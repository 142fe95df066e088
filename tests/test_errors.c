/* SPDX-License-Identifier: MIT */
/* Error codes, their texts and names, and the misuse handler (including abort). */
#include "test_util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void test_every_code_has_text_and_name(void **state)
{
    (void)state;
    static const int codes[] = {BP_EINVAL, BP_ENOMEM, BP_EFREED, BP_ERANGE, BP_ECAPACITY, BP_EOVERFLOW, BP_EREFCNT,
                                BP_EOF, BP_EIO, BP_ESHARED};
    static const char *const names[] = {"BP_EINVAL", "BP_ENOMEM", "BP_EFREED", "BP_ERANGE", "BP_ECAPACITY",
                                        "BP_EOVERFLOW", "BP_EREFCNT", "BP_EOF", "BP_EIO", "BP_ESHARED"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_true(codes[i] < 0);
        assert_string_equal(bp_err_name(codes[i]), names[i]);
        assert_string_not_equal(bp_strerror(codes[i]), "unknown error");
        for (size_t j = 0; j < i; j++) assert_string_not_equal(bp_strerror(codes[i]), bp_strerror(codes[j]));
    }
    assert_string_equal(bp_strerror(BP_EFREED), "buffer already released (reference count is 0)");
    assert_string_equal(bp_strerror(BP_EOF), "end of stream");
    assert_int_equal(BP_ESHARED, -10);
    assert_string_equal(bp_strerror(BP_ESHARED), "buffer's bytes are shared (reference count above 1, or live views)");
    assert_string_equal(bp_strerror(0), "success");
    assert_string_equal(bp_err_name(0), "BP_OK");
    assert_string_equal(bp_strerror(-999), "unknown error");
    assert_string_equal(bp_err_name(12345), "BP_UNKNOWN");
}

static void test_handler_is_replaceable_and_reports_values(void **state)
{
    (void)state;
    assert_null(bp_set_misuse_handler(record_misuse, &last_misuse));
    memset(&last_misuse, 0, sizeof last_misuse);
    bp_allocator *a = bp_allocator_new_unpooled(NULL);
    bp_buf *b = bp_alloc(a, 8);
    uint32_t v;
    assert_int_equal(bp_get_u32(b, 6, &v), BP_ERANGE);
    assert_int_equal(last_misuse.count, 1);
    assert_string_equal(last_misuse.func, "bp_get_u32");
    assert_string_equal(last_misuse.message, "index 6 + length 4 exceeds capacity 8");
    /* No report for success, nor for out of memory (not misuse). */
    assert_int_equal(bp_get_u32(b, 4, &v), 0);
    assert_int_equal(last_misuse.count, 1);
    assert_ptr_equal(bp_set_misuse_handler(NULL, NULL), record_misuse);
    assert_int_equal(bp_get_u32(b, 6, &v), BP_ERANGE); /* still an error, just unreported */
    assert_int_equal(last_misuse.count, 1);
    bp_release(b);
    bp_allocator_destroy(a);
}

static void double_release_with_abort_handler(void)
{
    bp_set_misuse_handler(bp_misuse_abort, NULL);
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    bp_buf *b = bp_alloc(a, 64);
    bp_release(b);
    bp_release(b); /* aborts here */
}

static void test_abort_handler_aborts_with_message(void **state)
{
    (void)state;
    char err[512];
    int status = run_child(double_release_with_abort_handler, err, sizeof err);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(err, "bytepool: bp_release: buffer"));
    assert_non_null(strstr(err, "already released (refCnt: 0, decrement: 1) (BP_EFREED)"));
}

/* Run as `test_errors write-after-release` with BYTEPOOL_ABORT_ON_MISUSE=1 (the variable is
 * read once in a process's life, so in a fresh one). */
static void write_after_release_with_env(void)
{
    bp_allocator *a = bp_allocator_default();
    if (a == NULL) _exit(3);
    bp_buf *b = bp_alloc(a, 64);
    bp_release(b);
    bp_write_i32(b, 10); /* aborts here */
}

static void test_env_variable_installs_abort_handler(void **state)
{
    (void)state;
    char err[512];
    int status = run_self("write-after-release", "BYTEPOOL_ABORT_ON_MISUSE", "1", err, sizeof err);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_non_null(strstr(err, "bytepool: bp_write_i32: buffer"));
}

static void misuse_without_handler(void)
{
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    bp_buf *b = bp_alloc(a, 64);
    bp_release(b);
    _exit(bp_release(b) == BP_EFREED ? 0 : 1);
}

static void test_without_handler_misuse_only_returns(void **state)
{
    (void)state;
    char err[512];
    int status = run_child(misuse_without_handler, err, sizeof err);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_string_equal(err, "");
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "write-after-release") == 0) {
        write_after_release_with_env();
        return 1; /* not reached: the write aborts */
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_has_text_and_name),
        cmocka_unit_test(test_handler_is_replaceable_and_reports_values),
        cmocka_unit_test(test_abort_handler_aborts_with_message),
        cmocka_unit_test(test_env_variable_installs_abort_handler),
        cmocka_unit_test(test_without_handler_misuse_only_returns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
