/* SPDX-License-Identifier: MIT */
/* bp_output (gathering writes, partial writes, water marks, release on close and error;
 * file regions: sendfile between buffers, the copy where sendfile refuses, their release
 * callbacks and errors), bp_wrap (the program's memory as a buffer), and a length-prefixed
 * echo server over epoll made of the server layer's pieces only. Against the pooled and
 * the unpooled allocator. */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/sendfile.h>
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
 * File regions
 * ------------------------------------------------------------------------------------- */

/* The bytes of the test files: unlike pattern(), so that a region's bytes written from the
 * wrong offset or in a buffer's place show. */
static uint8_t file_byte(size_t i) { return (uint8_t)(i * 13 + i / 509 + 101); }

/* An unlinked temporary file of n bytes of file_byte(i); its file offset left at 0. */
static int file_of(size_t n)
{
    char path[] = "/tmp/bytepool-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    uint8_t *bytes = malloc(n + 1);
    for (size_t i = 0; i < n; i++) bytes[i] = file_byte(i);
    assert_int_equal(write(fd, bytes, n), (ssize_t)n);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    free(bytes);
    return fd;
}

/* Counts one region's release calls. */
typedef struct region_record {
    int calls;
    int completed;
    int fd;
} region_record;

static void record_region(int fd, int completed, void *user_data)
{
    region_record *r = user_data;
    r->calls++;
    r->completed = completed;
    r->fd = fd;
}

/* The expected stream: what was queued, in order. */
typedef struct byte_stream {
    uint8_t *bytes;
    size_t n;
} byte_stream;

static void expect_pattern(byte_stream *s, size_t n)
{
    for (size_t i = 0; i < n; i++, s->n++) s->bytes[s->n] = pattern(s->n);
}

static void expect_file(byte_stream *s, size_t offset, size_t n)
{
    for (size_t i = 0; i < n; i++) s->bytes[s->n++] = file_byte(offset + i);
}

/* A socketpair, both ends non-blocking, the writing end's send buffer small: flushes stop
 * short. */
static void small_socketpair(int fds[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    nonblocking(fds[0]);
    nonblocking(fds[1]);
    int small = 16384;
    assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
}

/* Flushes out to fds[0] until nothing is pending, reading fds[1] a part at a time in
 * between; checks the pending count after every flush and that some flush stopped short.
 * Returns the bytes received (`room` at most). */
static size_t flush_through(bp_output *out, int fds[2], uint8_t *got, size_t room)
{
    size_t total = bp_output_pending(out), written = 0, received = 0;
    bool stopped_short = false;
    while (written < total) {
        long w = bp_output_flush(out, fds[0]);
        assert_true(w >= 0);
        written += (size_t)w;
        assert_int_equal(bp_output_pending(out), total - written);
        stopped_short = stopped_short || (written < total && w > 0);
        drain(fds[1], got, &received, room - received < 5000 ? room - received : 5000);
    }
    while (drain(fds[1], got, &received, room - received) > 0) {}
    assert_true(stopped_short);
    return received;
}

/* One buffer queued twice (a reference each time) goes out twice, whole, however the writes
 * are cut; the output never moves the buffer's own indices. */
static void test_one_buffer_queued_twice(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    small_socketpair(fds);
    bp_output *out = bp_output_new(NULL, NULL);
    bp_buf *b = patterned(a, 0, 30000, 0, NULL);
    assert_int_equal(bp_retain(b), 0);
    assert_int_equal(bp_retain(b), 0); /* the third reference: to look at it afterwards */
    assert_true(bp_output_add(out, b) >= 0);
    assert_true(bp_output_add(out, b) >= 0);
    assert_int_equal(bp_output_pending(out), 60000);
    assert_int_equal(bp_output_count(out), 2);
    uint8_t *got = malloc(60000);
    assert_int_equal(flush_through(out, fds, got, 60000), 60000);
    for (size_t i = 0; i < 60000; i++)
        if (got[i] != pattern(i % 30000)) fail_msg("byte %zu: %u, expected %u", i, got[i], pattern(i % 30000));
    assert_int_equal(bp_output_count(out), 0);
    assert_int_equal(bp_reader_index(b), 0);
    assert_int_equal(bp_readable_bytes(b), 30000);
    assert_int_equal(bp_refcnt(b), 1);
    bp_release(b);
    free(got);
    bp_output_free(out);
    close(fds[0]);
    close(fds[1]);
}

/* A queued buffer released behind the output's back (and not handed out again) fails the
 * flush that reaches it, with nothing of it written. */
static void test_buffer_released_behind_its_back(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    int fds[2];
    small_socketpair(fds);
    bp_output *out = bp_output_new(NULL, NULL);
    bp_buf *first = patterned(a, 0, 100, 0, NULL), *second = patterned(a, 100, 100, 0, NULL);
    assert_true(bp_output_add(out, first) >= 0);
    assert_true(bp_output_add(out, second) >= 0);
    assert_int_equal(bp_release(second), 1); /* misuse: the output's reference */
    assert_int_equal(bp_output_flush(out, fds[0]), BP_EFREED);
    assert_int_equal(last_misuse.err, BP_EFREED);
    uint8_t got[300];
    size_t received = 0;
    drain(fds[1], got, &received, sizeof got);
    assert_true(received <= 100); /* at most the first buffer's bytes */
    for (size_t i = 0; i < received; i++) assert_int_equal(got[i], pattern(i));
    bp_output_free(out);
    close(fds[0]);
    close(fds[1]);
}

/* A buffer broken before it is queued - a view whose parent, a composite whose component
 * was released behind its back - is refused at the add with BP_EFREED, the reference left
 * to the caller, the queue as it was. */
static void test_broken_buffer_refused_at_add(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    int fds[2];
    small_socketpair(fds);
    bp_output *out = bp_output_new(NULL, NULL);
    assert_true(bp_output_add(out, patterned(a, 0, 100, 0, NULL)) >= 0);
    bp_buf *view, *c;
    make_broken(a, patterned(a, 100, 50, 0, NULL), patterned(a, 100, 50, 0, NULL), &view, &c);
    misuse_capture_start();
    assert_int_equal(bp_output_add(out, view), BP_EFREED);
    assert_string_equal(last_misuse.func, "bp_output_add");
    assert_int_equal(bp_output_add_notify(out, c, NULL, NULL), BP_EFREED);
    assert_string_equal(last_misuse.func, "bp_output_add_notify");
    assert_int_equal(last_misuse.count, 2);
    assert_int_equal(bp_output_count(out), 1);
    assert_int_equal(bp_output_pending(out), 100);
    assert_int_equal(bp_output_flush(out, fds[0]), 100);
    uint8_t got[200];
    size_t received = 0;
    drain(fds[1], got, &received, sizeof got);
    assert_int_equal(received, 100);
    for (size_t i = 0; i < received; i++) assert_int_equal(got[i], pattern(i));
    bp_release(view); /* the references stayed the caller's */
    bp_release(c);
    bp_output_free(out);
    close(fds[0]);
    close(fds[1]);
}

/* Regions of one shared fd between buffers of every kind, regions back to back: the bytes
 * arrive in the order queued, partial writes cut
 * buffers and regions alike, each region is released once, completed, when its last byte
 * is written (not before), and the fd's own offset never moves. */
static void test_file_regions_between_buffers(void **state)
{
    bp_allocator *a = *state;
    enum { FILE_SIZE = 300000, REGIONS = 8 };
    int file = file_of(FILE_SIZE);
    int fds[2];
    small_socketpair(fds);
    bp_output *out = bp_output_new(NULL, NULL);
    static const size_t at[REGIONS] = {0, 1, 4095, 0, 200000, 123, 299999, 7};
    static const size_t len[REGIONS] = {FILE_SIZE, 1, 70000, 100, 100000, 5000, 1, 150000};
    region_record records[REGIONS] = {{0}};
    byte_stream want = {malloc(4 * FILE_SIZE), 0};
    free_record frees = {0};
    size_t items = 0;
    for (int i = 0; i < REGIONS; i++) {
        if (i % 3 != 1) { /* regions 1, 4 and 7 follow another region directly */
            size_t n = 1 + (size_t)i * 3001;
            assert_true(bp_output_add(out, patterned(a, want.n, n, i, &frees)) >= 0);
            expect_pattern(&want, n);
            items++;
        }
        assert_true(bp_output_add_file(out, file, (int64_t)at[i], len[i], record_region, &records[i]) >= 0);
        expect_file(&want, at[i], len[i]);
        items++;
    }
    assert_int_equal(bp_output_add(out, patterned(a, want.n, 10, 0, NULL)), 0);
    expect_pattern(&want, 10);
    assert_int_equal(bp_output_pending(out), want.n);
    assert_int_equal(bp_output_count(out), items + 1);
    for (int i = 0; i < REGIONS; i++) assert_int_equal(records[i].calls, 0);
    uint8_t *got = malloc(want.n + 1);
    size_t total = want.n, written = 0, received = 0;
    bool stopped_short = false;
    while (written < total) {
        long w = bp_output_flush(out, fds[0]);
        assert_true(w >= 0);
        written += (size_t)w;
        assert_int_equal(bp_output_pending(out), total - written);
        stopped_short = stopped_short || (written < total && w > 0);
        /* A region is released exactly when the bytes up to its end are written. */
        size_t end = 0;
        for (int i = 0; i < REGIONS; i++) {
            end += i % 3 != 1 ? 1 + (size_t)i * 3001 : 0;
            end += len[i];
            assert_int_equal(records[i].calls, written >= end ? 1 : 0);
        }
        drain(fds[1], got, &received, total - received < 5000 ? total - received : 5000);
    }
    while (drain(fds[1], got, &received, total - received) > 0) {}
    assert_true(stopped_short);
    assert_int_equal(received, want.n);
    for (size_t i = 0; i < want.n; i++)
        if (got[i] != want.bytes[i]) fail_msg("byte %zu: %u, expected %u", i, got[i], want.bytes[i]);
    for (int i = 0; i < REGIONS; i++) {
        assert_int_equal(records[i].calls, 1);
        assert_int_equal(records[i].completed, 1);
        assert_int_equal(records[i].fd, file);
    }
    assert_int_equal(bp_output_count(out), 0);
    assert_int_equal(lseek(file, 0, SEEK_CUR), 0);
    free(got);
    free(want.bytes);
    bp_output_free(out);
    for (int i = 0; i < REGIONS; i++) assert_int_equal(records[i].calls, 1); /* not again */
    close(file);
    close(fds[0]);
    close(fds[1]);
}

/* Netty's marks count file bytes as buffer bytes: a region takes the output past the high
 * mark, and its partial writes (sendfile into a pipe of one page) bring it back below the
 * low one, not before. */
static void test_file_region_water_marks(void **state)
{
    bp_allocator *a = *state;
    int file = file_of(20000);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    nonblocking(fds[0]);
    nonblocking(fds[1]);
    assert_true(fcntl(fds[1], F_SETPIPE_SZ, 4096) >= 4096);
    assert_int_equal(fcntl(fds[1], F_GETPIPE_SZ), 4096);
    flips f = {0, -1};
    bp_output_config cfg;
    bp_output_config_init(&cfg);
    cfg.low_water_mark = 3000;
    cfg.high_water_mark = 10000;
    cfg.on_writability = on_writability;
    cfg.user_data = &f;
    bp_output *out = bp_output_new(&cfg, NULL);
    region_record r = {0};
    assert_int_equal(bp_output_add(out, patterned(a, 0, 1000, 0, NULL)), 0);
    assert_int_equal(bp_output_add_file(out, file, 0, 9000, record_region, &r), 0); /* exactly the mark */
    assert_int_equal(bp_output_writable(out), 1);
    assert_int_equal(f.count, 0);
    assert_int_equal(bp_output_add_file(out, file, 9000, 1, record_region, &r), 1); /* past it */
    assert_int_equal(bp_output_writable(out), 0);
    assert_int_equal(f.count, 1);
    assert_int_equal(f.last, 0);
    assert_int_equal(bp_output_pending(out), 10001);
    uint8_t sink[12000];
    size_t received = 0, written = 0;
    bool between_marks = false;
    while (bp_output_pending(out) > 0) {
        long w = bp_output_flush(out, fds[1]);
        assert_true(w >= 0 && w <= 4096);
        written += (size_t)w;
        size_t pending = bp_output_pending(out);
        assert_int_equal(pending, 10001 - written);
        assert_int_equal(bp_output_writable(out), pending < cfg.low_water_mark);
        assert_int_equal(f.count, pending < cfg.low_water_mark ? 2 : 1);
        between_marks = between_marks || (pending >= cfg.low_water_mark && pending < cfg.high_water_mark);
        drain(fds[0], sink, &received, sizeof sink - received);
    }
    assert_true(between_marks);
    assert_int_equal(f.last, 1);
    drain(fds[0], sink, &received, sizeof sink - received);
    assert_int_equal(received, 10001);
    for (size_t i = 0; i < 1000; i++) assert_int_equal(sink[i], pattern(i));
    for (size_t i = 1000; i < 10001; i++) assert_int_equal(sink[i], file_byte(i - 1000));
    assert_int_equal(r.calls, 2);
    assert_int_equal(r.completed, 1);
    bp_output_free(out);
    close(file);
    close(fds[0]);
    close(fds[1]);
}

/* A region dropped unwritten or half written, by clear, by free, or by a gone peer (EPIPE
 * from sendfile, which cannot be told MSG_NOSIGNAL: the test would die of SIGPIPE, whose
 * default action ends the process), is released once, not completed; the thread's signal
 * mask is left as it was and no SIGPIPE is left pending. */
static void test_file_region_release_on_clear_free_error(void **state)
{
    bp_allocator *a = *state;
    int file = file_of(100000);
    region_record r[6] = {{0}};
    bp_output *out = bp_output_new(NULL, NULL);
    assert_int_equal(bp_output_add_file(out, file, 0, 10, record_region, &r[0]), 0);
    assert_int_equal(bp_output_add(out, patterned(a, 0, 100, 1, NULL)), 0);
    assert_int_equal(bp_output_add_file(out, file, 10, 100000 - 10, record_region, &r[1]), 1);
    bp_output_clear(out);
    assert_int_equal(bp_output_count(out), 0);
    assert_int_equal(bp_output_pending(out), 0);
    assert_int_equal(bp_output_writable(out), 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].completed, 0);
        assert_int_equal(r[i].fd, file);
    }
    /* Half written, then cleared; then one freed with the output. */
    int fds[2];
    small_socketpair(fds);
    assert_int_equal(bp_output_add_file(out, file, 0, 100000, record_region, &r[2]), 1);
    long w = bp_output_flush(out, fds[0]);
    assert_true(w > 0 && w < 100000);
    assert_int_equal(bp_output_pending(out), 100000 - (size_t)w);
    assert_int_equal(r[2].calls, 0);
    bp_output_clear(out);
    assert_int_equal(r[2].calls, 1);
    assert_int_equal(r[2].completed, 0);
    assert_int_equal(bp_output_add_file(out, file, 5, 5, record_region, &r[3]), 0);
    bp_output_free(out);
    assert_int_equal(r[3].calls, 1);
    assert_int_equal(r[3].completed, 0);
    close(fds[0]);
    close(fds[1]);
    /* The peer gone: sendfile is what finds it (the region is at the head), then sendmsg. */
    sigset_t before, after, pending;
    assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &before), 0);
    assert_false(sigismember(&before, SIGPIPE));
    for (int k = 0; k < 2; k++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
        close(fds[1]);
        out = bp_output_new(NULL, NULL);
        if (k == 1) assert_int_equal(bp_output_add(out, patterned(a, 0, 500, 0, NULL)), 0);
        assert_int_equal(bp_output_add_file(out, file, 0, 1000, record_region, &r[4 + k]), 0);
        errno = 0;
        assert_int_equal(bp_output_flush(out, fds[0]), BP_EIO);
        assert_int_equal(errno, EPIPE);
        assert_int_equal(bp_output_count(out), 0);
        assert_int_equal(bp_output_pending(out), 0);
        assert_int_equal(r[4 + k].calls, 1);
        assert_int_equal(r[4 + k].completed, 0);
        bp_output_free(out);
        assert_int_equal(r[4 + k].calls, 1);
        close(fds[0]);
    }
    assert_int_equal(pthread_sigmask(SIG_SETMASK, NULL, &after), 0);
    assert_false(sigismember(&after, SIGPIPE));
    assert_int_equal(sigpending(&pending), 0);
    assert_false(sigismember(&pending, SIGPIPE));
    close(file);
}

/* Completions of bp_output_add_notify: each call's arguments, and the order of calls. */
typedef struct done_record {
    int calls;
    int completed;
    int order; /* of the last call, counted over all records */
    bp_allocator *a;
    uint64_t live_at_call; /* active_buffers when called: its buffer is released by then */
} done_record;

static int done_calls;

static void record_done(int completed, void *user_data)
{
    done_record *r = user_data;
    r->calls++;
    r->completed = completed;
    r->order = ++done_calls;
    if (r->a != NULL) r->live_at_call = stats_of(r->a).active_buffers;
}

/* Each buffer's completion comes once its last byte is written, in the order queued,
 * across partial writes; an empty buffer is a marker completed when the flush reaches it;
 * a plain bp_output_add between them completes nothing. Cleared, freed or failed, the
 * rest complete with 0. */
static void test_write_completions(void **state)
{
    bp_allocator *a = *state;
    enum { N = 4, EACH = 30000 };
    done_calls = 0;
    done_record r[N + 1];
    memset(r, 0, sizeof r);
    int fds[2];
    small_socketpair(fds);
    bp_output *out = bp_output_new(NULL, NULL);
    uint8_t *got = malloc((N + 1) * EACH);
    free_record frees = {0};
    uint64_t live_before = stats_of(a).active_buffers;
    /* buffers 0, 1 and 3 notify, 2 does not; then an empty marker */
    for (int i = 0; i < N; i++) {
        bp_buf *b = patterned(a, (size_t)i * EACH, EACH, i, &frees);
        if (i == 2) assert_true(bp_output_add(out, b) >= 0);
        else assert_true(bp_output_add_notify(out, b, record_done, &r[i]) >= 0);
    }
    r[N].a = a;
    assert_true(bp_output_add_notify(out, bp_alloc(a, 16), record_done, &r[N]) >= 0);
    assert_int_equal(bp_output_count(out), N + 1);
    assert_int_equal(bp_output_pending(out), N * EACH);
    long w = bp_output_flush(out, fds[0]);
    assert_true(w > 0 && w < N * EACH);
    for (int i = 0; i < N; i++)
        if (i != 2) assert_int_equal(r[i].calls, (size_t)w >= (size_t)(i + 1) * EACH);
    assert_int_equal(r[N].calls, 0);
    size_t received = 0;
    drain(fds[1], got, &received, (size_t)w);
    received += flush_through(out, fds, got + received, (N + 1) * EACH - received);
    assert_int_equal(received, N * EACH);
    for (size_t i = 0; i < received; i++)
        if (got[i] != pattern(i)) fail_msg("byte %zu: %u, expected %u", i, got[i], pattern(i));
    int expected_order[N + 1] = {1, 2, 0, 3, 4};
    for (int i = 0; i <= N; i++) {
        if (i == 2) {
            assert_int_equal(r[i].calls, 0);
            continue;
        }
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].completed, 1);
        assert_int_equal(r[i].order, expected_order[i]);
    }
    assert_int_equal(r[N].live_at_call, live_before); /* the marker too released before */
    assert_int_equal(bp_output_count(out), 0);
    assert_int_equal(frees.calls, 1); /* the wrapped one */
    /* A marker alone on an idle output: the flush writes nothing and completes it. */
    memset(r, 0, sizeof r);
    assert_int_equal(bp_output_add_notify(out, bp_alloc(a, 8), record_done, &r[0]), 0);
    assert_int_equal(bp_output_pending(out), 0);
    assert_int_equal(bp_output_flush(out, fds[0]), 0);
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[0].completed, 1);
    /* Dropped: by a clear, with the output, and by a flush's error, in order, with 0. */
    for (int how = 0; how < 3; how++) {
        memset(r, 0, sizeof r);
        done_calls = 0;
        int pair[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
        if (how == 2) close(pair[1]);
        bp_output *o = bp_output_new(NULL, NULL);
        for (int i = 0; i < 3; i++)
            assert_true(bp_output_add_notify(o, patterned(a, 0, 100, i, &frees), record_done, &r[i]) >= 0);
        if (how == 0) bp_output_clear(o);
        if (how == 1) bp_output_free(o);
        if (how == 2) assert_int_equal(bp_output_flush(o, pair[0]), BP_EIO);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(r[i].calls, 1);
            assert_int_equal(r[i].completed, 0);
            assert_int_equal(r[i].order, i + 1);
        }
        if (how != 1) bp_output_free(o);
        for (int i = 0; i < 3; i++) assert_int_equal(r[i].calls, 1); /* once */
        close(pair[0]);
        if (how != 2) close(pair[1]);
    }
    /* Misuse: nothing queued, done not called, the reference still the caller's. */
    misuse_capture_start();
    memset(r, 0, sizeof r);
    bp_buf *b = bp_alloc(a, 10);
    bp_write_zero(b, 10);
    assert_int_equal(bp_output_add_notify(NULL, b, record_done, &r[0]), BP_EINVAL);
    assert_int_equal(bp_output_add_notify(out, NULL, record_done, &r[0]), BP_EINVAL);
    bp_buf *gone = bp_alloc(a, 10);
    assert_int_equal(bp_release(gone), 1);
    assert_int_equal(bp_output_add_notify(out, gone, record_done, &r[0]), BP_EFREED);
    assert_int_equal(r[0].calls, 0);
    assert_int_equal(bp_output_count(out), 0);
    assert_int_equal(bp_refcnt(b), 1);
    misuse_capture_stop();
    /* done NULL: as bp_output_add (an empty buffer is released at once, not queued) */
    assert_int_equal(bp_output_add_notify(out, b, NULL, NULL), 0);
    assert_int_equal(bp_output_count(out), 1);
    bp_output_clear(out);
    assert_int_equal(bp_output_add_notify(out, bp_alloc(a, 10), NULL, NULL), 0);
    assert_int_equal(bp_output_count(out), 0);
    bp_output_free(out);
    free(got);
    close(fds[0]);
    close(fds[1]);
}

/* A marker whose predecessors are all written completes at the next flush, even when that
 * flush's write finds the socket full (EAGAIN) or the peer gone: everything before it left. */
static void test_marker_at_the_head_completes_whatever_the_write(void **state)
{
    bp_allocator *a = *state;
    for (int gone = 0; gone < 2; gone++) {
        int fds[2];
        small_socketpair(fds);
        bp_output *out = bp_output_new(NULL, NULL);
        done_record r[2];
        memset(r, 0, sizeof r);
        done_calls = 0;
        assert_int_equal(bp_output_add_notify(out, patterned(a, 0, 8, 0, NULL), record_done, &r[0]), 0);
        assert_int_equal(bp_output_flush(out, fds[0]), 8);
        assert_int_equal(r[0].calls, 1);
        assert_int_equal(bp_output_add_notify(out, bp_alloc(a, 0), record_done, &r[1]), 0); /* the marker */
        assert_int_equal(bp_output_add(out, patterned(a, 8, 4, 0, NULL)), 0);
        if (gone) {
            close(fds[1]);
            assert_int_equal(bp_output_flush(out, fds[0]), BP_EIO);
        } else {
            uint8_t junk[4096] = {0};
            while (write(fds[0], junk, sizeof junk) > 0) {} /* the socket's buffer full */
            assert_int_equal(bp_output_flush(out, fds[0]), 0);
            assert_int_equal(bp_output_count(out), 1); /* the next buffer waits */
        }
        assert_int_equal(r[1].calls, 1);
        assert_int_equal(r[1].completed, 1);
        assert_int_equal(r[1].order, 2);
        bp_output_free(out);
        close(fds[0]);
        if (!gone) close(fds[1]);
    }
}

/* Files sendfile refuses to read, and the region still goes out, copied with pread and
 * write, in order, across partial writes. /proc/self/mem at an address of this program is
 * one: pread reads the program's memory there, sendfile does not take it. */
static void test_file_region_copy_when_sendfile_refuses(void **state)
{
    bp_allocator *a = *state;
    enum { SIZE = 200000 };
    static uint8_t memory[SIZE];
    for (size_t i = 0; i < SIZE; i++) memory[i] = file_byte(i);
    int mem = open("/proc/self/mem", O_RDONLY);
    if (mem < 0) skip();
    int64_t address = (int64_t)(uintptr_t)memory;
    int fds[2];
    small_socketpair(fds);
    off_t at = (off_t)address;
    errno = 0;
    if (sendfile(fds[0], mem, &at, 10) >= 0 || (errno != EINVAL && errno != EOVERFLOW)) {
        close(mem); /* this kernel sends it: no copy to test */
        skip();
    }
    bp_output *out = bp_output_new(NULL, NULL);
    region_record r = {0};
    byte_stream want = {malloc(SIZE + 1000), 0};
    assert_int_equal(bp_output_add(out, patterned(a, 0, 300, 1, NULL)), 0);
    expect_pattern(&want, 300);
    assert_int_equal(bp_output_add_file(out, mem, address, SIZE, record_region, &r), 1);
    expect_file(&want, 0, SIZE);
    assert_int_equal(bp_output_add(out, patterned(a, want.n, 500, 0, NULL)), 0);
    expect_pattern(&want, 500);
    uint8_t *got = malloc(want.n);
    assert_int_equal(flush_through(out, fds, got, want.n), want.n);
    assert_memory_equal(got, want.bytes, want.n);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.completed, 1);
    free(got);
    free(want.bytes);
    bp_output_free(out);
    close(mem);
    close(fds[0]);
    close(fds[1]);
}

/* A file shorter than its region: the bytes it has go out, then BP_EIO with ENODATA; an fd
 * that cannot be read at an offset (a pipe): BP_EIO with ESPIPE. Released, not completed. */
static void test_file_region_file_errors(void **state)
{
    (void)state;
    int file = file_of(5000);
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    bp_output *out = bp_output_new(NULL, NULL);
    region_record r[3] = {{0}};
    assert_int_equal(bp_output_add_file(out, file, 1000, 4001, record_region, &r[0]), 0);
    assert_int_equal(bp_output_add_file(out, file, 0, 10, record_region, &r[1]), 0);
    long total = 0, w;
    errno = 0;
    while ((w = bp_output_flush(out, fds[0])) > 0) total += w;
    assert_int_equal(w, BP_EIO);
    assert_int_equal(errno, ENODATA);
    assert_int_equal(total, 4000);
    uint8_t got[4000];
    assert_int_equal(read(fds[1], got, sizeof got), 4000);
    for (size_t i = 0; i < 4000; i++) assert_int_equal(got[i], file_byte(1000 + i));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].completed, 0);
    }
    assert_int_equal(bp_output_pending(out), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "bytes", 5), 5);
    assert_int_equal(bp_output_add_file(out, p[0], 0, 5, record_region, &r[2]), 0);
    errno = 0;
    assert_int_equal(bp_output_flush(out, fds[0]), BP_EIO);
    assert_int_equal(errno, ESPIPE);
    assert_int_equal(r[2].calls, 1);
    assert_int_equal(r[2].completed, 0);
    bp_output_free(out);
    close(p[0]);
    close(p[1]);
    close(file);
    close(fds[0]);
    close(fds[1]);
}

/* Bad regions: a misuse report, the error, nothing queued, no release call; the limits
 * themselves are taken. */
static void test_file_region_misuse(void **state)
{
    (void)state;
    misuse_capture_start();
    bp_output *out = bp_output_new(NULL, NULL);
    region_record r = {0};
    assert_int_equal(bp_output_add_file(out, 0, 0, 1, record_region, &r), 0); /* one to keep */
    static const struct {
        int fd;
        int64_t offset;
        uint64_t length;
        int err;
        const char *message;
    } cases[] = {
        {-1, 0, 1, BP_EINVAL, "fd -1 is negative"},
        {0, -1, 1, BP_EINVAL, "offset -1 is negative"},
        {0, INT64_MIN, 1, BP_EINVAL, "offset -9223372036854775808 is negative"},
        {0, 0, 0, BP_EINVAL, "length is 0"},
        {0, INT64_MAX - 10, 11, BP_EOVERFLOW, "offset 9223372036854775797 + length 11 is past the largest file offset"},
        {0, 0, (uint64_t)INT64_MAX + 1, BP_EOVERFLOW, "offset 0 + length 9223372036854775808 is past the largest file offset"},
        {0, 1, UINT64_MAX, BP_EOVERFLOW, "offset 1 + length 18446744073709551615 is past the largest file offset"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int before = last_misuse.count;
        assert_int_equal(bp_output_add_file(out, cases[i].fd, cases[i].offset, cases[i].length, record_region, &r),
                         cases[i].err);
        assert_int_equal(last_misuse.count, before + 1);
        assert_int_equal(last_misuse.err, cases[i].err);
        assert_string_equal(last_misuse.func, "bp_output_add_file");
        assert_string_equal(last_misuse.message, cases[i].message);
        assert_int_equal(bp_output_count(out), 1);
        assert_int_equal(bp_output_pending(out), 1);
    }
    assert_int_equal(bp_output_add_file(NULL, 0, 0, 1, record_region, &r), BP_EINVAL);
    assert_string_equal(last_misuse.message, "output is NULL");
    assert_int_equal(r.calls, 0);
    /* The largest region that ends within off_t. */
    assert_int_equal(bp_output_add_file(out, 0, INT64_MAX - 10, 10, record_region, &r), 0);
    assert_int_equal(bp_output_pending(out), 11);
    bp_output_clear(out);
    assert_int_equal(r.calls, 2);
    /* Pending bytes up to SIZE_MAX, not past it. */
    if (sizeof(size_t) >= 8) {
        assert_int_equal(bp_output_add_file(out, 0, 0, INT64_MAX, NULL, NULL), 1);
        assert_int_equal(bp_output_add_file(out, 0, 0, INT64_MAX, NULL, NULL), 0);
        assert_int_equal(bp_output_add_file(out, 0, 0, 1, NULL, NULL), 0);
        assert_int_equal(bp_output_pending(out), SIZE_MAX);
        assert_int_equal(bp_output_add_file(out, 0, 0, 1, record_region, &r), BP_EOVERFLOW);
        assert_string_equal(last_misuse.message, "length 1 + 18446744073709551615 bytes pending overflows");
        assert_int_equal(bp_output_count(out), 3);
        assert_int_equal(bp_output_pending(out), SIZE_MAX);
    }
    bp_output_free(out);
    assert_int_equal(r.calls, 2);
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
    /* malloc'ed memory handed over: freed at the last release (the ASan run of this test,
     * LeakSanitizer, reports it leaked otherwise). */
    uint8_t *owned = malloc(100);
    assert_non_null(owned);
    memset(owned, 0x5a, 100);
    bp_buf *w = bp_wrap(a, owned, 100, bp_wrap_free_malloced, NULL, NULL);
    assert_non_null(w);
    uint8_t last = 0;
    assert_int_equal(bp_get_u8(w, 99, &last), 0);
    assert_int_equal(last, 0x5a);
    assert_int_equal(bp_release(w), 1);
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
        BOTH(test_one_buffer_queued_twice, teardown),
        BOTH(test_buffer_released_behind_its_back, teardown),
        BOTH(test_broken_buffer_refused_at_add, teardown),
        BOTH(test_file_regions_between_buffers, teardown),
        BOTH(test_file_region_water_marks, teardown),
        BOTH(test_file_region_release_on_clear_free_error, teardown),
        BOTH(test_write_completions, teardown),
        BOTH(test_marker_at_the_head_completes_whatever_the_write, teardown),
        BOTH(test_file_region_copy_when_sendfile_refuses, teardown),
        BOTH(test_file_region_file_errors, teardown),
        BOTH(test_file_region_misuse, teardown),
        BOTH(test_wrap_shows_the_memory_and_cannot_grow, teardown),
        BOTH(test_wrap_statistics_and_release_elsewhere, teardown),
        BOTH(test_wrap_errors, teardown),
        cmocka_unit_test(test_wrap_outlived_by_destroy),
        BOTH(test_echo_server, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
