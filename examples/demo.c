/* SPDX-License-Identifier: MIT */
/*
 * Netty's PoolBufTest, in C: two rounds of allocate (default allocator, default
 * capacity) -> write int 10 -> read it back -> release. Round two gets the same bp_buf
 * object and the same memory back from the pool. Then a write after release is refused
 * with an error (Netty: IllegalReferenceCountException), and the allocator's state is shown.
 */
#include <bytepool.h>

#include <stdio.h>

static int alloc_and_release(bp_allocator *alloc, const void **buf_seen, const void **memory_seen)
{
    bp_buf *buf = bp_alloc(alloc, BP_DEFAULT_CAPACITY);
    if (buf == NULL) {
        fprintf(stderr, "bp_alloc failed\n");
        return -1;
    }
    printf("buf: %p  memory: %p  capacity: %zu\n", (void *)buf, bp_data(buf, 0), bp_capacity(buf));
    *buf_seen = buf;
    *memory_seen = bp_data(buf, 0);

    int rc = bp_write_i32(buf, 10);
    int32_t iv = 0;
    if (rc == 0) rc = bp_read_i32(buf, &iv);
    if (rc != 0) {
        fprintf(stderr, "write/read failed: %s\n", bp_strerror(rc));
        return -1;
    }
    printf("iv => %d\n", iv);
    bp_release(buf);

    /* buf.writeInt(10) here would throw IllegalReferenceCountException in Netty. */
    return 0;
}

/* Misuse reports, printed instead of aborting (bp_misuse_abort would abort). */
static void print_misuse(int err, const char *func, const char *message, void *user_data)
{
    (void)user_data;
    printf("misuse reported: %s: %s (%s)\n", func, message, bp_err_name(err));
}

int main(void)
{
    bp_allocator *alloc = bp_allocator_default();
    if (alloc == NULL) {
        fprintf(stderr, "no default allocator (see the message above)\n");
        return 1;
    }
    const void *buf1, *mem1, *buf2, *mem2;

    printf("------ round 1 ------\n");
    if (alloc_and_release(alloc, &buf1, &mem1) != 0) return 1;
    printf("------ round 2 ------\n");
    if (alloc_and_release(alloc, &buf2, &mem2) != 0) return 1;
    printf("same bp_buf object reused: %s; same memory reused: %s\n", buf1 == buf2 ? "yes" : "NO",
           mem1 == mem2 ? "yes" : "NO");

    printf("------ write after release ------\n");
    bp_buf *buf = bp_alloc(alloc, BP_DEFAULT_CAPACITY);
    bp_release(buf);
    bp_set_misuse_handler(print_misuse, NULL);
    int rc = bp_write_i32(buf, 10);
    bp_set_misuse_handler(NULL, NULL);
    printf("bp_write_i32 on a released buffer: %d %s: %s\n", rc, bp_err_name(rc), bp_strerror(rc));

    printf("------ allocator ------\n");
    printf("(what the pool holds now; the chunk lists are Netty's usage bands - qInit for new chunks,\n"
           " q000 .. q100 by percent of the chunk in use - see the README's Metrics section)\n");
    bp_allocator_print_stats(alloc, stdout);
    return (buf1 == buf2 && mem1 == mem2 && rc == BP_EFREED) ? 0 : 1;
}
