/* SPDX-License-Identifier: MIT */
/*
 * Model-checking fuzzer of the server layer: bp_input, bp_frame_decoder and bp_output,
 * through the public header only. A seeded generator drives "connections" (sessions of 300
 * to 3300 steps), each with
 * - a decoder: raw input (bp_input_take / _take_copy / _skip), length field (widths 1, 2,
 *   3, 4, 8, both byte orders, offset 0-4, adjustment 0 / -header / -8..8 / near INT64_MAX
 *   or INT64_MIN, strip 0 / header / random, fail_fast on and off), line, delimiter (ten
 *   sets, overlapping ones and an embedded NUL among them) or fixed length, with a
 *   max_frame_length of 1 to 9000 - the kind, width and set in turn, the rest at random;
 * - an input config (NULL, the defaults, max_buffered from tiny to 20 KiB past what the
 *   longest frame needs, read sizes from 1 to 70000) and an output config (water marks
 *   0-300).
 * A stream of valid, overlong, malformed and junk frames goes into the input through a
 * non-blocking pipe (bp_input_read_fd) and as buffers of every kind (bp_input_add: plain
 * ones of the input's allocator or another, slices, retained slices with their parent kept
 * or released, wrapped malloc'ed memory, duplicates, retained duplicates, read retained
 * slices, composites of several parts - some empty, some nested behind a read prefix -,
 * empty buffers, the program's own frames echoed back, bursts of large adds that make the
 * input link 64 and more components).
 *
 * After every call the results are compared with a reference decoder written from
 * bytepool.h (Netty's codec semantics): return codes, each frame's bytes, length, count
 * and indices, bp_input_readable, bp_input_peek's bytes, bp_input_copied_bytes' bounds,
 * BP_EFULL, the adaptive read size (exact when the input is empty), bp_input_take_copy's
 * allocator, and the misuse handler: called for BP_EINVAL, BP_EFREED and BP_ERANGE, never
 * for BP_EFULL, BP_ETOOLONG, BP_ECORRUPT or a valid call. Frames, retained slices of
 * bp_input_peek and buffers given to the input are kept across many steps and connections
 * and re-checked (the input never writes a buffer it was given; bytes a live frame shows
 * never move); about half of them are released on a worker thread, which checks them
 * first. The output queues frames and fresh buffers (bp_output_add, _add_notify, empty
 * markers), flushes them to a socketpair with 4 KiB buffers and compares what the peer
 * reads; pending, count, writability and the callbacks (order, `completed`) follow a
 * model; a closed peer is BP_EIO/EPIPE. Bad calls: NULL everywhere, released buffers,
 * broken views and composites (refused by the input and the output with BP_EFREED, the
 * reference left to the caller), takes and skips past the end, read_fd(-1), invalid and
 * boundary configs. Each seed ends with no buffer or view active in either allocator and
 * every bp_wrap free function called exactly once.
 *
 * Usage: fuzz_server              replays a fixed set of seeds (see choose_plan: smaller
 *                                 under sanitizers, Valgrind and BP_TEST_SCALE=tsan) and
 *                                 fails if they no longer reach every case
 *        fuzz_server SEED STEPS   runs one seed
 * FUZZ_STATS=1 prints the coverage counters. A failure prints FAIL with the seed, the step
 * and the last operations, and aborts. A seed gives the same operations whichever compiler
 * built the program. Needs _GNU_SOURCE (pipe2, SOCK_NONBLOCK), which the build defines.
 */
#include <bytepool.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test_tools.h"

/* ------------------------------------------------------------------ random numbers, log */

static uint64_t seed, rng_state;
static long step, steps_of_run; /* the step running, of how many */

/* splitmix64. Never two calls of rnd, rn or pct in one expression's operands or a call's
 * arguments (their order is unspecified): a seed must give one run whatever the compiler. */
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* rn: uniform in [0, n) (0 for n == 0); pct: true p% of the time. */
static size_t rn(size_t n) { return n ? (size_t)(rnd() % n) : 0; }
static bool pct(int p) { return (int)rn(100) < p; }

/* The last operations, printed with a failure. */
#define OP_LOG_SIZE 64
static char op_log[OP_LOG_SIZE][200];
static int n_ops_logged;

static void log_op(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_op(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op_log[n_ops_logged++ % OP_LOG_SIZE], sizeof op_log[0], fmt, ap);
    va_end(ap);
}

static void print_op_log(void)
{
    int start = n_ops_logged > OP_LOG_SIZE ? n_ops_logged - OP_LOG_SIZE : 0;
    for (int i = start; i < n_ops_logged; i++) fprintf(stderr, "  [%d] %s\n", i, op_log[i % OP_LOG_SIZE]);
}

/* Prints the failure with the seed, the step and the last operations, and aborts (also
 * from the worker thread). */
#define FAIL(...)                                                                          \
    do {                                                                                   \
        fprintf(stderr, "fuzz_server: FAIL seed %" PRIu64 " step %ld (line %d): ", seed,   \
                step, __LINE__);                                                           \
        fprintf(stderr, __VA_ARGS__);                                                      \
        fprintf(stderr, "\nrecent operations:\n");                                         \
        print_op_log();                                                                    \
        fprintf(stderr, "rerun: fuzz_server %" PRIu64 " %ld\n", seed, steps_of_run);       \
        fflush(stderr);                                                                    \
        abort();                                                                           \
    } while (0)

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) FAIL(__VA_ARGS__);                                                    \
    } while (0)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    CHECK(p != NULL, "out of memory (%zu bytes)", n);
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    CHECK(p != NULL, "out of memory (%zu bytes)", n);
    return p;
}

/* ------------------------------------------------------------------ byte queue */

/* The model's bytes: unread in the input, in the pipe, generated, queued for output. */
typedef struct byteq {
    uint8_t *data;
    size_t start, end, cap; /* the bytes are data[start, end) */
} byteq;

static size_t byteq_len(const byteq *q) { return q->end - q->start; }

static uint8_t *byteq_ptr(byteq *q)
{
    static uint8_t none[1]; /* not NULL + 0 while nothing was ever pushed */
    return q->data != NULL ? q->data + q->start : none;
}

static void byteq_push(byteq *q, const void *p, size_t n)
{
    if (n == 0) return;
    if (q->end + n > q->cap) {
        if (q->start > 0) {
            memmove(q->data, q->data + q->start, q->end - q->start);
            q->end -= q->start;
            q->start = 0;
        }
        if (q->end + n > q->cap) {
            q->cap = (q->end + n) * 2 + 64;
            q->data = xrealloc(q->data, q->cap);
        }
    }
    memcpy(q->data + q->end, p, n);
    q->end += n;
}

static void byteq_pop(byteq *q, size_t n)
{
    CHECK(n <= byteq_len(q), "model: pop of %zu from a queue of %zu", n, byteq_len(q));
    q->start += n;
    if (q->start == q->end) q->start = q->end = 0;
}

static void byteq_clear(byteq *q) { q->start = q->end = 0; }

static void byteq_free(byteq *q)
{
    free(q->data);
    memset(q, 0, sizeof *q);
}

/* ------------------------------------------------------------------ globals */

/* Misuse reports (the handler may run on the worker thread). A check takes the count
 * before a call and compares after it. */
static _Atomic long misuse_count;

static void count_misuse(int err, const char *func, const char *message, void *user_data)
{
    (void)err;
    (void)func;
    (void)message;
    (void)user_data;
    misuse_count++;
}

static bp_allocator *in_alloc;    /* the inputs' allocator */
static bp_allocator *other_alloc; /* foreign buffers given to the input and output */
static _Atomic long wraps_made, wraps_freed;

static void wrap_free(void *mem, void *user_data)
{
    (void)user_data;
    free(mem);
    wraps_freed++;
}

/* Decoder kinds: RAW (the input used directly) or a bp_frame_type. */
enum { RAW = 0, N_DECODER_KINDS = 5 };

/* Kinds of buffers made for bp_input_add and bp_output_add (make_buffer), and frames of
 * our own echoed back into the input. */
enum buf_kind {
    KIND_PLAIN,           /* of the input's allocator */
    KIND_PLAIN_OTHER,     /* of the other allocator */
    KIND_SLICE,           /* a plain slice, sharing its original's count */
    KIND_RETAINED_SLICE,  /* its parent released at once or kept (and checked) */
    KIND_WRAPPED,         /* bp_wrap of malloc'ed memory */
    KIND_DUPLICATE,       /* a plain duplicate */
    KIND_RETAINED_DUP,    /* a retained duplicate or a read retained slice, parent released */
    KIND_COMPOSITE,       /* parts of the kinds above, perhaps behind a read prefix */
    KIND_ECHOED_FRAME,    /* a frame the input gave us */
    N_KINDS
};

enum { N_BAD_CALLS = 14 }; /* the cases of do_bad */

/* What the replay reached (FUZZ_STATS=1 prints it; the default run requires each). */
static struct coverage {
    long sessions[N_DECODER_KINDS];
    long field_widths[9], delimiter_sets[10]; /* sessions by length field width, delimiter set */
    long frames[N_DECODER_KINDS]; /* RAW: takes */
    long toolong[N_DECODER_KINDS], corrupt[N_DECODER_KINDS];
    long adds[N_KINDS];
    long bad_calls[N_BAD_CALLS];
    long efull_reads, efull_adds, composite_frames, resets, flushed_bytes, epipe_flushes, broken_refused;
} cov;

/* ------------------------------------------------------------------ kept buffers */

/* Checks that b still shows `len` bytes equal to `expected` from index `index`; with
 * fixed_indices also that its reader index is `index` and its readable bytes `len`
 * (frames: nothing but their holder moves them). */
static void verify_bytes(bp_buf *b, const uint8_t *expected, size_t index, size_t len, bool fixed_indices,
                         const char *who)
{
    if (fixed_indices && (bp_readable_bytes(b) != len || bp_reader_index(b) != index))
        FAIL("%s: kept buffer %p: %zu readable from %zu, expected %zu from %zu", who, (void *)b, bp_readable_bytes(b),
             bp_reader_index(b), len, index);
    uint8_t *got = xmalloc(len);
    int rc = bp_get_bytes(b, index, got, len);
    if (rc != 0) FAIL("%s: bp_get_bytes of kept buffer %p: %s", who, (void *)b, bp_err_name(rc));
    if (memcmp(got, expected, len) != 0) {
        size_t i = 0;
        while (got[i] == expected[i]) i++;
        FAIL("%s: kept buffer %p (%zu bytes) changed at byte %zu: 0x%02x, expected 0x%02x", who, (void *)b, len, i,
             got[i], expected[i]);
    }
    free(got);
}

/* A buffer we hold a reference to, with the bytes it must keep showing. */
typedef struct kept_buf {
    bp_buf *b;
    uint8_t *expected;
    size_t index, len;
    bool fixed_indices;
    /* The input or output holds this very bp_buf too (a reference of its own). "A single
     * bp_buf is not synchronised: one thread at a time may read or change its indices and
     * contents" - so it is checked here, and only released on the worker (bp_release may
     * be called from any thread, each for a reference it holds). */
    bool shared;
} kept_buf;

/* The worker thread: checks each buffer handed to it (unless shared), then releases it
 * there. */
typedef struct release_job {
    kept_buf k;
    struct release_job *next;
} release_job;

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;
static release_job *jobs_head, *jobs_tail;
static bool jobs_stop;
static _Atomic long jobs_done;

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&jobs_lock);
        while (jobs_head == NULL && !jobs_stop) pthread_cond_wait(&jobs_cond, &jobs_lock);
        release_job *job = jobs_head;
        if (job != NULL) {
            jobs_head = job->next;
            if (jobs_head == NULL) jobs_tail = NULL;
        }
        pthread_mutex_unlock(&jobs_lock);
        if (job == NULL) return NULL;
        if (!job->k.shared)
            verify_bytes(job->k.b, job->k.expected, job->k.index, job->k.len, job->k.fixed_indices, "worker");
        int rc = bp_release(job->k.b);
        if (rc < 0) FAIL("worker: release of kept buffer %p: %s", (void *)job->k.b, bp_err_name(rc));
        free(job->k.expected);
        free(job);
        jobs_done++;
    }
}

static void release_on_worker(kept_buf k)
{
    release_job *job = xmalloc(sizeof *job);
    *job = (release_job){k, NULL};
    pthread_mutex_lock(&jobs_lock);
    if (jobs_tail != NULL) jobs_tail->next = job;
    else jobs_head = job;
    jobs_tail = job;
    pthread_cond_signal(&jobs_cond);
    pthread_mutex_unlock(&jobs_lock);
}

static kept_buf *kept;
static size_t n_kept, cap_kept;

/* Keeps b (our reference) with a copy of the len bytes it shows from `index` (not shared
 * yet). */
static void keep(bp_buf *b, const uint8_t *bytes, size_t index, size_t len, bool fixed_indices)
{
    if (n_kept == cap_kept) {
        cap_kept = cap_kept * 2 + 64;
        kept = xrealloc(kept, cap_kept * sizeof *kept);
    }
    uint8_t *expected = xmalloc(len);
    memcpy(expected, bytes, len);
    kept[n_kept++] = (kept_buf){b, expected, index, len, fixed_indices, false};
}

static void verify_kept(void)
{
    for (size_t i = 0; i < n_kept; i++)
        verify_bytes(kept[i].b, kept[i].expected, kept[i].index, kept[i].len, kept[i].fixed_indices, "main");
}

/* Checks and releases kept buffer i, here or on the worker thread. */
static void drop_kept(size_t i, bool on_worker)
{
    kept_buf k = kept[i];
    kept[i] = kept[--n_kept];
    if (k.shared || !on_worker) verify_bytes(k.b, k.expected, k.index, k.len, k.fixed_indices, "main");
    if (on_worker) {
        release_on_worker(k);
        return;
    }
    long m0 = misuse_count;
    int rc = bp_release(k.b);
    CHECK(rc >= 0 && misuse_count == m0, "release of kept buffer: %s", bp_err_name(rc));
    free(k.expected);
}

static void drop_random_kept(void)
{
    size_t i = rn(n_kept);
    bool on_worker = pct(50);
    drop_kept(i, on_worker);
}

/* ------------------------------------------------------------------ reference decoder */

typedef struct model_decoder {
    bp_frame_config c;
    uint8_t delimiter_bytes[4][8];
    bp_delimiter delimiters[4];
    size_t longest;      /* the longest delimiter */
    bool discarding;     /* skipping a frame too long */
    uint64_t to_discard; /* length field: its bytes not arrived yet */
} model_decoder;

static uint64_t read_field(const uint8_t *p, unsigned width, bool little_endian)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < width; i++) v = (v << 8) | p[little_endian ? width - 1 - i : i];
    return v;
}

static void write_field(uint8_t *p, unsigned width, bool little_endian, uint64_t v)
{
    for (unsigned i = 0; i < width; i++) p[little_endian ? i : width - 1 - i] = (uint8_t)(v >> (8 * i));
}

/* A frame of the unread bytes q: a copy in *frame (the caller frees it). */
static int model_frame(byteq *q, size_t skip, size_t len, size_t consumed, uint8_t **frame, size_t *frame_len)
{
    *frame_len = len;
    *frame = xmalloc(len);
    memcpy(*frame, byteq_ptr(q) + skip, len);
    byteq_pop(q, consumed);
    return 1;
}

/* The length field decoder (Netty's LengthFieldBasedFrameDecoder) on the unread bytes q. */
static int model_length_field(model_decoder *m, byteq *q, uint8_t **frame, size_t *frame_len)
{
    const bp_frame_config *c = &m->c;
    size_t u = byteq_len(q);
    if (m->discarding) { /* the rest of a frame too long, as it arrives */
        uint64_t n = m->to_discard < u ? m->to_discard : u;
        byteq_pop(q, (size_t)n);
        m->to_discard -= n;
        if (m->to_discard > 0) return 0;
        m->discarding = false;
        if (!c->fail_fast) return BP_ETOOLONG; /* reported once skipped */
        u = byteq_len(q);
    }
    size_t header = c->length_field_offset + c->length_field_length;
    if (u < header) return 0;
    uint64_t value = read_field(byteq_ptr(q) + c->length_field_offset, c->length_field_length, c->little_endian);
    /* The frame is value + adjustment + header bytes, computed exactly: malformed when an
     * 8-byte value is negative as Java's long, when the sum passes INT64_MAX or when it is
     * shorter than the header ("BP_ECORRUPT: a length field whose value is negative (8
     * bytes), overflows, or gives a frame shorter than the header"). value and header are
     * >= 0, so either addition overflowing means the sum passes INT64_MAX. */
    int64_t sum = 0;
    bool overflow = value > (uint64_t)INT64_MAX || __builtin_add_overflow((int64_t)value, c->length_adjustment, &sum) ||
                    __builtin_add_overflow(sum, (int64_t)header, &sum);
    if (overflow || sum < (int64_t)header) { /* the header is skipped */
        byteq_pop(q, header);
        return BP_ECORRUPT;
    }
    uint64_t len = (uint64_t)sum;
    if (len > c->max_frame_length) {
        if (len <= u) { /* found whole: reported at once either way */
            byteq_pop(q, (size_t)len);
            return BP_ETOOLONG;
        }
        m->discarding = true;
        m->to_discard = len - u;
        byteq_pop(q, u);
        return c->fail_fast ? BP_ETOOLONG : 0;
    }
    if (u < len) return 0;
    if (c->initial_bytes_to_strip > len) { /* shorter than what is stripped */
        byteq_pop(q, (size_t)len);
        return BP_ECORRUPT;
    }
    return model_frame(q, c->initial_bytes_to_strip, (size_t)len - c->initial_bytes_to_strip, (size_t)len, frame,
                       frame_len);
}

/* The line decoder (Netty's LineBasedFrameDecoder). */
static int model_line(model_decoder *m, byteq *q, uint8_t **frame, size_t *frame_len)
{
    const bp_frame_config *c = &m->c;
    size_t u = byteq_len(q);
    const uint8_t *p = byteq_ptr(q);
    if (u == 0) return 0;
    const uint8_t *eol = memchr(p, '\n', u);
    size_t len = 0, delimiter = 0;
    if (eol != NULL) {
        len = (size_t)(eol - p);
        delimiter = 1;
        if (len > 0 && p[len - 1] == '\r') {
            len--;
            delimiter = 2;
        }
    }
    if (m->discarding) {
        if (eol == NULL) {
            byteq_pop(q, u);
            return 0;
        }
        byteq_pop(q, len + delimiter);
        m->discarding = false;
        return c->fail_fast ? 0 : BP_ETOOLONG; /* fail_fast reported it when it began */
    }
    if (eol != NULL) {
        if (len > c->max_frame_length) {
            byteq_pop(q, len + delimiter);
            return BP_ETOOLONG;
        }
        return model_frame(q, 0, c->strip_delimiter ? len : len + delimiter, len + delimiter, frame, frame_len);
    }
    /* "A line or delimited frame is too long once its bytes alone pass the maximum: last
     * bytes that may start its delimiter do not count" - a last '\r'. */
    size_t alone = u - (p[u - 1] == '\r');
    if (alone > c->max_frame_length) {
        byteq_pop(q, u);
        m->discarding = true;
        return c->fail_fast ? BP_ETOOLONG : 0;
    }
    return 0;
}

/* The delimiter decoder (Netty's DelimiterBasedFrameDecoder): the frame ends at the
 * delimiter found first, on a tie the one listed first. */
static int model_delimiter(model_decoder *m, byteq *q, uint8_t **frame, size_t *frame_len)
{
    const bp_frame_config *c = &m->c;
    size_t u = byteq_len(q);
    const uint8_t *p = byteq_ptr(q);
    if (u == 0) return 0;
    /* Byte by byte rather than memmem per delimiter: the sanitizers' memmem checks all u
     * bytes, which made thousands of small frames cut from one large read quadratic. */
    size_t at = SIZE_MAX, delimiter = 0;
    for (size_t from = 0; from < u && at == SIZE_MAX; from++)
        for (size_t i = 0; i < c->delimiter_count; i++) {
            const uint8_t *d = m->delimiters[i].bytes;
            size_t dlen = m->delimiters[i].length;
            if (p[from] == d[0] && dlen <= u - from && memcmp(p + from, d, dlen) == 0) {
                at = from;
                delimiter = dlen;
                break;
            }
        }
    /* While skipping, the library keeps exactly longest - 1 bytes, whatever they are ("the
     * last bytes that may be the start of a delimiter"); only bp_input_readable shows it. */
    size_t keep_bytes = m->longest - 1;
    if (at != SIZE_MAX) {
        if (m->discarding) {
            byteq_pop(q, at + delimiter);
            m->discarding = false;
            return c->fail_fast ? 0 : BP_ETOOLONG;
        }
        if (at > c->max_frame_length) {
            byteq_pop(q, at + delimiter);
            return BP_ETOOLONG;
        }
        return model_frame(q, 0, c->strip_delimiter ? at : at + delimiter, at + delimiter, frame, frame_len);
    }
    if (!m->discarding) {
        if (u <= c->max_frame_length) return 0;
        /* Not too long yet while the last bytes may start a delimiter that ends an allowed
         * frame. */
        for (size_t i = 0; i < c->delimiter_count; i++) {
            size_t dlen = m->delimiters[i].length;
            for (size_t from = u >= dlen ? u - dlen + 1 : 0; from < u && from <= c->max_frame_length; from++)
                if (memcmp(p + from, m->delimiters[i].bytes, u - from) == 0) return 0;
        }
        m->discarding = true;
        if (u > keep_bytes) byteq_pop(q, u - keep_bytes);
        return c->fail_fast ? BP_ETOOLONG : 0;
    }
    if (u > keep_bytes) byteq_pop(q, u - keep_bytes);
    return 0;
}

static int model_step(model_decoder *m, byteq *q, uint8_t **frame, size_t *frame_len)
{
    switch (m->c.type) {
    case BP_FRAME_LENGTH_FIELD: return model_length_field(m, q, frame, frame_len);
    case BP_FRAME_LINE: return model_line(m, q, frame, frame_len);
    case BP_FRAME_DELIMITER: return model_delimiter(m, q, frame, frame_len);
    case BP_FRAME_FIXED_LENGTH:
        if (byteq_len(q) < m->c.frame_length) return 0;
        return model_frame(q, 0, m->c.frame_length, m->c.frame_length, frame, frame_len);
    }
    FAIL("model: decoder type %d", (int)m->c.type);
}

/* bp_frame_decode: steps until a frame, an error, or no progress (0: more bytes needed). */
static int model_decode(model_decoder *m, byteq *q, uint8_t **frame, size_t *frame_len)
{
    *frame = NULL;
    *frame_len = 0;
    for (;;) {
        size_t before = byteq_len(q);
        bool was_discarding = m->discarding;
        int rc = model_step(m, q, frame, frame_len);
        if (rc != 0 || (byteq_len(q) == before && was_discarding == m->discarding)) return rc;
    }
}

/* ------------------------------------------------------------------ the connection */

/* One session: an input with its decoder and a pipe feeding it, an output with a
 * socketpair it writes to, and the model of each. */
typedef struct connection {
    int kind; /* RAW or a bp_frame_type */
    bp_input_config icfg;
    bool default_icfg; /* bp_input_new got NULL (icfg holds the defaults) */
    bp_input *in;
    bp_frame_decoder *dec;
    model_decoder model;
    byteq unread;  /* model: the input's unread bytes */
    byteq stream;  /* generated bytes not fed yet */
    byteq in_pipe; /* bytes written to the pipe, not read yet */
    int pipe_fd[2];
    bool eof_sent; /* the pipe's write end is closed */
    size_t read_guess;   /* model of the adaptive read size */
    bool read_was_small; /* the last read was at most half the guess */
    uint64_t copied;     /* bp_input_copied_bytes last seen (it never goes down) */
    bp_output *out;
    bp_output_config ocfg;
    int sock[2];      /* the output writes to sock[0]; the peer reads sock[1] */
    byteq out_bytes;  /* model: bytes queued and not written */
    bool writable;    /* model of bp_output_writable */
} connection;

static connection conn;

/* Output model: the queued buffers, in order. */
typedef struct out_entry {
    size_t len;  /* bytes left to write */
    bool notify; /* queued with bp_output_add_notify */
    long id;     /* its user_data */
} out_entry;

static out_entry *outq;
static size_t n_outq, cap_outq;
static long next_entry_id;

/* Completion callbacks as they came, and as the model expects them; both are compared and
 * emptied by check_output. */
#define DONE_LOG_SIZE 4096
static long done_ids[DONE_LOG_SIZE], expected_done_ids[DONE_LOG_SIZE];
static bool done_completed[DONE_LOG_SIZE], expected_done_completed[DONE_LOG_SIZE];
static int n_done, n_expected_done;
static int writability_calls, writability_last = -1;

static void on_done(int completed, void *user_data)
{
    if (n_done < DONE_LOG_SIZE) {
        done_ids[n_done] = (long)(intptr_t)user_data;
        done_completed[n_done] = completed;
    }
    n_done++;
}

static void on_writability(int writable, void *user_data)
{
    (void)user_data;
    writability_calls++;
    writability_last = writable;
}

/* The unread bytes the decoder may need to cut its longest frame: a smaller max_buffered
 * may leave the input full with no frame to cut. */
static size_t needed_room(void)
{
    const bp_frame_config *c = &conn.model.c;
    switch (conn.kind) {
    case BP_FRAME_LENGTH_FIELD: return c->max_frame_length;
    case BP_FRAME_LINE: return c->max_frame_length + 2;
    case BP_FRAME_DELIMITER: return c->max_frame_length + conn.model.longest;
    case BP_FRAME_FIXED_LENGTH: return c->frame_length;
    default: return 1;
    }
}

static bool input_full(void) { return byteq_len(&conn.unread) >= conn.icfg.max_buffered; }

/* ------------------------------------------------------------------ stream generator */

static const uint8_t LINE_ALPHABET[] = {'a', 'b', '\r', ' ', 0xff, 0, '\r', 'z'};

/* A line or delimited frame's length around max: short, just under, just over, far over. */
static size_t pick_len(size_t max)
{
    switch (rn(6)) {
    case 0: return rn(4);
    case 1: return max >= 1 ? max - rn(max < 2 ? max + 1 : 2) : 0;
    case 2: return max + rn(3);
    case 3: return rn(max + 1);
    case 4: return rn(2 * max + 3);
    default: return max + rn(3 * max + 10);
    }
}

static void push_random_bytes(byteq *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t x = (uint8_t)rnd();
        byteq_push(q, &x, 1);
    }
}

/* A length-field frame: 80% valid, 15% too long, 2% shorter than the header or the strip,
 * 2% junk, 1% a field at (or near) its largest value. */
static void gen_length_field_frame(void)
{
    const bp_frame_config *c = &conn.model.c;
    unsigned width = c->length_field_length;
    size_t header = c->length_field_offset + width, max = c->max_frame_length;
    uint64_t field_max = width == 8 ? UINT64_MAX : ((uint64_t)1 << (8 * width)) - 1;
    uint8_t head[64];
    uint64_t value, len; /* the field, the frame's length */
    int r = (int)rn(100);
    if (r < 80) {
        size_t lo = header > c->initial_bytes_to_strip ? header : c->initial_bytes_to_strip;
        if (lo > max) lo = header;
        if (pct(30)) len = lo + (max - lo - rn(max - lo < 3 ? max - lo + 1 : 3));
        else len = lo + rn(max - lo + 1);
    } else if (r < 95) {
        len = (uint64_t)max + 1 + rn(pct(50) ? 3 : 3 * max + 20);
    } else if (r < 97) {
        len = rn(header + c->initial_bytes_to_strip + 1);
    } else if (r < 99) {
        push_random_bytes(&conn.stream, rn(2 * header + 8));
        return;
    } else {
        value = pct(50) ? field_max : field_max - rn(100);
        for (size_t i = 0; i < c->length_field_offset; i++) head[i] = (uint8_t)rnd();
        write_field(head + c->length_field_offset, width, c->little_endian, value);
        byteq_push(&conn.stream, head, header);
        return;
    }
    /* The field for that length: len - header - adjustment, if >= 0 and it fits the field
     * (computed exactly: the adjustment may be near INT64_MIN or INT64_MAX). */
    bool encodable = false;
    if (len >= header) {
        uint64_t body = len - header;
        int64_t adj = c->length_adjustment;
        if (adj >= 0) {
            encodable = body >= (uint64_t)adj;
            value = body - (uint64_t)adj;
        } else {
            uint64_t minus_adj = (uint64_t)(-(adj + 1)) + 1; /* -adj, INT64_MIN included */
            encodable = !__builtin_add_overflow(body, minus_adj, &value);
        }
        encodable = encodable && value <= field_max;
    }
    if (!encodable) { /* a random field, no body */
        value = rnd() & field_max;
        if (pct(80)) value &= 0xff;
        len = header;
    }
    for (size_t i = 0; i < c->length_field_offset; i++) head[i] = (uint8_t)rnd();
    write_field(head + c->length_field_offset, width, c->little_endian, value);
    byteq_push(&conn.stream, head, header);
    push_random_bytes(&conn.stream, (size_t)(len - header));
}

static void gen_frame(void)
{
    const bp_frame_config *c = &conn.model.c;
    byteq *g = &conn.stream;
    switch (conn.kind) {
    case BP_FRAME_LENGTH_FIELD: gen_length_field_frame(); return;
    case BP_FRAME_LINE: {
        size_t n = pick_len(c->max_frame_length);
        for (size_t i = 0; i < n; i++) {
            uint8_t x = pct(90) ? LINE_ALPHABET[rn(sizeof LINE_ALPHABET)] : (uint8_t)rnd();
            if (x == '\n' && pct(50)) x = 'n';
            byteq_push(g, &x, 1);
        }
        if (pct(50)) byteq_push(g, "\r\n", 2);
        else byteq_push(g, "\n", 1);
        return;
    }
    case BP_FRAME_DELIMITER: { /* mostly 'x', some bytes of the delimiters */
        size_t n = pick_len(c->max_frame_length);
        for (size_t i = 0; i < n; i++) {
            uint8_t x = 'x';
            if (!pct(85)) {
                const bp_delimiter *d = &conn.model.delimiters[rn(c->delimiter_count)];
                x = ((const uint8_t *)d->bytes)[rn(d->length)];
            }
            byteq_push(g, &x, 1);
        }
        const bp_delimiter *d = &conn.model.delimiters[rn(c->delimiter_count)];
        byteq_push(g, d->bytes, d->length);
        return;
    }
    case BP_FRAME_FIXED_LENGTH: push_random_bytes(g, c->frame_length * (1 + rn(3))); return;
    default: push_random_bytes(g, 1 + rn(300)); return;
    }
}

static void gen_fill(size_t n)
{
    while (byteq_len(&conn.stream) < n) gen_frame();
}

/* How many bytes the next write to the pipe or add carries. */
static size_t pick_chunk(void)
{
    size_t frame = conn.kind == RAW                     ? 100
                   : conn.kind == BP_FRAME_FIXED_LENGTH ? conn.model.c.frame_length
                                                        : conn.model.c.max_frame_length;
    switch (rn(8)) {
    case 0: return 1;
    case 1: return 1 + rn(8);
    case 2: return 1 + rn(frame + 4);
    case 3: return 1 + rn(3 * frame + 10);
    case 4: return 1 + rn(600);
    case 5: return 3000 + rn(9000);
    case 6: return pct(10) ? 40000 + rn(70000) : 1 + rn(5000);
    default: return 1 + rn(64);
    }
}

/* ------------------------------------------------------------------ input checks */

static void check_input_state(const char *where)
{
    size_t r = bp_input_readable(conn.in);
    CHECK(r == byteq_len(&conn.unread), "%s: bp_input_readable %zu, model %zu", where, r, byteq_len(&conn.unread));
    CHECK(r <= conn.icfg.max_buffered, "%s: %zu unread > max_buffered %zu", where, r, conn.icfg.max_buffered);
    bp_buf *peek = bp_input_peek(conn.in);
    if (r == 0) {
        /* "an idle input holds no buffer" */
        CHECK(peek == NULL, "%s: nothing unread but bp_input_peek gives a buffer (memory held)", where);
    } else {
        CHECK(peek != NULL, "%s: bp_input_peek NULL with %zu unread", where, r);
        CHECK(bp_readable_bytes(peek) == r, "%s: peek shows %zu bytes, %zu unread", where, bp_readable_bytes(peek), r);
    }
    uint64_t copied = bp_input_copied_bytes(conn.in);
    CHECK(copied >= conn.copied, "%s: copied bytes went down %" PRIu64 " -> %" PRIu64, where, conn.copied, copied);
}

static void check_peek_contents(void)
{
    size_t r = byteq_len(&conn.unread);
    if (r == 0) return;
    bp_buf *peek = bp_input_peek(conn.in);
    uint8_t *got = xmalloc(r);
    int rc = bp_get_bytes(peek, bp_reader_index(peek), got, r);
    CHECK(rc == 0, "bp_get_bytes of the peek: %s", bp_err_name(rc));
    const uint8_t *want = byteq_ptr(&conn.unread);
    if (memcmp(got, want, r) != 0) {
        size_t i = 0;
        while (got[i] == want[i]) i++;
        FAIL("unread bytes differ from the model at %zu of %zu: 0x%02x, expected 0x%02x", i, r, got[i], want[i]);
    }
    free(got);
}

/* Keeps a retained slice of some of the peek's bytes: the input must not move them. */
static void keep_slice_of_peek(void)
{
    bp_buf *peek = bp_input_peek(conn.in);
    size_t u = byteq_len(&conn.unread);
    if (peek == NULL || u == 0) return;
    size_t off = rn(u);
    size_t len = rn(u - off + 1);
    int err = 0;
    bp_buf *slice = bp_retained_slice(peek, bp_reader_index(peek) + off, len, &err);
    CHECK(slice != NULL, "retained slice of the peek: %s", bp_err_name(err));
    keep(slice, byteq_ptr(&conn.unread) + off, 0, len, true);
    log_op("keep peek slice off=%zu len=%zu", off, len);
}

/* ------------------------------------------------------------------ feeding the input */

static void do_read_fd(void)
{
    size_t u = byteq_len(&conn.unread), avail = byteq_len(&conn.in_pipe);
    uint64_t copied0 = bp_input_copied_bytes(conn.in);
    long m0 = misuse_count;
    long got = bp_input_read_fd(conn.in, conn.pipe_fd[0]);
    int e = errno;
    log_op("read_fd unread=%zu avail=%zu guess=%zu -> %ld", u, avail, conn.read_guess, got);
    CHECK(misuse_count == m0, "read_fd reported misuse");
    if (u >= conn.icfg.max_buffered) { /* "BP_EFULL when max_buffered bytes are unread (nothing is read)" */
        CHECK(got == BP_EFULL, "read_fd with %zu unread (max_buffered %zu): %ld, expected BP_EFULL", u,
              conn.icfg.max_buffered, got);
        CHECK(bp_input_copied_bytes(conn.in) == copied0, "a BP_EFULL read changed the copied bytes");
        cov.efull_reads++;
        return;
    }
    size_t room = conn.icfg.max_buffered - u;
    if (avail == 0) {
        if (conn.eof_sent) CHECK(got == BP_EOF, "read_fd at end of stream: %ld (errno %d)", got, e);
        else CHECK(got == 0, "read_fd of an empty non-blocking pipe: %ld (errno %d)", got, e);
    } else {
        CHECK(got > 0, "read_fd with %zu bytes in the pipe: %ld (errno %d)", avail, got, e);
        /* A read takes at most the room left under max_buffered, at least the guess (or
         * what there is); into an empty input exactly that. */
        CHECK((size_t)got <= avail && (size_t)got <= room, "read_fd got %ld > %zu in the pipe or %zu of room", got,
              avail, room);
        size_t least = avail < conn.read_guess ? avail : conn.read_guess;
        if (least > room) least = room;
        CHECK((size_t)got >= least, "read_fd got %ld < min(%zu in the pipe, guess %zu, room %zu)", got, avail,
              conn.read_guess, room);
        if (u == 0)
            CHECK((size_t)got == least, "read_fd into an empty input got %ld, expected min(pipe, guess, room) = %zu",
                  got, least);
        byteq_push(&conn.unread, byteq_ptr(&conn.in_pipe), (size_t)got);
        byteq_pop(&conn.in_pipe, (size_t)got);
        /* Netty's AdaptiveRecvByteBufAllocator: a full read grows the guess 4x, two reads
         * in a row of at most half of it halve it, within [min_read, max_read]. */
        size_t n = (size_t)got;
        if (n >= conn.read_guess) {
            conn.read_guess = conn.read_guess * 4 > conn.icfg.max_read ? conn.icfg.max_read : conn.read_guess * 4;
            conn.read_was_small = false;
        } else if (n <= conn.read_guess / 2) {
            if (conn.read_was_small) {
                conn.read_guess = conn.read_guess / 2 < conn.icfg.min_read ? conn.icfg.min_read : conn.read_guess / 2;
                conn.read_was_small = false;
            } else {
                conn.read_was_small = true;
            }
        } else {
            conn.read_was_small = false;
        }
    }
    /* Making room may copy the unread bytes, nothing else. */
    uint64_t copied = bp_input_copied_bytes(conn.in);
    CHECK(copied - copied0 <= u, "read_fd copied %" PRIu64 " bytes with %zu unread", copied - copied0, u);
    conn.copied = copied;
    check_input_state("read_fd");
}

static void feed_pipe(void)
{
    if (conn.eof_sent) return;
    size_t k = pick_chunk();
    if (k > 65536) k = 65536;
    gen_fill(k);
    ssize_t w = write(conn.pipe_fd[1], byteq_ptr(&conn.stream), k);
    if (w < 0) {
        CHECK(errno == EAGAIN, "write to the pipe: errno %d", errno);
        w = 0;
    }
    byteq_push(&conn.in_pipe, byteq_ptr(&conn.stream), (size_t)w);
    byteq_pop(&conn.stream, (size_t)w);
    log_op("pipe write %zd", w);
}

/* A plain buffer of allocator a: pre random bytes, src[0, n), post random bytes. */
static bp_buf *fill_plain(bp_allocator *a, const uint8_t *src, size_t n, size_t pre, size_t post)
{
    bp_buf *b = bp_alloc(a, pre + n + post);
    CHECK(b != NULL, "bp_alloc of %zu bytes failed", pre + n + post);
    for (size_t i = 0; i < pre; i++) CHECK(bp_write_u8(b, (uint8_t)rnd()) == 0, "write_u8");
    CHECK(bp_write_bytes(b, src, n) == 0, "write_bytes");
    for (size_t i = 0; i < post; i++) CHECK(bp_write_u8(b, (uint8_t)rnd()) == 0, "write_u8");
    return b;
}

/* A buffer of a random kind whose readable bytes are src[0, n) (our reference); *kind
 * says which. A retained slice's kept parent goes to the kept buffers. */
static bp_buf *make_buffer(const uint8_t *src, size_t n, int depth, enum buf_kind *kind)
{
    size_t pre = pct(50) ? rn(20) : 0;
    size_t post = pct(50) ? rn(20) : 0;
    int pick = (int)rn(depth > 0 ? 7 : 9); /* composites (7 and 8) at the top level only */
    *kind = pick < KIND_COMPOSITE ? (enum buf_kind)pick : KIND_COMPOSITE;
    int err = 0;
    bp_buf *b = NULL;
    switch (*kind) {
    case KIND_PLAIN:
    case KIND_PLAIN_OTHER:
        b = fill_plain(*kind == KIND_PLAIN_OTHER ? other_alloc : in_alloc, src, n, pre, 0);
        CHECK(bp_skip_bytes(b, pre) == 0, "skip_bytes");
        return b;
    case KIND_SLICE: { /* the slice shares big's count: big's reference is handed over */
        bp_buf *big = fill_plain(pct(50) ? in_alloc : other_alloc, src, n, pre, post);
        b = bp_slice(big, pre, n, &err);
        CHECK(b != NULL, "slice: %s", bp_err_name(err));
        return b;
    }
    case KIND_RETAINED_SLICE: {
        bp_buf *big = fill_plain(pct(50) ? in_alloc : other_alloc, src, n, pre, post);
        b = bp_retained_slice(big, pre, n, &err);
        CHECK(b != NULL, "retained slice: %s", bp_err_name(err));
        if (pct(50)) {
            CHECK(bp_release(big) == 0, "release of a retained slice's parent");
        } else {
            uint8_t *all = xmalloc(pre + n + post);
            CHECK(bp_get_bytes(big, 0, all, pre + n + post) == 0, "get_bytes");
            keep(big, all, 0, pre + n + post, false);
            free(all);
        }
        return b;
    }
    case KIND_WRAPPED: {
        size_t total = pre + n + post;
        uint8_t *mem = xmalloc(total);
        for (size_t i = 0; i < total; i++) mem[i] = (uint8_t)rnd();
        if (n > 0) memcpy(mem + pre, src, n);
        b = bp_wrap(pct(50) ? in_alloc : other_alloc, mem, total, wrap_free, NULL, &err);
        CHECK(b != NULL, "wrap: %s", bp_err_name(err));
        wraps_made++;
        CHECK(bp_set_index(b, pre, pre + n) == 0, "set_index of a wrapped buffer");
        return b;
    }
    case KIND_DUPLICATE: {
        bp_buf *big = fill_plain(in_alloc, src, n, pre, post);
        b = bp_duplicate(big, &err);
        CHECK(b != NULL, "duplicate: %s", bp_err_name(err));
        CHECK(bp_set_index(b, pre, pre + n) == 0, "set_index of a duplicate");
        return b;
    }
    case KIND_RETAINED_DUP: {
        bp_buf *big = fill_plain(other_alloc, src, n, pre, post);
        if (pct(50)) {
            b = bp_retained_duplicate(big, &err);
            CHECK(b != NULL, "retained duplicate: %s", bp_err_name(err));
            CHECK(bp_set_index(b, pre, pre + n) == 0, "set_index of a retained duplicate");
        } else {
            CHECK(bp_skip_bytes(big, pre) == 0, "skip_bytes");
            b = bp_read_retained_slice(big, n, &err);
            CHECK(b != NULL, "read retained slice: %s", bp_err_name(err));
        }
        CHECK(bp_release(big) == 0, "release of a retained view's parent");
        return b;
    }
    default: { /* KIND_COMPOSITE: parts of random sizes (some empty), perhaps nested */
        bp_allocator *a = pct(50) ? in_alloc : other_alloc;
        bp_buf *c = bp_composite(a, 1 + rn(20), &err);
        CHECK(c != NULL, "composite: %s", bp_err_name(err));
        size_t done = 0;
        while (done < n || pct(20)) {
            size_t part = n - done;
            if (part > 1 && pct(80)) part = 1 + rn(part);
            if (pct(10)) part = 0;
            enum buf_kind part_kind;
            bp_buf *p = make_buffer(src + done, part, depth + 1, &part_kind);
            int rc = bp_composite_add(c, p, 1);
            CHECK(rc == 0, "composite_add: %s", bp_err_name(rc));
            done += part;
            if (done >= n && !pct(20)) break;
        }
        if (pct(20)) { /* nested behind 8 bytes already read */
            enum buf_kind part_kind;
            bp_buf *prefix = make_buffer((const uint8_t *)"JUNKJUNK", 8, depth + 1, &part_kind);
            bp_buf *outer = bp_composite(in_alloc, 16, &err);
            CHECK(outer != NULL, "composite: %s", bp_err_name(err));
            CHECK(bp_composite_add(outer, prefix, 1) == 0 && bp_composite_add(outer, c, 1) == 0, "composite_add");
            CHECK(bp_skip_bytes(outer, 8) == 0, "skip_bytes");
            c = outer;
        }
        return c;
    }
    }
}

/* Set by a burst of large adds: the size of the next add. */
static size_t forced_chunk;

/* bp_input_add of a new buffer of the stream's next bytes, or of a kept frame echoed back. */
static void do_add(void)
{
    if (byteq_len(&conn.in_pipe) > 0) return; /* the pipe's bytes come first */
    size_t k = pct(8) ? 0 : pick_chunk();
    if (forced_chunk > 0) k = forced_chunk;
    gen_fill(k);
    size_t u = byteq_len(&conn.unread);
    if (u + k > conn.icfg.max_buffered && u < conn.icfg.max_buffered && pct(50)) k = conn.icfg.max_buffered - u;
    bool echoed = false, still_kept = false;
    enum buf_kind kind;
    bp_buf *b;
    uint8_t *src;
    if (n_kept > 0 && pct(5) && kept[n_kept - 1].fixed_indices) { /* a frame of ours */
        kept_buf *h = &kept[n_kept - 1];
        b = h->b;
        k = h->len;
        src = xmalloc(k);
        memcpy(src, h->expected, k);
        echoed = true;
        kind = KIND_ECHOED_FRAME;
        if (pct(50)) { /* we keep a reference: the input may adopt it and move its indices */
            CHECK(bp_retain(b) == 0, "retain of a frame");
            h->fixed_indices = false;
            h->shared = true;
            still_kept = true;
        } else { /* handed over */
            free(h->expected);
            n_kept--;
        }
    } else {
        src = xmalloc(k);
        if (k > 0) memcpy(src, byteq_ptr(&conn.stream), k);
        b = make_buffer(src, k, 0, &kind);
    }
    bool extra = pct(25); /* a reference of our own, to see that the input never writes b */
    size_t ri = bp_reader_index(b);
    if (extra) CHECK(bp_retain(b) == 0, "retain");
    int refcnt0 = bp_refcnt(b);
    uint64_t copied0 = bp_input_copied_bytes(conn.in);
    long m0 = misuse_count;
    int rc = bp_input_add(conn.in, b);
    log_op("add kind=%d n=%zu unread=%zu extra=%d -> %d", (int)kind, k, u, (int)extra, rc);
    CHECK(misuse_count == m0, "bp_input_add reported misuse (%s)", bp_err_name(rc));
    if (k > 0 && k > conn.icfg.max_buffered - u) {
        /* "on failure the reference stays the caller's and nothing changes" */
        CHECK(rc == BP_EFULL, "add of %zu with %zu unread, max_buffered %zu: %s, expected BP_EFULL", k, u,
              conn.icfg.max_buffered, bp_err_name(rc));
        CHECK(bp_refcnt(b) == refcnt0, "a BP_EFULL add changed the count %d -> %d", refcnt0, bp_refcnt(b));
        CHECK(bp_readable_bytes(b) == k && bp_reader_index(b) == ri, "a BP_EFULL add moved the buffer's indices");
        CHECK(bp_input_copied_bytes(conn.in) == copied0, "a BP_EFULL add changed the copied bytes");
        verify_bytes(b, src, ri, k, true, "refused buffer");
        cov.efull_adds++;
        if (extra) CHECK(bp_release(b) == 0, "release");
        if (echoed && !still_kept) keep(b, src, 0, k, true);
        else CHECK(bp_release(b) >= 0, "release");
        free(src);
        check_input_state("add (full)");
        return;
    }
    cov.adds[kind]++;
    CHECK(rc == 0, "bp_input_add of %zu bytes (%zu unread, max_buffered %zu): %s", k, u, conn.icfg.max_buffered,
          bp_err_name(rc));
    if (!echoed) byteq_pop(&conn.stream, k);
    byteq_push(&conn.unread, src, k);
    /* Copies: none into an empty input (it adopts b); else none (linked), b's bytes
     * (merged), or the unread bytes and b's (into one new buffer); b's at least when all
     * fit in 4 KiB, and always for a composite ("a composite ... is copied, never nested"). */
    uint64_t copied = bp_input_copied_bytes(conn.in);
    uint64_t added = copied - copied0;
    if (u == 0) CHECK(added == 0, "an add to an empty input copied %" PRIu64 " bytes (should adopt)", added);
    CHECK(added <= u + k, "add copied %" PRIu64 " > unread + n = %zu", added, u + k);
    if (u > 0 && k > 0) {
        CHECK(added == 0 || added == k || added == u + k,
              "add of %zu with %zu unread copied %" PRIu64 " (expected 0, n or unread + n)", k, u, added);
        if (u + k <= 4096)
            CHECK(added >= k, "a small add (%zu + %zu unread <= 4 KiB) copied only %" PRIu64, k, u, added);
        if (kind == KIND_COMPOSITE)
            CHECK(added >= k, "an added composite (%zu bytes) was not copied (copied %" PRIu64 ")", k, added);
    }
    conn.copied = copied;
    if (extra) {
        if (k == 0)
            CHECK(bp_refcnt(b) == refcnt0 - 1, "empty add: count %d, expected %d (released at once)", bp_refcnt(b),
                  refcnt0 - 1);
        keep(b, src, ri, k, false);
        kept[n_kept - 1].shared = true;
    }
    free(src);
    check_input_state("add");
}

/* ------------------------------------------------------------------ decoding and taking */

/* A frame: count 1, the caller's; reader index 0, `len` readable bytes equal to expected. */
static void check_frame(bp_buf *f, const uint8_t *expected, size_t len, const char *what)
{
    CHECK(f != NULL, "%s: NULL frame", what);
    CHECK(bp_refcnt(f) == 1, "%s: frame count %d", what, bp_refcnt(f));
    CHECK(bp_readable_bytes(f) == len, "%s: frame of %zu bytes, model %zu", what, bp_readable_bytes(f), len);
    CHECK(bp_reader_index(f) == 0, "%s: frame reader index %zu", what, bp_reader_index(f));
    verify_bytes(f, expected, 0, len, true, what);
}

static void reset_connection(void);

/* bp_frame_decode once, or (all) until it needs more bytes, each result compared with the
 * model's. Frames are kept (a few released at once). */
static void do_decode(bool all)
{
    for (int i = 0; i < 10000; i++) {
        size_t u = byteq_len(&conn.unread);
        bp_buf *f = (bp_buf *)&conn; /* not NULL: bp_frame_decode must store NULL */
        uint8_t *want;
        size_t want_len;
        bool was_discarding = conn.model.discarding;
        uint64_t copied0 = bp_input_copied_bytes(conn.in);
        long m0 = misuse_count;
        int rc = bp_frame_decode(conn.dec, conn.in, &f);
        int model_rc = model_decode(&conn.model, &conn.unread, &want, &want_len);
        log_op("decode unread=%zu discarding=%d -> %d (model %d, len %zu), unread after %zu", u, (int)was_discarding,
               rc, model_rc, want_len, bp_input_readable(conn.in));
        CHECK(misuse_count == m0, "bp_frame_decode reported misuse (%s)", bp_err_name(rc));
        CHECK(rc == model_rc, "bp_frame_decode returned %d (%s), model %d (%s); %zu unread before, model discarding %d",
              rc, bp_err_name(rc), model_rc, bp_err_name(model_rc), u, (int)was_discarding);
        CHECK(bp_input_copied_bytes(conn.in) == copied0, "bp_frame_decode changed the copied bytes");
        if (rc == BP_ETOOLONG) cov.toolong[conn.kind]++;
        if (rc == BP_ECORRUPT) cov.corrupt[conn.kind]++;
        /* "the stream is then usually beyond repair": a server would mostly close it */
        bool reset = rc == BP_ECORRUPT && pct(60);
        if (rc == 1) {
            cov.frames[conn.kind]++;
            if (bp_data(f, 0) == NULL && want_len > 0) cov.composite_frames++; /* a view of a composite */
            check_frame(f, want, want_len, "decoded frame");
            keep(f, want, 0, want_len, true);
            if (pct(3)) {
                bool on_worker = pct(50);
                drop_kept(n_kept - 1, on_worker);
            }
        } else {
            CHECK(f == NULL, "bp_frame_decode returned %d and left *frame %p", rc, (void *)f);
        }
        free(want);
        check_input_state("decode");
        if (reset) {
            reset_connection();
            break;
        }
        if (rc == 0 || !all) break;
        if (byteq_len(&conn.unread) == 0 && rc != 1) break;
    }
}

/* Raw input: bp_input_take, _take_copy or _skip of up to a few bytes past the end (those
 * fail with BP_ERANGE, a misuse), or now and then bp_input_clear. */
static void do_raw(void)
{
    size_t u = byteq_len(&conn.unread);
    size_t n = pct(10) ? u + 1 + rn(3) : pct(20) ? u : rn(u + 1);
    int op = (int)rn(4);
    int err = 12345;
    long m0 = misuse_count;
    uint64_t copied0 = bp_input_copied_bytes(conn.in);
    log_op("raw op=%d n=%zu unread=%zu", op, n, u);
    if (op == 3) {
        if (!pct(10)) return;
        bp_input_clear(conn.in);
        byteq_clear(&conn.unread);
        check_input_state("clear");
        return;
    }
    if (op == 2) {
        int rc = bp_input_skip(conn.in, n);
        if (n > u) {
            CHECK(rc == BP_ERANGE && misuse_count == m0 + 1, "skip %zu of %zu: %s (misuse reports %ld)", n, u,
                  bp_err_name(rc), misuse_count - m0);
        } else {
            CHECK(rc == 0 && misuse_count == m0, "skip %zu of %zu: %s", n, u, bp_err_name(rc));
            byteq_pop(&conn.unread, n);
        }
    } else {
        const char *what = op == 0 ? "take" : "take_copy";
        bp_buf *f = op == 0 ? bp_input_take(conn.in, n, &err) : bp_input_take_copy(conn.in, n, &err);
        if (n > u) {
            CHECK(f == NULL && err == BP_ERANGE && misuse_count == m0 + 1, "%s %zu of %zu: %p, %s", what, n, u,
                  (void *)f, bp_err_name(err));
        } else {
            CHECK(f != NULL && err == 0 && misuse_count == m0, "%s %zu of %zu: %s", what, n, u, bp_err_name(err));
            check_frame(f, byteq_ptr(&conn.unread), n, what);
            /* "a new buffer of the input's allocator (capacity n, max capacity as bp_alloc
             * gives, whichever allocator or memory the bytes came from)" */
            if (op == 1)
                CHECK(bp_capacity(f) == n && bp_max_capacity(f) == BP_DEFAULT_MAX_CAPACITY &&
                          bp_buf_allocator(f) == in_alloc,
                      "take_copy: capacity %zu (expected %zu), max capacity %zu, %s allocator", bp_capacity(f), n,
                      bp_max_capacity(f), bp_buf_allocator(f) == in_alloc ? "the input's" : "another");
            keep(f, byteq_ptr(&conn.unread), 0, n, true);
            byteq_pop(&conn.unread, n);
            cov.frames[RAW]++;
        }
    }
    CHECK(bp_input_copied_bytes(conn.in) == copied0, "take or skip changed the copied bytes");
    check_input_state("raw");
}

/* ------------------------------------------------------------------ output */

static void outq_push(size_t len, bool notify)
{
    if (n_outq == cap_outq) {
        cap_outq = cap_outq * 2 + 16;
        outq = xrealloc(outq, cap_outq * sizeof *outq);
    }
    outq[n_outq++] = (out_entry){len, notify, next_entry_id++};
}

static size_t model_pending(void) { return byteq_len(&conn.out_bytes); }

static void expect_done(long id, bool completed)
{
    if (n_expected_done < DONE_LOG_SIZE) {
        expected_done_ids[n_expected_done] = id;
        expected_done_completed[n_expected_done] = completed;
    }
    n_expected_done++;
}

/* The completion callbacks since the last check: as many as the model expects, in its
 * order, with its `completed`. */
static void check_completions(const char *where)
{
    CHECK(n_done == n_expected_done, "%s: %d completion callbacks, model %d", where, n_done, n_expected_done);
    for (int i = 0; i < n_done && i < DONE_LOG_SIZE; i++)
        CHECK(done_ids[i] == expected_done_ids[i] && done_completed[i] == expected_done_completed[i],
              "%s: completion %d: id %ld completed %d, model id %ld completed %d", where, i, done_ids[i],
              (int)done_completed[i], expected_done_ids[i], (int)expected_done_completed[i]);
    n_done = n_expected_done = 0;
}

/* Compares the output with the model, the completions since the last check included. */
static void check_output(const char *where)
{
    CHECK(bp_output_pending(conn.out) == model_pending(), "%s: output pending %zu, model %zu", where,
          bp_output_pending(conn.out), model_pending());
    CHECK(bp_output_count(conn.out) == n_outq, "%s: output count %zu, model %zu", where, bp_output_count(conn.out),
          n_outq);
    CHECK(bp_output_writable(conn.out) == (int)conn.writable, "%s: writable %d, model %d", where,
          bp_output_writable(conn.out), (int)conn.writable);
    check_completions(where);
}

/* The writability callback's calls since writability_calls was zeroed: one, with the new
 * answer, when the model's writability changed from `before`; none otherwise. */
static void check_writability_calls(bool before, const char *where)
{
    if (before != conn.writable)
        CHECK(writability_calls == 1 && writability_last == (int)conn.writable,
              "%s: writability callback called %d times, last with %d; model %d", where, writability_calls,
              writability_last, (int)conn.writable);
    else
        CHECK(writability_calls == 0, "%s: unexpected writability callback (%d calls, last with %d)", where,
              writability_calls, writability_last);
    writability_calls = 0;
}

static void open_socketpair(void)
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, conn.sock) == 0, "socketpair: errno %d", errno);
    int size = 4096;
    setsockopt(conn.sock[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt(conn.sock[1], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

static void output_add(void)
{
    bp_buf *b;
    uint8_t fresh[64];
    const uint8_t *bytes;
    size_t len;
    if (n_kept > 0 && pct(70)) { /* a kept buffer: a frame goes out again (a reference of its own) */
        kept_buf *k = &kept[rn(n_kept)];
        if (!k->fixed_indices) return;
        b = k->b;
        CHECK(bp_retain(b) == 0, "retain for the output");
        k->shared = true;
        bytes = k->expected;
        len = k->len;
    } else {
        len = rn(64);
        for (size_t i = 0; i < len; i++) fresh[i] = (uint8_t)rnd();
        enum buf_kind kind;
        b = make_buffer(fresh, len, 0, &kind);
        bytes = fresh;
    }
    bool notify = pct(40);
    writability_calls = 0;
    long id = next_entry_id;
    int rc = notify ? bp_output_add_notify(conn.out, b, on_done, (void *)(intptr_t)id) : bp_output_add(conn.out, b);
    log_op("output add%s len=%zu -> %d", notify ? "_notify" : "", len, rc);
    CHECK(rc >= 0, "bp_output_add: %s", bp_err_name(rc));
    /* An empty buffer is released at once - unless it is a marker (with a callback). */
    if (len > 0 || notify) outq_push(len, notify);
    else next_entry_id++;
    byteq_push(&conn.out_bytes, bytes, len);
    /* "Returns 0, or 1 when this add turned the output unwritable (the pending bytes
     * passed high_water_mark)" */
    bool before = conn.writable;
    if (conn.writable && model_pending() > conn.ocfg.high_water_mark) conn.writable = false;
    CHECK(rc == (before && !conn.writable), "bp_output_add returned %d, model %d (pending %zu, high water mark %zu)",
          rc, (int)(before && !conn.writable), model_pending(), conn.ocfg.high_water_mark);
    check_writability_calls(before, "output add");
    check_output("output add");
}

/* The peer goes away: the flush fails with BP_EIO/EPIPE and drops everything. */
static void output_flush_to_closed_peer(void)
{
    close(conn.sock[1]);
    writability_calls = 0;
    errno = 0;
    long w = bp_output_flush(conn.out, conn.sock[0]);
    int e = errno;
    log_op("output flush after the peer closed -> %ld errno %d (pending %zu, %zu queued)", w, e, model_pending(),
           n_outq);
    cov.epipe_flushes++;
    /* Markers at the head complete (everything before them was written), then the write
     * meets EPIPE and the rest is dropped. */
    size_t i = 0;
    while (i < n_outq && outq[i].len == 0) {
        if (outq[i].notify) expect_done(outq[i].id, true);
        i++;
    }
    bool failed = i < n_outq;
    if (failed) {
        CHECK(w == BP_EIO && e == EPIPE, "flush to a closed peer: %ld errno %d, expected BP_EIO, EPIPE", w, e);
        for (; i < n_outq; i++)
            if (outq[i].notify) expect_done(outq[i].id, false);
    } else {
        CHECK(w == 0, "flush of nothing to a closed peer: %ld errno %d", w, e);
    }
    n_outq = 0;
    byteq_clear(&conn.out_bytes);
    /* After an error "the output is then empty and writable" (also with low_water_mark 0,
     * where a flush that writes everything leaves it unwritable: 0 is not below 0). */
    bool before = conn.writable;
    if (!conn.writable && (model_pending() < conn.ocfg.low_water_mark || failed)) conn.writable = true;
    check_writability_calls(before, "flush to a closed peer");
    check_output("flush to a closed peer");
    close(conn.sock[0]);
    open_socketpair();
}

/* A flush, then the peer reads exactly what it wrote. */
static void output_flush(void)
{
    writability_calls = 0;
    long w = bp_output_flush(conn.out, conn.sock[0]);
    log_op("output flush -> %ld (pending %zu)", w, model_pending());
    CHECK(w >= 0, "bp_output_flush: %ld errno %d", w, errno);
    CHECK((size_t)w <= model_pending(), "flush wrote %ld > %zu pending", w, model_pending());
    size_t got = 0;
    uint8_t *received = xmalloc((size_t)w);
    while (got < (size_t)w) {
        ssize_t r = read(conn.sock[1], received + got, (size_t)w - got);
        CHECK(r > 0, "the peer's read: %zd errno %d (%zu of %ld)", r, errno, got, w);
        got += (size_t)r;
    }
    uint8_t more;
    CHECK(read(conn.sock[1], &more, 1) < 0 && errno == EAGAIN, "the peer got more than the flush reported");
    CHECK(memcmp(received, byteq_ptr(&conn.out_bytes), (size_t)w) == 0, "flushed bytes differ from those queued");
    free(received);
    byteq_pop(&conn.out_bytes, (size_t)w);
    cov.flushed_bytes += w;
    /* Entries written to their end complete, in order; markers once all before them went. */
    size_t left = (size_t)w, i = 0;
    for (; i < n_outq; i++) {
        if (outq[i].len > left) {
            outq[i].len -= left;
            break;
        }
        left -= outq[i].len;
        if (outq[i].notify) expect_done(outq[i].id, true);
    }
    if (i > 0) memmove(outq, outq + i, (n_outq - i) * sizeof *outq);
    n_outq -= i;
    bool before = conn.writable;
    if (!conn.writable && model_pending() < conn.ocfg.low_water_mark) conn.writable = true;
    check_writability_calls(before, "flush");
    check_output("flush");
}

static void output_clear(void)
{
    writability_calls = 0;
    bp_output_clear(conn.out);
    log_op("output clear");
    for (size_t i = 0; i < n_outq; i++)
        if (outq[i].notify) expect_done(outq[i].id, false);
    n_outq = 0;
    byteq_clear(&conn.out_bytes);
    bool before = conn.writable;
    conn.writable = true; /* "the output is then empty and writable" */
    check_writability_calls(before, "clear");
    check_output("clear");
}

static void do_output(void)
{
    int op = (int)rn(10);
    if (op < 5) output_add();
    else if (op == 5 && pct(15)) output_flush_to_closed_peer();
    else if (op < 9) output_flush();
    else output_clear();
}

/* ------------------------------------------------------------------ bad calls */

/* A buffer broken behind its holder's back, n bytes: a retained slice whose parent was
 * released once too often, or a composite whose component was released through the
 * caller's pointer. Then a buffer of the same size is allocated - often on the released
 * object - holding bytes of its own (*next, ours). */
static bp_buf *make_broken_buffer(bool composite, size_t n, bp_buf **next)
{
    bp_allocator *a = pct(50) ? in_alloc : other_alloc;
    long m0 = misuse_count;
    int err = 0;
    bp_buf *victim = bp_alloc(a, n), *holder;
    CHECK(victim != NULL && bp_write_zero(victim, n) == 0, "bp_alloc of %zu bytes", n);
    if (composite) {
        holder = bp_composite(a, 4, &err);
        CHECK(holder != NULL, "composite: %s", bp_err_name(err));
        CHECK(bp_retain(victim) == 0 && bp_composite_add(holder, victim, 1) == 0, "composite_add");
        CHECK(bp_release(victim) == 0, "release of our reference");
        CHECK(bp_release(victim) == 1, "release of the composite's reference, behind its back");
    } else {
        holder = bp_retained_slice(victim, 0, n, &err);
        CHECK(holder != NULL, "retained slice: %s", bp_err_name(err));
        CHECK(bp_release(victim) == 0, "release of our reference");
        CHECK(bp_release(victim) == 1, "release of the view's reference, behind its back");
    }
    CHECK(misuse_count == m0, "breaking a buffer reported misuse");
    *next = bp_alloc(a, n);
    CHECK(*next != NULL, "bp_alloc of %zu bytes", n);
    for (size_t i = 0; i < n; i++) CHECK(bp_write_u8(*next, (uint8_t)(0xA5 ^ i)) == 0, "write_u8");
    return holder;
}

/* Broken buffers are refused by bp_input_add, bp_output_add and _add_notify: "on failure
 * the reference stays the caller's and nothing changes: ... BP_EFREED (buf released, or a
 * view or composite whose buffers were released behind its back)" - a misuse, reported.
 * Its end is ours, and does not touch the buffer now on the released object. */
static void refuse_broken_buffer(void)
{
    bool composite = pct(50);
    size_t n = pct(50) ? 1 + rn(16) : 4097 + rn(6000); /* merged or linked, if it were taken */
    bp_buf *next;
    bp_buf *broken = make_broken_buffer(composite, n, &next);
    size_t u = byteq_len(&conn.unread);
    long m0 = misuse_count;
    int rc = bp_input_add(conn.in, broken);
    log_op("add of a broken %s (%zu bytes) -> %d", composite ? "composite" : "view", n, rc);
    CHECK(rc == BP_EFREED && misuse_count == m0 + 1, "bp_input_add of a broken %s: %s (misuse reports %ld)",
          composite ? "composite" : "view", bp_err_name(rc), misuse_count - m0);
    CHECK(bp_input_readable(conn.in) == u, "a refused add changed the input");
    m0 = misuse_count;
    rc = bp_output_add(conn.out, broken);
    CHECK(rc == BP_EFREED && misuse_count == m0 + 1, "bp_output_add of a broken %s: %s (misuse reports %ld)",
          composite ? "composite" : "view", bp_err_name(rc), misuse_count - m0);
    m0 = misuse_count;
    rc = bp_output_add_notify(conn.out, broken, on_done, (void *)(intptr_t)-1);
    CHECK(rc == BP_EFREED && misuse_count == m0 + 1, "bp_output_add_notify of a broken %s: %s (misuse reports %ld)",
          composite ? "composite" : "view", bp_err_name(rc), misuse_count - m0);
    check_output("refused broken buffer"); /* nothing queued, no callback */
    /* Ending it finds the released buffer and reports that (BP_EFREED), leaving next alone. */
    m0 = misuse_count;
    rc = bp_release(broken);
    CHECK(rc == 1 && misuse_count == m0 + 1, "release of a broken %s: %d (misuse reports %ld)",
          composite ? "composite" : "view", rc, misuse_count - m0);
    CHECK(bp_refcnt(next) == 1 && bp_readable_bytes(next) == n, "the broken buffer's end changed another buffer");
    for (size_t i = 0; i < n; i++) {
        uint8_t x = 0;
        CHECK(bp_get_u8(next, i, &x) == 0 && x == (uint8_t)(0xA5 ^ i),
              "the broken buffer's end changed another buffer's bytes");
    }
    CHECK(bp_release(next) == 1, "release");
    cov.broken_refused++;
}

/* A call the header says fails: the error, a misuse report (or none, for BP_EIO and
 * BP_EFULL), and nothing changed in the input or output. */
static void do_bad(void)
{
    size_t u = byteq_len(&conn.unread);
    uint64_t copied0 = bp_input_copied_bytes(conn.in);
    long m0;
    int err, rc;
    bp_buf *f;
    int which = (int)rn(N_BAD_CALLS);
    cov.bad_calls[which]++;
    log_op("bad call %d", which);
    switch (which) {
    case 0:
        m0 = misuse_count;
        CHECK(bp_input_read_fd(NULL, conn.pipe_fd[0]) == BP_EINVAL && misuse_count == m0 + 1, "read_fd(NULL)");
        break;
    case 1: {
        bp_buf *b = bp_alloc(in_alloc, 8);
        CHECK(b != NULL && bp_write_u32(b, 7) == 0, "alloc");
        m0 = misuse_count;
        rc = bp_input_add(NULL, b);
        CHECK(rc == BP_EINVAL && misuse_count == m0 + 1 && bp_refcnt(b) == 1 && bp_readable_bytes(b) == 4,
              "add(NULL, b): %s", bp_err_name(rc));
        m0 = misuse_count;
        rc = bp_input_add(conn.in, NULL);
        CHECK(rc == BP_EINVAL && misuse_count == m0 + 1, "add(in, NULL): %s", bp_err_name(rc));
        CHECK(bp_release(b) == 1, "release");
        break;
    }
    case 2: { /* a released buffer, used at once (its object not handed out again) */
        bp_buf *b = bp_alloc(in_alloc, 8);
        CHECK(b != NULL && bp_write_u32(b, 7) == 0, "alloc");
        CHECK(bp_release(b) == 1, "release");
        m0 = misuse_count;
        rc = bp_input_add(conn.in, b);
        CHECK(rc == BP_EFREED && misuse_count == m0 + 1, "add(released): %s", bp_err_name(rc));
        break;
    }
    case 3: refuse_broken_buffer(); break;
    case 4:
        m0 = misuse_count;
        f = bp_input_take(NULL, 0, &err);
        CHECK(f == NULL && err == BP_EINVAL && misuse_count == m0 + 1, "take(NULL)");
        m0 = misuse_count;
        f = bp_input_take(conn.in, u + 1, &err);
        CHECK(f == NULL && err == BP_ERANGE && misuse_count == m0 + 1, "take(%zu of %zu): %s", u + 1, u,
              bp_err_name(err));
        m0 = misuse_count;
        f = bp_input_take(conn.in, SIZE_MAX, NULL);
        CHECK(f == NULL && misuse_count == m0 + 1, "take(SIZE_MAX)");
        break;
    case 5: {
        m0 = misuse_count;
        f = bp_input_take_copy(NULL, 0, &err);
        CHECK(f == NULL && err == BP_EINVAL && misuse_count == m0 + 1, "take_copy(NULL)");
        size_t n = u + 1 + rn(10);
        m0 = misuse_count;
        f = bp_input_take_copy(conn.in, n, &err);
        CHECK(f == NULL && err == BP_ERANGE && misuse_count == m0 + 1, "take_copy(%zu of %zu): %s", n, u,
              bp_err_name(err));
        break;
    }
    case 6:
        m0 = misuse_count;
        CHECK(bp_input_skip(NULL, 0) == BP_EINVAL && misuse_count == m0 + 1, "skip(NULL)");
        m0 = misuse_count;
        CHECK(bp_input_skip(conn.in, u + 1) == BP_ERANGE && misuse_count == m0 + 1, "skip(unread + 1)");
        m0 = misuse_count;
        CHECK(bp_input_skip(conn.in, SIZE_MAX) == BP_ERANGE && misuse_count == m0 + 1, "skip(SIZE_MAX)");
        break;
    case 7: /* NULL is 0 for getters, ignored by the void functions */
        CHECK(bp_input_readable(NULL) == 0 && bp_input_copied_bytes(NULL) == 0 && bp_input_peek(NULL) == NULL,
              "input getters of NULL");
        m0 = misuse_count;
        bp_input_clear(NULL);
        bp_input_free(NULL);
        bp_frame_decoder_free(NULL);
        bp_output_free(NULL);
        bp_output_clear(NULL);
        CHECK(bp_output_pending(NULL) == 0 && bp_output_count(NULL) == 0, "output getters of NULL");
        CHECK(misuse_count == m0, "NULL given to a function that ignores it reported misuse");
        CHECK(bp_output_writable(NULL) == BP_EINVAL && misuse_count == m0 + 1, "output_writable(NULL)");
        break;
    case 8:
        if (conn.dec == NULL) break;
        m0 = misuse_count;
        rc = bp_frame_decode(NULL, conn.in, &f);
        CHECK(rc == BP_EINVAL && misuse_count == m0 + 1, "decode(NULL decoder): %s", bp_err_name(rc));
        m0 = misuse_count;
        rc = bp_frame_decode(conn.dec, NULL, &f);
        CHECK(rc == BP_EINVAL && misuse_count == m0 + 1, "decode(NULL input): %s", bp_err_name(rc));
        m0 = misuse_count;
        rc = bp_frame_decode(conn.dec, conn.in, NULL);
        CHECK(rc == BP_EINVAL && misuse_count == m0 + 1, "decode(NULL frame): %s", bp_err_name(rc));
        break;
    case 9: { /* a bad fd: BP_EIO, EBADF - not misuse */
        m0 = misuse_count;
        errno = 0;
        long got = bp_input_read_fd(conn.in, -1);
        int e = errno;
        /* "Room made before the read stays": the unread bytes may have been copied. */
        CHECK(bp_input_copied_bytes(conn.in) - copied0 <= u, "read_fd(-1) copied more than the unread bytes");
        copied0 = conn.copied = bp_input_copied_bytes(conn.in);
        if (u >= conn.icfg.max_buffered) CHECK(got == BP_EFULL, "read_fd(-1) of a full input: %ld", got);
        else CHECK(got == BP_EIO && e == EBADF, "read_fd(-1): %ld errno %d", got, e);
        CHECK(misuse_count == m0, "read_fd(-1) reported misuse");
        break;
    }
    case 10: {
        bp_buf *b = bp_alloc(in_alloc, 8);
        CHECK(b != NULL && bp_write_u32(b, 7) == 0, "alloc");
        m0 = misuse_count;
        rc = bp_output_add(NULL, b);
        CHECK(rc == BP_EINVAL && misuse_count == m0 + 1 && bp_refcnt(b) == 1, "output_add(NULL): %s",
              bp_err_name(rc));
        m0 = misuse_count;
        rc = bp_output_add(conn.out, NULL);
        CHECK(rc == BP_EINVAL && misuse_count == m0 + 1, "output_add(out, NULL): %s", bp_err_name(rc));
        m0 = misuse_count;
        long w = bp_output_flush(NULL, conn.sock[0]);
        CHECK(w == BP_EINVAL && misuse_count == m0 + 1, "flush(NULL): %ld", w);
        CHECK(bp_release(b) == 1, "release");
        b = bp_alloc(in_alloc, 8);
        CHECK(b != NULL && bp_write_u32(b, 7) == 0, "alloc");
        CHECK(bp_release(b) == 1, "release");
        m0 = misuse_count;
        rc = bp_output_add(conn.out, b);
        CHECK(rc == BP_EFREED && misuse_count == m0 + 1, "output_add(released): %s", bp_err_name(rc));
        m0 = misuse_count;
        rc = bp_output_add_notify(conn.out, b, on_done, NULL);
        CHECK(rc == BP_EFREED && misuse_count == m0 + 1, "output_add_notify(released): %s", bp_err_name(rc));
        check_output("bad output calls");
        break;
    }
    case 11: { /* input configs out of range, and the boundary ones */
        bp_input_config c;
        bp_input_config_init(&c);
        m0 = misuse_count;
        CHECK(bp_input_new(NULL, NULL, &err) == NULL && err == BP_EINVAL && misuse_count == m0 + 1,
              "input_new(NULL allocator)");
        bp_input_config bad[8];
        for (int i = 0; i < 8; i++) bad[i] = c;
        bad[0].max_buffered = 0;
        bad[1].max_buffered = ((size_t)1 << 40) + 1;
        bad[2].min_read = 0;
        bad[3].min_read = bad[3].initial_read + 1;
        bad[4].initial_read = bad[4].max_read + 1;
        bad[5].max_read = ((size_t)1 << 30) + 1;
        bad[6].min_read = bad[6].initial_read = bad[6].max_read = 0;
        bad[7].max_buffered = SIZE_MAX;
        for (int i = 0; i < 8; i++) {
            m0 = misuse_count;
            err = 0;
            bp_input *x = bp_input_new(in_alloc, &bad[i], &err);
            CHECK(x == NULL && err == BP_EINVAL && misuse_count == m0 + 1, "invalid input config %d accepted (%s)", i,
                  bp_err_name(err));
        }
        bp_input_config ok = c;
        ok.max_buffered = (size_t)1 << 40;
        ok.max_read = (size_t)1 << 30;
        ok.min_read = ok.initial_read = 1;
        bp_input *x = bp_input_new(in_alloc, &ok, &err);
        CHECK(x != NULL && err == 0, "boundary input config refused (%s)", bp_err_name(err));
        bp_input_free(x);
        break;
    }
    case 12: { /* decoder configs out of range, and the boundary ones */
        bp_frame_config c;
        m0 = misuse_count;
        CHECK(bp_frame_decoder_new(NULL, &err) == NULL && err == BP_EINVAL && misuse_count == m0 + 1,
              "decoder_new(NULL)");
        bp_delimiter empty = {"", 0}, null_bytes = {NULL, 1}, bar = {"|", 1};
        for (int i = 0; i < 12; i++) {
            bp_frame_config_init(&c, BP_FRAME_LENGTH_FIELD);
            switch (i) {
            case 0: c.type = (bp_frame_type)0; break;
            case 1: c.type = (bp_frame_type)5; break;
            case 2: c.max_frame_length = 0; break;
            case 3: c.length_field_length = 5; break;
            case 4: c.length_field_length = 0; break;
            case 5: c.length_field_offset = c.max_frame_length - 3; break; /* the field passes the maximum */
            case 6: c.max_frame_length = 3; break;                         /* shorter than the field */
            case 7: bp_frame_config_init(&c, BP_FRAME_DELIMITER); break;   /* no delimiter */
            case 8:
                bp_frame_config_init(&c, BP_FRAME_DELIMITER);
                c.delimiters = &empty;
                c.delimiter_count = 1;
                break;
            case 9:
                bp_frame_config_init(&c, BP_FRAME_DELIMITER);
                c.delimiters = &null_bytes;
                c.delimiter_count = 1;
                break;
            case 10: bp_frame_config_init(&c, BP_FRAME_FIXED_LENGTH); break; /* frame_length 0 */
            default:
                bp_frame_config_init(&c, BP_FRAME_LINE);
                c.max_frame_length = 0;
                break;
            }
            m0 = misuse_count;
            err = 0;
            bp_frame_decoder *d = bp_frame_decoder_new(&c, &err);
            CHECK(d == NULL && err == BP_EINVAL && misuse_count == m0 + 1, "invalid decoder config %d accepted (%s)",
                  i, bp_err_name(err));
        }
        for (int i = 0; i < 4; i++) {
            bp_frame_config_init(&c, BP_FRAME_LENGTH_FIELD);
            if (i == 0) c.length_field_offset = c.max_frame_length - 4; /* the field ends at the maximum */
            if (i == 1) { /* max_frame_length is not used */
                bp_frame_config_init(&c, BP_FRAME_FIXED_LENGTH);
                c.frame_length = 1;
                c.max_frame_length = 0;
            }
            if (i == 2) {
                c.max_frame_length = 8;
                c.length_field_length = 8;
            }
            if (i == 3) {
                bp_frame_config_init(&c, BP_FRAME_DELIMITER);
                c.delimiters = &bar;
                c.delimiter_count = 1;
            }
            bp_frame_decoder *d = bp_frame_decoder_new(&c, &err);
            CHECK(d != NULL && err == 0, "valid decoder config %d refused (%s)", i, bp_err_name(err));
            bp_frame_decoder_free(d);
        }
        break;
    }
    default: { /* low_water_mark > high_water_mark */
        bp_output_config oc;
        bp_output_config_init(&oc);
        oc.low_water_mark = oc.high_water_mark + 1;
        m0 = misuse_count;
        CHECK(bp_output_new(&oc, &err) == NULL && err == BP_EINVAL && misuse_count == m0 + 1,
              "output config with low > high water mark accepted");
        break;
    }
    }
    CHECK(bp_input_copied_bytes(conn.in) == copied0, "a bad call changed the copied bytes");
    check_input_state("bad call");
    if (pct(30)) check_peek_contents();
}

/* ------------------------------------------------------------------ sessions */

static void new_decoder(void)
{
    if (conn.kind == RAW) return;
    int err = 0;
    conn.dec = bp_frame_decoder_new(&conn.model.c, &err);
    CHECK(conn.dec != NULL && err == 0, "bp_frame_decoder_new: %s", bp_err_name(err));
    conn.model.discarding = false;
    conn.model.to_discard = 0;
}

/* The delimiter sets: overlapping ones ("|" and "||" either way round, "ab" and "ba", "aab",
 * "ab" and "b") and one with an embedded NUL. */
static const struct {
    const char *bytes[3];
    size_t len[3];
} DELIMITER_SETS[] = {
    {{"|"}, {1}},           {{"||", "|"}, {2, 1}},          {{"|", "||"}, {1, 2}}, {{"\r\n", "\n"}, {2, 1}},
    {{"abc"}, {3}},         {{"ab", "ba"}, {2, 2}},         {{"aab", "ab", "b"}, {3, 2, 1}},
    {{"xy|", "|"}, {3, 1}}, {{"||||"}, {4}},                {{"a\0b", "\0"}, {3, 1}},
};

static const unsigned FIELD_WIDTHS[5] = {1, 2, 3, 4, 8};

static long session_number; /* in this seed's run */

static void choose_decoder(void)
{
    /* The decoder kind, length field width and delimiter set go in turn rather than at
     * random, so that any 50 sessions in a row - or the first sessions of 50 seeds in a
     * row - have every combination: the turn is 7 * seed + the session's number, mod 50
     * (7 is prime to 50). Everything else is random. */
    unsigned turn = (unsigned)((seed % 50 * 7 + (uint64_t)session_number++) % 50);
    unsigned variant = turn / N_DECODER_KINDS; /* 0..9 */
    memset(&conn.model, 0, sizeof conn.model);
    conn.kind = (int)(turn % N_DECODER_KINDS);
    bp_frame_config *c = &conn.model.c;
    bp_frame_config_init(c, conn.kind == RAW ? BP_FRAME_FIXED_LENGTH : (bp_frame_type)conn.kind);
    size_t max = pct(70) ? 1 + rn(40) : pct(50) ? 1 + rn(600) : 1 + rn(9000);
    switch (conn.kind) {
    case BP_FRAME_LENGTH_FIELD: {
        c->length_field_length = FIELD_WIDTHS[variant % 5];
        cov.field_widths[c->length_field_length]++;
        c->little_endian = pct(50);
        c->length_field_offset = pct(50) ? 0 : rn(5);
        size_t header = c->length_field_offset + c->length_field_length;
        c->max_frame_length = header + max - 1;
        switch (rn(pct(10) ? 4 : 3)) {
        case 0: c->length_adjustment = 0; break;
        case 1: c->length_adjustment = -(int64_t)header; break; /* the length counts the header */
        case 2: c->length_adjustment = (int64_t)rn(17) - 8; break;
        default: c->length_adjustment = pct(50) ? INT64_MAX - (int64_t)rn(3) : INT64_MIN + (int64_t)rn(3); break;
        }
        switch (rn(3)) {
        case 0: c->initial_bytes_to_strip = 0; break;
        case 1: c->initial_bytes_to_strip = header; break;
        default: c->initial_bytes_to_strip = rn(header + 6); break; /* perhaps more than a frame has */
        }
        c->fail_fast = pct(50);
        break;
    }
    case BP_FRAME_LINE:
        c->max_frame_length = max;
        c->fail_fast = pct(50);
        c->strip_delimiter = pct(50);
        break;
    case BP_FRAME_DELIMITER: {
        size_t set = variant % (sizeof DELIMITER_SETS / sizeof DELIMITER_SETS[0]);
        cov.delimiter_sets[set]++;
        conn.model.longest = 0;
        c->delimiter_count = 0;
        for (int i = 0; i < 3 && DELIMITER_SETS[set].bytes[i] != NULL; i++) {
            size_t len = DELIMITER_SETS[set].len[i];
            memcpy(conn.model.delimiter_bytes[i], DELIMITER_SETS[set].bytes[i], len);
            conn.model.delimiters[i] = (bp_delimiter){conn.model.delimiter_bytes[i], len};
            if (len > conn.model.longest) conn.model.longest = len;
            c->delimiter_count++;
        }
        c->delimiters = conn.model.delimiters;
        c->max_frame_length = max;
        c->fail_fast = pct(50);
        c->strip_delimiter = pct(50);
        break;
    }
    case BP_FRAME_FIXED_LENGTH:
        c->frame_length = pct(70) ? 1 + rn(40) : 1 + rn(6000);
        c->max_frame_length = rn(3); /* not used, 0 included */
        c->fail_fast = (int)rn(3);
        break;
    default: break;
    }
}

static void session_begin(void)
{
    choose_decoder();
    cov.sessions[conn.kind]++;
    /* Input config: NULL, the defaults, or max_buffered from below what the longest frame
     * needs to far above it, with read sizes from 1 byte up. */
    bp_input_config_init(&conn.icfg);
    conn.default_icfg = pct(15);
    if (!conn.default_icfg) {
        size_t need = needed_room();
        switch (rn(5)) {
        case 0: break;
        case 1: conn.icfg.max_buffered = need + rn(3 * need + 1); break;
        case 2: conn.icfg.max_buffered = 1 + rn(need + 1); break;
        case 3: conn.icfg.max_buffered = 1 + rn(6000); break;
        default: conn.icfg.max_buffered = need + rn(20000); break;
        }
        if (pct(60)) {
            conn.icfg.min_read = 1 + rn(pct(50) ? 8 : 100);
            conn.icfg.initial_read = conn.icfg.min_read + rn(pct(50) ? 10 : 3000);
            conn.icfg.max_read = conn.icfg.initial_read + rn(pct(50) ? 100 : 70000);
        }
    }
    int err = 0;
    conn.in = bp_input_new(in_alloc, conn.default_icfg ? NULL : &conn.icfg, &err);
    CHECK(conn.in != NULL && err == 0, "bp_input_new: %s", bp_err_name(err));
    conn.read_guess = conn.icfg.initial_read;
    conn.read_was_small = false;
    conn.copied = 0;
    byteq_clear(&conn.unread);
    byteq_clear(&conn.stream);
    byteq_clear(&conn.in_pipe);
    new_decoder();
    CHECK(pipe2(conn.pipe_fd, O_NONBLOCK | O_CLOEXEC) == 0, "pipe2: errno %d", errno);
    conn.eof_sent = false;
    bp_output_config_init(&conn.ocfg);
    if (pct(70)) {
        conn.ocfg.high_water_mark = rn(300);
        conn.ocfg.low_water_mark = rn(conn.ocfg.high_water_mark + 1);
    }
    conn.ocfg.on_writability = on_writability;
    conn.out = bp_output_new(&conn.ocfg, &err);
    CHECK(conn.out != NULL && err == 0, "bp_output_new: %s", bp_err_name(err));
    conn.writable = true;
    writability_calls = 0;
    byteq_clear(&conn.out_bytes);
    n_outq = 0;
    open_socketpair();
    const bp_frame_config *c = &conn.model.c;
    log_op("session kind=%d max=%zu width=%u offset=%zu adj=%" PRId64 " strip=%zu le=%d ff=%d sd=%d fixed=%zu "
           "delimiters=%zu | max_buffered=%zu reads %zu/%zu/%zu%s | water marks %zu/%zu",
           conn.kind, c->max_frame_length, c->length_field_length, c->length_field_offset, c->length_adjustment,
           c->initial_bytes_to_strip, c->little_endian, c->fail_fast, c->strip_delimiter, c->frame_length,
           c->delimiter_count, conn.icfg.max_buffered, conn.icfg.min_read, conn.icfg.initial_read,
           conn.icfg.max_read, conn.default_icfg ? " (NULL config)" : "", conn.ocfg.low_water_mark,
           conn.ocfg.high_water_mark);
}

/* What a server does after BP_ECORRUPT or with an input full and no frame: drops the
 * connection's bytes (here: clears the input, a new decoder, the pipe drained). */
static void reset_connection(void)
{
    cov.resets++;
    log_op("reset (%zu unread, %zu in the pipe)", byteq_len(&conn.unread), byteq_len(&conn.in_pipe));
    bp_input_clear(conn.in);
    byteq_clear(&conn.unread);
    check_input_state("reset");
    bp_frame_decoder_free(conn.dec);
    conn.dec = NULL;
    new_decoder();
    static uint8_t junk[65536];
    while (read(conn.pipe_fd[0], junk, sizeof junk) > 0) continue;
    byteq_clear(&conn.in_pipe);
    byteq_clear(&conn.stream);
}

/* The input is full: decoding must free room, unless max_buffered is below what the
 * longest frame needs ("the input's max_buffered must leave room for the longest"). */
static void unblock_full_input(void)
{
    if (conn.kind == RAW) {
        if (pct(50)) do_raw();
        return;
    }
    do_decode(true);
    if (!input_full()) return;
    CHECK(conn.icfg.max_buffered < needed_room(),
          "stuck: %zu unread = max_buffered %zu >= the %zu a frame needs, and the decoder wants more",
          byteq_len(&conn.unread), conn.icfg.max_buffered, needed_room());
    reset_connection();
}

static void session_end(void)
{
    if (pct(60)) { /* the peer closes: everything in the pipe is read, then BP_EOF */
        close(conn.pipe_fd[1]);
        conn.pipe_fd[1] = -1;
        conn.eof_sent = true;
        for (int i = 0; i < 1000; i++) {
            if (conn.kind != RAW) do_decode(true);
            else if (byteq_len(&conn.unread) > 0) do_raw();
            if (input_full()) {
                CHECK(conn.kind == RAW || conn.icfg.max_buffered < needed_room(),
                      "stuck: %zu unread = max_buffered %zu >= the %zu a frame needs, and the decoder wants more",
                      byteq_len(&conn.unread), conn.icfg.max_buffered, needed_room());
                reset_connection();
            }
            do_read_fd();
            if (byteq_len(&conn.in_pipe) == 0) {
                do_read_fd(); /* BP_EOF */
                break;
            }
        }
        if (conn.kind != RAW) do_decode(true);
    }
    verify_kept();
    if (pct(50)) {
        bp_input_clear(conn.in);
        byteq_clear(&conn.unread);
        check_input_state("end of session");
    }
    /* Frames and slices of the input live on after it (kept buffers). */
    bp_input_free(conn.in);
    conn.in = NULL;
    bp_frame_decoder_free(conn.dec);
    conn.dec = NULL;
    close(conn.pipe_fd[0]);
    if (conn.pipe_fd[1] >= 0) close(conn.pipe_fd[1]);
    /* bp_output_free with buffers queued: each completion called with 0, in order, and no
     * writability callback. */
    writability_calls = 0;
    for (size_t i = 0; i < n_outq; i++)
        if (outq[i].notify) expect_done(outq[i].id, false);
    bp_output_free(conn.out);
    conn.out = NULL;
    CHECK(writability_calls == 0, "bp_output_free called the writability callback");
    check_completions("bp_output_free");
    n_outq = 0;
    close(conn.sock[0]);
    close(conn.sock[1]);
}

/* ------------------------------------------------------------------ a seed's run */

static long total_sessions, total_steps;

/* One step of a session: an operation chosen with these weights. */
static void session_step(void)
{
    int r = (int)rn(100);
    if (r < 25) {
        feed_pipe();
        int reads = 1 + (int)rn(3);
        for (int i = 0; i < reads; i++) do_read_fd();
    } else if (r < 32) {
        do_read_fd();
    } else if (r < 45) {
        do_add();
    } else if (r < 70) {
        if (conn.kind == RAW) do_raw();
        else do_decode(pct(80));
    } else if (r < 78) {
        if (n_kept > 0) drop_random_kept();
    } else if (r < 80) {
        verify_kept();
    } else if (r < 83) {
        check_peek_contents();
    } else if (r < 85) {
        keep_slice_of_peek();
    } else if (r < 92) {
        do_output();
    } else if (r < 94) {
        do_bad();
    } else if (r < 95 && pct(20)) {
        reset_connection();
    } else if (r < 96 && pct(30)) { /* large adds in a row: the input links them (64 and more) */
        int n = 10 + (int)rn(80);
        log_op("burst of %d adds", n);
        for (int i = 0; i < n && !input_full(); i++) {
            forced_chunk = pct(80) ? 4097 + rn(6000) : 1 + rn(9000);
            do_add();
            forced_chunk = 0;
            if (conn.kind != RAW && pct(10)) do_decode(false);
            if (conn.kind == RAW && pct(10)) do_raw();
            if (pct(5)) keep_slice_of_peek();
        }
        check_peek_contents();
    }
    if (input_full()) unblock_full_input();
    while (n_kept > 400) drop_random_kept();
}

static bp_allocator *seed_allocator(void)
{
    int err = 0;
    bp_allocator *a;
    if (seed % 5 == 4) {
        a = bp_allocator_new_unpooled(&err);
    } else { /* two arenas; small chunks for every third seed; release_check for odd ones */
        bp_config cfg;
        bp_config_init(&cfg);
        cfg.arenas = 2;
        if (seed % 3 == 0) cfg.chunk_size = 64 * 1024;
        cfg.release_check = seed & 1;
        a = bp_allocator_new(&cfg, &err);
    }
    CHECK(a != NULL, "allocator: %s", bp_err_name(err));
    return a;
}

static void run_seed(uint64_t s, long steps)
{
    seed = s;
    steps_of_run = steps;
    rng_state = s * 0x2545F4914F6CDD1Dull + 1;
    step = 0;
    session_number = 0;
    n_ops_logged = 0;
    wraps_made = wraps_freed = 0;
    in_alloc = seed_allocator();
    int err = 0;
    other_alloc = bp_allocator_new(NULL, &err);
    CHECK(other_alloc != NULL, "allocator: %s", bp_err_name(err));
    jobs_stop = false;
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, worker, NULL) == 0, "pthread_create");

    session_begin();
    long session_steps = 0;
    total_sessions++;
    for (step = 0; step < steps; step++) {
        session_step();
        if (++session_steps > 300 + (long)rn(3000)) {
            session_end();
            session_begin();
            session_steps = 0;
            total_sessions++;
        }
    }
    total_steps += steps;
    session_end();
    while (n_kept > 0) {
        bool on_worker = pct(50);
        drop_kept(n_kept - 1, on_worker);
    }
    pthread_mutex_lock(&jobs_lock);
    jobs_stop = true;
    pthread_cond_broadcast(&jobs_cond);
    pthread_mutex_unlock(&jobs_lock);
    CHECK(pthread_join(thread, NULL) == 0, "pthread_join");

    /* Everything released: no buffer or view left in either allocator, every wrapped
     * buffer's free function called once. */
    bp_thread_cache_flush(in_alloc);
    bp_thread_cache_flush(other_alloc);
    for (int k = 0; k < 2; k++) {
        bp_allocator_stats st;
        CHECK(bp_allocator_get_stats(k ? other_alloc : in_alloc, &st, sizeof st) == 0, "bp_allocator_get_stats");
        CHECK(st.active_buffers == 0 && st.active_views == 0,
              "leak: %s allocator: active_buffers %" PRIu64 ", active_views %" PRIu64, k ? "the other" : "the input's",
              st.active_buffers, st.active_views);
    }
    CHECK(wraps_made == wraps_freed, "bp_wrap free functions called %ld times for %ld wrapped buffers",
          (long)wraps_freed, (long)wraps_made);
    bp_allocator_destroy(in_alloc);
    bp_allocator_destroy(other_alloc);
    in_alloc = other_alloc = NULL;
    byteq_free(&conn.unread);
    byteq_free(&conn.stream);
    byteq_free(&conn.in_pipe);
    byteq_free(&conn.out_bytes);
    free(kept);
    free(outq);
    kept = NULL;
    outq = NULL;
    cap_kept = cap_outq = 0;
}

/* ------------------------------------------------------------------ main */

static void print_coverage(void)
{
    for (int t = 0; t < N_DECODER_KINDS; t++)
        printf("  decoder kind %d: %ld sessions, %ld frames, %ld too long, %ld corrupt\n", t, cov.sessions[t],
               cov.frames[t], cov.toolong[t], cov.corrupt[t]);
    printf("  BP_EFULL: %ld reads, %ld adds; %ld frames of composites, %ld resets, %ld bytes flushed, %ld EPIPE "
           "flushes, %ld broken buffers refused\n  adds by kind:",
           cov.efull_reads, cov.efull_adds, cov.composite_frames, cov.resets, cov.flushed_bytes, cov.epipe_flushes,
           cov.broken_refused);
    for (int k = 0; k < N_KINDS; k++) printf(" %ld", cov.adds[k]);
    printf("\n  length field sessions by width (1-4, 8): %ld %ld %ld %ld %ld\n  delimiter sessions by set:",
           cov.field_widths[1], cov.field_widths[2], cov.field_widths[3], cov.field_widths[4], cov.field_widths[8]);
    for (int k = 0; k < 10; k++) printf(" %ld", cov.delimiter_sets[k]);
    printf("\n  bad calls by case:");
    for (int k = 0; k < N_BAD_CALLS; k++) printf(" %ld", cov.bad_calls[k]);
    printf("\n");
}

/* The fixed replay must reach every kind of session and every path the checks are for. */
static void require_coverage(void)
{
    bool ok = cov.efull_reads > 0 && cov.efull_adds > 0 && cov.composite_frames > 0 && cov.resets > 0 &&
              cov.flushed_bytes > 0 && cov.epipe_flushes > 0 && cov.broken_refused > 0;
    for (int t = 0; t < N_DECODER_KINDS; t++) ok = ok && cov.sessions[t] > 0 && cov.frames[t] > 0;
    for (int t = BP_FRAME_LENGTH_FIELD; t <= BP_FRAME_DELIMITER; t++) ok = ok && cov.toolong[t] > 0;
    ok = ok && cov.corrupt[BP_FRAME_LENGTH_FIELD] > 0;
    for (int k = 0; k < N_KINDS; k++) ok = ok && cov.adds[k] > 0;
    for (int k = 0; k < N_BAD_CALLS; k++) ok = ok && cov.bad_calls[k] > 0;
    for (int w = 0; w < 5; w++) ok = ok && cov.field_widths[FIELD_WIDTHS[w]] > 0;
    for (int k = 0; k < 10; k++) ok = ok && cov.delimiter_sets[k] > 0;
    if (!ok) {
        print_coverage();
        fprintf(stderr, "fuzz_server: FAIL the fixed seeds no longer reach every case (counters above)\n");
        exit(1);
    }
}

/* The fixed replay: seeds 1 to `seeds`, `steps` each. 12 seeds cover every allocator
 * setting (seed_allocator) and, with about 20 sessions each, every session kind
 * (choose_decoder). Where a step costs more, 50 seeds of fewer steps: their first
 * sessions have every session kind. On a 2-core machine: 2.3 s at -O2, 8 s under ASan
 * (-O0), 22 s under TSan (-Og), 20 s under Valgrind (-Og). */
typedef struct replay_plan {
    int seeds;
    long steps;
} replay_plan;

static replay_plan choose_plan(void)
{
    const char *scale = getenv("BP_TEST_SCALE");
    if (UNDER_TSAN || RUNNING_ON_VALGRIND || (scale != NULL && strcmp(scale, "tsan") == 0))
        return (replay_plan){50, 400};
    if (UNDER_SANITIZER) return (replay_plan){50, 1200};
    return (replay_plan){12, 7000};
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN); /* the output sends with MSG_NOSIGNAL; the pipe never meets it */
    bp_set_misuse_handler(count_misuse, NULL);
    bool stats = getenv("FUZZ_STATS") != NULL;
    if (argc == 3) {
        char *end1, *end2;
        uint64_t s = strtoull(argv[1], &end1, 0);
        long steps = strtol(argv[2], &end2, 0);
        if (*end1 == '\0' && *end2 == '\0' && steps >= 0) {
            run_seed(s, steps);
            printf("fuzz_server: seed %" PRIu64 ": %ld steps, %ld sessions passed (%ld misuse reports, %ld buffers "
                   "released on the worker)\n",
                   s, steps, total_sessions, (long)misuse_count, (long)jobs_done);
            if (stats) print_coverage();
            return 0;
        }
    }
    if (argc != 1) {
        fprintf(stderr, "usage: %s               replay the fixed seeds\n"
                        "       %s SEED STEPS    run one seed\n", argv[0], argv[0]);
        return 2;
    }
    replay_plan plan = choose_plan();
    for (int s = 1; s <= plan.seeds; s++) run_seed((uint64_t)s, plan.steps);
    if (stats) print_coverage();
    require_coverage();
    printf("fuzz_server: %d seeds x %ld steps passed (%ld sessions, %ld misuse reports, %ld buffers released on the "
           "worker)\n",
           plan.seeds, plan.steps, total_sessions, (long)misuse_count, (long)jobs_done);
    return 0;
}
