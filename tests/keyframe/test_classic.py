"""talkcodec.keyframe: WebP/JPEG round-trip quality floors, exact errors, and the registry."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from talkcodec.bitstream import BitstreamError, KeyframeCodecId
from talkcodec.keyframe import (
    KEYFRAME_CODECS,
    JpegCodec,
    KeyframeCodec,
    WebPCodec,
    keyframe_codec_for_wire_id,
    make_keyframe_codec,
)


def smooth_image_with_edges(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB: colour gradients with three anti-aliased discs on top."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, (x + y) / (width + height)], axis=2) * 255
    discs = [((0.3, 0.3), 0.15, (255, 0, 0)), ((0.7, 0.6), 0.2, (0, 0, 255))]
    discs.append(((0.5, 0.8), 0.1, (20, 200, 40)))
    for (cx, cy), radius, colour in discs:
        centre = (int(cx * width), int(cy * height))
        cv2.circle(image, centre, int(radius * min(height, width)), colour, -1, cv2.LINE_AA)
    return image.astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


# Measured at the default qualities (WebP 80, JPEG 85): 32.2 / 35.2 dB and 31.7 / 34.7 dB.
# Chroma subsampling at the saturated disc edges is what keeps them this low.
@pytest.mark.parametrize(
    ("name", "size", "floor_db"),
    [("webp", 256, 31.5), ("webp", 512, 34.5), ("jpeg", 256, 31.0), ("jpeg", 512, 34.0)],
)
def test_round_trip_quality_floor(name: str, size: int, floor_db: float) -> None:
    codec = make_keyframe_codec(name)
    image = smooth_image_with_edges(size, size)
    decoded = codec.decompress(codec.compress(image))
    assert decoded.shape == image.shape
    assert decoded.dtype == np.uint8
    assert psnr(image, decoded) >= floor_db


@pytest.mark.parametrize("codec_class", [WebPCodec, JpegCodec])
def test_colour_order_is_rgb(codec_class: type[KeyframeCodec]) -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[..., 0] = 220  # pure red in RGB
    decoded = codec_class().decompress(codec_class().compress(image))
    assert np.abs(decoded.astype(int) - image).max() <= 4


@pytest.mark.parametrize("codec_class", [WebPCodec, JpegCodec])
def test_odd_sizes_round_trip(codec_class: type[KeyframeCodec]) -> None:
    image = smooth_image_with_edges(37, 53)
    assert codec_class().decompress(codec_class().compress(image)).shape == (37, 53, 3)


@pytest.mark.parametrize("name", ["webp", "jpeg"])
def test_size_shrinks_with_quality(name: str) -> None:
    image = smooth_image_with_edges(256, 256)
    sizes = [len(make_keyframe_codec(name, quality).compress(image)) for quality in (95, 60, 20)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_default_qualities() -> None:
    assert WebPCodec().quality == 80
    assert JpegCodec().quality == 85


@pytest.mark.parametrize("quality", [0, 101])
def test_quality_out_of_range(quality: int) -> None:
    with pytest.raises(ValueError, match=rf"^webp quality must be in 1\.\.100, got {quality}$"):
        WebPCodec(quality)


def test_compress_rejects_non_rgb_uint8() -> None:
    with pytest.raises(ValueError, match="must be"):
        JpegCodec().compress(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="must be"):
        JpegCodec().compress(np.zeros((8, 8, 3), dtype=np.float32))


@pytest.fixture(scope="module")
def webp_bytes() -> bytes:
    return WebPCodec().compress(smooth_image_with_edges(128, 128))


@pytest.fixture(scope="module")
def jpeg_bytes() -> bytes:
    return JpegCodec().compress(smooth_image_with_edges(128, 128))


@pytest.mark.parametrize("codec_class", [WebPCodec, JpegCodec])
def test_empty_raises(codec_class: type[KeyframeCodec]) -> None:
    with pytest.raises(BitstreamError, match=f"^{codec_class.name} keyframe is empty$"):
        codec_class().decompress(b"")


def test_webp_garbage_raises() -> None:
    garbage = b"not an image at all"
    message = f"webp keyframe must start with RIFF....WEBP, got {garbage[:12].hex()}"
    with pytest.raises(BitstreamError, match=f"^{re.escape(message)}$"):
        WebPCodec().decompress(garbage)


def test_webp_too_short_raises() -> None:
    with pytest.raises(BitstreamError, match="^webp keyframe needs at least 12 bytes, got 4$"):
        WebPCodec().decompress(b"RIFF")


def test_webp_truncated_raises(webp_bytes: bytes) -> None:
    half = webp_bytes[: len(webp_bytes) // 2]
    message = f"webp keyframe header says {len(webp_bytes)} bytes, got {len(half)}"
    with pytest.raises(BitstreamError, match=f"^{message}$"):
        WebPCodec().decompress(half)


def test_webp_corrupt_body_raises(webp_bytes: bytes) -> None:
    corrupt = webp_bytes[:20] + bytes(len(webp_bytes) - 20)
    message = f"webp keyframe of {len(corrupt)} bytes could not be decoded"
    with pytest.raises(BitstreamError, match=f"^{message}$"):
        WebPCodec().decompress(corrupt)


def test_webp_rejects_jpeg(jpeg_bytes: bytes) -> None:
    with pytest.raises(BitstreamError, match="^webp keyframe must start with RIFF....WEBP"):
        WebPCodec().decompress(jpeg_bytes)


def test_jpeg_rejects_webp(webp_bytes: bytes) -> None:
    message = "jpeg keyframe must start with ffd8 (start of image), got 5249"
    with pytest.raises(BitstreamError, match=f"^{re.escape(message)}$"):
        JpegCodec().decompress(webp_bytes)


def test_jpeg_truncated_raises(jpeg_bytes: bytes) -> None:
    half = jpeg_bytes[: len(jpeg_bytes) // 2]
    message = f"jpeg keyframe must end with ffd9 (end of image), got {half[-2:].hex()}"
    with pytest.raises(BitstreamError, match=f"^{re.escape(message)}$"):
        JpegCodec().decompress(half)


def test_jpeg_without_body_raises() -> None:
    with pytest.raises(BitstreamError, match="^jpeg keyframe of 4 bytes could not be decoded$"):
        JpegCodec().decompress(b"\xff\xd8\xff\xd9")


def test_registry_names_and_wire_ids_are_consistent() -> None:
    assert list(KEYFRAME_CODECS) == ["webp", "jpeg", "gc", "av1"]
    for name, codec_class in KEYFRAME_CODECS.items():
        assert codec_class.name == name
    assert WebPCodec.wire_id == KeyframeCodecId.WEBP == 1
    assert JpegCodec.wire_id == KeyframeCodecId.JPEG == 2
    assert KEYFRAME_CODECS["gc"].wire_id == KeyframeCodecId.GC == 3
    assert KEYFRAME_CODECS["av1"].wire_id == KeyframeCodecId.AV1 == 4


def test_make_unknown_codec_raises() -> None:
    with pytest.raises(
        ValueError, match="^unknown keyframe codec 'png'; choose one of webp, jpeg, gc, av1$"
    ):
        make_keyframe_codec("png")


def test_make_codec_with_quality() -> None:
    codec = make_keyframe_codec("jpeg", 40)
    assert isinstance(codec, JpegCodec)
    assert codec.quality == 40


@pytest.mark.parametrize(("wire_id", "codec_class"), [(1, WebPCodec), (2, JpegCodec)])
def test_codec_for_wire_id(wire_id: int, codec_class: type[KeyframeCodec]) -> None:
    assert type(keyframe_codec_for_wire_id(wire_id)) is codec_class


def test_wire_id_not_in_this_build_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(KEYFRAME_CODECS, "gc")  # as a build without the learned codec
    message = "keyframe codec id 3 (GC) is not available in this build"
    with pytest.raises(BitstreamError, match=f"^{re.escape(message)}$"):
        keyframe_codec_for_wire_id(3)


@pytest.mark.parametrize("wire_id", [0, 9, 255])
def test_unknown_wire_id_raises(wire_id: int) -> None:
    with pytest.raises(BitstreamError, match=f"^unknown keyframe codec id {wire_id}$"):
        keyframe_codec_for_wire_id(wire_id)
