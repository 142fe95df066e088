/* SPDX-License-Identifier: MIT */
/* The arena lock: mutual exclusion under contention, and sleepers woken. */
#include "test_util.h"

#include "lock.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

enum { THREADS = 4, ROUNDS = 100000 };

static bp__lock shared_lock;
static unsigned long counter; /* plain: only ever changed under shared_lock */

static void *increment_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        bp__lock_acquire(&shared_lock);
        unsigned long seen = counter;
        if (i % 64 == 0) sched_yield(); /* held across a yield: others spin, then sleep */
        counter = seen + 1;
        bp__lock_release(&shared_lock);
    }
    return NULL;
}

/* Increments that read, yield and write back are all counted: no two threads were ever
 * inside at once. */
static void test_mutual_exclusion_under_contention(void **state)
{
    (void)state;
    assert_int_equal(bp__lock_init(&shared_lock), 0);
    counter = 0;
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, increment_many, NULL), 0);
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(counter, (unsigned long)THREADS * ROUNDS);
    bp__lock_destroy(&shared_lock);
}

static void *increment_once(void *arg)
{
    (void)arg;
    bp__lock_acquire(&shared_lock);
    counter++;
    bp__lock_release(&shared_lock);
    return NULL;
}

/* Threads that find the lock held for a long time go to sleep on it; one release wakes one,
 * whose release wakes the next, until every one got in. */
static void test_sleepers_are_woken(void **state)
{
    (void)state;
    assert_int_equal(bp__lock_init(&shared_lock), 0);
    counter = 0;
    bp__lock_acquire(&shared_lock);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, increment_once, NULL), 0);
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL); /* far longer than the waiters spin */
#if defined(__linux__)
    assert_int_equal(atomic_load(&shared_lock.state), 2); /* a sleeper announced itself */
#endif
    assert_int_equal(counter, 0);
    bp__lock_release(&shared_lock);
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
    assert_int_equal(counter, THREADS);
#if defined(__linux__)
    assert_int_equal(atomic_load(&shared_lock.state), 0);
#endif
    bp__lock_destroy(&shared_lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutual_exclusion_under_contention),
        cmocka_unit_test(test_sleepers_are_woken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
