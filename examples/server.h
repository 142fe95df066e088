/* SPDX-License-Identifier: MIT */
/*
 * A single-threaded epoll server made of bytepool's server layer, shared by the example
 * servers bytepool-resp and bytepool-http: listening, accepting, one bp_input and one
 * bp_output per connection, backpressure by the output's water marks, closing (with a
 * lingering close after a reply that ends the connection), SIGINT/SIGTERM, and the leak
 * check at exit. A protocol supplies one function that answers the request at the start
 * of a connection's unread bytes. Uses the public header only, as any program would.
 */
#ifndef SRV_SERVER_H
#define SRV_SERVER_H

#include <bytepool.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct srv srv;

/* One connection. The protocol reads `in` only through the bytes it is handed, and
 * writes through srv_reply / srv_send. */
typedef struct srv_conn {
    int fd;
    uint32_t events;   /* what epoll watches for it now */
    bool eof;          /* the peer has shut its side */
    bool paused;       /* not read: its output passed the high water mark */
    bool closing;      /* closed once what is queued is written */
    bool lingering;    /* write side shut, unread bytes drained until the peer closes */
    bool in_turn;      /* to be written to at the end of this batch of events */
    uint64_t linger_deadline_ms;
    bp_input *in;
    bp_output *out;
} srv_conn;

/* request's result when the connection must close after what is queued (a protocol
 * error: the unread bytes are dropped). */
#define SRV_CLOSE (-1L)

typedef struct srv_protocol {
    const char *name; /* in messages: "bytepool-resp" */
    /* Answers the request at the start of the unread bytes bytes[0 .. n), which `buf` holds
     * from index `at` (for retained slices of them). Returns how many bytes the request
     * took (> 0), 0 when it is not complete yet, or SRV_CLOSE. */
    long (*request)(void *ctx, srv *s, srv_conn *c, bp_buf *buf, size_t at, const uint8_t *bytes, size_t n);
} srv_protocol;

typedef struct srv_options {
    const char *address;  /* default 127.0.0.1 */
    int port;             /* 0: any free port (the one taken is printed) */
    bool check_leaks;     /* paranoid leak detection; the exit status says if anything leaked */
    size_t max_request;   /* the largest request a protocol accepts */
    size_t high_water;    /* output water marks (bytes queued) */
    size_t low_water;
    size_t max_read;      /* the largest single read */
    unsigned spin_us;     /* poll epoll this long after a batch before sleeping in it */
} srv_options;

/* Parses the common command line (--address, --port, --check-leaks, --max-request,
 * --high-water, --low-water, sizes with K/M/G; --spin). Returns 0, 1 after printing the
 * usage (--help), or -1 after printing what is wrong. */
int srv_parse_options(int argc, char **argv, srv_options *o, const char *name);

/* Makes the allocator, the listening socket and the loop's fds, and prints
 * "NAME: listening on ADDRESS:PORT" on stdout. NULL (with a message) on failure. */
srv *srv_new(const srv_options *o, const srv_protocol *p, void *ctx);

/* Serves until SIGINT or SIGTERM, then closes every connection. Returns 0, or -1 when the
 * loop itself failed. */
int srv_run(srv *s);

/* Reports leaks (with --check-leaks), destroys the allocator and frees s. Returns the exit
 * status: 0, or 3 when --check-leaks found a leak or a live buffer. Call once everything
 * the protocol holds is released. */
int srv_finish(srv *s);

bp_allocator *srv_allocator(srv *s);
const srv_options *srv_opts(srv *s);

/* Appends a copy of n bytes to the connection's replies. Returns 0, or BP_ENOMEM (the
 * connection then closes). */
int srv_reply(srv *s, srv_conn *c, const void *bytes, size_t n);

/* Queues a buffer after the replies so far, taking over the caller's reference (zero
 * copy: a retained slice or duplicate of stored bytes). Returns 0, or an error (the
 * reference is released, the connection closes). */
int srv_send(srv *s, srv_conn *c, bp_buf *b);

/* Queues `length` bytes of the file fd from `offset` after the replies so far (a file
 * region: sent with sendfile, no copy; see bp_output_add_file). fd stays the caller's
 * and must stay open until release(fd, completed, ctx) has been called, once: when the
 * bytes are written or dropped, or at once when this fails. Returns 0, or an error (the
 * connection closes). */
int srv_send_file(srv *s, srv_conn *c, int fd, int64_t offset, uint64_t length, bp_file_release_fn release, void *ctx);

/* Closes the connection once what is queued so far is written; no further request of it
 * is read. */
void srv_close_after(srv_conn *c);

typedef struct srv_counters {
    uint64_t connections;      /* open now */
    uint64_t accepted;         /* ever */
    uint64_t paused;           /* connections not read now for backpressure */
    uint64_t pauses;           /* times a connection was paused, ever */
} srv_counters;

srv_counters srv_get_counters(const srv *s);

/* Milliseconds of CLOCK_MONOTONIC_COARSE. */
uint64_t srv_now_ms(void);

#endif
