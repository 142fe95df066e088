#!/bin/sh
# SPDX-License-Identifier: MIT
# Compares two builds of bytepool in one process (bench/pair.c): the way to tell whether a
# change made a hot path faster on a machine whose speed changes every few milliseconds.
#
#   scripts/bench-pair.sh A B [KIND [SIZE [ROUNDS [N [PROCESSES]]]]]
#
# A and B are git revisions, or "." for the working tree as it is. KIND is poolbuftest
# (default), alloc or batch (bench/bench.c's workloads of those names), SIZE the buffer
# size (256), ROUNDS the alternating rounds (300), N the buffers in a round (100000),
# PROCESSES how many processes run them (5): where code and data land (address space
# randomization, link order) moves either side by up to 15-30 % for a whole process, so
# one process is not enough: the processes alternate which side is linked and made first,
# and the summary is the median over processes.
# Each side is built as `make bench` builds the library (-O2, release options), its
# global symbols renamed with objcopy (a_..., b_...), and the loops of bench/pair_side.c
# compiled against that side's own header, so changes to the inline accessors count too.
# Needs git, cmake, a C compiler, nm and objcopy (binutils).
set -eu

if [ $# -lt 2 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
A=$1
B=$2
KIND=${3:-poolbuftest}
SIZE=${4:-256}
ROUNDS=${5:-300}
N=${6:-100000}
PROCESSES=${7:-5}
CC=${CC:-gcc}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-pair.XXXXXX")
WORKTREES=""
cleanup() {
    for wt in $WORKTREES; do git -C "$ROOT" worktree remove --force "$wt" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# build SIDE REV: leaves $WORK/lib$SIDE.a and $WORK/side_$SIDE.o, their globals prefixed.
build() {
    side=$1
    rev=$2
    if [ "$rev" = "." ]; then
        src=$ROOT
    else
        src=$WORK/src-$side
        git -C "$ROOT" worktree add --detach "$src" "$rev" >/dev/null 2>&1 ||
            { echo "bench-pair: cannot check out '$rev'" >&2; exit 1; }
        WORKTREES="$WORKTREES $src"
    fi
    cmake -S "$src" -B "$WORK/build-$side" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER="$CC" \
        -DBP_BUILD_TESTS=OFF -DBP_BUILD_EXAMPLES=OFF -DBP_BUILD_BENCH=OFF -DBP_BUILD_SHARED=OFF \
        -DBP_DEBUG_CHECKS=OFF -DBP_WERROR=OFF -DBP_SANITIZE= -DBP_VALGRIND=OFF -DBP_FUZZ=OFF >/dev/null
    cmake --build "$WORK/build-$side" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
    lib=$(find "$WORK/build-$side" -maxdepth 1 -name 'libbytepool*.a' | head -n 1)
    [ -n "$lib" ] || { echo "bench-pair: no static library built for '$rev'" >&2; exit 1; }
    nm --defined-only -g "$lib" 2>/dev/null | awk -v p="${side}_" 'NF == 3 { print $3, p $3 }' | sort -u >"$WORK/$side.syms"
    objcopy --redefine-syms="$WORK/$side.syms" "$lib" "$WORK/lib$side.a"
    "$CC" -O2 -std=c11 -c -DSIDE="${side}_" -I"$src/include" "$ROOT/bench/pair_side.c" -o "$WORK/side_$side.raw.o"
    objcopy --redefine-syms="$WORK/$side.syms" "$WORK/side_$side.raw.o" "$WORK/side_$side.o"
}

build a "$A"
build b "$B"
EXTRA_LIBS=$(pkg-config --libs libdw libunwind 2>/dev/null || true)
# Two binaries, each side's code and data first in one of them: in builds before 6cba70f
# the side linked first ran up to 15 % faster with the same code on both (where its
# thread-local data landed), and code placement still moves a side by a few percent.
# shellcheck disable=SC2086 # EXTRA_LIBS is a list of flags
"$CC" -O2 -std=c11 "$ROOT/bench/pair.c" "$WORK/side_a.o" "$WORK/side_b.o" "$WORK/liba.a" "$WORK/libb.a" \
    -pthread -ldl $EXTRA_LIBS -o "$WORK/bench-pair-0"
# shellcheck disable=SC2086
"$CC" -O2 -std=c11 "$ROOT/bench/pair.c" "$WORK/side_b.o" "$WORK/side_a.o" "$WORK/libb.a" "$WORK/liba.a" \
    -pthread -ldl $EXTRA_LIBS -o "$WORK/bench-pair-1"
echo "A = $A, B = $B: $KIND $SIZE B, $PROCESSES processes x $ROUNDS alternating rounds of $N buffers (ns per buffer)"
i=0
while [ "$i" -lt "$PROCESSES" ]; do
    "$WORK/bench-pair-$((i % 2))" "$KIND" "$SIZE" "$ROUNDS" "$N" $((i % 2)) || exit 1
    i=$((i + 1))
done | awk '
    function median(v, n,    i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    { n++; for (k = 2; k <= 5; k++) { a[k, n] = $k; b[k, n] = $(k + 5) } won += $11; total += $12
      printf "process %d   A p10 %6.2f med %6.2f p90 %6.2f mean %6.2f   B p10 %6.2f med %6.2f p90 %6.2f mean %6.2f   B faster in %d/%d\n", n, $2, $3, $4, $5, $7, $8, $9, $10, $11, $12 }
    END {
        for (k = 2; k <= 5; k++) { for (i = 1; i <= n; i++) { va[i] = a[k, i]; vb[i] = b[k, i] } ma[k] = median(va, n); mb[k] = median(vb, n) }
        printf "median      A p10 %6.2f med %6.2f p90 %6.2f mean %6.2f   B p10 %6.2f med %6.2f p90 %6.2f mean %6.2f   B faster in %d of %d rounds\n", ma[2], ma[3], ma[4], ma[5], mb[2], mb[3], mb[4], mb[5], won, total
        printf "B / A (median of processes): p10 %.3f, median %.3f, p90 %.3f, mean %.3f\n", mb[2] / ma[2], mb[3] / ma[3], mb[4] / ma[4], mb[5] / ma[5]
    }'
