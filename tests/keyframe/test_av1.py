"""talkcodec.keyframe.av1: round-trip quality floors, the sequence header's size, exact errors,
and corrupt payloads raising only BitstreamError."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from test_classic import psnr, smooth_image_with_edges

from talkcodec.bitstream import BitstreamError
from talkcodec.keyframe import Av1Codec, keyframe_codec_for_wire_id, make_keyframe_codec
from talkcodec.keyframe.av1 import sequence_header_size


@pytest.fixture(scope="module")
def payload() -> bytes:
    return Av1Codec().compress(smooth_image_with_edges(256, 256))


# Measured: 31.58 / 34.44 dB at quality 40 (the default), 30.32 / 33.47 at 24 (a hybrid
# stream's default), 1.8 / 3.3 KB and 1.0 / 1.8 KB.
@pytest.mark.parametrize(
    ("quality", "size", "floor_db", "max_bytes"),
    [(40, 256, 31.0, 2100), (40, 512, 34.0, 3800), (24, 256, 29.8, 1200), (24, 512, 33.0, 2000)],
)
def test_round_trip_quality_floor(quality: int, size: int, floor_db: float, max_bytes: int) -> None:
    codec = make_keyframe_codec("av1", quality)
    image = smooth_image_with_edges(size, size)
    data = codec.compress(image)
    decoded = codec.decompress(data)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert psnr(image, decoded) >= floor_db
    assert len(data) <= max_bytes


def test_a_higher_quality_is_larger_and_better() -> None:
    image = smooth_image_with_edges(128, 128)
    results = []
    for quality in (10, 30, 50):
        data = Av1Codec(quality).compress(image)
        results.append((len(data), psnr(image, Av1Codec().decompress(data))))
    assert [r[0] for r in results] == sorted(r[0] for r in results)
    assert [r[1] for r in results] == sorted(r[1] for r in results)


def test_the_payload_starts_with_the_sequence_header(payload: bytes) -> None:
    assert payload[0] == 0x0A  # OBU type 1 (sequence header) with its size field
    assert Av1Codec().image_size(payload) == (256, 256)


@pytest.mark.parametrize(("height", "width"), [(61, 101), (4, 4), (48, 320)])
def test_any_size_round_trips_and_its_header_says_it(height: int, width: int) -> None:
    image = smooth_image_with_edges(height, width)
    data = Av1Codec().compress(image)
    assert sequence_header_size(data) == (height, width)
    assert Av1Codec().decompress(data).shape == (height, width, 3)


def test_colour_order_is_rgb() -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[..., 0] = 220  # pure red in RGB
    decoded = Av1Codec().decompress(Av1Codec().compress(image))
    assert np.abs(decoded.astype(int) - image).max() <= 6


def test_the_wire_id_decodes_with_this_codec(payload: bytes) -> None:
    codec = keyframe_codec_for_wire_id(4)
    assert isinstance(codec, Av1Codec)
    assert codec.decompress(payload).shape == (256, 256, 3)


@pytest.mark.parametrize("quality", [-1, 63, 100])
def test_quality_out_of_range_raises(quality: int) -> None:
    with pytest.raises(ValueError, match=f"^av1 quality must be in 0..62, got {quality}$"):
        Av1Codec(quality)


@pytest.mark.parametrize(("height", "width"), [(3, 64), (64, 2), (4097, 16)])
def test_a_size_out_of_range_raises(height: int, width: int) -> None:
    image = np.zeros((height, width, 3), dtype=np.uint8)
    message = f"av1 codes sides of 4 to 4096 px, got {width}x{height}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Av1Codec().compress(image)


def test_a_non_rgb_image_raises() -> None:
    with pytest.raises(ValueError, match="^keyframe must be"):
        Av1Codec().compress(np.zeros((16, 16), dtype=np.uint8))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "av1 keyframe is empty"),
        (b"\x12\x00\x0a\x0b", "av1 keyframe must start with a sequence header OBU, got type 2"),
        (b"\x8a\x00", "av1 keyframe starts with OBU header 0x8a: forbidden bit set"),
        (b"\x08\x00", "av1 keyframe's first OBU has no size field"),
        (b"\x0a\x80", "av1 keyframe ends inside an OBU size field"),
        (b"\x0a" + b"\xff" * 8, "av1 keyframe has an OBU size field over 8 bytes"),
        (b"\x0a\x0b\x02\x00", "av1 keyframe's first OBU says 11 bytes, 2 follow"),
        (b"\x0a\x01\x02", "av1 sequence header is truncated"),
        (b"\x0a\x01\xe0", "av1 sequence header has profile 7: 0 to 2 exist"),
    ],
)
def test_a_malformed_header_raises_an_exact_error(data: bytes, message: str) -> None:
    with pytest.raises(BitstreamError, match=f"^{re.escape(message)}$"):
        Av1Codec().image_size(data)
    with pytest.raises(BitstreamError, match=f"^{re.escape(message)}$"):
        Av1Codec().decompress(data)


def test_a_header_over_the_size_limit_is_refused_before_decoding() -> None:
    header = _sequence_header(width=8192, height=64)
    assert sequence_header_size(header) == (64, 8192)
    message = "av1 keyframe says 8192x64: sides over 4096 px are refused"
    with pytest.raises(BitstreamError, match=f"^{re.escape(message)}$"):
        Av1Codec().decompress(header)


def test_a_header_without_a_picture_decodes_to_nothing() -> None:
    header = _sequence_header(width=64, height=64)
    with pytest.raises(BitstreamError, match=r"^av1 keyframe (decodes to nothing|of \d+ bytes)"):
        Av1Codec().decompress(header)


def test_corrupt_payloads_raise_only_bitstream_errors(payload: bytes) -> None:
    rng = np.random.default_rng(7)
    outcomes = {"decoded": 0, "refused": 0}
    for trial in range(300):
        data = bytearray(payload)
        if trial % 3 == 0:
            data = data[: rng.integers(len(data))]
        elif trial % 3 == 1:
            for _ in range(rng.integers(1, 5)):
                data[rng.integers(len(data))] ^= 1 << rng.integers(8)
        else:
            tail = rng.integers(0, 256, rng.integers(1, 64), dtype=np.uint8).tobytes()
            data[rng.integers(len(data)) :] = tail
        try:
            decoded = Av1Codec().decompress(bytes(data))
        except BitstreamError:
            outcomes["refused"] += 1
        else:
            assert decoded.shape == (256, 256, 3)
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 100  # most corruptions are caught, none escapes another way


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def put(self, value: int, count: int) -> None:
        self.bits += [(value >> (count - 1 - k)) & 1 for k in range(count)]

    def obu(self, obu_type: int) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        payload = bytes(int("".join(map(str, bits[k : k + 8])), 2) for k in range(0, len(bits), 8))
        assert len(payload) < 128
        return bytes([obu_type << 3 | 0x02, len(payload)]) + payload


def _sequence_header(width: int, height: int, reduced: bool = False, timing: bool = False) -> bytes:
    """A sequence header OBU (AV1 spec 5.5) with the fields the size parser must read past:
    a reduced still-picture one, or a full one with (timing) timing info, a decoder model and
    two operating points, one with a high level (tier bit)."""
    w = _BitWriter()
    w.put(0, 3)  # seq_profile
    w.put(1, 1)  # still_picture
    w.put(int(reduced), 1)
    if reduced:
        w.put(8, 5)  # seq_level_idx[0]
    else:
        w.put(int(timing), 1)  # timing_info_present_flag
        if timing:
            w.put(1, 32)
            w.put(25, 32)
            w.put(1, 1)  # equal_picture_interval
            w.put(0b00101, 5)  # uvlc: two leading zeros, then 1 and 2 bits (value 4)
            w.put(1, 1)  # decoder_model_info_present_flag
            w.put(9, 5)  # buffer_delay_length_minus_1: 10-bit delays
            w.put(1, 32)
            w.put(3, 5)
            w.put(3, 5)
        w.put(1, 1)  # initial_display_delay_present_flag
        w.put(1, 5)  # operating_points_cnt_minus_1: two
        for level in (12, 4):
            w.put(0, 12)  # operating_point_idc
            w.put(level, 5)
            if level > 7:
                w.put(1, 1)  # seq_tier
            if timing:
                w.put(1, 1)  # decoder_model_present_for_this_op
                w.put(100, 10)
                w.put(200, 10)
                w.put(0, 1)
            w.put(1, 1)  # initial_display_delay_present_for_this_op
            w.put(3, 4)
    bits = max(width - 1, height - 1).bit_length() or 1
    w.put(bits - 1, 4)
    w.put(bits - 1, 4)
    w.put(width - 1, bits)
    w.put(height - 1, bits)
    w.put(0, 8)  # the rest of the header, which the size parser never reads
    return w.obu(1)


@pytest.mark.parametrize(("reduced", "timing"), [(True, False), (False, False), (False, True)])
def test_the_size_parser_reads_past_every_optional_field(reduced: bool, timing: bool) -> None:
    for width, height in [(256, 256), (1, 1), (4096, 17)]:
        header = _sequence_header(width, height, reduced, timing)
        assert sequence_header_size(header) == (height, width)


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling only")
def test_coding_leaves_the_calling_threads_scheduling_as_it_was() -> None:
    # As root, SVT-AV1 makes the thread that opens an encoder SCHED_FIFO at priority 99.
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    Av1Codec().compress(smooth_image_with_edges(64, 64))
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
