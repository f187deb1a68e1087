"""Classical keyframe codecs (WebP, JPEG) through OpenCV's image coders."""

from __future__ import annotations

import io
import struct
import warnings
from abc import abstractmethod
from typing import ClassVar

import cv2
import numpy as np
from PIL import Image

from talkcodec.bitstream import BitstreamError, KeyframeCodecId
from talkcodec.keyframe.base import KeyframeCodec, check_image

_MIN_QUALITY, _MAX_QUALITY = 1, 100


class _OpenCvCodec(KeyframeCodec):
    """Shared cv2.imencode/imdecode plumbing; subclasses say how to spot a complete stream.

    OpenCV decodes a truncated JPEG into a half-grey picture without complaint, so each codec
    checks its own container framing before decoding.
    """

    default_quality: ClassVar[int]
    _extension: ClassVar[str]
    _pillow_format: ClassVar[str]
    _quality_flag: ClassVar[int]

    def __init__(self, quality: int | None = None) -> None:
        """quality: 1..100, higher is better and larger; None picks the codec's default."""
        quality = self.default_quality if quality is None else quality
        if not _MIN_QUALITY <= quality <= _MAX_QUALITY:
            raise ValueError(
                f"{self.name} quality must be in {_MIN_QUALITY}..{_MAX_QUALITY}, got {quality}"
            )
        self.quality = quality

    def compress(self, image: np.ndarray) -> bytes:
        check_image(image)
        bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
        try:
            ok, encoded = cv2.imencode(self._extension, bgr, [self._quality_flag, self.quality])
        except cv2.error as error:
            raise ValueError(f"{self.name} cannot code a {image.shape} image") from error
        if not ok:
            raise ValueError(f"{self.name} cannot code a {image.shape} image")
        return encoded.tobytes()

    def image_size(self, data: bytes) -> tuple[int, int]:
        if not data:
            raise BitstreamError(f"{self.name} keyframe is empty")
        self._check_framing(data)
        try:
            # Pillow reads only the header here; a huge size is what this check is for, so its
            # decompression-bomb guard must not turn it into a warning or an exception.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data), formats=[self._pillow_format]) as image:
                    width, height = image.size
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as error:
            raise BitstreamError(
                f"{self.name} keyframe of {len(data)} bytes has no readable header: {error}"
            ) from None
        except Image.DecompressionBombError:
            raise BitstreamError(f"{self.name} keyframe says it is over 178 megapixels") from None
        return height, width

    def decompress(self, data: bytes) -> np.ndarray:
        if not data:
            raise BitstreamError(f"{self.name} keyframe is empty")
        self._check_framing(data)
        buffer = np.frombuffer(data, dtype=np.uint8)
        try:
            bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        except cv2.error:
            bgr = None
        if bgr is None:
            raise BitstreamError(f"{self.name} keyframe of {len(data)} bytes could not be decoded")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3) uint8

    @abstractmethod
    def _check_framing(self, data: bytes) -> None:
        """Raise BitstreamError unless `data` looks like one complete stream of this format."""


class WebPCodec(_OpenCvCodec):
    """Lossy WebP (VP8 intra coding): the smaller of the two at equal quality."""

    name = "webp"
    wire_id = KeyframeCodecId.WEBP
    default_quality = 80
    _extension = ".webp"
    _pillow_format = "WEBP"
    _quality_flag = cv2.IMWRITE_WEBP_QUALITY
    # RIFF container: b"RIFF" | payload size u32 little-endian | b"WEBP" | chunks.
    _RIFF = struct.Struct("<4sI4s")

    def _check_framing(self, data: bytes) -> None:
        if len(data) < self._RIFF.size:
            raise BitstreamError(
                f"webp keyframe needs at least {self._RIFF.size} bytes, got {len(data)}"
            )
        riff, payload_size, webp = self._RIFF.unpack_from(data)
        if riff != b"RIFF" or webp != b"WEBP":
            raise BitstreamError(
                f"webp keyframe must start with RIFF....WEBP, got {data[:12].hex()}"
            )
        expected = payload_size + 8
        if len(data) != expected:
            raise BitstreamError(f"webp keyframe header says {expected} bytes, got {len(data)}")


class JpegCodec(_OpenCvCodec):
    """Baseline JPEG; the fallback every peer can decode."""

    name = "jpeg"
    wire_id = KeyframeCodecId.JPEG
    default_quality = 85
    _extension = ".jpg"
    _pillow_format = "JPEG"
    _quality_flag = cv2.IMWRITE_JPEG_QUALITY
    _START_OF_IMAGE = b"\xff\xd8"
    _END_OF_IMAGE = b"\xff\xd9"

    def _check_framing(self, data: bytes) -> None:
        if not data.startswith(self._START_OF_IMAGE):
            raise BitstreamError(
                f"jpeg keyframe must start with ffd8 (start of image), got {data[:2].hex()}"
            )
        if not data.endswith(self._END_OF_IMAGE):
            raise BitstreamError(
                f"jpeg keyframe must end with ffd9 (end of image), got {data[-2:].hex()}"
            )
