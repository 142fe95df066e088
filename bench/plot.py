#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Plots from bytepool-bench's JSON: ns/op per workload and backend, throughput against
thread count, resident memory over the mixed run and after its release, resident memory
over the churn run; and the README's results tables, time and memory
(OUT_DIR/bench-table.md).

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
MARKERS = {"bytepool": "D", "bytepool-unpooled": "v", "glibc": "s", "jemalloc": "^", "tcmalloc": "o", "mimalloc": "P"}
# Workloads whose time per buffer is of another scale: in the table, not in the bar plot.
NOT_IN_BARS = ("mixed", "churn")
MIB = 2**20
MIXED_RAMP_SAMPLES = 20  # bench.c's mixed_loop: a sample per 1000 of its 20 000 buffers, then the steps'


def style(b):
    """Line style of a backend in the memory plots: bytepool drawn last, thick, with black-edged
    markers, so that it stands out where the others' points fall on the same spot."""
    if b == "bytepool":
        return dict(color=COLORS[b], marker=MARKERS[b], markersize=6, linewidth=2.2, markeredgecolor="black",
                    markeredgewidth=0.6, zorder=10)
    return dict(color=COLORS.get(b), marker=MARKERS.get(b, "o"), markersize=4, linewidth=1, alpha=0.85, zorder=3)


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


def subtitle(data, runs=None):
    m = data["machine"]
    runs = runs or f'median of {data["repetitions"]} runs'
    return f'{m["cpu"]}, {m["cores"]} cores, Linux {m["kernel"]}; {runs}{" (quick)" if data["quick"] else ""}'


def finish(fig, ax, data, title, path, title_size=9, legend_columns=1):
    """What every plot ends with: its title over the machine line, the legend, the file."""
    ax.set_title(title + "\n" + subtitle(data), fontsize=title_size)
    ax.legend(fontsize=8, ncol=legend_columns)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_ns(data, backends, table, out):
    workloads = [w for w in table if not w.startswith("threads-") and w not in NOT_IN_BARS]
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


def member_median(result, key, ratio_of=None):
    """The median over a backend's runs of one member (divided by `ratio_of`'s), or None."""
    values = sorted(r[key] / (r[ratio_of] if ratio_of else 1) for r in result["runs"]
                    if key in r and (ratio_of is None or r.get(ratio_of)))
    if not values:
        return None
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def median_run(result, key="ns_per_op"):
    """The run whose `key` is the median of the backend's runs (the lower middle one)."""
    runs = sorted(result["runs"], key=lambda r: r.get(key, 0))
    return runs[(len(runs) - 1) // 2]


def plot_mixed(data, backends, table, out):
    """Left: resident per live byte along the run (ramp, then the steady steps). Right:
    resident memory after everything was released, as a share of the run's peak, with no
    call to the allocator for 2 s; then after each backend's purge call."""
    if "mixed" not in table:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.15, 1]})
    order = [b for b in backends if b in table["mixed"] and b != "bytepool"] + ["bytepool"]
    for b in order:
        run = median_run(table["mixed"][b], "peak_rss")
        ratios = [s[1] / s[0] for s in run["samples"] if s[0] > 0]
        left.plot(range(1, len(ratios) + 1), ratios, label=b, **style(b))
        release = run.get("release")
        if not release:
            continue
        peak = run["peak_rss"]
        xs = [t / 1000 for t, _ in release]
        ys = [100 * rss / peak for _, rss in release]
        if "rss_purged" in run:
            xs.append(2.5)
            ys.append(100 * run["rss_purged"] / peak)
        if "rss_flushed" in run:
            xs.append(3.0)
            ys.append(100 * run["rss_flushed"] / peak)
        # The lines of several backends lie on one another (100 % for 2 s): the legend says
        # each one's figures.
        label = f"{b}: {100 * release[-1][1] / peak:.0f} % at 2 s"
        if "rss_purged" in run:
            label += f", {100 * run['rss_purged'] / peak:.1f} % purged"
        if "rss_flushed" in run:
            label += f", {100 * run['rss_flushed'] / peak:.1f} % flushed"
        right.plot(xs, ys, label=label, **style(b))
    left.axhline(1, linestyle="--", color="gray", linewidth=1, label="resident = live")
    left.axvline(MIXED_RAMP_SAMPLES + 0.5, color="gray", linewidth=0.8)
    left.set_xlabel("sample: the ramp (one per 1000 buffers allocated, up to 20 000), then the steps")
    left.set_ylabel("resident / live (lower is leaner)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    left.set_title("during the run", fontsize=9)
    right.axvspan(0, 2, color="0.93", zorder=0)
    right.set_xticks([0, 0.5, 1, 1.5, 2, 2.5, 3])
    right.set_xticklabels(["0", "0.5", "1", "1.5", "2 s", "purge\ncall", "bytepool:\nflush +\npurge"], fontsize=8)
    right.set_ylim(bottom=0)
    right.set_ylabel("resident, % of the run's peak")
    right.set_xlabel("after everything is released: 2 s with no allocator call, then the purge calls")
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="center left")
    right.set_title("after the release", fontsize=9)
    fig.suptitle("mixed: resident memory\n" + subtitle(data, f'the run of median peak of {data["repetitions"]}'),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(f"{out}/bench-mixed.png", dpi=100)


def plot_churn(data, backends, table, out):
    """Resident memory over the churn run, and per live byte, for each backend's run."""
    if "churn" not in table:
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    order = [b for b in backends if b in table["churn"] and b != "bytepool"] + ["bytepool"]
    for b in order:
        run = table["churn"][b]["runs"][0]
        secs = [s[0] / 1000 for s in run["samples"]]
        kw = style(b)
        kw["marker"] = None  # 600 samples a line: markers would hide the lines
        top.plot(secs, [s[2] / MIB for s in run["samples"]], label=b, **kw)
        ratios = [s[2] / s[1] if s[1] else float("nan") for s in run["samples"]]
        smooth = [sum(ratios[max(0, i - 9):i + 1]) / len(ratios[max(0, i - 9):i + 1]) for i in range(len(ratios))]
        bottom.plot(secs, smooth, label=b, **kw)
        if b == "bytepool":
            top.plot(secs, [s[1] / MIB for s in run["samples"]], color="black", linewidth=0.8, linestyle=":",
                     label="live (bytepool's run; the others' alike)", zorder=2)
    top.set_ylabel("resident (MiB)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    top.legend(fontsize=8, ncol=3)
    bottom.axvline(5, color="gray", linewidth=0.8, linestyle="--")
    bottom.set_ylabel("resident / live (mean of the last second)")
    bottom.set_xlabel("seconds (the max ratio is taken after the first 5)")
    bottom.grid(alpha=0.3)
    fig.suptitle("churn: producer -> consumer, ~65 MiB live, 64 B - 1 MiB\n" + subtitle(data, "one run each"),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(f"{out}/bench-churn.png", dpi=100)


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
        label = {"mixed": "mixed (per step)", "churn": "churn (per buffer; one run)"}.get(w, w)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    scaling = {}
    for r in data.get("scaling", []):
        scaling.setdefault(r["workload"], {})[r["backend"]] = r["median_ratio"]
    for w, row in scaling.items():
        cells = [f"{row[b]:.2f}x" if b in row else "-" for b in backends]
        lines.append(f"| {w} / threads-1 throughput | " + " | ".join(cells) + " |")
    lines += [""] + memory_table(backends, table, names)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def percent(x):
    return "-" if x is None else f"{x:.0f} %" if x >= 10 else f"{x:.1f} %"


def memory_table(backends, table, names):
    """Resident memory: mixed's peak per live byte, what stays after its release (2 s with
    no call, then the backend's purge call), churn's resident per live byte. Medians of the
    runs."""
    rows = []
    mixed, churn = table.get("mixed", {}), table.get("churn", {})

    def row(label, source, fn):
        rows.append(f"| {label} | " + " | ".join(fn(source[b]) if b in source else "-" for b in backends) + " |")

    def ratio_cell(result, key, of=None):
        v = member_median(result, key, of)
        return "-" if v is None else f"{v:.2f}"

    def share_cell(result, key):
        v = member_median(result, key, "peak_rss")
        return percent(None if v is None else 100 * v)

    if mixed:
        row("mixed: peak resident / peak live", mixed, lambda r: ratio_cell(r, "peak_rss", "peak_live"))
        row("mixed: resident 2 s after the release, no call made (% of peak)", mixed, lambda r: share_cell(r, "rss_2s"))
        row("mixed: then after the purge call (% of peak)", mixed, lambda r: share_cell(r, "rss_purged"))
    if "bytepool" in mixed:
        v = member_median(mixed["bytepool"], "rss_flushed", "peak_rss")
        if v is not None:
            rows.append("| mixed: after bp_thread_cache_flush + bp_allocator_purge (% of peak) | " + percent(100 * v) +
                        " |" + " |" * (len(backends) - 1))
    if churn:
        row("churn: resident / live at the end", churn, lambda r: ratio_cell(r, "churn_end_ratio"))
        row("churn: max resident / live after the first 5 s", churn, lambda r: ratio_cell(r, "churn_max_ratio"))
    if not rows:
        return []
    calls = []
    for b in backends:
        run = mixed.get(b, {"runs": [{}]})["runs"][0]
        if "purge_call" in run:
            calls.append(f"{names.get(b, b)} `{run['purge_call']}`")
    head = ["| memory | " + " | ".join(names.get(b, b) for b in backends) + " |", "|---" * (len(backends) + 1) + "|"]
    note = ["", "Purge calls: " + ", ".join(calls) + "."] if calls else []
    return head + rows + note


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data, backends, table = load(sys.argv[1])
    plot_ns(data, backends, table, sys.argv[2])
    plot_threads(data, backends, table, sys.argv[2])
    plot_mixed(data, backends, table, sys.argv[2])
    plot_churn(data, backends, table, sys.argv[2])
    write_table(data, backends, table, f"{sys.argv[2]}/bench-table.md")
    print(f"plots: {sys.argv[2]}/bench-ns.png bench-threads.png bench-mixed.png bench-churn.png; "
          f"tables: {sys.argv[2]}/bench-table.md")


if __name__ == "__main__":
    main()
