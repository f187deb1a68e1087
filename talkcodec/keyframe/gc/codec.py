"""GCCodec: the learned generative keyframe codec behind the KeyframeCodec interface.

The wrapper owns the device, the precision (float32) and the weights; the networks know nothing
about bytes. torch is imported on first use, so merely importing the keyframe registry stays
cheap for peers that never code a GC keyframe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from talkcodec.bitstream import BitstreamError, KeyframeCodecId
from talkcodec.keyframe.base import KeyframeCodec
from talkcodec.keyframe.gc.alphabet import DOWNSAMPLING
from talkcodec.keyframe.gc.latent_coder import decode_latent, encode_latent
from talkcodec.keyframe.gc.payload import GcPayload

if TYPE_CHECKING:
    from talkcodec.keyframe.gc.model import GCModel

logger = logging.getLogger(__name__)

# Bounds what a corrupt or hostile header can make the decoder allocate and run.
MAX_PIXELS = 4096 * 4096


def default_weights_path() -> Path:
    from talkcodec.keyframe.gc.weights import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS


class GCCodec(KeyframeCodec):
    """Generative compression (Agustsson et al. 2019): about 0.01-0.06 bit/pixel on faces.

    quality is the number of latent channels sent (2, 4 or 8 with the shipped weights; more is
    better and larger); the receiver reads it from the payload. The weights load on
    construction: FileNotFoundError names a missing file, ValueError one that is not GC weights.
    """

    name = "gc"
    wire_id = KeyframeCodecId.GC
    default_quality: ClassVar[int] = 8

    def __init__(
        self,
        quality: int | None = None,
        weights: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        from talkcodec.keyframe.gc.prior import table_probabilities
        from talkcodec.keyframe.gc.weights import load_weights

        self.weights_path = Path(weights) if weights is not None else default_weights_path()
        self.device = device
        model, table, metadata = load_weights(self.weights_path, device)
        self._model: GCModel = model
        self._probabilities = table_probabilities(table)  # (C, NUM_CONTEXTS, L) float64, exact
        self.metadata = metadata
        self.version = model.config.version
        self.channel_choices = model.config.channel_choices
        quality = self.default_quality if quality is None else quality
        if quality not in self.channel_choices:
            raise ValueError(
                f"gc quality (latent channels) must be one of "
                f"{', '.join(map(str, self.channel_choices))}, got {quality}"
            )
        self.quality = quality

    @property
    def prior_probabilities(self) -> np.ndarray:
        """(C, NUM_CONTEXTS, L) float64 probabilities the latent is range-coded with."""
        return self._probabilities

    @property
    def max_channels(self) -> int:
        return self._model.config.channels

    def bound_bits_per_pixel(self, channels: int | None = None) -> float:
        """The rate without entropy coding, C log2(5) / 256, for `channels` (default quality)."""
        return self._model.config.bound_bits_per_pixel(channels or self.quality)

    def compress(self, image: np.ndarray) -> bytes:
        import torch

        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"keyframe must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
            )
        height, width = image.shape[:2]
        if not (1 <= height <= 0xFFFF and 1 <= width <= 0xFFFF and height * width <= MAX_PIXELS):
            raise ValueError(f"gc codes images up to {MAX_PIXELS} pixels, got {width}x{height}")
        padded = np.pad(
            image,
            ((0, -height % DOWNSAMPLING), (0, -width % DOWNSAMPLING), (0, 0)),
            mode="edge",
        )
        tensor = torch.from_numpy(padded).permute(2, 0, 1)[None].float().div(255)
        with torch.inference_mode():
            symbols = self._model.analyse(tensor.to(self.device))[0, : self.quality]
        latent = encode_latent(symbols.cpu().numpy(), self._probabilities)  # from (k, h, w)
        return bytes(GcPayload(self.version, self.quality, height, width, latent))

    def decode_symbols(self, data: bytes) -> tuple[GcPayload, np.ndarray]:
        """The parsed payload and its (k, h, w) int64 symbols; BitstreamError if corrupt."""
        payload = GcPayload.parse(data)
        if payload.version != self.version:
            raise BitstreamError(
                f"GC payload is for weights version {payload.version}, "
                f"loaded weights are version {self.version}"
            )
        if payload.channels > self.max_channels:
            raise BitstreamError(
                f"GC payload has {payload.channels} channels, the loaded weights code at most "
                f"{self.max_channels}"
            )
        if payload.height * payload.width > MAX_PIXELS:
            raise BitstreamError(
                f"GC payload says {payload.width}x{payload.height}, "
                f"over the {MAX_PIXELS} pixel limit"
            )
        return payload, decode_latent(payload.latent, self._probabilities, payload.latent_shape)

    def decompress(self, data: bytes) -> np.ndarray:
        import torch

        if not data:
            raise BitstreamError("gc keyframe is empty")
        payload, symbols = self.decode_symbols(data)
        tensor = torch.from_numpy(symbols)[None].to(self.device)
        with torch.inference_mode():
            image = self._model.synthesise(tensor)[0]  # (3, H16, W16) in [0, 1]
        image = image[:, : payload.height, : payload.width]
        return (image.mul(255).round().byte().permute(1, 2, 0).cpu().numpy()).copy()
