"""The paper's two architectures, sized for the data set's input shape.

Defaults (the paper gives no widths, so these are our choice, documented in
the README): FCN = input -> 300 -> 100 -> classes (the classic LeNet-300-100);
CNN = conv3x3(32) -> maxpool2 -> conv3x3(64) -> maxpool2 -> fc(128) -> fc(classes),
both convolutions padded so 8x8, 28x28 and 32x32 inputs all work.
Layers have readable names (``fc1.weight``, ``conv2.weight``) because masks and
per-layer sparsity are keyed by parameter name.

On CPU the CNN keeps its activations in channels-last (NHWC) memory (:class:`Conv2d`,
an ``nn.Conv2d`` subclass), where oneDNN's convolutions and this torch's max-pool are
much faster than on NCHW.  Parameters, ``state_dict`` keys, outputs and gradients
are those of ``nn.Conv2d``.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from .config import RunConfig
from .registry import MODELS


class FCN(nn.Module):
    """Fully connected network: flatten, hidden layers with ReLU, logits."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 100)):
        super().__init__()
        width = math.prod(input_shape)
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


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B, C, H, W) in channels-last (NHWC) memory; one channel included.

    With C = 1 NCHW and NHWC are the same bytes, but torch reads the strides
    (HW, HW, W, 1) as NCHW, so that case gets explicit NHWC strides (HW, 1, W, 1).
    """
    b, c, h, w = x.shape
    if c == 1:
        return x.reshape(b, h, w, 1).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs on channels-last activations on CPU.

    On CPU oneDNN's NHWC convolution kernels (forward and both gradients) beat its
    NCHW ones for the CNN's shapes, and this torch's max-pool is about 10x faster on
    channels-last memory, so the input is put in NHWC memory before the convolution
    and the output stays NHWC (its logical shape is the usual (B, C, H, W)).
    Parameters, ``state_dict`` keys and results are those of ``nn.Conv2d``; other
    devices use the plain path, and so does CPU when ``fast_cpu`` is False (set it on
    the class for every layer or on one layer; the benchmark times the old path so).
    """

    fast_cpu: bool = True

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        if self.fast_cpu and input.device.type == "cpu" and input.dim() == 4:
            input = channels_last(input)
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
        # Max-pool, then ReLU: the same outputs and gradients, bit for bit, as ReLU then
        # max-pool (ReLU is monotone, so it commutes with max; where they differ, in the
        # index of an all-negative window, the gradient is zero either way), with a quarter
        # of the ReLU work forward and backward.
        x = torch.relu(self.pool(self.conv1(x)))
        x = torch.relu(self.pool(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def initial_model(cfg: RunConfig, input_shape, num_classes: Optional[int] = None,
                  device: torch.device | str | None = None) -> nn.Module:
    """Exactly the network a run of ``cfg`` starts from: seeded with ``cfg.seed``, then built.

    ``initial_model(cfg, data)`` takes the shapes and the device from a ``TensorDataset``;
    ``initial_model(cfg, input_shape, num_classes, device)`` from the arguments.  The one way
    :func:`bayesprune.train` and the lottery-ticket rewind build their start, so a rewound
    ticket is bit-identical to the run's initial weights.
    """
    if num_classes is None:  # a TensorDataset
        data = input_shape
        input_shape, num_classes = data.input_shape, data.num_classes
        device = data.x_train.device if device is None else device
    device = "cpu" if device is None else device
    torch.manual_seed(cfg.seed)
    return build_model(cfg, input_shape, num_classes).to(device)


def build_model(cfg: RunConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A freshly initialised model for ``cfg`` (initialisation uses torch's global RNG).

    The builder is ``MODELS[cfg.model]``: add a model with
    ``MODELS.register("mlp", lambda cfg, input_shape, num_classes: ...)``.
    """
    return MODELS.lookup(cfg.model)(cfg, input_shape, num_classes)


MODELS.register("fcn", lambda cfg, input_shape, num_classes: FCN(input_shape, num_classes, cfg.fcn_hidden))
MODELS.register("cnn", lambda cfg, input_shape, num_classes: CNN(input_shape, num_classes, hidden=cfg.cnn_hidden))
