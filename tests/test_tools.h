/* SPDX-License-Identifier: MIT */
/* Which tool a test program runs under, for the tests that scale their loops down there:
 * RUNNING_ON_VALGRIND (Valgrind's own macro, 0 without its header), UNDER_SANITIZER (ASan
 * or TSan) and UNDER_TSAN. Needs nothing but the compiler (and Valgrind's header if
 * installed), so that the cmocka tests and the stand-alone fuzzers share it. */
#ifndef BP_TEST_TOOLS_H
#define BP_TEST_TOOLS_H

#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#  endif
#endif
#ifndef RUNNING_ON_VALGRIND
#  define RUNNING_ON_VALGRIND 0
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#  define UNDER_SANITIZER 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#    define UNDER_SANITIZER 1
#  endif
#endif
#ifndef UNDER_SANITIZER
#  define UNDER_SANITIZER 0
#endif
#if defined(__SANITIZE_THREAD__)
#  define UNDER_TSAN 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define UNDER_TSAN 1
#  endif
#endif
#ifndef UNDER_TSAN
#  define UNDER_TSAN 0
#endif

#endif
