/* SPDX-License-Identifier: MIT */
/* A program built against bytepool.h, run against the library: with the header's own
 * layout number it must run; built against a copy of the header whose BP__ABI_VERSION
 * differs (BP_TEST_EXPECT_MISMATCH), each allocator creator must abort at once with a
 * message naming both numbers. No cmocka: a consumer as users write them. */
#include <bytepool.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "abi_consumer:%d: %s: ", __LINE__, #cond);                     \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

static bp_allocator *create(int which)
{
    switch (which) {
    case 0: return bp_allocator_new(NULL, NULL);
    case 1: return bp_allocator_new_unpooled(NULL);
    default: return bp_allocator_default();
    }
}

static const char *const creators[] = {"bp_allocator_new", "bp_allocator_new_unpooled", "bp_allocator_default"};

/* Runs create(which) in a child; returns its stderr (static) and stores how it ended. */
static const char *run_child(int which, int *status)
{
    static char text[2048];
    int fds[2];
    if (pipe(fds) != 0) abort();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        bp_allocator *a = create(which);
        bp_buf *b = a != NULL ? bp_alloc(a, 256) : NULL;
        fprintf(stderr, "created %p, buffer %p\n", (void *)a, (void *)b);
        _exit(3);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (len < sizeof text - 1 && (n = read(fds[0], text + len, sizeof text - 1 - len)) > 0) len += (size_t)n;
    text[len] = '\0';
    close(fds[0]);
    waitpid(pid, status, 0);
    return text;
}

int main(void)
{
    CHECK(bp_version() == BP_VERSION, "library %d, header %d", bp_version(), BP_VERSION);
    CHECK(strcmp(bp_version_string(), BP_VERSION_STRING) == 0, "library %s, header %s", bp_version_string(),
          BP_VERSION_STRING);
    char text[32];
    snprintf(text, sizeof text, "%d.%d.%d", BP_VERSION_MAJOR, BP_VERSION_MINOR, BP_VERSION_PATCH);
    CHECK(strcmp(BP_VERSION_STRING, text) == 0, "%s", BP_VERSION_STRING);
    CHECK(BP_VERSION == BP_VERSION_MAJOR * 10000 + BP_VERSION_MINOR * 100 + BP_VERSION_PATCH, "%d", BP_VERSION);
#ifdef BP_TEST_EXPECT_MISMATCH
    /* Built against a header of layout BP__ABI_VERSION; the library has BP_TEST_LIBRARY_ABI. */
    char expected[256];
    for (int which = 0; which < 3; which++) {
        int status = 0;
        const char *out = run_child(which, &status);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "%s: status %#x, stderr: %s", creators[which],
              status, out);
        snprintf(expected, sizeof expected,
                 "bytepool: %s: this program was compiled against a bytepool.h of layout (ABI) %u, but the "
                 "library it runs with (bytepool %s) has layout %u (libbytepool.so.%u); rebuild the program "
                 "against the installed bytepool.h\n",
                 creators[which], (unsigned)BP__ABI_VERSION, BP_VERSION_STRING, (unsigned)BP_TEST_LIBRARY_ABI,
                 (unsigned)BP_TEST_LIBRARY_ABI);
        CHECK(strcmp(out, expected) == 0, "%s: stderr:\n%s\nexpected:\n%s", creators[which], out, expected);
    }
    printf("abi_consumer: every creator aborts on layout %u against the library's %u\n", (unsigned)BP__ABI_VERSION,
           (unsigned)BP_TEST_LIBRARY_ABI);
#else
    for (int which = 0; which < 3; which++) {
        int status = 0;
        const char *out = run_child(which, &status);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 3 && strncmp(out, "created 0x", 10) == 0 &&
                  strstr(out, "buffer 0x") != NULL,
              "%s: status %#x, stderr: %s", creators[which], status, out);
    }
    bp_allocator *a = bp_allocator_new(NULL, NULL);
    CHECK(a != NULL, "bp_allocator_new");
    bp_buf *b = bp_alloc(a, 256);
    CHECK(b != NULL && bp_write_i32(b, 10) == 0, "write");
    int32_t v = 0;
    CHECK(bp_read_i32(b, &v) == 0 && v == 10, "read %d", (int)v);
    CHECK(bp_release(b) == 1, "release");
    bp_allocator_destroy(a);
    printf("abi_consumer: layout %u runs\n", (unsigned)BP__ABI_VERSION);
#endif
    return failures == 0 ? 0 : 1;
}
