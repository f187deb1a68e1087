"""GC generator G: the quantised latent back to an RGB image 16 times larger."""

from __future__ import annotations

import torch
from torch import nn

from talkcodec.keyframe.gc.layers import ResidualBlock, conv_norm_act


class Generator(nn.Module):
    """A 3x3 conv from the latent, residual blocks at 1/16, then four 2x upsampling stages.

    The input is the latent and a mask of which of its channels were sent (1) or left out (0),
    so one network decodes latents of any of its rungs' channels (the first k of the encoder's).

    The first three stages are nearest-neighbour upsampling and a 3x3 conv (no checkerboard); the
    last is a sub-pixel convolution (a 3x3 conv to 12 channels and a pixel shuffle), which spares
    a convolution at full resolution -- the costliest place on a CPU.
    """

    def __init__(
        self,
        channels: int,
        width: int = 128,
        num_blocks: int = 3,
        up_widths: tuple[int, ...] = (96, 64, 48),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_norm_act(2 * channels, width, 3)]
        layers += [ResidualBlock(width) for _ in range(num_blocks)]
        in_ch = width
        for out_ch in up_widths:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv_norm_act(in_ch, out_ch, 3)]
            in_ch = out_ch
        layers += [nn.ReplicationPad2d(1), nn.Conv2d(in_ch, 3 * 4, 3), nn.PixelShuffle(2)]
        self.net = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) quantised latent, zero where not sent, and (B, C, 1, 1) 0/1 mask of the
        sent channels -> (B, 3, 16h, 16w) image, about [0, 1] (not clamped)."""
        mask = sent.expand_as(latent).to(latent.dtype)
        return (self.net(torch.cat([latent * mask, mask], dim=1)) + 1) / 2
