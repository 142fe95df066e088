/* SPDX-License-Identifier: MIT */
/*
 * bytepool — pooled, reference-counted byte buffers for C (Netty's ByteBuf and
 * PooledByteBufAllocator, jemalloc's design).
 *
 * The whole public API is in this header.
 *
 *   bp_allocator *a = bp_allocator_default();
 *   bp_buf *b = bp_alloc(a, BP_DEFAULT_CAPACITY);
 *   bp_write_i32(b, 10);                 // big-endian, writer index += 4
 *   int32_t v; bp_read_i32(b, &v);        // reader index += 4, v == 10
 *   bp_release(b);                        // memory and the bp_buf go back to the pool
 *
 * Conventions
 * - Functions that can fail return an int: 0 (or a documented non-negative value) on
 *   success, a negative BP_E* code on failure. bp_strerror() names the code.
 * - A call that fails changes nothing: indices, contents, capacity and reference count
 *   are exactly as they were before the call. (One exception, said where it applies:
 *   bp_read_fd keeps the room it made before a read that then brings nothing.)
 * - Misuse (a NULL argument, a buffer used after its last release, an index out of range,
 *   growth past max capacity, an overflowing size) is never undefined behaviour: it is
 *   reported through the error code and, in addition, through the process-wide misuse
 *   handler (see bp_set_misuse_handler), which can turn it into an abort with a message.
 * - Buffer invariant, kept by every call: 0 <= reader_index <= writer_index <= capacity
 *   <= max_capacity.
 * - Multi-byte integers are big-endian (network order) unless the function name ends in
 *   _le, as in Netty.
 * - The typed accessors and index getters are inline functions (C99 `inline`, gcc or
 *   clang); the library also exports them, so they link at -O0 and from other languages.
 * - Thread safety: an allocator may be used from any number of threads at once. A single
 *   bp_buf is not synchronised: one thread at a time may read or change its indices and
 *   contents. Different bp_buf objects may be used on different threads at once, views of
 *   one buffer included: threads each reading shared bytes through a view of their own (a
 *   frame, a retained duplicate) is fine; writing bytes another thread reads is a data
 *   race, as with any memory. bp_retain / bp_release are atomic and may be called from any
 *   thread, each for a reference it holds. One misuse is undefined behaviour unless the
 *   allocator has bp_config.release_check: two threads releasing the same last reference
 *   at once (see bp_release).
 * - A use after release is detected as long as the bp_buf object has not been handed out
 *   again: like Netty, bytepool recycles bp_buf objects, so a stale pointer to a buffer you
 *   released yourself (a root, a composite, a view; a plain view also once freed or gone
 *   with its original) names whoever gets the object next, and calls through it act on
 *   that buffer. Do not keep pointers past bp_release.
 *   What views and composites keep is checked past recycling: each records the generation
 *   of the buffers it shows, holds or contains, and a bp_buf object's generation changes
 *   whenever a buffer so recorded ends (64 bits: it does not wrap). So a view whose
 *   original (or, for a retained view, its parent) was released behind its back, and a
 *   composite whose component was, fail every call with BP_EFREED - also once the object
 *   is someone else's buffer - and never read, write or release that buffer.
 * - Versions: the inline functions compile the layout of some of the library's structures
 *   into the program, so a program runs only with a library of the same layout (ABI):
 *   rebuild it against the header of the library it will run with. The layout has a number
 *   of its own, carried by the shared library's SONAME (libbytepool.so.<N>), so the dynamic
 *   linker refuses a library of another layout; a program that meets one anyway (a static
 *   library, a copied header) stops at its first bp_allocator_new,
 *   bp_allocator_new_unpooled or bp_allocator_default with a message naming both numbers
 *   (abort), before any buffer exists. Compiled without optimization, a program calls every
 *   inline function in the library and has no layout compiled in, except the creators'
 *   check (they are always inlined).
 */
#ifndef BYTEPOOL_H
#define BYTEPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(BP_STATIC_DEFINE)
#  define BP_API
#elif defined(__GNUC__)
#  define BP_API __attribute__((visibility("default")))
#else
#  define BP_API
#endif

/* The version of this header: BP_VERSION is major * 10000 + minor * 100 + patch (0.1.0 is
 * 100), BP_VERSION_STRING the same as text. bp_version() gives the library's. */
#define BP_VERSION_MAJOR 0
#define BP_VERSION_MINOR 1
#define BP_VERSION_PATCH 0
#define BP_VERSION (BP_VERSION_MAJOR * 10000 + BP_VERSION_MINOR * 100 + BP_VERSION_PATCH)
#define BP__STRINGIFY(x) #x
#define BP__VERSION_TEXT(major, minor, patch) BP__STRINGIFY(major) "." BP__STRINGIFY(minor) "." BP__STRINGIFY(patch)
#define BP_VERSION_STRING BP__VERSION_TEXT(BP_VERSION_MAJOR, BP_VERSION_MINOR, BP_VERSION_PATCH)

/* Private: the number of the layout of the structures the inline functions read (see
 * "Private" below) and of bp_config, which programs allocate; it changes whenever they
 * change, and the shared library's SONAME is libbytepool.so.<BP__ABI_VERSION>. */
#define BP__ABI_VERSION 3

/* ---------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------- */

/* X-macro: the enum, bp_strerror and bp_err_name are made from this one list. */
#define BP_ERROR_MAP(XX)                                                                   \
    XX(EINVAL, -1, "invalid argument")                                                     \
    XX(ENOMEM, -2, "out of memory")                                                        \
    XX(EFREED, -3, "buffer already released (reference count is 0)")                       \
    XX(ERANGE, -4, "index or length out of range")                                         \
    XX(ECAPACITY, -5, "capacity would exceed the buffer's max capacity")                   \
    XX(EOVERFLOW, -6, "size overflows or exceeds the largest supported size")              \
    XX(EREFCNT, -7, "reference count would overflow or drop below zero")                   \
    XX(EOF, -8, "end of stream")                                                           \
    XX(EIO, -9, "I/O error (errno tells which)")                                           \
    XX(ESHARED, -10, "buffer's bytes are shared (reference count above 1, or live views)")  \
    XX(ETOOLONG, -11, "frame longer than the decoder's maximum")                           \
    XX(ECORRUPT, -12, "malformed frame")                                                   \
    XX(EFULL, -13, "input holds its maximum of unread bytes")

typedef enum bp_error {
    BP_OK = 0,
#define BP__ERROR_ENUM(name, value, text) BP_##name = (value),
    BP_ERROR_MAP(BP__ERROR_ENUM)
#undef BP__ERROR_ENUM
} bp_error;

/* The text for an error code ("invalid argument", ...); "success" for 0, "unknown error"
 * for anything else. Never NULL; the string is static. */
BP_API const char *bp_strerror(int err);

/* The code's name ("BP_EINVAL", ...); "BP_OK" for 0, "BP_UNKNOWN" otherwise. */
BP_API const char *bp_err_name(int err);

/* The library's version (BP_VERSION of the header it was built with), and as text. A
 * program may compare them with the macros of the header it was compiled against. */
BP_API int bp_version(void);
BP_API const char *bp_version_string(void);

/* Misuse handler: called (before the failing function returns its error) for every misuse
 * detected through the API: BP_EINVAL, BP_EFREED, BP_ERANGE, BP_ECAPACITY, BP_EOVERFLOW,
 * BP_EREFCNT. Not called for BP_ENOMEM, BP_EOF, BP_EIO, BP_ESHARED, BP_ETOOLONG,
 * BP_ECORRUPT or BP_EFULL, which are not misuse (BP_ESHARED: a discard refused while other
 * holders share the bytes, which servers try opportunistically; the last three come from a
 * peer's bytes). `func` is the public function the program called (bp_release for a release
 * through bp_release, bp_release_n for one through bp_release_n, ...) - for a buffer handed
 * to an input or output found broken there (a composite component released behind its
 * back, say), the buffer function that input or output called on it (bp_write_buf, ...) -
 * and `message` a one-line description with the values involved. */
typedef void (*bp_misuse_handler)(int err, const char *func, const char *message,
                                  void *user_data);

/* Installs a process-wide misuse handler (NULL: none) and returns the previous one. Safe to
 * call from any thread; handlers run on the thread that misused. The handler starts as
 * NULL, or as bp_misuse_abort when BYTEPOOL_ABORT_ON_MISUSE=1 (see bp_misuse_abort);
 * whatever the program installs replaces it, whenever it does. */
BP_API bp_misuse_handler bp_set_misuse_handler(bp_misuse_handler handler, void *user_data);

/* A ready handler: prints "bytepool: <func>: <message> (<BP_E...>)" to stderr and aborts.
 * The environment variable BYTEPOOL_ABORT_ON_MISUSE=1 installs it for the whole process and
 * every allocator. The variable is read once, at the first of: the first allocator made
 * (bp_allocator_new, bp_allocator_new_unpooled, bp_allocator_default), the first misuse, the
 * first bp_set_misuse_handler call; any other value, or none, leaves misuse unreported
 * (errors are still returned). A handler the program installs, before or after, wins. */
BP_API void bp_misuse_abort(int err, const char *func, const char *message, void *user_data);

/* ---------------------------------------------------------------------------------------
 * Allocators
 * ------------------------------------------------------------------------------------- */

typedef struct bp_allocator bp_allocator;
typedef struct bp_buf bp_buf;

/* Capacity bp_alloc users pass for "a buffer of the usual size"; Netty's default
 * initial capacity of directBuffer(). */
#define BP_DEFAULT_CAPACITY ((size_t)256)

/* The largest capacity and max capacity a buffer may have (2^47 bytes, 128 TiB: beyond
 * any mapping a 64-bit Linux process can make). Larger sizes fail with BP_EOVERFLOW. */
#define BP_CAPACITY_LIMIT ((size_t)1 << 47)

/* The max capacity bp_alloc gives a buffer (Netty: Integer.MAX_VALUE). */
#define BP_DEFAULT_MAX_CAPACITY ((size_t)INT32_MAX)

/* Settings of a pooled allocator. Obtain defaults with bp_config_init, change fields,
 * pass to bp_allocator_new. Sizes are in bytes. The configuration table of README.md gives
 * each field's limits and environment variable; docs/design.md what each one trades. */
typedef struct bp_config {
    size_t page_size;   /* power of two, 4 KiB .. 64 KiB, at least the OS page; default 8 KiB */
    size_t chunk_size;  /* power of two, 8 pages .. 1 GiB; default 4 MiB */
    unsigned arenas;    /* 1 .. 1024; default 2 x online CPUs */
    unsigned recycler_capacity; /* released bp_buf objects a thread keeps for itself (the
                                   rest go to the allocator's spare list); default 4096,
                                   0 = none. Objects no thread keeps are given back by
                                   purges (see object_bytes) */
    unsigned small_cache_size;  /* thread cache entries per small class; default 256, 0 = off */
    unsigned normal_cache_size; /* thread cache entries per cached normal class; default 64 */
    size_t max_cached_size;     /* largest size class kept in thread caches; default 64 KiB */
    size_t cache_class_max_bytes; /* a bin holds at most this many bytes (but 8 entries), and
                                     one that keeps overflowing grows up to 4x within it;
                                     default 1 MiB; 0 = no bound, bins never grow */
    unsigned cache_trim_interval; /* allocations between cache trims; default 8192, 0 = never */
    unsigned chunk_decay_ms;    /* an emptied chunk stays mapped this long for reuse before
                                   it is unmapped; default 1000, 0 = unmap at once */
    unsigned leak_detection;    /* a bp_leak_level; default BP_LEAK_DISABLED */
    unsigned leak_sampling_interval; /* simple/advanced: track 1 buffer in this many, at
                                        random gaps; default 128 */
    unsigned dirty_decay_ms;    /* free pages inside chunks free this long (up to twice) go back
                                   to the OS; default 1000, 0 = at every check, BP_DECAY_NEVER */
    unsigned arena_cache_size;  /* released buffers each arena keeps per thread-cached class for
                                   its threads' misses (transfer cache); default 8192, 0 = off */
    size_t arena_cache_max_bytes; /* ... and their bytes, all classes of one arena together;
                                     default 16 MiB */
    unsigned run_cache_size;    /* runs of each normal class thread caches keep that overflow
                                   the caches, held back uncoalesced by their arena for the
                                   next burst; default 1024, 0 = off */
    unsigned release_check;     /* 1: of two releases racing for the last reference exactly
                                   one wins (see bp_release); default 0 */
    unsigned dirty_max_percent; /* free pages still resident stay within this % of the arena's
                                   recent peak of handed-out bytes; default 10, 0 = no bound */
    unsigned background_purge;  /* 1: a thread gives idle arenas' memory back with no call from
                                   the program (not thread caches; bp_buf objects too once
                                   every arena idles, see object_bytes), and the buffers released
                                   on other threads that wait for an allocating thread whose
                                   queue of them did not change for a pass (nothing taken,
                                   nothing added); it passes every quarter of the shortest
                                   dirty or chunk decay time of any allocator, 10 ms to 1 s;
                                   default 1 */
} bp_config;

/* dirty_decay_ms: keep free pages resident for good. */
#define BP_DECAY_NEVER 4294967295u

/* Leak detection levels (Netty's ResourceLeakDetector.Level). */
typedef enum bp_leak_level {
    BP_LEAK_DISABLED = 0, /* nothing tracked */
    BP_LEAK_SIMPLE = 1,   /* 1 buffer in leak_sampling_interval on average, with its
                             allocation stack */
    BP_LEAK_ADVANCED = 2, /* the same sample, plus the last 4 accesses (retain, release, touch) */
    BP_LEAK_PARANOID = 3  /* every buffer, as advanced */
} bp_leak_level;

/* Fills *cfg with the defaults above. */
BP_API void bp_config_init(bp_config *cfg);

/* Fills *cfg with the defaults, then applies the BYTEPOOL_* environment variables (one per
 * field, listed in the README; decimal, with a K/M/G suffix for sizes; the leak level as
 * disabled, simple, advanced or paranoid). On a malformed or invalid value returns
 * BP_EINVAL, writes "BYTEPOOL_X=value: reason" into errbuf (if errbuf_len > 0) and leaves
 * *cfg with the defaults. */
BP_API int bp_config_from_env(bp_config *cfg, char *errbuf, size_t errbuf_len);

/* Checks every setting. Returns 0, or BP_EINVAL with a message naming the setting and
 * its value in errbuf (if errbuf_len > 0). */
BP_API int bp_config_validate(const bp_config *cfg, char *errbuf, size_t errbuf_len);

/* Fork. bytepool installs fork handlers (pthread_atfork) when the first allocator is made.
 * A child process made by fork() - while other threads of the parent allocate, release,
 * create or destroy allocators - may use every allocator that existed in the parent, the
 * default one included: allocate, release, make and destroy allocators. Buffers alive in
 * the parent at the fork are alive in the child (each process has its own copy): the child
 * may use and release them, whichever thread allocated them. The parent's other threads do
 * not exist in the child: their thread caches go back to the arenas, so that `threads` and
 * `thread_caches` count the child's thread alone, and the buffers they held stay counted in
 * active_buffers until the child releases them (a buffer one of them was allocating or
 * releasing at the very instant of the fork may stay counted as in use for good). A
 * child of vfork() or of a raw clone(), which run no fork handlers, must not use the
 * library before it execs. */

/* Creates a pooled allocator. cfg NULL means the defaults. Returns NULL on failure and
 * stores the reason in *err (if err is not NULL): BP_EINVAL for an invalid configuration,
 * BP_ENOMEM when memory, a thread-local key, or (for the first allocator) the fork
 * handlers cannot be had. No memory is mapped until the first allocation.
 * Inline (as bp_allocator_new_unpooled and bp_allocator_default): it passes the layout
 * number of this header (BP__ABI_VERSION) to the library, which, when its own differs,
 * prints "bytepool: ... rebuild the program against the installed bytepool.h" with both
 * numbers to stderr and aborts: the program was compiled against another version's
 * header (see Versions at the top). */
BP_API bp_allocator *bp__allocator_new_abi(unsigned abi, const bp_config *cfg, int *err);
BP_API inline __attribute__((always_inline)) bp_allocator *bp_allocator_new(const bp_config *cfg, int *err)
{
    return bp__allocator_new_abi(BP__ABI_VERSION, cfg, err);
}

/* Creates an unpooled allocator: every buffer is a plain malloc'ed region, released with
 * free. Same interface and checks; for comparison and for debugging with sanitizers. Its
 * releases always detect a release racing them, as with bp_config.release_check.
 * Returns NULL with *err = BP_ENOMEM when out of memory. Aborts on a layout mismatch, as
 * bp_allocator_new. */
BP_API bp_allocator *bp__allocator_new_unpooled_abi(unsigned abi, int *err);
BP_API inline __attribute__((always_inline)) bp_allocator *bp_allocator_new_unpooled(int *err)
{
    return bp__allocator_new_unpooled_abi(BP__ABI_VERSION, err);
}

/* Destroys an allocator made by bp_allocator_new or bp_allocator_new_unpooled and unmaps
 * all of its memory, including that of buffers still alive (which must not be used
 * afterwards). While this runs, no other thread may be using the allocator (calling a
 * function on it or on one of its buffers) or exiting after having used it. Other threads
 * that used it may stay alive - idle, or using other allocators - and exit later: their
 * caches of it go with it, and they never read anything of it again. NULL and the default
 * allocator are ignored. */
BP_API void bp_allocator_destroy(bp_allocator *a);

/* The process-wide pooled allocator (PooledByteBufAllocator.DEFAULT), created on first
 * call from bp_config_from_env. Returns NULL if the environment holds an invalid setting
 * (the reason is printed once to stderr) or memory is exhausted. Never destroyed. Aborts
 * on a layout mismatch, as bp_allocator_new. */
BP_API bp_allocator *bp__allocator_default_abi(unsigned abi);
BP_API inline __attribute__((always_inline)) bp_allocator *bp_allocator_default(void)
{
    return bp__allocator_default_abi(BP__ABI_VERSION);
}

/* Whether buffers from this allocator come from the pool (1) or from malloc (0);
 * BP_EINVAL for NULL. */
BP_API int bp_allocator_is_pooled(const bp_allocator *a);

/* Trims the calling thread's cache for `a` as the scheduled trim does (every cached region
 * not asked for since the last trim goes back to its arena; Netty's trimCurrentThreadCache),
 * and sends the buffers this thread released for other threads, still waiting in partial
 * batches, on to them. Returns how many regions went back (0 for an unpooled allocator),
 * BP_EINVAL for NULL, BP_ENOMEM if the thread's state cannot be made. */
BP_API int bp_thread_cache_trim(bp_allocator *a);

/* Gives every region in the calling thread's cache for `a` back to the arenas (and sends
 * partial batches of buffers released for other threads on, as bp_thread_cache_trim), and
 * the released bp_buf objects the thread keeps for reuse (recycler_capacity) to the
 * allocator, where a purge can give their memory back (see object_bytes). Returns how many
 * regions went back; errors as bp_thread_cache_trim. Thread exit does this by itself. */
BP_API int bp_thread_cache_flush(bp_allocator *a);

/* Frees every region the arenas' caches hold (see arena_cache_size), every run they hold
 * back (run_cache_size) and the buffers released on other threads that wait for their
 * allocating thread to take them back, gives back the empty subpage each small class
 * keeps, unmaps every empty chunk (those kept for reuse, see chunk_decay_ms, included) and
 * gives every free page still resident back to the OS (see dirty_decay_ms), now rather
 * than when their time is up: with no buffer alive and the thread caches flushed, no chunk
 * stays mapped. Last, gives back the pages of bp_buf objects that are all released and
 * held by no thread (see object_bytes). Thread caches are left alone (see
 * bp_thread_cache_flush), and so are the batches other threads are still filling (see
 * bp_thread_cache_trim). Returns how many chunks were unmapped, BP_EINVAL for NULL. */
BP_API int bp_allocator_purge(bp_allocator *a);

/* ---------------------------------------------------------------------------------------
 * Leak detection
 *
 * A tracked buffer still alive when its allocator is destroyed, when the process exits
 * (for the default allocator), or when bp_leak_report is called, is a leak. The report
 * names each leak once, grouped by allocation stack: how many buffers and bytes, the stack
 * with function names (and file:line when the code has debug information and libdw is
 * there, see below), and at the advanced levels the buffer's last accesses.
 *
 * bytepool links no library for this: the first tracked buffer loads libunwind
 * (libunwind.so.8; stacks are captured with glibc's backtrace(3), ~10x slower, without it)
 * and the first report loads libdw (libdw.so.1; without it frames are named by dladdr(3):
 * exported functions only, with their offsets, and a line of the report says why libdw
 * could not be loaded). Nothing
 * is loaded while leak detection is off, or for a build configured with BP_WITH_LIBUNWIND=OFF
 * or BP_WITH_LIBDW=OFF (or without their headers). The environment variable
 * BYTEPOOL_LEAK_SYMBOLIZER, read at the first report, chooses how frames are named: "libdw"
 * (the default) or "dladdr" (never loads libdw); another value is named in the report and
 * libdw is used.
 * ------------------------------------------------------------------------------------- */

/* Where reports go: the whole report as one NUL-terminated text. NULL restores the
 * default, which writes to stderr. Process-wide; returns the previous sink. */
typedef void (*bp_leak_sink)(const char *report, void *user_data);
BP_API bp_leak_sink bp_set_leak_sink(bp_leak_sink sink, void *user_data);

/* Reports the allocator's leaks not reported before. Returns how many buffers were
 * reported (0 when none, or when leak detection is off); BP_EINVAL for NULL. */
BP_API long bp_leak_report(bp_allocator *a);

/* Records a hint on a tracked buffer at the advanced and paranoid levels (Netty's touch):
 * shown with the buffer's stack if it leaks. A no-op for untracked buffers. `hint` must
 * stay valid (a string literal, say). Returns 0; BP_EINVAL (NULL buffer), BP_EFREED. */
BP_API int bp_touch(bp_buf *b, const char *hint);

/* ---------------------------------------------------------------------------------------
 * Statistics
 * ------------------------------------------------------------------------------------- */

/* Usage bands of chunks, Netty's PoolChunkList: qInit, q000, q025, q050, q075, q100. */
#define BP_CHUNK_BANDS 6

/* Counters of one arena. Byte counts are of regions handed out (rounded to size class);
 * a region in a thread cache or in the arena's cache still counts as handed out. */
typedef struct bp_arena_stats {
    uint64_t allocations_small, allocations_normal, allocations_huge;
    uint64_t deallocations_small, deallocations_normal, deallocations_huge;
    uint64_t active_small, active_normal, active_huge; /* allocations - deallocations */
    size_t active_bytes;      /* bytes in regions currently handed out */
    size_t chunks;            /* chunks mapped */
    size_t chunks_in_band[BP_CHUNK_BANDS]; /* chunks per usage band, qInit first */
    size_t huge_mapped_bytes; /* bytes of huge mappings alive */
    unsigned threads;         /* threads bound to this arena */
    size_t retained_chunks;   /* empty chunks kept mapped for reuse (chunk_decay_ms) */
    size_t dirty_bytes;       /* free pages in chunks, touched and not purged since */
    uint64_t purged_bytes;    /* bytes given back to the OS by purging, ever */
    size_t cached_entries;    /* released buffers in the arena's cache (arena_cache_size) */
    size_t cached_bytes;      /* their regions' bytes (still counted in active_bytes) */
    size_t cached_runs;       /* freed runs held back from their chunks (run_cache_size) */
    size_t cached_run_bytes;  /* their bytes (not active; their chunks count them as used) */
    size_t free_page_bytes;   /* free pages of the chunks in use, resident (dirty) or not */
    size_t free_slot_bytes;   /* free slots of the subpages in use (small classes) */
} bp_arena_stats;

/* Counters of a whole allocator: the arenas summed, plus settings. */
typedef struct bp_allocator_stats {
    unsigned arenas;
    size_t page_size, chunk_size;
    size_t mapped_bytes;      /* (chunks + retained chunks) x chunk_size + huge mappings */
    size_t active_bytes;      /* bytes in regions of live buffers, and of buffers of a class
                                 thread caches keep released on a thread other than their
                                 allocator's and not back yet: in that thread's outgoing
                                 batch (sent on when it holds 64 buffers or 1 MiB, at the
                                 thread's trims and flushes, and when it exits), then until
                                 the allocating thread takes them back (at its next cache
                                 miss) or a purge does (background_purge,
                                 bp_allocator_purge). Larger ones go back from the
                                 releasing thread at once */
    size_t chunks;
    uint64_t active_buffers;  /* live buffers with memory of their own (allocated or
                                 wrapped); views count in active_views, composites in
                                 neither (their objects are in object_bytes) */
    uint64_t allocations, deallocations; /* regions taken from and given back to arenas */
    unsigned thread_caches;   /* threads that currently have a cache */
    size_t cached_entries;    /* regions sitting in thread caches */
    size_t cached_bytes;      /* their bytes (counted in no buffer, but out of the arenas) */
    uint64_t cache_hits, cache_misses, cache_trims;
    size_t retained_chunks;   /* empty chunks kept mapped for reuse, counted in mapped_bytes */
    unsigned threads;         /* threads currently using the allocator */
    uint64_t remote_releases; /* buffers of a class thread caches keep released on a thread
                                 other than their allocator's, counted as their batch is sent
                                 on to the allocating thread (not those whose allocating
                                 thread had exited: the releasing thread gives them back
                                 itself, as it does larger ones at once) */
    uint64_t remote_drained;  /* of those, taken back by the allocating thread (the rest were
                                 freed by the releaser or a purge, or are on their way back) */
    size_t dirty_bytes;       /* free pages in chunks still resident (dirty_decay_ms) */
    uint64_t purged_bytes;    /* bytes given back to the OS by purging free pages, ever */
    size_t arena_cached_entries; /* released buffers in the arenas' caches (arena_cache_size) */
    size_t arena_cached_bytes;   /* their bytes (counted in no buffer, but out of the chunks) */
    size_t arena_cached_runs;    /* freed runs the arenas hold back from their chunks
                                    (run_cache_size) */
    size_t arena_cached_run_bytes; /* their bytes (not active, but out of the chunks) */
    uint64_t active_views;    /* live views (plain and retained; not counted in
                                 active_buffers): each holds a bp_buf object until it ends */
    /* Where mapped memory goes. For a pooled allocator, at a moment no thread allocates or
     * releases: mapped_bytes == active_bytes (live buffers) + cached_bytes +
     * arena_cached_bytes + arena_cached_run_bytes (caches) + free_slot_bytes + free_page_bytes
     * (fragmentation inside chunks) + retained_chunks x chunk_size (empty chunks kept). */
    size_t free_page_bytes;   /* free pages of the chunks in use (dirty_bytes of them resident) */
    size_t free_slot_bytes;   /* free slots of the subpages in use */
    size_t object_bytes;      /* bookkeeping outside mapped_bytes: the resident bp_buf slabs
                                 (192 bytes an object, 64 a slab) with their descriptors,
                                 and thread states (malloc'ed). Objects are reused, and their
                                 memory never unmapped before the allocator is destroyed -
                                 what keeps a pointer kept past release safe to pass to the
                                 library - but a slab whose 64 objects are all released and
                                 held by no thread (not in its recycler, nor with a region in
                                 a cache: see bp_thread_cache_flush) gives its pages back to
                                 the OS at bp_allocator_purge and at a background purge that
                                 finds every arena idle; so after a peak this falls back to
                                 about the objects in use and in threads' recyclers */
    size_t remote_pending_bytes; /* of active_bytes: regions of buffers released on a thread
                                    other than their allocator's and not back yet (in the
                                    releasing thread's batch, or waiting for the allocating
                                    thread: see active_bytes); 0 when every thread has
                                    taken its own back. Read while threads run, it may
                                    count a batch in flight twice for a moment */
} bp_allocator_stats;

/* Copies the allocator's counters into *out. `out_size` is sizeof(*out) as the caller
 * was compiled; only that many bytes are written, so older callers keep working when the
 * struct grows. Returns 0, or BP_EINVAL for NULL arguments or out_size 0. */
BP_API int bp_allocator_get_stats(const bp_allocator *a, bp_allocator_stats *out,
                                  size_t out_size);

/* Copies arena `index` (0 .. stats.arenas - 1) counters into *out, as above. Returns 0,
 * BP_EINVAL for NULL arguments, BP_ERANGE for an index past the last arena (an unpooled
 * allocator has none). */
BP_API int bp_arena_get_stats(const bp_allocator *a, unsigned index, bp_arena_stats *out,
                              size_t out_size);

/* One chunk of an arena (Netty's PoolChunkMetric). */
typedef struct bp_chunk_stats {
    unsigned band;            /* 0 .. BP_CHUNK_BANDS-1: qInit, q000, q025, q050, q075, q100 */
    int usage;                /* percent, Netty's rounding (99 while any byte is free) */
    size_t chunk_size;
    size_t free_bytes;
    size_t longest_free_run;  /* bytes in the longest run of free pages */
} bp_chunk_stats;

/* One small size class of an arena (Netty's PoolSubpageMetric, summed per class). */
typedef struct bp_class_stats {
    size_t size;              /* the class's slot size */
    size_t run_bytes;         /* bytes of one subpage run */
    size_t slots_per_run;
    size_t subpages;          /* subpages with a free slot (in the class's pool) */
    size_t slots_free;        /* free slots in them */
} bp_class_stats;

/* One live thread's cache (Netty's PoolThreadCache metrics). */
typedef struct bp_thread_cache_stats {
    unsigned arena;           /* the arena the thread is bound to */
    size_t entries, bytes;    /* regions cached and their bytes */
    uint64_t hits, misses, trims;
} bp_thread_cache_stats;

/* Arrays of snapshots. Each fills out[0 .. max-1] - element i at (char *)out + i * elem_size,
 * elem_size being sizeof the element as the caller was compiled (each gets that many
 * bytes), so callers keep working when the structs grow - and returns how many there are
 * in all (which may be more than max; call with max 0 to ask). BP_EINVAL for a NULL
 * allocator, NULL out with max > 0, or elem_size 0; BP_ERANGE for an arena past the last. */
BP_API long bp_arena_chunk_stats(const bp_allocator *a, unsigned arena, bp_chunk_stats *out, size_t max,
                                 size_t elem_size);
BP_API long bp_arena_class_stats(const bp_allocator *a, unsigned arena, bp_class_stats *out, size_t max,
                                 size_t elem_size);
BP_API long bp_allocator_thread_cache_stats(const bp_allocator *a, bp_thread_cache_stats *out, size_t max,
                                            size_t elem_size);

/* Writes everything above as readable text (like Netty's dumpStats): settings and totals,
 * then per arena its counters, chunk lists with their chunks, and small classes in use,
 * then the thread caches. Returns 0; BP_EINVAL for NULL arguments; BP_EIO when writing
 * fails. */
BP_API int bp_allocator_print_stats(const bp_allocator *a, FILE *out);

/* The same as one JSON object (like jemalloc's malloc_stats_print with "J"). */
BP_API int bp_allocator_print_stats_json(const bp_allocator *a, FILE *out);

/* ---------------------------------------------------------------------------------------
 * Private: what the inline fast paths below read - the library's own structures, published
 * as they are (as DPDK publishes struct rte_mempool_cache). Each is the first member of the
 * library's struct: a bp_buf begins with a bp__buf_head, an allocator with a
 * bp__allocator_head, a thread's cache of an allocator with a bp__tcache_head. Their layout
 * is the library's ABI: BP__ABI_VERSION names it, the shared library's SONAME carries it
 * (libbytepool.so.<BP__ABI_VERSION>), and a program compiled against another layout stops
 * at its first allocator creation (see bp_allocator_new). Read and change buffers through
 * the functions.
 * ------------------------------------------------------------------------------------- */

typedef struct bp__buf_head {
    uint8_t *memory;          /* byte 0 of the buffer */
    size_t reader_index;
    size_t writer_index;
    size_t capacity;
    size_t max_capacity;
    uint32_t refcnt;          /* 0 once released; bit 31 marks a buffer whose every access
                                 goes through the library (a view or a composite); read
                                 and written with atomic builtins */
    uint32_t release_tag;     /* the library's: whose thread cache, and which bin of it, a
                                 release may go to with no further check */
    size_t marked_reader_index; /* bp_mark_reader_index; 0 until marked */
    size_t marked_writer_index;
} bp__buf_head;

#define BP__LIKELY(x) __builtin_expect(!!(x), 1)
#define BP__UNLIKELY(x) __builtin_expect(!!(x), 0)
/* A live buffer that is neither a view nor a composite: the only kind the inline fast
 * paths serve. */
#define BP__LIVE(h) ((int32_t)__atomic_load_n(&(h)->refcnt, __ATOMIC_RELAXED) > 0)
#define BP__IS_INDIRECT(h) ((int32_t)__atomic_load_n(&(h)->refcnt, __ATOMIC_RELAXED) < 0)

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#  define BP__ORDER_BE(bits, v) (v)
#  define BP__ORDER_LE(bits, v) BP__BSWAP##bits(v)
#else
#  define BP__ORDER_BE(bits, v) BP__BSWAP##bits(v)
#  define BP__ORDER_LE(bits, v) (v)
#endif
#define BP__BSWAP8(v) (v)
#define BP__BSWAP16(v) __builtin_bswap16(v)
#define BP__BSWAP32(v) __builtin_bswap32(v)
#define BP__BSWAP64(v) __builtin_bswap64(v)

/* ---------------------------------------------------------------------------------------
 * Buffers: allocation and reference counting
 * ------------------------------------------------------------------------------------- */

/* Private: what the inline bp_alloc and bp_release below read (DPDK-style: the common case
 * needs no call at all).
 * - A thread's cache of one allocator: its head holds the release tag base, the allocation
 *   countdown and one bin per size class, inline, so that a bin is an offset from the head
 *   (no further load). A bin holds released bp_buf objects, their memory attached: one in
 *   its hot slot, the rest in a stack. The slot makes a release followed by an allocation
 *   of the same class (the common request/response turn) a pointer handed through one
 *   word: through the stack alone, the pop loads the count before the entry and the
 *   release loads the class from the buffer before the count, and each turn waits on both.
 *   Only the owning thread writes a bin; its fields are read and written with __atomic
 *   builtins, relaxed, because the library's stats sum them from other threads.
 * - An allocator's head: its id (unique for the life of the process, never reused) and the
 *   size class of every size up to 4 KiB (an unpooled allocator's table is all 0, and class
 *   0's bin of its threads' caches stays empty).
 * - The thread's one-entry cache of the allocator it used last: its id, its thread cache and
 *   a copy of that cache's tag base - mid-line in a 64-byte line of its own, away from the
 *   bytes programs write most (4 KiB aliasing). The cache is read only once the allocator's
 *   id, or a buffer's release tag, matches the copies kept here: another thread may have
 *   destroyed the allocator and freed the cache. */
#define BP__MAX_CLASSES 104        /* size classes up to a 1 GiB chunk */
#define BP__INLINE_SIZE_LIMIT 4096 /* sizes the allocator head's table maps to a class */
#define BP__BIN_HIT ((uint64_t)1 << 32)

typedef struct bp__tcache_bin {
    uint64_t state;           /* the stack's count | hits since the last trim << 32 */
    bp_buf **entries;         /* the stack: entries[count - 1] is the newest */
    bp_buf *hot;              /* the slot: taken first, filled first; NULL when empty */
    uint32_t limit;           /* the stack's capacity once entries exist, 0 before: one
                                 compare refuses a push into a full stack and a missing one */
    uint32_t capacity;        /* the library's: entries of the whole bin, slot included;
                                 0 when the class is not cached */
} bp__tcache_bin;

typedef struct bp__tcache_head {
    uint32_t tag_base;        /* release tags this cache takes back: base + class */
    uint32_t fast_left;       /* allocations the fast path may still serve, + 1 */
    unsigned fast_classes;    /* classes above 4 KiB below this one may be popped */
    unsigned ncacheable;      /* classes 0 .. ncacheable - 1 may have entries */
    bp__tcache_bin bins[BP__MAX_CLASSES];
} bp__tcache_head;

typedef struct bp__allocator_head {
    uint64_t id;
    uint8_t classes[(BP__INLINE_SIZE_LIMIT >> 4) + 1]; /* (size + 15) >> 4 -> class */
} bp__allocator_head;

typedef struct bp__tls_cache {
    char line_start[16];
    uint64_t allocator_id;
    bp__tcache_head *cache;   /* never NULL: an empty cache stands in */
    uint32_t tag_base;        /* the cache's release tag base (one matching no tag when
                                 it keeps nothing) */
    char line_end[28];
} __attribute__((aligned(64))) bp__tls_cache;
BP_API extern __thread bp__tls_cache bp__tls_last __attribute__((tls_model("initial-exec")));

/* Keeps a computed bin address in a register as it is: without it, gcc computes
 * &bins[cls] once per field read (a shift and a move more per pop and per push). Generates
 * no instruction. */
#define BP__OPAQUE(p) __asm__("" : "+r"(p))

/* A bin's state, for the bin's own thread or for stats. */
BP_API inline uint64_t bp__bin_state(const bp__tcache_bin *bin)
{
    return __atomic_load_n(&bin->state, __ATOMIC_RELAXED);
}

/* A bin's slot, for the bin's own thread or for stats. */
BP_API inline bp_buf *bp__bin_hot(const bp__tcache_bin *bin)
{
    return __atomic_load_n(&bin->hot, __ATOMIC_RELAXED);
}

/* Takes `hot`, the bin's slot's entry (just loaded, not NULL), counting a hit in the
 * state (just loaded). */
BP_API inline bp_buf *bp__bin_take_hot(bp__tcache_bin *bin, bp_buf *hot, uint64_t state)
{
    __atomic_store_n(&bin->hot, (bp_buf *)NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&bin->state, state + BP__BIN_HIT, __ATOMIC_RELAXED);
    return hot;
}

/* Pops the newest entry of a bin's stack whose state (just loaded) has a count above 0,
 * counting a hit: count - 1 and hits + 1 in one store. */
BP_API inline bp_buf *bp__bin_pop(bp__tcache_bin *bin, uint64_t state)
{
    __atomic_store_n(&bin->state, state + (BP__BIN_HIT - 1), __ATOMIC_RELAXED);
    return bin->entries[(uint32_t)state - 1];
}

/* Puts b into a bin: into its slot when that is empty, else onto its stack; 0, changing
 * nothing, when both are full (or the stack has no entries yet). Either way one store
 * commits it (a fork sees it in the bin or not). */
BP_API inline int bp__bin_push(bp__tcache_bin *bin, bp_buf *b)
{
    BP__OPAQUE(bin);
    if (BP__LIKELY(bp__bin_hot(bin) == NULL)) {
        __atomic_store_n(&bin->hot, b, __ATOMIC_RELAXED);
        return 1;
    }
    uint64_t state = bp__bin_state(bin);
    uint32_t count = (uint32_t)state;
    if (BP__UNLIKELY(count == bin->limit)) return 0;
    bin->entries[count] = b;
    __atomic_store_n(&bin->state, state + 1, __ATOMIC_RELAXED);
    return 1;
}

/* The size class of a size above 4 KiB (below 2^63): four classes per doubling, jemalloc's
 * and Netty's spacing (the library checks it against its own table in its tests). */
BP_API inline unsigned bp__class_above_4k(size_t size)
{
    unsigned lg = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1)); /* >= 12 */
    return 4u * (lg - 6u) + (unsigned)((size - 1) >> (lg - 2u));
}

/* The out-of-line halves: the rest of bp_alloc (a size no thread cache keeps, a cache miss,
 * a trim or a leak sample due, another allocator than the cached one, errors) and of
 * bp_release (all but a sole owner's release to its own thread's cache with room). */
BP_API bp_buf *bp__alloc(bp_allocator *a, size_t capacity);
BP_API int bp__release(bp_buf *b);

/* The allocation fast path, shared by the inline bp_alloc and the library's bp_alloc_ex: a
 * root of `capacity` bytes (max capacity `max_capacity`, which the caller checked) taken
 * from this thread's cache when it holds a released buffer of the size class (the bin's
 * slot first, else its stack) and no trim or leak sample is due - one take and six
 * stores. NULL, changing nothing, otherwise.
 * Only a class computed for a size above 4 KiB is compared with the classes the cache
 * keeps: a looked-up class is below the allocator's class count (an unpooled allocator's
 * empty table gives 0), so its bin exists, empty unless the cache keeps the class. The
 * countdown is loaded once and stored once (written as a decrement after the test, gcc
 * loads it twice). */
BP_API inline bp_buf *bp__alloc_cached(bp_allocator *a, size_t capacity, size_t max_capacity)
{
    const bp__allocator_head *ah = (const bp__allocator_head *)(const void *)a;
    if (BP__LIKELY(ah != NULL && bp__tls_last.allocator_id == ah->id)) {
        bp__tcache_head *tc = bp__tls_last.cache;
        unsigned cls;
        if (BP__LIKELY(capacity <= BP__INLINE_SIZE_LIMIT)) { /* a table load */
            cls = ah->classes[(capacity + 15) >> 4];
        } else { /* computed; only classes a thread cache keeps have bins (the array's
                    bound, which fast_classes never passes, tells the compiler so) */
            cls = bp__class_above_4k(capacity);
            if (cls >= tc->fast_classes || cls >= BP__MAX_CLASSES) return NULL;
        }
        uint32_t left = tc->fast_left;
        bp__tcache_bin *bin = &tc->bins[cls];
        BP__OPAQUE(bin);
        bp_buf *b = bp__bin_hot(bin);
        uint64_t state = bp__bin_state(bin);
        /* the countdown stops before a trim or a leak sample is due */
        if (BP__LIKELY(left > 1 && (b != NULL || (uint32_t)state != 0))) {
            b = BP__LIKELY(b != NULL) ? bp__bin_take_hot(bin, b, state) : bp__bin_pop(bin, state);
            tc->fast_left = left - 1;
            bp__buf_head *h = (bp__buf_head *)(void *)b;
            /* The count first: stored after the fields, its atomic store would make the
             * compiler forget them, and the accessors that follow would load them again. */
            __atomic_store_n(&h->refcnt, 1, __ATOMIC_RELAXED);
            h->reader_index = 0;
            h->writer_index = 0;
            h->capacity = capacity;
            h->max_capacity = max_capacity;
            memset(&h->marked_reader_index, 0, 2 * sizeof(size_t)); /* both marks */
            return b;
        }
    }
    return NULL;
}

/* Allocates a buffer of `capacity` bytes and max capacity BP_DEFAULT_MAX_CAPACITY (or
 * `capacity`, if larger), reference count 1, both indices 0. Contents are unspecified.
 * Returns NULL on failure (NULL allocator, capacity above BP_CAPACITY_LIMIT, out of
 * memory); bp_alloc_ex tells which.
 * Inline: with this thread's cache holding a released buffer of the size class, it is one
 * take and six stores; anything else goes to the library. (A size a thread cache serves is
 * far below the default max capacity, so the fast path stores that max as it is.) */
BP_API inline bp_buf *bp_alloc(bp_allocator *a, size_t capacity)
{
    bp_buf *b = bp__alloc_cached(a, capacity, BP_DEFAULT_MAX_CAPACITY);
    return BP__LIKELY(b != NULL) ? b : bp__alloc(a, capacity);
}

/* Allocates a buffer of `capacity` bytes that may grow to `max_capacity`. Returns NULL
 * on failure and stores the reason in *err (if not NULL): BP_EINVAL for a NULL allocator
 * or capacity > max_capacity, BP_EOVERFLOW for a size above BP_CAPACITY_LIMIT,
 * BP_ENOMEM when memory cannot be had. */
BP_API bp_buf *bp_alloc_ex(bp_allocator *a, size_t capacity, size_t max_capacity, int *err);

/* Adds one reference. Returns 0; BP_EINVAL (NULL), BP_EFREED (already released),
 * BP_EREFCNT (the count would pass INT32_MAX). The caller holds a reference, so the count
 * cannot drop to 0 meanwhile. A retain racing the release of the last reference (held by
 * another thread) is misuse: with the allocator's release_check, either the retain comes
 * first (it returns 0 and the release leaves a count of 1) or the release does (it
 * returns 1 and the retain BP_EFREED); by default the release may also store 0 over the
 * retain's increment, so that the retain returns 0 for a buffer already given back. A
 * retain after the count reached 0 fails with BP_EFREED either way (as long as the object
 * has not been handed out again: see the conventions at the top). */
BP_API int bp_retain(bp_buf *b);

/* Adds `n` (>= 1) references; errors as bp_retain, plus BP_EINVAL for n == 0. */
BP_API int bp_retain_n(bp_buf *b, uint32_t n);

/* The release fast path, shared by the inline bp_release and the library's bp_release_n:
 * the last `n` references of a plain root dropped on the thread that allocated it, with room
 * in that thread's cache - a plain store of the count (sole owner: no atomic
 * read-modify-write) and one push. 0, changing nothing, otherwise. The tag is compared with
 * the thread's copy of its cache's base, so that the cache is read only when it is the
 * buffer's (never a cache freed with its allocator: bases are never reused). */
BP_API inline int bp__release_cached(bp_buf *b, uint32_t n)
{
    if (BP__LIKELY(b != NULL)) {
        bp__buf_head *h = (bp__buf_head *)(void *)b;
        uint32_t count = __atomic_load_n(&h->refcnt, __ATOMIC_ACQUIRE);
        uint32_t tag = __atomic_load_n(&h->release_tag, __ATOMIC_RELAXED);
        /* The tag names this thread's cache and the bin of the buffer's class, or nothing. */
        if (BP__LIKELY(count == n && (int32_t)count > 0 && (tag & ~0xffu) == bp__tls_last.tag_base) &&
            BP__LIKELY(bp__bin_push(&bp__tls_last.cache->bins[tag & 0xffu], b))) {
            __atomic_store_n(&h->refcnt, 0, __ATOMIC_RELAXED);
            return 1;
        }
    }
    return 0;
}

/* Drops one reference. Returns 1 when this call released the buffer (memory and the
 * bp_buf go back to the pool; the pointer must not be used again), 0 when references
 * remain; BP_EINVAL (NULL), BP_EFREED (already released: a release too many).
 * Releases of different references may race (the count is atomic). Two releases racing
 * for the same last reference - a reference released twice, by two threads at once - are
 * a program error, and what happens depends on the allocator:
 * - by default it is undefined behaviour, not detected: the release of a buffer's last
 *   reference sees a count of 1 and stores 0 (no atomic read-modify-write), so both calls
 *   may return 1; the buffer then goes back to the pool twice, is handed out to two owners
 *   at once (two buffers sharing memory), and the pool's state can be corrupted (a crash
 *   later). Retained views and composites, which keep counts of their own, are the
 *   exception: their counts always drop with a compare-and-set;
 * - with bp_config.release_check (and for unpooled allocators), exactly one of the two
 *   returns 1 and the other BP_EFREED, whichever threads they run on and whatever the
 *   buffer (any size, a view, a composite); the pool stays intact.
 * A release after the count reached 0 fails with BP_EFREED in both modes (as long as the
 * object has not been handed out again).
 * Inline: a sole owner's release on the thread that allocated the buffer, with room in
 * that thread's cache, is a plain store of the count and one push (no atomic
 * read-modify-write); anything else goes to the library, and so does every release of an
 * allocator with release_check (its buffers' release tags match no thread cache). */
BP_API inline int bp_release(bp_buf *b)
{
    return BP__LIKELY(bp__release_cached(b, 1)) ? 1 : bp__release(b);
}

/* Drops `n` (>= 1) references. Returns as bp_release, plus BP_EINVAL for n == 0 and
 * BP_EREFCNT when n exceeds the count (nothing is dropped then). Races as bp_release:
 * with release_check, racing calls never drop more references than the count holds - each
 * drops its n or fails changing nothing, with BP_EFREED (the count is 0) or BP_EREFCNT (n
 * exceeds what is left) - and only the call that brings the count to 0 returns 1. By
 * default, calls racing for the last references are undefined behaviour. */
BP_API int bp_release_n(bp_buf *b, uint32_t n);

/* The reference count: > 0 while alive, 0 once released, BP_EINVAL for NULL. */
BP_API int bp_refcnt(const bp_buf *b);

/* The allocator the buffer came from, or NULL: for NULL, and for a released buffer whose
 * object's memory a purge gave back (see object_bytes). */
BP_API bp_allocator *bp_buf_allocator(const bp_buf *b);

/* Private: a view's head caches the buffer it shows, which may have grown, moved or shrunk
 * since; the getters below bring it up to date first (views only). */
BP_API void bp__view_sync(const bp_buf *b);
#define BP__HEAD(b) ((const bp__buf_head *)(const void *)(b))
#define BP__SYNCED(b) (BP__UNLIKELY(BP__IS_INDIRECT(BP__HEAD(b))) ? bp__view_sync(b) : (void)0, BP__HEAD(b))

/* ---------------------------------------------------------------------------------------
 * Buffers: indices and capacity
 *
 * The getters below return 0 for NULL; on a released buffer they return the values it had
 * when released, or 0 once a purge gave the object's memory back (see object_bytes); they
 * read no buffer memory.
 * ------------------------------------------------------------------------------------- */

BP_API inline size_t bp_capacity(const bp_buf *b) { return b ? BP__SYNCED(b)->capacity : 0; }
BP_API inline size_t bp_max_capacity(const bp_buf *b) { return b ? BP__SYNCED(b)->max_capacity : 0; }
BP_API inline size_t bp_reader_index(const bp_buf *b) { return b ? BP__SYNCED(b)->reader_index : 0; }
BP_API inline size_t bp_writer_index(const bp_buf *b) { return b ? BP__SYNCED(b)->writer_index : 0; }
/* writer index - reader index */
BP_API inline size_t bp_readable_bytes(const bp_buf *b)
{
    if (b == NULL) return 0;
    const bp__buf_head *h = BP__SYNCED(b);
    return h->writer_index - h->reader_index;
}
/* capacity - writer index */
BP_API inline size_t bp_writable_bytes(const bp_buf *b)
{
    if (b == NULL) return 0;
    const bp__buf_head *h = BP__SYNCED(b);
    return h->capacity - h->writer_index;
}

/* Sets the reader index. Returns 0; BP_EINVAL (NULL), BP_EFREED, BP_ERANGE when
 * index > writer index. */
BP_API int bp_set_reader_index(bp_buf *b, size_t index);

/* Sets the writer index. Returns 0; BP_EINVAL, BP_EFREED, BP_ERANGE when
 * index < reader index or index > capacity. */
BP_API int bp_set_writer_index(bp_buf *b, size_t index);

/* Sets both indices at once (Netty's setIndex). Returns 0; BP_EINVAL, BP_EFREED, BP_ERANGE
 * unless reader <= writer <= capacity. */
BP_API int bp_set_index(bp_buf *b, size_t reader, size_t writer);

/* Advances the reader index by n. Returns 0; BP_EINVAL, BP_EFREED, BP_ERANGE when fewer
 * than n bytes are readable. */
BP_API int bp_skip_bytes(bp_buf *b, size_t n);

/* Sets both indices to 0 (contents unchanged). Returns 0; BP_EINVAL, BP_EFREED. */
BP_API int bp_clear(bp_buf *b);

/* Marks (remembers) the reader or writer index; the reset calls go back to the mark (0 until
 * marked). Reset fails with BP_ERANGE, changing nothing, when the mark is no longer valid
 * (a reader mark past the writer index, a writer mark below the reader index). Returns 0;
 * BP_EINVAL, BP_EFREED, BP_ERANGE. */
BP_API int bp_mark_reader_index(bp_buf *b);
BP_API int bp_reset_reader_index(bp_buf *b);
BP_API int bp_mark_writer_index(bp_buf *b);
BP_API int bp_reset_writer_index(bp_buf *b);

/* max capacity - writer index (0 for NULL). */
BP_API size_t bp_max_writable_bytes(const bp_buf *b);

/* Netty's maxFastWritableBytes: how many bytes can be written after the writer index without
 * the buffer's memory moving (bp_data's pointer stays valid). For a root: up to the end of
 * the region behind it (a pooled buffer sits in a size class and grows in place to its end)
 * or to max capacity, whichever comes first - at least bp_writable_bytes. For a view or a
 * composite: bp_writable_bytes (a duplicate's growth may move the original; a composite adds
 * components). 0 for NULL; for a released buffer, bp_writable_bytes as it was at release. */
BP_API size_t bp_max_fast_writable_bytes(const bp_buf *b);

/* Makes sure `n` more bytes can be written, growing the buffer if needed: first into the
 * unused end of its pooled region without moving, otherwise to a new region, copying the
 * contents. Growth follows Netty's calculateNewCapacity: the next power of two >= 64 up to
 * 4 MiB, then in steps of 4 MiB, never past max capacity. Returns 0; BP_EINVAL, BP_EFREED,
 * BP_ECAPACITY when writer_index + n > max capacity, BP_ENOMEM. */
BP_API int bp_ensure_writable(bp_buf *b, size_t n);

/* Netty's ensureWritable(n, force), which does not fail for lack of room: returns
 *   0  enough room already, nothing changed;
 *   1  not enough room and nothing changed (would pass max capacity; with force, the
 *      capacity was already at max);
 *   2  grown, now enough room;
 *   3  not enough room, but with force grown to max capacity.
 * Errors: BP_EINVAL, BP_EFREED, BP_ENOMEM (nothing changed). */
BP_API int bp_ensure_writable_ex(bp_buf *b, size_t n, int force);

/* Sets the capacity, growing (as bp_ensure_writable, contents kept) or shrinking. A shrink
 * below the writer index moves the writer index (and the reader index, if above) to the new
 * capacity. On a duplicate it changes the original's capacity. Returns 0; BP_EINVAL (NULL,
 * and for a slice whatever the value, its own capacity included: a slice's capacity is
 * fixed, as Netty's slices refuse it), BP_EFREED, BP_ECAPACITY (above max capacity),
 * BP_ENOMEM. */
BP_API int bp_set_capacity(bp_buf *b, size_t capacity);

/* Moves the readable bytes to index 0, dropping those already read; indices and marks
 * shift down by the old reader index (marks stop at 0). On a composite nothing moves: the
 * components (or the part of one) before the reader index are released and the capacity
 * shrinks by the reader index, as in Netty. Through a view it moves the original's bytes.
 * Refused with BP_ESHARED, changing nothing and reporting no misuse, when the bytes are
 * shared (Netty's decoders discard only at refCnt 1): the reference count b's references
 * are (its own; a plain view's original's) is above 1, or a live view other than b shows
 * the same memory - for a retained view, also when what it was made from has other
 * holders or views. A discard with nothing to do (reader index 0) returns 0 either way.
 * Returns 0; BP_EINVAL, BP_EFREED, BP_ESHARED, BP_ENOMEM (a view of a composite only: its
 * bytes move through a temporary copy, which failed). */
BP_API int bp_discard_read_bytes(bp_buf *b);

/* As bp_discard_read_bytes, but only when it pays: when everything was read (indices to 0,
 * nothing moves) or the reader index is at least half the capacity. On a composite: only
 * the components read to their end are released (Netty's discardReadComponents). When it
 * would do nothing it returns 0, shared or not; when it would, the bytes must not be shared
 * (BP_ESHARED, as bp_discard_read_bytes). Returns 0; errors as bp_discard_read_bytes. */
BP_API int bp_discard_some_read_bytes(bp_buf *b);

/* Zero-copy production: makes sure n bytes can be written (as bp_ensure_writable) and
 * returns a pointer to the writer index; write up to n bytes there, then bp_commit the
 * number written. NULL on failure, with the reason in *err if err is not NULL. On a
 * composite the n bytes are always one block: when the writable space after the writer
 * index is split between components, that space (unwritten, so no data) is replaced by one
 * new component of at least n bytes. On a view of a composite whose writable bytes are not
 * one block: BP_EINVAL. */
BP_API void *bp_reserve(bp_buf *b, size_t n, int *err);

/* Advances the writer index by n after writing through bp_reserve's pointer. Returns 0;
 * BP_EINVAL, BP_EFREED, BP_ERANGE when n > writable bytes. */
BP_API int bp_commit(bp_buf *b, size_t n);

/* Pointer to the byte at `index` of the buffer's memory, for zero-copy I/O; valid until
 * the buffer grows or is released. NULL for NULL, a released buffer, index > capacity, and
 * for a composite or a view of one, whose bytes are not one block (use bp_iovec). */
BP_API void *bp__data_slow(bp_buf *b, size_t index);
BP_API inline void *bp_data(bp_buf *b, size_t index)
{
    const bp__buf_head *h = BP__HEAD(b);
    return h != NULL && index <= h->capacity && BP__LIVE(h) ? h->memory + index : bp__data_slow(b, index);
}

/* ---------------------------------------------------------------------------------------
 * Buffers: typed access
 *
 * bp_get_T(b, index, &out)  reads at an absolute index; indices unchanged.
 * bp_set_T(b, index, value) writes at an absolute index; indices unchanged.
 * bp_read_T(b, &out)        reads at the reader index and advances it.
 * bp_write_T(b, value)      writes at the writer index (growing as bp_ensure_writable)
 *                           and advances it.
 * T is u8 i8 u16 i16 u32 i32 u64 i64 f32 (float) f64 (double); the _le variants are
 * little-endian. bool and 24-bit ("medium") functions follow.
 *
 * Returns 0; BP_EINVAL for a NULL buffer or out pointer; BP_EFREED for a released buffer;
 * BP_ERANGE when get/set would touch bytes past the capacity or a read finds fewer than
 * sizeof(T) readable bytes; BP_ECAPACITY when a write would pass max capacity; BP_ENOMEM
 * when growth fails.
 * ------------------------------------------------------------------------------------- */

/* The slow halves: check everything (views, composites, errors, growth), move the indices
 * as the operation does, and copy the value's bytes (already in buffer byte order) out of
 * or into the buffer. `raw` NULL for get/read means the caller's out pointer was NULL.
 * Return 0 or the reported error. */
BP_API int bp__get_slow(const bp_buf *b, size_t index, void *raw, size_t width, const char *func);
BP_API int bp__set_slow(bp_buf *b, size_t index, const void *raw, size_t width, const char *func);
BP_API int bp__read_slow(bp_buf *b, void *raw, size_t width, const char *func);
BP_API int bp__write_slow(bp_buf *b, const void *raw, size_t width, const char *func);

/* The same, with the value (already in buffer byte order) as the numeric value of a 64-bit
 * word - the width-byte unsigned integer whose bytes are the value's, zero-extended - passed
 * and returned in registers: the inline accessors then take no variable's address, so the
 * compiler keeps their values (and the caller's `out` variable) out of memory. rc is 0 or
 * the reported error; `has_out` false means the caller's out pointer was NULL. (The four
 * above remain for code compiled against older headers.) */
typedef struct bp__slow_value {
    uint64_t raw;
    int rc;
} bp__slow_value;
BP_API bp__slow_value bp__get_slow_v(const bp_buf *b, size_t index, size_t width, int has_out, const char *func);
BP_API int bp__set_slow_v(bp_buf *b, size_t index, uint64_t raw, size_t width, const char *func);
BP_API bp__slow_value bp__read_slow_v(bp_buf *b, size_t width, int has_out, const char *func);
BP_API int bp__write_slow_v(bp_buf *b, uint64_t raw, size_t width, const char *func);

/* Defines get/set/read/write for one type. The fast path is inline; anything else (a view,
 * a composite, a NULL or released buffer, an index out of range, growth) goes to the
 * library, which checks and reports, and moves the bytes. Values move through memcpy, so
 * unaligned indices are fine. Get, set and write load the fields they check before the
 * count: the count is loaded atomically, and past an atomic access the compiler forgets
 * what it knew of the fields - right after bp_alloc, that the indices are 0 and the
 * capacity is the size, which spares their loads and compares. (Before a read, the bytes
 * a write stored may, for the compiler, have changed any field.) A write stores its new
 * writer index before the bytes: after them, the compiler would load the index again. */
#define BP__DEFINE_TYPED(name, type, utype, bits, order)                                   \
    BP_API inline int bp_get_##name(const bp_buf *b, size_t index, type *out)              \
    {                                                                                      \
        const bp__buf_head *h = (const bp__buf_head *)(const void *)b;                    \
        utype raw;                                                                         \
        if (BP__LIKELY(h != NULL && out != NULL && index <= h->capacity &&                 \
                       sizeof(type) <= h->capacity - index && BP__LIVE(h))) {              \
            memcpy(&raw, h->memory + index, sizeof raw);                                   \
            raw = order(bits, raw);                                                        \
            memcpy(out, &raw, sizeof raw);                                                 \
            return 0;                                                                      \
        }                                                                                  \
        bp__slow_value v = bp__get_slow_v(b, index, sizeof raw, out != NULL, "bp_get_" #name); \
        if (v.rc != 0) return v.rc;                                                        \
        raw = order(bits, (utype)v.raw);                                                   \
        memcpy(out, &raw, sizeof raw);                                                     \
        return 0;                                                                          \
    }                                                                                      \
    BP_API inline int bp_set_##name(bp_buf *b, size_t index, type value)                   \
    {                                                                                      \
        bp__buf_head *h = (bp__buf_head *)(void *)b;                                       \
        utype raw;                                                                         \
        memcpy(&raw, &value, sizeof raw);                                                  \
        raw = order(bits, raw);                                                            \
        if (BP__LIKELY(h != NULL && index <= h->capacity &&                                \
                       sizeof(type) <= h->capacity - index && BP__LIVE(h))) {              \
            memcpy(h->memory + index, &raw, sizeof raw);                                   \
            return 0;                                                                      \
        }                                                                                  \
        return bp__set_slow_v(b, index, raw, sizeof raw, "bp_set_" #name);                 \
    }                                                                                      \
    BP_API inline int bp_read_##name(bp_buf *b, type *out)                                 \
    {                                                                                      \
        bp__buf_head *h = (bp__buf_head *)(void *)b;                                       \
        utype raw;                                                                         \
        if (BP__LIKELY(h != NULL && out != NULL && BP__LIVE(h) &&                          \
                       sizeof(type) <= h->writer_index - h->reader_index)) {               \
            memcpy(&raw, h->memory + h->reader_index, sizeof raw);                         \
            h->reader_index += sizeof(type);                                               \
            raw = order(bits, raw);                                                        \
            memcpy(out, &raw, sizeof raw);                                                 \
            return 0;                                                                      \
        }                                                                                  \
        bp__slow_value v = bp__read_slow_v(b, sizeof raw, out != NULL, "bp_read_" #name); \
        if (v.rc != 0) return v.rc;                                                        \
        raw = order(bits, (utype)v.raw);                                                   \
        memcpy(out, &raw, sizeof raw);                                                     \
        return 0;                                                                          \
    }                                                                                      \
    BP_API inline int bp_write_##name(bp_buf *b, type value)                               \
    {                                                                                      \
        bp__buf_head *h = (bp__buf_head *)(void *)b;                                       \
        utype raw;                                                                         \
        memcpy(&raw, &value, sizeof raw);                                                  \
        raw = order(bits, raw);                                                            \
        if (BP__LIKELY(h != NULL)) {                                                       \
            size_t writer_ = h->writer_index;                                              \
            if (BP__LIKELY(sizeof(type) <= h->capacity - writer_ && BP__LIVE(h))) {        \
                h->writer_index = writer_ + sizeof(type);                                  \
                memcpy(h->memory + writer_, &raw, sizeof raw);                             \
                return 0;                                                                  \
            }                                                                              \
        }                                                                                  \
        return bp__write_slow_v(b, raw, sizeof raw, "bp_write_" #name);                    \
    }

BP__DEFINE_TYPED(u8, uint8_t, uint8_t, 8, BP__ORDER_BE)
BP__DEFINE_TYPED(i8, int8_t, uint8_t, 8, BP__ORDER_BE)
BP__DEFINE_TYPED(u16, uint16_t, uint16_t, 16, BP__ORDER_BE)
BP__DEFINE_TYPED(i16, int16_t, uint16_t, 16, BP__ORDER_BE)
BP__DEFINE_TYPED(u32, uint32_t, uint32_t, 32, BP__ORDER_BE)
BP__DEFINE_TYPED(i32, int32_t, uint32_t, 32, BP__ORDER_BE)
BP__DEFINE_TYPED(u64, uint64_t, uint64_t, 64, BP__ORDER_BE)
BP__DEFINE_TYPED(i64, int64_t, uint64_t, 64, BP__ORDER_BE)
BP__DEFINE_TYPED(u16_le, uint16_t, uint16_t, 16, BP__ORDER_LE)
BP__DEFINE_TYPED(i16_le, int16_t, uint16_t, 16, BP__ORDER_LE)
BP__DEFINE_TYPED(u32_le, uint32_t, uint32_t, 32, BP__ORDER_LE)
BP__DEFINE_TYPED(i32_le, int32_t, uint32_t, 32, BP__ORDER_LE)
BP__DEFINE_TYPED(u64_le, uint64_t, uint64_t, 64, BP__ORDER_LE)
BP__DEFINE_TYPED(i64_le, int64_t, uint64_t, 64, BP__ORDER_LE)
BP__DEFINE_TYPED(f32, float, uint32_t, 32, BP__ORDER_BE)
BP__DEFINE_TYPED(f64, double, uint64_t, 64, BP__ORDER_BE)
BP__DEFINE_TYPED(f32_le, float, uint32_t, 32, BP__ORDER_LE)
BP__DEFINE_TYPED(f64_le, double, uint64_t, 64, BP__ORDER_LE)

/* Booleans: one byte, 1 or 0 when written; any non-zero byte reads as true. Errors as the
 * u8 functions. */
BP_API int bp_get_bool(const bp_buf *b, size_t index, int *out);
BP_API int bp_set_bool(bp_buf *b, size_t index, int value);
BP_API int bp_read_bool(bp_buf *b, int *out);
BP_API int bp_write_bool(bp_buf *b, int value);

/* 24-bit integers (Netty's medium): three bytes; u24 reads 0 .. 2^24-1, i24 sign-extends;
 * writes take the low 24 bits of the value. Errors as the other typed functions. */
BP_API int bp_get_u24(const bp_buf *b, size_t index, uint32_t *out);
BP_API int bp_get_i24(const bp_buf *b, size_t index, int32_t *out);
BP_API int bp_set_u24(bp_buf *b, size_t index, uint32_t value);
BP_API int bp_read_u24(bp_buf *b, uint32_t *out);
BP_API int bp_read_i24(bp_buf *b, int32_t *out);
BP_API int bp_write_u24(bp_buf *b, uint32_t value);
BP_API int bp_get_u24_le(const bp_buf *b, size_t index, uint32_t *out);
BP_API int bp_get_i24_le(const bp_buf *b, size_t index, int32_t *out);
BP_API int bp_set_u24_le(bp_buf *b, size_t index, uint32_t value);
BP_API int bp_read_u24_le(bp_buf *b, uint32_t *out);
BP_API int bp_read_i24_le(bp_buf *b, int32_t *out);
BP_API int bp_write_u24_le(bp_buf *b, uint32_t value);

/* Zeros: n zero bytes at an absolute index (errors as bp_set_bytes) or appended at the
 * writer index (errors as bp_write_bytes). */
BP_API int bp_set_zero(bp_buf *b, size_t index, size_t n);
BP_API int bp_write_zero(bp_buf *b, size_t n);

/* ---------------------------------------------------------------------------------------
 * Buffers: bulk bytes
 * ------------------------------------------------------------------------------------- */

/* Copies n bytes at absolute `index` out to `dst`. Returns 0; BP_EINVAL (NULL buffer, or
 * NULL dst with n > 0), BP_EFREED, BP_ERANGE when index + n > capacity. */
BP_API int bp_get_bytes(const bp_buf *b, size_t index, void *dst, size_t n);

/* Copies n bytes from `src` into the buffer at absolute `index`. Errors as bp_get_bytes. */
BP_API int bp_set_bytes(bp_buf *b, size_t index, const void *src, size_t n);

/* Copies n readable bytes to `dst` and advances the reader index. Returns 0; BP_EINVAL,
 * BP_EFREED, BP_ERANGE when fewer than n bytes are readable. */
BP_API int bp_read_bytes(bp_buf *b, void *dst, size_t n);

/* Appends n bytes from `src` at the writer index (growing as bp_ensure_writable) and
 * advances it. Returns 0; BP_EINVAL, BP_EFREED, BP_ECAPACITY, BP_ENOMEM. */
BP_API int bp_write_bytes(bp_buf *b, const void *src, size_t n);

/* ---------------------------------------------------------------------------------------
 * Derived buffers
 *
 * A slice shows [index, index + length) of a buffer's memory as a buffer of its own:
 * capacity and max capacity `length`, reader index 0, writer index `length`. A duplicate
 * shows all of it, starting with the same indices, and follows its capacity (a write that
 * needs more room grows the original). Contents are shared both ways; indices and marks
 * are the view's own. A view of a view is a view of the original.
 *
 * Plain views share the reference count of the buffer they are made from - the original,
 * a composite or a retained view; made from a plain view, the count that one shares -
 * (bp_retain / bp_release / bp_refcnt on them act on that count, as in Netty) and die
 * with that buffer; bp_view_free ends one sooner. Each holds a bp_buf object until it ends (see
 * active_views in bp_allocator_stats): a program taking plain views of a long-lived buffer
 * frees them, or they pile up until that buffer is released. The retained variants count their own references (1 when made) and,
 * as Netty's derived buffers, hold one reference on the buffer they are made from - its
 * parent: b itself, or the buffer whose count b shares when b is a plain view - until they
 * are released themselves. So a retained slice of a retained slice keeps its parent alive:
 * releasing the parent returns 0 while the child holds it. Bytes are always reached through
 * the original. Views follow the original when it grows, moves or shrinks; using a view
 * while another thread changes the original is a data race, as for any buffer, and so is
 * making or freeing a plain view (it joins or leaves the list of the buffer whose count it
 * shares) while another thread does the same with that buffer. Retained views of one
 * buffer may be made on several threads at once, by threads that each hold a reference
 * of it (each worker its own retained duplicate of one message).
 *
 * A view whose original, or whose parent, was released behind its back (a release too
 * many) fails every call with BP_EFREED, also once the object is someone else's buffer
 * again - but its release: that ends the view as any release of its last reference does
 * (returning 1), leaves that buffer alone and reports the broken link as misuse
 * (BP_EFREED), as a composite's end reports a released component. A stale
 * pointer to a view itself is as any stale pointer: detected until its object is reused.
 *
 * Each returns NULL on failure with the reason in *err (if not NULL): BP_EINVAL (NULL),
 * BP_EFREED, BP_ERANGE (outside the capacity, or more than is readable for the read_
 * variants; lengths are lengths, SIZE_MAX included - nothing changes then, no reference is
 * taken and no reader index moves), BP_EREFCNT (a retained view would pass INT32_MAX),
 * BP_ENOMEM.
 * ------------------------------------------------------------------------------------- */

BP_API bp_buf *bp_slice(bp_buf *b, size_t index, size_t length, int *err);
BP_API bp_buf *bp_retained_slice(bp_buf *b, size_t index, size_t length, int *err);
BP_API bp_buf *bp_duplicate(bp_buf *b, int *err);
BP_API bp_buf *bp_retained_duplicate(bp_buf *b, int *err);

/* A slice of the next `length` readable bytes; the reader index moves past them. */
BP_API bp_buf *bp_read_slice(bp_buf *b, size_t length, int *err);
BP_API bp_buf *bp_read_retained_slice(bp_buf *b, size_t length, int *err);

/* Ends a plain view now: its bp_buf object goes back to the pool at once (O(1)). The
 * buffer it shows, the reference count it shared and every other view are untouched; the
 * pointer must not be used again. A plain view never freed ends with the buffer whose
 * count it shares. A plain view added to a composite belongs to the composite: not to be
 * freed. Returns 0; BP_EINVAL for NULL, a root, a composite or a retained view (those end
 * with bp_release), BP_EFREED for a view that is gone already (freed, or ended with that
 * buffer; detected until its object is reused, as any use after release). */
BP_API int bp_view_free(bp_buf *view);

/* A new, independent buffer from the same allocator holding a copy of [index, index +
 * length): capacity `length`, max capacity the original's, writer index `length`. */
BP_API bp_buf *bp_copy(const bp_buf *b, size_t index, size_t length, int *err);

/* ---------------------------------------------------------------------------------------
 * Composite buffers
 *
 * A composite is a buffer made of other buffers ("components") without copying them: its
 * bytes are the components' bytes one after another, and every operation in this header
 * works on it (typed and bulk access across component boundaries, views, search, fd I/O
 * with readv / writev), except bp_data, which returns NULL. Its capacity is the sum of its
 * components' lengths; writing past it adds a component allocated from the composite's
 * allocator (as Netty's CompositeByteBuf does).
 *
 * A composite holds one reference on each component and releases them all when its own
 * count reaches 0. It keeps at most `max_components`: adding one more consolidates them
 * all into a single new buffer (one copy), as Netty does. A component must not be changed
 * or released (or, for a plain view, freed) through the caller's pointer once added (its
 * bytes are the composite's). If it is, the composite's next operation - every one checks
 * its components first, except bp_composite_add, which reads none (see there) - fails with
 * BP_EFREED (released, even when its object has since been handed out as another buffer)
 * or BP_ERANGE (shrunk below what the composite shows) instead of touching freed memory or
 * someone else's buffer, or with BP_EINVAL when the change nests composites deeper than
 * BP_MAX_COMPOSITE_DEPTH (no call then recurses further, and releasing the composite ends
 * any depth without using more stack). When the composite ends it releases its other
 * components and leaves a released one alone, reporting it (BP_EFREED).
 * ------------------------------------------------------------------------------------- */

#define BP_DEFAULT_MAX_COMPONENTS 16

/* The deepest nesting of composites: a composite of plain buffers (or views of them) is 1
 * level deep, one holding such a composite (or a view of it) 2, and so on. bp_composite_add
 * refuses to pass it, so that every walk through a composite stays within a bounded stack. */
#define BP_MAX_COMPOSITE_DEPTH 64

/* A new, empty composite (capacity 0, max capacity BP_DEFAULT_MAX_CAPACITY, reference
 * count 1) that keeps at most max_components components (>= 1). NULL on failure with the
 * reason in *err (if not NULL): BP_EINVAL (NULL allocator, max_components 0), BP_ENOMEM. */
BP_API bp_buf *bp_composite(bp_allocator *a, size_t max_components, int *err);

/* Appends the readable bytes of `component` ([reader index, writer index)) as the
 * composite's last component, taking over the caller's reference to it: the composite
 * releases it when done. With advance_writer != 0 the composite's writer index moves past
 * the new bytes (Netty's addComponent(true, buf)); otherwise they sit above the writer
 * index as writable space. The capacity grows by the component's readable bytes. When this
 * makes more than max_components, all of them are consolidated into one new buffer.
 * Components may be any buffer: plain, a view, or another composite (nesting), up to
 * BP_MAX_COMPOSITE_DEPTH levels. Adding reads no component and checks only the new one
 * (except when it consolidates): adding N components costs O(N) in all.
 * Returns 0; on failure nothing changes and the reference stays the caller's:
 * BP_EINVAL (NULL, not a composite, the composite itself or a buffer that contains it, a
 * component nesting BP_MAX_COMPOSITE_DEPTH levels already - the composite would pass the
 * limit), BP_EFREED (either released), BP_ECAPACITY (past the composite's max capacity),
 * BP_ENOMEM. */
BP_API int bp_composite_add(bp_buf *composite, bp_buf *component, int advance_writer);

/* Merges every component into one new buffer (one copy), releasing the old ones; indices
 * and contents are unchanged. Returns 0 (also when there are 0 or 1 components: nothing to
 * do); BP_EINVAL (NULL or not a composite), BP_EFREED, BP_ENOMEM (nothing changed). */
BP_API int bp_composite_consolidate(bp_buf *composite);

/* The number of components (>= 0); BP_EINVAL (NULL or not a composite), BP_EFREED. */
BP_API long bp_composite_components(const bp_buf *composite);

/* ---------------------------------------------------------------------------------------
 * Scatter / gather
 * ------------------------------------------------------------------------------------- */

/* Describes [index, index + length) of b as memory blocks, for writev / sendmsg (Netty's
 * nioBuffers): fills up to iovcnt entries of iov, in order, and returns how many blocks the
 * range takes - more than iovcnt means iov was too small and only the first iovcnt were
 * filled (iov may be NULL with iovcnt 0 to ask). A plain buffer or a view of one takes 1
 * block (0 for an empty range); a composite one per component the range touches. The
 * pointers are valid until the buffer grows, shrinks or is released. Indices unchanged.
 * Errors: BP_EINVAL (NULL buffer, NULL iov with iovcnt > 0, iovcnt < 0), BP_EFREED,
 * BP_ERANGE (outside the capacity). */
BP_API int bp_iovec(const bp_buf *b, size_t index, size_t length, struct iovec *iov, int iovcnt);

/* bp_iovec of the readable bytes. */
BP_API int bp_readable_iovec(const bp_buf *b, struct iovec *iov, int iovcnt);

/* Between buffers, as Netty moves indices:
 *   bp_write_buf(dst, src, n)  appends n of src's readable bytes to dst (growing it as
 *                              bp_ensure_writable); both advance (src's reader index, dst's
 *                              writer index).
 *   bp_read_buf(src, dst, n)   the same transfer, said from the reading side.
 *   bp_get_buf(src, index, dst, dst_index, n) / bp_set_buf(dst, index, src, src_index, n)
 *                              absolute copies; no index moves.
 * src and dst may share memory in any way - views of one buffer, a composite and a view of
 * it, a composite and one of its components (or a view of one) at any depth, dst a
 * duplicate of src - and may be the same buffer for the absolute copies: dst then holds
 * exactly the bytes src held before the call, as if all of them were read before dst
 * changed, however the ranges overlap and whatever dst's growth moves or releases (a root
 * moving to a new region, a composite consolidating its components). Unrelated buffers copy
 * directly; buffers that share memory may go through a temporary copy (on the stack up to
 * 4 KiB, else malloc'ed).
 * Returns 0; BP_EINVAL (NULL, or the same buffer for a relative transfer), BP_EFREED
 * (either released), BP_ERANGE (src has fewer readable bytes, or a range outside a
 * capacity), BP_ECAPACITY (dst cannot grow), BP_ENOMEM (dst's growth or the temporary copy
 * failed). Nothing changes on failure. */
BP_API int bp_write_buf(bp_buf *dst, bp_buf *src, size_t n);
BP_API int bp_read_buf(bp_buf *src, bp_buf *dst, size_t n);
BP_API int bp_get_buf(const bp_buf *src, size_t index, bp_buf *dst, size_t dst_index, size_t n);
BP_API int bp_set_buf(bp_buf *dst, size_t index, const bp_buf *src, size_t src_index, size_t n);

/* ---------------------------------------------------------------------------------------
 * Search, compare, describe
 * ------------------------------------------------------------------------------------- */

/* Netty's indexOf(fromIndex, toIndex, value), with its rules for bounds: when from <= to,
 * searches [from, to) forward - nothing is found (0) when from == to or the capacity is 0,
 * and to > capacity is BP_ERANGE. When from > to, searches backward from from - 1 down to
 * `to`, after lowering `from` to the capacity - nothing is found when the capacity is 0 or
 * to == capacity, and to > capacity is BP_ERANGE. Returns 1 and stores the index in *index
 * when found, 0 when not; BP_EINVAL (NULL buffer or index), BP_EFREED, BP_ERANGE. */
BP_API int bp_index_of(const bp_buf *b, size_t from, size_t to, uint8_t value, size_t *index);

/* Bytes from the reader index to the first `value` among the readable bytes. Returns 1
 * and stores the count when found, 0 when not; BP_EINVAL, BP_EFREED. */
BP_API int bp_bytes_before(const bp_buf *b, uint8_t value, size_t *count);

/* Calls fn(byte, ctx) for each byte of [index, index + length), in order (or from the last
 * one back, for bp_for_each_byte_desc), until fn returns 0. Returns 1 and stores the index
 * where fn stopped, 0 when fn accepted every byte; BP_EINVAL, BP_EFREED, BP_ERANGE. */
typedef int (*bp_byte_fn)(uint8_t byte, void *ctx);
BP_API int bp_for_each_byte(const bp_buf *b, size_t index, size_t length, bp_byte_fn fn, void *ctx,
                            size_t *stopped_at);
BP_API int bp_for_each_byte_desc(const bp_buf *b, size_t index, size_t length, bp_byte_fn fn, void *ctx,
                                 size_t *stopped_at);

/* Whether the readable bytes of x and y are the same (1) or not (0); BP_EINVAL, BP_EFREED. */
BP_API int bp_equals(const bp_buf *x, const bp_buf *y);

/* Compares the readable bytes of x and y as unsigned bytes, then by length: *result < 0,
 * 0 or > 0. Returns 0; BP_EINVAL, BP_EFREED. */
BP_API int bp_compare(const bp_buf *x, const bp_buf *y, int *result);

/* The readable bytes in lower-case hex ("0a0b"), written like snprintf: at most out_len - 1
 * characters and a terminating NUL. Returns the length the whole dump needs (excluding the
 * NUL); BP_EINVAL (NULL buffer, or NULL out with out_len > 0), BP_EFREED. */
BP_API long bp_hex_dump(const bp_buf *b, char *out, size_t out_len);

/* Netty's prettyHexDump of the readable bytes: a table of 16 bytes a row, offset, hex and
 * ASCII columns, written to `out`. Returns 0; BP_EINVAL, BP_EFREED, BP_EIO (write failed). */
BP_API int bp_pretty_hex_dump(const bp_buf *b, FILE *out);

/* One line describing the buffer, like Netty's toString:
 *   "PooledByteBuf(ridx: 0, widx: 4, cap: 256/2147483647)", "...(freed)", and for a
 *   composite "CompositeByteBuf(ridx: 0, widx: 9, cap: 9/2147483647, components: 2)".
 *   A released buffer whose object's memory a purge gave back (see object_bytes) reads
 *   "PooledByteBuf(freed)", whatever it was.
 * Written like snprintf; returns the length needed, BP_EINVAL for NULL out with out_len > 0. */
BP_API long bp_describe(const bp_buf *b, char *out, size_t out_len);

/* ---------------------------------------------------------------------------------------
 * I/O on file descriptors (sockets, pipes, files)
 * ------------------------------------------------------------------------------------- */

/* Reads up to n bytes from fd into the writable space (growing the buffer first, as
 * bp_ensure_writable, if fewer than n bytes are writable) and advances the writer index.
 * A composite is filled with one readv(2) across its components.
 * Returns the bytes read (> 0); 0 when the fd is non-blocking and has nothing now (EAGAIN);
 * BP_EOF at end of stream; BP_EIO with errno set on an error; BP_EINVAL (NULL, n == 0),
 * BP_EFREED, BP_ECAPACITY, BP_ENOMEM. EINTR is retried. Room made before the read stays
 * even when the read brings nothing (EAGAIN, end of stream, an error), as in Netty; the
 * indices and contents do not change then. */
BP_API long bp_read_fd(bp_buf *b, int fd, size_t n);

/* Writes up to n readable bytes (all of them for n = SIZE_MAX) to fd and advances the
 * reader index by what was written, which may be less (a partial write). A composite is
 * written with one gathering sendmsg(2) / writev(2) of its components (up to 64 blocks a
 * call; the rest waits for the next call, as a partial write). Returns the bytes
 * written; 0 when a non-blocking fd cannot take any now (EAGAIN) or nothing is readable;
 * BP_EIO with errno set on an error (EPIPE when a socket peer is gone: sockets are written
 * with MSG_NOSIGNAL; on a pipe, write(2) raises SIGPIPE unless the process ignores it);
 * BP_EINVAL, BP_EFREED. EINTR is retried. */
BP_API long bp_write_fd(bp_buf *b, int fd, size_t n);

/* ---------------------------------------------------------------------------------------
 * The server layer
 *
 * What a network server needs above the buffer (Netty's codec layer, libevent's evbuffer):
 * memory the program owns wrapped as a buffer, a search for several bytes, an input that
 * accumulates a connection's bytes, frame decoders that cut them into frames, and an
 * output queue that writes buffers with gathering writes under water marks. Everything but
 * bp_wrap is built on the calls above. An input, a decoder and an output serve one
 * connection and are not synchronised: one thread at a time uses each (the buffers they
 * hand out may then go to any thread, as any buffer).
 *
 *   bp_input *in = bp_input_new(a, NULL, &err);              // one of each per connection
 *   bp_frame_config fc;
 *   bp_frame_config_init(&fc, BP_FRAME_LENGTH_FIELD);         // 4-byte big-endian length
 *   bp_frame_decoder *dec = bp_frame_decoder_new(&fc, &err);
 *   bp_output *out = bp_output_new(NULL, &err);
 *   // the socket is readable:
 *   long got = bp_input_read_fd(in, fd);        // > 0, 0 (EAGAIN), BP_EOF, BP_EIO, BP_EFULL
 *   bp_buf *frame;
 *   while (bp_frame_decode(dec, in, &frame) == 1) bp_output_add(out, frame);   // echo
 *   bp_output_flush(out, fd);                   // gathering write; the rest waits for EPOLLOUT
 * ------------------------------------------------------------------------------------- */

/* Called exactly once, when the last reference to a wrapped buffer goes, with the memory
 * and user_data given to bp_wrap, on the thread of that release. */
typedef void (*bp_wrap_free_fn)(void *memory, void *user_data);

/* A buffer over `length` bytes of memory the program owns (Netty's Unpooled.wrappedBuffer,
 * libevent's evbuffer_add_reference): nothing is copied, the buffer reads and writes
 * `memory` itself. Reader index 0, writer index `length`, capacity and max capacity
 * `length`, reference count 1. It cannot grow (a write past `length` is BP_ECAPACITY;
 * bp_set_capacity may lower the capacity, never above `length`) and is usable wherever a
 * buffer is: views, composite components, the output queue, fd I/O. free_fn(memory,
 * user_data) is called exactly once, when its last reference goes; free_fn NULL calls
 * nothing (static memory). Memory that must not be written (a string literal) must not be
 * written through the buffer either. `memory` stays valid until free_fn is called; an
 * allocator destroyed while a wrapped buffer of it is alive does not call free_fn.
 * bp_describe names it "WrappedByteBuf".
 * Statistics: the buffer counts in active_buffers (a bp_buf object handed out), never in
 * active_bytes nor any arena counter (its bytes are not the pool's). Leak detection does
 * not track wrapped buffers.
 * Returns NULL on failure, with the reason in *err (if not NULL); free_fn is then not
 * called and the memory stays the caller's: BP_EINVAL (NULL allocator or memory),
 * BP_EOVERFLOW (length above BP_CAPACITY_LIMIT), BP_ENOMEM. */
BP_API bp_buf *bp_wrap(bp_allocator *a, void *memory, size_t length, bp_wrap_free_fn free_fn, void *user_data,
                       int *err);

/* A bp_wrap_free_fn for memory from malloc(3) handed over to the buffer: free(memory);
 * user_data is not used. bp_wrap(a, p, n, bp_wrap_free_malloced, NULL, &err). */
BP_API void bp_wrap_free_malloced(void *memory, void *user_data);

/* Netty's ByteBufUtil.indexOf(needle, haystack) over [from, to) of b: the first index i,
 * from <= i <= to - needle_len, at which the needle_len bytes at `needle` occur. Any buffer
 * (composites and views of them too: a match may span components; memmem within a block).
 * An empty needle is found at `from`. Returns 1 and stores i in *index when found, 0 when
 * not; BP_EINVAL (NULL buffer or index, NULL needle with needle_len > 0), BP_EFREED,
 * BP_ERANGE (from > to, or to > capacity), BP_ENOMEM (a range over more than 16 blocks of
 * a composite needs a table of them). Linear in the range and the composite's components. */
BP_API int bp_index_of_bytes(const bp_buf *b, size_t from, size_t to, const void *needle, size_t needle_len,
                             size_t *index);

/* ---- Input: a connection's received bytes (Netty's ByteToMessageDecoder cumulation) ----
 *
 * An input reads from an fd straight into pooled memory, or takes buffers the program
 * hands it, and holds the bytes not consumed yet. Frames leave it as retained slices (no
 * copy; the caller releases them) or as copies. Guarantees:
 * - A frame's bytes never change or move while the frame is alive: in a buffer a frame
 *   still shows (its reference count is above 1) the input writes only past the unread
 *   bytes, and when it must compact or grow such a buffer it copies the unread bytes into
 *   a fresh one and lets the old one go (Netty's expandCumulation); the frames keep it
 *   alive. Bytes move in place only in a buffer nobody else holds.
 * - Nothing buffered, no memory held: once every byte is consumed the buffer is released,
 *   so an idle connection costs its bp_input object only.
 * - At most max_buffered unread bytes: an add that would pass it is refused with BP_EFULL,
 *   and a read takes at most the room left (BP_EFULL when there is none): decode or
 *   consume first; a frame larger than max_buffered can never be had.
 * Reads are sized as Netty's AdaptiveRecvByteBufAllocator sizes them: from initial_read,
 * a read that fills its size quadruples the next (up to max_read), two reads in a row that
 * bring at most half of it halve it (down to min_read). A read goes into the room already
 * there when that is larger. */

typedef struct bp_input bp_input;

typedef struct bp_input_config {
    size_t max_buffered; /* most unread bytes held; 1 .. 2^40, default 4 MiB */
    size_t min_read;     /* bp_input_read_fd's adaptive read size: 1 <= min_read <= */
    size_t initial_read; /*   initial_read <= max_read <= 2^30; defaults 64, 2048, */
    size_t max_read;     /*   65536 (Netty's) */
} bp_input_config;

/* Fills *cfg with the defaults above (nothing for NULL). */
BP_API void bp_input_config_init(bp_input_config *cfg);

/* A new, empty input whose buffers come from `a` (cfg NULL: the defaults). It holds no
 * buffer until bytes arrive. NULL on failure with the reason in *err (if not NULL):
 * BP_EINVAL (NULL allocator, a setting out of range), BP_ENOMEM. */
BP_API bp_input *bp_input_new(bp_allocator *a, const bp_input_config *cfg, int *err);

/* Releases what the input holds and frees it. Frames taken from it stay valid. NULL is
 * ignored. */
BP_API void bp_input_free(bp_input *in);

/* Reads once from fd into pooled memory (one read(2), EINTR retried), appending to the
 * unread bytes. Returns the bytes read (> 0); 0 when a non-blocking fd has nothing now
 * (EAGAIN); BP_EOF at end of stream (the unread bytes stay, for a last decode); BP_EIO
 * with errno set; BP_EFULL when max_buffered bytes are unread (nothing is read);
 * BP_EINVAL (NULL); BP_ENOMEM. */
BP_API long bp_input_read_fd(bp_input *in, int fd);

/* Appends buf's readable bytes, taking over the caller's reference. With nothing unread,
 * buf itself becomes the input's buffer (no copy). Otherwise its bytes are copied into the
 * input's own buffer when that has the room, or when they and the unread bytes together
 * are at most 4 KiB; larger ones are linked as a component without a copy (the input's
 * buffer becomes a composite; frames cut from it are then views of a composite, whose
 * bp_data is NULL; past 64 components the unread bytes are copied into one buffer). Its
 * components are contiguous buffers only: a composite (or a view of one) is copied, never
 * nested, and so is an adopted one once more bytes come. A composite that frames (or a
 * retained slice of bp_input_peek) still show is never changed, as those may be read on
 * other threads: the unread bytes and buf's are then copied into one buffer of the
 * input's own. The input never writes into a buffer it was given. An empty buf is
 * released at once.
 * Returns 0; on failure the reference stays the caller's and nothing changes: BP_EINVAL
 * (NULL), BP_EFREED (buf released, or a view or composite whose buffers were released
 * behind its back), BP_EFULL (past max_buffered), BP_ENOMEM. */
BP_API int bp_input_add(bp_input *in, bp_buf *buf);

/* The number of unread bytes (0 for NULL). */
BP_API size_t bp_input_readable(const bp_input *in);

/* The bytes this input has copied since it was made, to hold what it was given: the bytes
 * of added buffers it copied (rather than adopted or linked; see bp_input_add), and unread
 * bytes it copied or moved to make room (into a fresh or grown buffer, or to the front of
 * its own). What a zero-copy path costs in copies, for tuning: reads from an fd into the
 * input's memory and bp_input_take_copy's copies are not counted. 0 for NULL. */
BP_API uint64_t bp_input_copied_bytes(const bp_input *in);

/* The buffer holding the unread bytes, from its reader index to its writer index, for
 * inspection (bp_get_*, bp_index_of, bp_index_of_bytes at absolute indices from
 * bp_reader_index); NULL when nothing is unread (or in is NULL). Valid until the next call
 * on the input. Do not change its indices or bytes and do not release it; keep its bytes
 * only through bp_retained_slice of its readable bytes (which the input sees in its
 * reference count, as it sees frames), never through a plain view, whose bytes could move. */
BP_API bp_buf *bp_input_peek(bp_input *in);

/* The next n unread bytes as a retained slice (reference count 1; the caller releases it),
 * consumed from the input. No copy: the frame shows the input's memory, which stays put
 * while the frame lives. n may be 0 (an empty buffer). NULL on failure, with the reason
 * in *err (if not NULL) and nothing consumed: BP_EINVAL (NULL), BP_ERANGE (n > unread
 * bytes), BP_ENOMEM. */
BP_API bp_buf *bp_input_take(bp_input *in, size_t n, int *err);

/* The next n unread bytes copied into a new buffer of the input's allocator (capacity n,
 * max capacity as bp_alloc gives, whichever allocator or memory the bytes came from),
 * consumed from the input. Errors as bp_input_take. */
BP_API bp_buf *bp_input_take_copy(bp_input *in, size_t n, int *err);

/* Consumes n unread bytes. Returns 0; BP_EINVAL (NULL), BP_ERANGE (n > unread bytes). */
BP_API int bp_input_skip(bp_input *in, size_t n);

/* Drops every unread byte (and the buffer holding them). NULL is ignored. */
BP_API void bp_input_clear(bp_input *in);

/* ---- Frame decoders (Netty's LengthFieldBasedFrameDecoder, LineBasedFrameDecoder,
 * DelimiterBasedFrameDecoder, FixedLengthFrameDecoder) ----
 *
 * A decoder cuts the next frame off an input: bp_frame_decode returns 1 with the frame (a
 * retained slice: bp_input_take's), 0 when more bytes are needed, or an error. A frame
 * longer than max_frame_length is BP_ETOOLONG, after which the caller may close the
 * connection or go on decoding: the decoder then skips that frame's bytes, also those that
 * arrive in later reads, and decodes the frames after it. With fail_fast the error comes
 * as soon as the length is known to be too long, before the bytes are skipped; without,
 * once they all have been (a frame too long found whole in the input is reported at once
 * either way). A line or delimited frame is too long once its bytes alone pass the
 * maximum: last bytes that may start its delimiter do not count, so an allowed frame whose
 * delimiter arrives split across reads is still a frame. While skipping, a delimiter
 * decoder keeps the last (longest delimiter's length - 1) bytes unread, which may hold
 * the start of a delimiter (bp_input_readable counts them). Malformed input is
 * BP_ECORRUPT (the bytes up to the end of the length field, or of the frame, are skipped
 * as Netty does; the stream is then usually beyond repair). A frame is cut once all of it
 * (header, delimiter) is in the input, so the input's max_buffered must leave room for the
 * longest: a frame that cannot fit is never had (bp_input_read_fd and bp_input_add refuse
 * more with BP_EFULL). A decoder expects to be the only consumer of its input. */

typedef enum bp_frame_type {
    BP_FRAME_LENGTH_FIELD = 1, /* a length field in a header */
    BP_FRAME_LINE,             /* lines ending in "\n" or "\r\n" */
    BP_FRAME_DELIMITER,        /* frames ending in one of several byte strings */
    BP_FRAME_FIXED_LENGTH      /* frames of frame_length bytes */
} bp_frame_type;

typedef struct bp_delimiter {
    const void *bytes;
    size_t length; /* >= 1 */
} bp_delimiter;

/* Settings of a decoder. bp_frame_config_init gives a type's defaults (Netty's). */
typedef struct bp_frame_config {
    bp_frame_type type;
    size_t max_frame_length; /* >= 1, default 65536: a length-field frame with its header,
                                before stripping; a line or delimited frame without delimiter */
    int fail_fast;           /* default 1, 0 for lines (Netty's) */
    /* BP_FRAME_LENGTH_FIELD: the frame is length_field_offset bytes, the length field,
     * then value + length_adjustment bytes; initial_bytes_to_strip bytes are cut off its
     * start. length_field_offset + length_field_length <= max_frame_length. */
    size_t length_field_offset;      /* default 0 */
    unsigned length_field_length;    /* 1, 2, 3, 4 (default) or 8; 8-byte values above
                                        INT64_MAX are malformed (Java's signed long) */
    int64_t length_adjustment;       /* default 0 */
    size_t initial_bytes_to_strip;   /* default 0 */
    int little_endian;               /* default 0: big-endian */
    /* BP_FRAME_LINE and BP_FRAME_DELIMITER */
    int strip_delimiter;             /* default 1 */
    /* BP_FRAME_DELIMITER: at least one; copied by bp_frame_decoder_new. The frame ends at
     * the delimiter found first in the bytes at hand (the shortest frame; on a tie the
     * earlier one listed). With delimiters that overlap - one a prefix of another ("|" and
     * "||"), or one's end another's start - where the frame ends may then depend on how the
     * bytes arrive, as with Netty's DelimiterBasedFrameDecoder: "a|" read before "|" ends
     * at "|" even where "||" listed first would win a tie. */
    const bp_delimiter *delimiters;
    size_t delimiter_count;
    /* BP_FRAME_FIXED_LENGTH: >= 1; max_frame_length and fail_fast are not used */
    size_t frame_length;
} bp_frame_config;

/* Fills *cfg with the defaults of `type` (nothing for NULL). */
BP_API void bp_frame_config_init(bp_frame_config *cfg, bp_frame_type type);

typedef struct bp_frame_decoder bp_frame_decoder;

/* A decoder with these settings (one per connection: it keeps the state of a frame being
 * skipped). NULL on failure with the reason in *err (if not NULL): BP_EINVAL (NULL cfg, an
 * unknown type, a setting out of range, a missing or empty delimiter), BP_ENOMEM. */
BP_API bp_frame_decoder *bp_frame_decoder_new(const bp_frame_config *cfg, int *err);

/* Frees a decoder. NULL is ignored. */
BP_API void bp_frame_decoder_free(bp_frame_decoder *d);

/* Cuts the next frame off `in`. Returns 1 and stores the frame (reference count 1, the
 * caller's) in *frame; 0 when more bytes are needed (*frame NULL; a frame being skipped
 * consumes what there is); BP_ETOOLONG (see above); BP_ECORRUPT: a length field whose value
 * is negative (8 bytes), overflows, or gives a frame shorter than the header up to the end
 * of the length field or than initial_bytes_to_strip; BP_EINVAL (NULL argument), BP_ENOMEM
 * (nothing consumed). */
BP_API int bp_frame_decode(bp_frame_decoder *d, bp_input *in, bp_buf **frame);

/* ---- Output queue (Netty's ChannelOutboundBuffer and FileRegion) ----
 *
 * Buffers and file regions queued for one connection, written to its fd in the order
 * queued: the buffers before a region with gathering writes, sendmsg(2) with MSG_NOSIGNAL
 * on a socket (a gone peer is EPIPE, not a signal), writev(2) otherwise, up to IOV_MAX
 * blocks a call (a composite takes one per component), with MSG_MORE when a region comes
 * next (a small header then leaves in the same TCP segment as the file's first bytes); a
 * region with sendfile(2), which hands the file's pages to the socket without copying
 * them (see bp_output_add_file). A partial write advances the output's own position in
 * the buffer it stops in (never the buffer's indices), or the offset of the region; the
 * next flush goes on from there. Each buffer is released once written to its end, each
 * region's release callback called. Water marks on the pending bytes (file bytes too) give
 * backpressure: above high_water_mark the output turns unwritable (stop reading from the
 * peer), below low_water_mark writable again (Netty's channelWritabilityChanged). */

typedef struct bp_output bp_output;

/* Called whenever bp_output_writable's answer changes (from bp_output_add, _add_file,
 * flush or clear), with the new answer, inside that call: it may record the change (to
 * stop or resume reading from the peer), and must not call the same output or free it. */
typedef void (*bp_writability_fn)(int writable, void *user_data);

typedef struct bp_output_config {
    size_t low_water_mark;  /* default 32 KiB (Netty's) */
    size_t high_water_mark; /* default 64 KiB; >= low_water_mark */
    bp_writability_fn on_writability; /* NULL: none */
    void *user_data;        /* passed to on_writability */
} bp_output_config;

/* Fills *cfg with the defaults above (nothing for NULL). */
BP_API void bp_output_config_init(bp_output_config *cfg);

/* A new, empty, writable output (cfg NULL: the defaults). NULL on failure with the reason
 * in *err (if not NULL): BP_EINVAL (low_water_mark > high_water_mark), BP_ENOMEM. */
BP_API bp_output *bp_output_new(const bp_output_config *cfg, int *err);

/* Releases every queued buffer and region (each region's release callback is called,
 * `completed` 0; no writability callback) and frees the output. NULL is ignored. */
BP_API void bp_output_free(bp_output *out);

/* Queues buf's readable bytes, taking over the caller's reference (any buffer: plain, a
 * view, a composite, a wrapped one). The bytes queued are those readable now, whatever
 * becomes of buf's indices, which the output never changes; the same buffer may be queued
 * again (a reference each time). Do not change those bytes or release the reference
 * afterwards: the flush that reaches a buffer released behind the output's back fails
 * with BP_EFREED - until its bp_buf object is handed out again, as any use after release.
 * An empty buf is released at once. Returns 0, or 1 when this add turned the output
 * unwritable (the pending bytes passed high_water_mark); on failure the reference stays
 * the caller's and nothing changes: BP_EINVAL (NULL), BP_EFREED (buf released, or a view
 * or composite whose buffers were released behind its back), BP_ENOMEM. */
BP_API int bp_output_add(bp_output *out, bp_buf *buf);

/* Called once for each buffer queued by bp_output_add_notify (Netty's ChannelPromise of a
 * write): from bp_output_flush once its last byte is written (completed 1), or when it is
 * dropped with bytes unwritten (completed 0) by bp_output_clear, bp_output_free or a
 * flush's error; the output's reference to the buffer is released before the call. It
 * must not call the same output. */
typedef void (*bp_write_done_fn)(int completed, void *user_data);

/* bp_output_add, and done(completed, user_data) called once when the buffer is written or
 * dropped (see bp_write_done_fn); calls complete in the order queued. An empty buf is
 * queued too, a marker: released and completed by the first flush that finds everything
 * queued before it written (whatever that flush's own write then meets: EAGAIN, an error),
 * so its completion says all before it left (close after the last response, say). done
 * NULL is bp_output_add. Returns as bp_output_add; on failure nothing is queued and done
 * is not called. */
BP_API int bp_output_add_notify(bp_output *out, bp_buf *buf, bp_write_done_fn done, void *user_data);

/* Called once for each region queued by bp_output_add_file, with its fd and user_data:
 * from bp_output_flush once its last byte is written (completed 1), or when it is dropped
 * with bytes unwritten (completed 0) by bp_output_clear, bp_output_free or a flush's error.
 * It may close fd (when no other region uses it); it must not call the same output. */
typedef void (*bp_file_release_fn)(int fd, int completed, void *user_data);

/* Queues `length` bytes of the file open as fd, from `offset`, after what is queued so far
 * (Netty's DefaultFileRegion, libevent's evbuffer_add_file). The caller owns fd: the output
 * never closes it and reads it only at explicit offsets (sendfile, pread), never moving
 * its file offset, so one fd may back any number of regions, in one output or many, as
 * long as it stays open until each one's release has been called (release may be NULL).
 * bp_output_flush writes the region with sendfile(2) on Linux; where sendfile cannot read
 * fd (EINVAL, ENOSYS, EOPNOTSUPP or EOVERFLOW: files sendfile does not take, such as most
 * of /proc) and elsewhere than Linux, it copies with pread(2) and a write, 16 KiB a call.
 * Since sendfile takes no MSG_NOSIGNAL, SIGPIPE is blocked in the calling thread while it
 * runs and the one a gone peer raises is discarded: EPIPE, no signal, as for buffers. The
 * bytes count in bp_output_pending and the water marks. They are read when written, not
 * when queued (a file changed in between sends what it holds then), and the file must
 * hold them then: the flush that finds it ending early fails with BP_EIO, errno ENODATA; an
 * fd that cannot be read at an offset (a pipe, a socket) fails it with BP_EIO, ESPIPE.
 * Returns 0, or 1 when this add turned the output unwritable; on failure nothing is
 * queued and release is not called: BP_EINVAL (NULL output, fd < 0, offset < 0, length
 * 0), BP_EOVERFLOW (offset + length past the largest off_t, or the pending bytes would
 * pass SIZE_MAX), BP_ENOMEM. */
BP_API int bp_output_add_file(bp_output *out, int fd, int64_t offset, uint64_t length, bp_file_release_fn release,
                              void *user_data);

/* Writes queued bytes to fd, in order, until everything is written or the fd takes no more
 * (a partial write or EAGAIN). Returns the bytes written by this call (0 when nothing could
 * be written now or nothing is queued); BP_EIO with errno set on an error (EPIPE: the peer
 * is gone; also a region's file failing to be read, see bp_output_add_file), after which
 * every queued buffer and region has been released as by bp_output_clear (the output is
 * then empty and writable; errno kept); BP_EINVAL (NULL);
 * BP_EFREED when a queued buffer was released behind the output's back: nothing of the
 * gathering write that would take it goes out (buffers ahead of it in that write neither),
 * bytes earlier writes of this call sent stay sent and out of bp_output_pending, and the
 * output cannot get past the buffer - clear or free it (the release of the broken buffer
 * there is reported as misuse too). EINTR is retried. */
BP_API long bp_output_flush(bp_output *out, int fd);

/* 1 while writable (pending bytes have not passed high_water_mark since they were last
 * below low_water_mark), 0 while not; BP_EINVAL for NULL. */
BP_API int bp_output_writable(const bp_output *out);

/* The bytes queued and not written yet, file regions' included (0 for NULL). */
BP_API size_t bp_output_pending(const bp_output *out);

/* The number of buffers and file regions queued (0 for NULL). */
BP_API size_t bp_output_count(const bp_output *out);

/* Releases every queued buffer and region (close, error; each region's release callback
 * is called, `completed` 0); the output is then empty and writable. NULL is ignored. */
BP_API void bp_output_clear(bp_output *out);

#ifdef __cplusplus
}
#endif

#endif /* BYTEPOOL_H */
