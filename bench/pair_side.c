/* SPDX-License-Identifier: MIT */
/*
 * One side of scripts/bench-pair.sh: the loops, compiled once against each build's own
 * header (so changes to the inline accessors are compared too) and renamed, with that
 * build's library, by objcopy. SIDE is the prefix of the functions main (pair.c) calls.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */

#include <bytepool.h>

#include <stdint.h>
#include <string.h>
#include <time.h>

#define PAIR_CAT2(a, b) a##b
#define PAIR_CAT(a, b) PAIR_CAT2(a, b)
#define PAIR(name) PAIR_CAT(SIDE, name)

enum { BURST = 1000 };

void *PAIR(open)(void);
void PAIR(close)(void *allocator);
double PAIR(run)(void *allocator, int kind, size_t size, long n, void **slots, uint64_t *sum);

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

void *PAIR(open)(void) { return bp_allocator_new(NULL, NULL); }

void PAIR(close)(void *allocator) { bp_allocator_destroy(allocator); }

/* The bench's workloads (bench/bench.c), in rounds of `n` buffers: ns per buffer.
 *   poolbuftest  allocate `size` bytes, write an int, read it back, release
 *   alloc        bursts of 1000 allocations, then 1000 releases
 *   batch        the same bursts, each buffer touched (an int at the front, a byte at the end)
 * `slots` holds a burst's buffers: one array for both sides, so that neither has an array
 * at a page offset of its own (where it lands decides which buffer bytes alias it). */
double PAIR(run)(void *allocator, int kind, size_t size, long n, void **slots, uint64_t *sum)
{
    bp_buf **bufs = (bp_buf **)slots;
    bp_allocator *a = allocator;
    double start = now_ns();
    if (kind == 0) {
        for (long i = 0; i < n; i++) {
            bp_buf *b = bp_alloc(a, size);
            bp_write_u32(b, (uint32_t)i);
            uint32_t v = 0;
            bp_read_u32(b, &v);
            *sum += v;
            bp_release(b);
        }
    } else {
        for (long done = 0; done < n; done += BURST) {
            for (int i = 0; i < BURST; i++) {
                bp_buf *b = bp_alloc(a, size);
                if (kind == 2) {
                    bp_write_u32(b, (uint32_t)i);
                    bp_set_u8(b, size - 1, (uint8_t)i);
                }
                bufs[i] = b;
            }
            for (int i = 0; i < BURST; i++) {
                if (kind == 2) {
                    uint32_t v = 0;
                    uint8_t last = 0;
                    bp_read_u32(bufs[i], &v);
                    bp_get_u8(bufs[i], size - 1, &last);
                    *sum += v + last;
                } else {
                    *sum += bufs[i] != NULL;
                }
                bp_release(bufs[i]);
            }
        }
    }
    return (now_ns() - start) / (double)n;
}
