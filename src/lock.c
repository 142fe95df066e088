/* SPDX-License-Identifier: MIT */
/*
 * The arena lock's contended halves: spin briefly, then sleep on the futex.
 */
#include "lock.h"

#if defined(__linux__)

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

void bp__lock_wait(bp__lock *l)
{
    /* The holder is usually a few hundred instructions from releasing: spinning costs less
     * than a sleep and a wake. Only a free lock is tried (no atomics on a held one). */
    for (int spin = 0; spin < 128; spin++) {
        cpu_relax();
        uint32_t expected = 0;
        if (atomic_load_explicit(&l->state, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->state, &expected, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }
    /* Announce a sleeper (2) with every attempt: whoever takes the lock this way releases it
     * with a wake, so no sleeper is forgotten, at worst one wake too many. */
    while (atomic_exchange_explicit(&l->state, 2, memory_order_acquire) != 0)
        syscall(SYS_futex, &l->state, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
}

void bp__lock_wake(bp__lock *l) { syscall(SYS_futex, &l->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0); }

#else

typedef int bp__lock_unused; /* ISO C: a translation unit is not empty */

#endif
