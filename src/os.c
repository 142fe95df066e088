/* SPDX-License-Identifier: MIT */
/*
 * mmap-backed pages. Anonymous private mappings come zeroed and are returned to the OS
 * with munmap, so resident memory follows what the pool holds. Also the writes of
 * bp_output: gathering writes, and file bytes with sendfile or a copy.
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
#ifdef __linux__
#  include <pthread.h>
#  include <signal.h>
#  include <sys/sendfile.h>
#  include <time.h>
#endif

#ifndef ENODATA
#define ENODATA EIO
#endif

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
    return bp__os_write_blocks_flags(fd, iov, blocks, 0);
}

long bp__os_write_blocks_flags(int fd, struct iovec *iov, int blocks, int flags)
{
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)blocks};
    ssize_t put;
    do {
        put = sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
        if (put < 0 && errno == ENOTSOCK) put = writev(fd, iov, blocks);
    } while (put < 0 && errno == EINTR);
    return (long)put;
}

#ifdef __linux__
/* The SIGPIPE a write to a gone peer raised in this thread while it was blocked (it is
 * pending then, not delivered): taken, so that unblocking does not deliver it. */
static void take_sigpipe(const sigset_t *pipe_set)
{
    struct timespec zero = {0, 0};
    while (sigtimedwait(pipe_set, NULL, &zero) < 0 && errno == EINTR) {}
}
#endif

long bp__os_send_file(int out_fd, int in_fd, int64_t offset, size_t count)
{
#ifdef __linux__
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    bool masked = pthread_sigmask(SIG_BLOCK, &pipe_set, &old) == 0;
    off_t at = (off_t)offset;
    ssize_t put;
    do put = sendfile(out_fd, in_fd, &at, count);
    while (put < 0 && errno == EINTR);
    int saved = errno;
    if (masked && !sigismember(&old, SIGPIPE)) {
        if (put < 0 && saved == EPIPE) take_sigpipe(&pipe_set);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    errno = saved;
    return (long)put;
#else
    (void)out_fd, (void)in_fd, (void)offset, (void)count;
    errno = ENOSYS;
    return -1;
#endif
}

bool bp__os_send_file_refused(int err)
{
    return err == EINVAL || err == ENOSYS || err == EOPNOTSUPP || err == ENOTSUP || err == EOVERFLOW;
}

long bp__os_copy_file(int out_fd, int in_fd, int64_t offset, size_t count, size_t *copied)
{
    char chunk[16384];
    ssize_t got;
    *copied = 0;
    do got = pread(in_fd, chunk, count < sizeof chunk ? count : sizeof chunk, (off_t)offset);
    while (got < 0 && errno == EINTR);
    if (got <= 0) {
        if (got == 0) errno = ENODATA;
        return -1;
    }
    *copied = (size_t)got;
    struct iovec iov = {.iov_base = chunk, .iov_len = (size_t)got};
    return bp__os_write_blocks(out_fd, &iov, 1);
}
