/* SPDX-License-Identifier: MIT */
/*
 * The background purge (config.background_purge): one thread for the process that wakes
 * every quarter of the shortest decay time any allocator asks for (10 ms .. 1 s) and purges
 * the arenas nothing has used since its last look (bp__arena_idle), as their threads'
 * allocations would if there were any: so a program that releases its buffers and stops
 * gets its memory back with no further call. Busy arenas are left to their threads: the
 * thread costs them nothing.
 *
 * It walks the registry of live allocators under bp__registry_lock, so an allocator is
 * never destroyed under it. A child process made by fork has no such thread and starts
 * none: the thread makes every parent multi-threaded, and a child of a multi-threaded
 * process must not create threads before exec (POSIX allows it only async-signal-safe
 * calls; ThreadSanitizer stops it). There, allocations and bp_allocator_purge give memory
 * back as they do with background_purge 0.
 */
#ifndef BP__PURGER_H
#define BP__PURGER_H

#include "allocator.h"
#include "common.h"

/* Starts the thread if it is not running in this process (never in a child made by fork).
 * Cheap when it is: one relaxed load. False when it is not running (after a failure, tried
 * again at the next call). */
bool bp__purger_ensure(void);

/* A new allocator wants the purge: the thread, if it runs, looks again now (its pause may
 * have been set for longer decay times). */
void bp__purger_wake(void);

/* Fork handler, in the child: the thread did not come along. */
void bp__purger_atfork_child(void);

/* For the tests: how many passes over the registry the thread has made. */
uint64_t bp__purger_passes(void);

#endif
