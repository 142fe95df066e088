/* SPDX-License-Identifier: MIT */
/*
 * Fuzzing the public API: the input is a program of operations on a few buffer handles -
 * allocations of every size category, composites built of parts (added, grown,
 * consolidated, gathered), typed and bulk reads and writes, index moves, growth, slices
 * and read slices (plain ones freed, retained ones of retained ones holding their parent),
 * discards refused while shared (under live retained frames too), transfers between a buffer
 * and its own views with growth, components and originals released behind their holders'
 * backs with the objects recycled in between, read-slice loops that must leave no view
 * alive, retains and releases, including misuse (a release too many, indices out
 * of range, operations on a released buffer right after its release). A shadow copy of
 * every root buffer's bytes checks contents; every step checks the index invariant and that
 * a failing call changed nothing.
 *
 * Built two ways: with -DBP_LIBFUZZER as a libFuzzer target (make fuzz), and as a plain
 * program that replays a fixed set of pseudo-random inputs (a ctest entry in every build,
 * so ASan, TSan and Valgrind see it too).
 */
#include <bytepool.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#if defined(__has_include)
#  if __has_include(<valgrind/memcheck.h>)
#    include <valgrind/memcheck.h>
#  endif
#endif
#ifndef VALGRIND_MAKE_MEM_DEFINED
#  define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

#define SLOTS 8
#define SHADOW_MAX (1u << 20) /* contents are checked for buffers up to this size */

typedef struct slot {
    bp_buf *b;
    bp_buf *root;       /* for views: the slot's root buffer; NULL for roots */
    uint8_t *shadow;    /* roots: expected bytes of [0, capacity); NULL = not checked */
    size_t shadow_cap;
    int views;          /* views made of this root: its contents are no longer checked */
    bool composite;
    bool plain;         /* a plain view: ended with bp_view_free, or with `owner` */
    bp_buf *owner;      /* plain views: the buffer whose count they share */
} slot;

static bp_allocator *allocator;
static slot slots[SLOTS];
static unsigned long parts_added, gathers_checked, betrayals, view_loops, frames; /* reported by the replay */

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz_api: check failed: %s (line %d)\n", #cond, __LINE__);   \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

typedef struct input {
    const uint8_t *data;
    size_t size, at;
} input;

static uint64_t take(input *in, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++) v = v << 8 | (in->at < in->size ? in->data[in->at++] : 0);
    return v;
}

static size_t pick_size(input *in)
{
    switch (take(in, 1) % 8) {
    case 0: return 0;
    case 1: return take(in, 1);                   /* tiny */
    case 2: return take(in, 2) % 4096;            /* small */
    case 3: return take(in, 2) % 30000;           /* up to the largest small class */
    case 4: return 32768 + take(in, 3) % 200000;  /* normal */
    case 5: return ((size_t)4 << 20) + take(in, 2); /* huge */
    case 6: return (size_t)-1 - take(in, 1);      /* absurd: refused */
    default: return take(in, 1) * 16;
    }
}

static void check_invariant(bp_buf *b)
{
    size_t r = bp_reader_index(b), w = bp_writer_index(b), c = bp_capacity(b), m = bp_max_capacity(b);
    if (!(r <= w && w <= c && c <= m)) {
        char line[160];
        bp_describe(b, line, sizeof line);
        fprintf(stderr, "fuzz_api: %s (r %zu w %zu c %zu m %zu)\n", line, r, w, c, m);
    }
    CHECK(r <= w && w <= c && c <= m);
}

static void forget(slot *s)
{
    free(s->shadow);
    memset(s, 0, sizeof *s);
}

/* A root released: its views died with it (plain ones) or hold it (retained ones). */
static void drop_views_of(bp_buf *root)
{
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].b != NULL && slots[i].root == root) forget(&slots[i]);
}

/* A slot's reference to b dropped: plain views sharing b's count may die with it any time
 * from now (when whatever still holds b lets go), so they are not used again. */
static void drop_plain_views_of(bp_buf *b)
{
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].b != NULL && slots[i].plain && slots[i].owner == b) forget(&slots[i]);
}

static void op_alloc(input *in, slot *s)
{
    if (s->b != NULL) return;
    size_t cap = pick_size(in);
    size_t max = take(in, 1) % 2 ? cap + take(in, 2) : BP_DEFAULT_MAX_CAPACITY;
    int err = 0;
    bp_buf *b = bp_alloc_ex(allocator, cap, max, &err);
    if (b == NULL) {
        CHECK(err < 0);
        return;
    }
    CHECK(bp_capacity(b) == cap && bp_refcnt(b) == 1);
    s->b = b;
    if (cap <= SHADOW_MAX) {
        s->shadow = calloc(1, cap ? cap : 1);
        s->shadow_cap = cap;
        CHECK(bp_set_zero(b, 0, cap) == 0); /* a known start */
    }
}

static bool checked(const slot *s) { return s->shadow != NULL && s->views == 0 && s->root == NULL; }

/* A part for a composite: up to 199 bytes of input, some of them already read. */
static bp_buf *make_part(input *in)
{
    size_t n = take(in, 1) % 200, skip = n ? take(in, 1) % (n + 1) / 4 : 0;
    bp_buf *part = bp_alloc(allocator, n);
    CHECK(part != NULL);
    for (size_t i = 0; i < n; i++) CHECK(bp_write_u8(part, (uint8_t)take(in, 1)) == 0);
    CHECK(bp_skip_bytes(part, skip) == 0);
    return part;
}

/* Adds a part to a composite slot (or makes a slot a new composite); the shadow grows by
 * the part's readable bytes, which the composite shows from its old capacity on. */
static void op_compose(input *in, slot *s)
{
    if (s->b == NULL) {
        int err = 0;
        s->b = bp_composite(allocator, 1 + take(in, 1) % 6, &err);
        CHECK(s->b != NULL && err == 0);
        s->composite = true;
        s->shadow = calloc(1, 1);
        s->shadow_cap = 0;
        return;
    }
    if (!s->composite) return;
    if (take(in, 1) % 5 == 0) {
        long before = bp_composite_components(s->b);
        CHECK(bp_composite_consolidate(s->b) == 0);
        CHECK(bp_composite_components(s->b) == (before > 1 ? 1 : before));
        return;
    }
    bp_buf *part = make_part(in);
    size_t len = bp_readable_bytes(part), cap = bp_capacity(s->b), w = bp_writer_index(s->b);
    uint8_t bytes[200];
    CHECK(bp_get_bytes(part, bp_reader_index(part), bytes, len) == 0);
    bool advance = take(in, 1) % 2;
    int rc = bp_composite_add(s->b, part, advance);
    if (rc != 0) { /* nothing changed, and the part is still ours */
        CHECK(bp_capacity(s->b) == cap && bp_writer_index(s->b) == w);
        CHECK(bp_release(part) == 1);
        return;
    }
    CHECK(bp_capacity(s->b) == cap + len && bp_writer_index(s->b) == (advance ? w + len : w));
    parts_added++;
    if (checked(s)) {
        uint8_t *grown = realloc(s->shadow, cap + len + 1);
        CHECK(grown != NULL);
        memcpy(grown + cap, bytes, len);
        s->shadow = grown;
        s->shadow_cap = cap + len;
    }
}

/* The readable bytes as iovec blocks, concatenated, are the readable bytes. */
static void check_gather(slot *s)
{
    struct iovec iov[64];
    int blocks = bp_readable_iovec(s->b, iov, 64);
    CHECK(blocks >= 0);
    if (blocks > 64 || !checked(s)) return;
    size_t at = bp_reader_index(s->b);
    for (int i = 0; i < blocks; i++) {
        CHECK(iov[i].iov_len > 0 && memcmp(iov[i].iov_base, s->shadow + at, iov[i].iov_len) == 0);
        at += iov[i].iov_len;
    }
    CHECK(at == bp_writer_index(s->b));
    gathers_checked++;
}

/* Keeps the shadow as large as the capacity after growth. */
static void follow_growth(slot *s)
{
    if (!checked(s)) return;
    size_t cap = bp_capacity(s->b);
    if (cap == s->shadow_cap) return;
    if (cap > SHADOW_MAX) {
        free(s->shadow);
        s->shadow = NULL;
        return;
    }
    uint8_t *grown = realloc(s->shadow, cap ? cap : 1);
    CHECK(grown != NULL);
    if (cap > s->shadow_cap) {
        /* Bytes past the old capacity are unspecified: make them known. */
        memset(grown + s->shadow_cap, 0, cap - s->shadow_cap);
        CHECK(bp_set_zero(s->b, s->shadow_cap, cap - s->shadow_cap) == 0);
    }
    s->shadow = grown;
    s->shadow_cap = cap;
}

static void op_write(input *in, slot *s)
{
    if (s->b == NULL) return;
    uint8_t bytes[64];
    size_t n = take(in, 1) % (sizeof bytes + 1);
    for (size_t i = 0; i < n; i++) bytes[i] = (uint8_t)take(in, 1);
    /* Growth first, on its own, so the shadow follows it before any byte lands. */
    if (bp_ensure_writable(s->b, n) == 0) follow_growth(s);
    size_t w = bp_writer_index(s->b), before_cap = bp_capacity(s->b);
    int rc;
    if (n == 4 && take(in, 1) % 2) {
        uint32_t v;
        memcpy(&v, bytes, 4);
        rc = bp_write_u32_le(s->b, v);
    } else {
        rc = bp_write_bytes(s->b, bytes, n);
    }
    if (rc != 0) {
        CHECK(bp_writer_index(s->b) == w && bp_capacity(s->b) == before_cap);
        return;
    }
    CHECK(bp_writer_index(s->b) == w + n && bp_capacity(s->b) == before_cap);
    if (checked(s)) memcpy(s->shadow + w, bytes, n);
}

static void op_read(input *in, slot *s)
{
    if (s->b == NULL) return;
    size_t r = bp_reader_index(s->b), n = take(in, 1) % 40;
    uint8_t got[40];
    int rc = bp_read_bytes(s->b, got, n);
    if (rc != 0) {
        CHECK(rc == BP_ERANGE && bp_reader_index(s->b) == r);
        CHECK(n > bp_readable_bytes(s->b));
        return;
    }
    if (checked(s)) CHECK(memcmp(got, s->shadow + r, n) == 0);
}

static void op_get_set(input *in, slot *s)
{
    if (s->b == NULL) return;
    size_t index = take(in, 1) % 2 ? take(in, 3) : take(in, 1);
    uint64_t v = take(in, 8);
    if (take(in, 1) % 2) {
        int rc = bp_set_u64(s->b, index, v);
        if (rc == 0 && checked(s))
            for (int i = 0; i < 8; i++) s->shadow[index + (size_t)i] = (uint8_t)(v >> (56 - 8 * i));
        CHECK(rc == 0 || rc == BP_ERANGE);
    } else {
        uint64_t got = 0xDEADBEEF;
        int rc = bp_get_u64(s->b, index, &got);
        CHECK(rc == 0 || (rc == BP_ERANGE && got == 0xDEADBEEF));
        if (rc == 0 && checked(s)) {
            uint64_t want = 0;
            for (int i = 0; i < 8; i++) want = want << 8 | s->shadow[index + (size_t)i];
            CHECK(got == want);
        }
    }
}

static void op_indices(input *in, slot *s)
{
    if (s->b == NULL) return;
    size_t r = bp_reader_index(s->b), w = bp_writer_index(s->b);
    size_t nr = take(in, 2) % 300, nw = take(in, 2) % 300;
    int rc = bp_set_index(s->b, nr, nw);
    if (rc != 0) CHECK(bp_reader_index(s->b) == r && bp_writer_index(s->b) == w);
    else CHECK(bp_reader_index(s->b) == nr && bp_writer_index(s->b) == nw);
}

static void op_capacity(input *in, slot *s)
{
    if (s->b == NULL) return;
    switch (take(in, 1) % 3) {
    case 0: {
        int rc = bp_ensure_writable(s->b, take(in, 3) % 300000);
        CHECK(rc == 0 || rc == BP_ECAPACITY || rc == BP_ENOMEM);
        break;
    }
    case 1: {
        int rc = bp_set_capacity(s->b, take(in, 2) % 70000);
        CHECK(rc == 0 || rc == BP_ECAPACITY || rc == BP_EINVAL || rc == BP_ENOMEM);
        break;
    }
    default: {
        size_t r = bp_reader_index(s->b), w = bp_writer_index(s->b), c = bp_capacity(s->b);
        int rc = take(in, 1) % 2 ? bp_discard_read_bytes(s->b) : bp_discard_some_read_bytes(s->b);
        CHECK(rc == 0 || rc == BP_ESHARED);
        if (rc == BP_ESHARED) { /* refused: nothing changed */
            CHECK(bp_reader_index(s->b) == r && bp_writer_index(s->b) == w && bp_capacity(s->b) == c);
        } else if (checked(s)) { /* the readable bytes moved to 0: the shadow is no longer exact */
            free(s->shadow);
            s->shadow = NULL;
        }
        return;
    }
    }
    follow_growth(s);
}

/* Bytes between two slots (perhaps one buffer, or a view and its root): bp_write_buf (which
 * may grow the destination) or bp_set_buf. The destination then holds the source's bytes as
 * they were before the call. */
static void op_transfer(input *in, slot *s)
{
    slot *t = &slots[take(in, 1) % SLOTS];
    if (s->b == NULL || t->b == NULL) return;
    bool relative = take(in, 1) % 2;
    size_t n = take(in, 1) % 3 == 0 ? take(in, 2) % 5000 : take(in, 1);
    size_t si = relative ? bp_reader_index(t->b) : take(in, 1) % 2 ? take(in, 2) : take(in, 1);
    size_t di = relative ? bp_writer_index(s->b) : take(in, 1) % 2 ? take(in, 2) : take(in, 1);
    size_t cap = bp_capacity(s->b), w = bp_writer_index(s->b), r = bp_reader_index(t->b);
    uint8_t *bytes = malloc(n ? n : 1);
    CHECK(bytes != NULL);
    bool known = bp_get_bytes(t->b, si, bytes, n) == 0;
    int rc = relative ? bp_write_buf(s->b, t->b, n) : bp_set_buf(s->b, di, t->b, si, n);
    if (rc != 0) {
        CHECK(rc == BP_ERANGE || rc == BP_ECAPACITY || rc == BP_EINVAL || rc == BP_ENOMEM);
        CHECK(bp_capacity(s->b) == cap && bp_writer_index(s->b) == w && bp_reader_index(t->b) == r);
        free(bytes);
        return;
    }
    CHECK(known);
    if (relative) CHECK(bp_writer_index(s->b) == w + n && bp_reader_index(t->b) == r + n);
    uint8_t *got = malloc(n ? n : 1);
    CHECK(got != NULL && bp_get_bytes(s->b, di, got, n) == 0);
    /* Bytes never written have no value (to Valgrind: undefined); each copy has the same. */
    VALGRIND_MAKE_MEM_DEFINED(bytes, n);
    VALGRIND_MAKE_MEM_DEFINED(got, n);
    CHECK(memcmp(got, bytes, n) == 0);
    free(got);
    if (checked(s)) {
        size_t grown = bp_capacity(s->b), end = di + n;
        if (grown != cap && grown > SHADOW_MAX) {
            free(s->shadow);
            s->shadow = NULL;
        } else if (grown != cap) { /* growth: bytes past the old capacity not written are unspecified */
            uint8_t *bigger = realloc(s->shadow, grown);
            CHECK(bigger != NULL);
            size_t from = end > cap ? end : cap;
            memset(bigger + from, 0, grown - from);
            CHECK(bp_set_zero(s->b, from, grown - from) == 0);
            s->shadow = bigger;
            s->shadow_cap = grown;
        }
        if (s->shadow != NULL) memcpy(s->shadow + di, bytes, n);
    }
    free(bytes);
}

static void op_view(input *in, slot *s)
{
    if (s->b == NULL) return;
    slot *v = NULL;
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].b == NULL) v = &slots[i];
    if (v == NULL) return;
    bp_buf *root = s->root != NULL ? s->root : s->b;
    size_t index = take(in, 1), len = take(in, 1), r = bp_reader_index(s->b);
    int err = 0;
    bool retained = take(in, 1) % 2;
    unsigned kind = (unsigned)take(in, 1) % 4;
    bp_buf *view = kind == 0   ? (retained ? bp_retained_duplicate(s->b, &err) : bp_duplicate(s->b, &err))
                   : kind == 1 ? (retained ? bp_read_retained_slice(s->b, len % 16, &err) : bp_read_slice(s->b, len % 16, &err))
                   : retained  ? bp_retained_slice(s->b, index, len, &err)
                               : bp_slice(s->b, index, len, &err);
    if (view == NULL) {
        CHECK(err == BP_ERANGE || err == BP_EREFCNT);
        CHECK(bp_reader_index(s->b) == r);
        return;
    }
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].b == root) slots[i].views++;
    /* Retained views are kept in a slot of their own; plain ones too when they share the
     * count of a slot's buffer (they end with bp_view_free, or with that buffer). */
    v->b = view;
    v->root = root;
    if (!retained) {
        v->plain = true;
        v->owner = s->plain ? s->owner : s->b;
    }
    check_invariant(view);
}

static void op_release(input *in, slot *s)
{
    if (s->b == NULL) return;
    if (take(in, 1) % 4 == 0) { /* share it for a moment */
        CHECK(bp_retain(s->b) == 0);
        CHECK(bp_release(s->b) == 0);
    }
    bp_buf *b = s->b;
    bool is_root = s->root == NULL;
    if (s->plain) { /* a plain view ends by itself; its original and the count stay */
        CHECK(bp_view_free(b) == 0);
        forget(s);
        CHECK(bp_view_free(b) == BP_EFREED);
        return;
    }
    int rc = bp_release(b);
    drop_plain_views_of(b);
    if (rc == 0) { /* retained views still hold it, but this slot's reference is gone */
        forget(s);
        return;
    }
    CHECK(rc == 1);
    /* Right after the release (before any allocation could hand the object out again),
     * every use is refused. */
    uint32_t v;
    CHECK(bp_read_u32(b, &v) == BP_EFREED);
    CHECK(bp_release(b) == BP_EFREED);
    if (is_root) drop_views_of(b);
    forget(s);
}

/* Misuse behind a holder's back, with the object recycled in between: a component released
 * through the caller's pointer (or a root over-released under its retained view), then a
 * buffer of the same size allocated - usually on the same object. The composite (view) must
 * refuse every call with BP_EFREED, never touch the new owner's bytes, and its end must not
 * release the new owner's buffer. Self-contained: no slot is involved. */
static void op_betray(input *in)
{
    size_t n = 1 + take(in, 1) % 96;
    uint8_t fill = (uint8_t)take(in, 1);
    bool composite = take(in, 1) % 2;
    bp_buf *victim = bp_alloc(allocator, n);
    CHECK(victim != NULL);
    CHECK(bp_write_zero(victim, n) == 0);
    bp_buf *holder;
    int err = 0;
    if (composite) {
        holder = bp_composite(allocator, 1 + take(in, 1) % 4, &err);
        CHECK(holder != NULL && bp_composite_add(holder, victim, 1) == 0);
        CHECK(bp_release(victim) == 1); /* the composite's reference, behind its back */
    } else {
        holder = bp_retained_slice(victim, 0, n, &err);
        CHECK(holder != NULL && bp_refcnt(victim) == 2);
        CHECK(bp_release_n(victim, 2) == 1); /* the view's reference too */
    }
    bp_buf *next = bp_alloc(allocator, n); /* perhaps victim's object and memory again */
    CHECK(next != NULL);
    uint8_t want[96], got[96];
    memset(want, fill, n);
    CHECK(bp_write_bytes(next, want, n) == 0);
    uint8_t byte;
    CHECK(bp_read_u8(holder, &byte) == BP_EFREED);
    CHECK(bp_set_u8(holder, 0, (uint8_t)~fill) == BP_EFREED);
    CHECK(bp_write_u8(holder, 1) == BP_EFREED);
    CHECK(bp_get_bytes(holder, 0, got, 1) == BP_EFREED);
    CHECK(bp_release(holder) == 1); /* ends the holder, leaves next alone */
    CHECK(bp_refcnt(next) == 1 && bp_readable_bytes(next) == n);
    CHECK(bp_get_bytes(next, 0, got, n) == 0 && memcmp(got, want, n) == 0);
    CHECK(bp_release(next) == 1);
    betrayals++;
}

/* A decoder's loop: a read slice per frame taken from a slot's buffer and freed at once,
 * hundreds of times; the live view count comes back to where it was. */
static void op_view_loop(input *in, slot *s)
{
    if (s->b == NULL) return;
    bp_allocator_stats before, after;
    CHECK(bp_allocator_get_stats(allocator, &before, sizeof before) == 0);
    size_t r = bp_reader_index(s->b), rounds = take(in, 2) % 1000;
    for (size_t i = 0; i < rounds; i++) {
        size_t len = bp_readable_bytes(s->b) < 8 ? bp_readable_bytes(s->b) : 8;
        int err = 0;
        bp_buf *frame = bp_read_slice(s->b, len, &err);
        CHECK(frame != NULL && err == 0 && bp_readable_bytes(frame) == len);
        CHECK(bp_view_free(frame) == 0);
        if (bp_readable_bytes(s->b) == 0) CHECK(bp_set_reader_index(s->b, r) == 0);
    }
    CHECK(bp_set_reader_index(s->b, r) == 0);
    CHECK(bp_allocator_get_stats(allocator, &after, sizeof after) == 0);
    CHECK(after.active_views == before.active_views);
    view_loops++;
}

/* A server's input: a retained read slice as a frame, then discards (refused while the frame
 * lives) and growth of the input; the frame shows its bytes throughout. */
static void op_frame(input *in, slot *s)
{
    if (s->b == NULL || s->plain || bp_readable_bytes(s->b) == 0) return;
    size_t len = 1 + take(in, 1) % bp_readable_bytes(s->b);
    if (len > 256) len = 256;
    uint8_t want[256], got[256];
    size_t r = bp_reader_index(s->b), w = bp_writer_index(s->b);
    CHECK(bp_get_bytes(s->b, r, want, len) == 0);
    int err = 0;
    bp_buf *frame = bp_read_retained_slice(s->b, len, &err);
    if (frame == NULL) {
        CHECK(err == BP_EREFCNT || err == BP_ENOMEM);
        return;
    }
    CHECK(bp_reader_index(s->b) == r + len);
    CHECK(bp_discard_read_bytes(s->b) == BP_ESHARED);
    int some = bp_discard_some_read_bytes(s->b); /* 0 when it would not pay */
    CHECK(some == BP_ESHARED || some == 0);
    CHECK(bp_reader_index(s->b) == r + len && bp_writer_index(s->b) == w);
    if (take(in, 1) % 2 && bp_ensure_writable(s->b, take(in, 2) % 5000) == 0) follow_growth(s);
    CHECK(bp_get_bytes(frame, 0, got, len) == 0);
    /* Bytes never written have no value (to Valgrind: undefined); each copy has the same. */
    VALGRIND_MAKE_MEM_DEFINED(want, len);
    VALGRIND_MAKE_MEM_DEFINED(got, len);
    CHECK(memcmp(got, want, len) == 0);
    CHECK(bp_release(frame) == 1);
    frames++;
}

static void run(const uint8_t *data, size_t size)
{
    input in = {data, size, 0};
    if (take(&in, 1) % 4 == 0) {
        allocator = bp_allocator_new_unpooled(NULL);
    } else {
        /* Half the programs with leak detection at some level: tracked buffers (records,
         * untracking on release, access notes, paranoid's held-back objects) among fast
         * untracked ones. */
        bp_config cfg;
        bp_config_init(&cfg);
        unsigned level = (unsigned)take(&in, 1) % 8;
        cfg.leak_detection = level < 4 ? level : BP_LEAK_DISABLED;
        cfg.leak_sampling_interval = 1 + (unsigned)take(&in, 1) % 4;
        allocator = bp_allocator_new(&cfg, NULL);
    }
    CHECK(allocator != NULL);
    memset(slots, 0, sizeof slots);
    while (in.at < in.size) {
        slot *s = &slots[take(&in, 1) % SLOTS];
        switch (take(&in, 1) % 15) {
        case 12: op_betray(&in); break;
        case 13: op_view_loop(&in, s); break;
        case 14: op_frame(&in, s); break;
        case 0: case 1: op_alloc(&in, s); break;
        case 9: op_compose(&in, s); break;
        case 10: if (s->b != NULL) check_gather(s); break;
        case 11: op_transfer(&in, s); break;
        case 2: op_write(&in, s); break;
        case 3: op_read(&in, s); break;
        case 4: op_get_set(&in, s); break;
        case 5: op_indices(&in, s); break;
        case 6: op_capacity(&in, s); break;
        case 7: op_view(&in, s); break;
        default: op_release(&in, s); break;
        }
        if (s->b != NULL) check_invariant(s->b);
    }
    /* Release what is left, each slot's one reference: plain views, retained views (a
     * parent released before its child lives on in the child), then roots - whose counts
     * must be back to exactly that one reference. */
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < SLOTS; i++) {
            slot *s = &slots[i];
            if (s->b == NULL || (pass == 0) != s->plain || (pass == 1) != (!s->plain && s->root != NULL)) continue;
            if (pass == 0) CHECK(bp_view_free(s->b) == 0);
            else if (pass == 1) CHECK(bp_release(s->b) >= 0);
            else CHECK(bp_release(s->b) == 1);
            forget(s);
        }
    bp_allocator_stats st;
    bp_allocator_get_stats(allocator, &st, sizeof st);
    CHECK(st.active_buffers == 0);
    CHECK(st.active_views == 0);
    CHECK(st.active_bytes == 0);
    CHECK(bp_leak_report(allocator) == 0); /* every tracked buffer was untracked */
    bp_allocator_destroy(allocator);
}

#ifdef BP_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run(data, size);
    return 0;
}
#else
int main(int argc, char **argv)
{
    int inputs = argc > 1 ? atoi(argv[1]) : 2000;
    /* Under TSan (BP_TEST_SCALE=tsan) every 10th input: the same inputs as the other builds
     * replay, of every length, in a tenth of the time. */
    const char *scale = getenv("BP_TEST_SCALE");
    int every = scale != NULL && strcmp(scale, "tsan") == 0 ? 10 : 1;
    int replayed = 0;
    uint64_t x = 0x243F6A8885A308D3ull;
    uint8_t data[4096];
    for (int i = 0; i < inputs; i++) {
        size_t size = 64 + (size_t)(i * 13) % (sizeof data - 64);
        for (size_t k = 0; k < size; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            data[k] = (uint8_t)x;
        }
        if (i % every != 0) continue;
        run(data, size);
        replayed++;
    }
    printf("fuzz_api: %d inputs replayed (%lu composite parts added, %lu gathers checked, %lu betrayals, %lu view "
           "loops, %lu frames)\n", replayed, parts_added, gathers_checked, betrayals, view_loops, frames);
    printf("%d passed, 0 failed\n", replayed);
    return 0;
}
#endif
