/* SPDX-License-Identifier: MIT */
/* Frame decoders (length field, line, delimiter, fixed length) over bp_input, and
 * bp_index_of_bytes. Netty's documented examples, every length-field width and byte order,
 * frames fed byte by byte, split across reads and across components, frames too long with
 * and without fail_fast, malformed input. */
#include "test_util.h"

#include "common.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>

static int teardown(void **state)
{
    misuse_capture_stop();
    bp_allocator_stats s;
    bp_allocator_get_stats(*state, &s, sizeof s);
    assert_int_equal(s.active_buffers, 0); /* nothing leaked: frames, skipped bytes, inputs */
    bp_allocator_destroy(*state);
    return 0;
}

static bp_frame_decoder *decoder(const bp_frame_config *cfg)
{
    int err = 1;
    bp_frame_decoder *d = bp_frame_decoder_new(cfg, &err);
    assert_non_null(d);
    assert_int_equal(err, 0);
    return d;
}

static bp_frame_decoder *length_decoder(size_t offset, unsigned width, int64_t adjustment, size_t strip)
{
    bp_frame_config cfg;
    bp_frame_config_init(&cfg, BP_FRAME_LENGTH_FIELD);
    cfg.length_field_offset = offset;
    cfg.length_field_length = width;
    cfg.length_adjustment = adjustment;
    cfg.initial_bytes_to_strip = strip;
    return decoder(&cfg);
}

/* Appends n bytes to the input as one buffer (copied in or linked, as the input decides). */
static void feed(bp_allocator *a, bp_input *in, const void *bytes, size_t n)
{
    bp_buf *b = bp_alloc(a, n);
    assert_int_equal(bp_write_bytes(b, bytes, n), 0);
    assert_int_equal(bp_input_add(in, b), 0);
}

/* Decodes one frame and checks its bytes. */
static void expect_frame(bp_frame_decoder *d, bp_input *in, const void *bytes, size_t n)
{
    bp_buf *frame = NULL;
    assert_int_equal(bp_frame_decode(d, in, &frame), 1);
    assert_non_null(frame);
    assert_int_equal(bp_readable_bytes(frame), n);
    uint8_t *got = malloc(n + 1);
    assert_int_equal(bp_get_bytes(frame, bp_reader_index(frame), got, n), 0);
    assert_memory_equal(got, bytes, n);
    free(got);
    assert_int_equal(bp_release(frame), 1);
}

static void expect_need_more(bp_frame_decoder *d, bp_input *in)
{
    bp_buf *frame = (bp_buf *)(uintptr_t)1;
    assert_int_equal(bp_frame_decode(d, in, &frame), 0);
    assert_null(frame);
}

static void expect_error(bp_frame_decoder *d, bp_input *in, int err)
{
    bp_buf *frame = NULL;
    assert_int_equal(bp_frame_decode(d, in, &frame), err);
    assert_null(frame);
}

/* ---------------------------------------------------------------------------------------
 * Length field: Netty's javadoc tables
 * ------------------------------------------------------------------------------------- */

typedef struct netty_example {
    size_t offset;
    unsigned width;
    int64_t adjustment;
    size_t strip;
    const char *before; /* the bytes in (C string, with embedded \0 via before_len) */
    size_t before_len;
    size_t after_from;  /* the frame is before[after_from .. before_len) */
} netty_example;

#define HW "HELLO, WORLD"
static const netty_example netty_examples[] = {
    /* 2 bytes length field at offset 0, do not strip header */
    {0, 2, 0, 0, "\x00\x0c" HW, 14, 0},
    /* 2 bytes length field at offset 0, strip header */
    {0, 2, 0, 2, "\x00\x0c" HW, 14, 2},
    /* 2 bytes length field at offset 0, do not strip header, the length field represents
     * the length of the whole message */
    {0, 2, -2, 0, "\x00\x0e" HW, 14, 0},
    /* 3 bytes length field at the end of 5 bytes header, do not strip header */
    {2, 3, 0, 0, "\xca\xfe\x00\x00\x0c" HW, 17, 0},
    /* 3 bytes length field at the beginning of 5 bytes header, do not strip header */
    {0, 3, 2, 0, "\x00\x00\x0c\xca\xfe" HW, 17, 0},
    /* 2 bytes length field at offset 1 in the middle of 4 bytes header, strip the first
     * header field and the length field */
    {1, 2, 1, 3, "\xca\x00\x0c\xfe" HW, 16, 3},
    /* ... the length field represents the length of the whole message */
    {1, 2, -3, 3, "\xca\x00\x10\xfe" HW, 16, 3},
};

static void test_netty_javadoc_examples(void **state)
{
    bp_allocator *a = *state;
    for (size_t i = 0; i < sizeof netty_examples / sizeof netty_examples[0]; i++) {
        const netty_example *e = &netty_examples[i];
        bp_frame_decoder *d = length_decoder(e->offset, e->width, e->adjustment, e->strip);
        bp_input *in = bp_input_new(a, NULL, NULL);
        /* Twice in a row, the second cut in two. */
        feed(a, in, e->before, e->before_len);
        feed(a, in, e->before, e->before_len / 2);
        expect_frame(d, in, e->before + e->after_from, e->before_len - e->after_from);
        expect_need_more(d, in);
        feed(a, in, e->before + e->before_len / 2, e->before_len - e->before_len / 2);
        expect_frame(d, in, e->before + e->after_from, e->before_len - e->after_from);
        expect_need_more(d, in);
        assert_null(bp_input_peek(in));
        bp_input_free(in);
        bp_frame_decoder_free(d);
    }
}

/* The length field's value in `width` bytes at p, in the given order. */
static void put_length(uint8_t *p, unsigned width, uint64_t value, bool little_endian)
{
    for (unsigned i = 0; i < width; i++) {
        unsigned shift = 8 * (little_endian ? i : width - 1 - i);
        p[i] = (uint8_t)(value >> shift);
    }
}

/* Every width and byte order, with a 3-byte header before the field, an adjustment and a
 * strip; frames of many lengths fed one byte at a time. */
static void test_every_width_and_order_byte_by_byte(void **state)
{
    bp_allocator *a = *state;
    static const unsigned widths[] = {1, 2, 3, 4, 8};
    for (size_t w = 0; w < 5; w++) {
        for (int le = 0; le < 2; le++) {
            unsigned width = widths[w];
            bp_frame_config cfg;
            bp_frame_config_init(&cfg, BP_FRAME_LENGTH_FIELD);
            cfg.length_field_offset = 3;
            cfg.length_field_length = width;
            cfg.length_adjustment = -1; /* the value counts one byte more than follows */
            cfg.initial_bytes_to_strip = 3 + width;
            cfg.little_endian = le;
            bp_frame_decoder *d = decoder(&cfg);
            bp_input *in = bp_input_new(a, NULL, NULL);
            uint8_t msg[3 + 8 + 250];
            for (size_t len = 0; len < 250; len += 37) {
                memcpy(msg, "HDR", 3);
                put_length(msg + 3, width, len + 1, le);
                for (size_t i = 0; i < len; i++) msg[3 + width + i] = (uint8_t)(i ^ len);
                size_t total = 3 + width + len;
                for (size_t i = 0; i + 1 < total; i++) {
                    feed(a, in, msg + i, 1);
                    expect_need_more(d, in);
                }
                feed(a, in, msg + total - 1, 1);
                expect_frame(d, in, msg + 3 + width, len);
                expect_need_more(d, in);
            }
            bp_input_free(in);
            bp_frame_decoder_free(d);
        }
    }
}

/* Frames split across reads from a pipe, pipelined, in random cuts. */
static void test_frames_split_across_reads(void **state)
{
    bp_allocator *a = *state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
    bp_frame_decoder *d = length_decoder(0, 2, 0, 2);
    bp_input_config icfg;
    bp_input_config_init(&icfg);
    icfg.min_read = icfg.initial_read = 16; /* small reads: many cuts */
    bp_input *in = bp_input_new(a, &icfg, NULL);
    uint64_t rng = 0x9e3779b97f4a7c15u;
    uint8_t stream[20000];
    size_t len = 0, frames = 0;
    while (len < sizeof stream - 600) {
        size_t n = test_rand(&rng) % 500;
        put_length(stream + len, 2, n, false);
        for (size_t i = 0; i < n; i++) stream[len + 2 + i] = (uint8_t)test_rand(&rng);
        len += 2 + n;
        frames++;
    }
    size_t sent = 0, at = 0, got = 0;
    while (got < frames) {
        if (sent < len) {
            size_t n = 1 + test_rand(&rng) % 700;
            if (n > len - sent) n = len - sent;
            assert_int_equal(write(fds[1], stream + sent, n), (ssize_t)n);
            sent += n;
        }
        while (bp_input_read_fd(in, fds[0]) > 0) continue;
        bp_buf *frame;
        int rc;
        while ((rc = bp_frame_decode(d, in, &frame)) == 1) {
            size_t n = ((size_t)stream[at] << 8) | stream[at + 1];
            assert_int_equal(bp_readable_bytes(frame), n);
            uint8_t body[512];
            assert_int_equal(bp_read_bytes(frame, body, n), 0);
            assert_memory_equal(body, stream + at + 2, n);
            bp_release(frame);
            at += 2 + n;
            got++;
        }
        assert_int_equal(rc, 0);
    }
    assert_int_equal(at, len);
    assert_int_equal(bp_input_readable(in), 0);
    bp_input_free(in);
    bp_frame_decoder_free(d);
    close(fds[0]);
    close(fds[1]);
}

/* Frames across the components of a composite input (buffers above the copy limit are
 * linked, not copied). */
static void test_frames_across_components(void **state)
{
    bp_allocator *a = *state;
    bp_frame_decoder *d = length_decoder(0, 4, 0, 4);
    bp_input *in = bp_input_new(a, NULL, NULL);
    static uint8_t stream[3 * 6000];
    size_t len = 0;
    static const size_t sizes[] = {4000, 7000, 1, 0, 5000};
    for (size_t i = 0; i < 5; i++) {
        put_length(stream + len, 4, sizes[i], false);
        for (size_t k = 0; k < sizes[i]; k++) stream[len + 4 + k] = (uint8_t)(k * 13 + i);
        len += 4 + sizes[i];
    }
    feed(a, in, stream, 6000);
    feed(a, in, stream + 6000, 6000);
    feed(a, in, stream + 12000, len - 12000);
    assert_true(bp_composite_components(bp_input_peek(in)) >= 2);
    size_t at = 0;
    for (size_t i = 0; i < 5; i++) {
        expect_frame(d, in, stream + at + 4, sizes[i]);
        at += 4 + sizes[i];
    }
    expect_need_more(d, in);
    bp_input_free(in);
    bp_frame_decoder_free(d);
}

/* ---------------------------------------------------------------------------------------
 * Frames too long, malformed input
 * ------------------------------------------------------------------------------------- */

/* A frame of 1000 bytes against a maximum of 100, arriving in pieces, then a good frame.
 * fail_fast: the error as soon as the length is read; otherwise once the frame went by. */
static void too_long_length_field(bp_allocator *a, int fail_fast)
{
    bp_frame_config cfg;
    bp_frame_config_init(&cfg, BP_FRAME_LENGTH_FIELD);
    cfg.length_field_length = 2;
    cfg.max_frame_length = 100;
    cfg.fail_fast = fail_fast;
    bp_frame_decoder *d = decoder(&cfg);
    bp_input *in = bp_input_new(a, NULL, NULL);
    uint8_t big[1000];
    memset(big, 'x', sizeof big);
    put_length(big, 2, 998, false);
    const uint8_t good[] = {0, 3, 'o', 'k', '!'};
    feed(a, in, big, 300);
    if (fail_fast) expect_error(d, in, BP_ETOOLONG);
    else expect_need_more(d, in);
    assert_int_equal(bp_input_readable(in), 0); /* skipped, and nothing held */
    feed(a, in, big + 300, 300);
    expect_need_more(d, in);
    feed(a, in, big + 600, 399);
    expect_need_more(d, in);
    /* The last byte of the bad frame and a good one, in one piece. */
    uint8_t tail[1 + sizeof good];
    tail[0] = 'x';
    memcpy(tail + 1, good, sizeof good);
    feed(a, in, tail, sizeof tail);
    if (!fail_fast) expect_error(d, in, BP_ETOOLONG);
    expect_frame(d, in, good, sizeof good);
    expect_need_more(d, in);
    /* Whole in the input at once, followed by a good frame: the error at once in both modes,
     * then the good frame. */
    uint8_t both[1000 + sizeof good];
    memcpy(both, big, 1000);
    memcpy(both + 1000, good, sizeof good);
    feed(a, in, both, sizeof both);
    expect_error(d, in, BP_ETOOLONG);
    expect_frame(d, in, good, sizeof good);
    expect_need_more(d, in);
    bp_input_free(in);
    bp_frame_decoder_free(d);
}

static void test_too_long_fail_fast(void **state) { too_long_length_field(*state, 1); }
static void test_too_long_fail_late(void **state) { too_long_length_field(*state, 0); }

static void test_malformed_length_field(void **state)
{
    bp_allocator *a = *state;
    const uint8_t good[] = {0, 0, 0, 0, 0, 0, 0, 2, 'h', 'i'};
    /* An 8-byte value above INT64_MAX (negative as Java's long): the field is skipped. */
    bp_frame_decoder *d = length_decoder(0, 8, 0, 0);
    bp_input *in = bp_input_new(a, NULL, NULL);
    const uint8_t negative[] = {0x80, 0, 0, 0, 0, 0, 0, 1, 'z'};
    feed(a, in, negative, sizeof negative);
    feed(a, in, good, sizeof good);
    expect_error(d, in, BP_ECORRUPT);
    assert_int_equal(bp_input_readable(in), 1 + sizeof good); /* 8 bytes skipped */
    assert_int_equal(bp_input_skip(in, 1), 0);
    expect_frame(d, in, good, sizeof good);
    bp_frame_decoder_free(d);
    /* An adjustment that makes the frame shorter than the header. */
    d = length_decoder(0, 2, -5, 0);
    const uint8_t shorter[] = {0, 2, 0, 9, 'a', 'b', 'c', 'd'};
    feed(a, in, shorter, sizeof shorter);
    expect_error(d, in, BP_ECORRUPT); /* 2 - 5 + 2 < 2; the field is skipped */
    expect_frame(d, in, shorter + 2, 6); /* 9 - 5 = 4 bytes after the next field */
    expect_need_more(d, in);
    bp_frame_decoder_free(d);
    /* More to strip than the frame has: the frame is skipped. */
    d = length_decoder(0, 1, 0, 4);
    const uint8_t strip[] = {2, 'a', 'b', 3, 'c', 'd', 'e'};
    feed(a, in, strip, sizeof strip);
    expect_error(d, in, BP_ECORRUPT);
    expect_frame(d, in, "", 0);
    expect_need_more(d, in);
    bp_frame_decoder_free(d);
    /* Overflow of value + adjustment; a negative value that the adjustment would bring back
     * to a plausible length is still malformed. */
    d = length_decoder(0, 8, INT64_MAX, 0);
    const uint8_t huge[] = {0, 0, 0, 0, 0, 0, 0, 1};
    feed(a, in, huge, sizeof huge);
    expect_error(d, in, BP_ECORRUPT);
    assert_int_equal(bp_input_readable(in), 0);
    const uint8_t back[] = {0x80, 0, 0, 0, 0, 0, 0, 1};
    feed(a, in, back, sizeof back);
    expect_error(d, in, BP_ECORRUPT);
    assert_int_equal(bp_input_readable(in), 0);
    bp_frame_decoder_free(d);
    bp_input_free(in);
}

/* ---------------------------------------------------------------------------------------
 * Lines, delimiters, fixed length
 * ------------------------------------------------------------------------------------- */

static bp_frame_decoder *line_decoder(size_t max, int strip, int fail_fast)
{
    bp_frame_config cfg;
    bp_frame_config_init(&cfg, BP_FRAME_LINE);
    assert_int_equal(cfg.fail_fast, 0); /* Netty's default for lines */
    cfg.max_frame_length = max;
    cfg.strip_delimiter = strip;
    cfg.fail_fast = fail_fast;
    return decoder(&cfg);
}

static void feed_text(bp_allocator *a, bp_input *in, const char *text) { feed(a, in, text, strlen(text)); }

static void expect_text(bp_frame_decoder *d, bp_input *in, const char *text)
{
    expect_frame(d, in, text, strlen(text));
}

static void test_lines_crlf_and_lf(void **state)
{
    bp_allocator *a = *state;
    for (int strip = 0; strip < 2; strip++) {
        bp_frame_decoder *d = line_decoder(80, strip, 0);
        bp_input *in = bp_input_new(a, NULL, NULL);
        const char *text = "first\r\nsecond\n\r\nlast\rline\r\n";
        for (const char *p = text; *p != '\0'; p++) feed(a, in, p, 1); /* byte by byte */
        expect_text(d, in, strip ? "first" : "first\r\n");
        expect_text(d, in, strip ? "second" : "second\n");
        expect_text(d, in, strip ? "" : "\r\n");
        expect_text(d, in, strip ? "last\rline" : "last\rline\r\n");
        expect_need_more(d, in);
        feed_text(a, in, "no end yet");
        expect_need_more(d, in);
        feed_text(a, in, "\n");
        expect_text(d, in, strip ? "no end yet" : "no end yet\n");
        bp_input_free(in);
        bp_frame_decoder_free(d);
    }
}

static void test_line_maximum(void **state)
{
    bp_allocator *a = *state;
    for (int fail_fast = 0; fail_fast < 2; fail_fast++) {
        bp_frame_decoder *d = line_decoder(5, 1, fail_fast);
        bp_input *in = bp_input_new(a, NULL, NULL);
        /* Exactly the maximum is fine; one more with its end in sight fails at once. */
        feed_text(a, in, "12345\r\n123456\nok\n");
        expect_text(d, in, "12345");
        expect_error(d, in, BP_ETOOLONG);
        expect_text(d, in, "ok");
        /* Too long with no end in sight: at once with fail_fast, at its end without. */
        feed_text(a, in, "1234567");
        if (fail_fast) expect_error(d, in, BP_ETOOLONG);
        else expect_need_more(d, in);
        feed_text(a, in, "89");
        expect_need_more(d, in);
        feed_text(a, in, "0\r\nnext\r\n");
        if (!fail_fast) expect_error(d, in, BP_ETOOLONG);
        expect_text(d, in, "next");
        expect_need_more(d, in);
        bp_input_free(in);
        bp_frame_decoder_free(d);
    }
}

static bp_frame_decoder *delimiter_decoder(const bp_delimiter *delims, size_t count, size_t max, int strip,
                                           int fail_fast)
{
    bp_frame_config cfg;
    bp_frame_config_init(&cfg, BP_FRAME_DELIMITER);
    cfg.delimiters = delims;
    cfg.delimiter_count = count;
    cfg.max_frame_length = max;
    cfg.strip_delimiter = strip;
    cfg.fail_fast = fail_fast;
    return decoder(&cfg);
}

static void test_delimiters_first_match_wins(void **state)
{
    bp_allocator *a = *state;
    char end[] = "END", bars[] = "||";
    const bp_delimiter delims[] = {{end, 3}, {bars, 2}};
    bp_frame_decoder *d = delimiter_decoder(delims, 2, 100, 1, 1);
    memcpy(end, "XXX", 3); /* the decoder keeps its own copy */
    bp_input *in = bp_input_new(a, NULL, NULL);
    const char *text = "aEND||b||cENDxyzEN";
    for (const char *p = text; *p != '\0'; p++) feed(a, in, p, 1);
    expect_text(d, in, "a");
    expect_text(d, in, "");
    expect_text(d, in, "b");
    expect_text(d, in, "c");
    expect_need_more(d, in);
    feed_text(a, in, "D");
    expect_text(d, in, "xyz");
    bp_frame_decoder_free(d);
    /* Two found at the same place: the one listed first. */
    const bp_delimiter nested[] = {{"ab", 2}, {"abc", 3}};
    d = delimiter_decoder(nested, 2, 100, 1, 1);
    feed_text(a, in, "xabc");
    expect_text(d, in, "x");
    assert_int_equal(bp_input_readable(in), 1);
    bp_frame_decoder_free(d);
    d = delimiter_decoder(nested + 1, 1, 100, 1, 1);
    feed_text(a, in, "abc");
    expect_text(d, in, "c");
    bp_frame_decoder_free(d);
    /* Keeping the delimiter. */
    d = delimiter_decoder(delims + 1, 1, 100, 0, 1);
    feed_text(a, in, "k||");
    expect_text(d, in, "k||");
    bp_frame_decoder_free(d);
    bp_input_free(in);
}

/* Many short frames buffered at once, with a delimiter that never occurs among those
 * listed: each frame costs a search of about its own length per delimiter, not of all the
 * unread bytes (which made a peer's 1 MiB of 8-byte lines cost half a minute of CPU:
 * quadratic in what it sends). bp__frame_decoder_searched counts the bytes searched. */
static void test_delimiter_search_is_linear(void **state)
{
    bp_allocator *a = *state;
    enum { BYTES = 64 * 1024, LINE = 8 };
    const bp_delimiter orders[2][2] = {{{"\r\n", 2}, {"\n", 1}}, {{"\n", 1}, {"\r\n", 2}}};
    for (int o = 0; o < 2; o++) {
        bp_frame_decoder *d = delimiter_decoder(orders[o], 2, 100, 1, 1);
        bp_input_config cfg;
        bp_input_config_init(&cfg);
        cfg.max_buffered = BYTES;
        bp_input *in = bp_input_new(a, &cfg, NULL);
        bp_buf *b = bp_alloc(a, BYTES);
        for (size_t i = 0; i < BYTES; i += LINE) assert_int_equal(bp_write_bytes(b, "abcdefg\n", LINE), 0);
        assert_int_equal(bp_input_add(in, b), 0);
        for (size_t i = 0; i < BYTES / LINE; i++) expect_text(d, in, "abcdefg");
        expect_need_more(d, in);
        /* Searched in doubling windows from 64 bytes: at most about 130 bytes a frame here;
         * through all the unread bytes it would be 2^28. */
        assert_true(bp__frame_decoder_searched(d) <= (uint64_t)BYTES * 32);
        bp_frame_decoder_free(d);
        bp_input_free(in);
    }
}

/* A delimiter split across the components of a composite input. */
static void test_delimiter_across_components(void **state)
{
    bp_allocator *a = *state;
    const bp_delimiter delims[] = {{"\r\n\r\n", 4}};
    bp_frame_decoder *d = delimiter_decoder(delims, 1, 100000, 1, 1);
    bp_input *in = bp_input_new(a, NULL, NULL);
    static char part[3][5000];
    memset(part, 'h', sizeof part);
    memcpy(part[0] + 4998, "\r\n", 2);
    memcpy(part[1], "\r\n", 2); /* the first delimiter spans parts 0 and 1 */
    memcpy(part[2] + 4999, "\r", 1);
    for (int i = 0; i < 3; i++) feed(a, in, part[i], 5000);
    assert_int_equal(bp_composite_components(bp_input_peek(in)), 3);
    expect_frame(d, in, part[0], 4998);
    expect_need_more(d, in);
    feed_text(a, in, "\n\r\n");
    expect_frame(d, in, part[1] + 2, 4998 + 4999);
    expect_need_more(d, in);
    bp_input_free(in);
    bp_frame_decoder_free(d);
}

/* A frame of exactly the maximum whose delimiter arrives in two reads is the same frame as
 * when the bytes arrive at once: the limit counts the frame's bytes, not the start of a
 * delimiter behind them. One byte more is too long however the bytes arrive. */
static void test_maximum_with_a_delimiter_split_across_reads(void **state)
{
    bp_allocator *a = *state;
    const bp_delimiter bars[] = {{"|", 1}, {"<=>", 3}};
    for (int fail_fast = 0; fail_fast < 2; fail_fast++) {
        for (int kind = 0; kind < 2; kind++) {
            const char *ends[] = {"\r\n", "<=>"};
            const char *end = ends[kind];
            size_t end_len = strlen(end);
            for (size_t cut = 1; cut < end_len; cut++) {
                bp_frame_decoder *d = kind == 0 ? line_decoder(2, 1, fail_fast) : delimiter_decoder(bars, 2, 2, 1, fail_fast);
                bp_input *in = bp_input_new(a, NULL, NULL);
                char first[8] = "ab";
                memcpy(first + 2, end, cut);
                feed(a, in, first, 2 + cut);
                expect_need_more(d, in);
                feed(a, in, end + cut, end_len - cut);
                expect_text(d, in, "ab");
                /* One byte over the maximum, the delimiter's start in sight: too long. */
                memcpy(first, "abc", 3);
                memcpy(first + 3, end, cut);
                feed(a, in, first, 3 + cut);
                if (fail_fast) expect_error(d, in, BP_ETOOLONG);
                else expect_need_more(d, in);
                feed(a, in, end + cut, end_len - cut);
                if (!fail_fast) expect_error(d, in, BP_ETOOLONG);
                feed_text(a, in, "ok");
                feed(a, in, end, end_len);
                expect_text(d, in, "ok");
                expect_need_more(d, in);
                bp_input_free(in);
                bp_frame_decoder_free(d);
            }
        }
    }
}

/* Skipping a frame too long keeps the bytes that may start its delimiter. */
static void test_delimiter_too_long_keeps_partial_delimiter(void **state)
{
    bp_allocator *a = *state;
    for (int fail_fast = 0; fail_fast < 2; fail_fast++) {
        const bp_delimiter delims[] = {{"\r\n", 2}};
        bp_frame_decoder *d = delimiter_decoder(delims, 1, 5, 1, fail_fast);
        bp_input *in = bp_input_new(a, NULL, NULL);
        feed_text(a, in, "0123456789\r");
        if (fail_fast) expect_error(d, in, BP_ETOOLONG);
        else expect_need_more(d, in);
        feed_text(a, in, "\nok\r\n");
        if (!fail_fast) expect_error(d, in, BP_ETOOLONG);
        expect_text(d, in, "ok");
        expect_need_more(d, in);
        /* Found, but too long: an error, then the next frame. */
        feed_text(a, in, "abcdefg\r\nfine\r\n");
        expect_error(d, in, BP_ETOOLONG);
        expect_text(d, in, "fine");
        bp_input_free(in);
        bp_frame_decoder_free(d);
    }
}

static void test_fixed_length(void **state)
{
    bp_allocator *a = *state;
    bp_frame_config cfg;
    bp_frame_config_init(&cfg, BP_FRAME_FIXED_LENGTH);
    cfg.frame_length = 3;
    bp_frame_decoder *d = decoder(&cfg);
    bp_input *in = bp_input_new(a, NULL, NULL);
    feed_text(a, in, "abcdefg");
    expect_text(d, in, "abc");
    expect_text(d, in, "def");
    expect_need_more(d, in);
    feed_text(a, in, "hi");
    expect_text(d, in, "ghi");
    assert_null(bp_input_peek(in));
    bp_input_free(in);
    bp_frame_decoder_free(d);
}

/* The peer's bytes are not misuse: the three codes have names and texts of their own and
 * never reach the misuse handler. */
static void test_stream_errors_are_not_misuse(void **state)
{
    bp_allocator *a = *state;
    assert_string_equal(bp_err_name(BP_ETOOLONG), "BP_ETOOLONG");
    assert_string_equal(bp_err_name(BP_ECORRUPT), "BP_ECORRUPT");
    assert_string_equal(bp_err_name(BP_EFULL), "BP_EFULL");
    assert_string_equal(bp_strerror(BP_ETOOLONG), "frame longer than the decoder's maximum");
    assert_string_equal(bp_strerror(BP_ECORRUPT), "malformed frame");
    assert_string_equal(bp_strerror(BP_EFULL), "input holds its maximum of unread bytes");
    misuse_capture_start();
    bp_frame_decoder *d = length_decoder(0, 1, -2, 0);
    bp_input_config icfg;
    bp_input_config_init(&icfg);
    icfg.max_buffered = 4;
    bp_input *in = bp_input_new(a, &icfg, NULL);
    feed(a, in, "\x00\x05", 2);
    expect_error(d, in, BP_ECORRUPT);
    bp_frame_decoder_free(d);
    d = line_decoder(1, 1, 1);
    feed_text(a, in, "abc");
    expect_error(d, in, BP_ETOOLONG);
    bp_frame_decoder_free(d);
    feed_text(a, in, "four");
    bp_buf *more = buf_with_text(a, 8, "x");
    assert_int_equal(bp_input_add(in, more), BP_EFULL);
    bp_release(more);
    assert_int_equal(last_misuse.count, 0);
    bp_input_free(in);
}

static void test_config_errors(void **state)
{
    (void)state;
    misuse_capture_start();
    int err = 0;
    bp_frame_config cfg;
    assert_null(bp_frame_decoder_new(NULL, &err));
    assert_int_equal(err, BP_EINVAL);
    bp_frame_config_init(&cfg, BP_FRAME_LENGTH_FIELD);
    cfg.length_field_length = 5;
    assert_null(bp_frame_decoder_new(&cfg, &err));
    assert_int_equal(err, BP_EINVAL);
    assert_string_equal(last_misuse.message, "length_field_length must be 1, 2, 3, 4 or 8 (5)");
    cfg.length_field_length = 4;
    cfg.max_frame_length = 10;
    cfg.length_field_offset = 7;
    assert_null(bp_frame_decoder_new(&cfg, &err));
    cfg.max_frame_length = 3;
    cfg.length_field_offset = 0;
    assert_null(bp_frame_decoder_new(&cfg, &err));
    bp_frame_config_init(&cfg, BP_FRAME_DELIMITER);
    assert_null(bp_frame_decoder_new(&cfg, &err)); /* no delimiter */
    const bp_delimiter empty[] = {{"", 0}};
    cfg.delimiters = empty;
    cfg.delimiter_count = 1;
    assert_null(bp_frame_decoder_new(&cfg, &err));
    bp_frame_config_init(&cfg, BP_FRAME_FIXED_LENGTH);
    assert_null(bp_frame_decoder_new(&cfg, &err));
    bp_frame_config_init(&cfg, (bp_frame_type)0);
    assert_null(bp_frame_decoder_new(&cfg, &err));
    assert_int_equal(err, BP_EINVAL);
    bp_frame_config_init(&cfg, BP_FRAME_LINE);
    bp_frame_decoder *d = decoder(&cfg);
    bp_buf *frame;
    assert_int_equal(bp_frame_decode(NULL, NULL, &frame), BP_EINVAL);
    assert_int_equal(bp_frame_decode(d, NULL, &frame), BP_EINVAL);
    bp_frame_decoder_free(d);
    bp_frame_decoder_free(NULL);
}

/* ---------------------------------------------------------------------------------------
 * bp_index_of_bytes
 * ------------------------------------------------------------------------------------- */

/* The first match of needle in [from, to) of bytes, by brute force (-1 when none). */
static long model_index_of(const uint8_t *bytes, size_t from, size_t to, const uint8_t *needle, size_t m)
{
    if (m == 0) return (long)from;
    for (size_t i = from; i + m <= to; i++)
        if (memcmp(bytes + i, needle, m) == 0) return (long)i;
    return -1;
}

static void expect_index(const bp_buf *b, const uint8_t *model, size_t from, size_t to, const uint8_t *needle,
                         size_t m)
{
    size_t at = SIZE_MAX;
    long want = model_index_of(model, from, to, needle, m);
    int rc = bp_index_of_bytes(b, from, to, needle, m, &at);
    assert_int_equal(rc, want >= 0);
    if (want >= 0) assert_int_equal(at, (size_t)want);
}

/* Random buffers over a small alphabet (many partial matches), plain and as composites of
 * many small components (matches across several), and views of them, against the model. */
static void test_index_of_bytes_matches_model(void **state)
{
    bp_allocator *a = *state;
    uint64_t rng = 42;
    for (int round = 0; round < 60; round++) {
        uint8_t bytes[600];
        size_t n = 1 + test_rand(&rng) % sizeof bytes;
        for (size_t i = 0; i < n; i++) bytes[i] = (uint8_t)('a' + test_rand(&rng) % 3);
        bp_buf *plain = bp_alloc(a, n);
        bp_write_bytes(plain, bytes, n);
        bp_buf *comp = bp_composite(a, 1024, NULL);
        for (size_t at = 0; at < n;) {
            size_t len = 1 + test_rand(&rng) % 7;
            if (len > n - at) len = n - at;
            bp_buf *part = bp_alloc(a, len);
            bp_write_bytes(part, bytes + at, len);
            assert_int_equal(bp_composite_add(comp, part, 1), 0);
            at += len;
        }
        size_t off = n / 3;
        bp_buf *view = bp_retained_slice(comp, off, n - off, NULL);
        for (int q = 0; q < 20; q++) {
            uint8_t needle[40];
            size_t m = test_rand(&rng) % 12;
            if (q % 4 == 0 && n > 2) { /* a needle taken from the buffer: found */
                size_t start = test_rand(&rng) % n;
                m = 1 + test_rand(&rng) % 30;
                if (m > n - start) m = n - start;
                memcpy(needle, bytes + start, m);
            } else {
                for (size_t i = 0; i < m; i++) needle[i] = (uint8_t)('a' + test_rand(&rng) % 3);
            }
            size_t from = test_rand(&rng) % (n + 1), to = from + test_rand(&rng) % (n + 1 - from);
            expect_index(plain, bytes, from, to, needle, m);
            expect_index(comp, bytes, from, to, needle, m);
            if (from >= off) expect_index(view, bytes + off, from - off, to - off, needle, m);
        }
        bp_release(view);
        bp_release(comp);
        bp_release(plain);
    }
}

static void test_index_of_bytes_errors(void **state)
{
    bp_allocator *a = *state;
    misuse_capture_start();
    bp_buf *b = buf_with_text(a, 16, "hello world");
    size_t at = 0;
    assert_int_equal(bp_index_of_bytes(b, 0, 11, "world", 5, &at), 1);
    assert_int_equal(at, 6);
    assert_int_equal(bp_index_of_bytes(b, 0, 10, "world", 5, &at), 0); /* must end before `to` */
    assert_int_equal(bp_index_of_bytes(b, 7, 11, "world", 5, &at), 0);
    assert_int_equal(bp_index_of_bytes(b, 3, 3, "", 0, &at), 1);
    assert_int_equal(at, 3);
    assert_int_equal(bp_index_of_bytes(b, 5, 4, "o", 1, &at), BP_ERANGE);
    assert_int_equal(bp_index_of_bytes(b, 0, 17, "o", 1, &at), BP_ERANGE);
    assert_string_equal(last_misuse.func, "bp_index_of_bytes");
    assert_int_equal(bp_index_of_bytes(NULL, 0, 1, "o", 1, &at), BP_EINVAL);
    assert_int_equal(bp_index_of_bytes(b, 0, 1, NULL, 1, &at), BP_EINVAL);
    assert_int_equal(bp_index_of_bytes(b, 0, 1, "o", 1, NULL), BP_EINVAL);
    bp_release(b);
    b = bp_alloc(a, 16);
    bp_release(b);
    assert_int_equal(bp_index_of_bytes(b, 0, 1, "o", 1, &at), BP_EFREED);
    /* A view whose parent was released behind its back: BP_EFREED, an empty needle too. */
    b = buf_with_text(a, 16, "hello world");
    bp_buf *view = bp_retained_slice(b, 0, 11, NULL);
    assert_non_null(view);
    bp_release(b);
    bp_release(b); /* a release too many */
    misuse_capture_start();
    at = 99;
    assert_int_equal(bp_index_of_bytes(view, 0, 5, "", 0, &at), BP_EFREED);
    assert_int_equal(bp_index_of_bytes(view, 0, 11, "world", 5, &at), BP_EFREED);
    assert_int_equal(at, 99);
    assert_int_equal(last_misuse.count, 2);
    assert_string_equal(last_misuse.func, "bp_index_of_bytes");
    bp_release(view);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        BOTH(test_netty_javadoc_examples, teardown),
        BOTH(test_every_width_and_order_byte_by_byte, teardown),
        BOTH(test_frames_split_across_reads, teardown),
        BOTH(test_frames_across_components, teardown),
        BOTH(test_too_long_fail_fast, teardown),
        BOTH(test_too_long_fail_late, teardown),
        BOTH(test_malformed_length_field, teardown),
        BOTH(test_lines_crlf_and_lf, teardown),
        BOTH(test_line_maximum, teardown),
        BOTH(test_delimiters_first_match_wins, teardown),
        BOTH(test_delimiter_search_is_linear, teardown),
        BOTH(test_delimiter_across_components, teardown),
        BOTH(test_delimiter_too_long_keeps_partial_delimiter, teardown),
        BOTH(test_maximum_with_a_delimiter_split_across_reads, teardown),
        BOTH(test_fixed_length, teardown),
        BOTH(test_stream_errors_are_not_misuse, teardown),
        BOTH(test_config_errors, teardown),
        BOTH(test_index_of_bytes_matches_model, teardown),
        BOTH(test_index_of_bytes_errors, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
