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
from talkcodec.keyframe.base import KeyframeCodec, check_image
from talkcodec.keyframe.gc.alphabet import DOWNSAMPLING
from talkcodec.keyframe.gc.latent_coder import (
    decode_cell_mask,
    decode_latent,
    encode_cell_mask,
    encode_latent,
)
from talkcodec.keyframe.gc.payload import GcPayload

if TYPE_CHECKING:
    from talkcodec.keyframe.gc.model import GCModel
    from talkcodec.keypoints.segmentation import PersonSegmenter

logger = logging.getLogger(__name__)

# Bounds what a corrupt or hostile header can make the decoder allocate and run.
MAX_PIXELS = 4096 * 4096


def default_weights_path() -> Path:
    from talkcodec.keyframe.gc.weights import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS


def _pad_to_cells(array: np.ndarray) -> np.ndarray:
    """(H, W, ...) -> (H16, W16, ...): the last row and column repeated up to multiples of 16."""
    height, width = array.shape[:2]
    padding = [(0, -height % DOWNSAMPLING), (0, -width % DOWNSAMPLING)]
    return np.pad(array, padding + [(0, 0)] * (array.ndim - 2), mode="edge")


def _channel_counts(cells: np.ndarray, channels: int, background_channels: int) -> np.ndarray:
    """(h, w) int64 channels sent per latent position for (h, w) bool person cells: the rule of
    selective.cell_channels, which training uses too."""
    import torch

    from talkcodec.keyframe.gc.selective import cell_channels

    counts = cell_channels(
        torch.from_numpy(np.asarray(cells, dtype=bool))[None], channels, background_channels
    )
    return counts[0].numpy()


class GCCodec(KeyframeCodec):
    """Generative compression (Agustsson et al. 2019): about 0.017-0.12 bit/pixel on faces.

    quality is the number of latent channels sent (2, 4, 8, 12 or 16 with the v3 weights; more is
    better and larger); the receiver reads it from the payload. The weights load on
    construction: FileNotFoundError names a missing file, ValueError one that is not GC weights.

    selective: send all `quality` channels only on the latent positions covered by the person
    (mediapipe selfie segmentation, selective.py) and the first `background_channels`
    (0 <= background_channels < quality) elsewhere; the generator synthesises the rest. The
    receiver needs no option: the payload says so. close() releases the segmenter.
    """

    name = "gc"
    wire_id = KeyframeCodecId.GC
    default_quality: ClassVar[int] = 8

    def __init__(
        self,
        quality: int | None = None,
        weights: str | Path | None = None,
        device: str = "cpu",
        selective: bool = False,
        background_channels: int = 0,
    ) -> None:
        from talkcodec.keyframe.gc.prior import table_probabilities
        from talkcodec.keyframe.gc.weights import load_weights

        self._shipped = weights is None  # may decode payloads of other shipped versions
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
        if not 0 <= background_channels < quality:
            raise ValueError(
                f"gc background channels must be in 0..{quality - 1} "
                f"(below the {quality} latent channels), got {background_channels}"
            )
        self.quality = quality
        self.selective = selective
        self.background_channels = background_channels
        self._segmenter: PersonSegmenter | None = None  # made on the first selective compress
        self._other_versions: dict[int, GCCodec] = {}

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

    def close(self) -> None:
        """Release the person segmenter, if selective compression made one."""
        if self._segmenter is not None:
            self._segmenter.close()
            self._segmenter = None

    def compress(self, image: np.ndarray, person_probability: np.ndarray | None = None) -> bytes:
        """The payload of `image`; in selective mode person_probability, (H, W) float in [0, 1]
        from a segmenter the caller already ran, saves running it again (ignored otherwise)."""
        import torch

        check_image(image)
        height, width = image.shape[:2]
        if not (1 <= height <= 0xFFFF and 1 <= width <= 0xFFFF and height * width <= MAX_PIXELS):
            raise ValueError(f"gc codes images up to {MAX_PIXELS} pixels, got {width}x{height}")
        padded = _pad_to_cells(image)
        tensor = torch.from_numpy(padded).permute(2, 0, 1)[None].float().div(255)
        with torch.inference_mode():
            symbols = self._model.analyse(tensor.to(self.device))[0, : self.quality]
        symbols_array = symbols.cpu().numpy()  # (k, h, w)
        if not self.selective:
            latent = encode_latent(symbols_array, self._probabilities)
            return bytes(GcPayload(self.version, self.quality, height, width, latent))
        if person_probability is not None:
            person_probability = np.asarray(person_probability)
            if person_probability.shape != (height, width):
                raise ValueError(
                    f"person probability must be ({height}, {width}) like the image, "
                    f"got {person_probability.shape}"
                )
            person_probability = _pad_to_cells(person_probability)
        cells = self._person_cells(padded, person_probability)  # (h, w) bool
        counts = _channel_counts(cells, self.quality, self.background_channels)
        latent = encode_latent(symbols_array, self._probabilities, counts)
        mask = encode_cell_mask(cells)
        return bytes(
            GcPayload(
                self.version, self.quality, height, width, latent, self.background_channels, mask
            )
        )

    def _person_cells(self, padded: np.ndarray, probability: np.ndarray | None) -> np.ndarray:
        """(h, w) bool person cells of a (H16, W16, 3) uint8 image padded to multiples of 16,
        from its (H16, W16) person probability or, if None, the person segmenter's."""
        import torch

        from talkcodec.keyframe.gc.selective import person_cells

        if probability is None:
            if self._segmenter is None:
                from talkcodec.keypoints.segmentation import PersonSegmenter

                self._segmenter = PersonSegmenter()
            probability = self._segmenter(padded)
        tensor = torch.from_numpy(np.array(probability, dtype=np.float32))  # (H16, W16)
        return person_cells(tensor[None, None])[0].numpy()

    def decode_symbols(self, data: bytes) -> tuple[GcPayload, np.ndarray]:
        """The parsed payload and its (k, h, w) int64 symbols; BitstreamError if corrupt.

        In a selective payload the symbols that were not sent are 0 (see decode_latent_counts).
        """
        payload, symbols, _ = self.decode_latent_counts(data)
        return payload, symbols

    def decode_latent_counts(self, data: bytes) -> tuple[GcPayload, np.ndarray, np.ndarray]:
        """The parsed payload, its (k, h, w) int64 symbols (0 where not sent) and the (h, w)
        int64 number of channels sent at each position (k everywhere unless selective)."""
        payload = self._checked_payload(data)
        channels, rows, columns = payload.latent_shape
        if payload.background_channels is None:
            counts = np.full((rows, columns), channels, dtype=np.int64)
            symbols = decode_latent(payload.latent, self._probabilities, payload.latent_shape)
            return payload, symbols, counts
        try:
            cells = decode_cell_mask(payload.mask, (rows, columns))  # (h, w) bool
        except BitstreamError as error:
            raise BitstreamError(f"GC payload person mask is unreadable: {error}") from None
        counts = _channel_counts(cells, channels, payload.background_channels)
        symbols = decode_latent(payload.latent, self._probabilities, payload.latent_shape, counts)
        return payload, symbols, counts

    def _codec_for_version(self, version: int) -> GCCodec | None:
        """A codec with the shipped weights of another `version`, when this one uses the shipped
        weights and that version was released; None otherwise (the version check then reports
        the mismatch)."""
        from talkcodec.keyframe.gc.weights import SHIPPED_WEIGHTS

        if version == self.version or not self._shipped:
            return None
        if version not in self._other_versions:
            path = SHIPPED_WEIGHTS.get(version)
            if path is None or not path.is_file():
                return None
            self._other_versions[version] = GCCodec(weights=path, device=self.device)
        return self._other_versions[version]

    def _checked_payload(self, data: bytes) -> GcPayload:
        """The parsed payload, if these weights can decode it; BitstreamError otherwise."""
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
        return payload

    def image_size(self, data: bytes) -> tuple[int, int]:
        if not data:
            raise BitstreamError("gc keyframe is empty")
        payload = GcPayload.parse(data)
        return payload.height, payload.width

    def decompress(self, data: bytes) -> np.ndarray:
        import torch

        if not data:
            raise BitstreamError("gc keyframe is empty")
        other = self._codec_for_version(GcPayload.parse(data).version)
        if other is not None:
            return other.decompress(data)
        payload, symbols, counts = self.decode_latent_counts(data)
        tensor = torch.from_numpy(symbols)[None].to(self.device)
        selective_counts = (
            torch.from_numpy(counts)[None].to(self.device) if payload.selective else None
        )
        with torch.inference_mode():
            image = self._model.synthesise(tensor, selective_counts)[0]  # (3, H16, W16) in [0, 1]
        image = image[:, : payload.height, : payload.width]
        return (image.mul(255).round().byte().permute(1, 2, 0).cpu().numpy()).copy()
