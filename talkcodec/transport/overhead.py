"""Bytes on the wire: what each transport adds to a codec's payload, packet by packet.

A classical WebRTC video track sends each coded frame as RTP packets; talkcodec sends each of
its packets as one message on a WebRTC data channel. Both end up in UDP over IPv4. The numbers
below are per packet and come from the protocol specifications:

RTP video track (per RTP packet):
    IPv4 header 20 bytes (RFC 791, no options) + UDP header 8 (RFC 768) + RTP fixed header 12
    (RFC 3550 section 5.1, no CSRCs) + SRTP authentication tag 10 (RFC 3711 default
    AES_CM_128_HMAC_SHA1_80, the profile browsers offer first). A frame is split into packets
    of at most 1200 payload bytes: libwebrtc and aiortc both keep RTP packets near a 1200-byte
    budget so they fit a 1280-byte IPv6 minimum MTU with tunnels.

RTP audio track (per Opus packet, one packet per audio frame): the RTP video figure plus 8 bytes
    of header extensions, as aiortc sends them: the RFC 8285 one-byte-header block (4 bytes)
    holding sdes:mid (1 + 1 byte for a one-character mid), padded to 4 (ssrc-audio-level is
    only sent with frames aiortc encodes itself, not with ready Opus packets).

Data channel (per SCTP packet):
    IPv4 20 + UDP 8 + DTLS 1.2 record 29 (RFC 6347 section 4.1: 13-byte record header; plus
    the 16-byte tag of ChaCha20-Poly1305, RFC 7905, which talkcodec's peers offer first,
    talkcodec/transport/peer.py; AES-GCM, aiortc's and browsers' first choice, adds an 8-byte
    explicit nonce, RFC 5288) + SCTP common header 12 (RFC 4960 section 3.1) + DATA chunk
    header 16 (RFC 4960 section 3.3.1), the chunk padded to a multiple of 4 bytes. A message
    larger than one SCTP packet is fragmented into DATA chunks of at most 1160 user bytes, so
    that an SCTP packet stays within the 1189 bytes aiortc's SCTP transport (the one talkcodec
    runs) allows (libwebrtc allows 1200: 1172-byte chunks). A test checks these sizes against
    the datagrams a live aiortc connection sends.

Not counted (so both figures are lower bounds, each by a few bytes per packet): RTP payload
descriptors (0-3 bytes: H.264 FU-A, VP9, AV1 aggregation headers), RTP header extensions
(transport-wide sequence numbers, absolute send time), RTCP, SCTP SACKs and STUN consent checks
(these flow the other way or at a fixed low rate), and bundling of several small data-channel
messages into one SCTP packet (talkcodec sends one message per frame, 40 ms apart).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

IPV4_HEADER_BYTES = 20
UDP_HEADER_BYTES = 8
RTP_HEADER_BYTES = 12
SRTP_AUTH_TAG_BYTES = 10
RTP_MAX_PAYLOAD_BYTES = 1200
DTLS_RECORD_OVERHEAD_BYTES = 13 + 16  # ChaCha20-Poly1305 (AES-GCM: 13 + 8 + 16)
DTLS_AES_GCM_NONCE_BYTES = 8
SCTP_COMMON_HEADER_BYTES = 12
SCTP_DATA_CHUNK_HEADER_BYTES = 16
SCTP_MAX_PACKET_BYTES = 1189  # aiortc's, to fit the minimum IPv6 MTU (libwebrtc: 1200)
SCTP_MAX_USER_DATA_BYTES = (
    (SCTP_MAX_PACKET_BYTES - SCTP_COMMON_HEADER_BYTES - SCTP_DATA_CHUNK_HEADER_BYTES) // 4 * 4
)  # 1160: chunks are padded to 4 bytes

RTP_PACKET_OVERHEAD_BYTES = (
    IPV4_HEADER_BYTES + UDP_HEADER_BYTES + RTP_HEADER_BYTES + SRTP_AUTH_TAG_BYTES
)  # 50
RTP_AUDIO_EXTENSION_BYTES = 8
RTP_AUDIO_PACKET_OVERHEAD_BYTES = RTP_PACKET_OVERHEAD_BYTES + RTP_AUDIO_EXTENSION_BYTES  # 58
SCTP_PACKET_OVERHEAD_BYTES = (
    IPV4_HEADER_BYTES
    + UDP_HEADER_BYTES
    + DTLS_RECORD_OVERHEAD_BYTES
    + SCTP_COMMON_HEADER_BYTES
    + SCTP_DATA_CHUNK_HEADER_BYTES
)  # 85 (93 with AES-GCM)


@dataclass(frozen=True)
class WireCost:
    """What a stream of frames or messages costs: payload bytes, packets and bytes on the wire."""

    payload_bytes: int
    packets: int
    wire_bytes: int

    def __add__(self, other: WireCost) -> WireCost:
        return WireCost(
            self.payload_bytes + other.payload_bytes,
            self.packets + other.packets,
            self.wire_bytes + other.wire_bytes,
        )


def _fragments(size: int, max_fragment: int) -> int:
    if size < 0:
        raise ValueError(f"a frame or message cannot have {size} bytes")
    return -(-size // max_fragment)


def rtp_frame_cost(frame_bytes: int) -> WireCost:
    """One coded video frame sent as RTP packets of at most 1200 payload bytes (0 bytes: none)."""
    packets = _fragments(frame_bytes, RTP_MAX_PAYLOAD_BYTES)
    return WireCost(frame_bytes, packets, frame_bytes + packets * RTP_PACKET_OVERHEAD_BYTES)


def rtp_audio_packet_cost(payload_bytes: int) -> WireCost:
    """One Opus packet on the audio track."""
    if payload_bytes < 0:
        raise ValueError(f"a packet cannot have {payload_bytes} bytes")
    return WireCost(payload_bytes, 1, payload_bytes + RTP_AUDIO_PACKET_OVERHEAD_BYTES)


def rtp_audio_stream_cost(packets: int, payload_bytes: int) -> WireCost:
    """Total cost of `packets` Opus packets holding payload_bytes in all."""
    return WireCost(
        payload_bytes, packets, payload_bytes + packets * RTP_AUDIO_PACKET_OVERHEAD_BYTES
    )


def datachannel_message_cost(message_bytes: int) -> WireCost:
    """One data-channel message: DATA chunks of at most 1160 bytes, each padded to 4 bytes,
    one per SCTP packet. An empty message still takes one packet (WebRTC sends a 1-byte
    placeholder chunk for it, RFC 8831 section 6.6; counted here as a padded 4-byte chunk)."""
    packets = datachannel_packet_bytes(message_bytes)
    return WireCost(message_bytes, len(packets), sum(packets))


def datachannel_packet_bytes(message_bytes: int) -> list[int]:
    """The wire bytes of each SCTP packet that carries one data-channel message, in sending
    order (what datachannel_message_cost adds up; a link model sends them one by one)."""
    user_bytes = max(message_bytes, 1)
    packets = _fragments(user_bytes, SCTP_MAX_USER_DATA_BYTES)
    return [
        -(-chunk // 4) * 4 + SCTP_PACKET_OVERHEAD_BYTES
        for chunk in _chunk_sizes(user_bytes, packets)
    ]


def _chunk_sizes(message_bytes: int, packets: int) -> list[int]:
    """User bytes in each DATA chunk: full chunks, then the rest."""
    full = [SCTP_MAX_USER_DATA_BYTES] * (packets - 1)
    return [*full, message_bytes - SCTP_MAX_USER_DATA_BYTES * (packets - 1)]


def rtp_stream_cost(frame_sizes: Iterable[int]) -> WireCost:
    """Total cost of coded frames (bytes per frame) sent on an RTP video track."""
    return sum((rtp_frame_cost(size) for size in frame_sizes), WireCost(0, 0, 0))


def datachannel_stream_cost(message_sizes: Iterable[int]) -> WireCost:
    """Total cost of messages (bytes each) sent on a data channel."""
    return sum((datachannel_message_cost(size) for size in message_sizes), WireCost(0, 0, 0))
