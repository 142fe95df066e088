/* SPDX-License-Identifier: MIT */
/*
 * bytepool-resp: a Redis-protocol (RESP2) key-value server on bytepool's server layer
 * (server.c): PING, ECHO, SET, GET, DEL, EXISTS, DBSIZE, CONFIG GET (what redis-benchmark
 * asks at start-up), INFO, QUIT; multibulk and inline requests, pipelining. Unknown
 * commands get Redis's "-ERR unknown command" reply; malformed requests a
 * "-ERR Protocol error: ..." reply, after which the connection is closed, as Redis does.
 * Inline requests are split as Redis splits them (sdssplitargs: "double" and 'single'
 * quoted arguments, with escapes).
 *
 * Requests are parsed in place from the connection's bp_input. A stored value is one
 * pooled buffer holding its whole bulk reply ("$5\r\nhello\r\n"), so that a GET queues it
 * as it is: copied into the turn's reply buffer when small, else a retained duplicate
 * (no copy). A SET of a large value keeps a retained slice of the request bytes themselves
 * (a bulk argument is encoded exactly as its bulk reply, the length checked canonical),
 * as Redis keeps a large argument's query buffer.
 */
#define _GNU_SOURCE
#include "server.h"

#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define NAME "bytepool-resp"
#define DEFAULT_PORT 6380
#define DEFAULT_MAX_REQUEST ((size_t)64 << 20)
/* An inline request, and the count and length lines, must end within this (Redis's). */
#define MAX_INLINE ((size_t)64 << 10)
#define MAX_ARGS (1024 * 1024)
/* A GET copies a stored reply this short into the turn's reply buffer; a longer one goes
 * out as a retained duplicate. */
#define COPY_LIMIT ((size_t)1024)
/* A SET keeps a retained slice of the request for an encoded value this long or longer
 * (Redis's PROTO_MBULK_BIG_ARG); shorter ones are copied into a buffer of their own. */
#define SLICE_LIMIT ((size_t)32 << 10)

/* One argument: bytes inside the input's unread bytes, `at` bytes from the request start. */
typedef struct arg {
    const uint8_t *p;
    size_t n;
    size_t at; /* where its "$" header starts (multibulk), for the whole bulk encoding */
} arg;

/* Open addressing with linear probing; a slot is empty when key is NULL. */
typedef struct entry {
    uint64_t hash;
    bp_buf *key;   /* the key's bytes */
    bp_buf *value; /* the whole bulk reply */
} entry;

typedef struct resp {
    srv *s;
    entry *table;
    size_t mask, used;
    arg *argv;
    size_t argv_room;
    uint8_t *unquoted;     /* the decoded bytes of an inline request's quoted arguments */
    size_t unquoted_room;
    size_t argc;
    bool multibulk;
    const char *error; /* the protocol error found by the parser */
} resp;

/* ---------------------------------------------------------------------------------------
 * The key space
 * ------------------------------------------------------------------------------------- */

static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3u;
    return h ^ (h >> 29);
}

static bool key_is(const entry *e, uint64_t h, const uint8_t *k, size_t n)
{
    return e->hash == h && bp_readable_bytes(e->key) == n && memcmp(bp_data(e->key, 0), k, n) == 0;
}

/* The slot holding the key, or the empty slot where it would go. */
static entry *slot_of(resp *r, const uint8_t *k, size_t n, uint64_t h)
{
    for (size_t i = h & r->mask;; i = (i + 1) & r->mask) {
        entry *e = &r->table[i];
        if (e->key == NULL || key_is(e, h, k, n)) return e;
    }
}

static int grow_table(resp *r)
{
    size_t room = r->table == NULL ? 64 : (r->mask + 1) * 2;
    entry *table = calloc(room, sizeof *table), *old = r->table;
    if (table == NULL) return BP_ENOMEM;
    size_t old_room = r->table == NULL ? 0 : r->mask + 1;
    r->table = table;
    r->mask = room - 1;
    for (size_t i = 0; i < old_room; i++) {
        if (old[i].key == NULL) continue;
        size_t j = old[i].hash & r->mask;
        while (table[j].key != NULL) j = (j + 1) & r->mask;
        table[j] = old[i];
    }
    free(old);
    return 0;
}

static entry *lookup(resp *r, const arg *key)
{
    if (r->table == NULL) return NULL;
    entry *e = slot_of(r, key->p, key->n, hash_bytes(key->p, key->n));
    return e->key != NULL ? e : NULL;
}

/* Removes a slot, shifting back the entries of its probe run behind it (no tombstones). */
static void remove_slot(resp *r, entry *e)
{
    bp_release(e->key);
    bp_release(e->value);
    size_t hole = (size_t)(e - r->table);
    for (size_t i = (hole + 1) & r->mask; r->table[i].key != NULL; i = (i + 1) & r->mask) {
        size_t home = r->table[i].hash & r->mask;
        /* the entry may move to the hole unless its home lies cyclically in (hole, i] */
        bool stays = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (stays) continue;
        r->table[hole] = r->table[i];
        hole = i;
    }
    r->table[hole].key = NULL;
    r->table[hole].value = NULL;
    r->used--;
}

static void free_keyspace(resp *r)
{
    for (size_t i = 0; r->table != NULL && i <= r->mask; i++) {
        if (r->table[i].key == NULL) continue;
        bp_release(r->table[i].key);
        bp_release(r->table[i].value);
    }
    free(r->table);
    r->table = NULL;
    r->used = 0;
}

/* ---------------------------------------------------------------------------------------
 * Replies
 * ------------------------------------------------------------------------------------- */

/* Writes v in decimal ending at `end`; returns where it starts. */
static char *decimal(char *end, long long v)
{
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do *--end = (char)('0' + u % 10); while ((u /= 10) != 0);
    if (v < 0) *--end = '-';
    return end;
}

static int reply_str(srv *s, srv_conn *c, const char *text) { return srv_reply(s, c, text, strlen(text)); }

/* ":N\r\n", "*N\r\n" or "$N\r\n". */
static int reply_number(srv *s, srv_conn *c, char type, long long v)
{
    char line[32], *end = line + sizeof line;
    *--end = '\n';
    *--end = '\r';
    char *start = decimal(end, v);
    *--start = type;
    return srv_reply(s, c, start, (size_t)(line + sizeof line - start));
}

static int reply_bulk(srv *s, srv_conn *c, const void *p, size_t n)
{
    int rc = reply_number(s, c, '$', (long long)n);
    if (rc == 0) rc = srv_reply(s, c, p, n);
    if (rc == 0) rc = srv_reply(s, c, "\r\n", 2);
    return rc;
}

/* "-ERR ...\r\n"; CR and LF in the text become spaces (they would end the reply). */
static int reply_error(srv *s, srv_conn *c, const char *text, size_t n)
{
    char line[512];
    if (n > sizeof line - 3) n = sizeof line - 3;
    line[0] = '-';
    for (size_t i = 0; i < n; i++) line[1 + i] = text[i] == '\r' || text[i] == '\n' ? ' ' : text[i];
    memcpy(line + 1 + n, "\r\n", 2);
    return srv_reply(s, c, line, n + 3);
}

static int reply_errorf(srv *s, srv_conn *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int reply_errorf(srv *s, srv_conn *c, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0) return BP_ENOMEM;
    return reply_error(s, c, text, (size_t)n < sizeof text ? (size_t)n : sizeof text - 1);
}

/* ---------------------------------------------------------------------------------------
 * Commands
 * ------------------------------------------------------------------------------------- */

typedef int (*command_fn)(resp *r, srv_conn *c, bp_buf *buf, size_t at);

static int cmd_ping(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    if (r->argc == 2) return reply_bulk(r->s, c, r->argv[1].p, r->argv[1].n);
    return reply_str(r->s, c, "+PONG\r\n");
}

static int cmd_echo(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    return reply_bulk(r->s, c, r->argv[1].p, r->argv[1].n);
}

/* The value's bulk reply as a buffer of its own: a retained slice of the request's bytes
 * when they are that encoding and long, else a copy. */
static bp_buf *encoded_value(resp *r, const arg *v, bp_buf *buf, size_t at)
{
    char line[32], *end = line + sizeof line;
    *--end = '\n';
    *--end = '\r';
    char *start = decimal(end, (long long)v->n);
    *--start = '$';
    size_t hn = (size_t)(line + sizeof line - start), total = hn + v->n + 2;
    if (r->multibulk && total >= SLICE_LIMIT) return bp_retained_slice(buf, at + v->at, total, NULL);
    bp_buf *b = bp_alloc(srv_allocator(r->s), total);
    if (b == NULL) return NULL;
    if (bp_write_bytes(b, start, hn) != 0 || bp_write_bytes(b, v->p, v->n) != 0 || bp_write_bytes(b, "\r\n", 2) != 0) {
        bp_release(b);
        return NULL;
    }
    return b;
}

static bp_buf *key_buffer(resp *r, const arg *k)
{
    bp_buf *b = bp_alloc(srv_allocator(r->s), k->n);
    if (b != NULL && bp_write_bytes(b, k->p, k->n) != 0) {
        bp_release(b);
        b = NULL;
    }
    return b;
}

static int cmd_set(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    if (r->argc != 3) return reply_str(r->s, c, "-ERR syntax error\r\n");
    const arg *k = &r->argv[1];
    bp_buf *value = encoded_value(r, &r->argv[2], buf, at);
    if (value == NULL) return BP_ENOMEM;
    if (r->table == NULL || (r->used + 1) * 4 > (r->mask + 1) * 3) {
        if (grow_table(r) != 0) {
            bp_release(value);
            return BP_ENOMEM;
        }
    }
    uint64_t h = hash_bytes(k->p, k->n);
    entry *e = slot_of(r, k->p, k->n, h);
    if (e->key == NULL) {
        e->key = key_buffer(r, k);
        if (e->key == NULL) {
            bp_release(value);
            return BP_ENOMEM;
        }
        e->hash = h;
        r->used++;
    } else {
        bp_release(e->value);
    }
    e->value = value;
    return reply_str(r->s, c, "+OK\r\n");
}

static int cmd_get(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    entry *e = lookup(r, &r->argv[1]);
    if (e == NULL) return reply_str(r->s, c, "$-1\r\n");
    size_t n = bp_readable_bytes(e->value);
    if (n <= COPY_LIMIT) return srv_reply(r->s, c, bp_data(e->value, bp_reader_index(e->value)), n);
    int err;
    bp_buf *dup = bp_retained_duplicate(e->value, &err);
    return dup != NULL ? srv_send(r->s, c, dup) : err;
}

static int cmd_del(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    long long removed = 0;
    for (size_t i = 1; i < r->argc; i++) {
        entry *e = lookup(r, &r->argv[i]);
        if (e != NULL) {
            remove_slot(r, e);
            removed++;
        }
    }
    return reply_number(r->s, c, ':', removed);
}

static int cmd_exists(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    long long found = 0;
    for (size_t i = 1; i < r->argc; i++) found += lookup(r, &r->argv[i]) != NULL;
    return reply_number(r->s, c, ':', found);
}

static int cmd_dbsize(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    return reply_number(r->s, c, ':', (long long)r->used);
}

/* CONFIG GET answers for the settings redis-benchmark asks about: no persistence. */
static const char *const config_values[][2] = {{"save", ""}, {"appendonly", "no"}};

static int cmd_config(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    const arg *sub = &r->argv[1];
    if (sub->n != 3 || strncasecmp((const char *)sub->p, "get", 3) != 0)
        return reply_errorf(r->s, c, "ERR unknown subcommand '%.*s'. Try CONFIG HELP.", (int)(sub->n < 128 ? sub->n : 128),
                            (const char *)sub->p);
    if (r->argc < 3) return reply_str(r->s, c, "-ERR wrong number of arguments for 'config|get' command\r\n");
    const size_t count = sizeof config_values / sizeof config_values[0];
    bool match[sizeof config_values / sizeof config_values[0]] = {false};
    long long pairs = 0;
    for (size_t i = 2; i < r->argc; i++) {
        char pattern[256];
        size_t n = r->argv[i].n < sizeof pattern - 1 ? r->argv[i].n : sizeof pattern - 1;
        memcpy(pattern, r->argv[i].p, n);
        pattern[n] = '\0';
        for (size_t k = 0; k < count; k++) {
            if (!match[k] && fnmatch(pattern, config_values[k][0], FNM_CASEFOLD) == 0) {
                match[k] = true;
                pairs++;
            }
        }
    }
    int rc = reply_number(r->s, c, '*', 2 * pairs);
    for (size_t k = 0; k < count && rc == 0; k++) {
        if (!match[k]) continue;
        rc = reply_bulk(r->s, c, config_values[k][0], strlen(config_values[k][0]));
        if (rc == 0) rc = reply_bulk(r->s, c, config_values[k][1], strlen(config_values[k][1]));
    }
    return rc;
}

static int cmd_info(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    srv_counters k = srv_get_counters(r->s);
    bp_allocator_stats st;
    bp_allocator_get_stats(srv_allocator(r->s), &st, sizeof st);
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "# bytepool-resp\r\n"
                     "connected_clients:%llu\r\n"
                     "total_connections_received:%llu\r\n"
                     "clients_paused_for_backpressure:%llu\r\n"
                     "backpressure_pauses:%llu\r\n"
                     "keys:%zu\r\n"
                     "active_buffers:%llu\r\n"
                     "active_bytes:%zu\r\n"
                     "mapped_bytes:%zu\r\n",
                     (unsigned long long)k.connections, (unsigned long long)k.accepted, (unsigned long long)k.paused,
                     (unsigned long long)k.pauses, r->used, (unsigned long long)st.active_buffers, st.active_bytes,
                     st.mapped_bytes);
    return reply_bulk(r->s, c, text, (size_t)n);
}

static int cmd_quit(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    (void)buf, (void)at;
    srv_close_after(c);
    return reply_str(r->s, c, "+OK\r\n");
}

typedef struct command {
    const char *name;
    int arity; /* Redis's: n exactly, -n at least n (the name counts) */
    command_fn fn;
} command;

static const command commands[] = {
    {"get", 2, cmd_get},       {"set", -3, cmd_set},   {"ping", -1, cmd_ping},   {"echo", 2, cmd_echo},
    {"del", -2, cmd_del},      {"exists", -2, cmd_exists}, {"dbsize", 1, cmd_dbsize}, {"config", -2, cmd_config},
    {"info", -1, cmd_info},    {"quit", -1, cmd_quit},
};

static const command *find_command(const arg *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        const command *cmd = &commands[i];
        if (strlen(cmd->name) == name->n && strncasecmp(cmd->name, (const char *)name->p, name->n) == 0) return cmd;
    }
    return NULL;
}

/* Redis's reply to an unknown command, the same words. */
static int reply_unknown(resp *r, srv_conn *c)
{
    char args[256];
    size_t used = 0;
    for (size_t i = 1; i < r->argc && used < 128; i++) {
        int n = snprintf(args + used, sizeof args - used, "'%.*s' ",
                         (int)(r->argv[i].n < 128 - used ? r->argv[i].n : 128 - used), (const char *)r->argv[i].p);
        if (n < 0) break;
        used += (size_t)n < sizeof args - used ? (size_t)n : sizeof args - used - 1;
    }
    args[used] = '\0';
    const arg *name = &r->argv[0];
    return reply_errorf(r->s, c, "ERR unknown command '%.*s', with args beginning with: %s",
                        (int)(name->n < 128 ? name->n : 128), (const char *)name->p, args);
}

static int execute(resp *r, srv_conn *c, bp_buf *buf, size_t at)
{
    const command *cmd = find_command(&r->argv[0]);
    if (cmd == NULL) return reply_unknown(r, c);
    if ((cmd->arity > 0 && r->argc != (size_t)cmd->arity) || (cmd->arity < 0 && r->argc < (size_t)-cmd->arity) ||
        (cmd->fn == cmd_ping && r->argc > 2) || (cmd->fn == cmd_quit && r->argc > 1))
        return reply_errorf(r->s, c, "ERR wrong number of arguments for '%s' command", cmd->name);
    return cmd->fn(r, c, buf, at);
}

/* ---------------------------------------------------------------------------------------
 * Parsing (in place: the arguments point into the input's unread bytes)
 * ------------------------------------------------------------------------------------- */

enum { NEED_MORE = 0, BAD = -1 };

static int push_arg(resp *r, const uint8_t *p, size_t n, size_t at)
{
    if (r->argc == r->argv_room) {
        size_t room = r->argv_room < 16 ? 16 : r->argv_room * 2;
        arg *argv = realloc(r->argv, room * sizeof *argv);
        if (argv == NULL) return BP_ENOMEM;
        r->argv = argv;
        r->argv_room = room;
    }
    r->argv[r->argc++] = (arg){p, n, at};
    return 0;
}

/* A line "<type><integer>\r\n" at p[pos]: the integer canonical (Redis's string2ll: no
 * sign but '-', no leading zero), at most 20 characters. Returns the position after the
 * line, 0 when the line is not complete, or BAD. */
static size_t read_number(const uint8_t *p, size_t n, size_t pos, long long *value)
{
    size_t limit = n - pos < 24 ? n : pos + 24;
    const uint8_t *cr = memchr(p + pos + 1, '\r', limit - pos - 1);
    if (cr == NULL) return limit == n ? NEED_MORE : (size_t)BAD;
    size_t end = (size_t)(cr - p);
    if (end + 1 >= n) return NEED_MORE;
    if (p[end + 1] != '\n') return (size_t)BAD;
    size_t i = pos + 1;
    bool negative = i < end && p[i] == '-';
    if (negative) i++;
    if (i == end || end - i > 18 || (p[i] == '0' && (end - i > 1 || negative))) return (size_t)BAD;
    long long v = 0;
    for (; i < end; i++) {
        if (p[i] < '0' || p[i] > '9') return (size_t)BAD;
        v = v * 10 + (p[i] - '0');
    }
    *value = negative ? -v : v;
    return end + 2;
}

/* A multibulk request at p[0] ('*'). Returns its length, NEED_MORE, or BAD with r->error. */
static long parse_multibulk(resp *r, const uint8_t *p, size_t n, size_t max)
{
    long long count;
    size_t pos = read_number(p, n, 0, &count);
    if (pos == (size_t)BAD) {
        r->error = "Protocol error: invalid multibulk length";
        return BAD;
    }
    if (pos == NEED_MORE) return NEED_MORE;
    if (count > MAX_ARGS) {
        r->error = "Protocol error: invalid multibulk length";
        return BAD;
    }
    for (long long i = 0; i < count; i++) {
        if (pos >= n) return NEED_MORE;
        if (p[pos] != '$') {
            static char text[64];
            char got = p[pos] >= 32 && p[pos] < 127 ? (char)p[pos] : ' ';
            snprintf(text, sizeof text, "Protocol error: expected '$', got '%c'", got);
            r->error = text;
            return BAD;
        }
        long long len = 0;
        size_t data = read_number(p, n, pos, &len);
        if (data == NEED_MORE) return NEED_MORE;
        if (data == (size_t)BAD || len < 0 || (size_t)len > max) {
            r->error = "Protocol error: invalid bulk length";
            return BAD;
        }
        if (data + (size_t)len + 2 > max) {
            r->error = "Protocol error: request too large";
            return BAD;
        }
        if (n - data < (size_t)len + 2) return NEED_MORE;
        if (p[data + (size_t)len] != '\r' || p[data + (size_t)len + 1] != '\n') {
            r->error = "Protocol error: bulk not followed by CRLF";
            return BAD;
        }
        if (push_arg(r, p + data, (size_t)len, pos) != 0) {
            r->error = "out of memory";
            return BAD;
        }
        pos = data + (size_t)len + 2;
    }
    return (long)pos;
}

static bool is_space(uint8_t c) { return c == ' ' || (c >= '\t' && c <= '\r'); } /* C's isspace */

static int hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The escape "\c" inside double quotes (sdssplitargs'): \n \r \t \b \a, else c itself. */
static uint8_t escaped(uint8_t c)
{
    switch (c) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'b': return '\b';
    case 'a': return '\a';
    default: return c;
    }
}

/* One argument of an inline line p[*i .. end) that holds a quote, decoded into `out`:
 * Redis's sdssplitargs token, unquoted bytes and "double" or 'single' quoted parts. Moves
 * *i past it; returns its length, or -1 for unbalanced quotes (a quote not closed, or not
 * followed by a blank or the end). */
static long unquote(const uint8_t *p, size_t *i, size_t end, uint8_t *out)
{
    size_t at = *i, n = 0;
    int quote = 0; /* '"' or '\'' while inside one */
    for (;;) {
        if (at == end) {
            if (quote != 0) return -1;
            break;
        }
        uint8_t c = p[at];
        if (quote == '"' && c == '\\' && end - at >= 4 && p[at + 1] == 'x' && hex_value(p[at + 2]) >= 0 &&
            hex_value(p[at + 3]) >= 0) {
            out[n++] = (uint8_t)(hex_value(p[at + 2]) * 16 + hex_value(p[at + 3]));
            at += 4;
        } else if (quote == '"' && c == '\\' && end - at >= 2) {
            out[n++] = escaped(p[at + 1]);
            at += 2;
        } else if (quote == '\'' && c == '\\' && end - at >= 2 && p[at + 1] == '\'') {
            out[n++] = '\'';
            at += 2;
        } else if (quote != 0 && c == quote) {
            if (at + 1 < end && !is_space(p[at + 1])) return -1;
            at++;
            break;
        } else if (quote == 0 && (c == ' ' || c == '\n' || c == '\r' || c == '\t')) {
            break;
        } else if (quote == 0 && (c == '"' || c == '\'')) {
            quote = c;
            at++;
        } else {
            out[n++] = c;
            at++;
        }
    }
    *i = at;
    return (long)n;
}

/* Splits an inline line p[0 .. end) as Redis's sdssplitargs does: arguments separated by
 * blanks (C's isspace), "double quoted" (with escapes \n \r \t \b \a \\ \" and \xHH) or
 * 'single quoted' (with \'). A NUL is a byte like any other (Redis finds the line's end
 * with strchr, which stops there, and waits for more). An argument with no quote in it
 * points into the line; quoted ones are decoded into r->unquoted. Returns 0, or BAD with
 * r->error. */
static int split_inline(resp *r, const uint8_t *p, size_t end)
{
    size_t used = 0; /* of r->unquoted */
    for (size_t i = 0;;) {
        while (i < end && is_space(p[i])) i++;
        if (i == end) return 0;
        size_t start = i;
        while (i < end && p[i] != ' ' && p[i] != '\n' && p[i] != '\r' && p[i] != '\t' && p[i] != '"' &&
               p[i] != '\'')
            i++;
        const uint8_t *bytes = p + start;
        long n = (long)(i - start);
        if (i < end && (p[i] == '"' || p[i] == '\'')) { /* decoded bytes fit in the line's length */
            if (r->unquoted_room < end) {
                free(r->unquoted);
                r->unquoted = malloc(end);
                r->unquoted_room = r->unquoted != NULL ? end : 0;
                if (r->unquoted == NULL) break;
            }
            i = start;
            bytes = r->unquoted + used;
            n = unquote(p, &i, end, r->unquoted + used);
            if (n < 0) {
                r->error = "Protocol error: unbalanced quotes in request";
                return BAD;
            }
            used += (size_t)n;
        }
        if (i < end) i++; /* the blank after it */
        if (push_arg(r, bytes, (size_t)n, 0) != 0) break;
    }
    r->error = "out of memory";
    return BAD;
}

/* An inline request: a line ending in "\n" or "\r\n", split as Redis splits it. */
static long parse_inline(resp *r, const uint8_t *p, size_t n)
{
    size_t limit = n < MAX_INLINE ? n : MAX_INLINE;
    const uint8_t *nl = memchr(p, '\n', limit);
    if (nl == NULL) {
        if (n < MAX_INLINE) return NEED_MORE;
        r->error = "Protocol error: too big inline request";
        return BAD;
    }
    size_t end = (size_t)(nl - p), line_end = end > 0 && p[end - 1] == '\r' ? end - 1 : end;
    if (split_inline(r, p, line_end) != 0) return BAD;
    return (long)end + 1;
}

static long on_request(void *ctx, srv *s, srv_conn *c, bp_buf *buf, size_t at, const uint8_t *p, size_t n)
{
    resp *r = ctx;
    r->argc = 0;
    r->multibulk = p[0] == '*';
    long used = r->multibulk ? parse_multibulk(r, p, n, srv_opts(s)->max_request) : parse_inline(r, p, n);
    if (used == BAD) {
        reply_errorf(s, c, "ERR %s", r->error);
        return SRV_CLOSE;
    }
    if (used == NEED_MORE) {
        if (n > srv_opts(s)->max_request) { /* an inline request still without its end */
            reply_errorf(s, c, "ERR Protocol error: request too large");
            return SRV_CLOSE;
        }
        return 0;
    }
    if (r->argc == 0) return used; /* "*0", "*-1" or an empty line: nothing to do */
    return execute(r, c, buf, at) == 0 ? used : SRV_CLOSE;
}

/* ---------------------------------------------------------------------------------------
 * Main
 * ------------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    srv_options o = {.address = "127.0.0.1", .port = DEFAULT_PORT, .max_request = DEFAULT_MAX_REQUEST,
                     .high_water = (size_t)1 << 20, .low_water = (size_t)256 << 10,
                     .max_read = (size_t)256 << 10, .spin_us = 20};
    int rc = srv_parse_options(argc, argv, &o, NAME);
    if (rc != 0) return rc > 0 ? 0 : 2;
    static const srv_protocol proto = {NAME, on_request};
    resp r = {0};
    r.s = srv_new(&o, &proto, &r);
    if (r.s == NULL) return 1;
    rc = srv_run(r.s);
    free_keyspace(&r);
    free(r.argv);
    free(r.unquoted);
    int status = srv_finish(r.s);
    return rc != 0 ? 1 : status;
}
