#!/usr/bin/python3
"""Plots scripts/overload-soak.sh output as hand-written SVG (stdlib only).

Reads <dir>/overload.csv, <dir>/soak.csv and <dir>/phase-markers.txt
(whichever exist), writes <dir>/overload.svg and <dir>/soak.svg and prints
the summary figures quoted in docs/reliability.md ("Overload").
"""

import argparse
import csv
import math
import os
import sys

MIB = 1024.0 * 1024.0
WIDTH = 900
PANEL_H = 170
MARGIN_L, MARGIN_R, MARGIN_T, GAP = 70, 20, 30, 45
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        try:
            out.append({k: (v if k == "phase" else float(v))
                        for k, v in r.items()})
        except (TypeError, ValueError):
            continue  # a row cut short by the sampler being stopped
    return out


def read_markers(path):
    if not os.path.exists(path):
        return []
    markers = []
    with open(path) as f:
        for line in f:
            t, _, label = line.strip().partition(",")
            if label:
                markers.append((float(t), label))
    return markers


def nice_max(v):
    """Smallest 1/2/5 x 10^k at or above v (axis top)."""
    if v <= 0:
        return 1.0
    p = 1.0
    while p * 10 <= v:
        p *= 10
    while p > v:
        p /= 10
    for m in (1, 2, 5, 10):
        if m * p >= v:
            return m * p
    return 10 * p


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Svg:
    def __init__(self, panels, title):
        self.height = MARGIN_T + panels * (PANEL_H + GAP) + 10
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
            f'height="{self.height}" font-family="sans-serif" font-size="11">',
            f'<rect width="{WIDTH}" height="{self.height}" fill="white"/>',
            f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" '
            f'font-size="14">{esc(title)}</text>',
        ]

    def panel(self, index, t0, t1, series, ylabel, markers=(), log=False):
        """series: list of (label, [(t, y)]); one shared y axis from 0.

        log: axis log10(1 + y), so that a few refusals per second show
        next to thousands.
        """
        top = MARGIN_T + index * (PANEL_H + GAP)
        left, right = MARGIN_L, WIDTH - MARGIN_R
        vmax = max([y for _, pts in series for _, y in pts] + [0])
        ymax = nice_max(vmax)
        if log:
            decades = max(1, math.ceil(math.log10(1 + vmax)))
        span = max(t1 - t0, 1e-9)

        def x(t):
            return left + (t - t0) / span * (right - left)

        def y(v):
            if log:
                return top + PANEL_H - math.log10(1 + v) / decades * PANEL_H
            return top + PANEL_H - v / ymax * PANEL_H

        p = self.parts
        p.append(f'<rect x="{left}" y="{top}" width="{right - left}" '
                 f'height="{PANEL_H}" fill="none" stroke="#888"/>')
        ticks = ([0] + [10**k for k in range(1, decades + 1)] if log else
                 [ymax * i / 4 for i in range(5)])
        for v in ticks:
            p.append(f'<line x1="{left}" x2="{right}" y1="{y(v):.1f}" '
                     f'y2="{y(v):.1f}" stroke="#eee"/>')
            p.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" '
                     f'text-anchor="end">{v:g}</text>')
        for i in range(6):
            t = t0 + span * i / 5
            p.append(f'<text x="{x(t):.1f}" y="{top + PANEL_H + 14}" '
                     f'text-anchor="middle">{t - t0:.0f} s</text>')
        p.append(f'<text x="14" y="{top + PANEL_H / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + PANEL_H / 2})">'
                 f'{esc(ylabel)}</text>')
        for m, (t, label) in enumerate(markers):
            if t0 <= t <= t1:
                p.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" '
                         f'y2="{top + PANEL_H}" stroke="#999" '
                         f'stroke-dasharray="4,3"/>')
                if index == 0:
                    p.append(f'<text x="{x(t) + 3:.1f}" '
                             f'y="{top + 12 + 12 * (m % 2)}">'
                             f'{esc(label)}</text>')
        for k, (label, pts) in enumerate(series):
            color = COLORS[k % len(COLORS)]
            # A gap in time (a server restart between phases) breaks the line.
            segs, cur, last = [], [], None
            for t, v in pts:
                if last is not None and t - last > 5:
                    segs.append(cur)
                    cur = []
                cur.append(f"{x(t):.1f},{y(v):.1f}")
                last = t
            segs.append(cur)
            for s in segs:
                if s:
                    p.append(f'<polyline fill="none" stroke="{color}" '
                             f'stroke-width="1.5" points="{" ".join(s)}"/>')
            p.append(f'<text x="{right - 8}" y="{top + 14 + 13 * k}" '
                     f'text-anchor="end" fill="{color}">{esc(label)}</text>')

    def write(self, path):
        with open(path, "w") as f:
            f.write("\n".join(self.parts + ["</svg>"]) + "\n")


def series(rows, key, scale=1.0):
    return [(r["t_s"], r[key] / scale) for r in rows]


def plot_overload(rows, markers, path):
    t0, t1 = rows[0]["t_s"], rows[-1]["t_s"]
    # Markers are relative to the script start, like t_s; shift to t0.
    svg = Svg(3, "kvsketch overload: sessions, memory, message rate")
    svg.panel(0, t0, t1, [("RSS MiB", series(rows, "rss_bytes", MIB)),
                          ("state MiB", series(rows, "state_bytes", MIB))],
              "MiB", markers)
    svg.panel(1, t0, t1, [("RESOURCE_EXHAUSTED / s",
                           series(rows, "resource_exhausted_per_s"))],
              "errors / s (log)", markers, log=True)
    svg.panel(2, t0, t1, [("Decode steps / s",
                           series(rows, "steps_per_s"))], "steps / s",
              markers)
    svg.write(path)


def plot_soak(rows, path):
    t0, t1 = rows[0]["t_s"], rows[-1]["t_s"]
    svg = Svg(2, "kvsketch soak: RSS and state bytes, sessions created and "
              "deleted every run")
    svg.panel(0, t0, t1, [("RSS MiB", series(rows, "rss_bytes", MIB)),
                          ("state MiB", series(rows, "state_bytes", MIB))],
              "MiB")
    svg.panel(1, t0, t1, [("sessions", series(rows, "sessions")),
                          ("steps/s / 100",
                           series(rows, "steps_per_s", 100.0))],
              "sessions, steps/s / 100")
    svg.write(path)


def summarize_overload(rows):
    for phase in ("sessions", "memory", "rate"):
        pr = [r for r in rows if r["phase"] == phase]
        if not pr:
            continue
        print(f"{phase}: {len(pr)} s sampled, RSS max "
              f"{max(r['rss_bytes'] for r in pr) / MIB:.1f} MiB, state max "
              f"{max(r['state_bytes'] for r in pr) / MIB:.1f} MiB, "
              f"RESOURCE_EXHAUSTED total "
              f"{pr[-1]['resource_exhausted_total']:.0f}, UNAVAILABLE "
              f"{pr[-1]['unavailable_total']:.0f}, other "
              f"{pr[-1]['other_errors_total']:.0f}, steps/s max "
              f"{max(r['steps_per_s'] for r in pr):.0f}, last 5 s errors/s "
              f"{[int(r['resource_exhausted_per_s']) for r in pr[-5:]]}")


def summarize_soak(rows):
    n = len(rows)
    if n < 8:
        print(f"soak: only {n} samples")
        return
    # Steady state starts once the first run's sessions exist and decode:
    # skip the first 10% (allocator pools, gRPC buffers warming up).
    steady = rows[n // 10:]
    q = max(1, len(steady) // 4)
    first_q, last_q = steady[:q], steady[-q:]

    def mib(rs, key, f):
        return f(r[key] for r in rs) / MIB

    print(f"soak: {rows[-1]['t_s'] - rows[0]['t_s']:.0f} s, {n} samples; "
          f"RSS first sample {rows[0]['rss_bytes'] / MIB:.1f} MiB; "
          f"steady first quarter max {mib(first_q, 'rss_bytes', max):.1f} "
          f"MiB, last quarter max {mib(last_q, 'rss_bytes', max):.1f} MiB, "
          f"overall max {mib(rows, 'rss_bytes', max):.1f} MiB, final "
          f"{rows[-1]['rss_bytes'] / MIB:.1f} MiB; state max "
          f"{mib(rows, 'state_bytes', max):.1f} MiB, final state "
          f"{rows[-1]['state_bytes'] / MIB:.1f} MiB; errors "
          f"{rows[-1]['resource_exhausted_total'] + rows[-1]['unavailable_total'] + rows[-1]['other_errors_total']:.0f}; "
          f"mean steps/s {sum(r['steps_per_s'] for r in rows) / n:.0f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default="docs/reliability")
    args = ap.parse_args()
    overload = read_csv(os.path.join(args.dir, "overload.csv"))
    soak = read_csv(os.path.join(args.dir, "soak.csv"))
    markers = read_markers(os.path.join(args.dir, "phase-markers.txt"))
    if not overload and not soak:
        print(f"no overload.csv or soak.csv in {args.dir}", file=sys.stderr)
        return 1
    if len(overload) >= 2:
        plot_overload(overload, markers, os.path.join(args.dir,
                                                      "overload.svg"))
        summarize_overload(overload)
    if len(soak) >= 2:
        plot_soak(soak, os.path.join(args.dir, "soak.svg"))
        summarize_soak(soak)
    return 0


if __name__ == "__main__":
    sys.exit(main())
