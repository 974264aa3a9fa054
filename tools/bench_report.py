#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Turns lskd_bench's JSON output into docs/benchmarks.md and docs/benchmarks.png.

Usage:
  lskd_bench --benchmark_repetitions=5 --benchmark_out_format=json \\
             --benchmark_out=docs/bench-results.json
  /usr/bin/python3 tools/bench_report.py docs/bench-results.json \\
      --md docs/benchmarks.md --png docs/benchmarks.png [--command "..."] [--note "..."]

Every figure is a median over the repetitions of a row (the JSON's individual runs). Rows on
one thread are timed in CPU time of the calling thread, which a busy machine disturbs less
than wall-clock time; the 2-thread row in wall-clock time, and its speed-up is against the
one-thread row's wall-clock median.

The roofline of a shape is the slower of two bounds, for the bytes and the exponentials a row
of the benchmark needs:
  - bandwidth: BM_roofline_stream (reads two rows x classes float buffers, writes one) scaled
    by bytes: forward moves 2 buffers, forward+backward 3;
  - exp: two exponentials per logit at BM_roofline_exp's rate for the best architecture
    (an L1-resident buffer, so the exp unit alone).
"% of roofline" = roofline time / measured time.
"""

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict

NAME = re.compile(
    r"^BM_(?P<op>kd_forward|kd_fwdbwd|roofline_stream|roofline_exp)_(?P<impl>[A-Za-z0-9_]+?)"
    r"/(?P<rows>\d+)/(?P<cols>\d+)(?P<process>/process_time)?(?P<real>/real_time)?$")

TO_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
FLOAT_BYTES = 4


def load_runs(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    runs = defaultdict(lambda: {"cpu": [], "real": [], "counters": defaultdict(list)})
    for b in data.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        name = b.get("run_name", b["name"])
        m = NAME.match(name)
        if not m:
            continue
        key = (m["op"], m["impl"], int(m["rows"]), int(m["cols"]))
        unit = TO_SECONDS[b.get("time_unit", "ns")]
        runs[key]["cpu"].append(b["cpu_time"] * unit)
        runs[key]["real"].append(b["real_time"] * unit)
        runs[key]["wall_timed"] = bool(m["real"])
        for counter in ("extra_bytes", "loss", "grad_abs_sum"):
            if counter in b:
                runs[key]["counters"][counter].append(b[counter])
    rows = {}
    for key, r in runs.items():
        rows[key] = {
            "cpu": statistics.median(r["cpu"]),
            "real": statistics.median(r["real"]),
            "reps": len(r["cpu"]),
            "wall_timed": r["wall_timed"],
            "spread": (max(r["real"] if r["wall_timed"] else r["cpu"]) /
                       min(r["real"] if r["wall_timed"] else r["cpu"]) - 1.0),
            "counters": {k: statistics.median(v) for k, v in r["counters"].items()},
        }
    return data.get("context", {}), rows


def timed(row):
    """The time a row is judged by: wall-clock for the multi-threaded row, else CPU time."""
    return row["real"] if row["wall_timed"] else row["cpu"]


ARCH_ORDER = ["scalar", "sse2", "avx2", "avx512f"]


def impl_order(impl):
    if impl.startswith("lskd_"):
        rest = impl[len("lskd_"):]
        arch = rest.split("_")[0]
        return (0, ARCH_ORDER.index(arch) if arch in ARCH_ORDER else 9, rest)
    return ({"naive": 1, "eigen": 2, "libtorch": 3}.get(impl, 4), 0, impl)


def buffers_of(op):
    return 2 if op == "kd_forward" else 3


def best_arch(context, rows):
    if context.get("best_arch"):
        return context["best_arch"]
    archs = {k[1] for k in rows if k[0] == "roofline_exp"}
    return max(archs, key=lambda a: ARCH_ORDER.index(a) if a in ARCH_ORDER else -1)


def roofline(rows, shape, op, arch):
    """Roofline time (s) of a shape for `op`, and the two bounds, or None."""
    b, c = shape
    logits = b * c
    stream = rows.get(("roofline_stream", arch, b, c))
    exp = rows.get(("roofline_exp", arch, b, c))
    if stream is None or exp is None:
        return None
    t_bytes = stream["cpu"] * buffers_of(op) / 3.0
    exp_rate = logits / exp["cpu"]
    t_exp = 2.0 * logits / exp_rate
    return {"time": max(t_bytes, t_exp), "t_bytes": t_bytes, "t_exp": t_exp,
            "exp_rate": exp_rate, "stream_gbs": 3 * logits * FLOAT_BYTES / stream["cpu"] / 1e9,
            "bound": "bandwidth" if t_bytes >= t_exp else "exp"}


def fmt_time(seconds):
    if seconds >= 1.0:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"


def fmt_rate(x):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def fmt_bytes(n):
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n:.0f} B"


def label(op, impl):
    kind = "forward" if op == "kd_forward" else "fwd+bwd"
    if impl.startswith("lskd_"):
        rest = impl[len("lskd_"):]
        if rest.endswith("_2threads"):
            return f"lskd {rest[:-len('_2threads')]}, 2 threads, {kind}"
        return f"lskd {rest}, {kind}"
    return f"{impl}, {kind}"


def shapes_of(rows):
    return sorted({(k[2], k[3]) for k in rows}, key=lambda s: (s[1], s[0]))


def write_markdown(path, context, rows, args):
    arch = best_arch(context, rows)
    out = []
    out.append("# lskd benchmarks\n")
    out.append("Generated by `tools/bench_report.py` from `docs/bench-results.json` "
               "(Google Benchmark JSON of `lskd_bench`). Medians over the repetitions; "
               "one-thread rows in CPU time of the calling thread, the 2-thread row in "
               "wall-clock time. Do not read absolute numbers from a single run on a shared "
               "machine; the ratios are the point.\n")
    out.append("## Machine and build\n")
    caches = ", ".join(f"L{c['level']} {c['type'][0].lower() if c['type'] != 'Unified' else ''}"
                       f"{fmt_bytes(c['size'])}" + (f" x{c['num_sharing']}" if c.get('num_sharing', 0) > 1 else "")
                       for c in context.get("caches", []))
    facts = [
        ("date", context.get("date", "?")),
        ("CPUs", f"{context.get('num_cpus', '?')} x {context.get('mhz_per_cpu', '?')} MHz"),
        ("caches", caches or "?"),
        ("load average at start", ", ".join(f"{x:.2f}" for x in context.get("load_avg", []))),
        ("instruction sets (lskd dispatch)", context.get("cpu_archs", "?")),
        ("best", arch),
        ("compiler", context.get("compiler", "?")),
        ("lskd", context.get("lskd_version", "?")),
        ("xsimd", context.get("xsimd_version", "?")),
        ("Eigen", context.get("eigen_version", "?")),
        ("libtorch", context.get("torch_version", "not built")),
        ("Google Benchmark library build", context.get("library_build_type", "?")),
        ("loss", context.get("loss", "?")),
    ]
    for k, v in facts:
        out.append(f"- **{k}**: {v}")
    if args.command:
        out.append(f"- **command**: `{args.command}`")
    for note in args.note or []:
        out.append(f"- **note**: {note}")
    out.append("")

    out.append("## Columns\n")
    out.append("- *time*: the median this row is judged by: CPU time of the calling thread for "
               "one thread, wall-clock for 2 threads. *CPU*: median CPU time (for the 2-thread "
               "row, of the whole process: both threads, OpenMP spin-waiting included). *wall*: "
               "median wall-clock time; wall / CPU well above 1 on a one-thread row means the "
               "core was shared with other processes during the run.")
    out.append("- *logits/s*: rows x classes per second; *GB/s*: bytes the operation must move "
               "(forward reads 2 buffers, fwd+bwd reads 2 and writes 1, 4 bytes a logit) per "
               "second.")
    out.append("- *vs libtorch*: libtorch's median time (same operation) / this row's.")
    out.append("- *% roofline*: roofline time / this row's time; the roofline is the slower of "
               "the stream probe moving the same bytes and two exps per logit at the exp "
               f"probe's rate ({arch}).")
    out.append("- *extra heap*: peak bytes lskd allocated through operator new during one call "
               "(lskd rows only), against one rows x classes float buffer.")
    out.append("- *spread*: (slowest - fastest) / fastest repetition.\n")

    summary = []
    for shape in shapes_of(rows):
        b, c = shape
        logits = b * c
        out.append(f"## {b} x {c}\n")
        rl = {op: roofline(rows, shape, op, arch) for op in ("kd_forward", "kd_fwdbwd")}
        if rl["kd_fwdbwd"]:
            r = rl["kd_fwdbwd"]
            out.append(f"Roofline (fwd+bwd): {fmt_time(r['time'])}, {r['bound']}-bound "
                       f"(stream {r['stream_gbs']:.3g} GB/s -> {fmt_time(r['t_bytes'])}; "
                       f"exp {fmt_rate(r['exp_rate'])}exp/s -> {fmt_time(r['t_exp'])}). "
                       f"One buffer = {fmt_bytes(logits * FLOAT_BYTES)}.\n")
        out.append("| implementation | time | CPU | wall | logits/s | GB/s | vs libtorch | "
                   "% roofline | extra heap | spread |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        keys = sorted((k for k in rows if k[2:] == shape and k[0] in ("kd_forward", "kd_fwdbwd")),
                      key=lambda k: (k[0] != "kd_fwdbwd", impl_order(k[1])))
        for key in keys:
            op, impl = key[0], key[1]
            row = rows[key]
            t = timed(row)
            torch = rows.get((op, "libtorch", b, c))
            vs = f"{timed(torch) / t:.1f}x" if torch and impl != "libtorch" else ""
            roof = f"{rl[op]['time'] / t * 100:.0f}%" if rl[op] else ""
            extra = row["counters"].get("extra_bytes")
            extra_s = (f"{fmt_bytes(extra)} ({extra / (logits * FLOAT_BYTES) * 100:.2g}%)"
                       if extra is not None else "")
            out.append(f"| {label(op, impl)} | {fmt_time(t)} | {fmt_time(row['cpu'])} | "
                       f"{fmt_time(row['real'])} | "
                       f"{fmt_rate(logits / t)} | {buffers_of(op) * logits * FLOAT_BYTES / t / 1e9:.3g} | "
                       f"{vs} | {roof} | {extra_s} | {row['spread'] * 100:.0f}% |")
        for probe in ("roofline_stream", "roofline_exp"):
            for key in sorted((k for k in rows if k[2:] == shape and k[0] == probe),
                              key=lambda k: impl_order("lskd_" + k[1])):
                row = rows[key]
                what = (f"{3 * logits * FLOAT_BYTES / row['cpu'] / 1e9:.3g} GB/s"
                        if probe == "roofline_stream" else f"{fmt_rate(logits / row['cpu'])}exp/s")
                out.append(f"| probe: {probe[len('roofline_'):]} ({key[1]}) | {fmt_time(row['cpu'])} | "
                           f"{fmt_time(row['cpu'])} | {fmt_time(row['real'])} | {what} | | | | | "
                           f"{row['spread'] * 100:.0f}% |")
        out.append("")

        # Agreement between implementations (the same loss and gradient, computed after timing).
        losses = {k[1]: rows[k]["counters"]["loss"] for k in keys
                  if k[0] == "kd_fwdbwd" and "loss" in rows[k]["counters"]}
        grads = {k[1]: rows[k]["counters"]["grad_abs_sum"] for k in keys
                 if k[0] == "kd_fwdbwd" and "grad_abs_sum" in rows[k]["counters"]}
        if losses:
            ref = losses.get("naive", next(iter(losses.values())))
            gref = grads.get("naive", next(iter(grads.values()))) if grads else None
            worst_l = max(abs(v - ref) / abs(ref) for v in losses.values()) if ref else 0.0
            worst_g = (max(abs(v - gref) / abs(gref) for v in grads.values())
                       if gref else 0.0)
            out.append(f"Agreement (fwd+bwd rows vs the naive double loop): loss {ref:.6g}, "
                       f"largest relative difference {worst_l:.1e}; sum |grad| {gref:.6g}, "
                       f"largest relative difference {worst_g:.1e}.\n")

        best = rows.get(("kd_fwdbwd", f"lskd_{arch}", b, c))
        fwd = rows.get(("kd_forward", f"lskd_{arch}", b, c))
        two = rows.get(("kd_fwdbwd", f"lskd_{arch}_2threads", b, c))
        torch = rows.get(("kd_fwdbwd", "libtorch", b, c))
        summary.append({
            "shape": shape,
            "vs_torch": timed(torch) / timed(best) if best and torch else None,
            "roof": rl["kd_fwdbwd"]["time"] / timed(best) if best and rl["kd_fwdbwd"] else None,
            "two": best["real"] / two["real"] if best and two else None,
            "two_cpu": 2.0 * best["cpu"] / two["cpu"] if best and two else None,
            "fwd_share": timed(fwd) / timed(best) if best and fwd else None,
            "roof_share": (rl["kd_forward"]["time"] / rl["kd_fwdbwd"]["time"]
                           if rl["kd_forward"] and rl["kd_fwdbwd"] else None),
            "extra": best["counters"].get("extra_bytes") if best else None,
            "extra2": two["counters"].get("extra_bytes") if two else None,
        })

    out.append(f"## Targets (lskd {arch}, float)\n")
    out.append("| shape | fwd+bwd vs libtorch (>= 50x) | % roofline (>= 70%) | "
               "2 threads / 1 thread, wall (>= 1.8x for B >= 64) | 2 x CPU(1 thread) / process "
               "CPU(2 threads), spin-waiting included | forward / fwd+bwd time (roofline says) | "
               "extra heap, 1 thread / 2 threads |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")

    def mark(value, goal, fmt, applies=True):
        if value is None:
            return "n/a"
        if not applies:
            return fmt.format(value) + " (target n/a)"
        return fmt.format(value) + (" yes" if value >= goal else " **no**")

    for s in summary:
        b, c = s["shape"]
        out.append(
            f"| {b} x {c} | {mark(s['vs_torch'], 50, '{:.1f}x')} | "
            f"{mark(s['roof'] * 100 if s['roof'] else None, 70, '{:.0f}%')} | "
            f"{mark(s['two'], 1.8, '{:.2f}x', b >= 64)} | "
            f"{'n/a' if s['two_cpu'] is None else format(s['two_cpu'], '.2f') + 'x'} | "
            f"{s['fwd_share']:.2f} ({s['roof_share']:.2f}) | "
            f"{fmt_bytes(s['extra']) if s['extra'] is not None else 'n/a'} / "
            f"{fmt_bytes(s['extra2']) if s['extra2'] is not None else 'n/a'} |"
            if s["fwd_share"] is not None and s["roof_share"] is not None else
            f"| {b} x {c} | incomplete | | | | | |")
    out.append("")
    for spec in args.threads_json or []:
        title, _, json_path = spec.rpartition("=")
        _, extra = load_runs(json_path)
        out.append(f"### Threads: {title}\n")
        out.append(f"From `{json_path.split('/')[-1]}`. Wall-clock and CPU medians of lskd {arch} "
                   "fwd+bwd; the 2-thread CPU is the whole process's.\n")
        out.append("| shape | 1 thread wall | 2 threads wall | speed-up (wall) | 1 thread CPU | "
                   "2 threads process CPU | CPU added by threading |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for shape in shapes_of(extra):
            b, c = shape
            one = extra.get(("kd_fwdbwd", f"lskd_{arch}", b, c))
            two = extra.get(("kd_fwdbwd", f"lskd_{arch}_2threads", b, c))
            if not one or not two:
                continue
            out.append(f"| {b} x {c} | {fmt_time(one['real'])} | {fmt_time(two['real'])} | "
                       f"{one['real'] / two['real']:.2f}x | {fmt_time(one['cpu'])} | "
                       f"{fmt_time(two['cpu'])} | {(two['cpu'] / one['cpu'] - 1) * 100:+.0f}% |")
        out.append("")
    if args.analysis:
        with open(args.analysis, encoding="utf-8") as f:
            out.append(f.read().rstrip() + "\n")
    out.append("![throughput against classes](benchmarks.png)\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(out))


def write_plot(path, context, rows):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arch = best_arch(context, rows)
    fig, ax = plt.subplots(figsize=(9, 6))
    series = defaultdict(list)
    for (op, impl, b, c), row in rows.items():
        if op == "kd_fwdbwd" or (op == "kd_forward" and impl == f"lskd_{arch}"):
            series[(op, impl)].append((c, b, b * c / timed(row)))
    # Lines join one shape per class count (the smallest batch); a shape that shares its class
    # count with a smaller one (2048 x 32000, out of cache) is drawn as hollow markers.
    def split(points):
        points = sorted(points, key=lambda p: (p[0], p[1]))
        joined, apart, seen = [], [], set()
        for p in points:
            (apart if p[0] in seen else joined).append(p)
            seen.add(p[0])
        return joined, apart

    for (op, impl) in sorted(series, key=lambda k: (k[0] != "kd_fwdbwd", impl_order(k[1]))):
        joined, apart = split(series[(op, impl)])
        style = "--" if op == "kd_forward" else "-"
        name = label(op, impl)
        if impl.endswith("_2threads"):
            name += " (wall clock: see the threads note)"
        line, = ax.plot([p[0] for p in joined], [p[2] for p in joined], style, marker="o",
                        label=name)
        if apart:
            ax.plot([p[0] for p in apart], [p[2] for p in apart], linestyle="none", marker="o",
                    markerfacecolor="none", markersize=9, color=line.get_color())
    roof = []
    for shape in shapes_of(rows):
        r = roofline(rows, shape, "kd_fwdbwd", arch)
        if r:
            roof.append((shape[1], shape[0], shape[0] * shape[1] / r["time"]))
    if roof:
        joined, apart = split(roof)
        ax.plot([p[0] for p in joined], [p[2] for p in joined], "k-", linewidth=3, alpha=0.4,
                label=f"roofline, fwd+bwd ({arch})")
        ax.plot([p[0] for p in apart], [p[2] for p in apart], "k_", markersize=22,
                markeredgewidth=3, alpha=0.4)
        for c, b, y in roof:
            ax.annotate(f"{b}x{c}", (c, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.plot([], [], linestyle="none", marker="o", markerfacecolor="none", color="gray",
            label="hollow: same C, larger batch (out of cache)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("classes C (shapes B x C annotated on the roofline)")
    ax.set_ylabel("logits per second (median; 1 thread CPU time, 2 threads wall)")
    ax.set_title("KD loss with logit standardization, float: throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="lskd_bench --benchmark_out=... (JSON)")
    parser.add_argument("--md", default="docs/benchmarks.md")
    parser.add_argument("--png", default="docs/benchmarks.png")
    parser.add_argument("--command", help="the command line that produced the JSON")
    parser.add_argument("--note", action="append", help="a line for the context section")
    parser.add_argument("--analysis", help="a Markdown file appended after the targets table")
    parser.add_argument("--threads-json", action="append", metavar="TITLE=PATH",
                        help="another lskd_bench JSON (e.g. run with OMP_WAIT_POLICY=passive) "
                             "whose 1- and 2-thread lskd rows get a table of their own")
    args = parser.parse_args()
    context, rows = load_runs(args.json)
    if not rows:
        sys.exit(f"{args.json}: no lskd_bench rows found")
    write_markdown(args.md, context, rows, args)
    if args.png:
        write_plot(args.png, context, rows)


if __name__ == "__main__":
    main()
