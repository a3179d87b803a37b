#!/usr/bin/python3
"""Renders the accuracy report from the raw runs of scripts/accuracy-report.sh.

Reads  DIR/fidelity/seed*.json  (`kvsketch llama --compare --json`, one per
                                 seed; rows: the local exact reference, then
                                 the specs of specs.tsv in order)
       DIR/eval/seed*/eval.json  (`kvsketch eval --trace`, rows by label)
       DIR/run.json              (machine, date, command, timings)
Writes DIR/fidelity.csv, DIR/eval.csv (per seed and mean rows),
       DIR/fidelity_kl.svg, DIR/fidelity_agreement.svg, DIR/eval_error.svg
       (quality against state bytes, one curve per approximator), and
       DIR/README.md from README.md.in beside this file ({{NAME}} fields).
Python standard library only (no plotting package is a dependency).
"""

import argparse
import csv
import glob
import io
import json
import math
import os
import re
import statistics
import sys


def fail(msg):
    sys.exit(f"render.py: {msg}")


def read_specs(path):
    """(curve, spec, point label) in file order; '#' lines are comments."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                fail(f"{path}:{n}: expected 'curve<TAB>spec[<TAB>label]', "
                     f"got {line!r}")
            out.append((parts[0], parts[1], parts[2] if len(parts) > 2
                        else ""))
    if not out or out[0][:2] != ("exact", "exact"):
        fail(f"{path}: the first spec must be 'exact<TAB>exact' (reference)")
    return out


def seed_of(path):
    m = re.search(r"seed(\d+)", path)
    return int(m.group(1)) if m else -1


def load_fidelity(directory, specs):
    """{spec: [row per seed]} with 'seed' added; checks the row order."""
    files = sorted(glob.glob(os.path.join(directory, "fidelity", "seed*.json")),
                   key=seed_of)
    if not files:
        fail(f"no {directory}/fidelity/seed*.json")
    by_spec = {s: [] for _, s, _ in specs}
    meta = None
    for path in files:
        with open(path) as f:
            run = json.load(f)
        rows = run["rows"]
        if len(rows) != len(specs) or not rows[0]["reference"]:
            fail(f"{path}: {len(rows)} rows, expected the reference + "
                 f"{len(specs) - 1} specs of specs.tsv (stale run?)")
        for (_, spec, _), row in zip(specs, rows):
            row = dict(row, seed=run["seed"], label=spec)
            by_spec[spec].append(row)
        meta = {k: run[k] for k in ("model", "tokens", "temperature",
                                    "prompt_len")}
    return by_spec, meta, [seed_of(p) for p in files]


def load_eval(directory, specs):
    files = sorted(glob.glob(os.path.join(directory, "eval", "seed*",
                                          "eval.json")), key=seed_of)
    if not files:
        fail(f"no {directory}/eval/seed*/eval.json")
    by_spec = {s: [] for _, s, _ in specs}
    for path in files:
        with open(path) as f:
            rows = json.load(f)["results"]
        labels = {r["label"]: r for r in rows}
        for _, spec, _ in specs:
            if spec not in labels:
                fail(f"{path}: no row for spec {spec!r} (stale run?)")
            by_spec[spec].append(dict(labels[spec], seed=seed_of(path)))
    return by_spec


def load_calibrate(directory):
    """Per layer: k_tau at the largest prefix over heads and seeds."""
    files = sorted(glob.glob(os.path.join(directory, "calibrate",
                                          "seed*.json")), key=seed_of)
    if not files:
        fail(f"no {directory}/calibrate/seed*.json")
    per_layer, fits, tau, n = {}, {}, None, 0
    for path in files:
        with open(path) as f:
            run = json.load(f)
        tau = run["tau"]
        last = max(s["n"] for s in run["samples"])
        n = max(n, last)
        for s in run["samples"]:
            if s["n"] == last:
                per_layer.setdefault(s["layer"], []).append(s["k_tau"])
        for fit in run["fits"]:
            fits.setdefault(fit["layer"], []).append(fit["c"])
    rows = []
    for layer in sorted(per_layer):
        k = sorted(per_layer[layer])
        rows.append({"layer": layer, "heads": len(k), "k_min": k[0],
                     "k_median": statistics.median(k), "k_max": k[-1],
                     "c_median": statistics.median(fits[layer])})
    return rows, tau, n


def calibrate_table(rows):
    out = ["| layer | (head, seed) pairs | k_τ median | k_τ min | k_τ max "
           "| fitted C median |", "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['layer']} | {r['heads']} | {r['k_median']:.0f} "
                   f"| {r['k_min']:.0f} | {r['k_max']:.0f} "
                   f"| {r['c_median']:.2f} |")
    return "\n".join(out)


def geo_mean(xs):
    return math.exp(statistics.fmean(math.log(x) for x in xs))


def summarize_fidelity(specs, by_spec):
    ref = by_spec["exact"]
    ref_tps = {r["seed"]: r["tokens_per_s"] for r in ref}
    out = []
    for curve, spec, point in specs:
        rows = by_spec[spec]
        kls = [r["mean_kl"] for r in rows]
        out.append({
            "curve": curve, "spec": spec, "point": point,
            "canonical": rows[0]["spec"],
            "seeds": len(rows),
            "positions": sum(r["positions"] for r in rows),
            "greedy_agreement": statistics.fmean(
                r["greedy_agreement"] for r in rows),
            "agreement_min": min(r["greedy_agreement"] for r in rows),
            "mean_kl": statistics.fmean(kls),
            "kl_min": min(kls), "kl_max": max(kls),
            # Equal positions per seed: exp(mean NLL) over all of them.
            "perplexity": geo_mean([r["perplexity"] for r in rows]),
            "state_bytes": statistics.fmean(r["state_bytes"] for r in rows),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
            # Ratio to the reference of the same run (same machine load).
            "speed_vs_exact": statistics.median(
                r["tokens_per_s"] / ref_tps[r["seed"]] for r in rows),
        })
    ref_bytes = out[0]["state_bytes"]
    for r in out:
        r["bytes_vs_exact"] = r["state_bytes"] / ref_bytes
    return out


def summarize_eval(specs, by_spec):
    out = []
    for curve, spec, point in specs:
        rows = by_spec[spec]
        fit = [r["self_fit_error_mean"] for r in rows
               if r["self_fit_error_mean"] is not None]
        recall = [r["self_recall_mean"] for r in rows
                  if r["self_recall_mean"] is not None]
        out.append({
            "curve": curve, "spec": spec, "point": point, "seeds": len(rows),
            "query_rows": sum(r["query_rows"] for r in rows),
            "rel_l2_mean": statistics.fmean(r["rel_l2_mean"] for r in rows),
            "rel_l2_max": max(r["rel_l2_max"] for r in rows),
            "cosine_mean": statistics.fmean(r["cosine_mean"] for r in rows),
            "cosine_min": min(r["cosine_min"] for r in rows),
            "state_bytes": statistics.fmean(r["state_bytes"] for r in rows),
            "prefill_us_per_token": statistics.median(
                r["prefill_us_per_token"] for r in rows),
            "fit_error": statistics.fmean(fit) if fit else None,
            "fallbacks": sum(r["self_fit_fallbacks"] for r in rows),
            "recall": statistics.fmean(recall) if recall else None,
        })
    return out


def write_csv(path, fields, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore",
                           lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k))
                        for k in fields})


def kib(b):
    return f"{b / 1024:.1f} KiB" if b < 1 << 20 else f"{b / (1 << 20):.2f} MiB"


def fidelity_table(rows):
    out = ["| curve | spec | greedy agreement | mean KL (nats), seed range "
           "| perplexity | state | state × exact | tokens/s | speed × exact |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ref = " (reference)" if r is rows[0] else ""
        out.append(
            f"| {r['curve']} | `{r['spec']}`{ref} | {r['greedy_agreement']:.3f} "
            f"| {r['mean_kl']:.3g} ({r['kl_min']:.2g}–{r['kl_max']:.2g}) "
            f"| {r['perplexity']:.2f} | {kib(r['state_bytes'])} "
            f"| {r['bytes_vs_exact']:.2f} | {r['tokens_per_s']:.0f} "
            f"| {r['speed_vs_exact']:.2f} |")
    return "\n".join(out)


def eval_table(rows):
    out = ["| curve | spec | rel L2 mean | rel L2 max | cos mean | cos min "
           "| state | prefill µs/tok | self-check |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        checks = []
        if r["fit_error"] is not None:
            checks.append(f"fit err {r['fit_error']:.2f}, "
                          f"{r['fallbacks']} exact fallbacks")
        if r["recall"] is not None:
            checks.append(f"recall {r['recall']:.2f}")
        out.append(
            f"| {r['curve']} | `{r['spec']}` | {r['rel_l2_mean']:.3g} "
            f"| {r['rel_l2_max']:.3g} | {r['cosine_mean']:.4f} "
            f"| {r['cosine_min']:.3f} | {kib(r['state_bytes'])} "
            f"| {r['prefill_us_per_token']:.1f} | {'; '.join(checks) or '–'} |")
    return "\n".join(out)


# ---- SVG ------------------------------------------------------------------

COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
          "#000000", "#8c564b", "#7f7f7f", "#17becf", "#bcbd22"]
W, H, LEFT, RIGHT, TOP, BOTTOM = 860, 500, 80, 200, 40, 60


def esc(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def log_axis(values):
    lo = math.floor(math.log10(min(values)))
    hi = math.ceil(math.log10(max(values)))
    if hi == lo:
        hi += 1
    return lo, hi, [10.0 ** e for e in range(lo, hi + 1)]


def lin_axis(values):
    lo, hi = min(0.0, min(values)), max(1.0, max(values))
    return lo, hi, [lo + (hi - lo) * i / 5 for i in range(6)]


def svg_plot(title, x_label, y_label, series, log_y, note="", y_floor=None):
    """series: [(name, [(x, y, label), ...])]; x on a log axis, y below
    y_floor dropped (non-positive ones on a log y axis). Points of one series
    are joined in x order; a non-empty label is written beside its point."""
    def drawable(x, y):
        return x > 0 and (y > 0 or not log_y) and (y_floor is None or
                                                   y >= y_floor)
    pts = [(x, y) for _, p in series for x, y, _ in p if drawable(x, y)]
    if not pts:
        fail(f"plot {title!r}: no drawable point")
    xlo, xhi, xticks = log_axis([x for x, _ in pts])
    if log_y:
        ylo, yhi, yticks = log_axis([y for _, y in pts])
    else:
        ylo, yhi, yticks = lin_axis([y for _, y in pts])
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x):
        return LEFT + (math.log10(x) - xlo) / (xhi - xlo) * pw

    def py(y):
        t = (math.log10(y) - ylo) / (yhi - ylo) if log_y else \
            (y - ylo) / (yhi - ylo)
        return TOP + (1 - t) * ph

    o = io.StringIO()
    o.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" '
            f'height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" '
            f'font-size="12">\n<rect width="{W}" height="{H}" fill="white"/>\n')
    o.write(f'<text x="{LEFT + pw / 2}" y="22" text-anchor="middle" '
            f'font-size="15">{esc(title)}</text>\n')
    for t in xticks:
        x = px(t)
        o.write(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" '
                f'stroke="#ddd"/>\n<text x="{x:.1f}" y="{TOP + ph + 16}" '
                f'text-anchor="middle">{esc(tick(t))}</text>\n')
    for t in yticks:
        y = py(t)
        label = tick(t) if log_y else f"{t:g}"
        o.write(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" '
                f'y2="{y:.1f}" stroke="#ddd"/>\n<text x="{LEFT - 6}" '
                f'y="{y + 4:.1f}" text-anchor="end">{esc(label)}</text>\n')
    o.write(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" '
            f'fill="none" stroke="#444"/>\n')
    o.write(f'<text x="{LEFT + pw / 2}" y="{H - 22}" text-anchor="middle">'
            f'{esc(x_label)}</text>\n')
    o.write(f'<text transform="translate(18,{TOP + ph / 2}) rotate(-90)" '
            f'text-anchor="middle">{esc(y_label)}</text>\n')
    if note:
        o.write(f'<text x="{LEFT}" y="{H - 6}" font-size="11" fill="#555">'
                f'{esc(note)}</text>\n')
    legend = 0
    for i, (name, points) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        good = sorted(p for p in points if drawable(p[0], p[1]))
        if not good:
            continue  # named in the note instead
        if len(good) > 1:
            d = " ".join(f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}"
                         for j, (x, y, _) in enumerate(good))
            o.write(f'<path d="{d}" fill="none" stroke="{color}" '
                    f'stroke-width="1.8"/>\n')
        for x, y, label in good:
            o.write(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" '
                    f'fill="{color}"><title>{esc(name)} {esc(label)}: '
                    f'x={x:.4g}, y={y:.4g}</title></circle>\n')
            # Only points stacked at about the same state need a label;
            # along a curve that moves in x, B grows left to right.
            stacked = any(abs(math.log10(x2 / x)) < 0.08 and
                          (x2, y2) != (x, y) for x2, y2, _ in good)
            if label and stacked:
                # Alternate above / below so neighbouring curves' labels
                # do not overprint each other.
                dy = -5 if i % 2 == 0 else 13
                o.write(f'<text x="{px(x) + 6:.1f}" y="{py(y) + dy:.1f}" '
                        f'font-size="10" fill="{color}">{esc(label)}</text>\n')
        ly = TOP + 10 + 20 * legend
        legend += 1
        lx = LEFT + pw + 14
        o.write(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" '
                f'stroke="{color}" stroke-width="2.5"/>\n<circle '
                f'cx="{lx + 12}" cy="{ly}" r="3.5" fill="{color}"/>\n'
                f'<text x="{lx + 30}" y="{ly + 4}">{esc(name)}</text>\n')
    o.write("</svg>\n")
    return o.getvalue()


def tick(v):
    e = round(math.log10(v))
    if abs(v - 10.0 ** e) > 1e-9 * v:
        return f"{v:g}"
    if -2 <= e <= 3:
        return f"{v:g}"
    return f"1e{e}"


def curves(rows, key):
    names = []
    for r in rows:
        if r["curve"] not in names:
            names.append(r["curve"])
    return [(n, [(r["state_bytes"], r[key], r["point"]) for r in rows
                 if r["curve"] == n]) for n in names]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--specs", required=True)
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    specs = read_specs(args.specs)
    labels = [s for _, s, _ in specs]
    if len(set(labels)) != len(labels):
        fail(f"{args.specs}: a spec is listed twice")
    fid_raw, meta, seeds = load_fidelity(args.dir, specs)
    ev_raw = load_eval(args.dir, specs)
    with open(os.path.join(args.dir, "run.json")) as f:
        run = json.load(f)
    cal, tau, cal_n = load_calibrate(args.dir)
    fid = summarize_fidelity(specs, fid_raw)
    ev = summarize_eval(specs, ev_raw)

    per_seed_f = [dict(r, curve=c) for c, s, _ in specs for r in fid_raw[s]]
    write_csv(os.path.join(args.dir, "fidelity.csv"),
              ["curve", "label", "seed", "positions", "greedy_agreement",
               "mean_kl", "perplexity", "state_bytes", "tokens_per_s", "spec"],
              [dict(r, seed="mean", label=r["spec"], spec=r["canonical"])
               for r in fid] + per_seed_f)
    per_seed_e = [dict(r, curve=c) for c, s, _ in specs for r in ev_raw[s]]
    write_csv(os.path.join(args.dir, "eval.csv"),
              ["curve", "label", "seed", "query_rows", "rel_l2_mean",
               "rel_l2_max", "cosine_mean", "cosine_min", "state_bytes",
               "prefill_us_per_token", "self_fit_error_mean",
               "self_fit_fallbacks", "self_recall_mean"],
              [dict(r, label=r["spec"], seed="mean",
                    self_fit_error_mean=r["fit_error"],
                    self_fit_fallbacks=r["fallbacks"],
                    self_recall_mean=r["recall"]) for r in ev] + per_seed_e)

    n_seeds = len(seeds)
    x_label = "state bytes per session (all 5 layers × 4 KV heads, log)"
    plots = {
        "fidelity_kl.svg": svg_plot(
            f"stories260K, {meta['tokens']} tokens: mean KL(exact ‖ spec) "
            f"vs state, mean of {n_seeds} seeds", x_label,
            "mean KL per position (nats, log)", curves(fid[1:], "mean_kl"),
            log_y=True, y_floor=1e-8,
            note="Off the axis: exact f32 (the reference, KL 0) and conv (exact "
                 "decode, KL ~1e-11). Unlabelled curves: B = 32, 64, 128 "
                 "from the left."),
        "fidelity_agreement.svg": svg_plot(
            f"stories260K, {meta['tokens']} tokens: greedy-token agreement "
            f"with exact vs state", x_label, "greedy agreement",
            curves(fid, "greedy_agreement"), log_y=False,
            note="Labels: the budget B (keys per query) or the store. Unlabelled "
                 "curves: B = 32, 64, 128 from the left."),
        "eval_error.svg": svg_plot(
            f"kvsketch eval on the {n_seeds} dumped traces: attention output "
            f"error vs state", x_label, "mean relative L2 error (log)",
            curves(ev, "rel_l2_mean"), log_y=True,
            note="Labels: the budget B (keys per query) or the store. Unlabelled "
                 "curves: B = 32, 64, 128 from the left."),
    }
    for name, text in plots.items():
        with open(os.path.join(args.dir, name), "w") as f:
            f.write(text)

    m = meta["model"]
    fields = {
        "FIDELITY_TABLE": fidelity_table(fid),
        "EVAL_TABLE": eval_table(ev),
        "CALIBRATE_TABLE": calibrate_table(cal),
        "TAU": f"{tau:g}",
        "CAL_N": str(cal_n),
        "SEEDS": ", ".join(str(s) for s in seeds),
        "NSEEDS": str(n_seeds),
        "TOKENS": str(meta["tokens"]),
        "POSITIONS": str(fid[0]["positions"]),
        "ROWS": str(ev[0]["query_rows"]),
        "MODEL": (f"dim {m['dim']}, {m['n_layers']} layers, {m['n_heads']} "
                  f"query heads, {m['n_kv_heads']} KV heads, head dim "
                  f"{m['head_dim']}, vocab {m['vocab_size']}, seq_len "
                  f"{m['seq_len']}"),
        "COMMAND": run["command"],
        "DATE": run["date_utc"],
        "MACHINE": (f"{run['cpu']}, {run['cores']} cores (shared), "
                    f"{run['kernel']}; {run['compiler']}, "
                    f"{run['build_type']} build"),
        "COMMIT": run["commit"],
        "BUILD_SECONDS": f"{run['build_seconds']:.1f}",
        "RUN_SECONDS": f"{run['run_seconds']:.1f}",
    }
    template = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "README.md.in")
    with open(template) as f:
        text = f.read()

    def sub(match):
        if match.group(1) not in fields:
            fail(f"{template}: unknown field {match.group(0)}")
        return fields[match.group(1)]

    text = re.sub(r"\{\{([A-Z_]+)\}\}", sub, text)
    with open(os.path.join(args.dir, "README.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
