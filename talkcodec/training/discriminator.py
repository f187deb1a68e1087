"""The multi-scale discriminator (pix2pixHD) both GAN trainers use (the GC codec and the
renderer refiner): PatchGANs on the image at 1, 1/2 (and 1/4) size."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PatchDiscriminator(nn.Module):
    """Stride-2 4x4 convs with leaky ReLU, then a 4x4 conv to one real/fake score per patch.

    Returns every intermediate feature map too, for the feature-matching loss.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        blocks = []
        in_ch = 3
        for index, out_ch in enumerate(widths):
            layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1)]
            if index > 0:
                layers.append(nn.InstanceNorm2d(out_ch, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        blocks.append(nn.Sequential(nn.Conv2d(in_ch, 1, 3, padding=1)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image (B, 3, H, W) in [0, 1] -> [features..., scores (B, 1, H/8, W/8)]."""
        outputs = []
        x = image * 2 - 1
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs


class MultiScaleDiscriminator(nn.Module):
    """One PatchGAN per scale; scale s sees the image average-pooled by 2**s."""

    def __init__(self, num_scales: int = 2, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(widths) for _ in range(num_scales))

    def forward(self, image: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per scale, finest first: [features..., scores]."""
        outputs = []
        for index, discriminator in enumerate(self.scales):
            if index:
                image = F.avg_pool2d(image, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(discriminator(image))
        return outputs
