/* SPDX-License-Identifier: MIT */
/*
 * The operating system's memory: mapping, unmapping and purging pages. Every byte the
 * pool hands out comes from bp__os_map. Process-wide counters of what is mapped let tests
 * check that huge buffers and empty chunks really go back, and in test builds a fault
 * injector lets them make a mapping fail on purpose.
 */
#ifndef BP__OS_H
#define BP__OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

/* The OS page size (sysconf), read once. */
size_t bp__os_page_size(void);

/* Online CPUs, at least 1. */
unsigned bp__os_cpu_count(void);

/* Whether the CPU has a prefetch that asks for a line exclusive (x86's PREFETCHW, CPUID
 * 0x80000001 ECX bit 8; see bp__prefetch_for_write). True where __builtin_prefetch(p, 1)
 * is such a prefetch already (arm64, or x86 code built for a CPU that has it). */
bool bp__os_cpu_has_prefetchw(void);

/* Maps `size` bytes (a multiple of the OS page) of zeroed read/write memory.
 * NULL when the OS refuses or (test builds) a failure was injected. */
void *bp__os_map(size_t size);

/* Unmaps what bp__os_map returned, with the same size. */
void bp__os_unmap(void *p, size_t size);

/* Gives the pages of [p, p + size) (page aligned) back to the OS while keeping them mapped:
 * the next touch finds zeroed pages (MADV_DONTNEED). Returns false if the OS refused, which
 * costs nothing but the memory. */
bool bp__os_purge(void *p, size_t size);

/* Writes up to `blocks` iovecs to fd in one call: sendmsg with MSG_NOSIGNAL (a peer that
 * went away is EPIPE, not a SIGPIPE that ends the process), writev when fd is not a socket;
 * EINTR is retried. Returns what write(2) returns, errno set on -1. */
struct iovec;
long bp__os_write_blocks(int fd, struct iovec *iov, int blocks);

/* bp__os_write_blocks with more sendmsg flags: MSG_MORE tells a socket that more bytes
 * follow at once (they leave in the same segments instead of a small one of their own). */
long bp__os_write_blocks_flags(int fd, struct iovec *iov, int blocks, int flags);

/* Writes up to `count` bytes of in_fd from `offset` to out_fd with sendfile(2), in_fd's own
 * offset left alone. sendfile takes no MSG_NOSIGNAL, so SIGPIPE is blocked in the calling
 * thread around the call and the one a gone peer raised is taken: EPIPE, no signal (unless
 * the thread had SIGPIPE blocked already, whose pending signal is then its own business).
 * EINTR is retried. Returns the bytes written, 0 when in_fd ends at offset, -1 with errno;
 * elsewhere than Linux always -1 with ENOSYS. */
long bp__os_send_file(int out_fd, int in_fd, int64_t offset, size_t count);

/* Whether sendfile's errno means it cannot read in_fd (not that the write failed), so that
 * a copy through pread and write may still work: EINVAL, ENOSYS, EOPNOTSUPP, EOVERFLOW. */
bool bp__os_send_file_refused(int err);

/* The copy sendfile would have made: one pread(2) of up to min(count, 16 KiB) bytes of
 * in_fd at `offset` into the stack, written to out_fd as bp__os_write_blocks writes. Sets
 * *copied to the bytes read. Returns what the write returned (errno set on -1); -1 with
 * the pread's errno when that failed, with ENODATA when in_fd ends at offset (*copied 0). */
long bp__os_copy_file(int out_fd, int in_fd, int64_t offset, size_t count, size_t *copied);

/* Bytes and mappings currently alive, across every allocator of the process. */
size_t bp__os_mapped_bytes(void);
size_t bp__os_mapping_count(void);

#if BP__TESTING
/* Test hook: let `successes` more maps succeed, then fail every map until it is called
 * again with a negative value (the default: never fail). */
void bp__os_inject_map_failure(long successes);
#endif

#endif
