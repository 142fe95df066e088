/* SPDX-License-Identifier: MIT */
/*
 * Frame decoders over a bp_input (Netty's LengthFieldBasedFrameDecoder,
 * LineBasedFrameDecoder, DelimiterBasedFrameDecoder, FixedLengthFrameDecoder) and the
 * multi-byte search they use (Netty's ByteBufUtil.indexOf). Built on the public buffer and
 * input API only; common.h is included for bp__misuse and bp__check_usable.
 *
 * A frame is a retained slice of the input's buffer, made before its bytes are consumed,
 * so a failure to make it consumes nothing. A frame too long is skipped - the bytes
 * buffered now, and with `discarding` set those still to come - and reported as Netty
 * reports it: at once with fail_fast, otherwise when the whole frame has gone by.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

struct bp_frame_decoder {
    bp_frame_config cfg;    /* delimiters point into this object's own copy */
    size_t longest_delimiter;
    size_t end_offset;      /* length field: where it ends in the header */
    bool discarding;        /* skipping a frame too long, part of which is still to come */
    uint64_t bytes_to_discard; /* length field: how much of it */
    size_t scanned;         /* line, delimiter: unread bytes searched without a match */
    uint64_t searched;      /* delimiter: bytes its searches looked at (for the tests) */
};

/* ---------------------------------------------------------------------------------------
 * Multi-byte search
 * ------------------------------------------------------------------------------------- */

/* Whether the m bytes at `index` of b are the needle (the range is inside the capacity). */
static bool matches_at(const bp_buf *b, size_t index, const uint8_t *needle, size_t m)
{
    uint8_t chunk[64];
    for (size_t done = 0; done < m; done += sizeof chunk) {
        size_t len = m - done < sizeof chunk ? m - done : sizeof chunk;
        if (bp_get_bytes(b, index + done, chunk, len) != 0 || memcmp(chunk, needle + done, len) != 0) return false;
    }
    return true;
}

/* The first occurrence of the m bytes at `needle` (1 <= m <= n) in the n bytes at h, or
 * NULL. glibc's memmem reads the haystack of a needle of a few bytes one byte at a time
 * (about 1 ns a byte here: a 2-byte delimiter that does not occur costs a delimiter decoder
 * that much per byte of every frame); memchr for the needle's first byte runs at vector
 * speed where that byte is rare. Where it is not, each false start costs a call and a
 * compare, so once they pass one in 32 bytes looked at (plus a few), the rest goes to
 * memmem, linear whatever the bytes. Needles longer than a delimiter go there at once. */
static const uint8_t *find_in_block(const uint8_t *h, size_t n, const uint8_t *needle, size_t m)
{
    if (m == 1) return memchr(h, needle[0], n);
    if (m > 16) return memmem(h, n, needle, m);
    const uint8_t *start = h, *end = h + (n - m + 1); /* matches start before end */
    size_t false_starts = 0;
    while (h < end) {
        const uint8_t *p = memchr(h, needle[0], (size_t)(end - h));
        if (p == NULL) return NULL;
        if (memcmp(p + 1, needle + 1, m - 1) == 0) return p;
        h = p + 1;
        if (++false_starts > 8 + (size_t)(h - start) / 32) return memmem(h, (size_t)(end - h) + m - 1, needle, m);
    }
    return NULL;
}

/* Whether the m bytes from offset i of block k on (running on into the blocks after it)
 * are the needle's. */
static bool matches_across(const struct iovec *iov, int count, int k, size_t i, const uint8_t *needle, size_t m)
{
    size_t done = 0;
    for (; k < count && done < m; k++, i = 0) {
        size_t len = iov[k].iov_len - i < m - done ? iov[k].iov_len - i : m - done;
        if (memcmp((const uint8_t *)iov[k].iov_base + i, needle + done, len) != 0) return false;
        done += len;
    }
    return done == m;
}

/* The first match of the needle in `count` blocks, the first of which starts at index
 * `from`: 1 with its index, or 0. In each block, find_in_block looks for the matches that
 * lie inside it; the starts whose match would run past its end (m - 1 at most) are
 * compared across the blocks that follow. */
static int search_blocks(const struct iovec *iov, int count, size_t from, const uint8_t *needle, size_t m,
                         size_t *index)
{
    size_t start = from; /* the index of block k's first byte */
    for (int k = 0; k < count; k++) {
        const uint8_t *p = iov[k].iov_base;
        size_t len = iov[k].iov_len;
        const uint8_t *hit = len >= m ? find_in_block(p, len, needle, m) : NULL;
        if (hit != NULL) {
            *index = start + (size_t)(hit - p);
            return 1;
        }
        for (size_t i = len >= m ? len - m + 1 : 0; i < len; i++)
            if (p[i] == needle[0] && matches_across(iov, count, k, i, needle, m)) {
                *index = start + i;
                return 1;
            }
        start += len;
    }
    return 0;
}

/* The range as blocks (bp_iovec) in one table - on the stack for up to 16, the number a
 * plain buffer or a small composite takes, else allocated - searched in one pass: one check
 * of the buffer and one walk of its components per call, whatever their number. */
int bp_index_of_bytes(const bp_buf *b, size_t from, size_t to, const void *needle, size_t m, size_t *index)
{
    if (index == NULL || (needle == NULL && m > 0))
        return bp__misuse(BP_EINVAL, __func__, "%s is NULL", index == NULL ? "index" : "needle");
    int rc = bp__check_usable(b, __func__);
    if (rc != 0) return rc;
    if (from > to || to > bp_capacity(b))
        return bp__misuse(BP_ERANGE, __func__, "range [%zu, %zu) outside [0, capacity %zu]", from, to, bp_capacity(b));
    if (m == 0) {
        *index = from;
        return 1;
    }
    if (to - from < m) return 0;
    struct iovec local[16], *iov = local;
    int count = bp_iovec(b, from, to - from, local, 16);
    if (count > 16) {
        iov = malloc((size_t)count * sizeof *iov);
        if (iov == NULL) return BP_ENOMEM;
        int again = bp_iovec(b, from, to - from, iov, count);
        count = again < count ? again : count; /* never more than the table holds */
    }
    int found = count < 0 ? count : search_blocks(iov, count, from, needle, m, index);
    if (iov != local) free(iov);
    return found;
}

/* ---------------------------------------------------------------------------------------
 * Decoders
 * ------------------------------------------------------------------------------------- */

void bp_frame_config_init(bp_frame_config *cfg, bp_frame_type type)
{
    if (cfg == NULL) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->type = type;
    cfg->max_frame_length = 65536;
    cfg->fail_fast = type != BP_FRAME_LINE;
    cfg->length_field_length = 4;
    cfg->strip_delimiter = 1;
}

static int invalid(const char *why, size_t value)
{
    return bp__misuse(BP_EINVAL, "bp_frame_decoder_new", "%s (%zu)", why, value);
}

static int check_config(const bp_frame_config *cfg)
{
    if (cfg->type < BP_FRAME_LENGTH_FIELD || cfg->type > BP_FRAME_FIXED_LENGTH)
        return invalid("unknown frame type", (size_t)cfg->type);
    if (cfg->type == BP_FRAME_FIXED_LENGTH)
        return cfg->frame_length == 0 ? invalid("frame_length must be at least 1", 0) : 0;
    if (cfg->max_frame_length == 0) return invalid("max_frame_length must be at least 1", 0);
    if (cfg->type == BP_FRAME_LENGTH_FIELD) {
        unsigned width = cfg->length_field_length;
        if (width != 1 && width != 2 && width != 3 && width != 4 && width != 8)
            return invalid("length_field_length must be 1, 2, 3, 4 or 8", width);
        if (cfg->max_frame_length < width || cfg->length_field_offset > cfg->max_frame_length - width)
            return invalid("length_field_offset + length_field_length exceeds max_frame_length",
                           cfg->length_field_offset);
    }
    if (cfg->type == BP_FRAME_DELIMITER) {
        if (cfg->delimiter_count == 0 || cfg->delimiters == NULL) return invalid("no delimiter", 0);
        for (size_t i = 0; i < cfg->delimiter_count; i++)
            if (cfg->delimiters[i].length == 0 || cfg->delimiters[i].bytes == NULL)
                return invalid("delimiter is empty or NULL", i);
    }
    return 0;
}

/* The delimiters and their bytes, copied into one block after the decoder. */
static size_t delimiter_bytes(const bp_frame_config *cfg)
{
    size_t total = 0;
    for (size_t i = 0; cfg->type == BP_FRAME_DELIMITER && i < cfg->delimiter_count; i++)
        total += sizeof(bp_delimiter) + cfg->delimiters[i].length;
    return total;
}

bp_frame_decoder *bp_frame_decoder_new(const bp_frame_config *cfg, int *err)
{
    int rc = cfg == NULL ? bp__misuse(BP_EINVAL, __func__, "config is NULL") : check_config(cfg);
    bp_frame_decoder *d = rc == 0 ? calloc(1, sizeof *d + delimiter_bytes(cfg)) : NULL;
    if (rc == 0 && d == NULL) rc = BP_ENOMEM;
    if (err != NULL) *err = rc;
    if (d == NULL) return NULL;
    d->cfg = *cfg;
    d->end_offset = cfg->length_field_offset + cfg->length_field_length;
    if (cfg->type == BP_FRAME_DELIMITER) {
        bp_delimiter *copies = (bp_delimiter *)(void *)(d + 1);
        uint8_t *bytes = (uint8_t *)(copies + cfg->delimiter_count);
        for (size_t i = 0; i < cfg->delimiter_count; i++) {
            size_t len = cfg->delimiters[i].length;
            memcpy(bytes, cfg->delimiters[i].bytes, len);
            copies[i] = (bp_delimiter){bytes, len};
            bytes += len;
            if (len > d->longest_delimiter) d->longest_delimiter = len;
        }
        d->cfg.delimiters = copies;
    } else {
        d->cfg.delimiters = NULL;
        d->cfg.delimiter_count = 0;
    }
    return d;
}

void bp_frame_decoder_free(bp_frame_decoder *d) { free(d); }

/* Hands out [offset, offset + length) of the unread bytes as a frame, then consumes
 * `consumed` bytes (frame, delimiter, stripped header). */
static int emit(bp_frame_decoder *d, bp_input *in, size_t offset, size_t length, size_t consumed, bp_buf **frame)
{
    bp_buf *b = bp_input_peek(in);
    int rc;
    bp_buf *f = bp_retained_slice(b, bp_reader_index(b) + offset, length, &rc);
    if (f == NULL) return rc;
    bp_input_skip(in, consumed);
    d->scanned = 0;
    *frame = f;
    return 1;
}

static void skip(bp_frame_decoder *d, bp_input *in, size_t n)
{
    bp_input_skip(in, n);
    d->scanned = 0;
}

/* ---- Length field */

/* The length field's value (unsigned; 8 bytes as they are). */
static uint64_t length_field(const bp_frame_decoder *d, const bp_buf *b, size_t at)
{
    bool le = d->cfg.little_endian != 0;
    uint8_t v8 = 0;
    uint16_t v16 = 0;
    uint32_t v32 = 0;
    uint64_t v64 = 0;
    switch (d->cfg.length_field_length) {
    case 1: bp_get_u8(b, at, &v8); return v8;
    case 2: le ? bp_get_u16_le(b, at, &v16) : bp_get_u16(b, at, &v16); return v16;
    case 3: le ? bp_get_u24_le(b, at, &v32) : bp_get_u24(b, at, &v32); return v32;
    case 4: le ? bp_get_u32_le(b, at, &v32) : bp_get_u32(b, at, &v32); return v32;
    default: le ? bp_get_u64_le(b, at, &v64) : bp_get_u64(b, at, &v64); return v64;
    }
}

/* Netty's failIfNecessary: whether the frame being skipped is reported now. */
static int fail_if_necessary(bp_frame_decoder *d, bool first_detection)
{
    if (d->bytes_to_discard == 0) {
        d->discarding = false;
        if (!d->cfg.fail_fast || first_detection) return BP_ETOOLONG;
    } else if (d->cfg.fail_fast && first_detection) {
        return BP_ETOOLONG;
    }
    return 0;
}

static int too_long(bp_frame_decoder *d, bp_input *in, uint64_t frame_length, size_t unread)
{
    if (frame_length < unread) {
        skip(d, in, (size_t)frame_length);
    } else {
        d->discarding = true;
        d->bytes_to_discard = frame_length - unread;
        skip(d, in, unread);
    }
    return fail_if_necessary(d, true);
}

/* The frame's whole length: the field's value + length_adjustment + the header up to the
 * field's end, in Java's signed long arithmetic; false when that is negative, overflows,
 * or is shorter than the header (malformed). */
static bool frame_length_of(const bp_frame_decoder *d, uint64_t value, uint64_t *out)
{
    int64_t length;
    if (value > INT64_MAX || __builtin_add_overflow((int64_t)value, d->cfg.length_adjustment, &length) ||
        __builtin_add_overflow(length, (int64_t)d->end_offset, &length) || length < (int64_t)d->end_offset)
        return false;
    *out = (uint64_t)length;
    return true;
}

static int decode_length_field(bp_frame_decoder *d, bp_input *in, bp_buf **frame)
{
    if (d->discarding) {
        size_t unread = bp_input_readable(in);
        size_t n = d->bytes_to_discard < unread ? (size_t)d->bytes_to_discard : unread;
        skip(d, in, n);
        d->bytes_to_discard -= n;
        int rc = fail_if_necessary(d, false);
        if (rc != 0 || d->discarding) return rc;
    }
    size_t unread = bp_input_readable(in);
    if (unread < d->end_offset) return 0;
    bp_buf *b = bp_input_peek(in);
    uint64_t frame_length;
    if (!frame_length_of(d, length_field(d, b, bp_reader_index(b) + d->cfg.length_field_offset), &frame_length)) {
        skip(d, in, d->end_offset);
        return BP_ECORRUPT;
    }
    if (frame_length > d->cfg.max_frame_length) return too_long(d, in, frame_length, unread);
    if (unread < frame_length) return 0;
    size_t strip = d->cfg.initial_bytes_to_strip, length = (size_t)frame_length;
    if (strip > length) {
        skip(d, in, length);
        return BP_ECORRUPT;
    }
    return emit(d, in, strip, length - strip, length, frame);
}

/* ---- Lines */

/* Where the first line of the unread bytes ends: 1 with the line's length and its
 * delimiter's ("\n" 1, "\r\n" 2), 0 when no "\n" is there; only bytes not searched before
 * are searched. */
static int find_end_of_line(bp_frame_decoder *d, const bp_buf *b, size_t unread, size_t *length, size_t *delimiter)
{
    size_t reader = bp_reader_index(b), from = d->scanned < unread ? d->scanned : unread, at;
    int found = bp_index_of(b, reader + from, reader + unread, '\n', &at);
    if (found != 1) {
        d->scanned = unread;
        return found;
    }
    uint8_t before = 0;
    *length = at - reader;
    *delimiter = 1;
    if (*length > 0 && bp_get_u8(b, at - 1, &before) == 0 && before == '\r') {
        (*length)--;
        *delimiter = 2;
    }
    return 1;
}

static int decode_line(bp_frame_decoder *d, bp_input *in, bp_buf **frame)
{
    size_t unread = bp_input_readable(in), length = 0, delimiter = 0;
    if (unread == 0) return 0;
    int found = find_end_of_line(d, bp_input_peek(in), unread, &length, &delimiter);
    if (found < 0) return found;
    if (d->discarding) { /* the rest of a line too long, up to its end */
        skip(d, in, found ? length + delimiter : unread);
        if (!found) return 0;
        d->discarding = false;
        return d->cfg.fail_fast ? 0 : BP_ETOOLONG;
    }
    if (found && length > d->cfg.max_frame_length) {
        skip(d, in, length + delimiter);
        return BP_ETOOLONG;
    }
    if (found) return emit(d, in, 0, d->cfg.strip_delimiter ? length : length + delimiter, length + delimiter, frame);
    /* No "\n" yet: a last "\r" may start the line's "\r\n", and is then none of its bytes. */
    uint8_t last = 0;
    bp_buf *b = bp_input_peek(in);
    if (unread == d->cfg.max_frame_length + 1 && bp_get_u8(b, bp_reader_index(b) + unread - 1, &last) == 0 &&
        last == '\r')
        return 0;
    if (unread > d->cfg.max_frame_length) {
        skip(d, in, unread);
        d->discarding = true;
        if (d->cfg.fail_fast) return BP_ETOOLONG;
    }
    return 0;
}

/* ---- Delimiters */

/* The first window of a search for delimiters; each next one is twice as long. Searched
 * for through all the unread bytes, a delimiter that does not occur would cost every frame
 * the length of everything buffered behind it: quadratic in what a peer sends at once
 * (1 MiB of 8-byte lines, half a minute). Window by window, a frame that ends at p costs
 * about p per delimiter. */
#define FIRST_WINDOW 64

/* The first frame of the unread bytes: 1 with its length and its delimiter's (the
 * delimiter found first; on a tie the one listed first), 0 when none is there. A match can
 * start up to longest - 1 bytes before the end of what earlier calls searched. Each window
 * is searched for matches that start in it (and may end past it); within one, a delimiter
 * listed later is looked for only before the best match so far. */
static int find_delimiter(bp_frame_decoder *d, const bp_buf *b, size_t unread, size_t *length, size_t *delimiter)
{
    size_t reader = bp_reader_index(b), overlap = d->longest_delimiter - 1;
    size_t lo = d->scanned > overlap ? d->scanned - overlap : 0, best = SIZE_MAX;
    if (lo > unread) lo = unread;
    for (size_t window = FIRST_WINDOW; lo < unread && best == SIZE_MAX; window *= 2) {
        size_t hi = unread - lo > window ? lo + window : unread; /* starts in [lo, hi) */
        for (size_t i = 0; i < d->cfg.delimiter_count; i++) {
            const bp_delimiter *delim = &d->cfg.delimiters[i];
            size_t before = best < hi ? best : hi; /* a match must start before this */
            size_t to = unread - before > delim->length - 1 ? before + delim->length - 1 : unread;
            size_t at;
            d->searched += to - lo;
            int found = bp_index_of_bytes(b, reader + lo, reader + to, delim->bytes, delim->length, &at);
            if (found < 0) return found;
            if (found == 1) { /* before `before`: the best so far */
                best = at - reader;
                *delimiter = delim->length;
            }
        }
        lo = hi;
    }
    if (best == SIZE_MAX) {
        d->scanned = unread;
        return 0;
    }
    *length = best;
    return 1;
}

/* Whether a delimiter may still end a frame of at most max_frame_length bytes: the last
 * bytes of the unread ones, from a start within the limit, are the first bytes of one. */
static bool delimiter_may_start_within_limit(const bp_frame_decoder *d, const bp_buf *b, size_t unread)
{
    size_t reader = bp_reader_index(b), max = d->cfg.max_frame_length;
    for (size_t i = 0; i < d->cfg.delimiter_count; i++) {
        const bp_delimiter *delim = &d->cfg.delimiters[i];
        size_t start = unread >= delim->length ? unread - delim->length + 1 : 0;
        for (size_t at = start; at < unread && at <= max; at++)
            if (matches_at(b, reader + at, delim->bytes, unread - at)) return true;
    }
    return false;
}

static int decode_delimited(bp_frame_decoder *d, bp_input *in, bp_buf **frame)
{
    size_t unread = bp_input_readable(in), length = 0, delimiter = 0;
    if (unread == 0) return 0;
    int found = find_delimiter(d, bp_input_peek(in), unread, &length, &delimiter);
    if (found < 0) return found;
    if (found && d->discarding) { /* the end of a frame too long */
        skip(d, in, length + delimiter);
        d->discarding = false;
        return d->cfg.fail_fast ? 0 : BP_ETOOLONG;
    }
    if (found && length > d->cfg.max_frame_length) {
        skip(d, in, length + delimiter);
        return BP_ETOOLONG;
    }
    if (found)
        return emit(d, in, 0, d->cfg.strip_delimiter ? length : length + delimiter, length + delimiter, frame);
    /* No delimiter yet. Skipping a frame too long keeps the last longest - 1 bytes, which
     * may be the start of its delimiter. */
    size_t keep = d->longest_delimiter - 1;
    if (!d->discarding &&
        (unread <= d->cfg.max_frame_length || delimiter_may_start_within_limit(d, bp_input_peek(in), unread)))
        return 0;
    bool first = !d->discarding;
    d->discarding = true;
    if (unread > keep) {
        skip(d, in, unread - keep);
        d->scanned = keep;
    }
    return first && d->cfg.fail_fast ? BP_ETOOLONG : 0;
}

/* ---- Fixed length */

static int decode_fixed(bp_frame_decoder *d, bp_input *in, bp_buf **frame)
{
    size_t length = d->cfg.frame_length;
    return bp_input_readable(in) < length ? 0 : emit(d, in, 0, length, length, frame);
}

/* One step of a decoder: a frame (1), an error, or 0 - which may have consumed bytes (a
 * frame too long being skipped), after which the next step may find a frame. */
static int decode_step(bp_frame_decoder *d, bp_input *in, bp_buf **frame)
{
    switch (d->cfg.type) {
    case BP_FRAME_LENGTH_FIELD: return decode_length_field(d, in, frame);
    case BP_FRAME_LINE: return decode_line(d, in, frame);
    case BP_FRAME_DELIMITER: return decode_delimited(d, in, frame);
    default: return decode_fixed(d, in, frame);
    }
}

int bp_frame_decode(bp_frame_decoder *d, bp_input *in, bp_buf **frame)
{
    if (d == NULL || in == NULL || frame == NULL)
        return bp__misuse(BP_EINVAL, __func__, "%s is NULL", d == NULL ? "decoder" : in == NULL ? "input" : "frame");
    *frame = NULL;
    /* As Netty's decode loop: go on while a step consumes bytes without a result. */
    for (;;) {
        size_t before = bp_input_readable(in);
        int rc = decode_step(d, in, frame);
        if (rc != 0 || bp_input_readable(in) == before) return rc;
    }
}

#if BP__TESTING
uint64_t bp__frame_decoder_searched(const bp_frame_decoder *d) { return d->searched; }
#endif
