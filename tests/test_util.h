/* Helpers shared by the cmocka tests. */
#ifndef BP_TEST_UTIL_H
#define BP_TEST_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <bytepool.h>

#include <string.h>

/* Records the last misuse report instead of aborting. */
typedef struct misuse_record {
    int count;
    int err;
    char func[64];
    char message[256];
} misuse_record;

static misuse_record last_misuse;

static void record_misuse(int err, const char *func, const char *message, void *user_data)
{
    misuse_record *r = user_data;
    r->count++;
    r->err = err;
    strncpy(r->func, func, sizeof r->func - 1);
    strncpy(r->message, message, sizeof r->message - 1);
}

static inline void misuse_capture_start(void)
{
    memset(&last_misuse, 0, sizeof last_misuse);
    bp_set_misuse_handler(record_misuse, &last_misuse);
}

static inline void misuse_capture_stop(void) { bp_set_misuse_handler(NULL, NULL); }

/* Deterministic xorshift for repeatable random tests. */
static inline uint64_t test_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

#endif
