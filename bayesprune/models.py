"""The paper's two architectures, sized for the data set's input shape.

Defaults (the paper gives no widths, so these are our choice, documented in
the README): FCN = input -> 300 -> 100 -> classes (the classic LeNet-300-100);
CNN = conv3x3(32) -> maxpool2 -> conv3x3(64) -> maxpool2 -> fc(128) -> fc(classes),
both convolutions padded so 8x8, 28x28 and 32x32 inputs all work.
Layers have readable names (``fc1.weight``, ``conv2.weight``) because masks and
per-layer sparsity are keyed by parameter name.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

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
        self.conv1 = nn.Conv2d(c, channels[0], kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        flat = channels[1] * (h // 4) * (w // 4)
        self.fc1 = nn.Linear(flat, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def initial_model(cfg: RunConfig, input_shape: Sequence[int], num_classes: int,
                  device: torch.device | str = "cpu") -> nn.Module:
    """Exactly the network a run of ``cfg`` starts from: seeded with ``cfg.seed``, then built.

    The one way :func:`bayesprune.train` and the lottery-ticket rewind build their start,
    so a rewound ticket is bit-identical to the run's initial weights.
    """
    torch.manual_seed(cfg.seed)
    return build_model(cfg, input_shape, num_classes).to(device)


def build_model(cfg: RunConfig, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A freshly initialised model for ``cfg`` (initialisation uses torch's global RNG)."""
    if cfg.model == "fcn":
        return FCN(input_shape, num_classes, cfg.fcn_hidden)
    if cfg.model == "cnn":
        return CNN(input_shape, num_classes, hidden=cfg.cnn_hidden)
    raise ValueError(f"RunConfig.model={cfg.model!r} is invalid: allowed fcn, cnn")  # pragma: no cover
