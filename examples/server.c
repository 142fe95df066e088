/* SPDX-License-Identifier: MIT */
/*
 * The event loop of the example servers (see server.h): level-triggered epoll on one
 * thread. A readable connection gets one read into its bp_input (a second event comes if
 * more is waiting) and the protocol answers every complete request in it; the replies -
 * small ones copied into one pooled buffer per turn, stored bytes queued as retained views,
 * files as file regions - are written with one flush per connection (a gathering write,
 * and sendfile for a file) once every event of the batch epoll returned has been handled,
 * as Redis writes in its beforeSleep: a client with many connections then finds several
 * replies per wakeup, which is what it spends its time on when requests are not
 * pipelined. Epoll is asked for writability only while replies wait, and reading stops
 * while the output is above its high water mark (backpressure): the requests already read
 * wait in the input until the output falls below the low water mark.
 */
#define _GNU_SOURCE
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* A reply buffer starts this large (most turns' replies fit) and grows as bp_write_bytes
 * grows it. */
#define REPLY_INITIAL 2048
/* How long a lingering close waits for the peer to close before closing anyway. */
#define LINGER_MS 2000
/* Connections accepted per listener event, so that open ones are served in between. */
#define ACCEPT_BATCH 128

struct srv {
    srv_options opt;
    const srv_protocol *proto;
    void *ctx;
    bp_allocator *a;
    int epfd, listen_fd, signal_fd;
    int spare_fd;        /* closed to accept and drop a connection when out of fds */
    srv_conn **conns;    /* by fd */
    size_t conns_room;
    bp_buf *reply;       /* this turn's copied replies, not queued yet */
    srv_conn **turn;     /* connections served in this batch of events, to write to */
    size_t turn_count, turn_room;
    unsigned lingering;  /* connections in a lingering close */
    srv_counters counters;
    uint64_t spin_until_ns; /* polling epoll without blocking until then */
    bool stop;
};

/* ---------------------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------------------- */

static int parse_size(const char *text, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || text[0] == '-') return -1;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10, end++;
    else if (*end == 'M' || *end == 'm') shift = 20, end++;
    else if (*end == 'G' || *end == 'g') shift = 30, end++;
    if (*end != '\0' || v > (SIZE_MAX >> shift)) return -1;
    *out = (size_t)(v << shift);
    return 0;
}

static void usage(const char *name, FILE *f)
{
    fprintf(f,
            "usage: %s [--address ADDR] [--port PORT] [--check-leaks] [--max-request SIZE]\n"
            "          [--high-water SIZE] [--low-water SIZE] [--spin MICROSECONDS]\n"
            "  --address ADDR      address to listen on (default 127.0.0.1)\n"
            "  --port PORT         port (0: any free one; the one taken is printed)\n"
            "  --check-leaks       paranoid leak detection; exit status 3 if anything leaked\n"
            "  --max-request SIZE  largest request (RESP) or request body (HTTP) accepted;\n"
            "                      K, M, G suffixes\n"
            "  --high-water SIZE   stop reading a connection with more replies queued\n"
            "  --low-water SIZE    resume below this\n"
            "  --spin MICROSECONDS after a batch of events, poll for more this long before\n"
            "                      sleeping (default 20; 0: sleep at once)\n",
            name);
}

int srv_parse_options(int argc, char **argv, srv_options *o, const char *name)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        size_t *size = NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(name, stdout);
            return 1;
        }
        if (strcmp(arg, "--check-leaks") == 0) {
            o->check_leaks = true;
            continue;
        }
        if (value == NULL) {
            fprintf(stderr, "%s: %s needs a value (--help)\n", name, arg);
            return -1;
        }
        i++;
        if (strcmp(arg, "--address") == 0) {
            o->address = value;
            continue;
        }
        if (strcmp(arg, "--spin") == 0) {
            char *end;
            long us = strtol(value, &end, 10);
            if (*value == '\0' || *end != '\0' || us < 0 || us > 1000000) {
                fprintf(stderr, "%s: bad --spin '%s' (microseconds)\n", name, value);
                return -1;
            }
            o->spin_us = (unsigned)us;
            continue;
        }
        if (strcmp(arg, "--port") == 0) {
            char *end;
            long port = strtol(value, &end, 10);
            if (*value == '\0' || *end != '\0' || port < 0 || port > 65535) {
                fprintf(stderr, "%s: bad port '%s'\n", name, value);
                return -1;
            }
            o->port = (int)port;
            continue;
        }
        if (strcmp(arg, "--max-request") == 0) size = &o->max_request;
        else if (strcmp(arg, "--high-water") == 0) size = &o->high_water;
        else if (strcmp(arg, "--low-water") == 0) size = &o->low_water;
        if (size == NULL) {
            fprintf(stderr, "%s: unknown option '%s' (--help)\n", name, arg);
            return -1;
        }
        if (parse_size(value, size) != 0 || *size == 0) {
            fprintf(stderr, "%s: bad size '%s' for %s\n", name, value, arg);
            return -1;
        }
    }
    if (o->low_water > o->high_water) {
        fprintf(stderr, "%s: --low-water %zu above --high-water %zu\n", name, o->low_water, o->high_water);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Set-up
 * ------------------------------------------------------------------------------------- */

uint64_t srv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* As many fds as the hard limit allows: every connection takes one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int listen_on(const srv_options *o, const char *name)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    int rc = getaddrinfo(o->address, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "%s: address %s: %s\n", name, o->address, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        fprintf(stderr, "%s: listening on %s:%d: %s\n", name, o->address, o->port, strerror(errno));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0 &&
        getnameinfo((struct sockaddr *)&sa, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        printf("%s: listening on %s:%s\n", name, host, serv);
        fflush(stdout);
    }
    return fd;
}

static int signals_fd(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    signal(SIGPIPE, SIG_IGN); /* sockets are written with MSG_NOSIGNAL; this covers the rest */
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static int watch(srv *s, int fd, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    return epoll_ctl(s->epfd, op, fd, &ev);
}

static bp_allocator *make_allocator(const srv_options *o, const char *name)
{
    bp_config cfg;
    char why[256];
    if (bp_config_from_env(&cfg, why, sizeof why) != 0) {
        fprintf(stderr, "%s: %s\n", name, why);
        return NULL;
    }
    if (o->check_leaks) cfg.leak_detection = BP_LEAK_PARANOID;
    int err;
    bp_allocator *a = bp_allocator_new(&cfg, &err);
    if (a == NULL) fprintf(stderr, "%s: bp_allocator_new: %s\n", name, bp_strerror(err));
    return a;
}

srv *srv_new(const srv_options *o, const srv_protocol *p, void *ctx)
{
    srv *s = calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->opt = *o;
    s->proto = p;
    s->ctx = ctx;
    s->epfd = s->listen_fd = s->signal_fd = s->spare_fd = -1;
    raise_fd_limit();
    s->a = make_allocator(o, p->name);
    if (s->a == NULL) goto fail;
    s->signal_fd = signals_fd();
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (s->signal_fd < 0 || s->epfd < 0) {
        fprintf(stderr, "%s: %s\n", p->name, strerror(errno));
        goto fail;
    }
    s->listen_fd = listen_on(o, p->name);
    if (s->listen_fd < 0) goto fail;
    if (watch(s, s->listen_fd, EPOLLIN, EPOLL_CTL_ADD) != 0 || watch(s, s->signal_fd, EPOLLIN, EPOLL_CTL_ADD) != 0) {
        fprintf(stderr, "%s: epoll: %s\n", p->name, strerror(errno));
        goto fail;
    }
    return s;
fail:
    (void)srv_finish(s);
    return NULL;
}

bp_allocator *srv_allocator(srv *s) { return s->a; }
const srv_options *srv_opts(srv *s) { return &s->opt; }
srv_counters srv_get_counters(const srv *s) { return s->counters; }

/* ---------------------------------------------------------------------------------------
 * Connections
 * ------------------------------------------------------------------------------------- */

/* The most unread bytes a connection's input holds: the largest request and one read more,
 * so that a request that fits is always whole in the input before the input refuses to
 * read (an HTTP header block, at most 8 KiB, is within the read). */
static size_t input_limit(const srv *s) { return s->opt.max_request + s->opt.max_read; }

static srv_conn *conn_new(srv *s, int fd)
{
    if ((size_t)fd >= s->conns_room) {
        size_t room = s->conns_room < 64 ? 64 : s->conns_room;
        while (room <= (size_t)fd) room *= 2;
        srv_conn **conns = realloc(s->conns, room * sizeof *conns);
        if (conns == NULL) return NULL;
        memset(conns + s->conns_room, 0, (room - s->conns_room) * sizeof *conns);
        s->conns = conns;
        s->conns_room = room;
    }
    srv_conn *c = calloc(1, sizeof *c);
    if (c == NULL) return NULL;
    bp_input_config ic;
    bp_input_config_init(&ic);
    ic.max_read = s->opt.max_read;
    if (ic.initial_read > ic.max_read) ic.initial_read = ic.max_read;
    if (ic.min_read > ic.initial_read) ic.min_read = ic.initial_read;
    ic.max_buffered = input_limit(s);
    bp_output_config oc;
    bp_output_config_init(&oc);
    oc.high_water_mark = s->opt.high_water;
    oc.low_water_mark = s->opt.low_water;
    c->fd = fd;
    c->in = bp_input_new(s->a, &ic, NULL);
    c->out = bp_output_new(&oc, NULL);
    c->events = EPOLLIN;
    if (c->in == NULL || c->out == NULL || watch(s, fd, c->events, EPOLL_CTL_ADD) != 0) {
        bp_input_free(c->in);
        bp_output_free(c->out);
        free(c);
        return NULL;
    }
    s->conns[fd] = c;
    s->counters.connections++;
    s->counters.accepted++;
    return c;
}

static void conn_close(srv *s, srv_conn *c)
{
    if (c->lingering) s->lingering--;
    if (c->paused) s->counters.paused--;
    s->counters.connections--;
    s->conns[c->fd] = NULL;
    close(c->fd); /* leaves the epoll set with it */
    bp_input_free(c->in);
    bp_output_free(c->out);
    free(c);
}

/* When out of fds, the pending connection is taken with the spare fd and closed: a
 * level-triggered listener would otherwise report it again and again. */
static void refuse_one(srv *s)
{
    if (s->spare_fd < 0) return;
    close(s->spare_fd);
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd >= 0) close(fd);
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void accept_some(srv *s)
{
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) refuse_one(s);
            return;
        }
        int one = 1;
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (conn_new(s, fd) == NULL) close(fd);
    }
}

/* ---------------------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------------------- */

static size_t reply_bytes(const srv *s) { return s->reply != NULL ? bp_readable_bytes(s->reply) : 0; }

/* This turn's copied replies join the connection's output. */
static int queue_reply(srv *s, srv_conn *c)
{
    if (s->reply == NULL) return 0;
    bp_buf *b = s->reply;
    s->reply = NULL;
    int rc = bp_output_add(c->out, b);
    if (rc < 0) bp_release(b);
    return rc < 0 ? rc : 0;
}

int srv_reply(srv *s, srv_conn *c, const void *bytes, size_t n)
{
    (void)c; /* the replies of one connection at a time: it is queued before the next */
    if (s->reply == NULL) {
        s->reply = bp_alloc(s->a, n > REPLY_INITIAL ? n : REPLY_INITIAL);
        if (s->reply == NULL) return BP_ENOMEM;
    }
    return bp_write_bytes(s->reply, bytes, n);
}

int srv_send(srv *s, srv_conn *c, bp_buf *b)
{
    int rc = queue_reply(s, c);
    if (rc == 0) rc = bp_output_add(c->out, b);
    if (rc < 0) {
        bp_release(b);
        return rc;
    }
    return 0;
}

int srv_send_file(srv *s, srv_conn *c, int fd, int64_t offset, uint64_t length, bp_file_release_fn release, void *ctx)
{
    int rc = queue_reply(s, c);
    if (rc == 0) rc = bp_output_add_file(c->out, fd, offset, length, release, ctx);
    if (rc < 0) {
        if (release != NULL) release(fd, 0, ctx);
        return rc;
    }
    return 0;
}

void srv_close_after(srv_conn *c) { c->closing = true; }

/* ---------------------------------------------------------------------------------------
 * Serving a connection
 * ------------------------------------------------------------------------------------- */

static bool flush(srv_conn *c) { return bp_output_pending(c->out) == 0 || bp_output_flush(c->out, c->fd) >= 0; }

static void pause_reading(srv *s, srv_conn *c)
{
    c->paused = true;
    s->counters.paused++;
    s->counters.pauses++;
}

/* Answers the complete requests in the input, until one is incomplete, the output passes
 * its high water mark and the peer does not take enough of it, or the connection is to
 * close. Returns false when the connection failed. */
static bool answer_requests(srv *s, srv_conn *c)
{
    while (!c->paused && !c->closing) {
        bp_buf *b = bp_input_peek(c->in);
        if (b == NULL) break;
        size_t at = bp_reader_index(b), n = bp_readable_bytes(b);
        const uint8_t *bytes = bp_data(b, at); /* one block: the input is filled by reads only */
        if (bytes == NULL) return false;
        long used = s->proto->request(s->ctx, s, c, b, at, bytes, n);
        if (used == SRV_CLOSE || used < 0) {
            bp_input_clear(c->in);
            c->closing = true;
            break;
        }
        if (used == 0) break;
        if (bp_input_skip(c->in, (size_t)used) != 0) return false;
        if (bp_output_pending(c->out) + reply_bytes(s) > s->opt.high_water) {
            if (queue_reply(s, c) != 0 || !flush(c)) return false;
            if (!bp_output_writable(c->out)) pause_reading(s, c);
        }
    }
    return true;
}

/* ... and queues the turn's replies; a failed connection's are dropped, never left for the
 * next connection served. */
static bool answer(srv *s, srv_conn *c)
{
    bool ok = answer_requests(s, c) && queue_reply(s, c) == 0;
    if (!ok && s->reply != NULL) {
        bp_release(s->reply);
        s->reply = NULL;
    }
    return ok;
}

/* Writes, and answers again while that lets it: a paused connection whose output fell
 * below the low water mark goes on with the requests waiting in its input. */
static bool write_and_resume(srv *s, srv_conn *c)
{
    for (;;) {
        if (!flush(c)) return false;
        if (!c->paused || !bp_output_writable(c->out)) return true;
        c->paused = false;
        s->counters.paused--;
        if (!answer(s, c)) return false;
    }
}

static void start_linger(srv *s, srv_conn *c)
{
    bp_input_clear(c->in);
    shutdown(c->fd, SHUT_WR);
    c->lingering = true;
    c->linger_deadline_ms = srv_now_ms() + LINGER_MS;
    s->lingering++;
}

/* After a turn: close, start a lingering close, or watch for what the connection waits for. */
static void settle(srv *s, srv_conn *c)
{
    if (c->eof && !c->paused && !c->closing) {
        bp_input_clear(c->in); /* an incomplete last request: nothing more will come */
        c->closing = true;
    }
    if (c->closing && bp_output_pending(c->out) == 0) {
        if (c->eof) {
            conn_close(s, c);
            return;
        }
        /* The peer may still be sending: closing with its bytes unread would reset the
         * connection and could destroy the last reply before the peer has read it. */
        if (!c->lingering) start_linger(s, c);
    }
    uint32_t want = c->lingering ? EPOLLIN
                    : (c->eof || c->paused || c->closing ? 0 : EPOLLIN) | (bp_output_pending(c->out) > 0 ? EPOLLOUT : 0);
    if (want != c->events) {
        c->events = want;
        if (watch(s, c->fd, want, EPOLL_CTL_MOD) != 0) conn_close(s, c);
    }
}

/* Drains (and drops) what the peer still sends after a closing reply, until it closes or
 * its time is up; a few reads a turn, so that it cannot hold up the others. */
static void linger_read(srv *s, srv_conn *c)
{
    for (int i = 0; i < 16; i++) {
        long got = bp_input_read_fd(c->in, c->fd);
        bp_input_clear(c->in);
        if (got == 0) return;
        if (got < 0) {
            conn_close(s, c);
            return;
        }
    }
}

/* The connection is written to at the end of the batch (once however many events it had). */
static bool defer_write(srv *s, srv_conn *c)
{
    if (c->in_turn) return true;
    if (s->turn_count == s->turn_room) {
        size_t room = s->turn_room < 64 ? 64 : s->turn_room * 2;
        srv_conn **turn = realloc(s->turn, room * sizeof *turn);
        if (turn == NULL) return false;
        s->turn = turn;
        s->turn_room = room;
    }
    s->turn[s->turn_count++] = c;
    c->in_turn = true;
    return true;
}

static void conn_event(srv *s, srv_conn *c, uint32_t events)
{
    if (c->lingering) {
        linger_read(s, c);
        return;
    }
    bool ok = true, full = false;
    bool readable = (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0;
    if (readable && !c->eof && !c->paused && !c->closing) {
        long got = bp_input_read_fd(c->in, c->fd);
        if (got == BP_EOF) c->eof = true;
        else if (got == BP_EFULL) full = true;
        else if (got < 0) ok = false;
    } else if (events & (EPOLLHUP | EPOLLERR)) {
        ok = flush(c) && bp_output_pending(c->out) == 0 && !(events & EPOLLERR);
    }
    if (ok) ok = answer(s, c);
    /* A full input the protocol takes nothing from would be read, and refused, forever
     * (the protocols refuse a request larger than the input holds before that happens). */
    if (ok && full && !c->paused && !c->closing && bp_input_readable(c->in) >= input_limit(s))
        ok = false;
    if (!ok || !defer_write(s, c)) conn_close(s, c);
}

/* The end of a batch: every connection served in it is written to, then closed or watched
 * for what it waits for. */
static void write_turn(srv *s)
{
    for (size_t i = 0; i < s->turn_count; i++) {
        srv_conn *c = s->turn[i];
        c->in_turn = false;
        if (write_and_resume(s, c)) settle(s, c);
        else conn_close(s, c);
    }
    s->turn_count = 0;
}

static void expire_lingering(srv *s)
{
    uint64_t now = srv_now_ms();
    for (size_t fd = 0; fd < s->conns_room && s->lingering > 0; fd++) {
        srv_conn *c = s->conns[fd];
        if (c != NULL && c->lingering && now >= c->linger_deadline_ms) conn_close(s, c);
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The next events. After a batch, epoll is polled without blocking for up to --spin
 * microseconds before the thread sleeps in it: a request arriving meanwhile is taken
 * without the sleep and the wakeup, which the peer's kernel pays for (on a virtual machine
 * whose idle CPUs halt, a wakeup is an exit to the host and an interrupt back). */
static int wait_events(srv *s, struct epoll_event *events, int max)
{
    int n = 0;
    if (s->spin_until_ns > 0) {
        do n = epoll_wait(s->epfd, events, max, 0);
        while (n == 0 && now_ns() < s->spin_until_ns);
    }
    if (n == 0) n = epoll_wait(s->epfd, events, max, s->lingering > 0 ? 500 : -1);
    s->spin_until_ns = n > 0 && s->opt.spin_us > 0 ? now_ns() + (uint64_t)s->opt.spin_us * 1000u : 0;
    return n;
}

int srv_run(srv *s)
{
    struct epoll_event events[256];
    int rc = 0;
    while (!s->stop) {
        int n = wait_events(s, events, 256);
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "%s: epoll_wait: %s\n", s->proto->name, strerror(errno));
            rc = -1;
            break;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == s->listen_fd) {
                accept_some(s);
            } else if (fd == s->signal_fd) {
                struct signalfd_siginfo si;
                while (read(s->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) s->stop = true;
            } else if ((size_t)fd < s->conns_room && s->conns[fd] != NULL) {
                conn_event(s, s->conns[fd], events[i].events);
            }
        }
        write_turn(s);
        if (s->lingering > 0) expire_lingering(s);
    }
    for (size_t fd = 0; fd < s->conns_room; fd++)
        if (s->conns[fd] != NULL) conn_close(s, s->conns[fd]);
    return rc;
}

int srv_finish(srv *s)
{
    if (s == NULL) return 1;
    int status = 0;
    if (s->reply != NULL) bp_release(s->reply);
    if (s->a != NULL) {
        bp_allocator_stats st;
        long leaks = bp_leak_report(s->a);
        bp_allocator_get_stats(s->a, &st, sizeof st);
        if (s->opt.check_leaks) {
            status = leaks != 0 || st.active_buffers != 0 ? 3 : 0;
            fprintf(stderr, "%s: leak check: %ld leaked buffers reported, %llu buffers alive at exit: %s\n",
                    s->proto->name, leaks, (unsigned long long)st.active_buffers, status == 0 ? "clean" : "LEAK");
        }
        bp_allocator_destroy(s->a);
    }
    int fds[] = {s->listen_fd, s->signal_fd, s->epfd, s->spare_fd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0) close(fds[i]);
    free(s->conns);
    free(s->turn);
    free(s);
    return status;
}
