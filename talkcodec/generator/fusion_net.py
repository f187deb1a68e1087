"""The learned fusion of the hybrid mode: a small network on top of the agreement-mask fusion.

Its inputs (learned_fusion.planes_of) are what the training-free fusion
(talkcodec.generator.fusion) already computes: the upscaled low-res frame, the render, the
render's low band and the agreement mask, plus the stream's fusion level as a constant plane.
It outputs a correction of the mask's logit and a residual image:

    weight = sigmoid(MASK_GAIN * (2 * mask - 1) + correction)
    fused  = lowres_up + weight * (render - lowres_up) + residual

Both heads start at zero, so an untrained network is the agreement-mask fusion with a softened
ramp, and training (python -m talkcodec.generator.train_fusion, on train clips, with HaarPSI
and L1 against the camera frame) moves it only where that pays. It runs at half resolution
and below (three scales), ~0.14 GMAC at 256x256. Images are float in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from talkcodec.generator.learned_fusion import INPUT_CHANNELS
from talkcodec.training.weights_io import load_state, read_network, write_network

# The mask's ramp as a logit: 0 -> sigmoid(-4) = 0.02, 1 -> 0.98.
MASK_GAIN = 4.0

FORMAT = "talkcodec-fusion"
WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_FUSION_WEIGHTS = WEIGHTS_DIR / "fusion-v5.safetensors"
TRAIN_COMMAND = "python -m talkcodec.generator.train_fusion --out runs/fusion --export " + str(
    Path("weights") / DEFAULT_FUSION_WEIGHTS.name
)


@dataclass(frozen=True)
class FusionNetConfig:
    """Widths of the fusion network; saved beside its weights."""

    channels: tuple[int, int, int] = (8, 16, 32)
    head_channels: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.SiLU())


class FusionNet(nn.Module):
    """(B, INPUT_CHANNELS, H, W) -> (B, 4, H/2, W/2): mask-logit correction and residual RGB
    at half resolution (fuse_planes upsamples them). H and W must be multiples of 8.

    Everything runs at half resolution and below (the planes are averaged 2x2 first): what
    the network decides, where to trust the render and what colour to add, is smooth, and the
    detail comes from the render itself."""

    def __init__(self, config: FusionNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or FusionNetConfig()
        c1, c2, c3 = self.config.channels
        head = self.config.head_channels
        self.down1 = nn.Sequential(_conv(INPUT_CHANNELS, c1), _conv(c1, c1))
        self.down2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))
        self.down3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3), _conv(c3, c3))
        self.up2 = _conv(c3 + c2, c2)
        self.up1 = _conv(c2 + c1, c1)
        self.head = _conv(c1 + INPUT_CHANNELS, head)
        self.out = nn.Conv2d(head, 4, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)  # type: ignore[arg-type]

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        half = F.avg_pool2d(planes, 2)
        level1 = self.down1(half)
        level2 = self.down2(level1)
        level3 = self.down3(level2)
        x = F.interpolate(level3, scale_factor=2.0, mode="nearest")
        x = self.up2(torch.cat([x, level2], dim=1))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.up1(torch.cat([x, level1], dim=1))
        return self.out(self.head(torch.cat([x, half], dim=1)))


def fuse_planes(planes: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) fused frame in [0, 1] from the network's full-size inputs and its
    half-size outputs (upsampled bilinearly)."""
    heads = F.interpolate(heads, scale_factor=2.0, mode="bilinear", align_corners=False)
    lowres_up, render, mask = planes[:, 0:3], planes[:, 3:6], planes[:, 9:10]
    weight = torch.sigmoid(MASK_GAIN * (2 * mask - 1) + heads[:, 0:1])
    return (lowres_up + weight * (render - lowres_up) + heads[:, 1:4]).clamp(0, 1)


class FusionModel(nn.Module):
    """FusionNet and fuse_planes in one module: planes -> fused frame (what is exported)."""

    def __init__(self, net: FusionNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        return fuse_planes(planes, self.net(planes))


def save_fusion(net: FusionNet, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write the network's tensors and config (plus free-form string metadata) to `path`."""
    write_network(net, net.config.to_dict(), path, FORMAT, metadata)


def _config_from(raw: dict) -> FusionNetConfig:
    return FusionNetConfig(tuple(raw["channels"]), int(raw["head_channels"]))


def load_fusion(path: Path | None = None) -> tuple[FusionNet, dict[str, str]]:
    """(network in eval mode, metadata) from a safetensors file (default: the shipped weights).

    Raises FileNotFoundError naming the file and the command that makes it, or ValueError when
    the file is not fusion weights.
    """
    path = Path(path or DEFAULT_FUSION_WEIGHTS)
    tensors, metadata, config = read_network(path, "fusion", FORMAT, TRAIN_COMMAND, _config_from)
    return load_state(FusionNet(config), tensors, path), metadata
