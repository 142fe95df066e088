/* SPDX-License-Identifier: MIT */
/*
 * Things every module uses: branch hints, alignment helpers, debug checks and the one
 * route by which misuse is reported (bp__misuse -> the user's handler).
 */
#ifndef BP__COMMON_H
#define BP__COMMON_H

#include "bytepool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Branch hints (BP__LIKELY, BP__UNLIKELY) and BP__OPAQUE, which keeps a computed pointer in
 * a register, come from bytepool.h, whose inline fast paths use them too. */
#if defined(__GNUC__)
#  define BP__NOINLINE __attribute__((noinline))
#  define BP__INLINE static inline __attribute__((always_inline))
#  define BP__COLD __attribute__((cold))
#  define BP__PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#  define BP__NOINLINE
#  define BP__INLINE static inline
#  define BP__COLD
#  define BP__PRINTF(fmt, args)
#endif

#define BP__CACHE_LINE 64

/* Prefetches the line at p to be written here, where another core wrote or read it last:
 * the line comes exclusive, so the write that follows neither misses nor has to invalidate
 * the other core's copy (which a read prefetch leaves shared). `has_prefetchw` is
 * bp__os_cpu_has_prefetchw(): x86 compilers turn __builtin_prefetch(p, 1) into PREFETCHW
 * only when built for a CPU that has it, and into a read prefetch otherwise, so the
 * instruction is written out here when the running CPU has it. Never faults. */
BP__INLINE void bp__prefetch_for_write(const void *p, bool has_prefetchw)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__PRFCHW__)
    if (has_prefetchw) __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
    else __builtin_prefetch(p, 1);
#elif defined(__GNUC__)
    (void)has_prefetchw;
    __builtin_prefetch(p, 1);
#else
    (void)p;
    (void)has_prefetchw;
#endif
}

/* Memory that sits free in the pool is unaddressable for the tools that can tell: under
 * AddressSanitizer always, under Valgrind in builds made with BP_VALGRIND (which defines
 * BP__VALGRIND; its client requests cost a few instructions even outside Valgrind).
 * Elsewhere these do nothing. */
#if defined(__SANITIZE_ADDRESS__)
#  define BP__ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define BP__ASAN 1
#  endif
#endif
#if defined(BP__ASAN)
#  include <sanitizer/asan_interface.h>
#  define BP__POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#  define BP__UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#elif defined(BP__VALGRIND)
#  include <valgrind/memcheck.h>
#  define BP__POISON(p, n) ((void)VALGRIND_MAKE_MEM_NOACCESS((p), (n)))
#  define BP__UNPOISON(p, n) ((void)VALGRIND_MAKE_MEM_UNDEFINED((p), (n)))
#else
#  define BP__POISON(p, n) ((void)(p), (void)(n))
#  define BP__UNPOISON(p, n) ((void)(p), (void)(n))
#endif
/* Builds that poison: the inline bp_alloc and bp_release in bytepool.h, compiled into the
 * program, can neither unpoison nor poison, so these builds keep every allocation and
 * release off them (the thread cache's countdown stays at 1, release tags match no cache)
 * and the library's slow paths, which do, serve them all. */
#if defined(BP__ASAN) || defined(BP__VALGRIND)
#  define BP__POISONS 1
#else
#  define BP__POISONS 0
#endif

/* Test builds (the bytepool_test library the tests link, built with BP__TESTING=1) carry
 * fault injectors and other hooks; the installed libraries are built without them, and a
 * hook's check on a library path is written `if (BP__TESTING && ...)` so that it stays
 * type-checked and compiles away there. */
#ifndef BP__TESTING
#  define BP__TESTING 0
#endif

/* Internal consistency checks: compiled in always (so they stay type-checked), executed
 * only in builds compiled with BP__DEBUG=1 (CMake option BP_DEBUG_CHECKS). */
#ifndef BP__DEBUG
#  define BP__DEBUG 0
#endif
#define BP__ASSERT(cond)                                                                   \
    do {                                                                                   \
        if (BP__DEBUG && !(cond)) bp__assert_fail(#cond, __FILE__, __LINE__);              \
    } while (0)

BP__COLD void bp__assert_fail(const char *cond, const char *file, int line);

/* Reports misuse detected in public function `func` through the installed handler and
 * returns `err`, so callers can write `return bp__misuse(BP_ERANGE, __func__, ...)`. `func`
 * names the function the program called, not one the library called on its behalf. */
BP__COLD int bp__misuse(int err, const char *func, const char *fmt, ...) BP__PRINTF(3, 4);

/* For the layers built on the public buffer API (input, output, decoder), which take
 * buffers from the program: 0 when b is a live buffer whose views and components are
 * intact (a view whose parent, or a composite whose component, was released behind its
 * back is not), else reports the problem as misuse in `func` and returns BP_EINVAL (NULL)
 * or BP_EFREED. A view is refreshed on the way, as by any call on it. */
int bp__check_usable(const bp_buf *b, const char *func);

#if BP__TESTING
/* The bytes a delimiter decoder's searches have looked at so far (decoder.c). */
uint64_t bp__frame_decoder_searched(const bp_frame_decoder *d);
#endif

/* Reads BYTEPOOL_ABORT_ON_MISUSE, once in the process's life: at the first allocator, the
 * first misuse or the first bp_set_misuse_handler, whichever comes first. "1" installs
 * bp_misuse_abort, which a handler the program installs replaces. */
void bp__misuse_env_init(void);

/* The moments of the fork handlers (pthread_atfork): before a fork, then after it in the
 * parent or in the child. A module with process-wide locks takes them at PREPARE and lets
 * them go at the other two. */
enum { BP__FORK_PREPARE, BP__FORK_PARENT, BP__FORK_CHILD };
void bp__misuse_atfork(int when);

static inline bool bp__is_pow2(size_t x) { return x != 0 && (x & (x - 1)) == 0; }

static inline size_t bp__align_up(size_t x, size_t align) /* align: power of two */
{
    return (x + align - 1) & ~(align - 1);
}

static inline unsigned bp__log2(size_t x) /* x > 0 */
{
    return (unsigned)(sizeof(unsigned long long) * 8 - 1) - (unsigned)__builtin_clzll(x);
}

#endif
