"""talkcodec.transport.overhead: exact byte counts for given frame and message sizes."""

from __future__ import annotations

import pytest

from talkcodec.transport.overhead import (
    RTP_PACKET_OVERHEAD_BYTES,
    SCTP_MAX_USER_DATA_BYTES,
    SCTP_PACKET_OVERHEAD_BYTES,
    WireCost,
    datachannel_message_cost,
    datachannel_packet_bytes,
    datachannel_stream_cost,
    rtp_frame_cost,
    rtp_stream_cost,
)


def test_per_packet_overheads_add_up_from_the_headers() -> None:
    assert RTP_PACKET_OVERHEAD_BYTES == 20 + 8 + 12 + 10
    assert SCTP_PACKET_OVERHEAD_BYTES == 20 + 8 + 29 + 12 + 16  # DTLS with ChaCha20-Poly1305
    assert SCTP_MAX_USER_DATA_BYTES == 1160  # aiortc's 1189-byte SCTP packets


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
        (0, 4 + 85),  # an empty message still takes a (padded) one-byte chunk
        (1, 4 + 85),
        (13, 16 + 85),  # chunk padded to a multiple of 4
        (16, 16 + 85),
        (1160, 1160 + 85),
        (1161, 1160 + 4 + 2 * 85),  # second fragment of 1 byte, padded to 4
        (2400, 1160 + 1160 + 80 + 3 * 85),
    ],
)
def test_datachannel_message_cost(message_bytes: int, wire_bytes: int) -> None:
    cost = datachannel_message_cost(message_bytes)
    assert cost.payload_bytes == message_bytes
    assert cost.wire_bytes == wire_bytes
    assert cost.packets == max(1, -(-message_bytes // 1160))


def test_datachannel_stream_of_talkcodec_packets() -> None:
    # One keyframe message of 4000 bytes (4 fragments: 3 x 1160 + 520) then 8-byte-header
    # keypoint messages of 15 and 9 bytes.
    cost = datachannel_stream_cost([4000, 15, 9])
    assert cost.payload_bytes == 4024
    assert cost.packets == 6
    assert cost.wire_bytes == (3 * 1160 + 520) + 16 + 12 + 6 * 85


def test_negative_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="a frame or message cannot have -1 bytes"):
        rtp_frame_cost(-1)


def test_the_data_channel_model_matches_the_datagrams_of_a_live_connection() -> None:
    """Two talkcodec peers negotiate ChaCha20-Poly1305, and each message of 1 to 3000 bytes on
    the keypoints channel leaves as UDP datagrams whose sizes (plus UDP/IPv4) are the model's."""
    import asyncio

    from talkcodec.transport.overhead import IPV4_HEADER_BYTES, UDP_HEADER_BYTES
    from talkcodec.transport.peer import (
        PREFERRED_DTLS_CIPHER,
        connect_in_process,
        create_channels,
        make_peer_connection,
        negotiated_cipher,
        wait_open,
    )

    async def probe() -> tuple[str | None, dict[int, list[int]]]:
        sender, receiver = make_peer_connection(), make_peer_connection()
        channels = create_channels(sender)
        try:
            await connect_in_process(sender, receiver)
            await wait_open(channels, 20)
            await asyncio.sleep(0.3)  # the handshake's and the channels' own packets pass
            assert sender.sctp is not None
            ice = sender.sctp.transport.transport
            sent: list[int] = []
            original = ice._send

            async def spy(data: bytes) -> None:
                sent.append(len(data))
                await original(data)

            ice._send = spy
            datagrams = {}
            for size in (1, 13, 100, 1160, 1161, 3000):
                channels.keypoints.send(b"x" * size)
                await asyncio.sleep(0.2)
                datagrams[size] = [n + UDP_HEADER_BYTES + IPV4_HEADER_BYTES for n in sent]
                sent.clear()
            return negotiated_cipher(sender), datagrams
        finally:
            await sender.close()
            await receiver.close()

    cipher, datagrams = asyncio.run(asyncio.wait_for(probe(), 60))
    assert cipher == PREFERRED_DTLS_CIPHER
    for size, sizes in datagrams.items():
        assert sizes == datachannel_packet_bytes(size), size
