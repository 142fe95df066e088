/* SPDX-License-Identifier: MIT */
/*
 * mmap-backed pages. Anonymous private mappings come zeroed and are returned to the OS
 * with munmap, so resident memory follows what the pool holds.
 */
#include "os.h"

#include "common.h"

#include <stdatomic.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#  include <cpuid.h>
#endif
#include <unistd.h>

static atomic_size_t mapped_bytes;
static atomic_size_t mapping_count;
static atomic_long maps_before_failure = -1; /* test builds: < 0 while no failure is injected */

size_t bp__os_page_size(void)
{
    static atomic_size_t cached;
    size_t size = atomic_load_explicit(&cached, memory_order_relaxed);
    if (BP__UNLIKELY(size == 0)) {
        long value = sysconf(_SC_PAGESIZE);
        size = value > 0 ? (size_t)value : 4096;
        atomic_store_explicit(&cached, size, memory_order_relaxed);
    }
    return size;
}

unsigned bp__os_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1u;
}

bool bp__os_cpu_has_prefetchw(void)
{
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(__PRFCHW__)
    unsigned eax, ebx, ecx, edx;
    if (__get_cpuid(0x80000001u, &eax, &ebx, &ecx, &edx) == 0) return false;
    return (ecx >> 8) & 1u;
#else
    return true;
#endif
}

static bool injected_failure(void)
{
    long left = atomic_load_explicit(&maps_before_failure, memory_order_relaxed);
    while (left >= 0) {
        if (left == 0) return true;
        if (atomic_compare_exchange_weak_explicit(&maps_before_failure, &left, left - 1,
                                                  memory_order_relaxed, memory_order_relaxed))
            return false;
    }
    return false;
}

void *bp__os_map(size_t size)
{
    BP__ASSERT(size > 0 && size % bp__os_page_size() == 0);
    if (BP__TESTING && BP__UNLIKELY(injected_failure())) return NULL;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (BP__UNLIKELY(p == MAP_FAILED)) return NULL;
    atomic_fetch_add_explicit(&mapped_bytes, size, memory_order_relaxed);
    atomic_fetch_add_explicit(&mapping_count, 1, memory_order_relaxed);
    return p;
}

void bp__os_unmap(void *p, size_t size)
{
    if (p == NULL) return;
    munmap(p, size);
    atomic_fetch_sub_explicit(&mapped_bytes, size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&mapping_count, 1, memory_order_relaxed);
}

bool bp__os_purge(void *p, size_t size) { return madvise(p, size, MADV_DONTNEED) == 0; }

size_t bp__os_mapped_bytes(void) { return atomic_load(&mapped_bytes); }

size_t bp__os_mapping_count(void) { return atomic_load(&mapping_count); }

#if BP__TESTING
void bp__os_inject_map_failure(long successes) { atomic_store(&maps_before_failure, successes); }
#endif

long bp__os_write_blocks(int fd, struct iovec *iov, int blocks)
{
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)blocks};
    ssize_t put;
    do {
        put = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (put < 0 && errno == ENOTSOCK) put = writev(fd, iov, blocks);
    } while (put < 0 && errno == EINTR);
    return (long)put;
}
