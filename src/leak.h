/* SPDX-License-Identifier: MIT */
/*
 * Leak tracking (Netty's ResourceLeakDetector): a sample of buffers carries a record with
 * the stack that allocated it and, at the advanced levels, its last accesses. Records of
 * live tracked buffers sit in their allocator's tracker; whatever is still there when the
 * allocator goes away (or a report is asked for) is a leak.
 *
 * Invariants: a record is in exactly one tracker's list from bp__leak_track until
 * bp__leak_untrack; `reported` records have been named once and are not named again.
 */
#ifndef BP__LEAK_H
#define BP__LEAK_H

#include "common.h"

#include <pthread.h>

#define BP__LEAK_FRAMES 24
#define BP__LEAK_ACCESSES 4 /* Netty's targetRecords */

typedef struct bp__leak_access {
    const char *what;          /* "retain", "release", "touch" */
    const char *hint;          /* bp_touch's hint, or NULL */
    int depth;
    void *frames[BP__LEAK_FRAMES];
} bp__leak_access;

typedef struct bp__leak_record {
    struct bp__leak_record *prev, *next;
    size_t capacity;
    bool reported;
    unsigned naccesses;        /* recorded so far; the last BP__LEAK_ACCESSES are kept */
    int depth;
    void *frames[BP__LEAK_FRAMES];
    bp__leak_access accesses[BP__LEAK_ACCESSES];
} bp__leak_record;

typedef struct bp__leak_tracker {
    pthread_mutex_t lock;
    bp__leak_record *head;
    unsigned level;            /* bp_leak_level */
    unsigned interval;         /* 1 for paranoid */
} bp__leak_tracker;

void bp__leak_init(bp__leak_tracker *t, unsigned level, unsigned interval);

/* Frees every record (the allocator is going away; report first). */
void bp__leak_destroy(bp__leak_tracker *t);

/* Starts tracking a buffer of `capacity` bytes allocated by the caller's caller. NULL when
 * out of memory (the buffer simply goes untracked). */
BP__NOINLINE bp__leak_record *bp__leak_track(bp__leak_tracker *t, size_t capacity);

void bp__leak_untrack(bp__leak_tracker *t, bp__leak_record *r);

/* Notes an access (advanced and paranoid levels). */
BP__NOINLINE void bp__leak_note(bp__leak_tracker *t, bp__leak_record *r, const char *what, const char *hint);

/* Writes one report of the records not reported yet to the sink; returns how many. */
long bp__leak_report(bp__leak_tracker *t);

/* Whether reports name frames with file:line: bytepool was built with libdw's headers,
 * BYTEPOOL_LEAK_SYMBOLIZER does not say dladdr and libdw loaded with every function used.
 * Makes that choice (loading libdw) if no report has yet. */
bool bp__leak_has_line_info(void);

#if BP__TESTING
/* Forgets how frames are named: the next report (or bp__leak_has_line_info) reads
 * BYTEPOOL_LEAK_SYMBOLIZER again and loads `soname` as libdw (NULL: libdw.so.1). For tests,
 * while no report runs. */
void bp__leak_symbolizer_reset(const char *soname);
#endif
/* Fork handlers (see BP__FORK_PREPARE): the module's process-wide locks, and a tracker's. */
void bp__leak_atfork(int when);
void bp__leak_tracker_atfork(bp__leak_tracker *t, int when);

#endif
