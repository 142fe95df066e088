/* SPDX-License-Identifier: MIT */
/* bp_input: reads from fds and added buffers, frames as retained slices that keep their
 * bytes while the input goes on, no memory held when idle, adaptive read sizes, the limit.
 * Against the pooled and the unpooled allocator. */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

static int teardown(void **state)
{
    misuse_capture_stop();
    bp_allocator_stats s;
    bp_allocator_get_stats(*state, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0); /* every test releases what it made */
    bp_allocator_destroy(*state);
    return 0;
}

static uint64_t active_buffers(bp_allocator *a)
{
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    return s.active_buffers;
}

/* A pipe whose read end is non-blocking. */
static void make_pipe(int fds[2])
{
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
}

static void put(int fd, const void *p, size_t n) { assert_int_equal(write(fd, p, n), (ssize_t)n); }

/* A byte that tells position i of a test stream. */
static uint8_t pattern(size_t i) { return (uint8_t)(i * 7 + i / 251); }

static void put_pattern(int fd, size_t from, size_t n)
{
    uint8_t bytes[4096];
    assert_true(n <= sizeof bytes);
    for (size_t i = 0; i < n; i++) bytes[i] = pattern(from + i);
    put(fd, bytes, n);
}

static void expect_pattern(bp_buf *b, size_t from, size_t n)
{
    assert_int_equal(bp_readable_bytes(b), n);
    for (size_t i = 0; i < n; i++) {
        uint8_t v;
        assert_int_equal(bp_get_u8(b, bp_reader_index(b) + i, &v), 0);
        assert_int_equal(v, pattern(from + i));
    }
}

/* n bytes of b from absolute index `at` are the test stream's from `from`. */
static void expect_pattern_at(bp_buf *b, size_t at, size_t from, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t v;
        assert_int_equal(bp_get_u8(b, at + i, &v), 0);
        assert_int_equal(v, pattern(from + i));
    }
}

static bp_input *input_with_reads(bp_allocator *a, size_t min, size_t initial, size_t max, size_t max_buffered)
{
    bp_input_config cfg;
    bp_input_config_init(&cfg);
    cfg.min_read = min;
    cfg.initial_read = initial;
    cfg.max_read = max;
    if (max_buffered != 0) cfg.max_buffered = max_buffered;
    int err = 1;
    bp_input *in = bp_input_new(a, &cfg, &err);
    assert_non_null(in);
    assert_int_equal(err, 0);
    return in;
}

static void test_reads_and_end_of_stream(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    make_pipe(fds);
    bp_input *in = bp_input_new(a, NULL, NULL);
    assert_non_null(in);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 0); /* EAGAIN */
    assert_null(bp_input_peek(in));
    put(fds[1], "hello", 5);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 5);
    put(fds[1], " world", 6);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 6);
    assert_int_equal(bp_input_readable(in), 11);
    close(fds[1]);
    assert_int_equal(bp_input_read_fd(in, fds[0]), BP_EOF);
    assert_int_equal(bp_input_readable(in), 11); /* kept for a last decode */
    bp_buf *all = bp_input_take_copy(in, 11, NULL);
    char text[12] = {0};
    assert_int_equal(bp_read_bytes(all, text, 11), 0);
    assert_string_equal(text, "hello world");
    bp_release(all);
    assert_int_equal(bp_input_read_fd(in, -1), BP_EIO);
    assert_int_equal(errno, EBADF);
    assert_null(bp_input_peek(in)); /* the buffer made for that read went again */
    bp_input_free(in);
    close(fds[0]);
}

/* Nothing unread, nothing held: the buffer goes once the last byte is consumed, even while
 * a frame still shows it (the frame keeps it alive, not the input). */
static void test_idle_input_holds_no_buffer(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    make_pipe(fds);
    uint64_t before = active_buffers(a);
    bp_input *in = bp_input_new(a, NULL, NULL);
    assert_int_equal(active_buffers(a), before);
    put_pattern(fds[1], 0, 100);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 100);
    assert_int_equal(active_buffers(a), before + 1);
    bp_buf *frame = bp_input_take(in, 60, NULL);
    assert_int_equal(bp_input_skip(in, 40), 0);
    assert_null(bp_input_peek(in));
    assert_int_equal(bp_input_readable(in), 0);
    expect_pattern(frame, 0, 60);
    bp_release(frame);
    assert_int_equal(active_buffers(a), before); /* the input holds nothing */
    /* A read that brings nothing leaves nothing behind either. */
    assert_int_equal(bp_input_read_fd(in, fds[0]), 0);
    assert_int_equal(active_buffers(a), before);
    bp_input_free(in);
    close(fds[0]);
    close(fds[1]);
}

/* The corruption the layer exists to prevent: a frame kept while the input reads on and
 * needs room must still show its bytes, at the same address. */
static void test_live_frame_keeps_its_bytes_while_input_compacts(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    make_pipe(fds);
    bp_input *in = input_with_reads(a, 32, 32, 32, 0);
    put_pattern(fds[1], 0, 64);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 32);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 32); /* grows the buffer: nobody sees it yet */
    bp_buf *frame = bp_input_take(in, 16, NULL);
    assert_non_null(frame);
    const uint8_t *at = bp_data(frame, 0);
    assert_non_null(at);
    assert_int_equal(bp_input_skip(in, 40), 0); /* 8 unread at the buffer's end */
    /* The next read needs room: compacting in place would move those 8 bytes over the
     * frame's; the input copies them into a fresh buffer instead. */
    size_t sent = 64;
    for (int round = 0; round < 20; round++) {
        put_pattern(fds[1], sent, 32);
        sent += 32;
        assert_int_equal(bp_input_read_fd(in, fds[0]), 32);
        expect_pattern(frame, 0, 16);
        assert_ptr_equal(bp_data(frame, 0), at);
        for (size_t i = 0; i < 16; i++) assert_int_equal(at[i], pattern(i));
        assert_int_equal(bp_input_skip(in, 24), 0);
    }
    size_t consumed = 56 + 24 * 20;
    expect_pattern(bp_input_peek(in), consumed, sent - consumed);
    bp_release(frame);
    bp_input_free(in);
    close(fds[0]);
    close(fds[1]);
}

/* The same with a slice made through bp_input_peek, which consumes nothing: the input must
 * not grow (move) its buffer under it either. */
static void test_retained_peek_slice_is_not_moved_by_growth(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    make_pipe(fds);
    bp_input *in = input_with_reads(a, 64, 64, 64, 0);
    put_pattern(fds[1], 0, 64);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 64);
    bp_buf *peek = bp_input_peek(in);
    bp_buf *held = bp_retained_slice(peek, bp_reader_index(peek), 64, NULL);
    const uint8_t *at = bp_data(held, 0);
    for (int round = 0; round < 8; round++) {
        put_pattern(fds[1], 64 + 64 * (size_t)round, 64);
        assert_int_equal(bp_input_read_fd(in, fds[0]), 64);
        assert_ptr_equal(bp_data(held, 0), at);
        expect_pattern(held, 0, 64);
    }
    expect_pattern(bp_input_peek(in), 0, 64 * 9);
    bp_release(held);
    bp_input_free(in);
    close(fds[0]);
    close(fds[1]);
}

/* AdaptiveRecvByteBufAllocator: a read that fills its size quadruples the next (up to the
 * maximum); two reads in a row of at most half of it halve it (down to the minimum). Each
 * read here starts with nothing buffered, so it is exactly the guess. */
static void test_read_size_adapts(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    make_pipe(fds);
    bp_input *in = input_with_reads(a, 128, 256, 4096, 0);
    static const size_t filled[] = {256, 1024, 4096, 4096};
    size_t sent = 0;
    for (size_t i = 0; i < sizeof filled / sizeof filled[0]; i++) {
        put_pattern(fds[1], sent, 4096);
        sent += 4096;
        long got = bp_input_read_fd(in, fds[0]);
        assert_int_equal(got, filled[i]);
        assert_int_equal(bp_input_skip(in, (size_t)got), 0);
        char drain[4096];
        (void)!read(fds[0], drain, 4096 - (size_t)got); /* keep the pipe empty */
    }
    /* Small reads: the first leaves the size, the second halves it. */
    put(fds[1], "x", 1);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 1);
    put(fds[1], "y", 1);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 1);
    assert_int_equal(bp_input_skip(in, 2), 0);
    put_pattern(fds[1], 0, 4096);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 2048); /* filled: back to 4096 */
    bp_input_clear(in);
    for (int i = 0; i < 12; i++) { /* halved 6 times: down to the minimum, never below */
        char drain[4096];
        while (read(fds[0], drain, sizeof drain) > 0) continue;
        put(fds[1], "z", 1);
        assert_int_equal(bp_input_read_fd(in, fds[0]), 1);
        bp_input_clear(in);
    }
    put_pattern(fds[1], 0, 1000);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 128);
    bp_input_free(in);
    close(fds[0]);
    close(fds[1]);
}

/* Small buffers are copied in, large ones linked as components; frames across them are
 * right, and the input never writes into a buffer it was given. */
static void test_add_merges_small_and_links_large(void **state)
{
    bp_allocator *a = *state;
    bp_input *in = bp_input_new(a, NULL, NULL);
    /* A given buffer with writable room past its bytes: adopted, never written. */
    bp_buf *given = bp_alloc(a, 64);
    for (size_t i = 0; i < 10; i++) bp_write_u8(given, pattern(i));
    bp_set_zero(given, 10, 54);
    assert_int_equal(bp_retain(given), 0); /* to look at it afterwards */
    assert_int_equal(bp_input_add(in, given), 0);
    for (size_t k = 0; k < 3; k++) {
        bp_buf *small = bp_alloc(a, 10);
        for (size_t i = 0; i < 10; i++) bp_write_u8(small, pattern(10 + 10 * k + i));
        assert_int_equal(bp_input_add(in, small), 0);
    }
    for (size_t i = 10; i < 64; i++) {
        uint8_t v;
        assert_int_equal(bp_get_u8(given, i, &v), 0);
        assert_int_equal(v, 0);
    }
    bp_release(given);
    bp_buf *peek = bp_input_peek(in);
    assert_non_null(bp_data(peek, 0)); /* copied into one plain buffer */
    expect_pattern(peek, 0, 40);
    /* Large ones are linked. */
    size_t total = 40;
    for (size_t k = 0; k < 3; k++) {
        bp_buf *large = bp_alloc(a, 5000);
        for (size_t i = 0; i < 5000; i++) bp_write_u8(large, pattern(total + i));
        total += 5000;
        assert_int_equal(bp_input_add(in, large), 0);
    }
    peek = bp_input_peek(in);
    assert_int_equal(bp_composite_components(peek), 4);
    expect_pattern(peek, 0, total);
    /* Frames across components; a component read to its end goes once no frame holds the
     * composite. */
    bp_buf *f1 = bp_input_take(in, 5030, NULL);
    expect_pattern(f1, 0, 5030);
    bp_buf *f2 = bp_input_take_copy(in, 5000, NULL);
    assert_non_null(bp_data(f2, 0));
    expect_pattern(f2, 5030, 5000);
    bp_release(f1);
    assert_int_equal(bp_input_skip(in, 1), 0);
    assert_int_equal(bp_composite_components(bp_input_peek(in)), 2); /* the third, cut, and the fourth */
    expect_pattern(bp_input_peek(in), 10031, total - 10031);
    bp_release(f2);
    bp_input_free(in);
}

/* Reads after large adds: the unread bytes are copied into a buffer of the input's own,
 * which the read then fills. */
static void test_read_after_linked_buffers(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    make_pipe(fds);
    bp_input *in = bp_input_new(a, NULL, NULL);
    for (size_t k = 0; k < 2; k++) {
        bp_buf *large = bp_alloc(a, 6000);
        for (size_t i = 0; i < 6000; i++) bp_write_u8(large, pattern(6000 * k + i));
        assert_int_equal(bp_input_add(in, large), 0);
    }
    bp_buf *frame = bp_input_take(in, 7000, NULL); /* holds the composite */
    put_pattern(fds[1], 12000, 100);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 100);
    assert_true(bp_data(bp_input_peek(in), 0) != NULL);
    expect_pattern(bp_input_peek(in), 7000, 5100);
    expect_pattern(frame, 0, 7000);
    bp_release(frame);
    bp_input_free(in);
    close(fds[0]);
    close(fds[1]);
}

static void test_limit_refuses_more(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    make_pipe(fds);
    bp_input *in = input_with_reads(a, 64, 64, 64, 100);
    bp_buf *b80 = bp_alloc(a, 80);
    bp_write_zero(b80, 80);
    assert_int_equal(bp_input_add(in, b80), 0);
    bp_buf *b30 = bp_alloc(a, 30);
    bp_write_zero(b30, 30);
    assert_int_equal(bp_input_add(in, b30), BP_EFULL);
    assert_int_equal(bp_refcnt(b30), 1); /* still the caller's */
    bp_release(b30);
    put_pattern(fds[1], 0, 64);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 20);
    assert_int_equal(bp_input_read_fd(in, fds[0]), BP_EFULL);
    assert_int_equal(bp_input_readable(in), 100);
    assert_int_equal(bp_input_skip(in, 90), 0);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 44); /* the rest of the pipe */
    bp_buf *rest = bp_input_take(in, 54, NULL);
    expect_pattern(rest, 10, 54);
    bp_release(rest);
    /* A buffer grown past the limit is still filled only up to it. */
    put_pattern(fds[1], 0, 200);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 64);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 36);
    assert_true(bp_writable_bytes(bp_input_peek(in)) > 0);
    assert_int_equal(bp_input_read_fd(in, fds[0]), BP_EFULL);
    expect_pattern(bp_input_peek(in), 0, 100);
    bp_input_free(in);
    close(fds[0]);
    close(fds[1]);
}

static void test_take_and_errors(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    int err = 0;
    assert_null(bp_input_new(NULL, NULL, &err));
    assert_int_equal(err, BP_EINVAL);
    bp_input_config cfg;
    bp_input_config_init(&cfg);
    cfg.min_read = 4096;
    assert_null(bp_input_new(a, &cfg, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_string_equal(last_misuse.func, "bp_input_new");
    bp_input *in = bp_input_new(a, NULL, NULL);
    bp_buf *empty = bp_input_take(in, 0, &err); /* nothing buffered: an empty buffer */
    assert_non_null(empty);
    assert_int_equal(err, 0);
    assert_int_equal(bp_readable_bytes(empty), 0);
    bp_release(empty);
    assert_null(bp_input_take(in, 1, &err));
    assert_int_equal(err, BP_ERANGE);
    assert_string_equal(last_misuse.message, "taking 1 bytes with only 0 unread");
    assert_int_equal(bp_input_skip(in, 1), BP_ERANGE);
    assert_int_equal(bp_input_add(in, NULL), BP_EINVAL);
    assert_int_equal(bp_input_add(NULL, NULL), BP_EINVAL);
    assert_int_equal(bp_input_read_fd(NULL, 0), BP_EINVAL);
    bp_buf *gone = bp_alloc(a, 8);
    bp_write_zero(gone, 8);
    bp_release(gone);
    assert_int_equal(bp_input_add(in, gone), BP_EFREED);
    bp_buf *nothing = bp_alloc(a, 8); /* no readable bytes: released at once */
    assert_int_equal(bp_input_add(in, nothing), 0);
    assert_null(bp_input_peek(in));
    assert_int_equal(bp_input_readable(NULL), 0);
    assert_null(bp_input_peek(NULL));
    bp_input_free(NULL);
    bp_input_clear(NULL);
    bp_input_free(in);
}

/* A buffer of n bytes of the test stream from `from`. */
static bp_buf *pattern_buffer(bp_allocator *a, size_t from, size_t n)
{
    bp_buf *b = bp_alloc(a, n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) assert_int_equal(bp_write_u8(b, pattern(from + i)), 0);
    return b;
}

/* A composite that a frame shows is never changed afterwards: adding to the input copies
 * its unread bytes instead, so the frame, which reads through the composite's table of
 * components, may be on another thread meanwhile. */
static void test_composite_shown_by_a_frame_stays_as_it_is(void **state)
{
    bp_allocator *a = *state;
    bp_input *in = bp_input_new(a, NULL, NULL);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 0, 5000)), 0);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 5000, 5000)), 0);
    bp_buf *shown = bp_input_peek(in);
    assert_int_equal(bp_composite_components(shown), 2);
    bp_buf *frame = bp_input_take(in, 100, NULL);
    assert_non_null(frame);
    size_t total = 10000;
    for (size_t k = 0; k < 5; k++) {
        assert_int_equal(bp_input_add(in, pattern_buffer(a, total, 5000)), 0);
        total += 5000;
    }
    /* The frame keeps the composite alive, as it was. */
    assert_int_equal(bp_composite_components(shown), 2);
    assert_int_equal(bp_capacity(shown), 10000);
    assert_true(bp_input_peek(in) != shown);
    expect_pattern(frame, 0, 100);
    expect_pattern(bp_input_peek(in), 100, total - 100);
    bp_release(frame);
    /* Held by nobody else, the input's composite takes components again, in place. */
    bp_buf *now = bp_input_peek(in);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, total, 5000)), 0);
    total += 5000;
    assert_true(bp_input_peek(in) == now);
    expect_pattern(now, 100, total - 100);
    bp_input_free(in);
}

typedef struct frame_reader {
    bp_buf *frame;
    size_t from;
    atomic_bool *stop;
} frame_reader;

static void *read_frame_until_stopped(void *arg)
{
    frame_reader *r = arg;
    do {
        size_t n = bp_readable_bytes(r->frame), at = bp_reader_index(r->frame);
        for (size_t i = 0; i < n; i++) {
            uint8_t v = 0;
            if (bp_get_u8(r->frame, at + i, &v) != 0 || v != pattern(r->from + i)) return (void *)1;
        }
        if (RUNNING_ON_VALGRIND) sched_yield(); /* it runs one thread at a time */
    } while (!atomic_load(r->stop));
    return NULL;
}

/* Frames of an input's composite read on two other threads while the input's thread goes
 * on adding and taking (the sanitizer builds check the memory accesses). */
static void test_frames_of_a_composite_read_on_other_threads(void **state)
{
    bp_allocator *a = *state;
    /* Under Valgrind the threads take turns (TSan checks the races): one round. */
    for (unsigned round = 0; round < (RUNNING_ON_VALGRIND ? 1u : 20u); round++) {
        bp_input *in = bp_input_new(a, NULL, NULL);
        assert_int_equal(bp_input_add(in, pattern_buffer(a, 0, 5000)), 0);
        assert_int_equal(bp_input_add(in, pattern_buffer(a, 5000, 5000)), 0);
        atomic_bool stop = false;
        frame_reader readers[2] = {{bp_input_take(in, 4990, NULL), 0, &stop},
                                   {bp_input_take(in, 20, NULL), 4990, &stop}};
        pthread_t threads[2];
        for (int t = 0; t < 2; t++) assert_int_equal(pthread_create(&threads[t], NULL, read_frame_until_stopped, &readers[t]), 0);
        size_t total = 10000, taken = 5010;
        for (size_t k = 0; k < 40; k++) {
            assert_int_equal(bp_input_add(in, pattern_buffer(a, total, 5000)), 0);
            total += 5000;
            bp_buf *f = bp_input_take(in, 3000, NULL);
            expect_pattern(f, taken, 3000);
            taken += 3000;
            bp_release(f);
        }
        atomic_store(&stop, true);
        for (int t = 0; t < 2; t++) {
            void *bad;
            assert_int_equal(pthread_join(threads[t], &bad), 0);
            assert_null(bad);
            bp_release(readers[t].frame);
        }
        expect_pattern(bp_input_peek(in), taken, total - taken);
        bp_input_free(in);
    }
}

/* What bp_input_peek allows keeping - a retained slice of the unread bytes - can be added
 * back, also when the input's buffer is a composite: the bytes are appended (copied). */
static void test_add_of_a_slice_of_its_own_bytes(void **state)
{
    bp_allocator *a = *state;
    for (int linked = 0; linked < 2; linked++) {
        bp_input *in = bp_input_new(a, NULL, NULL);
        size_t total = linked ? 10000 : 3000;
        assert_int_equal(bp_input_add(in, pattern_buffer(a, 0, total / 2)), 0);
        assert_int_equal(bp_input_add(in, pattern_buffer(a, total / 2, total / 2)), 0);
        bp_buf *peek = bp_input_peek(in);
        assert_int_equal(bp_composite_components(peek) == 2, linked == 1);
        bp_buf *own = bp_retained_slice(peek, bp_reader_index(peek) + 7, 10, NULL);
        assert_non_null(own);
        assert_int_equal(bp_input_add(in, own), 0);
        assert_int_equal(bp_input_readable(in), total + 10);
        peek = bp_input_peek(in);
        expect_pattern_at(peek, bp_reader_index(peek), 0, total);
        expect_pattern_at(peek, bp_reader_index(peek) + total, 7, 10);
        bp_input_free(in);
    }
}

/* A buffer of n bytes of the test stream from `from`, under `depth` levels of composites. */
static bp_buf *nested_pattern_buffer(bp_allocator *a, size_t from, size_t n, int depth)
{
    bp_buf *b = pattern_buffer(a, from, n);
    for (int i = 0; i < depth; i++) {
        bp_buf *c = bp_composite(a, 4, NULL);
        assert_non_null(c);
        assert_int_equal(bp_composite_add(c, b, 1), 0);
        b = c;
    }
    return b;
}

/* Scattered buffers (composites, as deep as they may be) are copied into the input, not
 * linked under its own composite, which would nest them one level deeper: an add never
 * fails for the depth, and a scattered buffer the input adopted does not refuse the adds
 * after it. */
static void test_composites_added_are_copied_whatever_their_depth(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    for (int adopted = 0; adopted < 2; adopted++) {
        bp_input *in = bp_input_new(a, NULL, NULL);
        size_t total = 0;
        if (!adopted) {
            assert_int_equal(bp_input_add(in, pattern_buffer(a, 0, 100)), 0);
            total = 100;
        }
        assert_int_equal(bp_input_add(in, nested_pattern_buffer(a, total, 6000, BP_MAX_COMPOSITE_DEPTH)), 0);
        total += 6000;
        for (int k = 0; k < 3; k++) {
            assert_int_equal(bp_input_add(in, pattern_buffer(a, total, 5000)), 0);
            total += 5000;
        }
        assert_int_equal(bp_input_add(in, nested_pattern_buffer(a, total, 5000, 2)), 0);
        total += 5000;
        assert_int_equal(bp_input_readable(in), total);
        expect_pattern(bp_input_peek(in), 0, total);
        bp_buf *frame = bp_input_take(in, total, NULL);
        expect_pattern(frame, 0, total);
        bp_release(frame);
        bp_input_free(in);
    }
    assert_int_equal(last_misuse.count, 0);
}

/* bp_input_take_copy's copy is a buffer of the input's allocator with bp_alloc's max
 * capacity, whichever allocator (or wrapped memory) the bytes it copies came from. */
static void test_take_copy_comes_from_the_inputs_allocator(void **state)
{
    bp_allocator *a = *state;
    bp_allocator *other = bp_allocator_new(NULL, NULL);
    assert_non_null(other);
    bp_input *in = bp_input_new(a, NULL, NULL);
    static uint8_t memory[12];
    for (size_t i = 0; i < sizeof memory; i++) memory[i] = pattern(i);
    for (int kind = 0; kind < 2; kind++) {
        bp_buf *given = kind == 0 ? pattern_buffer(other, 0, 64) : bp_wrap(other, memory, sizeof memory, NULL, NULL, NULL);
        assert_non_null(given);
        assert_int_equal(bp_input_add(in, given), 0); /* adopted: the input's buffer is other's */
        int err = 1;
        bp_buf *copy = bp_input_take_copy(in, 5, &err);
        assert_non_null(copy);
        assert_int_equal(err, 0);
        assert_ptr_equal(bp_buf_allocator(copy), a);
        assert_int_equal(bp_capacity(copy), 5);
        assert_int_equal(bp_max_capacity(copy), BP_DEFAULT_MAX_CAPACITY);
        expect_pattern(copy, 0, 5);
        bp_release(copy);
        expect_pattern(bp_input_peek(in), 5, kind == 0 ? 59 : 7);
        bp_input_clear(in);
    }
    bp_input_free(in);
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(other, &s, sizeof s), 0);
    assert_int_equal(s.active_buffers, 0);
    bp_allocator_destroy(other);
}

/* A large frame reaching the input in small pieces (a layer below hands it over as it
 * comes) or in many reads costs copies linear in its size: each time the input makes room
 * it makes half as much again as is unread. Making only the room asked for, the 64th piece
 * after each copy was merged by copying the whole frame again (82 times a 1 MiB frame's
 * bytes in 100-byte pieces), and reads past 4 MiB grew the buffer 4 MiB at a time. */
static void test_large_frame_in_small_pieces_is_copied_linearly(void **state)
{
    bp_allocator *a = *state;
    enum { FRAME = 1 << 20, PIECE = 100 };
    bp_input *in = bp_input_new(a, NULL, NULL);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 0, 8192)), 0);
    for (size_t at = 8192; at < FRAME; at += PIECE) {
        size_t n = FRAME - at < PIECE ? FRAME - at : PIECE;
        assert_int_equal(bp_input_add(in, pattern_buffer(a, at, n)), 0);
    }
    assert_int_equal(bp_input_readable(in), FRAME);
    assert_true(bp_input_copied_bytes(in) <= 6 * (uint64_t)FRAME); /* 3.3x */
    bp_buf *frame = bp_input_take(in, FRAME, NULL);
    expect_pattern(frame, 0, FRAME);
    bp_release(frame);
    bp_input_free(in);
    if (slowed_down()) return; /* the same for reads, with a frame large enough to tell */
    enum { BIG = 64 << 20 };
    bp_input_config cfg;
    bp_input_config_init(&cfg);
    cfg.max_buffered = BIG;
    in = bp_input_new(a, &cfg, NULL);
    int fds[2];
    make_pipe(fds);
    uint8_t block[4096];
    for (size_t i = 0; i < sizeof block; i++) block[i] = (uint8_t)i;
    for (size_t sent = 0; sent < BIG;) {
        size_t n = 0;
        for (; n < 16 && sent + n * sizeof block < BIG; n++) put(fds[1], block, sizeof block);
        sent += n * sizeof block;
        for (size_t got = 0; got < n * sizeof block;) {
            long r = bp_input_read_fd(in, fds[0]);
            assert_true(r > 0);
            got += (size_t)r;
        }
    }
    assert_int_equal(bp_input_readable(in), BIG);
    assert_true(bp_input_copied_bytes(in) <= 4 * (uint64_t)BIG); /* 1.7x; in 4 MiB steps 8x */
    uint8_t v;
    assert_int_equal(bp_get_u8(bp_input_peek(in), BIG - 1, &v), 0);
    assert_int_equal(v, (uint8_t)(BIG - 1));
    bp_input_free(in);
    close(fds[0]);
    close(fds[1]);
}

/* A view whose parent was released behind its back, and a composite whose component was,
 * are refused with BP_EFREED whatever path the add would take (adopt, merge, link), and
 * nothing changes: the input goes on with what it held. */
static void test_broken_buffers_are_refused(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    bp_input *in = bp_input_new(a, NULL, NULL);
    for (int held = 0; held < 3; held++) { /* nothing unread; a few bytes; a large buffer */
        bp_input_clear(in);
        size_t unread = held == 0 ? 0 : held == 1 ? 10 : 6000;
        if (unread > 0) assert_int_equal(bp_input_add(in, pattern_buffer(a, 0, unread)), 0);
        for (int kind = 0; kind < 2; kind++) {
            size_t n = kind == 0 ? 8 : 5000;
            bp_buf *view, *c;
            make_broken(a, pattern_buffer(a, 100, n), pattern_buffer(a, 100, n), &view, &c);
            misuse_capture_start();
            assert_int_equal(bp_input_add(in, view), BP_EFREED);
            assert_int_equal(last_misuse.count, 1);
            assert_string_equal(last_misuse.func, "bp_input_add");
            assert_int_equal(bp_input_add(in, c), BP_EFREED);
            assert_int_equal(last_misuse.count, 2);
            assert_int_equal(bp_input_readable(in), unread);
            if (unread > 0) expect_pattern(bp_input_peek(in), 0, unread);
            bp_release(view); /* the references stayed the caller's */
            bp_release(c);
        }
    }
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 6000, 100)), 0);
    expect_pattern(bp_input_peek(in), 0, 6100);
    bp_input_free(in);
}

/* bp_input_copied_bytes counts every byte the input copies to hold what it was given -
 * appended bytes merged, unread bytes moved to a larger buffer or to the front - and
 * nothing else: not buffers adopted or linked, not reads, not bp_input_take_copy's copies. */
static void test_copied_bytes_counts_every_copy(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    make_pipe(fds);
    assert_int_equal(bp_input_copied_bytes(NULL), 0);
    bp_input *in = bp_input_new(a, NULL, NULL);
    assert_int_equal(bp_input_copied_bytes(in), 0);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 0, 100)), 0); /* adopted */
    assert_int_equal(bp_input_copied_bytes(in), 0);
    /* Small: the adopted buffer's 100 unread bytes go into one of the input's own (capacity
     * 150), then the 50 appended. */
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 100, 50)), 0);
    assert_int_equal(bp_input_copied_bytes(in), 150);
    assert_int_equal(bp_capacity(bp_input_peek(in)), 150);
    /* No room left: that buffer grows into a larger region (its 150 bytes move), then the
     * 60 appended. */
    const void *before = bp_data(bp_input_peek(in), 0);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 150, 60)), 0);
    assert_true(bp_data(bp_input_peek(in), 0) != before);
    assert_int_equal(bp_input_copied_bytes(in), 150 + 150 + 60);
    expect_pattern(bp_input_peek(in), 0, 210);
    bp_buf *frame = bp_input_take(in, 210, NULL); /* nothing unread: the buffer goes */
    expect_pattern(frame, 0, 210);
    bp_release(frame);
    /* Large ones: the first adopted, the second linked. */
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 210, 5000)), 0);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 5210, 5000)), 0);
    assert_int_equal(bp_composite_components(bp_input_peek(in)), 2);
    assert_int_equal(bp_input_copied_bytes(in), 360);
    frame = bp_input_take_copy(in, 100, NULL); /* the caller's copy, not the input's */
    expect_pattern(frame, 210, 100);
    bp_release(frame);
    assert_int_equal(bp_input_copied_bytes(in), 360);
    /* A read lands in a buffer of the input's own: the composite's 9900 unread bytes are
     * copied into one first; the 32 read are not counted. */
    put_pattern(fds[1], 10210, 32);
    assert_int_equal(bp_input_read_fd(in, fds[0]), 32);
    assert_int_equal(bp_input_copied_bytes(in), 360 + 9900);
    expect_pattern(bp_input_peek(in), 310, 9932);
    bp_input_free(in);
    close(fds[0]);
    close(fds[1]);
    /* Compaction: a full buffer of the input's own (capacity 150) read to 4 bytes from its
     * end; those move to the front (moving fewer bytes than were consumed), the 10 added
     * after them. */
    in = bp_input_new(a, NULL, NULL);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 0, 100)), 0);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 100, 50)), 0);
    assert_int_equal(bp_capacity(bp_input_peek(in)), 150);
    assert_int_equal(bp_input_skip(in, 146), 0);
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 150, 10)), 0);
    assert_int_equal(bp_capacity(bp_input_peek(in)), 150);
    assert_int_equal(bp_reader_index(bp_input_peek(in)), 0);
    assert_int_equal(bp_input_copied_bytes(in), 150 + 4 + 10);
    expect_pattern(bp_input_peek(in), 146, 14);
    /* Read 10 bytes into it only: moving the 140 unread ones would move more than was
     * consumed, so they go to a fresh buffer with room for half as many again (70). */
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 160, 136)), 0); /* full again */
    assert_int_equal(bp_writable_bytes(bp_input_peek(in)), 0);
    assert_int_equal(bp_input_skip(in, 10), 0); /* 140 unread */
    assert_int_equal(bp_input_add(in, pattern_buffer(a, 296, 10)), 0);
    assert_int_equal(bp_capacity(bp_input_peek(in)), 140 + 70);
    assert_int_equal(bp_input_copied_bytes(in), 164 + 136 + 140 + 10);
    expect_pattern(bp_input_peek(in), 156, 150);
    bp_input_free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_reads_and_end_of_stream, teardown),
        BOTH(test_idle_input_holds_no_buffer, teardown),
        BOTH(test_live_frame_keeps_its_bytes_while_input_compacts, teardown),
        BOTH(test_retained_peek_slice_is_not_moved_by_growth, teardown),
        BOTH(test_read_size_adapts, teardown),
        BOTH(test_add_merges_small_and_links_large, teardown),
        BOTH(test_read_after_linked_buffers, teardown),
        BOTH(test_limit_refuses_more, teardown),
        BOTH(test_take_and_errors, teardown),
        BOTH(test_composite_shown_by_a_frame_stays_as_it_is, teardown),
        BOTH(test_frames_of_a_composite_read_on_other_threads, teardown),
        BOTH(test_add_of_a_slice_of_its_own_bytes, teardown),
        BOTH(test_composites_added_are_copied_whatever_their_depth, teardown),
        BOTH(test_copied_bytes_counts_every_copy, teardown),
        BOTH(test_broken_buffers_are_refused, teardown),
        BOTH(test_large_frame_in_small_pieces_is_copied_linearly, teardown),
        BOTH(test_take_copy_comes_from_the_inputs_allocator, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
