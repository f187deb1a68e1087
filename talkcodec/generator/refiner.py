"""The GAN refiner: corrects the head-aware warp where geometry alone cannot (face-vid2vid style).

It takes the reference image, features cached once per reference, the warp's dense sampling
grid and a few guide channels drawn from the current landmarks, and returns the frame:

- a flow correction (1/4 resolution) that re-samples the reference,
- a residual image with an occlusion gate (1/2 resolution) that synthesises what the warped
  reference cannot show (a mouth opened wider, disoccluded background, closed eyes).

Every head's last layer starts at zero, so an untrained refiner returns the warp exactly and
training only moves it where that pays. Every warp is a 4-D `grid_sample` (5-D sampling
breaks ONNX/TensorRT exports). Images are float in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

# The guide channels the warp draws for the refiner: the log of the warp's local area change
# (disocclusion, stretch), the current inner-mouth region and the current eye regions.
GUIDE_CHANNELS = 3


@dataclass(frozen=True)
class RefinerConfig:
    """Widths of the refiner; saved beside its weights."""

    feature_channels: int = 32
    hidden_channels: int = 48
    residual_blocks: int = 3
    decoder_channels: int = 16

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1), nn.SiLU())


def _zero_conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    """A 3x3 conv that starts as zero, so its head is a no-op until trained."""
    conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
    return conv


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def sample(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of (B, C, H, W) at grid (B, h, w, 2), normalised [-1, 1] with the
    corner pixels' centres at -1 and 1 (align_corners=True, like cv2.remap on pixel indices)."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def downsample_grid(grid: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, H, W, 2) -> (B, H/factor, W/factor, 2): the mean sampling position of each block."""
    pooled = F.avg_pool2d(grid.permute(0, 3, 1, 2), factor)
    return pooled.permute(0, 2, 3, 1)


class ReferenceEncoder(nn.Module):
    """Features of one reference at 1/4 resolution, computed once per reference."""

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        width = config.feature_channels
        self.layers = nn.Sequential(
            _conv(3, width // 2, stride=2), _conv(width // 2, width, stride=2), _conv(width, width)
        )

    def forward(self, reference: torch.Tensor) -> torch.Tensor:
        """reference (B, 3, H, W) in [0, 1] -> features (B, F, H/4, W/4)."""
        return self.layers(reference * 2 - 1)


class FrameRefiner(nn.Module):
    """The per-frame network: warp-guided flow correction, occlusion gate and residual."""

    def __init__(self, config: RefinerConfig) -> None:
        super().__init__()
        hidden, decoder = config.hidden_channels, config.decoder_channels
        self.encode_half = _conv(3 + GUIDE_CHANNELS, decoder, stride=2)
        self.encode_quarter = _conv(decoder, 2 * decoder, stride=2)
        self.merge = nn.Sequential(
            nn.Conv2d(2 * decoder + config.feature_channels, hidden, 1), nn.SiLU()
        )
        self.blocks = nn.Sequential(
            *(_ResidualBlock(hidden) for _ in range(config.residual_blocks))
        )
        self.flow_head = _zero_conv(hidden, 2)
        self.squeeze = nn.Sequential(nn.Conv2d(hidden, decoder, 1), nn.SiLU())
        self.decode_half = _conv(2 * decoder, decoder)
        self.output_head = _zero_conv(decoder, 4)  # residual RGB + occlusion gate logit

    def forward(
        self,
        reference: torch.Tensor,
        reference_features: torch.Tensor,
        grid: torch.Tensor,
        guide: torch.Tensor,
    ) -> torch.Tensor:
        """The refined frame (B, 3, h, w) in [0, 1].

        reference (B, 3, H, W) in [0, 1]; reference_features (B, F, H/4, W/4) from
        ReferenceEncoder; grid (B, h, w, 2) the warp's sampling positions (see `sample`);
        guide (B, GUIDE_CHANNELS, h, w). The output is usually the reference's size; training
        may ask for a window of it (h, w < H, W: the grid addresses the whole reference).
        """
        height, width = grid.shape[1:3]
        warped = sample(reference, grid)  # (B, 3, H, W)
        x = torch.cat([warped * 2 - 1, guide], dim=1)
        half = self.encode_half(x)  # (B, D, H/2, W/2)
        quarter = self.encode_quarter(half)  # (B, 2D, H/4, W/4)
        warped_features = sample(reference_features, downsample_grid(grid, 4))
        hidden = self.blocks(self.merge(torch.cat([quarter, warped_features], dim=1)))
        flow = F.interpolate(
            self.flow_head(hidden), size=(height, width), mode="bilinear", align_corners=False
        )  # (B, 2, H, W) in normalised units
        refined = sample(reference, grid + flow.permute(0, 2, 3, 1))
        up = F.interpolate(self.squeeze(hidden), scale_factor=2.0, mode="nearest")
        decoded = self.decode_half(torch.cat([up, half], dim=1))  # (B, D, H/2, W/2)
        head = F.interpolate(
            self.output_head(decoded), size=(height, width), mode="bilinear", align_corners=False
        )
        residual, gate = torch.tanh(head[:, :3]), torch.sigmoid(head[:, 3:])
        return (refined + gate * residual).clamp(0.0, 1.0)


class Refiner(nn.Module):
    """Both halves together, for training: forward(reference, grid, guide) -> frame."""

    def __init__(self, config: RefinerConfig | None = None) -> None:
        super().__init__()
        self.config = config or RefinerConfig()
        self.reference_encoder = ReferenceEncoder(self.config)
        self.frame_refiner = FrameRefiner(self.config)

    def forward(
        self, reference: torch.Tensor, grid: torch.Tensor, guide: torch.Tensor
    ) -> torch.Tensor:
        """reference (B, 3, H, W), grid (B, H, W, 2), guide (B, G, H, W) -> (B, 3, H, W)."""
        return self.frame_refiner(reference, self.reference_encoder(reference), grid, guide)
