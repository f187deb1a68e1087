"""The low-res stream's x264 encoder and decoder: pictures in step, IDRs, losses, corrupt data."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from talkcodec.bitstream import BitstreamError, LowresCodecId, LowresPicture
from talkcodec.lowres.codec import LowresDecoder, LowresEncoder
from talkcodec.metrics import psnr

SIZE = (64, 64)


def _frames(count: int) -> list[np.ndarray]:
    """A (128, 128, 3) gradient scene drifting one pixel a frame."""
    yy, xx = np.mgrid[0:128, 0:128]
    scene = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).astype(np.uint8)
    return [np.roll(scene, index, axis=1) for index in range(count)]


def _pair(kbps: float = 40.0) -> tuple[LowresEncoder, LowresDecoder]:
    return LowresEncoder(SIZE, kbps, 25.0), LowresDecoder(LowresCodecId.H264, SIZE)


@pytest.mark.parametrize("side", [32, 48, 64, 96])
def test_pictures_decode_in_step_and_only_the_first_is_an_idr(side: int) -> None:
    encoder = LowresEncoder((side, side), 40.0, 25.0)
    decoder = LowresDecoder(LowresCodecId.H264, (side, side))
    pictures = [encoder.encode(frame, index * 40) for index, frame in enumerate(_frames(10))]
    assert [p.idr for p in pictures] == [True] + [False] * 9
    for picture, frame in zip(pictures, _frames(10), strict=True):
        # Through the wire format and back, as a receiver gets it.
        decoded = decoder.decode(LowresPicture.parse(bytes(picture)))
        assert decoded is not None and decoded.shape == (side, side, 3)
        small = cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA)
        assert psnr(small, decoded) > 25


def test_after_a_loss_the_decoder_waits_for_the_requested_idr() -> None:
    encoder, decoder = _pair()
    frames = _frames(8)
    for index in range(3):
        decoder.decode(encoder.encode(frames[index], index * 40))
    encoder.encode(frames[3], 120)  # lost
    decoder.reset()
    assert not decoder.synchronised
    assert decoder.decode(encoder.encode(frames[4], 160)) is None
    encoder.request_idr()
    picture = encoder.encode(frames[5], 200)
    assert picture.idr
    assert decoder.decode(picture) is not None and decoder.synchronised


def test_a_corrupt_picture_raises_the_bitstream_error_and_waits_for_an_idr() -> None:
    encoder, decoder = _pair()
    decoder.decode(encoder.encode(_frames(1)[0], 0))
    garbage = LowresPicture((b"\x41" + bytes(range(7, 60)),))
    with pytest.raises(BitstreamError, match="low-res picture"):
        decoder.decode(garbage)
    assert not decoder.synchronised


def test_rising_timestamps_are_kept_when_the_capture_clock_repeats_one() -> None:
    encoder, decoder = _pair()
    for frame in _frames(3):
        assert decoder.decode(encoder.encode(frame, 0)) is not None


def test_bad_sizes_and_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="even and >= 16"):
        LowresEncoder((63, 64), 4.0, 25.0)
    with pytest.raises(ValueError, match="> 0 kbit/s"):
        LowresEncoder(SIZE, 0.0, 25.0)


def test_an_idr_of_a_larger_picture_is_refused_before_it_is_decoded() -> None:
    large = LowresEncoder((128, 128), 40.0, 25.0).encode(_frames(1)[0], 0)
    decoder = LowresDecoder(LowresCodecId.H264, SIZE)
    with pytest.raises(BitstreamError, match="low-res picture"):
        decoder.decode(large)
    assert not decoder.synchronised


def test_a_new_rate_reopens_the_encoder_with_an_idr_and_lowers_the_bits() -> None:
    encoder, decoder = _pair(kbps=60.0)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    frames = [np.roll(noise, index, axis=1) for index in range(60)]
    high = [len(bytes(encoder.encode(f, i * 40))) for i, f in enumerate(frames[:30])]
    assert not encoder.set_kbps(55.0)  # less than a quarter: ignored
    assert encoder.set_kbps(10.0)
    pictures = [encoder.encode(f, (30 + i) * 40) for i, f in enumerate(frames[30:])]
    assert pictures[0].idr and not any(p.idr for p in pictures[1:])
    low = [len(bytes(p)) for p in pictures]
    assert np.mean(low[10:]) < np.mean(high[10:]) / 2
    for picture in pictures:
        assert decoder.decode(picture) is not None
