"""talkcodec.transport.overhead: exact byte counts for given frame and message sizes."""

from __future__ import annotations

import pytest

from talkcodec.transport.overhead import (
    RTP_PACKET_OVERHEAD_BYTES,
    SCTP_MAX_USER_DATA_BYTES,
    SCTP_PACKET_OVERHEAD_BYTES,
    WireCost,
    datachannel_message_cost,
    datachannel_stream_cost,
    rtp_frame_cost,
    rtp_stream_cost,
)


def test_per_packet_overheads_add_up_from_the_headers() -> None:
    assert RTP_PACKET_OVERHEAD_BYTES == 20 + 8 + 12 + 10
    assert SCTP_PACKET_OVERHEAD_BYTES == 20 + 8 + 37 + 12 + 16
    assert SCTP_MAX_USER_DATA_BYTES == 1172


@pytest.mark.parametrize(
    ("frame_bytes", "packets"), [(0, 0), (1, 1), (1200, 1), (1201, 2), (2400, 2), (2401, 3)]
)
def test_rtp_fragments_frames_at_1200_payload_bytes(frame_bytes: int, packets: int) -> None:
    assert rtp_frame_cost(frame_bytes) == WireCost(frame_bytes, packets, frame_bytes + 50 * packets)


def test_rtp_stream_of_frames() -> None:
    # A 3000-byte keyframe (3 packets) and three small frames (1 packet each).
    cost = rtp_stream_cost([3000, 40, 12, 75])
    assert cost == WireCost(3127, 6, 3127 + 6 * 50)


@pytest.mark.parametrize(
    ("message_bytes", "wire_bytes"),
    [
        (0, 4 + 93),  # an empty message still takes a (padded) one-byte chunk
        (1, 4 + 93),
        (13, 16 + 93),  # chunk padded to a multiple of 4
        (16, 16 + 93),
        (1172, 1172 + 93),
        (1173, 1172 + 4 + 2 * 93),  # second fragment of 1 byte, padded to 4
        (2400, 1172 + 1172 + 56 + 3 * 93),
    ],
)
def test_datachannel_message_cost(message_bytes: int, wire_bytes: int) -> None:
    cost = datachannel_message_cost(message_bytes)
    assert cost.payload_bytes == message_bytes
    assert cost.wire_bytes == wire_bytes
    assert cost.packets == max(1, -(-message_bytes // 1172))


def test_datachannel_stream_of_talkcodec_packets() -> None:
    # One keyframe message of 4000 bytes (4 fragments: 3 x 1172 + 484) then 8-byte-header
    # keypoint messages of 15 and 9 bytes.
    cost = datachannel_stream_cost([4000, 15, 9])
    assert cost.payload_bytes == 4024
    assert cost.packets == 6
    assert cost.wire_bytes == (3 * 1172 + 484) + 16 + 12 + 6 * 93


def test_negative_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="a frame or message cannot have -1 bytes"):
        rtp_frame_cost(-1)
