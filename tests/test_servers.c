/* SPDX-License-Identifier: MIT */
/* The example servers as programs: bytepool-resp and bytepool-http are started on a free
 * port with --check-leaks, talked to over TCP by the clients below, which check every reply
 * byte for byte, and stopped with SIGTERM; each must then exit 0 (no leak reported in
 * paranoid mode, no buffer alive). Every wait is bounded: a hang fails the test.
 *   test_servers --resp PATH --http PATH [--only PATTERN]
 * Also runs redis-benchmark against bytepool-resp when it is installed (skipped if not). */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 10000

static const char *resp_path, *http_path;

/* ---------------------------------------------------------------------------------------
 * Server processes
 * ------------------------------------------------------------------------------------- */

typedef struct server {
    pid_t pid;
    int port;
} server;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts `path --port 0 --check-leaks extra...` and reads the port it printed. */
static server start_server(const char *path, const char *const *extra)
{
    int out[2];
    assert_int_equal(pipe(out), 0);
    const char *argv[16] = {path, "--port", "0", "--check-leaks"};
    int argc = 4;
    for (; extra != NULL && *extra != NULL; extra++) argv[argc++] = *extra;
    argv[argc] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    char line[256];
    size_t used = 0;
    while (used + 1 < sizeof line && (used == 0 || line[used - 1] != '\n')) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, TIMEOUT_MS) != 1) break;
        ssize_t n = read(out[0], line + used, 1);
        if (n <= 0) break;
        used += (size_t)n;
    }
    line[used] = '\0';
    close(out[0]);
    const char *colon = strrchr(line, ':');
    server s = {pid, colon != NULL ? atoi(colon + 1) : 0};
    if (s.port <= 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("%s did not say where it listens: '%s'", path, line);
    }
    return s;
}

/* SIGTERM, then the exit status: 0 means a clean shutdown and a clean leak check. */
static int stop_server(server *s)
{
    kill(s->pid, SIGTERM);
    int status = 0;
    for (int waited = 0; waited < TIMEOUT_MS; waited += 10) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        sleep_ms(10);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
    return -1;
}

static int teardown_server(void **state)
{
    server *s = *state;
    if (s->pid > 0) { /* the test failed before stopping it */
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
    }
    free(s);
    return 0;
}

static int setup_with(void **state, const char *path, const char *const *extra)
{
    server *s = malloc(sizeof *s);
    *s = start_server(path, extra);
    *state = s;
    return 0;
}

static int setup_resp(void **state) { return setup_with(state, resp_path, NULL); }
static int setup_http(void **state) { return setup_with(state, http_path, NULL); }
static int setup_resp_small(void **state)
{
    static const char *const extra[] = {"--high-water", "256K", "--low-water", "64K", "--max-request", "1M", NULL};
    return setup_with(state, resp_path, extra);
}

/* For a test that starts its own servers (into *state, which the teardown stops if left). */
static int setup_nothing(void **state)
{
    server *s = calloc(1, sizeof *s);
    *state = s;
    return 0;
}

static void assert_clean_exit(server *s) { assert_int_equal(stop_server(s), 0); }

/* ---------------------------------------------------------------------------------------
 * Client side
 * ------------------------------------------------------------------------------------- */

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {TIMEOUT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t k = send(fd, (const char *)p + done, n - done, MSG_NOSIGNAL);
        if (k <= 0) fail_msg("send: %s", k < 0 ? strerror(errno) : "nothing sent");
        done += (size_t)k;
    }
}

static void send_str(int fd, const char *text) { send_all(fd, text, strlen(text)); }

static void recv_exact(int fd, void *p, size_t n)
{
    for (size_t done = 0; done < n;) {
        ssize_t k = recv(fd, (char *)p + done, n - done, 0);
        if (k == 0) fail_msg("end of stream after %zu of %zu bytes", done, n);
        if (k < 0) fail_msg("recv after %zu of %zu bytes: %s", done, n, strerror(errno));
        done += (size_t)k;
    }
}

/* Where two byte strings first differ, shown with the bytes around it. */
static void assert_bytes(const uint8_t *got, const uint8_t *want, size_t n)
{
    size_t i = 0;
    while (i < n && got[i] == want[i]) i++;
    if (i == n) return;
    size_t from = i > 40 ? i - 40 : 0, len = n - from < 80 ? n - from : 80;
    fail_msg("byte %zu of %zu differs:\n  got  '%.*s'\n  want '%.*s'", i, n, (int)len, (const char *)got + from, (int)len,
             (const char *)want + from);
}

static void expect(int fd, const char *want)
{
    size_t n = strlen(want);
    uint8_t *got = malloc(n);
    recv_exact(fd, got, n);
    assert_bytes(got, (const uint8_t *)want, n);
    free(got);
}

static void expect_eof(int fd)
{
    char byte;
    ssize_t k = recv(fd, &byte, 1, 0);
    if (k != 0) fail_msg("expected the server to close, got %s", k > 0 ? "a byte" : strerror(errno));
}

/* Sends req while receiving, until want_len bytes came back; then compares them with want.
 * The two directions go together, as a pipelining client's must: the server stops reading
 * a client that does not read its replies. */
static void exchange(int fd, const uint8_t *req, size_t req_len, const uint8_t *want, size_t want_len)
{
    uint8_t *got = malloc(want_len + 1);
    size_t sent = 0, received = 0;
    while (received < want_len) {
        struct pollfd p = {fd, (short)(POLLIN | (sent < req_len ? POLLOUT : 0)), 0};
        if (poll(&p, 1, TIMEOUT_MS) != 1) fail_msg("stalled: sent %zu of %zu, received %zu of %zu", sent, req_len, received, want_len);
        if (sent < req_len && (p.revents & POLLOUT)) {
            ssize_t k = send(fd, req + sent, req_len - sent < 65536 ? req_len - sent : 65536, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k > 0) sent += (size_t)k;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = recv(fd, got + received, want_len - received, MSG_DONTWAIT);
            if (k == 0) fail_msg("end of stream after %zu of %zu bytes", received, want_len);
            if (k > 0) received += (size_t)k;
        }
    }
    assert_int_equal(sent, req_len);
    assert_bytes(got, want, want_len);
    free(got);
}

/* A growing byte string. */
typedef struct bytes {
    uint8_t *p;
    size_t n, room;
} bytes;

static void put(bytes *b, const void *p, size_t n)
{
    if (b->n + n > b->room) {
        b->room = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->room);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void putf(bytes *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(bytes *b, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof text);
    put(b, text, (size_t)n);
}

static uint64_t next_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* ---------------------------------------------------------------------------------------
 * RESP
 * ------------------------------------------------------------------------------------- */

/* A multibulk request of argc arguments (strings, or bytes with lengths when lens != NULL). */
static void command(bytes *b, int argc, const void *const *argv, const size_t *lens)
{
    putf(b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t n = lens != NULL ? lens[i] : strlen(argv[i]);
        putf(b, "$%zu\r\n", n);
        put(b, argv[i], n);
        put(b, "\r\n", 2);
    }
}

static void bulk(bytes *b, const void *p, size_t n)
{
    putf(b, "$%zu\r\n", n);
    put(b, p, n);
    put(b, "\r\n", 2);
}

/* A value of n bytes, any byte (CR, LF and NUL among them). */
static uint8_t *random_value(size_t n, uint64_t *rng)
{
    uint8_t *v = malloc(n + 1);
    for (size_t i = 0; i < n; i++) v[i] = (uint8_t)next_rand(rng);
    return v;
}

/* The value of an INFO field, or -1. */
static long long info_field(int fd, const char *name)
{
    send_str(fd, "*1\r\n$4\r\nINFO\r\n");
    char head[32];
    size_t used = 0;
    do recv_exact(fd, head + used, 1);
    while (head[used++] != '\n' && used < sizeof head - 1);
    head[used] = '\0';
    assert_int_equal(head[0], '$');
    size_t n = strtoul(head + 1, NULL, 10);
    char *text = malloc(n + 3);
    recv_exact(fd, text, n + 2);
    text[n] = '\0';
    char key[64];
    snprintf(key, sizeof key, "%s:", name);
    const char *at = strstr(text, key);
    long long v = at != NULL ? strtoll(at + strlen(key), NULL, 10) : -1;
    free(text);
    return v;
}

/* 3000 SETs and GETs pipelined in one stream, values of 0 .. 100000 bytes of any bytes
 * (copied, duplicated and sliced from the request alike), DELs, GETs of deleted keys; every
 * reply compared byte for byte. */
static void test_resp_pipelined_set_get(void **state)
{
    server *s = *state;
    int fd = dial(s->port);
    uint64_t rng = 7;
    enum { KEYS = 3000 };
    static const size_t special[] = {0, 1, 1024, 1025, 32767, 32768, 40000, 100000};
    bytes req = {0}, want = {0};
    uint8_t *values[KEYS];
    size_t lens[KEYS];
    for (int i = 0; i < KEYS; i++) {
        lens[i] = i < 8 ? special[i] : (size_t)(next_rand(&rng) % (i % 50 == 0 ? 70000 : 600));
        values[i] = random_value(lens[i], &rng);
        char key[32];
        snprintf(key, sizeof key, "key:%d", i);
        const void *argv[] = {"SET", key, values[i]};
        const size_t l[] = {3, strlen(key), lens[i]};
        command(&req, 3, argv, l);
        put(&want, "+OK\r\n", 5);
        if (i % 3 == 0) { /* read back at once, and again at the end */
            const void *get[] = {"GET", key};
            command(&req, 2, get, NULL);
            bulk(&want, values[i], lens[i]);
        }
    }
    for (int i = 0; i < KEYS; i++) {
        char key[32];
        snprintf(key, sizeof key, "key:%d", i);
        const void *get[] = {"GET", key};
        command(&req, 2, get, NULL);
        bulk(&want, values[i], lens[i]);
        if (i % 7 == 0) {
            const void *del[] = {"DEL", key, "no-such-key"};
            command(&req, 3, del, NULL);
            put(&want, ":1\r\n", 4);
            command(&req, 2, get, NULL);
            put(&want, "$-1\r\n", 5);
        }
    }
    command(&req, 1, (const void *[]){"DBSIZE"}, NULL);
    putf(&want, ":%d\r\n", KEYS - (KEYS + 6) / 7);
    exchange(fd, req.p, req.n, want.p, want.n);
    close(fd);
    for (int i = 0; i < KEYS; i++) free(values[i]);
    free(req.p);
    free(want.p);
    assert_clean_exit(s);
}

/* Requests cut into pieces that arrive in separate reads: a 200 KB value in 1000-byte
 * pieces, a multibulk and an inline request a byte at a time. */
static void test_resp_requests_across_reads(void **state)
{
    server *s = *state;
    int fd = dial(s->port);
    uint64_t rng = 11;
    size_t n = 200000;
    uint8_t *value = random_value(n, &rng);
    bytes req = {0}, want = {0};
    command(&req, 3, (const void *[]){"SET", "big", value}, (const size_t[]){3, 3, n});
    for (size_t at = 0; at < req.n; at += 1000) {
        send_all(fd, req.p + at, req.n - at < 1000 ? req.n - at : 1000);
        sleep_ms(at % 20000 == 0 ? 2 : 0);
    }
    expect(fd, "+OK\r\n");
    const char *pieces[] = {"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n", "ECHO inline\r\n", "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n"};
    for (int k = 0; k < 3; k++) {
        for (const char *p = pieces[k]; *p != '\0'; p++) {
            send_all(fd, p, 1);
            sleep_ms(1);
        }
    }
    expect(fd, "$5\r\nhello\r\n$6\r\ninline\r\n");
    bulk(&want, value, n);
    uint8_t *got = malloc(want.n);
    recv_exact(fd, got, want.n);
    assert_bytes(got, want.p, want.n);
    close(fd);
    free(got);
    free(value);
    free(req.p);
    free(want.p);
    assert_clean_exit(s);
}

/* Inline commands, every command's replies, Redis's error replies (the connection stays). */
static void test_resp_commands_and_error_replies(void **state)
{
    server *s = *state;
    int fd = dial(s->port);
    send_str(fd, "PING\r\nping\n  ECHO \t two \r\n\r\nset k v\r\nGET k\r\nEXISTS k nope k\r\n*0\r\n*-1\r\n");
    expect(fd, "+PONG\r\n+PONG\r\n$3\r\ntwo\r\n+OK\r\n$1\r\nv\r\n:2\r\n");
    send_str(fd, "*2\r\n$4\r\nPING\r\n$2\r\nhi\r\nFOO a b\r\n*3\r\n$3\r\nGET\r\n$1\r\na\r\n$1\r\nb\r\nSET k\r\n");
    expect(fd, "$2\r\nhi\r\n"
               "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
               "-ERR wrong number of arguments for 'get' command\r\n"
               "-ERR wrong number of arguments for 'set' command\r\n");
    send_str(fd, "*2\r\n$3\r\nfoo\r\n$4\r\na\r\nb\r\n" /* CR LF in an argument: spaces in the error */
                 "SET k v EX 10\r\nCONFIG GET save\r\nCONFIG GET appendonly\r\nCONFIG GET *\r\nCONFIG GET nothing\r\n"
                 "CONFIG SET save x\r\nDEL k k\r\nDBSIZE\r\n");
    expect(fd, "-ERR unknown command 'foo', with args beginning with: 'a  b' \r\n"
               "-ERR syntax error\r\n"
               "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
               "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
               "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
               "*0\r\n"
               "-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n"
               ":1\r\n:0\r\n");
    send_str(fd, "QUIT\r\n");
    expect(fd, "+OK\r\n");
    expect_eof(fd);
    close(fd);
    assert_clean_exit(s);
}

/* Inline requests split as Redis's sdssplitargs splits them: "double" and 'single' quoted
 * arguments with their escapes, a quote closing part of an argument, empty quoted
 * arguments, blanks other than spaces (redis-server 7 gives these very replies); unbalanced
 * quotes are a protocol error that closes the connection. */
static void test_resp_inline_quotes(void **state)
{
    server *s = *state;
    int fd = dial(s->port);
    send_str(fd, "SET \"a b\" 'c d'\r\n*2\r\n$3\r\nGET\r\n$3\r\na b\r\n");
    expect(fd, "+OK\r\n$3\r\nc d\r\n");
    send_str(fd, "SET k2 \"x\\n\\x41\\\\\\\"\\t\\b\\a\\r\\q\"\r\n*2\r\n$3\r\nGET\r\n$2\r\nk2\r\n");
    expect(fd, "+OK\r\n$10\r\nx\nA\\\"\t\b\a\rq\r\n");
    send_str(fd, "SET k3 'it\\'s \\n'\r\n*2\r\n$3\r\nGET\r\n$2\r\nk3\r\n");
    expect(fd, "+OK\r\n$7\r\nit's \\n\r\n");
    send_str(fd, "SET ab\"c d\" x\r\nGET \"abc d\"\r\nSET \"\" empty\r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
    expect(fd, "+OK\r\n$1\r\nx\r\n+OK\r\n$5\r\nempty\r\n");
    send_str(fd, "ECHO \"\\x00\\xff\\xZZ\\x4\"\r\nECHO \v''\f\r\nECHO a\vb\r\nECHO \"\\\\\"\r\nECHO  a\rb\r\n");
    static const uint8_t hex[] = "$7\r\n\0\xffxZZx4\r\n";
    uint8_t got[sizeof hex - 1];
    recv_exact(fd, got, sizeof got);
    assert_bytes(got, hex, sizeof got);
    expect(fd, "$0\r\n\r\n$3\r\na\vb\r\n$1\r\n\\\r\n-ERR wrong number of arguments for 'echo' command\r\n");
    close(fd);
    static const char *const unbalanced[] = {"SET \"abc def\r\n", "ECHO \"a\"b\r\n", "ECHO 'a'b\r\n", "ECHO 'a\\'\r\n",
                                             "ECHO \"a\\\"\r\n"};
    for (size_t i = 0; i < sizeof unbalanced / sizeof unbalanced[0]; i++) {
        fd = dial(s->port);
        send_str(fd, "PING\r\n");
        send_str(fd, unbalanced[i]);
        send_str(fd, "PING\r\n");
        expect(fd, "+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n");
        expect_eof(fd);
        close(fd);
    }
    assert_clean_exit(s);
}

/* A malformed request gets Redis's protocol error reply, after the replies to the requests
 * before it, and the connection closes; so does a request above --max-request (1M here),
 * refused as soon as its header says so. */
static void test_resp_malformed_requests_close(void **state)
{
    server *s = *state;
    static const char *const cases[][2] = {
        {"*abc\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
        {"*1\r\nPING\r\n", "-ERR Protocol error: expected '$', got 'P'\r\n"},
        {"*1\r\n$-2\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
        {"*1\r\n$01\r\nP\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
        {"*1\r\n$4\r\nPINGxx", "-ERR Protocol error: bulk not followed by CRLF\r\n"},
        {"*2\r\n$3\r\nGET\r\n$2000000\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
        {"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048570\r\n", "-ERR Protocol error: request too large\r\n"},
        {"*99999999999999999999\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = dial(s->port);
        send_str(fd, "PING\r\n");
        send_str(fd, cases[i][0]);
        expect(fd, "+PONG\r\n");
        expect(fd, cases[i][1]);
        expect_eof(fd);
        close(fd);
    }
    /* An inline request with no end in 64 KiB. */
    int fd = dial(s->port);
    char *line = malloc(70000);
    memset(line, 'a', 70000);
    send_all(fd, line, 70000);
    expect(fd, "-ERR Protocol error: too big inline request\r\n");
    expect_eof(fd);
    close(fd);
    free(line);
    assert_clean_exit(s);
}

/* Clients gone in the middle of a request (and of a reply): nothing is stored, nothing
 * leaks, the server goes on. */
static void test_resp_truncated_request_then_disconnect(void **state)
{
    server *s = *state;
    int fd = dial(s->port);
    send_str(fd, "SET a 1\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc");
    expect(fd, "+OK\r\n");
    close(fd);
    fd = dial(s->port); /* 2 MB of replies asked for, gone before reading them */
    char *big = malloc(500000);
    memset(big, 'x', 500000);
    bytes req = {0};
    command(&req, 3, (const void *[]){"SET", "v", big}, (const size_t[]){3, 1, 500000});
    send_all(fd, req.p, req.n);
    expect(fd, "+OK\r\n");
    req.n = 0;
    for (int i = 0; i < 4; i++) command(&req, 2, (const void *[]){"GET", "v"}, NULL);
    send_all(fd, req.p, req.n);
    sleep_ms(20);
    close(fd);
    fd = dial(s->port);
    for (int tries = 0; info_field(fd, "connected_clients") != 1; tries++) {
        if (tries > 500) fail_msg("the closed connections are still open");
        sleep_ms(10);
    }
    send_str(fd, "GET k\r\nGET a\r\nEXISTS v\r\n");
    expect(fd, "$-1\r\n$1\r\n1\r\n:1\r\n");
    close(fd);
    free(big);
    free(req.p);
    assert_clean_exit(s);
}

/* Backpressure: a client asking for 25 MB of replies without reading them is no longer
 * read once its output passes the high water mark (256K here) - the server says so in
 * INFO - and then, reading slowly, receives every byte in order, its later requests
 * answered after them. */
static void test_resp_slow_reader_backpressure(void **state)
{
    server *s = *state;
    int fd = dial(s->port), observer = dial(s->port);
    uint64_t rng = 5;
    size_t n = 250000;
    uint8_t *value = random_value(n, &rng);
    bytes req = {0}, want = {0};
    command(&req, 3, (const void *[]){"SET", "v", value}, (const size_t[]){3, 1, n});
    send_all(fd, req.p, req.n);
    expect(fd, "+OK\r\n");
    req.n = 0;
    enum { GETS = 100 };
    for (int i = 0; i < GETS; i++) {
        command(&req, 2, (const void *[]){"GET", "v"}, NULL);
        bulk(&want, value, n);
    }
    send_all(fd, req.p, req.n);
    for (int tries = 0; info_field(observer, "clients_paused_for_backpressure") != 1; tries++) {
        if (tries > 500) fail_msg("the server never stopped reading the slow client");
        sleep_ms(10);
    }
    send_str(fd, "PING\r\n");
    put(&want, "+PONG\r\n", 7);
    uint8_t *got = malloc(want.n);
    for (size_t done = 0; done < want.n;) { /* 64 KiB at a time, a pause between */
        size_t k = want.n - done < 65536 ? want.n - done : 65536;
        recv_exact(fd, got + done, k);
        done += k;
        if (done % (1 << 20) < 65536) sleep_ms(1);
    }
    assert_bytes(got, want.p, want.n);
    assert_int_equal(info_field(observer, "clients_paused_for_backpressure"), 0);
    assert_true(info_field(observer, "backpressure_pauses") >= 1);
    close(fd);
    close(observer);
    free(got);
    free(value);
    free(req.p);
    free(want.p);
    assert_clean_exit(s);
}

/* The program at `name` on PATH, or NULL. */
static char *find_program(const char *name)
{
    const char *path = getenv("PATH");
    if (path == NULL) path = "/usr/bin:/bin";
    char *copy = strdup(path), *save = NULL, *found = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir != NULL && found == NULL; dir = strtok_r(NULL, ":", &save)) {
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", dir, name);
        if (access(full, X_OK) == 0) found = strdup(full);
    }
    free(copy);
    return found;
}

/* redis-benchmark -n 2000 -P 16 -q -t ping,set,get: every test completes (none waits for
 * a reply that never comes), and its SETs stored a value of its -d (3 bytes). */
static void test_resp_redis_benchmark(void **state)
{
    server *s = *state;
    char *bench = find_program("redis-benchmark");
    if (bench == NULL) {
        assert_clean_exit(s);
        skip();
    }
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    int out[2];
    assert_int_equal(pipe(out), 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        dup2(out[1], STDERR_FILENO);
        close(out[0]);
        execl(bench, bench, "-h", "127.0.0.1", "-p", port, "-n", "2000", "-P", "16", "-q", "-t", "ping,set,get", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char text[8192];
    size_t used = 0;
    for (;;) {
        struct pollfd p = {out[0], POLLIN, 0};
        if (poll(&p, 1, 20000) != 1) {
            kill(pid, SIGKILL);
            fail_msg("redis-benchmark stalled: %.*s", (int)used, text);
        }
        ssize_t k = read(out[0], text + used, sizeof text - 1 - used);
        if (k <= 0) break;
        used += (size_t)k;
    }
    text[used] = '\0';
    close(out[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail_msg("redis-benchmark failed: %s", text);
    static const char *const tests[] = {"PING_INLINE: ", "PING_MBULK: ", "SET: ", "GET: "};
    for (int i = 0; i < 4; i++) {
        const char *at = strstr(text, tests[i]);
        if (at == NULL || strstr(at, "requests per second") == NULL) fail_msg("no %s result in: %s", tests[i], text);
    }
    if (strstr(text, "WARNING") != NULL || strstr(text, "rror") != NULL) fail_msg("redis-benchmark complained: %s", text);
    int fd = dial(s->port);
    send_str(fd, "GET key:__rand_int__\r\n");
    char reply[10] = {0};
    recv_exact(fd, reply, 9);
    if (memcmp(reply, "$3\r\n", 4) != 0 || memcmp(reply + 7, "\r\n", 2) != 0) fail_msg("GET: '%s'", reply);
    close(fd);
    free(bench);
    assert_clean_exit(s);
}

/* ---------------------------------------------------------------------------------------
 * HTTP
 * ------------------------------------------------------------------------------------- */

#define LARGE_SIZE 65536

/* bytepool-http's /64k body. */
static uint8_t *large_body(void)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    uint8_t *b = malloc(LARGE_SIZE);
    for (size_t i = 0; i < LARGE_SIZE; i++) b[i] = i % 64 == 63 ? '\n' : (uint8_t)alphabet[(i / 64 + i % 64) % 62];
    return b;
}

/* Reads one response: its header block (returned, NUL-terminated) and its body (into
 * *body, Content-Length bytes, none for HEAD). */
static char *read_response(int fd, bool head, uint8_t **body, size_t *body_len)
{
    char *block = malloc(4096);
    size_t n = 0;
    while (n < 4 || memcmp(block + n - 4, "\r\n\r\n", 4) != 0) {
        assert_true(n < 4095);
        recv_exact(fd, block + n, 1);
        n++;
    }
    block[n] = '\0';
    const char *cl = strstr(block, "Content-Length: ");
    assert_non_null(cl);
    *body_len = head ? 0 : strtoul(cl + 16, NULL, 10);
    *body = malloc(*body_len + 1);
    recv_exact(fd, *body, *body_len);
    return block;
}

/* The header block is `want` with the Date line's value being any well-formed date. */
static void assert_head(const char *got, const char *want)
{
    const char *date = strstr(got, "\r\nDate: ");
    if (date == NULL) fail_msg("no Date in:\n%s", got);
    date += 8;
    struct tm tm;
    const char *end = strptime(date, "%a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    if (end == NULL || end - date != 31) fail_msg("bad Date in:\n%s", got);
    char *expected = malloc(strlen(want) + 64);
    const char *mark = strstr(want, "Date: *\r\n");
    assert_non_null(mark);
    size_t before = (size_t)(mark - want) + 6;
    memcpy(expected, want, before);
    memcpy(expected + before, date, 29);
    strcpy(expected + before + 29, mark + 7);
    if (strcmp(got, expected) != 0) fail_msg("header block:\n%s\nexpected:\n%s", got, expected);
    free(expected);
}

static const char *const HELLO_HEAD = "HTTP/1.1 200 OK\r\nServer: bytepool\r\nDate: *\r\nContent-Type: text/plain\r\n"
                                      "Content-Length: 14\r\n%s\r\n";
static const char *const LARGE_HEAD = "HTTP/1.1 200 OK\r\nServer: bytepool\r\nDate: *\r\nContent-Type: text/plain\r\n"
                                      "Content-Length: 65536\r\n%s\r\n";

/* Reads a response and checks it: status block `head_fmt` (with `connection` for its %s)
 * and body `want`. */
static void expect_response(int fd, const char *head_fmt, const char *connection, bool head, const void *want, size_t want_len)
{
    char expected[1024];
    snprintf(expected, sizeof expected, head_fmt, connection);
    uint8_t *body;
    size_t len;
    char *block = read_response(fd, head, &body, &len);
    assert_head(block, expected);
    assert_int_equal(len, want_len);
    assert_bytes(body, want, len);
    free(block);
    free(body);
}

static void expect_error(int fd, int status, const char *reason, const char *extra)
{
    char head[512];
    snprintf(head, sizeof head,
             "HTTP/1.1 %d %s\r\nServer: bytepool\r\nDate: *\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
             status, reason, strlen(reason) + 1, extra);
    char body[128];
    snprintf(body, sizeof body, "%s\n", reason);
    expect_response(fd, "%s", head, false, body, strlen(body));
}

/* 200 pipelined requests in one write: both resources, HEAD, a 404, a POST with a body
 * (405, the body skipped), each response checked whole. */
static void test_http_pipelined_requests(void **state)
{
    server *s = *state;
    int fd = dial(s->port);
    uint8_t *large = large_body();
    bytes req = {0};
    for (int i = 0; i < 200; i++) {
        static const char *const kinds[] = {
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET /64k HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
            "HEAD /64k HTTP/1.1\r\nHost: x\r\n\r\n", "GET /nope?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "GET /?query HTTP/1.1\r\nhost:  x \r\n\r\n"};
        put(&req, kinds[i % 6], strlen(kinds[i % 6]));
    }
    send_all(fd, req.p, req.n);
    for (int i = 0; i < 200; i++) {
        switch (i % 6) {
        case 0:
        case 5: expect_response(fd, HELLO_HEAD, "", false, "Hello, World!\n", 14); break;
        case 1: expect_response(fd, LARGE_HEAD, "", false, large, LARGE_SIZE); break;
        case 2: expect_response(fd, LARGE_HEAD, "", true, "", 0); break;
        case 3: expect_error(fd, 404, "Not Found", ""); break;
        case 4: expect_error(fd, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n"); break;
        }
    }
    close(fd);
    free(large);
    free(req.p);
    assert_clean_exit(s);
}

/* Keep-alive across round trips; "Connection: close" and HTTP/1.0 without keep-alive end
 * the connection after their response; HTTP/1.0 with keep-alive does not. */
static void test_http_keep_alive_and_close(void **state)
{
    server *s = *state;
    uint8_t *large = large_body();
    int fd = dial(s->port);
    for (int i = 0; i < 3; i++) {
        send_str(fd, "GET /64k HTTP/1.1\r\nHost: x\r\n\r\n");
        expect_response(fd, LARGE_HEAD, "", false, large, LARGE_SIZE);
    }
    send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_response(fd, HELLO_HEAD, "Connection: close\r\n", false, "Hello, World!\n", 14);
    expect_eof(fd);
    close(fd);
    fd = dial(s->port);
    send_str(fd, "GET /64k HTTP/1.0\r\n\r\n");
    expect_response(fd, LARGE_HEAD, "Connection: close\r\n", false, large, LARGE_SIZE);
    expect_eof(fd);
    close(fd);
    fd = dial(s->port);
    for (int i = 0; i < 2; i++) {
        send_str(fd, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        expect_response(fd, HELLO_HEAD, "Connection: keep-alive\r\n", false, "Hello, World!\n", 14);
    }
    close(fd);
    free(large);
    assert_clean_exit(s);
}

/* A response that closes the connection arrives whole even when the client has sent more
 * after it and reads slowly: the server shuts its side and drains what comes, instead of
 * closing with unread bytes (which resets the connection and drops what the kernel has not
 * sent yet). */
static void test_http_close_delivers_whole_response(void **state)
{
    server *s = *state;
    uint8_t *large = large_body();
    for (int i = 0; i < 3; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int small = 4096; /* a small window: most of the response waits in the server's kernel */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        struct timeval tv = {TIMEOUT_MS / 1000, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        send_str(fd, i == 2 ? "GET /64k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
                            : i == 1 ? "GET /64k HTTP/1.0\r\n\r\nGET / HTTP/1.0\r\n\r\n"
                                     : "GET /64k HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n");
        sleep_ms(50);
        send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); /* more, unread by the server */
        expect_response(fd, LARGE_HEAD, i == 0 ? "" : "Connection: close\r\n", false, large, LARGE_SIZE);
        if (i == 0) expect_error(fd, 400, "Bad Request", "Connection: close\r\n");
        expect_eof(fd);
        close(fd);
    }
    free(large);
    assert_clean_exit(s);
}

/* Malformed requests get 400 (or 501, 505) and the connection closes, the requests before
 * them answered. */
static void test_http_malformed_requests(void **state)
{
    server *s = *state;
    static const struct {
        const char *request;
        int status;
        const char *reason;
    } cases[] = {
        {"GARBAGE\r\n\r\n", 400, "Bad Request"},
        {"GET / HTTP/1.1\r\n\r\n", 400, "Bad Request"}, /* no Host */
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Bad Request"},
        {"GET / HTTP/1.1\r\nHost: x\r\nBad header\r\n\r\n", 400, "Bad Request"},
        {"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, "Bad Request"},
        {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, "Bad Request"},
        {"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"},
        {"GET noslash HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"},
        {"GET / HTTP/1.x\r\nHost: x\r\n\r\n", 400, "Bad Request"},
        {"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", 400, "Bad Request"},
        {"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400, "Bad Request"},
        {"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, "HTTP Version Not Supported"},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "Not Implemented"},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413, "Content Too Large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = dial(s->port);
        send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        send_str(fd, cases[i].request);
        send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); /* never answered */
        expect_response(fd, HELLO_HEAD, "", false, "Hello, World!\n", 14);
        expect_error(fd, cases[i].status, cases[i].reason, "Connection: close\r\n");
        expect_eof(fd);
        close(fd);
    }
    assert_clean_exit(s);
}

/* A header block of 8 KiB is served; one longer gets 431 and the connection closes, also
 * when its bytes come in pieces; a request arriving a byte at a time is served. */
static void test_http_header_limit_and_split_request(void **state)
{
    server *s = *state;
    char *req = malloc(20000);
    for (int size = 8192; size <= 8193; size++) { /* the whole block, final CRLF CRLF included */
        int fd = dial(s->port);
        const char *start = "GET / HTTP/1.1\r\nHost: x\r\nX: ";
        size_t fill = (size_t)size - strlen(start) - 4;
        strcpy(req, start);
        memset(req + strlen(start), 'a', fill);
        strcpy(req + strlen(start) + fill, "\r\n\r\n");
        assert_int_equal(strlen(req), (size_t)size);
        send_all(fd, req, 4000);
        sleep_ms(5);
        send_all(fd, req + 4000, (size_t)size - 4000);
        if (size == 8192) {
            expect_response(fd, HELLO_HEAD, "", false, "Hello, World!\n", 14);
        } else {
            expect_error(fd, 431, "Request Header Fields Too Large", "Connection: close\r\n");
            expect_eof(fd);
        }
        close(fd);
    }
    int fd = dial(s->port);
    for (const char *p = "GET /64k HTTP/1.1\r\nHost: x\r\n\r\n"; *p != '\0'; p++) {
        send_all(fd, p, 1);
        sleep_ms(1);
    }
    uint8_t *large = large_body();
    expect_response(fd, LARGE_HEAD, "", false, large, LARGE_SIZE);
    close(fd);
    free(large);
    free(req);
    assert_clean_exit(s);
}

/* The /64k body from each source: the default temporary file (sendfile), memory
 * (--copy-body: the gathering write), and a file of the caller's (--body-file: its size is
 * the body's, here 200 000 bytes that are not the built-in body), pipelined GETs and HEADs
 * answered whole, interleaved with "/" and with one another. The exit status also says
 * that every file region queued was released. */
static void test_http_body_sources(void **state)
{
    server *s = *state;
    enum { FILE_SIZE = 200000 };
    char path[] = "/tmp/bytepool-http-body-XXXXXX";
    int file = mkstemp(path);
    assert_true(file >= 0);
    uint64_t rng = 5;
    uint8_t *random = random_value(FILE_SIZE, &rng);
    assert_int_equal(write(file, random, FILE_SIZE), FILE_SIZE);
    close(file);
    uint8_t *large = large_body();
    char head[512];
    snprintf(head, sizeof head, "%s", LARGE_HEAD);
    char *cl = strstr(head, "65536");
    memcpy(cl, "200000", 6);
    strcpy(cl + 6, strstr(LARGE_HEAD, "65536") + 5);
    const char *const sources[][3] = {{NULL}, {"--copy-body", NULL}, {"--body-file", path, NULL}};
    for (int k = 0; k < 3; k++) {
        *s = start_server(http_path, sources[k][0] != NULL ? sources[k] : NULL);
        const char *want_head = k == 2 ? head : LARGE_HEAD;
        const uint8_t *want = k == 2 ? random : large;
        size_t want_len = k == 2 ? FILE_SIZE : LARGE_SIZE;
        int fd = dial(s->port);
        bytes req = {0};
        static const char *const kinds[] = {"GET /64k HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                            "HEAD /64k HTTP/1.1\r\nHost: x\r\n\r\n"};
        for (int i = 0; i < 30; i++) put(&req, kinds[i * 5 / 3 % 3], strlen(kinds[i * 5 / 3 % 3]));
        send_all(fd, req.p, req.n);
        for (int i = 0; i < 30; i++) {
            switch (i * 5 / 3 % 3) { /* 0 1 0 2 0 2 1 2 1 0 ... */
            case 0: expect_response(fd, want_head, "", false, want, want_len); break;
            case 1: expect_response(fd, HELLO_HEAD, "", false, "Hello, World!\n", 14); break;
            default: expect_response(fd, want_head, "", true, "", 0); break;
            }
        }
        close(fd);
        free(req.p);
        assert_clean_exit(s);
    }
    unlink(path);
    free(random);
    free(large);
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--resp") == 0) resp_path = argv[++i];
        else if (strcmp(argv[i], "--http") == 0) http_path = argv[++i];
        else if (strcmp(argv[i], "--only") == 0) cmocka_set_test_filter(argv[++i]);
    }
    if (resp_path == NULL || http_path == NULL) {
        fprintf(stderr, "usage: %s --resp PATH --http PATH [--only PATTERN]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resp_pipelined_set_get, setup_resp, teardown_server),
        cmocka_unit_test_setup_teardown(test_resp_requests_across_reads, setup_resp, teardown_server),
        cmocka_unit_test_setup_teardown(test_resp_commands_and_error_replies, setup_resp, teardown_server),
        cmocka_unit_test_setup_teardown(test_resp_inline_quotes, setup_resp, teardown_server),
        cmocka_unit_test_setup_teardown(test_resp_malformed_requests_close, setup_resp_small, teardown_server),
        cmocka_unit_test_setup_teardown(test_resp_truncated_request_then_disconnect, setup_resp, teardown_server),
        cmocka_unit_test_setup_teardown(test_resp_slow_reader_backpressure, setup_resp_small, teardown_server),
        cmocka_unit_test_setup_teardown(test_resp_redis_benchmark, setup_resp, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_pipelined_requests, setup_http, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_keep_alive_and_close, setup_http, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_close_delivers_whole_response, setup_http, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_malformed_requests, setup_http, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_header_limit_and_split_request, setup_http, teardown_server),
        cmocka_unit_test_setup_teardown(test_http_body_sources, setup_nothing, teardown_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
