#!/usr/bin/python3
"""PyTorch CPU causal attention, the baseline of bench/core/prefill_bench.cc.

Written the way a user of Debian's python3-torch (1.13, CPU) writes causal
attention for one head: matmul -> masked softmax (causal mask, -inf fill) ->
matmul, float32, d = dv = 128, scale 1/sqrt(d). Timings go to --out as
"T seconds note" lines (note empty for the plain form), plus '#' lines that
say which BLAS torch loaded and how many threads it used;
bench_prefill --torch=FILE puts them in its table.

Memory: the plain form holds the T x T scores, the mask and the softmax
output (about 9 bytes per entry: 9 GiB at T = 32K, 36 GiB at 64K). Above
--max_full_t (default 16384: ~2.3 GiB) it processes the queries in blocks of
--chunk_rows rows against the keys they can see (rows [r0, r1) use keys
[0, r1)), as a sensible user would when T^2 does not fit; those rows carry the
note "chunked". Before timing, the chunked form is checked against the plain
one at T = 1024.

Run with /usr/bin/python3 (Debian's torch), e.g.
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/python3 \\
      bench/python/torch_attention.py --sizes 4096,8192 --threads 1 --out t.txt
"""

import argparse
import ctypes
import math
import sys
import time

import torch

D = 128


def plain_attention(q, k, v, mask, scale):
    """softmax(scale * q k^T, causal) v in one piece; mask is T x T bool."""
    scores = (q @ k.T) * scale
    scores.masked_fill_(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def chunked_attention(q, k, v, scale, chunk_rows):
    """The same, query rows in blocks; each block sees keys [0, r1)."""
    t = q.shape[0]
    out = torch.empty(t, v.shape[1], dtype=q.dtype)
    for r0 in range(0, t, chunk_rows):
        r1 = min(t, r0 + chunk_rows)
        scores = (q[r0:r1] @ k[:r1].T) * scale
        # Local row i is global row r0 + i: it must not see keys j > r0 + i.
        mask = torch.ones(r1 - r0, r1, dtype=torch.bool).triu(r0 + 1)
        scores.masked_fill_(mask, float("-inf"))
        out[r0:r1] = torch.softmax(scores, dim=-1) @ v[:r1]
    return out


def loaded_blas():
    """Shared libraries of a BLAS/LAPACK this process has mapped."""
    libs = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if any(s in path for s in ("blas", "lapack", "mkl")):
                libs.add(path)
    return sorted(libs)


def openblas_core(libs):
    """OpenBLAS's kernel choice (its CPU detection or OPENBLAS_CORETYPE)."""
    for path in libs:
        if "libopenblas" in path:
            try:
                lib = ctypes.CDLL(path)
                lib.openblas_get_corename.restype = ctypes.c_char_p
                return lib.openblas_get_corename().decode()
            except (OSError, AttributeError):
                return "unknown"
    return "n/a"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="4096,8192,16384,32768,65536")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max_full_t", type=int, default=16384)
    parser.add_argument("--chunk_rows", type=int, default=2048)
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    torch.set_num_threads(args.threads)
    scale = 1.0 / math.sqrt(D)

    # The chunked form must equal the plain one (same arithmetic per row).
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1024, D, generator=gen) for _ in range(3))
    mask = torch.ones(1024, 1024, dtype=torch.bool).triu(1)
    diff = (plain_attention(q, k, v, mask, scale) -
            chunked_attention(q, k, v, scale, 300)).abs().max().item()
    if not diff < 1e-5:
        sys.exit(f"torch_attention.py: chunked != plain (max diff {diff})")

    libs = loaded_blas()
    lines = [
        f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"OpenBLAS kernels: {openblas_core(libs)}, "
        f"BLAS loaded: {', '.join(libs) or 'none found'}",
    ]
    # GEMM speed through torch at the roofline shape of bench_prefill.
    a = torch.randn(1024, D)
    b = torch.randn(D, 1024)
    best = 0.0
    for _ in range(3):
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.2:
            a @ b
            reps += 1
        best = max(best, 2 * 1024 * 1024 * D * reps /
                   (time.perf_counter() - t0) / 1e9)
    lines.append(f"# torch matmul 1024x128 . 128x1024: {best:.1f} GFLOP/s")
    for t in sizes:
        gen = torch.Generator().manual_seed(t)
        q, k, v = (torch.randn(t, D, generator=gen) for _ in range(3))
        if t <= args.max_full_t:
            # Built once outside the timing, like a registered mask buffer.
            mask = torch.ones(t, t, dtype=torch.bool).triu(1)
            t0 = time.perf_counter()
            out = plain_attention(q, k, v, mask, scale)
            seconds = time.perf_counter() - t0
            note = ""
            del mask
        else:
            t0 = time.perf_counter()
            out = chunked_attention(q, k, v, scale, args.chunk_rows)
            seconds = time.perf_counter() - t0
            note = f"chunked, {args.chunk_rows} query rows per block"
        if not torch.isfinite(out).all():
            sys.exit(f"torch_attention.py: non-finite output at T={t}")
        lines.append(f"{t} {seconds:.4f} {note}".rstrip())
        if args.out != "-":  # progress, when stdout is not the result
            print(lines[-1], file=sys.stderr, flush=True)
        del out, q, k, v
    text = "\n".join(lines) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
