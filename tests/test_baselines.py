"""talkcodec.baselines: tiny round trips through each classical codec, and the byte counting."""

from __future__ import annotations

import numpy as np
import pytest

from talkcodec.baselines import BASELINE_CODECS, annexb_nal_units, encode_decode
from talkcodec.metrics import psnr


def moving_frames(count: int = 10, size: int = 64) -> np.ndarray:
    """(count, size, size, 3) uint8: a bright square gliding over a gradient."""
    y, x = np.mgrid[0:size, 0:size]
    background = np.stack([x * 3, y * 3, (x + y) * 2], axis=-1).clip(0, 255).astype(np.uint8)
    frames = np.repeat(background[None], count, axis=0)
    for index in range(count):
        frames[index, 20:36, 10 + 2 * index : 26 + 2 * index] = (250, 240, 40)
    return frames


@pytest.mark.parametrize("codec", sorted(BASELINE_CODECS))
def test_round_trip_keeps_every_frame(codec: str) -> None:
    frames = moving_frames()
    result = encode_decode(frames, codec, kbps=200)
    assert result.decoded.shape == frames.shape
    assert result.dropped_frames == 0
    assert result.frame_bytes.shape == result.encoder_bytes.shape == (10,)
    assert np.all(result.frame_bytes > 0)
    assert np.all(result.frame_bytes <= result.encoder_bytes)
    # The first frame is the only keyframe, so it is the largest.
    assert result.frame_bytes[0] == result.frame_bytes.max()
    assert result.kbit_per_s() == pytest.approx(result.frame_bytes.sum() * 8 * 25 / 10 / 1000)
    assert np.mean([psnr(a, b) for a, b in zip(frames, result.decoded, strict=True)]) > 25


def test_h264_bytes_sent_leave_out_start_codes_and_the_encoder_sei() -> None:
    result = encode_decode(moving_frames(), "h264", kbps=200)
    # x264 writes its settings (several hundred bytes) into an SEI in the first packet.
    assert result.encoder_bytes[0] - result.frame_bytes[0] > 300
    # Later frames: one slice NAL unit each, only its 4-byte start code is dropped.
    assert np.all(result.encoder_bytes[1:] - result.frame_bytes[1:] == 4)


def test_annexb_nal_units() -> None:
    stream = b"\x00\x00\x00\x01\x67\xaa\xbb\x00\x00\x01\x68\xcc\x00\x00\x00\x01\x65\x01\x02"
    assert annexb_nal_units(stream) == [b"\x67\xaa\xbb", b"\x68\xcc", b"\x65\x01\x02"]


def test_unknown_codec_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown baseline codec 'h266'; choose one of h264, "):
        encode_decode(moving_frames(2), "h266", kbps=100)


def test_reduced_resolution_codes_small_and_shows_full_size() -> None:
    """scale_px: frames of 128 px coded at 64x64 (fewer bytes at the same generous target)
    come back at 128 px."""
    frames = moving_frames(12, size=128)
    full = encode_decode(frames, "h264", 300, 25.0)
    small = encode_decode(frames, "h264", 300, 25.0, scale_px=64)
    assert small.decoded.shape == full.decoded.shape == frames.shape
    assert small.frame_bytes.sum() < full.frame_bytes.sum()
    assert psnr(frames[-1], small.decoded[-1]) > 20
    with pytest.raises(ValueError, match="scale_px must be even and >= 16"):
        encode_decode(frames, "h264", 300, 25.0, scale_px=15)
