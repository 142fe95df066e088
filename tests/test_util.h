/* SPDX-License-Identifier: MIT */
/* Helpers shared by the cmocka tests. */
#ifndef BP_TEST_UTIL_H
#define BP_TEST_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <bytepool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_tools.h"

#if defined(__SANITIZE_ADDRESS__)
#  define UNDER_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define UNDER_ASAN 1
#  endif
#endif

#ifdef UNDER_ASAN
/* ASan's own defaults for every test program (ASAN_OPTIONS still overrides them).
 * intercept_tls_get_addr=0: the sanitizer runtimes of Debian 12 (clang 14, gcc 12) take a
 * dlopen'ed library's thread-local block that malloc placed at page offset 16 for glibc
 * 2.19's memalign header and read its "size" from the 16 bytes before it; LeakSanitizer then
 * scans a garbage range at exit and dies ("Tracer caught signal 11"). Which block lands
 * there follows the heap's layout, so any test that loads libdw or libunwind may hit it.
 * Without the interception the blocks are ordinary heap chunks, reachable from glibc's
 * thread vector, and leaks are still found. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "intercept_tls_get_addr=0"; }
#endif

/* Whether this run is slowed down (sanitizers, Valgrind, BP_TEST_SCALE=tsan): long loops
 * then run a fraction of their iterations. */
static inline bool slowed_down(void)
{
    const char *scale = getenv("BP_TEST_SCALE");
    return UNDER_SANITIZER || RUNNING_ON_VALGRIND || (scale != NULL && strcmp(scale, "tsan") == 0);
}

/* Records the last misuse report instead of aborting. */
typedef struct misuse_record {
    int count;
    int err;
    char func[64];
    char message[256];
} misuse_record;

static misuse_record last_misuse;

static void record_misuse(int err, const char *func, const char *message, void *user_data)
{
    misuse_record *r = user_data;
    r->count++;
    r->err = err;
    strncpy(r->func, func, sizeof r->func - 1);
    strncpy(r->message, message, sizeof r->message - 1);
}

static inline void misuse_capture_start(void)
{
    memset(&last_misuse, 0, sizeof last_misuse);
    bp_set_misuse_handler(record_misuse, &last_misuse);
}

static inline void misuse_capture_stop(void) { bp_set_misuse_handler(NULL, NULL); }

/* Deterministic xorshift for repeatable random tests. */
static inline uint64_t test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* The parent's half of run_child and run_self: the child's stderr (the read end of fds)
 * into err, NUL-terminated, then its wait status. */
static inline int collect_child(pid_t pid, int fds[2], char *err, size_t len)
{
    close(fds[1]);
    size_t used = 0;
    ssize_t n;
    while (used + 1 < len && (n = read(fds[0], err + used, len - 1 - used)) > 0) used += (size_t)n;
    err[used] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

/* Forks with the child's stderr going into a pipe (fds) that collect_child reads:
 * returns 0 in the child, the child's pid in the parent. */
static inline pid_t fork_capturing_stderr(int fds[2])
{
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
    }
    return pid;
}

/* Runs fn in a forked child with its stderr captured into err (NUL-terminated); the child
 * exits 0 if fn returns. Returns the child's wait status. */
static inline int run_child(void (*fn)(void), char *err, size_t len)
{
    int fds[2];
    pid_t pid = fork_capturing_stderr(fds);
    if (pid == 0) {
        fn();
        _exit(0);
    }
    return collect_child(pid, fds, err, len);
}

/* Runs this test program again in a child process, as `<program> mode`, with the
 * environment variable name=value set, its stderr captured into err (NUL-terminated): for
 * what must start in a fresh process (settings read once in a process's life). The
 * program's main runs the mode. Returns the child's wait status. */
static inline int run_self(const char *mode, const char *name, const char *value, char *err, size_t len)
{
    int fds[2];
    pid_t pid = fork_capturing_stderr(fds);
    if (pid == 0) {
        setenv(name, value, 1);
        /* The program's path, not /proc/self/exe itself: under Valgrind that is Valgrind's
         * own program, while readlink names the test (which then runs natively). */
        char path[4096];
        ssize_t n = readlink("/proc/self/exe", path, sizeof path - 1);
        if (n <= 0) _exit(127);
        path[n] = '\0';
        execl(path, path, mode, (char *)NULL);
        _exit(127);
    }
    return collect_child(pid, fds, err, len);
}

/* The exit code of a child that exited, -1 if it did not. */
static inline int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

/* Setups for suites that run every test against both allocators (state: the allocator). */
static inline int setup_pooled(void **state)
{
    *state = bp_allocator_new(NULL, NULL);
    return *state == NULL;
}

static inline int setup_unpooled(void **state)
{
    *state = bp_allocator_new_unpooled(NULL);
    return *state == NULL;
}

/* An allocator at its defaults but for `arenas` arenas and no background purge thread, so
 * that every count a test reads is its own allocations' doing. */
static inline bp_allocator *quiet_allocator(unsigned arenas)
{
    bp_config cfg;
    bp_config_init(&cfg);
    cfg.arenas = arenas;
    cfg.background_purge = 0;
    bp_allocator *a = bp_allocator_new(&cfg, NULL);
    assert_non_null(a);
    return a;
}

/* The step between the bytes a test fills and checks in a buffer of `size` bytes: `step`,
 * and in huge buffers (4 MiB and up: mappings of their own at the default chunk size) one
 * byte in every 16 pages past that - still enough to find one overlapping another, while
 * touching each of their pages would make the kernel's page faults most of the test. */
static inline size_t sparse_stride(size_t size, size_t step)
{
    return size >= ((size_t)4 << 20) ? 16 * 4096 + step : step;
}

/* A buffer of `capacity` bytes holding `text` (writer index at its end). */
static inline bp_buf *buf_with_text(bp_allocator *a, size_t capacity, const char *text)
{
    bp_buf *b = bp_alloc(a, capacity);
    assert_non_null(b);
    assert_int_equal(bp_write_bytes(b, text, strlen(text)), 0);
    return b;
}

/* bp_pretty_hex_dump of b as a string (the caller frees it). */
static inline char *pretty_dump_text(const bp_buf *b)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(bp_pretty_hex_dump(b, f), 0);
    fclose(f);
    return text;
}

#define BOTH(test, teardown)                                                               \
    cmocka_unit_test_setup_teardown(test, setup_pooled, teardown),                         \
        cmocka_unit_test_setup_teardown(test, setup_unpooled, teardown)

/* Breaks two buffers as a program releasing once too often would (misuse), taking the
 * caller's references to both: *view, a retained slice of all of root's readable bytes,
 * whose parent is gone; *composite, a composite holding `part`, whose component is gone.
 * Both are still the caller's to release. */
static inline void make_broken(bp_allocator *a, bp_buf *root, bp_buf *part, bp_buf **view, bp_buf **composite)
{
    *view = bp_retained_slice(root, bp_reader_index(root), bp_readable_bytes(root), NULL);
    assert_non_null(*view);
    *composite = bp_composite(a, 4, NULL);
    assert_non_null(*composite);
    assert_int_equal(bp_retain(part), 0);
    assert_int_equal(bp_composite_add(*composite, part, 1), 0);
    bp_release(root);
    bp_release(root); /* a release too many: the view's parent is gone */
    bp_release(part);
    bp_release(part); /* the composite's component is gone */
}

/* Runs fn(arg) on a thread of its own and waits for it to exit (thread exit paths run);
 * returns what fn returned. */
static inline void *run_on_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    void *result = NULL;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    assert_int_equal(pthread_join(t, &result), 0);
    return result;
}

/* Whether n bytes at p all equal `value`: memcmp against a block of them (a sanitizer
 * checks memcmp's range once instead of instrumenting a loop over every byte). */
static inline bool bytes_all_equal(const uint8_t *p, size_t n, uint8_t value)
{
    uint8_t block[4096];
    memset(block, value, sizeof block);
    for (size_t at = 0; at < n; at += sizeof block) {
        size_t len = n - at < sizeof block ? n - at : sizeof block;
        if (memcmp(p + at, block, len) != 0) return false;
    }
    return true;
}

/* `--only PATTERN` / `--skip PATTERN` (cmocka's test-name filters, '*' and '?'): lets ctest
 * run a long test file as several entries in parallel. */
static inline void test_filters(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--only") == 0) cmocka_set_test_filter(argv[++i]);
        else if (strcmp(argv[i], "--skip") == 0) cmocka_set_skip_filter(argv[++i]);
    }
}

#endif
