"""Exact integer convolution sums on a float BLAS: the kernels of the NumPy int8 M1.

NumPy's integer ``matmul`` has no BLAS (a plain loop, about 50x slower than ``sgemm``
here), and the board has nothing else: no PyTorch, no int8 dot product. But a float
GEMM on small integers is exact integer arithmetic when no rounding can happen:

* float32 holds every integer of magnitude up to 2**24 exactly. A sum of integer terms
  ``t_k`` is exact, in *any* order of additions, while ``sum_k |t_k| < 2**24``: every
  partial sum a BLAS may form (blocked, vectorized, fused multiply-add) is a sum of a
  subset of the terms, so its magnitude is at most ``sum_k |t_k|``, and so is every
  intermediate rounding-free.
* With codes ``x`` in ``[0, x_max]`` (quint8: 255) and integer weights ``w``, the terms
  of output ``o`` are bounded by ``|w[o, k]| * x_max`` whatever the input: the bound is
  known from the weights alone, when the model loads.
* When ``sum_k |w[o, k]| * x_max + |bias[o]|`` stays below 2**24 for every ``o``, one
  float32 GEMM computes the accumulators, the bias riding along as a column of the
  weights against a row of ones. Otherwise the reduction is cut into slices
  (:func:`reduction_slices`) whose bounds stay below 2**24; each slice is one exact float32
  GEMM, converted to int32 and summed there (int32 is exact below 2**31: the int8 model's
  own accumulator width), the bias added in int32.
* float64 (2**53) is exact for any int8 layer narrower than 2**53 / (128 * 255) inputs:
  one GEMM, no slices (``ExactGemm(..., dtype=np.float64)``), at about half the rate of
  float32 on most CPUs (and the A9's NEON has no float64 at all).

The depthwise convolutions are per-channel products on the BLAS too, over an im2col of
each block of channels (9 terms of at most 128 * 255 per sum: far below 2**24), the bias
added in float32 when the bound with it holds, in int32 otherwise; int16 taps (model/wide.py)
as two exact float32 halves joined in int32 (:class:`ExactDepthwise`).

:func:`layer_costs` counts, per layer, the multiply-accumulates, the GEMM's shape and
the bytes each kernel reads and writes; ``python -m temposplit.model.numpy_conv M1.npz``
prints them with the time each layer takes here (docs/numpy-m1.md uses them for the
Cortex-A9 estimate).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

EXACT_F32 = 2**24  # float32 represents every integer of smaller magnitude exactly
EXACT_F64 = 2**53
X_MAX = 255  # quint8 codes
IM2COL_ELEMENTS = 1 << 22  # im2col in row strips of at most this many float32 (16 MB)
DEPTHWISE_BLOCK = 1 << 16  # a depthwise im2col block: 256 KB of float32


def row_bounds(w: np.ndarray, x_max: int = X_MAX) -> np.ndarray:
    """``sum_k |w[o, k]| * x_max`` per output (float64: exact for any int8 layer here)."""
    return np.abs(np.asarray(w, dtype=np.float64)).sum(axis=1) * x_max


def reduction_slices(w: np.ndarray, x_max: int = X_MAX, limit: int = EXACT_F32) -> list[tuple[int, int]]:
    """Cut the reduction axis of ``w`` (O, K) into consecutive slices ``[a, b)`` such that,
    for every output ``o``, ``sum_{a <= k < b} |w[o, k]| * x_max < limit``: the float GEMM of
    each slice is then exact for any codes in ``[0, x_max]``. Greedy (each slice as long as
    the bound allows), so the count is at most one more than the optimum's."""
    terms = np.abs(np.asarray(w, dtype=np.float64)) * x_max
    if terms.size and terms.max() >= limit:
        raise ValueError(f"a single product can reach {terms.max():.0f} >= {limit}: not exact in any slicing")
    k = terms.shape[1]
    slices, start = [], 0
    run = np.zeros(terms.shape[0])
    for idx in range(k):
        nxt = run + terms[:, idx]
        if idx > start and nxt.max() >= limit:
            slices.append((start, idx))
            start, nxt = idx, terms[:, idx].copy()
        run = nxt
    slices.append((start, k))
    return slices


class ExactGemm:
    """``W @ X`` for integer weights ``w`` (O, K) and codes ``X`` (N, K, P) in ``[0, x_max]``,
    exact, on the float BLAS (module docstring).

    Attributes
    ----------
    bias_inside : the bias is a column of the weights (one GEMM, float accumulators that
        already hold it); the caller's operand then has ``extra`` = 1 more row, of ones
    slices : the reduction's slices (one, unless the float32 bound needs more)
    bias : the bias for the caller to add (int32), when not inside; else None
    """

    def __init__(self, w: np.ndarray, bias: np.ndarray | None = None, x_max: int = X_MAX, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, not {self.dtype}")
        limit = EXACT_F32 if self.dtype == np.float32 else EXACT_F64
        w = np.asarray(w)
        out_channels = w.shape[0]
        bias = np.zeros(out_channels, np.int64) if bias is None else np.asarray(bias, np.int64)
        if np.abs(bias).max(initial=0) >= 2**31:
            raise ValueError("bias out of the int32 range")
        bound = row_bounds(w, x_max) + np.abs(bias)
        self.bias_inside = bool(bound.max(initial=0) < limit)
        self.slices = [(0, w.shape[1])] if self.bias_inside else reduction_slices(w, x_max, limit)
        self.extra = 1 if self.bias_inside else 0
        wf = w.astype(self.dtype)
        if self.bias_inside:
            self.w = np.concatenate([wf, bias.astype(self.dtype)[:, None]], axis=1)
            self.bias = None
        else:
            self.w = wf
            self.bias = bias.astype(np.int32)

    def __call__(self, cols: np.ndarray) -> np.ndarray:
        """(N, K [+1], P) -> (N, O, P): float accumulators with the bias (``bias_inside``), or
        int32 sums of the slices' exact GEMMs without it."""
        if self.bias_inside:
            return np.matmul(self.w, cols)
        out = None
        for a, b in self.slices:
            part = np.matmul(self.w[:, a:b], cols[:, a:b]).astype(np.int32)
            out = part if out is None else out + part
        return out


def windows(xp: np.ndarray, kh: int, kw: int, sh: int, sw: int, ho: int, wo: int):
    """The kernel taps' strided views of a padded input (N, C, Hp, Wp), tap order (i, j)."""
    for i in range(kh):
        for j in range(kw):
            yield xp[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]


def conv_gemm(codes: np.ndarray, gemm: ExactGemm, kh: int, kw: int, stride, ho: int, wo: int) -> np.ndarray:
    """A dense convolution of padded uint8 codes (N, C, Hp, Wp) as exact GEMMs: the codes
    themselves for 1x1 stride 1, im2col in row strips (at most ``IM2COL_ELEMENTS``) otherwise;
    the accumulators (N, O, ho, wo) as :class:`ExactGemm` returns them."""
    n, c, h, w = codes.shape
    sh, sw = stride
    extra, dtype = gemm.extra, gemm.dtype
    if kh == kw == 1 and sh == sw == 1:
        cols = np.empty((n, c + extra, h * w), dtype)
        cols[:, :c] = codes.reshape(n, c, h * w)
        if extra:
            cols[:, c] = 1.0
        return gemm(cols).reshape(n, -1, ho, wo)
    xf = codes.astype(dtype)
    out_channels = gemm.w.shape[0]
    acc = np.empty((n, out_channels, ho, wo), dtype if gemm.bias_inside else np.int32)
    taps = kh * kw
    rows = max(1, IM2COL_ELEMENTS // (c * taps * wo * n))
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        part = xf[:, :, r0 * sh : (r1 - 1) * sh + kh, :]
        cols = np.empty((n, c * taps + extra, (r1 - r0) * wo), dtype)
        body = cols[:, : c * taps].reshape(n, c, taps, r1 - r0, wo)  # a view: filled in place
        for t, view in enumerate(windows(part, kh, kw, sh, sw, r1 - r0, wo)):
            body[:, :, t] = view
        if extra:
            cols[:, c * taps] = 1.0
        acc[:, :, r0:r1] = gemm(cols).reshape(n, -1, r1 - r0, wo)
    return acc


class ExactDepthwise:
    """Depthwise sums ``sum_t x[c, shifted by t] * taps[c, t] (+ bias[c])``, exact in float32.

    Per channel a (1, taps) x (taps, positions) product on the BLAS (NumPy's stacked
    ``matmul``), over an im2col of the channel's taps, in blocks of channels whose im2col
    holds at most ``DEPTHWISE_BLOCK`` float32: the block stays in cache (the A9's L2 is
    512 KB) and the memory bounded. Measured here 2-10x faster than shifted multiply-add
    passes over whole maps (17 passes of the output's size for 3x3, out of cache), the
    stride-2 layers most. Exact: at most ``taps`` terms of ``|w| * 255`` per sum.

    ``bias_inside``: the float32 result holds the bias (bound with it below 2**24); else the
    result is the sums in int32, without it, and ``bias`` (int32) is the caller's to add.

    Wider taps (int16 weights, model/wide.py), whose sums pass 2**24, are *split*: each tap
    ``w = 256 h + l`` with ``l`` in 0..255 and ``h = (w - l) / 256``, both halves' sums in
    the same float32 product (two rows instead of one: nearly free), each exact (at most
    ``taps * 255 * x_max``), joined in int32 as ``256 S_h + S_l`` (exact while the whole
    sum's bound with the bias is below 2**31). float64 sums (exact below 2**53; the A9's NEON has no
    float64) remain for taps beyond that.
    """

    def __init__(self, taps: np.ndarray, bias: np.ndarray | None = None, x_max: int = X_MAX):
        taps = np.asarray(taps)
        bias = np.zeros(taps.shape[0], np.int64) if bias is None else np.asarray(bias, np.int64)
        bound = row_bounds(taps, x_max)
        t64 = np.asarray(taps, dtype=np.float64)
        lo = np.mod(t64, 256.0)
        hi = (t64 - lo) / 256.0
        self.split = bool(
            bound.max(initial=0) >= EXACT_F32
            and np.array_equal(t64, np.round(t64))
            and max(row_bounds(lo, x_max).max(initial=0), row_bounds(hi, x_max).max(initial=0)) < EXACT_F32
            and (bound + np.abs(bias)).max(initial=0) < 2**31  # the caller adds the bias in int32
        )
        # float32 when every sum stays below 2**24 (int8 weights) or each half's does (split);
        # else float64, exact below 2**53
        self.dtype = np.dtype(np.float32 if bound.max(initial=0) < EXACT_F32 or self.split else np.float64)
        limit = EXACT_F32 if self.dtype == np.float32 else EXACT_F64
        if not self.split and bound.max(initial=0) >= limit:
            raise ValueError("depthwise sums could reach 2**53: not exact in float64")
        if self.split:  # (C, 2, taps): the high halves' row, then the low halves'
            self.taps = np.ascontiguousarray(np.stack([hi, lo], axis=1), dtype=np.float32)
        else:
            self.taps = np.ascontiguousarray(taps, dtype=self.dtype)[:, None, :]
        self.bias_inside = bool(not self.split and (bound + np.abs(bias)).max(initial=0) < limit)
        self.bias = bias.astype(self.dtype) if self.bias_inside else bias.astype(np.int32)

    def __call__(self, codes: np.ndarray, kh: int, kw: int, stride, ho: int, wo: int) -> np.ndarray:
        """Padded codes (N, C, Hp, Wp) -> sums (N, C, ho, wo): float (``dtype``) with the bias
        (inside), int32 without."""
        n, c = codes.shape[:2]
        sh, sw = stride
        taps, positions = kh * kw, ho * wo
        rows = self.taps.shape[1]  # 2 when split
        block = max(1, min(c, DEPTHWISE_BLOCK // (n * taps * positions)))
        out = np.empty((n, c, rows, positions), self.dtype)
        cols = np.empty((n, block, taps, positions), self.dtype)
        for c0 in range(0, c, block):
            c1 = min(c, c0 + block)
            part = cols[:, : c1 - c0]
            # every tap's window in one strided view (read only), copied and converted at once
            x = codes[:, c0:c1]
            s_n, s_c, s_h, s_w = x.strides
            strides = (s_n, s_c, s_h, s_w, s_h * sh, s_w * sw)
            view = as_strided(x, (n, c1 - c0, kh, kw, ho, wo), strides, writeable=False)
            part.reshape(n, c1 - c0, kh, kw, ho, wo)[...] = view
            np.matmul(self.taps[c0:c1], part, out=out[:, c0:c1])
        if self.split:  # 256 S_h + S_l in int32, the bias the caller's
            acc = out[:, :, 0].astype(np.int32)
            acc *= 256
            acc += out[:, :, 1].astype(np.int32)
            return acc.reshape(n, c, ho, wo)
        acc = out.reshape(n, c, ho, wo)
        if self.bias_inside:
            acc += self.bias.reshape(1, c, 1, 1)
            return acc
        return acc.astype(np.int32)  # exact; the caller adds the bias in int32


# --------------------------------------------------------------------------- costs


def layer_costs(m1, input_size) -> list[dict]:
    """Per convolution of a loaded :class:`~temposplit.model.numpy_m1.NumpyM1`, one frame at
    ``input_size`` (H, W): its kind, output shape, MACs, the GEMM's (M, N, K) (weights
    rows, output positions, reduction, + the bias row), the float32 bytes the kernel's
    passes read and write (operand conversion or im2col, GEMM operands and result,
    requantization), and ``element_passes`` as :meth:`NumpyM1.work` counts them."""
    sizes = {"input": tuple(input_size)}
    channels = {"input": 3}
    rows = []
    for node in m1.nodes:
        src = node["inputs"][0]
        h, w = sizes[src]
        c = channels[src]
        op = node["op"]
        if op == "conv":
            conv = m1._ops[node["name"]]
            ph, pw = conv.padding
            hp, wp = h + 2 * ph, w + 2 * pw
            ho, wo = conv.out_size(h, w)
            out = conv.out_channels * ho * wo
            taps = conv.kh * conv.kw
            row = {"name": node["name"], "out": [conv.out_channels, ho, wo], "macs": conv.macs(h, w)}
            if conv.depthwise:
                row["kind"] = "depthwise"
                # im2col (read u8, write f32), the BLAS reads it and writes the sums
                moved = taps * out * (1 + 4 + 4) + out * 4
                row["element_passes"] = taps * out + 5 * out  # as NumpyM1.work counts them
            else:
                gemm = conv.gemm
                k = c * taps
                row["kind"] = "conv1x1" if taps == 1 else f"conv{conv.kh}x{conv.kw}"
                row["gemm"] = [conv.out_channels, ho * wo, k + gemm.extra]
                row["slices"] = len(gemm.slices)
                operand = (k + gemm.extra) * ho * wo * 4
                # operand built (u8 read, f32 written; im2col also converts the input first),
                # GEMM reads weights + operand once at least and writes the result
                build = c * hp * wp * (1 + 4) + (operand if taps == 1 else c * hp * wp * 4 + operand * 2)
                moved = build + gemm.w.size * 4 + operand + out * 4
                row["element_passes"] = c * h * w * (1 if taps == 1 else 2) + k * ho * wo + 6 * out
            moved += out * (4 * 2 * 4 + 4 + 1)  # requantize: 4 float32 in-place passes, the uint8 cast
            row["bytes"] = int(moved)
            rows.append(row)
            h, w, c = ho, wo, conv.out_channels
        elif op == "pad_same":
            k, s = int(node["kernel"]), int(node["stride"])
            h, w = (max((-(-n // s) - 1) * s + k - n, 0) + n for n in (h, w))  # TF "SAME"
        elif op == "max_pool":
            (kh, kw), (sh, sw), (ph, pw) = node["kernel"], node["stride"], node["padding"]
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        sizes[node["name"]], channels[node["name"]] = (h, w), c
    return rows


def time_layers(m1, x: np.ndarray, repeat: int = 5) -> dict:
    """CPU seconds (minimum of ``repeat``; robust to a shared machine with BLAS on one thread) of
    each convolution on its real input, by name."""
    import time

    trace: dict = {}
    m1.run(x, trace=trace)
    times = {}
    for node in m1.nodes:
        if node["op"] != "conv":
            continue
        conv, src = m1._ops[node["name"]], trace[node["inputs"][0]]
        best = float("inf")
        for _ in range(repeat):
            t0 = time.process_time()
            conv(src)
            best = min(best, time.process_time() - t0)
        times[node["name"]] = best
    return times


def main(argv=None) -> int:
    import argparse
    import json
    import sys

    from temposplit.model import numpy_m1

    p = argparse.ArgumentParser(
        prog="python -m temposplit.model.numpy_conv", description="per-layer costs (and times here) of an exported M1"
    )
    p.add_argument("m1", help="an exported M1 (.npz)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"))
    p.add_argument("--repeat", type=int, default=5, help="timed runs per layer (0: no timing)")
    args = p.parse_args(argv)

    def refuse(message: str) -> int:  # one line on stderr, exit status 2
        print(f"{p.prog}: error: {message}", file=sys.stderr)
        return 2

    if args.repeat < 0:
        return refuse(f"--repeat must be 0 (no timing) or more, not {args.repeat}")
    if args.size is not None and not (1 <= min(args.size) and max(args.size) <= numpy_m1.MAX_SIDE):
        return refuse(
            f"--size must be two whole numbers in 1..{numpy_m1.MAX_SIDE} (H W), not {args.size[0]} {args.size[1]}"
        )
    try:
        m1 = numpy_m1.load(args.m1)
    except OSError as exc:
        return refuse(f"{args.m1}: {exc.strerror or exc}")
    except numpy_m1.FormatError as exc:
        return refuse(str(exc))
    size = tuple(args.size or m1.input.get("size", numpy_m1.SSD_INPUT_SIZE))
    rows = layer_costs(m1, size)
    if args.repeat:  # timed on a frame of that size: each tensor within the runtime's budget, as a file's are
        for row in rows:
            most = max(int(np.prod(row["out"])), int(np.prod(row.get("gemm", [0, 0, 0])[1:])))
            if max(most, 3 * size[0] * size[1]) > numpy_m1.MAX_ELEMENTS:
                return refuse(
                    f"at --size {size[0]} {size[1]} {row['name']} holds {most:,} elements, over the runtime's "
                    f"{numpy_m1.MAX_ELEMENTS:,}: give a smaller --size, or --repeat 0 for the costs alone"
                )
        x = np.random.default_rng(0).uniform(-1, 1, (1, 3) + size).astype(np.float32)
        times = time_layers(m1, x, args.repeat)
        for row in rows:
            row["ms"] = round(times[row["name"]] * 1000, 3)
    for row in rows:
        print(json.dumps(row))
    total = {k: sum(r.get(k, 0) for r in rows) for k in ("macs", "bytes", "element_passes", "ms")}
    print(json.dumps({"total": total}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
