#!/bin/sh
# SPDX-License-Identifier: MIT
# The module graph of src/: a module is a base name (foo.c and foo.h together), an edge
# runs from a module to each module whose header one of its files includes ("x.h", not
# <x.h>). Prints the modules layer by layer - each one above everything it includes - and
# exits 1, naming the modules on or above a cycle, if the graph has one.
#   scripts/module-graph.sh [src-dir]
set -eu
dir=${1:-$(dirname "$0")/../src}
cd "$dir"
for f in *.c *.h; do
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([A-Za-z0-9_]*\)\.h".*/\1/p' "$f" |
        while read -r dep; do echo "${f%.*} $dep"; done
    echo "${f%.*}"
done | awk '
    NF == 1 { mod[$1] = 1; next }
    { edge[++nedges] = $1 " " $2 }
    END {
        # Only headers of src/ itself (bytepool.h is the public one, under include/).
        for (e = 1; e <= nedges; e++) {
            split(edge[e], p, " ")
            if (p[1] != p[2] && (p[2] in mod) && !seen[edge[e]]++) deps[p[1]] = deps[p[1]] " " p[2]
        }
        # layer(m) = 1 + the highest layer of what m includes; a cycle never settles.
        n = 0; for (m in mod) n++
        for (round = 0; round <= n + 1; round++) {
            changed = 0
            for (m in mod) {
                l = 0; k = split(deps[m], d, " ")
                for (i = 1; i <= k; i++) if (layer[d[i]] + 1 > l) l = layer[d[i]] + 1
                if (l > n) l = n + 1
                if (layer[m] != l) { layer[m] = l; changed = 1 }
            }
            if (!changed) break
        }
        bad = 0
        for (m in mod) if (layer[m] > n) { left[m] = 1; bad = 1 }
        if (bad) {
            # Unsettled: on a cycle or above one. Drop those nothing unsettled includes
            # until only the cycles are left.
            do {
                dropped = 0
                for (m in left) {
                    needed = 0
                    for (r in left) if (index(deps[r] " ", " " m " ")) { needed = 1; break }
                    if (!needed) { delete left[m]; dropped = 1 }
                }
            } while (dropped)
            for (m in left) cyc = cyc " " m " ->" deps[m]
            print "include cycle among these modules (each with what it includes):" cyc
            exit 1
        }
        top = 0; for (m in mod) if (layer[m] > top) top = layer[m]
        for (l = top; l >= 0; l--) {
            line = ""
            for (m in mod) if (layer[m] == l) line = line " " m
            k = split(line, ms, " "); out = ""
            # sorted for a stable picture
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (ms[j] < ms[i]) { t = ms[i]; ms[i] = ms[j]; ms[j] = t }
            for (i = 1; i <= k; i++) out = out (i > 1 ? "  " : "") ms[i]
            printf "%2d  %s\n", l, out
        }
    }'
