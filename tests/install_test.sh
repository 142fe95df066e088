#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds two consumers of the installed
# library, one through pkg-config and one through the CMake package, then runs them.
# Usage: install_test.sh BUILD_DIR C_COMPILER
set -euo pipefail
build=$1
cc=$2
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

# pkg-config, shared
"$cc" "$tmp/consumer.c" -o "$tmp/shared" $(pkg-config --cflags --libs bytepool) -Wl,-rpath,"$libdir"
"$tmp/shared"
# pkg-config, static
"$cc" "$tmp/consumer.c" -o "$tmp/static" -DBP_STATIC_DEFINE $(pkg-config --cflags bytepool) "$libdir/libbytepool.a" $(pkg-config --static --libs-only-l --libs-only-other bytepool | sed "s/-lbytepool//")
"$tmp/static"
# only the API is exported from the shared library (nm's output is kept whole: `grep -q`
# in a pipe would end nm early, and pipefail would call that a failure)
exported=$(nm -D --defined-only "$libdir/libbytepool.so" | awk '{print $3}')
if printf '%s\n' "$exported" | grep -v '^bp_' | grep -v '^_' | grep . >/dev/null; then
  echo "shared library exports non-API symbols:"; printf '%s\n' "$exported" | grep -v '^bp_'; exit 1
fi
printf '%s\n' "$exported" | grep -x 'bp_alloc' >/dev/null

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
echo "install test: 3 consumers built and ran"
