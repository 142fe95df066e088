/* SPDX-License-Identifier: MIT */
/*
 * bytepool-http: an HTTP/1.1 server on bytepool's server layer (server.c) serving two
 * resources from memory: "/" (14 bytes, "Hello, World!\n") and "/64k" (65536 bytes of
 * text). Keep-alive and pipelining; "Connection: close" honoured; HTTP/1.0 closes unless
 * it asks for keep-alive; GET and HEAD (405 for other methods, 404 for other paths);
 * 400 for a malformed request, 431 for a header block above 8 KiB, 413 for a body above
 * --max-request (1 MiB), 501 for a Transfer-Encoding, 505 for an HTTP major version other than 1 - each
 * of those closes the connection. Request bodies (Content-Length) are skipped.
 *
 * Responses are made of buffers built before they are asked for and sent as retained
 * duplicates (no copy): the header blocks (and, for "/", header and body in one buffer)
 * once a second, since they carry a Date header as nginx's do. The /64k body is a file,
 * sent as a file region (sendfile: the kernel hands the file's pages to the socket, as
 * nginx's sendfile does): a temporary file written at start-up and unlinked, or the file
 * given with --body-file (its size then is the body's). One fd serves every response; it
 * is closed at exit, once every region queued has been released. With --copy-body the body
 * is a pooled buffer instead, sent as a retained duplicate in the gathering write (copied
 * into the kernel by the write), for comparison. Error responses are written into the
 * turn's reply buffer.
 *
 * `bytepool-http --write-resources DIR` writes the two bodies to DIR/hello and DIR/64k
 * (for serving the same bytes with another server) and exits.
 */
#define _GNU_SOURCE
#include "server.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NAME "bytepool-http"
#define DEFAULT_PORT 8080
#define MAX_HEADER ((size_t)8 << 10)
#define DEFAULT_MAX_BODY ((size_t)1 << 20)
#define LARGE_SIZE 65536

enum { RES_HELLO, RES_64K, RESOURCES };
/* How the response ends the exchange: HTTP/1.1 keep-alive (no header needed), HTTP/1.0
 * keep-alive ("Connection: keep-alive"), or "Connection: close". */
enum { CONN_DEFAULT, CONN_KEEP_ALIVE, CONN_CLOSE, CONN_KINDS };

static const char *const connection_header[CONN_KINDS] = {"", "Connection: keep-alive\r\n", "Connection: close\r\n"};

typedef struct http {
    srv *s;
    bp_buf *body[RESOURCES];              /* NULL: the /64k body is the file */
    size_t length[RESOURCES];             /* of the bodies */
    int body_fd;                          /* the /64k body's file, or -1 */
    long regions;                         /* file regions queued and not released */
    bp_buf *head[RESOURCES][CONN_KINDS];  /* header blocks */
    bp_buf *whole[CONN_KINDS];            /* header block and body of "/" */
    time_t date_second;                   /* when the blocks above were made */
    char date[40];                        /* "Date: ...\r\n" of that second */
} http;

/* The /64k body: lines of 63 characters and a newline. */
static void large_body(uint8_t *out)
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (size_t i = 0; i < LARGE_SIZE; i++) out[i] = i % 64 == 63 ? '\n' : (uint8_t)alphabet[(i / 64 + i % 64) % 62];
}

static const char hello_body[] = "Hello, World!\n";

/* ---------------------------------------------------------------------------------------
 * Prepared responses
 * ------------------------------------------------------------------------------------- */

static bp_buf *text_buffer(bp_allocator *a, const char *text, size_t n, const bp_buf *tail)
{
    size_t extra = tail != NULL ? bp_readable_bytes(tail) : 0;
    bp_buf *b = bp_alloc(a, n + extra);
    if (b == NULL) return NULL;
    int rc = bp_write_bytes(b, text, n);
    if (rc == 0 && tail != NULL) rc = bp_get_bytes(tail, bp_reader_index(tail), bp_data(b, n), extra);
    if (rc == 0 && tail != NULL) rc = bp_set_writer_index(b, n + extra);
    if (rc != 0) {
        bp_release(b);
        return NULL;
    }
    return b;
}

static void release_heads(http *h)
{
    for (int k = 0; k < CONN_KINDS; k++) {
        for (int r = 0; r < RESOURCES; r++) {
            if (h->head[r][k] != NULL) bp_release(h->head[r][k]);
            h->head[r][k] = NULL;
        }
        if (h->whole[k] != NULL) bp_release(h->whole[k]);
        h->whole[k] = NULL;
    }
}

/* Remakes the header blocks for the current second (responses in flight keep the old
 * ones alive through their duplicates). Returns 0 or BP_ENOMEM. */
static int refresh(http *h, time_t now)
{
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(h->date, sizeof h->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    release_heads(h);
    bp_allocator *a = srv_allocator(h->s);
    for (int r = 0; r < RESOURCES; r++) {
        for (int k = 0; k < CONN_KINDS; k++) {
            char text[512];
            int n = snprintf(text, sizeof text,
                             "HTTP/1.1 200 OK\r\nServer: bytepool\r\n%sContent-Type: text/plain\r\n"
                             "Content-Length: %zu\r\n%s\r\n",
                             h->date, h->length[r], connection_header[k]);
            h->head[r][k] = text_buffer(a, text, (size_t)n, NULL);
            if (r == RES_HELLO) h->whole[k] = text_buffer(a, text, (size_t)n, h->body[r]);
            if (h->head[r][k] == NULL || (r == RES_HELLO && h->whole[k] == NULL)) return BP_ENOMEM;
        }
    }
    h->date_second = now;
    return 0;
}

static int send_dup(srv *s, srv_conn *c, bp_buf *b)
{
    int err;
    bp_buf *dup = bp_retained_duplicate(b, &err);
    return dup != NULL ? srv_send(s, c, dup) : err;
}

static void region_released(int fd, int completed, void *ctx)
{
    (void)fd, (void)completed;
    ((http *)ctx)->regions--;
}

/* A body after its header block: the pooled buffer's duplicate, or the file as a region. */
static int send_body(http *h, srv_conn *c, int res)
{
    if (h->body[res] != NULL) return send_dup(h->s, c, h->body[res]);
    h->regions++;
    return srv_send_file(h->s, c, h->body_fd, 0, h->length[res], region_released, h);
}

/* ---------------------------------------------------------------------------------------
 * Requests
 * ------------------------------------------------------------------------------------- */

typedef struct request {
    const uint8_t *method, *target;
    size_t method_len, target_len;
    int minor;              /* HTTP/1.x */
    bool close, keep_alive; /* Connection tokens */
    bool has_length, transfer_encoding;
    unsigned hosts;
    size_t content_length;
} request;

static bool is_tchar(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool names_equal(const uint8_t *p, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp((const char *)p, name, n) == 0;
}

/* "Connection: a, b": records close and keep-alive. */
static void connection_tokens(request *q, const uint8_t *v, size_t n)
{
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t start = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t') i++;
        if (names_equal(v + start, i - start, "close")) q->close = true;
        else if (names_equal(v + start, i - start, "keep-alive")) q->keep_alive = true;
    }
}

/* Returns 0, or the status of the error response: 400 (malformed). */
static int header_line(request *q, const uint8_t *p, size_t n)
{
    size_t colon = 0;
    while (colon < n && is_tchar(p[colon])) colon++;
    if (colon == 0 || colon == n || p[colon] != ':') return 400; /* obs-fold too: it starts with a space */
    size_t v = colon + 1, end = n;
    for (size_t i = v; i < n; i++)
        if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f) return 400;
    while (v < end && (p[v] == ' ' || p[v] == '\t')) v++;
    while (end > v && (p[end - 1] == ' ' || p[end - 1] == '\t')) end--;
    const uint8_t *value = p + v;
    size_t len = end - v;
    if (names_equal(p, colon, "host")) {
        q->hosts++;
    } else if (names_equal(p, colon, "connection")) {
        connection_tokens(q, value, len);
    } else if (names_equal(p, colon, "transfer-encoding")) {
        q->transfer_encoding = true;
    } else if (names_equal(p, colon, "content-length")) {
        if (len == 0 || len > 18) return 400;
        size_t cl = 0;
        for (size_t i = 0; i < len; i++) {
            if (value[i] < '0' || value[i] > '9') return 400;
            cl = cl * 10 + (size_t)(value[i] - '0');
        }
        if (q->has_length && cl != q->content_length) return 400;
        q->has_length = true;
        q->content_length = cl;
    }
    return 0;
}

/* "METHOD SP TARGET SP HTTP/d.d". Returns 0, 400 or 505. */
static int request_line(request *q, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n && is_tchar(p[i])) i++;
    if (i == 0 || i == n || p[i] != ' ') return 400;
    q->method = p;
    q->method_len = i;
    size_t t = ++i;
    while (i < n && p[i] > 0x20 && p[i] != 0x7f) i++;
    if (i == t || i == n || p[i] != ' ' || p[t] != '/') return 400;
    q->target = p + t;
    q->target_len = i - t;
    const uint8_t *v = p + i + 1;
    if (n - i - 1 != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' ||
        v[7] > '9')
        return 400;
    if (v[5] != '1') return 505;
    q->minor = v[7] - '0';
    return 0;
}

/* Parses the header block p[0 .. n) (its final CRLF CRLF included). Returns 0 or an error
 * status. */
static int parse_request(request *q, const uint8_t *p, size_t n, size_t max_body)
{
    memset(q, 0, sizeof *q);
    size_t end = n - 2; /* the empty line's CRLF */
    int status = 0;
    bool first = true;
    for (size_t pos = 0; pos < end && status == 0;) {
        const uint8_t *crlf = memmem(p + pos, end - pos, "\r\n", 2);
        size_t line_end = (size_t)(crlf - p);
        status = first ? request_line(q, p + pos, line_end - pos) : header_line(q, p + pos, line_end - pos);
        first = false;
        pos = line_end + 2;
    }
    if (status == 0 && q->minor >= 1 && q->hosts != 1) status = 400;
    if (status == 0 && q->transfer_encoding) status = 501;
    if (status == 0 && q->content_length > max_body) status = 413;
    return status;
}

static const char *reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

/* An error response with a short text body, copied into the turn's replies. */
static int error_response(http *h, srv_conn *c, int status, int conn_kind, bool head_only)
{
    const char *why = reason(status);
    char text[512];
    int n = snprintf(text, sizeof text,
                     "HTTP/1.1 %d %s\r\nServer: bytepool\r\n%sContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n%s%s\r\n%s%s",
                     status, why, h->date, strlen(why) + 1, status == 405 ? "Allow: GET, HEAD\r\n" : "",
                     connection_header[conn_kind], head_only ? "" : why, head_only ? "" : "\n");
    return srv_reply(h->s, c, text, (size_t)n);
}

static long on_request(void *ctx, srv *s, srv_conn *c, bp_buf *buf, size_t at, const uint8_t *p, size_t n)
{
    http *h = ctx;
    time_t now = time(NULL);
    if (now != h->date_second && refresh(h, now) != 0) return SRV_CLOSE;
    size_t limit = n < MAX_HEADER ? n : MAX_HEADER, end;
    int found = bp_index_of_bytes(buf, at, at + limit, "\r\n\r\n", 4, &end);
    if (found < 0) return SRV_CLOSE;
    if (found == 0) {
        if (n < MAX_HEADER) return 0;
        error_response(h, c, 431, CONN_CLOSE, false);
        return SRV_CLOSE;
    }
    size_t header = end - at + 4;
    request q;
    int status = parse_request(&q, p, header, srv_opts(s)->max_request);
    bool head_only = status == 0 && names_equal(q.method, q.method_len, "HEAD");
    if (status != 0) {
        error_response(h, c, status, CONN_CLOSE, false);
        return SRV_CLOSE;
    }
    if (n - header < q.content_length) return 0; /* the body is still on its way */
    bool keep = !q.close && (q.minor >= 1 || q.keep_alive);
    int kind = !keep ? CONN_CLOSE : q.minor >= 1 ? CONN_DEFAULT : CONN_KEEP_ALIVE;
    size_t path_len = 0;
    while (path_len < q.target_len && q.target[path_len] != '?') path_len++;
    int res = names_equal(q.target, path_len, "/") ? RES_HELLO : names_equal(q.target, path_len, "/64k") ? RES_64K : -1;
    int rc;
    if (!head_only && !names_equal(q.method, q.method_len, "GET")) rc = error_response(h, c, 405, kind, false);
    else if (res < 0) rc = error_response(h, c, 404, kind, head_only);
    else if (head_only) rc = send_dup(s, c, h->head[res][kind]);
    else if (res == RES_HELLO) rc = send_dup(s, c, h->whole[kind]);
    else if ((rc = send_dup(s, c, h->head[res][kind])) == 0) rc = send_body(h, c, res);
    if (rc != 0) return SRV_CLOSE;
    if (!keep) srv_close_after(c);
    return (long)(header + q.content_length);
}

/* ---------------------------------------------------------------------------------------
 * Main
 * ------------------------------------------------------------------------------------- */

static int write_file(const char *dir, const char *name, const void *bytes, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(bytes, 1, n, f) != n || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

static int write_resources(const char *dir)
{
    static uint8_t large[LARGE_SIZE];
    large_body(large);
    return write_file(dir, "hello", hello_body, sizeof hello_body - 1) | write_file(dir, "64k", large, sizeof large);
}

/* The /64k body as a file: `path`, or a temporary file of the built-in body, unlinked
 * at once (its fd keeps it). Returns the fd, or -1 after a message. */
static int open_body_file(const char *path, size_t *length)
{
    char temp[4096];
    int fd;
    if (path != NULL) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } else {
        const char *dir = getenv("TMPDIR");
        snprintf(temp, sizeof temp, "%s/bytepool-http-XXXXXX", dir != NULL && *dir != '\0' ? dir : "/tmp");
        fd = mkostemp(temp, O_CLOEXEC);
        path = temp;
    }
    struct stat st;
    if (fd >= 0 && path == temp) {
        static uint8_t large[LARGE_SIZE];
        large_body(large);
        unlink(temp);
        if (write(fd, large, sizeof large) != (ssize_t)sizeof large) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0)) {
        fprintf(stderr, "%s: %s: not a regular file with bytes in it\n", NAME, path);
        close(fd);
        return -1;
    }
    if (fd < 0) {
        perror(path);
        return -1;
    }
    *length = (size_t)st.st_size;
    return fd;
}

static int make_bodies(http *h, bool copy, const char *path)
{
    bp_allocator *a = srv_allocator(h->s);
    h->body[RES_HELLO] = text_buffer(a, hello_body, sizeof hello_body - 1, NULL);
    if (h->body[RES_HELLO] == NULL) return BP_ENOMEM;
    h->length[RES_HELLO] = sizeof hello_body - 1;
    if (!copy) {
        h->body_fd = open_body_file(path, &h->length[RES_64K]);
        return h->body_fd >= 0 ? 0 : BP_EIO;
    }
    h->body[RES_64K] = bp_alloc(a, LARGE_SIZE);
    if (h->body[RES_64K] == NULL) return BP_ENOMEM;
    large_body(bp_data(h->body[RES_64K], 0));
    h->length[RES_64K] = LARGE_SIZE;
    return bp_set_writer_index(h->body[RES_64K], LARGE_SIZE);
}

/* Takes this server's own options out of argv (the rest are the common ones): --copy-body,
 * --body-file PATH. Returns the new argc, or -1 after a message. */
static int own_options(int argc, char **argv, bool *copy, const char **path)
{
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--copy-body") == 0) {
            *copy = true;
        } else if (strcmp(argv[i], "--body-file") == 0) {
            if (i + 1 == argc) {
                fprintf(stderr, "%s: --body-file needs a path\n", NAME);
                return -1;
            }
            *path = argv[++i];
        } else {
            argv[kept++] = argv[i];
        }
    }
    if (*copy && *path != NULL) {
        fprintf(stderr, "%s: --copy-body and --body-file exclude each other\n", NAME);
        return -1;
    }
    return kept;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-resources") == 0) return write_resources(argv[2]);
    srv_options o = {.address = "127.0.0.1", .port = DEFAULT_PORT, .max_request = DEFAULT_MAX_BODY,
                     .high_water = (size_t)1 << 20, .low_water = (size_t)256 << 10,
                     .max_read = (size_t)64 << 10, .spin_us = 20};
    bool copy = false;
    const char *path = NULL;
    argc = own_options(argc, argv, &copy, &path);
    if (argc < 0) return 2;
    int rc = srv_parse_options(argc, argv, &o, NAME);
    if (rc > 0)
        printf("  --body-file PATH    serve /64k from this file (default: a temporary file)\n"
               "  --copy-body         serve /64k from memory with the gathering write, not from\n"
               "                      a file with sendfile\n");
    if (rc != 0) return rc > 0 ? 0 : 2;
    static const srv_protocol proto = {NAME, on_request};
    http h = {.body_fd = -1};
    h.s = srv_new(&o, &proto, &h);
    if (h.s == NULL) return 1;
    rc = make_bodies(&h, copy, path) == 0 && refresh(&h, time(NULL)) == 0 ? srv_run(h.s) : -1;
    release_heads(&h);
    for (int r = 0; r < RESOURCES; r++)
        if (h.body[r] != NULL) bp_release(h.body[r]);
    int status = srv_finish(h.s);
    if (h.regions != 0) { /* srv_run closed every connection, releasing their regions */
        fprintf(stderr, "%s: %ld file regions never released\n", NAME, h.regions);
        if (o.check_leaks) status = 3;
    }
    if (h.body_fd >= 0) close(h.body_fd);
    return rc != 0 ? 1 : status;
}
