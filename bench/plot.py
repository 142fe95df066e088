#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Plots from bytepool-bench's JSON: ns/op per workload and backend, throughput against
thread count, and resident memory against live bytes over the mixed run; and the README's
results table (OUT_DIR/bench-table.md).

usage: plot.py RESULTS_JSON OUT_DIR      (Debian: apt-get install python3-matplotlib)
"""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {
    "bytepool": "#d62728",
    "bytepool-unpooled": "#ff9896",
    "glibc": "#7f7f7f",
    "jemalloc": "#1f77b4",
    "tcmalloc": "#2ca02c",
    "mimalloc": "#9467bd",
}


def load(path):
    with open(path) as f:
        data = json.load(f)
    backends = []
    table = {}
    for r in data["results"]:
        if r["backend"] not in backends:
            backends.append(r["backend"])
        table.setdefault(r["workload"], {})[r["backend"]] = r
    return data, backends, table


def subtitle(data):
    m = data["machine"]
    return (f'{m["cpu"]}, {m["cores"]} cores, Linux {m["kernel"]}; median of '
            f'{data["repetitions"]} runs{" (quick)" if data["quick"] else ""}')


def finish(fig, ax, data, title, path, title_size=9, legend_columns=1):
    """What every plot ends with: its title over the machine line, the legend, the file."""
    ax.set_title(title + "\n" + subtitle(data), fontsize=title_size)
    ax.legend(fontsize=8, ncol=legend_columns)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_ns(data, backends, table, out):
    workloads = [w for w in table if not w.startswith("threads-") and w != "mixed"]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(backends)
    for i, b in enumerate(backends):
        xs = [k + (i - (len(backends) - 1) / 2) * width for k in range(len(workloads))]
        ys = [table[w][b]["median_ns_per_op"] if b in table[w] else 0 for w in workloads]
        ax.bar(xs, ys, width, label=b, color=COLORS.get(b))
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels(workloads, rotation=20)
    ax.set_ylabel("ns per buffer (log scale, lower is better)")
    ax.grid(axis="y", alpha=0.3)
    finish(fig, ax, data, "bytepool-bench: time per buffer", f"{out}/bench-ns.png", title_size=10, legend_columns=3)


def plot_threads(data, backends, table, out):
    rows = sorted((int(w.split("-")[1]), w) for w in table if w.startswith("threads-"))
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for b in backends:
        pts = [(t, 1e3 / table[w][b]["median_ns_per_op"]) for t, w in rows if b in table[w]]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=b, color=COLORS.get(b))
    ax.set_xticks([t for t, _ in rows])
    ax.set_xlabel("threads (each running batch-256 on its own)")
    ax.set_ylabel("million buffers / s, all threads (higher is better)")
    ax.grid(alpha=0.3)
    finish(fig, ax, data, "threads-T: throughput against thread count", f"{out}/bench-threads.png")


def median_run(result):
    runs = sorted(result["runs"], key=lambda r: r["ns_per_op"])
    return runs[len(runs) // 2]


def plot_mixed(data, backends, table, out):
    if "mixed" not in table:
        return
    fig, ax = plt.subplots(figsize=(7, 5))
    top = 0
    for b in backends:
        if b not in table["mixed"]:
            continue
        samples = median_run(table["mixed"][b])["samples"]
        live = [s[0] / 2**20 for s in samples]
        rss = [s[1] / 2**20 for s in samples]
        top = max([top] + live + rss)
        ax.scatter(live, rss, s=12, label=b, color=COLORS.get(b))
    ax.plot([0, top], [0, top], linestyle="--", color="gray", linewidth=1, label="resident = live")
    ax.set_xlabel("live bytes (MiB)")
    ax.set_ylabel("resident memory (MiB, lower is leaner)")
    ax.grid(alpha=0.3)
    finish(fig, ax, data, "mixed: resident memory against live bytes", f"{out}/bench-mixed.png")


def cell(ns):
    return f"{ns:.0f}" if ns >= 1000 else f"{ns:.1f}"


def ratio(x):
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def write_table(data, backends, table, path):
    """The README's table: medians, and in brackets each backend's time over bytepool's;
    then each threads-T's scaling over threads-1 (median of the repetitions' paired ratios)."""
    names = {"bytepool-unpooled": "unpooled"}
    lines = ["| workload | " + " | ".join(names.get(b, b) for b in backends) + " |",
             "|---" * (len(backends) + 1) + "|"]
    for w, row in table.items():
        base = row["bytepool"]["median_ns_per_op"]
        cells = [cell(base)]
        for b in backends[1:]:
            ns = row[b]["median_ns_per_op"] if b in row else None
            cells.append("-" if ns is None else f"{cell(ns)} ({ratio(ns / base)})")
        label = {"mixed": "mixed (per step)", "seed": "PoolBufTest loop"}.get(w, w)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    scaling = {}
    for r in data.get("scaling", []):
        scaling.setdefault(r["workload"], {})[r["backend"]] = r["median_ratio"]
    for w, row in scaling.items():
        cells = [f"{row[b]:.2f}x" if b in row else "-" for b in backends]
        lines.append(f"| {w} / threads-1 throughput | " + " | ".join(cells) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data, backends, table = load(sys.argv[1])
    plot_ns(data, backends, table, sys.argv[2])
    plot_threads(data, backends, table, sys.argv[2])
    plot_mixed(data, backends, table, sys.argv[2])
    write_table(data, backends, table, f"{sys.argv[2]}/bench-table.md")
    print(f"plots: {sys.argv[2]}/bench-ns.png bench-threads.png bench-mixed.png; table: {sys.argv[2]}/bench-table.md")


if __name__ == "__main__":
    main()
