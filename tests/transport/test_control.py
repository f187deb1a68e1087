"""Control messages: exact bytes, round trips and one exception type for malformed input."""

from __future__ import annotations

import pytest

from talkcodec.bitstream import BitstreamError, KeyframeCodecId, KeypointModelId, StreamHeader
from talkcodec.transport.control import (
    KeyframeRequest,
    KeyframeRequestReason,
    ReceiverReport,
    RefreshRequest,
    StreamHeaderMessage,
    parse_control,
)

HEADER = StreamHeader(256, 256, 25000, KeyframeCodecId.WEBP, KeypointModelId.MEDIAPIPE_478_V2,
                      300, 32)  # fmt: skip


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (StreamHeaderMessage(HEADER), b"\x01" + bytes(HEADER)),
        (KeyframeRequest(KeyframeRequestReason.NO_REFERENCE), b"\x02\x01"),
        (KeyframeRequest(KeyframeRequestReason.DECODE_ERROR), b"\x02\x02"),
        (RefreshRequest(0x1234), b"\x03\x12\x34"),
        (
            ReceiverReport(1, 2, 3, 4, 40, 90, 1000, 12345, 150, 26),
            bytes.fromhex("04 00000001 00000002 00000003 00000004 0028 005a")
            + bytes.fromhex("03e8 00003039 0096 1a"),  # 1000 ms, 12345 bit/s, 150 ms, 26/256
        ),
        (
            ReceiverReport(0, 0, 0, 0),  # the first report: nothing measured yet
            bytes.fromhex("04" + "00" * 16 + "ffff ffff 0000 00000000 ffff 00"),
        ),
    ],
)
def test_exact_bytes_and_round_trip(message: object, wire: bytes) -> None:
    assert bytes(message) == wire  # type: ignore[call-overload]
    assert parse_control(wire) == message


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"", "control message needs at least 1 byte, got 0"),
        (b"\x09", "unknown control kind 9"),
        (b"\x02", "keyframe request needs exactly 2 bytes, got 1"),
        (b"\x02\x07", "unknown keyframe request reason 7"),
        (b"\x03\x00\x00\x00", "refresh request needs exactly 3 bytes, got 4"),
        (b"\x04\x00", "receiver report needs exactly 30 bytes, got 2"),
        (b"\x04" + bytes(20), "receiver report needs exactly 30 bytes, got 21"),  # older receivers
        (b"\x01\x00", "stream header needs 13 bytes, got 1"),
    ],
)
def test_malformed_control_messages_raise_bitstream_error(wire: bytes, error: str) -> None:
    with pytest.raises(BitstreamError) as raised:
        parse_control(wire)
    assert str(raised.value) == error


def test_values_that_cannot_be_encoded_raise_value_error() -> None:
    with pytest.raises(ValueError, match="next_seq must be in 0..65535"):
        RefreshRequest(70000)
    with pytest.raises(ValueError, match="latency_p50_ms must be in 0..65535"):
        ReceiverReport(0, 0, 0, 0, latency_p50_ms=70000)
    with pytest.raises(ValueError, match="lost_per_256 must be in 0..255, got 256"):
        ReceiverReport(0, 0, 0, 0, lost_per_256=256)
