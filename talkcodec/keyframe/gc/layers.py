"""Building blocks shared by the GC networks."""

from __future__ import annotations

import torch
from torch import nn


class ChannelNorm(nn.Module):
    """Normalises each pixel over its channels (Mentzer et al. 2020, HiFiC).

    Unlike instance norm it uses no statistics over space, so a network behaves the same on a
    256x256 keyframe, a 512x512 one and a 128x128 training crop.
    """

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


def conv_norm_act(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv + ChannelNorm + ReLU; replicate padding keeps borders image-like and fits any size."""
    return nn.Sequential(
        nn.ReplicationPad2d(kernel // 2),
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride),
        ChannelNorm(out_ch),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), the generator's block in GC (and pix2pixHD)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm_act(channels, channels, 3),
            nn.ReplicationPad2d(1),
            nn.Conv2d(channels, channels, 3),
            ChannelNorm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
