#!/usr/bin/env python3
"""Turns a bench/compare-etcd.sh results directory into results.md and chart.svg.

Reads meta.txt, cases.csv, rss.csv and the per-run JSON files the script wrote (see its
header) and prints the markdown table. Standard library only, so it runs wherever the
script does. Usage: python3 bench/compare_report.py RESULTS_DIR
"""
import csv
import json
import os
import sys

CASE_LABELS = {
    "put-1": "put, 1 client",
    "put-64": "put, 64 clients",
    "put-256": "put, 256 clients",
    "get-64": "linearizable get, 64 clients",
}
SYSTEMS = ("raftkv", "etcd")
MEMBERS = {"raftkv": ("r1", "r2", "r3"), "etcd": ("e1", "e2", "e3")}


def read_meta(d):
    meta = {}
    with open(os.path.join(d, "meta.txt")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    return meta


def read_samples(d):
    with open(os.path.join(d, "rss.csv")) as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in r.items()} for r in rows]


def peak_sum_mib(samples, system, start, end):
    """The largest total RSS of a system's three members sampled in [start, end]."""
    sums = [sum(s[m] for m in MEMBERS[system]) for s in samples if start <= s["secs"] <= end]
    return max(sums) / 1024 if sums else float("nan")


def runs(d, meta, samples):
    """One record per (case, mode, system) run."""
    tck = float(meta["clk_tck"])
    out = {}
    with open(os.path.join(d, "cases.csv")) as f:
        for row in csv.DictReader(f):
            key = (row["case"], row["mode"], row["sys"])
            with open(os.path.join(d, f"{row['case']}-{row['mode']}-{row['sys']}.json")) as j:
                res = json.load(j)
            start, end = float(row["start"]), float(row["end"])
            cpu_secs = (int(row["ticks_after"]) - int(row["ticks_before"])) / tck
            out[key] = {
                "ops_s": res["ops_per_sec"],
                "ops": res["ops"],
                "errors": res["errors"],
                "lat": res["latency_ms"],
                "cpu_us_op": 1e6 * cpu_secs / max(res["ops"], 1),
                "cores": cpu_secs / max(end - start, 1e-9),
                "rss_mib": peak_sum_mib(samples, row["sys"], start, end),
                "load": (row["load_before"], row["load_after"]),
            }
    return out


def table(r):
    head = (
        "| case | connections | raftkv ops/s | etcd ops/s | ratio "
        "| raftkv p50 / p99 / max ms | etcd p50 / p99 / max ms "
        "| raftkv CPU µs/op | etcd CPU µs/op | CPU ratio "
        "| raftkv / etcd peak RSS MiB (3 members) | load 1 min |"
    )
    lines = [head, "|" + "---|" * 12]
    for case, label in CASE_LABELS.items():
        for mode in ("spread", "leader"):
            a, b = r.get((case, mode, "raftkv")), r.get((case, mode, "etcd"))
            if not a or not b:
                continue
            lat = lambda x: f"{x['lat']['p50']:.2f} / {x['lat']['p99']:.1f} / {x['lat']['max']:.0f}"
            errs = "" if a["errors"] + b["errors"] == 0 else f" (errors {a['errors']}/{b['errors']})"
            lines.append(
                f"| {label}{errs} | {'all members' if mode == 'spread' else 'leader only'} "
                f"| {a['ops_s']:.0f} | {b['ops_s']:.0f} | {a['ops_s'] / max(b['ops_s'], 1e-9):.2f}× "
                f"| {lat(a)} | {lat(b)} "
                f"| {a['cpu_us_op']:.0f} | {b['cpu_us_op']:.0f} "
                f"| {a['cpu_us_op'] / max(b['cpu_us_op'], 1e-9):.2f}× "
                f"| {a['rss_mib']:.0f} / {b['rss_mib']:.0f} | {a['load'][1]} / {b['load'][1]} |"
            )
    return lines


def memory(meta, samples):
    idle_at = float(meta["idle_at"])
    lines = ["| memory | raftkv | etcd |", "|---|---|---|"]
    hwm = {s: [int(x) / 1024 for x in meta[f"{s[0]}_hwm"].split()] for s in SYSTEMS}
    whole = {s: peak_sum_mib(samples, s, 0, float("inf")) for s in SYSTEMS}
    idle = {}
    for s in SYSTEMS:
        after = [x for x in samples if x["secs"] >= idle_at]
        last = after[-1] if after else samples[-1]
        idle[s] = [last[m] / 1024 for m in MEMBERS[s]]
    fmt = lambda v: " / ".join(f"{x:.0f}" for x in v)
    lines.append(f"| peak RSS of the 3 members together, MiB (sampled every 100 ms) | {whole['raftkv']:.0f} | {whole['etcd']:.0f} |")
    lines.append(f"| peak RSS of each member, MiB (VmHWM) | {fmt(hwm['raftkv'])} | {fmt(hwm['etcd'])} |")
    lines.append(f"| RSS of each member after {meta.get('idle_secs', '10')} s idle, MiB | {fmt(idle['raftkv'])} | {fmt(idle['etcd'])} |")
    return lines


def svg(r):
    """Two panels of grouped bars: ops/s and server CPU µs per operation, per case."""
    groups = [(c, m) for c in CASE_LABELS for m in ("spread", "leader")
              if (c, m, "raftkv") in r and (c, m, "etcd") in r]
    colors = {"raftkv": "#4a7ab8", "etcd": "#d9822b"}
    w, panel_h, left, top, gap = 900, 220, 70, 40, 70
    gw = (w - left - 20) / max(len(groups), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{top + 2 * (panel_h + gap) + 10}" '
           'font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="16" font-size="14">raftkv vs etcd 3.4, 3 members each '
           '(s: connections spread over all members, l: leader only)</text>']
    for k, s in enumerate(SYSTEMS):
        out.append(f'<rect x="{w - 180 + k * 80}" y="6" width="12" height="12" fill="{colors[s]}"/>'
                   f'<text x="{w - 164 + k * 80}" y="16">{s}</text>')
    for p, (field, title) in enumerate((("ops_s", "ops/s (higher is better)"),
                                        ("cpu_us_op", "server CPU µs per op, 3 members (lower is better)"))):
        y0 = top + p * (panel_h + gap)
        vmax = max([r[(c, m, s)][field] for c, m in groups for s in SYSTEMS] + [1e-9])
        out.append(f'<text x="{left}" y="{y0 + 10}" font-size="12">{title}</text>')
        base = y0 + panel_h
        out.append(f'<line x1="{left}" y1="{base}" x2="{w - 20}" y2="{base}" stroke="#888"/>')
        out.append(f'<text x="{left - 6}" y="{y0 + 24}" text-anchor="end">{vmax:.0f}</text>')
        out.append(f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>')
        for g, (c, m) in enumerate(groups):
            gx = left + g * gw
            for k, s in enumerate(SYSTEMS):
                v = r[(c, m, s)][field]
                bh = (panel_h - 20) * v / vmax
                x = gx + 6 + k * (gw - 12) / 2
                out.append(f'<rect x="{x:.1f}" y="{base - bh:.1f}" width="{(gw - 12) / 2 - 2:.1f}" '
                           f'height="{bh:.1f}" fill="{colors[s]}"><title>{s} {c} {m}: {v:.0f}</title></rect>')
            out.append(f'<text x="{gx + gw / 2:.1f}" y="{base + 14}" text-anchor="middle">'
                       f'{c} {m[0]}</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def main():
    d = sys.argv[1]
    meta = read_meta(d)
    samples = read_samples(d)
    r = runs(d, meta, samples)
    md = [
        f"raftkv {meta['raftkv']} vs etcd {meta['etcd']}, 3 members each on loopback, "
        f"{meta['keys']} keys, 256-byte values, {meta['secs']} s per case, alternating; "
        f"{meta['date']}, {meta['cpu']}, {meta['kernel']}.",
        "CPU µs/op: utime+stime of the three members over the case divided by its operations.",
        "",
        *table(r),
        "",
        *memory(meta, samples),
        "",
    ]
    text = "\n".join(md)
    with open(os.path.join(d, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(d, "chart.svg"), "w") as f:
        f.write(svg(r))
    print(text)


if __name__ == "__main__":
    main()
