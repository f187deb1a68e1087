"""GC encoder E: an RGB image to a C-channel latent at 1/16 of its size."""

from __future__ import annotations

import torch
from torch import nn

from talkcodec.keyframe.gc.alphabet import DOWNSAMPLING
from talkcodec.keyframe.gc.layers import conv_norm_act

__all__ = ["DOWNSAMPLING", "Encoder"]


class Encoder(nn.Module):
    """Four stride-2 convolutions (GC's encoder, narrower), then a 3x3 conv to `channels`.

    The latent is unbounded here; the quantiser maps it onto its centres.
    """

    def __init__(self, channels: int, widths: tuple[int, ...] = (32, 64, 128, 192)) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_norm_act(3, widths[0], 5, stride=2)]
        for in_ch, out_ch in zip(widths[:-1], widths[1:], strict=False):
            layers.append(conv_norm_act(in_ch, out_ch, 3, stride=2))
        layers += [nn.ReplicationPad2d(1), nn.Conv2d(widths[-1], channels, 3)]
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 3, H, W) in [0, 1], H and W multiples of 16 -> (B, C, H/16, W/16)."""
        return self.net(image * 2 - 1)
