"""Control messages on the `control` channel (ordered, reliable), documented in
docs/bitstream.md.

The sender sends STREAM_HEADER once the channel opens and AUDIO_CLOCK once its audio starts;
the receiver sends KEYFRAME_REQUEST, REFRESH_REQUEST and RECEIVER_REPORT. Every message is
kind u8 | body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from talkcodec.bitstream import BitstreamError, StreamHeader

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF
# A latency the report cannot express (none measured yet, or beyond 65.5 s).
LATENCY_UNKNOWN_MS = _U16_MAX


class ControlKind(IntEnum):
    """Wire id of a control message: the first byte of it."""

    STREAM_HEADER = 1
    KEYFRAME_REQUEST = 2
    REFRESH_REQUEST = 3
    RECEIVER_REPORT = 4
    AUDIO_CLOCK = 5


class KeyframeRequestReason(IntEnum):
    """Why the receiver wants a keyframe."""

    NO_REFERENCE = 1  # it has none yet: the call started, or the receiver restarted
    DECODE_ERROR = 2  # a keyframe arrived but could not be decoded


def _expect_size(name: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise BitstreamError(f"{name} needs exactly {size} bytes, got {len(data)}")


def _expect_kind(name: str, data: bytes, kind: ControlKind) -> None:
    if data and data[0] != kind:
        raise BitstreamError(f"{name}: expected control kind {int(kind)}, found {data[0]}")


@dataclass(frozen=True)
class StreamHeaderMessage:
    """kind u8 = 1 | StreamHeader (13 bytes or more): sender to receiver, before any frame."""

    header: StreamHeader
    kind: ClassVar[ControlKind] = ControlKind.STREAM_HEADER

    def __bytes__(self) -> bytes:
        return bytes([self.kind]) + bytes(self.header)

    @classmethod
    def parse(cls, data: bytes) -> StreamHeaderMessage:
        _expect_kind("stream header message", data, cls.kind)
        if not data:
            raise BitstreamError("stream header message needs at least 1 byte, got 0")
        return cls(StreamHeader.parse(data[1:]))


@dataclass(frozen=True)
class KeyframeRequest:
    """kind u8 = 2 | reason u8: receiver to sender, send a keyframe with the next frame."""

    reason: KeyframeRequestReason
    kind: ClassVar[ControlKind] = ControlKind.KEYFRAME_REQUEST
    _FMT: ClassVar[struct.Struct] = struct.Struct("!BB")

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", KeyframeRequestReason(self.reason))

    def __bytes__(self) -> bytes:
        return self._FMT.pack(self.kind, self.reason)

    @classmethod
    def parse(cls, data: bytes) -> KeyframeRequest:
        _expect_kind("keyframe request", data, cls.kind)
        _expect_size("keyframe request", data, cls._FMT.size)
        _, reason = cls._FMT.unpack(data)
        try:
            return cls(KeyframeRequestReason(reason))
        except ValueError:
            raise BitstreamError(f"unknown keyframe request reason {reason}") from None


@dataclass(frozen=True)
class RefreshRequest:
    """kind u8 = 3 | next_seq u16: receiver to sender, intra-code the next keypoint packet.

    next_seq is the keypoint sequence number the receiver expected when it noticed the gap
    (informational: the sender refreshes on any request).
    """

    next_seq: int
    kind: ClassVar[ControlKind] = ControlKind.REFRESH_REQUEST
    _FMT: ClassVar[struct.Struct] = struct.Struct("!BH")

    def __post_init__(self) -> None:
        if not 0 <= self.next_seq <= _U16_MAX:
            raise ValueError(f"next_seq must be in 0..{_U16_MAX}, got {self.next_seq}")

    def __bytes__(self) -> bytes:
        return self._FMT.pack(self.kind, self.next_seq)

    @classmethod
    def parse(cls, data: bytes) -> RefreshRequest:
        _expect_kind("refresh request", data, cls.kind)
        _expect_size("refresh request", data, cls._FMT.size)
        return cls(cls._FMT.unpack(data)[1])


@dataclass(frozen=True)
class ReceiverReport:
    """kind u8 = 4 | rendered u32 | lost u32 | late u32 | dropped u32 | latency_p50_ms u16 |
    latency_p95_ms u16 | interval_ms u16 | received_wire_bps u32 | queuing_delay_ms u16 |
    lost_per_256 u8: receiver to sender, about once a second (30 bytes).

    rendered..dropped count since the call began; dropped counts messages thrown away as
    oversized, malformed or of an unknown kind. A latency of 65535 means none measured yet.
    The last four describe the interval_ms since the previous report (0: none yet, they say
    nothing), for the sender's rate adaptation: the media channels' wire bits per second that
    arrived, the queuing delay (median capture-to-display latency of the interval minus the
    lowest latency of recent intervals; 65535: no frame shown) and the keypoint packets lost
    per 256 expected.
    """

    rendered: int
    lost: int
    late: int
    dropped: int
    latency_p50_ms: int = LATENCY_UNKNOWN_MS
    latency_p95_ms: int = LATENCY_UNKNOWN_MS
    interval_ms: int = 0
    received_wire_bps: int = 0
    queuing_delay_ms: int = LATENCY_UNKNOWN_MS
    lost_per_256: int = 0
    kind: ClassVar[ControlKind] = ControlKind.RECEIVER_REPORT
    _FMT: ClassVar[struct.Struct] = struct.Struct("!BIIIIHHHIHB")
    _LIMITS: ClassVar[dict[str, int]] = {
        "rendered": _U32_MAX,
        "lost": _U32_MAX,
        "late": _U32_MAX,
        "dropped": _U32_MAX,
        "latency_p50_ms": _U16_MAX,
        "latency_p95_ms": _U16_MAX,
        "interval_ms": _U16_MAX,
        "received_wire_bps": _U32_MAX,
        "queuing_delay_ms": _U16_MAX,
        "lost_per_256": 255,
    }

    def __post_init__(self) -> None:
        for name, limit in self._LIMITS.items():
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise ValueError(f"{name} must be in 0..{limit}, got {value}")

    def __bytes__(self) -> bytes:
        return self._FMT.pack(self.kind, *(getattr(self, name) for name in self._LIMITS))

    @classmethod
    def parse(cls, data: bytes) -> ReceiverReport:
        _expect_kind("receiver report", data, cls.kind)
        _expect_size("receiver report", data, cls._FMT.size)
        return cls(*cls._FMT.unpack(data)[1:])


@dataclass(frozen=True)
class AudioClock:
    """kind u8 = 5 | origin_ms u32: sender to receiver, once the audio track's first packet is
    handed to WebRTC (and again with every stream header). origin_ms is the media-clock time
    (the clock of packets' pts_ms: Unix ms modulo 2**32) of the audio stream's first decoded
    sample, i.e. of RTP-relative timestamp 0; a sample at RTP-relative timestamp n (48 kHz)
    is at origin_ms + n / 48.
    """

    origin_ms: int
    kind: ClassVar[ControlKind] = ControlKind.AUDIO_CLOCK
    _FMT: ClassVar[struct.Struct] = struct.Struct("!BI")

    def __post_init__(self) -> None:
        if not 0 <= self.origin_ms <= _U32_MAX:
            raise ValueError(f"origin_ms must be in 0..{_U32_MAX}, got {self.origin_ms}")

    def __bytes__(self) -> bytes:
        return self._FMT.pack(self.kind, self.origin_ms)

    @classmethod
    def parse(cls, data: bytes) -> AudioClock:
        _expect_kind("audio clock", data, cls.kind)
        _expect_size("audio clock", data, cls._FMT.size)
        return cls(cls._FMT.unpack(data)[1])


ControlMessage = (
    StreamHeaderMessage | KeyframeRequest | RefreshRequest | ReceiverReport | AudioClock
)

_PARSERS: dict[ControlKind, type[ControlMessage]] = {
    ControlKind.STREAM_HEADER: StreamHeaderMessage,
    ControlKind.KEYFRAME_REQUEST: KeyframeRequest,
    ControlKind.REFRESH_REQUEST: RefreshRequest,
    ControlKind.RECEIVER_REPORT: ReceiverReport,
    ControlKind.AUDIO_CLOCK: AudioClock,
}


def parse_control(data: bytes) -> ControlMessage:
    """The control message that is the whole of `data`; BitstreamError if malformed."""
    if not data:
        raise BitstreamError("control message needs at least 1 byte, got 0")
    try:
        kind = ControlKind(data[0])
    except ValueError:
        raise BitstreamError(f"unknown control kind {data[0]}") from None
    return _PARSERS[kind].parse(data)
