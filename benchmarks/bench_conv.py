"""Convolution ceilings on this machine: what one conv2d reaches alone, and the CNN's two shapes.

    PYTHONPATH=$PWD python benchmarks/bench_conv.py            # prints a table, writes results/bench_conv_cpu.json

Measured: a large conv2d (16 x 128 -> 128 channels at 28x28, 3x3, pad 1) forward and
forward+backward in GFLOP/s (2 FLOPs per multiply-add; the backward counts the weight and
input gradients), next to a 2048^3 float32 matmul; then the CNN's conv1 (64 x 1 -> 32 at
28x28) and conv2 (64 x 32 -> 64 at 14x14), forward and forward+backward, in NCHW and
channels-last memory, with oneDNN (mkldnn) on and off, and as an explicit im2col + matmul
(``Im2colConv2d`` below, written as a torch.autograd.Function; tried for the CNN and
measured slower than oneDNN's channels-last kernels here, so it lives only in this script).
bench_training.py imports :func:`conv_ceilings` from here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F


class Im2colConv2d(torch.autograd.Function):
    """Stride-1 zero-padded conv as im2col + one GEMM per pass, NHWC in and out.

    out = cols @ W^T + b;  dW = dout^T @ cols;  dcols = dout @ W, then col2im as kh*kw shifted adds.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        b, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        ph, pw = padding
        ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        xp = x.new_zeros(b, h + 2 * ph, w + 2 * pw, c)
        xp[:, ph:ph + h, pw:pw + w] = x.permute(0, 2, 3, 1)
        s = xp.stride()
        cols = xp.as_strided((b, ho, wo, kh, kw, c), (s[0], s[1], s[2], s[1], s[2], s[3])).reshape(-1, kh * kw * c)
        w2 = weight.permute(0, 2, 3, 1).reshape(o, kh * kw * c)
        out = cols @ w2.t() if bias is None else torch.addmm(bias, cols, w2.t())
        ctx.save_for_backward(cols, w2)
        ctx.shapes = (x.shape, weight.shape, padding, bias is not None)
        return out.view(b, ho, wo, o).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out):
        cols, w2 = ctx.saved_tensors
        (b, c, h, w), (o, _, kh, kw), (ph, pw), has_bias = ctx.shapes
        ho, wo = grad_out.shape[2:]
        g = grad_out.permute(0, 2, 3, 1).reshape(-1, o)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            dcols = (g @ w2).view(b, ho, wo, kh, kw, c)
            gxp = g.new_zeros(b, h + 2 * ph, w + 2 * pw, c)
            for i in range(kh):
                for j in range(kw):
                    gxp[:, i:i + ho, j:j + wo] += dcols[:, :, :, i, j]
            grad_x = gxp[:, ph:ph + h, pw:pw + w].permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_w = (g.t() @ cols).view(o, kh, kw, c).permute(0, 3, 1, 2).contiguous()
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b, None


def _best_seconds(fn, seconds: float) -> float:
    for _ in range(2):
        fn()
    reps, best = 0, float("inf")
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or reps < 3:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


def conv_gflops(b: int, cin: int, cout: int, hw: int, fmt: str = "nchw", algo: str = "mkldnn",
                backward: bool = False, seconds: float = 0.5) -> float:
    """GFLOP/s of one 3x3 pad-1 conv2d (best of ``seconds`` of repetitions), forward or forward+backward.

    Forward+backward counts forward, weight gradient and (if cin > 1, as in a hidden layer) input gradient.
    """
    x = torch.randn(b, cin, hw, hw)
    w = torch.randn(cout, cin, 3, 3)
    bias = torch.randn(cout)
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last) if cin > 1 else x.reshape(b, hw, hw, 1).permute(0, 3, 1, 2)
    x.requires_grad_(backward and cin > 1)
    w.requires_grad_(backward)
    bias.requires_grad_(backward)
    if algo == "im2col":
        def conv():
            return Im2colConv2d.apply(x, w, bias, (1, 1))
    else:
        def conv():
            return F.conv2d(x, w, bias, padding=1)
    flops = 2.0 * b * hw * hw * cout * cin * 9
    with torch.backends.mkldnn.flags(enabled=algo != "native"):
        if not backward:
            with torch.no_grad():
                return flops / _best_seconds(conv, seconds) / 1e9
        g = torch.randn_like(conv())

        def step():
            conv().backward(g)
        return flops * (3 if cin > 1 else 2) / _best_seconds(step, seconds) / 1e9


def conv_ceilings(smoke: bool = False) -> dict:
    """The large-conv ceiling and the CNN's conv shapes by memory format and algorithm (CPU)."""
    sec = 0.05 if smoke else 0.5
    big = (2, 16, 16, 8) if smoke else (16, 128, 128, 28)
    out: dict = {"conv2d_large_shape": "x".join(map(str, big)) + " (batch, in, out, HxW), 3x3 pad 1"}
    for fmt in ("nchw", "channels_last"):
        out[f"conv2d_large_fwd_{fmt}"] = conv_gflops(*big, fmt=fmt, seconds=sec)
        out[f"conv2d_large_fwd_bwd_{fmt}"] = conv_gflops(*big, fmt=fmt, backward=True, seconds=sec)
    out["conv2d_large_fwd"] = max(out["conv2d_large_fwd_nchw"], out["conv2d_large_fwd_channels_last"])
    out["conv2d_large_fwd_bwd"] = max(out["conv2d_large_fwd_bwd_nchw"], out["conv2d_large_fwd_bwd_channels_last"])
    shapes = {"conv1_64x1x32_28": (64, 1, 32, 28), "conv2_64x32x64_14": (64, 32, 64, 14)}
    if smoke:
        shapes = {k: (4,) + v[1:] for k, v in shapes.items()}
    cnn = {}
    for name, shape in shapes.items():
        for fmt, algo in (("nchw", "mkldnn"), ("channels_last", "mkldnn"), ("nchw", "native"),
                          ("channels_last", "native"), ("channels_last", "im2col")):
            key = f"{name}/{fmt}/{algo}"
            cnn[key] = {"fwd": conv_gflops(*shape, fmt=fmt, algo=algo, seconds=sec),
                        "fwd_bwd": conv_gflops(*shape, fmt=fmt, algo=algo, backward=True, seconds=sec)}
    out["cnn_shapes_gflops"] = cnn
    return out


def main() -> int:
    load0 = os.getloadavg()
    a = torch.randn(2048, 2048)
    matmul = 2.0 * 2048 ** 3 / _best_seconds(lambda: a @ a, 1.0) / 1e9
    res = {"threads": torch.get_num_threads(), "loadavg_start": load0, "matmul_2048": matmul, **conv_ceilings()}
    res["loadavg_end"] = os.getloadavg()
    print(f"threads {res['threads']}, loadavg {load0} -> {res['loadavg_end']}")
    print(f"matmul 2048^3: {matmul:.1f} GFLOP/s")
    print(f"large conv2d {res['conv2d_large_shape']}: fwd {res['conv2d_large_fwd']:.1f}, fwd+bwd {res['conv2d_large_fwd_bwd']:.1f} GFLOP/s")
    print("| shape / memory format / algorithm | fwd GFLOP/s | fwd+bwd GFLOP/s |\n|---|---|---|")
    for k, v in res["cnn_shapes_gflops"].items():
        print(f"| {k} | {v['fwd']:.1f} | {v['fwd_bwd']:.1f} |")
    out = Path("benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_conv_cpu.json").write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
