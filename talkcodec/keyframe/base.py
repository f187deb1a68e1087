"""The interface every keyframe (still image) codec implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from talkcodec.bitstream import KeyframeCodecId


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless `image` is what every codec's compress takes: (H, W, 3) uint8 RGB."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"keyframe must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")


class KeyframeCodec(ABC):
    """Codes the one reference image the receiver warps for every later frame.

    `wire_id` is the explicit constant written into KEYFRAME packets; it never changes once
    shipped, so a stream stays decodable when codecs are added.
    """

    name: ClassVar[str]
    wire_id: ClassVar[KeyframeCodecId]

    @abstractmethod
    def __init__(self, quality: int | None = None) -> None:
        """quality: the codec's rate knob, higher is better and larger; None picks its default.

        Decoding never needs it, so a receiver default-constructs the codec.
        """

    @abstractmethod
    def compress(self, image: np.ndarray) -> bytes:
        """The coded bytes of `image` ((H, W, 3) uint8 RGB, any size)."""

    @abstractmethod
    def image_size(self, data: bytes) -> tuple[int, int]:
        """(height, width) of the image coded in `data`, read from its header alone, without
        decoding: a receiver checks it before it lets a decoder allocate for the image.

        Raises BitstreamError when `data` has no readable header of this codec.
        """

    @abstractmethod
    def decompress(self, data: bytes) -> np.ndarray:
        """The (H, W, 3) uint8 RGB image coded in `data`.

        Raises BitstreamError with a one-line message when `data` is empty, corrupt or cannot
        be decoded.
        """
