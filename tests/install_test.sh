#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the build into a temporary prefix and builds consumers of the installed library
# through pkg-config (shared and static) and through the CMake package, then runs them.
# Checks that the library depends on libc and pthreads only: libdw and libunwind, which leak
# detection loads when it needs them, appear in no link line, flag or package file; and
# that a leak report from the installed library still names file:line (with libdw) or
# function names (dladdr); and that the installed libraries hold no test hook.
# Usage: install_test.sh BUILD_DIR C_COMPILER [LIBDW_HEADERS_FOUND]
set -euo pipefail
build=$1
cc=$2
with_libdw=${3:-OFF}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null

cat > "$tmp/consumer.c" <<'C'
#include <bytepool.h>
#include <stdio.h>
int main(void)
{
    bp_allocator *a = bp_allocator_default();
    bp_buf *b = bp_alloc(a, BP_DEFAULT_CAPACITY);
    int32_t v = 0;
    if (bp_write_i32(b, 10) != 0 || bp_read_i32(b, &v) != 0 || v != 10) return 1;
    if (bp_release(b) != 1 || bp_write_i32(b, 1) != BP_EFREED) return 2;
    puts("consumer ok");
    return 0;
}
C

pcdir=$(dirname "$(find "$prefix" -name bytepool.pc)")
export PKG_CONFIG_PATH="$pcdir"
libdir=$(pkg-config --variable=libdir bytepool)
[ -f "$libdir/libbytepool.so" ] || { echo "no shared library in $libdir"; exit 1; }
[ -f "$libdir/libbytepool.a" ] || { echo "no static library in $libdir"; exit 1; }
[ -f "$(pkg-config --variable=includedir bytepool)/bytepool.h" ] || { echo "no header"; exit 1; }

foreign='libdw|libunwind|libelf|liblzma|libbz2|libz\.'
fail() { echo "install test: $*"; exit 1; }

# The shared library needs nothing but libc (and, before glibc 2.34, libpthread and libdl),
# and calls no libdw or libunwind function directly.
needed=$(readelf -d "$libdir/libbytepool.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
if printf '%s\n' "$needed" | grep -Ev '^(libc|libpthread|libdl|ld-linux.*)\.so' | grep . >/dev/null; then
  fail "libbytepool.so needs more than libc: $(echo $needed)"
fi
deps=$(ldd "$libdir/libbytepool.so")
if printf '%s\n' "$deps" | grep -E "$foreign" >/dev/null; then fail "ldd libbytepool.so lists: $deps"; fi
undefined=$(nm -u "$libdir/libbytepool.so"; nm -u "$libdir/libbytepool.a" 2>/dev/null)
if printf '%s\n' "$undefined" | grep -E ' (dwfl_|dwarf_|elf_|unw_|_U)' >/dev/null; then
  fail "undefined libdw/libunwind symbols: $(printf '%s\n' "$undefined" | grep -E ' (dwfl_|dwarf_|elf_|unw_|_U)' | sort -u | tr '\n' ' ')"
fi

# pkg-config: bytepool's own -I, -L and -l, plus -pthread (and -ldl where dlopen is not
# in libc), for shared and static linking alike.
includedir=$(pkg-config --variable=includedir bytepool)
same_dir() { [ -d "$1" ] && [ "$(cd "$1" && pwd -P)" = "$(cd "$2" && pwd -P)" ]; }
for flag in $(pkg-config --cflags --libs --static bytepool); do
  case $flag in
    -I*) same_dir "${flag#-I}" "$includedir" || fail "pkg-config --cflags has a foreign $flag" ;;
    -L*) same_dir "${flag#-L}" "$libdir" || fail "pkg-config --libs has a foreign $flag" ;;
    -lbytepool | -pthread | -ldl) ;;
    *) fail "pkg-config --cflags --libs --static has a foreign flag: $flag" ;;
  esac
done
# The installed CMake package names no library but bytepool's and Threads.
cmakedir=$(dirname "$(find "$prefix" -name bytepoolTargets.cmake)")
if grep -En "$foreign" "$cmakedir"/*.cmake >/dev/null; then
  fail "CMake package files name foreign libraries: $(grep -En "$foreign" "$cmakedir"/*.cmake)"
fi

# pkg-config, shared
"$cc" "$tmp/consumer.c" -o "$tmp/shared" $(pkg-config --cflags --libs bytepool) -Wl,-rpath,"$libdir"
"$tmp/shared"
# pkg-config, static
"$cc" "$tmp/consumer.c" -o "$tmp/static" -DBP_STATIC_DEFINE $(pkg-config --cflags bytepool) "$libdir/libbytepool.a" $(pkg-config --static --libs-only-l --libs-only-other bytepool | sed "s/-lbytepool//")
"$tmp/static"
# static, with nothing but -lbytepool -pthread
"$cc" "$tmp/consumer.c" -o "$tmp/static-plain" -DBP_STATIC_DEFINE -I"$includedir" -L"$libdir" \
  -Wl,-Bstatic -lbytepool -Wl,-Bdynamic -pthread
"$tmp/static-plain"
# The SONAME carries the header's layout number: libbytepool.so.<BP__ABI_VERSION>.
abi=$(sed -n 's/^#define BP__ABI_VERSION \([0-9]*\)$/\1/p' "$includedir/bytepool.h")
soname=$(readelf -d "$libdir/libbytepool.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ -n "$abi" ] && [ "$soname" = "libbytepool.so.$abi" ] || fail "SONAME '$soname' for BP__ABI_VERSION '$abi'"
# The header, its inline functions and published structs included, compiles as C++17.
cxx=$(command -v c++ || command -v g++ || command -v clang++ || true)
if [ -n "$cxx" ]; then
  cat > "$tmp/consumer.cpp" <<'CXX'
#include <bytepool.h>
int main()
{
    bp_buf *b = bp_alloc(bp_allocator_default(), 256);
    int32_t v = 0;
    int ok = b != nullptr && bp_write_i32(b, 7) == 0 && bp_read_i32(b, &v) == 0 && v == 7 && bp_release(b) == 1;
    return ok && bp_version() == BP_VERSION ? 0 : 1;
}
CXX
  "$cxx" -std=c++17 -O2 -Wall -Wextra -Wpedantic -Werror "$tmp/consumer.cpp" -o "$tmp/cxx" \
    $(pkg-config --cflags --libs bytepool) -Wl,-rpath,"$libdir"
  "$tmp/cxx" || fail "the C++ consumer failed"
fi

# A leak report from the installed shared library, in a program linked without libdw:
# frame #0 is the program's function, with its file:line when libdw is there (loaded at the
# report) and with its name when frames are named by dladdr (the program exports it).
cat > "$tmp/leak.c" <<'C'
#include <bytepool.h>
__attribute__((noinline)) bp_buf *leak_here(bp_allocator *a)
{
    bp_buf *b = bp_alloc(a, 100); /* line 4 */
    __asm__ volatile("" ::: "memory");
    return b;
}
int main(void) { return leak_here(bp_allocator_default()) != NULL ? 0 : 1; }
C
"$cc" -g -O1 -rdynamic "$tmp/leak.c" -o "$tmp/leak" $(pkg-config --cflags --libs bytepool) -Wl,-rpath,"$libdir"
if ldd "$tmp/leak" | grep -E "$foreign" >/dev/null; then fail "the leaking program links: $(ldd "$tmp/leak")"; fi
BYTEPOOL_LEAK_DETECTION=paranoid BYTEPOOL_LEAK_SYMBOLIZER=dladdr "$tmp/leak" 2>"$tmp/leak-dladdr.txt"
grep -F -A1 "1 buffer (100 bytes) allocated at:" "$tmp/leak-dladdr.txt" | grep -E '^    #0 leak_here\+0x' >/dev/null \
  || fail "report with dladdr:" "$(cat "$tmp/leak-dladdr.txt")"
if [ "$with_libdw" = ON ]; then
  # Also a program built by clang, which writes no .debug_aranges: its units are found
  # by their own address ranges (static link: next to the library's gcc-built units).
  leakers="leak"
  if command -v clang >/dev/null; then
    clang -g -O0 "$tmp/leak.c" -o "$tmp/leak-clang" $(pkg-config --cflags --libs bytepool) -Wl,-rpath,"$libdir"
    clang -g -O0 "$tmp/leak.c" -o "$tmp/leak-clang-static" -DBP_STATIC_DEFINE $(pkg-config --cflags bytepool) \
      "$libdir/libbytepool.a" $(pkg-config --static --libs-only-l --libs-only-other bytepool | sed "s/-lbytepool//")
    leakers="leak leak-clang leak-clang-static"
  fi
  for leaker in $leakers; do
    BYTEPOOL_LEAK_DETECTION=paranoid "$tmp/$leaker" 2>"$tmp/$leaker-libdw.txt"
    grep -F -A1 "1 buffer (100 bytes) allocated at:" "$tmp/$leaker-libdw.txt" | grep -E '^    #0 leak_here \(.*leak\.c:4\)$' >/dev/null \
      || fail "$leaker: report with libdw:" "$(cat "$tmp/$leaker-libdw.txt")"
  done
fi
# only the API is exported from the shared library (nm's output is kept whole: `grep -q`
# in a pipe would end nm early, and pipefail would call that a failure)
exported=$(nm -D --defined-only "$libdir/libbytepool.so" | awk '{print $3}')
if printf '%s\n' "$exported" | grep -v '^bp_' | grep -v '^_' | grep . >/dev/null; then
  echo "shared library exports non-API symbols:"; printf '%s\n' "$exported" | grep -v '^bp_'; exit 1
fi
printf '%s\n' "$exported" | grep -x 'bp_alloc' >/dev/null

# The installed libraries are release builds: no test hook (built only into the tests'
# library, with BP__TESTING=1). The state a hook sets is static and read only behind
# BP__TESTING, so optimized builds drop it too (-O0 keeps it, unread).
hooks='bp__os_inject_map_failure bp__remote_inject_batch_failure bp__inject_thread_state_failure
bp__tcache_fixed_sampling bp__tcache_set_gap_hook bp__tcache_set_next_tag_id bp__leak_symbolizer_reset'
# nm -D: what the shared library exports; nm: its hidden symbols too (unless stripped).
symbols=$(nm -D "$libdir/libbytepool.so" | awk '{print $NF}'; nm "$libdir/libbytepool.so" 2>/dev/null | awk 'NF > 1 {print $NF}'
          nm "$libdir/libbytepool.a" 2>/dev/null | awk 'NF > 1 {print $NF}')
for hook in $hooks; do
  if printf '%s\n' "$symbols" | grep -x "$hook" >/dev/null; then fail "the installed library holds the test hook $hook"; fi
done
printf '%s\n' "$symbols" | grep -x 'bp_alloc' >/dev/null || fail "nm lists no bp_alloc in the installed libraries"

# CMake package
mkdir -p "$tmp/cmake-consumer"
cp "$tmp/consumer.c" "$tmp/cmake-consumer/"
cat > "$tmp/cmake-consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(bytepool 0.1 REQUIRED)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE bytepool::bytepool)
CM
CC="$cc" cmake -S "$tmp/cmake-consumer" -B "$tmp/cmake-consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$tmp/cmake-consumer/build" >/dev/null
"$tmp/cmake-consumer/build/consumer"
echo "install test: 5 consumers built and ran; the library links libc and pthreads only"
