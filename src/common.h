/*
 * Things every module uses: branch hints, alignment helpers, debug checks and the one
 * route by which misuse is reported (bp__misuse -> the user's handler).
 */
#ifndef BP_COMMON_H
#define BP_COMMON_H

#include "bytepool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#  define BP_LIKELY(x) __builtin_expect(!!(x), 1)
#  define BP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#  define BP_NOINLINE __attribute__((noinline))
#  define BP_INLINE static inline __attribute__((always_inline))
/* Makes the compiler keep a computed pointer in a register as it is: without it, gcc turns
 * &bins[cls]->field into one index computation per field (three shifts on the release fast
 * path instead of one). Generates no instruction. */
#  define BP_OPAQUE(p) __asm__("" : "+r"(p))
#  define BP_COLD __attribute__((cold))
#  define BP_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#  define BP_LIKELY(x) (x)
#  define BP_UNLIKELY(x) (x)
#  define BP_NOINLINE
#  define BP_INLINE static inline
#  define BP_OPAQUE(p) ((void)0)
#  define BP_COLD
#  define BP_PRINTF(fmt, args)
#endif

#define BP_CACHE_LINE 64

/* Prefetches the line at p to be written here, where another core wrote or read it last:
 * the line comes exclusive, so the write that follows neither misses nor has to invalidate
 * the other core's copy (which a read prefetch leaves shared). `has_prefetchw` is
 * bp__os_cpu_has_prefetchw(): x86 compilers turn __builtin_prefetch(p, 1) into PREFETCHW
 * only when built for a CPU that has it, and into a read prefetch otherwise, so the
 * instruction is written out here when the running CPU has it. Never faults. */
BP_INLINE void bp__prefetch_for_write(const void *p, bool has_prefetchw)
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
 * AddressSanitizer always, under Valgrind in builds made with BP_VALGRIND (its client
 * requests cost a few instructions even outside Valgrind). Elsewhere these do nothing. */
#if defined(__SANITIZE_ADDRESS__)
#  define BP_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define BP_ASAN 1
#  endif
#endif
#if defined(BP_ASAN)
#  include <sanitizer/asan_interface.h>
#  define BP_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#  define BP_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#elif defined(BP_VALGRIND)
#  include <valgrind/memcheck.h>
#  define BP_POISON(p, n) ((void)VALGRIND_MAKE_MEM_NOACCESS((p), (n)))
#  define BP_UNPOISON(p, n) ((void)VALGRIND_MAKE_MEM_UNDEFINED((p), (n)))
#else
#  define BP_POISON(p, n) ((void)(p), (void)(n))
#  define BP_UNPOISON(p, n) ((void)(p), (void)(n))
#endif
/* Builds that poison: the inline bp_alloc and bp_release in bytepool.h, compiled into the
 * program, can neither unpoison nor poison, so these builds keep every allocation and
 * release off them (the thread cache's countdown stays at 1, release tags match no cache)
 * and the library's slow paths, which do, serve them all. */
#if defined(BP_ASAN) || defined(BP_VALGRIND)
#  define BP_POISONS 1
#else
#  define BP_POISONS 0
#endif

/* Internal consistency checks: compiled in always (so they stay type-checked), executed
 * only in builds configured with BP_DEBUG=1. */
#ifndef BP_DEBUG
#  define BP_DEBUG 0
#endif
#define BP_ASSERT(cond)                                                                    \
    do {                                                                                   \
        if (BP_DEBUG && !(cond)) bp__assert_fail(#cond, __FILE__, __LINE__);               \
    } while (0)

BP_COLD void bp__assert_fail(const char *cond, const char *file, int line);

/* Reports misuse detected in public function `func` through the installed handler and
 * returns `err`, so callers can write `return bp__misuse(BP_ERANGE, __func__, ...)`. `func`
 * names the function the program called, not one the library called on its behalf. */
BP_COLD int bp__misuse(int err, const char *func, const char *fmt, ...) BP_PRINTF(3, 4);

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
