/* SPDX-License-Identifier: MIT */
/* bp_output (gathering writes, partial writes, water marks, release on close and error),
 * bp_wrap (the program's memory as a buffer), and a length-prefixed echo server over epoll
 * made of the server layer's pieces only. Against the pooled and the unpooled allocator. */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>

static int teardown(void **state)
{
    misuse_capture_stop();
    bp_allocator_stats s;
    bp_allocator_get_stats(*state, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0); /* every queued buffer was released */
    bp_allocator_destroy(*state);
    return 0;
}

static bp_allocator_stats stats_of(bp_allocator *a)
{
    bp_allocator_stats s;
    assert_int_equal(bp_allocator_get_stats(a, &s, sizeof s), 0);
    return s;
}

static void nonblocking(int fd) { assert_int_equal(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0); }

static uint8_t pattern(size_t i) { return (uint8_t)(i * 7 + i / 251); }

/* Counts free_fn calls and remembers the last one's arguments. */
typedef struct free_record {
    int calls;
    void *memory;
    void *user_data;
    pthread_t thread;
} free_record;

static void record_free(void *memory, void *user_data)
{
    free_record *r = user_data;
    r->calls++;
    r->memory = memory;
    r->user_data = user_data;
    r->thread = pthread_self();
}

static void free_malloced(void *memory, void *user_data)
{
    record_free(memory, user_data);
    free(memory);
}

/* A buffer of n bytes holding pattern(from + i), of a kind chosen by `kind`: plain, a
 * composite of three parts, wrapped malloc'ed memory, a retained slice of a larger buffer. */
static bp_buf *patterned(bp_allocator *a, size_t from, size_t n, int kind, free_record *frees)
{
    uint8_t *bytes = malloc(n + 1);
    for (size_t i = 0; i < n; i++) bytes[i] = pattern(from + i);
    bp_buf *b = NULL;
    switch (kind % 4) {
    case 0:
        b = bp_alloc(a, n);
        bp_write_bytes(b, bytes, n);
        break;
    case 1:
        b = bp_composite(a, 4, NULL);
        for (size_t part = 0, at = 0; part < 3; part++) {
            size_t len = part < 2 ? n / 3 : n - at;
            bp_buf *c = bp_alloc(a, len);
            bp_write_bytes(c, bytes + at, len);
            assert_int_equal(bp_composite_add(b, c, 1), 0);
            at += len;
        }
        break;
    case 2:
        b = bp_wrap(a, bytes, n, free_malloced, frees, NULL);
        return b; /* the bytes are the buffer's now */
    default: {
        bp_buf *big = bp_alloc(a, n + 20);
        bp_write_zero(big, 10);
        bp_write_bytes(big, bytes, n);
        bp_write_zero(big, 10);
        b = bp_retained_slice(big, 10, n, NULL);
        bp_release(big);
        break;
    }
    }
    free(bytes);
    return b;
}

/* Reads what fd has (non-blocking) into got[*received ...], at most `max`. */
static size_t drain(int fd, uint8_t *got, size_t *received, size_t max)
{
    ssize_t n = read(fd, got + *received, max);
    if (n < 0) {
        assert_true(errno == EAGAIN);
        return 0;
    }
    *received += (size_t)n;
    return (size_t)n;
}

/* A peer that reads slowly: every flush stops short, the next one goes on where it
 * stopped, and every byte arrives once, in order. */
static void test_partial_writes_on_socketpair(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    nonblocking(fds[0]);
    nonblocking(fds[1]);
    int small = 16384;
    assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    bp_output *out = bp_output_new(NULL, NULL);
    free_record frees = {0};
    size_t total = 0, buffers = 0;
    uint64_t rng = 7;
    while (total < 600000) {
        size_t n = 1 + test_rand(&rng) % 6000;
        assert_true(bp_output_add(out, patterned(a, total, n, (int)buffers, &frees)) >= 0);
        total += n;
        buffers++;
    }
    assert_int_equal(bp_output_pending(out), total);
    assert_int_equal(bp_output_count(out), buffers);
    uint8_t *got = malloc(total);
    size_t received = 0, written = 0;
    bool saw_eagain = false;
    while (written < total) {
        long w = bp_output_flush(out, fds[0]);
        assert_true(w >= 0);
        written += (size_t)w;
        assert_int_equal(bp_output_pending(out), total - written);
        if (written < total && w > 0) { /* the peer is full: nothing more now */
            assert_int_equal(bp_output_flush(out, fds[0]), 0);
            saw_eagain = true;
        }
        drain(fds[1], got, &received, 5000); /* part of it */
    }
    assert_true(saw_eagain);
    while (received < total) drain(fds[1], got, &received, total - received);
    for (size_t i = 0; i < total; i++)
        if (got[i] != pattern(i)) fail_msg("byte %zu: %u, expected %u", i, got[i], pattern(i));
    assert_int_equal(bp_output_count(out), 0);
    assert_int_equal(frees.calls, (int)(buffers + 1) / 4); /* every wrapped buffer, once */
    free(got);
    bp_output_free(out);
    close(fds[0]);
    close(fds[1]);
}

/* More buffers than one writev takes (IOV_MAX blocks): several calls, in order. */
static void test_more_blocks_than_iov_max(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    bp_output *out = bp_output_new(NULL, NULL);
    for (size_t i = 0; i < 3000; i++) {
        bp_buf *b = bp_alloc(a, 1);
        bp_write_u8(b, pattern(i));
        assert_true(bp_output_add(out, b) >= 0);
    }
    assert_int_equal(bp_output_flush(out, fds[0]), 3000);
    uint8_t got[3000];
    size_t received = 0;
    while (received < 3000) received += (size_t)read(fds[1], got + received, 3000 - received);
    for (size_t i = 0; i < 3000; i++) assert_int_equal(got[i], pattern(i));
    bp_output_free(out);
    close(fds[0]);
    close(fds[1]);
}

typedef struct flips {
    int count;
    int last;
} flips;

static void on_writability(int writable, void *user_data)
{
    flips *f = user_data;
    f->count++;
    f->last = writable;
}

/* Netty's marks: unwritable once pending passes the high mark, writable again only below
 * the low mark. A pipe of one page takes 4096 bytes at most per flush. */
static void test_water_marks(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    nonblocking(fds[0]);
    nonblocking(fds[1]);
    assert_true(fcntl(fds[1], F_SETPIPE_SZ, 4096) >= 4096);
    int pipe_size = fcntl(fds[1], F_GETPIPE_SZ);
    flips f = {0, -1};
    bp_output_config cfg;
    bp_output_config_init(&cfg);
    assert_int_equal(cfg.low_water_mark, 32768);
    assert_int_equal(cfg.high_water_mark, 65536);
    cfg.low_water_mark = (size_t)pipe_size / 2;
    cfg.high_water_mark = (size_t)pipe_size + pipe_size / 2;
    cfg.on_writability = on_writability;
    cfg.user_data = &f;
    bp_output *out = bp_output_new(&cfg, NULL);
    size_t unit = (size_t)pipe_size / 4, pending = 0;
    for (int i = 0; i < 6; i++) { /* exactly the high mark: still writable */
        assert_int_equal(bp_output_add(out, patterned(a, pending, unit, 0, NULL)), 0);
        pending += unit;
    }
    assert_int_equal(bp_output_pending(out), cfg.high_water_mark);
    assert_int_equal(bp_output_writable(out), 1);
    assert_int_equal(f.count, 0);
    assert_int_equal(bp_output_add(out, patterned(a, pending, 1, 0, NULL)), 1); /* past it */
    pending += 1;
    assert_int_equal(bp_output_writable(out), 0);
    assert_int_equal(f.count, 1);
    assert_int_equal(f.last, 0);
    assert_int_equal(bp_output_add(out, patterned(a, pending, unit, 0, NULL)), 0); /* no new flip */
    pending += unit;
    assert_int_equal(f.count, 1);
    /* One pipe's worth goes: below the high mark, not below the low one: still unwritable. */
    long w = bp_output_flush(out, fds[1]);
    assert_true(w > 0 && (size_t)w <= (size_t)pipe_size);
    assert_true(bp_output_pending(out) >= cfg.low_water_mark && bp_output_pending(out) < cfg.high_water_mark);
    assert_int_equal(bp_output_writable(out), 0);
    assert_int_equal(f.count, 1);
    uint8_t sink[65536];
    size_t received = 0;
    while (bp_output_pending(out) > 0) {
        drain(fds[0], sink, &received, sizeof sink - received);
        assert_true(bp_output_flush(out, fds[1]) >= 0);
    }
    drain(fds[0], sink, &received, sizeof sink - received);
    assert_int_equal(received, pending);
    for (size_t i = 0; i < pending; i++) assert_int_equal(sink[i], pattern(i));
    assert_int_equal(bp_output_writable(out), 1);
    assert_int_equal(f.count, 2);
    assert_int_equal(f.last, 1);
    bp_output_free(out);
    close(fds[0]);
    close(fds[1]);
}

/* Closing with data queued releases every buffer (their memory too: stats back where they
 * were, wrapped memory freed once). */
static void test_clear_and_free_release_everything(void **state)
{
    bp_allocator *a = *state;
    bp_allocator_stats before = stats_of(a);
    flips f = {0, -1};
    bp_output_config cfg;
    bp_output_config_init(&cfg);
    cfg.high_water_mark = 100;
    cfg.low_water_mark = 10;
    cfg.on_writability = on_writability;
    cfg.user_data = &f;
    bp_output *out = bp_output_new(&cfg, NULL);
    free_record frees = {0};
    for (int round = 0; round < 2; round++) {
        for (int kind = 0; kind < 8; kind++) assert_true(bp_output_add(out, patterned(a, 0, 100, kind, &frees)) >= 0);
        assert_int_equal(bp_output_count(out), 8);
        assert_int_equal(bp_output_pending(out), 800);
        assert_int_equal(bp_output_writable(out), 0);
        assert_true(stats_of(a).active_buffers > before.active_buffers);
        if (round == 0) {
            bp_output_clear(out);
            assert_int_equal(bp_output_count(out), 0);
            assert_int_equal(bp_output_pending(out), 0);
            assert_int_equal(bp_output_writable(out), 1);
            assert_int_equal(f.count, 2); /* unwritable, then writable at the clear */
        } else {
            bp_output_free(out);
        }
        bp_allocator_stats after = stats_of(a);
        assert_int_equal(after.active_buffers, before.active_buffers);
        assert_int_equal(after.active_bytes, before.active_bytes);
        assert_int_equal(frees.calls, 2 * (round + 1));
    }
}

/* A gone peer: BP_EIO with EPIPE (no SIGPIPE: the process would die), and the queue
 * released. */
static void test_error_releases_queue(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    close(fds[1]);
    bp_output *out = bp_output_new(NULL, NULL);
    assert_int_equal(bp_output_add(out, patterned(a, 0, 500, 0, NULL)), 0);
    assert_int_equal(bp_output_add(out, patterned(a, 500, 500, 1, NULL)), 0);
    errno = 0;
    assert_int_equal(bp_output_flush(out, fds[0]), BP_EIO);
    assert_int_equal(errno, EPIPE);
    assert_int_equal(bp_output_count(out), 0);
    assert_int_equal(bp_output_pending(out), 0);
    assert_int_equal(bp_output_flush(out, fds[0]), 0); /* nothing queued */
    bp_output_free(out);
    close(fds[0]);
}

static void test_output_misuse(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    int err = 0;
    bp_output_config cfg;
    bp_output_config_init(&cfg);
    cfg.low_water_mark = cfg.high_water_mark + 1;
    assert_null(bp_output_new(&cfg, &err));
    assert_int_equal(err, BP_EINVAL);
    bp_output *out = bp_output_new(NULL, &err);
    assert_int_equal(err, 0);
    assert_int_equal(bp_output_add(out, NULL), BP_EINVAL);
    assert_int_equal(bp_output_add(NULL, NULL), BP_EINVAL);
    bp_buf *gone = bp_alloc(a, 8);
    bp_write_zero(gone, 8);
    bp_release(gone);
    assert_int_equal(bp_output_add(out, gone), BP_EFREED);
    bp_buf *empty = bp_alloc(a, 8);
    assert_int_equal(bp_output_add(out, empty), 0); /* released at once */
    assert_int_equal(bp_output_count(out), 0);
    assert_int_equal(bp_output_flush(NULL, 1), BP_EINVAL);
    assert_int_equal(bp_output_writable(NULL), BP_EINVAL);
    assert_int_equal(bp_output_pending(NULL), 0);
    bp_output_clear(NULL);
    bp_output_free(NULL);
    bp_output_free(out);
}

/* ---------------------------------------------------------------------------------------
 * bp_wrap
 * ------------------------------------------------------------------------------------- */

static void test_wrap_shows_the_memory_and_cannot_grow(void **state)
{
    bp_allocator *a = *state;
    static uint8_t memory[64];
    for (size_t i = 0; i < 64; i++) memory[i] = pattern(i);
    free_record frees = {0};
    int err = 1;
    bp_buf *b = bp_wrap(a, memory, 64, record_free, &frees, &err);
    assert_non_null(b);
    assert_int_equal(err, 0);
    assert_int_equal(bp_reader_index(b), 0);
    assert_int_equal(bp_writer_index(b), 64);
    assert_int_equal(bp_capacity(b), 64);
    assert_int_equal(bp_max_capacity(b), 64);
    assert_int_equal(bp_refcnt(b), 1);
    assert_ptr_equal(bp_data(b, 0), memory);
    uint32_t v;
    assert_int_equal(bp_get_u32(b, 4, &v), 0);
    assert_int_equal(v, (uint32_t)pattern(4) << 24 | (uint32_t)pattern(5) << 16 | pattern(6) << 8 | pattern(7));
    assert_int_equal(bp_set_u8(b, 0, 0xab), 0);
    assert_int_equal(memory[0], 0xab);
    char text[64];
    assert_true(bp_describe(b, text, sizeof text) > 0);
    assert_string_equal(text, "WrappedByteBuf(ridx: 0, widx: 64, cap: 64/64)");
    misuse_capture_start();
    assert_int_equal(bp_write_u8(b, 1), BP_ECAPACITY);
    assert_int_equal(bp_ensure_writable(b, 1), BP_ECAPACITY);
    assert_int_equal(bp_set_capacity(b, 65), BP_ECAPACITY);
    /* Shrinking lowers the capacity and moves nothing; it can go back up to the length. */
    assert_int_equal(bp_set_capacity(b, 16), 0);
    assert_ptr_equal(bp_data(b, 0), memory);
    assert_int_equal(bp_writer_index(b), 16);
    assert_int_equal(bp_set_capacity(b, 64), 0);
    assert_ptr_equal(bp_data(b, 0), memory);
    /* fd I/O: writes out of the memory, reads into it. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(bp_set_index(b, 0, 16), 0);
    assert_int_equal(bp_write_fd(b, fds[1], SIZE_MAX), 16);
    assert_int_equal(bp_set_index(b, 0, 32), 0);
    assert_int_equal(bp_read_fd(b, fds[0], 16), 16);
    assert_int_equal(memcmp(memory + 32, memory, 16), 0);
    close(fds[0]);
    close(fds[1]);
    /* Views and retained views; free_fn once, at the last release. */
    bp_buf *plain = bp_slice(b, 0, 8, NULL);
    bp_buf *held = bp_retained_slice(b, 8, 8, NULL);
    assert_non_null(plain);
    assert_int_equal(bp_release(b), 0);
    assert_int_equal(frees.calls, 0);
    uint8_t first;
    assert_int_equal(bp_get_u8(held, 0, &first), 0);
    assert_int_equal(first, memory[8]);
    assert_int_equal(bp_release(held), 1);
    assert_int_equal(frees.calls, 1);
    assert_ptr_equal(frees.memory, memory);
    assert_ptr_equal(frees.user_data, &frees);
}

/* Wrapped bytes are not the pool's: the object counts as an active buffer, its bytes
 * nowhere. As a component and released on another thread, free_fn is still called once. */
static void *release_it(void *b) { return (void *)(intptr_t)bp_release(b); }

static void test_wrap_statistics_and_release_elsewhere(void **state)
{
    bp_allocator *a = *state;
    bp_allocator_stats before = stats_of(a);
    free_record frees = {0};
    size_t length = (size_t)1 << 20;
    uint8_t *memory = malloc(length);
    memset(memory, 'w', length);
    bp_buf *b = bp_wrap(a, memory, length, free_malloced, &frees, NULL);
    bp_allocator_stats during = stats_of(a);
    assert_int_equal(during.active_buffers, before.active_buffers + 1);
    assert_int_equal(during.active_bytes, before.active_bytes);
    assert_int_equal(during.mapped_bytes, before.mapped_bytes);
    bp_buf *c = bp_composite(a, 4, NULL);
    assert_int_equal(bp_composite_add(c, b, 1), 0);
    assert_int_equal(bp_readable_bytes(c), length);
    assert_int_equal((int)(intptr_t)run_on_thread(release_it, c), 1);
    assert_int_equal(frees.calls, 1);
    assert_ptr_equal(frees.memory, memory);
    assert_false(pthread_equal(frees.thread, pthread_self()));
    bp_allocator_stats after = stats_of(a);
    assert_int_equal(after.active_buffers, before.active_buffers);
    assert_int_equal(after.active_bytes, before.active_bytes);
    /* NULL free_fn: static memory, nothing called. */
    static char text[] = "static";
    b = bp_wrap(a, text, 6, NULL, NULL, NULL);
    assert_non_null(b);
    assert_int_equal(bp_release(b), 1);
}

static void test_wrap_errors(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    static char memory[8];
    free_record frees = {0};
    int err = 0;
    assert_null(bp_wrap(NULL, memory, 8, record_free, &frees, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_null(bp_wrap(a, NULL, 8, record_free, &frees, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_string_equal(last_misuse.message, "memory is NULL");
    assert_null(bp_wrap(a, memory, BP_CAPACITY_LIMIT + 1, record_free, &frees, &err));
    assert_int_equal(err, BP_EOVERFLOW);
    assert_int_equal(frees.calls, 0);
    bp_buf *empty = bp_wrap(a, memory, 0, record_free, &frees, &err);
    assert_non_null(empty);
    assert_int_equal(bp_capacity(empty), 0);
    assert_int_equal(bp_release(empty), 1);
    assert_int_equal(frees.calls, 1);
}

/* An allocator destroyed with a wrapped buffer alive frees its own memory only: the
 * program's (static here) is not passed to free(). */
static void test_wrap_outlived_by_destroy(void **state)
{
    (void)state;
    static char memory[32];
    free_record frees = {0};
    bp_allocator *unpooled = bp_allocator_new_unpooled(NULL);
    bp_allocator *pooled = bp_allocator_new(NULL, NULL);
    assert_non_null(bp_wrap(unpooled, memory, sizeof memory, record_free, &frees, NULL));
    assert_non_null(bp_wrap(pooled, memory, sizeof memory, record_free, &frees, NULL));
    bp_allocator_destroy(unpooled);
    bp_allocator_destroy(pooled);
    assert_int_equal(frees.calls, 0);
}

/* ---------------------------------------------------------------------------------------
 * A length-prefixed echo server over epoll, made of the pieces above only
 * ------------------------------------------------------------------------------------- */

typedef struct echo_server {
    bp_allocator *a;
    int fd;
    int frames;
} echo_server;

static void *echo_serve(void *arg)
{
    echo_server *s = arg;
    bp_input *in = bp_input_new(s->a, NULL, NULL);
    bp_frame_config fc;
    bp_frame_config_init(&fc, BP_FRAME_LENGTH_FIELD); /* 4-byte big-endian length, kept */
    bp_frame_decoder *dec = bp_frame_decoder_new(&fc, NULL);
    bp_output *out = bp_output_new(NULL, NULL);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s->fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    bool eof = false;
    while (!eof || bp_output_pending(out) > 0) {
        if (epoll_wait(ep, &ev, 1, 10000) != 1) break; /* a stall fails the test, never hangs it */
        long got = 0;
        while (!eof && bp_output_writable(out) && (got = bp_input_read_fd(in, s->fd)) > 0) {
            bp_buf *frame;
            while (bp_frame_decode(dec, in, &frame) == 1) {
                bp_output_add(out, frame); /* the frame as it came, header and all */
                s->frames++;
            }
        }
        eof = eof || got == BP_EOF;
        if ((got < 0 && got != BP_EOF) || bp_output_flush(out, s->fd) < 0) break;
        /* Backpressure: no reading while the peer does not take what is queued. */
        ev.events = (!eof && bp_output_writable(out) ? EPOLLIN : 0) | (bp_output_pending(out) > 0 ? EPOLLOUT : 0);
        epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
    }
    close(ep);
    shutdown(s->fd, SHUT_WR);
    bp_output_free(out);
    bp_frame_decoder_free(dec);
    bp_input_free(in);
    return NULL;
}

static void test_echo_server(void **state)
{
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    nonblocking(fds[0]);
    nonblocking(fds[1]);
    echo_server server = {*state, fds[1], 0};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, echo_serve, &server), 0);
    /* 300 pipelined frames of 0 .. 20000 bytes. */
    uint64_t rng = 300;
    size_t len = 0, cap = 300 * 20004;
    uint8_t *stream = malloc(cap), *echoed = malloc(cap);
    for (int i = 0; i < 300; i++) {
        uint32_t n = (uint32_t)(test_rand(&rng) % 20001);
        stream[len] = (uint8_t)(n >> 24), stream[len + 1] = (uint8_t)(n >> 16);
        stream[len + 2] = (uint8_t)(n >> 8), stream[len + 3] = (uint8_t)n;
        for (uint32_t k = 0; k < n; k++) stream[len + 4 + k] = (uint8_t)test_rand(&rng);
        len += 4 + n;
    }
    size_t sent = 0, received = 0;
    for (;;) {
        struct pollfd p = {fds[0], (short)(POLLIN | (sent < len ? POLLOUT : 0)), 0};
        assert_int_equal(poll(&p, 1, 10000), 1);
        if (sent < len && (p.revents & POLLOUT)) {
            ssize_t n = write(fds[0], stream + sent, len - sent < 65536 ? len - sent : 65536);
            if (n > 0) sent += (size_t)n;
            if (sent == len) shutdown(fds[0], SHUT_WR);
        }
        ssize_t n = read(fds[0], echoed + received, cap - received);
        if (n == 0) break;
        if (n > 0) received += (size_t)n;
    }
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(server.frames, 300);
    assert_int_equal(received, len);
    assert_memory_equal(echoed, stream, len);
    free(stream);
    free(echoed);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_partial_writes_on_socketpair, teardown),
        BOTH(test_more_blocks_than_iov_max, teardown),
        BOTH(test_water_marks, teardown),
        BOTH(test_clear_and_free_release_everything, teardown),
        BOTH(test_error_releases_queue, teardown),
        BOTH(test_output_misuse, teardown),
        BOTH(test_wrap_shows_the_memory_and_cannot_grow, teardown),
        BOTH(test_wrap_statistics_and_release_elsewhere, teardown),
        BOTH(test_wrap_errors, teardown),
        cmocka_unit_test(test_wrap_outlived_by_destroy),
        BOTH(test_echo_server, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
