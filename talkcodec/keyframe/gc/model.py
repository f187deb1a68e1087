"""The GC model: encoder, quantiser and generator, with the architecture as a typed config."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from talkcodec.keyframe.gc.alphabet import DOWNSAMPLING, NUM_LEVELS
from talkcodec.keyframe.gc.encoder import Encoder
from talkcodec.keyframe.gc.generator import Generator
from talkcodec.keyframe.gc.quantiser import Quantiser
from talkcodec.keyframe.gc.selective import sent_mask


@dataclass(frozen=True)
class GCModelConfig:
    """Architecture of one GC model; stored in the weights file so the codec can rebuild it.

    channels is the latent depth C the encoder produces; the first k of them, for every k in
    channel_choices, form a coarser latent the generator also decodes (a nested latent: one set
    of weights for 2, 4 and 8 channels).
    """

    channels: int = 8
    channel_choices: tuple[int, ...] = (2, 4, 8)
    encoder_widths: tuple[int, ...] = (32, 64, 128, 192)
    generator_width: int = 128
    generator_blocks: int = 3
    generator_up_widths: tuple[int, ...] = (96, 64, 48)
    quantiser_sigma: float = 2.0
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_choices", tuple(self.channel_choices))
        object.__setattr__(self, "encoder_widths", tuple(self.encoder_widths))
        object.__setattr__(self, "generator_up_widths", tuple(self.generator_up_widths))
        if max(self.channel_choices) != self.channels or min(self.channel_choices) < 1:
            raise ValueError(
                f"channel_choices must lie in 1..{self.channels} and include it, "
                f"got {self.channel_choices}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GCModelConfig:
        return cls(**json.loads(text))

    def bound_bits_per_pixel(self, channels: int) -> float:
        """The rate of the latent without entropy coding: C log2(L) bits per 16x16 pixels."""
        return channels * math.log2(NUM_LEVELS) / DOWNSAMPLING**2


class GCModel(nn.Module):
    """E -> Q -> G. `forward` is for training; the codec calls `analyse`/`synthesise`."""

    def __init__(self, config: GCModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.channels, config.encoder_widths)
        self.quantiser = Quantiser(config.quantiser_sigma)
        self.generator = Generator(
            config.channels,
            config.generator_width,
            config.generator_blocks,
            config.generator_up_widths,
        )

    def _sent(
        self, latent: torch.Tensor, active_channels: int, counts: torch.Tensor | None
    ) -> torch.Tensor:
        """(B, C, h, w) 0/1 mask of what was sent of a (B, C, h, w) latent: the first
        `active_channels` channels everywhere, or the first counts[b, y, x] (at most
        `active_channels`) at each position in selective mode."""
        if counts is None:
            batch, _, height, width = latent.shape
            counts = torch.full((batch, height, width), active_channels, dtype=torch.long)
        counts = counts.clamp(max=active_channels).to(latent.device)
        return sent_mask(counts, self.config.channels)

    def analyse(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H, W multiples of 16 -> (B, C, H/16, W/16) int64 symbols."""
        return self.quantiser.symbols(self.encoder(image))

    def synthesise(self, symbols: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """(B, k, h, w) symbols of the first k channels -> (B, 3, 16h, 16w) image in [0, 1].

        counts, (B, h, w) int, says how many of those k channels were sent at each position
        (selective mode, selective.py); symbols beyond it are ignored. None: all k everywhere.
        """
        batch, active, height, width = symbols.shape
        padded = torch.zeros(batch, self.config.channels, height, width, dtype=torch.long)
        padded = padded.to(symbols.device)
        padded[:, :active] = symbols
        latent = self.quantiser.dequantise(padded)
        return self.generator(latent, self._sent(latent, active, counts)).clamp(0, 1)

    def forward(
        self, image: torch.Tensor, active_channels: int, counts: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Training pass over (B, 3, H, W) images in [0, 1] sending the first k channels, or
        the first counts[b, y, x] <= k at each latent position (selective mode) when given.

        Returns reconstruction (B, 3, H, W) unclamped, symbols (B, C, H/16, W/16) and the
        unquantised latent (B, C, H/16, W/16).
        """
        latent = self.encoder(image)
        quantised, symbols = self.quantiser(latent)
        reconstruction = self.generator(quantised, self._sent(quantised, active_channels, counts))
        return {"reconstruction": reconstruction, "symbols": symbols, "latent": latent}
