"""The paper's two architectures, sized for the data set's input shape.

Defaults (the paper gives no widths, so these are our choice, documented in
the README): FCN = input -> 300 -> 100 -> classes (the classic LeNet-300-100);
CNN = conv3x3(32) -> maxpool2 -> conv3x3(64) -> maxpool2 -> fc(128) -> fc(classes),
both convolutions padded so 8x8, 28x28 and 32x32 inputs all work.
Layers have readable names (``fc1.weight``, ``conv2.weight``) because masks and
per-layer sparsity are keyed by parameter name.

On CPU the CNN's convolutions take a faster path (:class:`Conv2d`, an ``nn.Conv2d``
subclass): im2col + one matrix multiply per pass, with activations kept in
channels-last memory, where this torch's max-pool is about 10x faster than on NCHW.
Parameters, ``state_dict`` keys, outputs and gradients are those of ``nn.Conv2d``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .config import RunConfig


class FCN(nn.Module):
    """Fully connected network: flatten, hidden layers with ReLU, logits."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 100)):
        super().__init__()
        width = int(torch.tensor(input_shape).prod())
        self.hidden_names: list[str] = []
        for i, h in enumerate(hidden, start=1):
            setattr(self, f"fc{i}", nn.Linear(width, h))
            self.hidden_names.append(f"fc{i}")
            width = h
        self.out_name = f"fc{len(hidden) + 1}"
        setattr(self, self.out_name, nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for name in self.hidden_names:
            x = torch.relu(getattr(self, name)(x))
        return getattr(self, self.out_name)(x)


class _Im2colConv2d(torch.autograd.Function):
    """Stride-1 zero-padded convolution as im2col + matmul, channels-last in and out.

    With x in NHWC memory, the patches of every output pixel are a strided view of the
    padded input; copied into a (pixels, kh*kw*C) matrix ``cols`` they turn the forward
    pass, the weight gradient and the input gradient into one large GEMM each:

        out   = cols @ W^T + b        (pixels, O)       W as (O, kh*kw*C)
        dW    = dout^T @ cols         (O, kh*kw*C)
        dcols = dout @ W              (pixels, kh*kw*C) -> col2im: kh*kw shifted adds

    The results are the logical (B, O, H, W) tensors of ``F.conv2d`` with channels-last
    strides, so ReLU and max-pool downstream also run on channels-last memory.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding: tuple[int, int]):
        b, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        ph, pw = padding
        ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
        xp = x.new_zeros(b, h + 2 * ph, w + 2 * pw, c)  # padded NHWC copy
        xp[:, ph:ph + h, pw:pw + w] = x.permute(0, 2, 3, 1)
        s = xp.stride()
        cols = xp.as_strided((b, ho, wo, kh, kw, c), (s[0], s[1], s[2], s[1], s[2], s[3])).reshape(-1, kh * kw * c)
        w2 = weight.permute(0, 2, 3, 1).reshape(o, kh * kw * c)  # (O, kh*kw*C), C fastest like cols
        out = cols @ w2.t() if bias is None else torch.addmm(bias, cols, w2.t())
        ctx.save_for_backward(cols, w2)
        ctx.shapes = (x.shape, weight.shape, padding, bias is not None)
        return out.view(b, ho, wo, o).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_out):
        cols, w2 = ctx.saved_tensors
        (b, c, h, w), (o, _, kh, kw), (ph, pw), has_bias = ctx.shapes
        ho, wo = grad_out.shape[2:]
        g = grad_out.permute(0, 2, 3, 1).reshape(-1, o)  # (pixels, O); a view if grad_out is channels-last
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


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with a faster CPU path for stride-1, zero-padded, ungrouped convolutions.

    Same parameters, ``state_dict`` and results as ``nn.Conv2d`` (up to float32 rounding);
    on CPU its outputs are channels-last.  Other devices and configurations use torch's
    own kernel, and so does everything when ``fast_cpu`` is False (set it on the class
    for all layers, or on one layer), which is how the benchmark times the old path.
    """

    fast_cpu: bool = True

    def _fast(self, x: torch.Tensor) -> bool:
        return (self.fast_cpu and x.device.type == "cpu" and x.dim() == 4
                and x.dtype in (torch.float32, torch.float64) and self.weight.dtype == x.dtype
                and self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros" and not isinstance(self.padding, str))

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if self._fast(input):
            return _Im2colConv2d.apply(input, weight, bias, self.padding)
        return super()._conv_forward(input, weight, bias)


class CNN(nn.Module):
    """conv(32) -> pool -> conv(64) -> pool -> fc -> fc, as in the paper."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
    ):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = Conv2d(c, channels[0], kernel_size=3, padding=1)
        self.conv2 = Conv2d(channels[0], channels[1], kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        flat = channels[1] * (h // 4) * (w // 4)
        self.fc1 = nn.Linear(flat, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def build_model(cfg: RunConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A freshly initialised model for ``cfg`` (initialisation uses torch's global RNG)."""
    if cfg.model == "fcn":
        return FCN(input_shape, num_classes, cfg.fcn_hidden)
    if cfg.model == "cnn":
        return CNN(input_shape, num_classes, hidden=cfg.cnn_hidden)
    raise ValueError(f"RunConfig.model={cfg.model!r} is invalid: allowed fcn, cnn")  # pragma: no cover
