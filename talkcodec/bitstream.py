"""Wire formats: packets (the unit that travels on data channels) and the .tkc file.

Every byte is documented in docs/bitstream.md. Ids on the wire are the explicit constants below,
never derived from ordering. Every parse error raises BitstreamError; constructing a value that
cannot be encoded raises ValueError.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum, IntFlag
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ClassVar, Self, TypeVar

logger = logging.getLogger(__name__)


class BitstreamError(ValueError):
    """Raised for any malformed input: says what was expected and what was found.

    `reason` names the kind of problem for counters (a receiver's stats), so no caller has to
    match the message text: "corrupt" unless a subclass says otherwise.
    """

    reason: ClassVar[str] = "corrupt"


class UnknownPacketKind(BitstreamError):
    """A packet whose kind byte names no kind this reader knows (perhaps a later revision's)."""

    reason: ClassVar[str] = "unknown_kind"


class UntimedPacket(BitstreamError):
    """A COMPACT packet without a timestamp before any packet of its kind that had one: its
    time cannot be known (a receiver that joined late, or lost the packets that carried one).
    It could not be decoded either: keypoint decoding starts at an INTRA packet, which is
    always timed."""

    reason: ClassVar[str] = "undecodable"


class ImplausiblePacket(BitstreamError):
    """A packet that parses but whose fields break the documented limits (docs/bitstream.md,
    "Limits"): a timestamp that jumps, a sequence number its timestamp cannot justify, a
    payload or image too large for the stream."""

    reason: ClassVar[str] = "implausible"


class KeyframeCodecId(IntEnum):
    """Wire id of the image codec a KEYFRAME packet was coded with."""

    WEBP = 1
    JPEG = 2
    GC = 3  # learned generative compression (Agustsson et al. 2019)
    AV1 = 4  # AV1 intra: SVT-AV1 encodes, dav1d decodes


class KeypointModelId(IntEnum):
    """Wire id of the keypoint parameterisation and its coding (detector layout, shipped basis,
    quantiser steps and entropy models).

    The V1 ids name the keypoint coder of streams written before 2026-12; this build no
    longer decodes their keypoints (talkcodec.keypoints.registry says so in one line). The V2
    ids are the same bases with the context-coded residuals and coarser pose steps. The V3 ids
    (2026-12-07, written with keypoint_coder "v3") code each parameter's change in a context
    of the changes coded before it in the same frame (talkcodec.entropy.keypoints).
    """

    MEDIAPIPE_478_V1 = 1
    FAN_68_V1 = 2
    MEDIAPIPE_478_V2 = 3
    FAN_68_V2 = 4
    MEDIAPIPE_478_V3 = 5
    FAN_68_V3 = 6


class LowresCodecId(IntEnum):
    """Wire id of the hybrid mode's low-res video codec (StreamHeader.lowres_codec)."""

    NONE = 0  # keypoints only: KEYPOINTS payloads are the keypoints alone
    H264 = 1  # H.264 (x264 low-delay) pictures, LowresPicture


class PacketKind(IntEnum):
    """Wire id of what a packet carries; 3..255 are reserved for later kinds (e.g. control)."""

    KEYFRAME = 1
    KEYPOINTS = 2


class PacketFormat(IntEnum):
    """Wire id of the layout a stream's packets are written in (StreamHeader.packet_format).

    FIXED is the 8-byte header of stream header revisions 1 and 2 (Packet.__bytes__); COMPACT
    (revision 3, what writers write) a 2-byte header with timestamps implied by the frame rate,
    and bundles of several packets in one message (PacketWriter / PacketReader).
    """

    FIXED = 1
    COMPACT = 2


class PacketFlags(IntFlag):
    """Per-packet flag bits; every bit not named here is reserved and must be zero."""

    INTRA = 0x01  # keypoints coded without prediction: a receiver may start decoding here


_PACKET_HEADER = struct.Struct("!BBHI")  # kind | flags | seq | pts_ms
_KEYFRAME_HEADER = struct.Struct("!BBH")  # codec | reference_id | keypoints_len
_STREAM_HEADER = struct.Struct(
    "!HHIBBHB"
)  # width | height | fps_milli | codec | model | step | dims
_STREAM_HEADER_V2 = struct.Struct("!B")  # reference_bank_size, appended by revision 2
_STREAM_HEADER_V3 = struct.Struct("!B")  # packet_format, appended by revision 3
# lowres_codec | lowres_width | lowres_height | fusion_level
_STREAM_HEADER_V4 = struct.Struct("!BHHB")
_TKC_PREAMBLE = struct.Struct("!4sBB")  # magic | version | header_len
_TKC_RECORD_LENGTH = struct.Struct("!I")

PACKET_HEADER_BYTES = _PACKET_HEADER.size  # 8
KEYFRAME_PAYLOAD_HEADER_BYTES = _KEYFRAME_HEADER.size  # 4
STREAM_HEADER_BYTES = _STREAM_HEADER.size  # 13, the v1 size; later revisions may append fields
STREAM_HEADER_V2_BYTES = STREAM_HEADER_BYTES + _STREAM_HEADER_V2.size  # 14
STREAM_HEADER_V3_BYTES = STREAM_HEADER_V2_BYTES + _STREAM_HEADER_V3.size  # 15, what writers write
# 21: hybrid streams (a low-res video stream in the keypoint packets) only
STREAM_HEADER_V4_BYTES = STREAM_HEADER_V3_BYTES + _STREAM_HEADER_V4.size
# The receiver's reference bank (talkcodec.bank): reference_id is a u8 below the bank size,
# which the stream header carries since revision 2. A v1 header (13 bytes) means the default,
# which every sender of that revision used unless told otherwise.
DEFAULT_BANK_SIZE = 4
MAX_BANK_SIZE = 255
TKC_MAGIC = b"TKCF"
TKC_VERSION = 2  # records framed by a varint length; version 1 (u32 lengths) still reads
TKC_VERSION_FIXED_LENGTHS = 1
# Far above any real packet (a keyframe is tens of kB); bounds what a corrupt length can allocate.
TKC_MAX_RECORD_BYTES = 16 * 1024 * 1024

# Limits of what a stream can honestly mean (docs/bitstream.md, "Limits"). Readers reject a
# stream header outside them and drop, and count, a packet outside them.
MIN_FRAME_SIDE_PX = 16
MAX_FRAME_SIDE_PX = 4096
MIN_LOWRES_SIDE_PX = 16
MIN_FPS_MILLI = 1_000  # 1 frame per second
MAX_FPS_MILLI = 240_000  # 240 frames per second
# The worst frame of the largest keypoint model codes in about 175 bytes.
MAX_KEYPOINT_PAYLOAD_BYTES = 1024
# Between two accepted KEYPOINTS packets the capture time moves forward by at most this, and
# by at most MAX_PTS_JUMP_MS more than the frame periods their seq advance explains (frames
# the sender skipped, capture jitter). A longer step needs a new timeline (KeypointTimeline).
MAX_PTS_STEP_MS = 10_000
MAX_PTS_JUMP_MS = 500
# Sequence numbers may run ahead of the timestamps by this many packets, plus
# SEQ_PACKETS_PER_FRAME per frame period the timestamps moved (a camera faster than the
# stream's frame rate, jitter of the capture clock).
SEQ_SLACK_PACKETS = 8
SEQ_PACKETS_PER_FRAME = 2

_KNOWN_FLAG_BITS = int(PacketFlags.INTRA)
_U8_MAX = 0xFF
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFF_FFFF

_E = TypeVar("_E", bound=IntEnum)


def _to_enum(
    enum_type: type[_E], value: int, what: str, error: type[ValueError] = ValueError
) -> _E:
    """`value` as a member of `enum_type`; `error` names the unknown id otherwise."""
    try:
        return enum_type(value)
    except ValueError:
        raise error(f"unknown {what} {value}") from None


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")


def _parse_flags(value: int) -> PacketFlags:
    reserved = value & ~_KNOWN_FLAG_BITS
    if reserved:
        raise BitstreamError(
            f"packet flags 0x{value:02x} set reserved bits: expected only bits "
            f"0x{_KNOWN_FLAG_BITS:02x}, found 0x{reserved:02x}"
        )
    return PacketFlags(value)


@dataclass(frozen=True)
class Packet:
    """One message on a data channel: kind u8 | flags u8 | seq u16 | pts_ms u32 | payload.

    seq counts the packets of a stream modulo 2**16 (65535 is followed by 0); pts_ms is the
    capture time of the frame in milliseconds modulo 2**32. The payload runs to the end of the
    message: its length comes from the framing around the packet (a data-channel message or a
    .tkc record), never from the packet itself. An empty payload is valid.
    """

    kind: PacketKind
    seq: int
    pts_ms: int
    payload: bytes
    flags: PacketFlags = PacketFlags(0)
    # Not on the wire: whether a reader found pts_ms in the packet (always, in FIXED packets)
    # rather than implied by the frame rate (COMPACT ones): an implied time is only as good as
    # the packet it was implied from (KeypointTimeline).
    timed: bool = field(default=True, compare=False)
    # Not on the wire either: whether the packet came in a message's repeat prefix (a copy
    # of a packet sent in an earlier message, so a receiver that lost that one recovers it).
    repeated: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _to_enum(PacketKind, self.kind, "packet kind"))
        _check_range("seq", self.seq, 0, _U16_MAX)
        _check_range("pts_ms", self.pts_ms, 0, _U32_MAX)
        _check_range("flags", int(self.flags), 0, _U8_MAX)
        reserved = int(self.flags) & ~_KNOWN_FLAG_BITS
        if reserved:
            raise ValueError(f"flags must leave reserved bits clear, got 0x{reserved:02x} set")
        object.__setattr__(self, "flags", PacketFlags(self.flags))

    @property
    def is_intra(self) -> bool:
        return PacketFlags.INTRA in self.flags

    def __bytes__(self) -> bytes:
        header = _PACKET_HEADER.pack(self.kind, self.flags, self.seq, self.pts_ms)
        return header + self.payload

    @classmethod
    def parse(cls, data: bytes) -> Packet:
        """The packet that is the whole of `data`."""
        if len(data) < PACKET_HEADER_BYTES:
            raise BitstreamError(
                f"packet header needs {PACKET_HEADER_BYTES} bytes, got {len(data)}"
            )
        kind, flags, seq, pts_ms = _PACKET_HEADER.unpack_from(data)
        return cls(
            kind=_to_enum(PacketKind, kind, "packet kind", UnknownPacketKind),
            seq=seq,
            pts_ms=pts_ms,
            payload=bytes(data[PACKET_HEADER_BYTES:]),
            flags=_parse_flags(flags),
        )


@dataclass(frozen=True)
class KeyframePayload:
    """Payload of a KEYFRAME packet: codec u8 | reference_id u8 | keypoints_len u16 |
    keypoints | image.

    reference_id is the slot of the receiver's reference bank this keyframe fills: 0 empties
    the bank first (the first keyframe of a stream uses it), 1 and above add or replace one
    extra reference (docs/bitstream.md, "Reference bank"). keypoints are the intra-coded
    keypoints of this very frame and image the bytes of the image codec named by `codec`; both
    are opaque at this layer. The image runs to the end of the payload and is never empty.
    """

    codec: KeyframeCodecId
    reference_id: int
    keypoints: bytes
    image: bytes

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "codec", _to_enum(KeyframeCodecId, self.codec, "keyframe codec id")
        )
        _check_range("reference_id", self.reference_id, 0, _U8_MAX)
        _check_range("len(keypoints)", len(self.keypoints), 0, _U16_MAX)
        if not self.image:
            raise ValueError("image must not be empty")

    def __bytes__(self) -> bytes:
        header = _KEYFRAME_HEADER.pack(self.codec, self.reference_id, len(self.keypoints))
        return header + self.keypoints + self.image

    @classmethod
    def parse(cls, data: bytes) -> KeyframePayload:
        """The keyframe payload that is the whole of `data` (a KEYFRAME packet's payload)."""
        if len(data) < KEYFRAME_PAYLOAD_HEADER_BYTES:
            raise BitstreamError(
                f"keyframe payload header needs {KEYFRAME_PAYLOAD_HEADER_BYTES} bytes, "
                f"got {len(data)}"
            )
        codec, reference_id, keypoints_len = _KEYFRAME_HEADER.unpack_from(data)
        codec_id = _to_enum(KeyframeCodecId, codec, "keyframe codec id", BitstreamError)
        body = data[KEYFRAME_PAYLOAD_HEADER_BYTES:]
        if len(body) < keypoints_len:
            raise BitstreamError(
                f"keyframe payload keypoints need {keypoints_len} bytes, got {len(body)}"
            )
        image = bytes(body[keypoints_len:])
        if not image:
            raise BitstreamError("keyframe payload image needs at least 1 byte, got 0")
        return cls(codec_id, reference_id, bytes(body[:keypoints_len]), image)


def annexb_nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte stream, start codes (00 00 01 or 00 00 00 01) removed."""
    starts = []
    index = data.find(b"\x00\x00\x01")
    while index >= 0:
        starts.append(index + 3)
        index = data.find(b"\x00\x00\x01", index + 3)
    units = []
    for number, start in enumerate(starts):
        end = starts[number + 1] - 3 if number + 1 < len(starts) else len(data)
        unit = data[start:end]
        # A 4-byte start code leaves its leading zero on the end of the previous unit.
        if number + 1 < len(starts):
            unit = unit.rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


_LOWRES_UNITS_MASK = 0x0F
_LOWRES_RESERVED = 0xF0
MAX_LOWRES_UNITS = _LOWRES_UNITS_MASK
H264_NAL_IDR = 5
H264_NAL_SEI = 6


def h264_nal_type(unit: bytes) -> int:
    """The nal_unit_type of an H.264 NAL unit (its first byte's low 5 bits)."""
    return unit[0] & 0x1F


@dataclass(frozen=True)
class LowresPicture:
    """One coded low-res picture: units u8 (bits 3..0 the number n of NAL units, 1..15; bits
    7..4 reserved) | n - 1 varint lengths (of every unit but the last) | the units, without
    start codes (the last runs to the end)."""

    units: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.units) <= MAX_LOWRES_UNITS:
            raise ValueError(f"a low-res picture holds 1..{MAX_LOWRES_UNITS} NAL units")
        if any(not unit for unit in self.units):
            raise ValueError("a low-res picture's NAL units must not be empty")

    @property
    def idr(self) -> bool:
        """Whether the picture is an IDR (a unit of NAL type 5), where a decoder may start."""
        return any(h264_nal_type(unit) == H264_NAL_IDR for unit in self.units)

    def __bytes__(self) -> bytes:
        lengths = b"".join(encode_varint(len(unit)) for unit in self.units[:-1])
        return bytes((len(self.units),)) + lengths + b"".join(self.units)

    @classmethod
    def parse(cls, data: bytes) -> LowresPicture:
        if not data:
            raise BitstreamError("low-res picture needs 1 byte of unit count, got 0")
        if data[0] & _LOWRES_RESERVED:
            raise BitstreamError(
                f"low-res picture sets reserved bits 0x{data[0] & _LOWRES_RESERVED:02x}: expected 0"
            )
        count = data[0] & _LOWRES_UNITS_MASK
        if count == 0:
            raise BitstreamError("low-res picture holds 0 NAL units: expected 1 to 15")
        offset, lengths = 1, []
        for _ in range(count - 1):
            length, offset = read_varint(data, offset, "low-res NAL unit length")
            if length == 0:
                raise BitstreamError("low-res NAL unit of 0 bytes: expected at least 1")
            lengths.append(length)
        units = []
        for length in lengths:
            if len(data) - offset < length:
                raise BitstreamError(
                    f"low-res NAL unit needs {length} bytes, got {len(data) - offset}"
                )
            units.append(bytes(data[offset : offset + length]))
            offset += length
        if offset >= len(data):
            raise BitstreamError("low-res picture's last NAL unit is empty: expected bytes")
        units.append(bytes(data[offset:]))
        return cls(tuple(units))


# The NAL header byte of x264's P slices (nal_ref_idc 2, type 1), which the short form of a
# hybrid payload leaves out.
_H264_P_SLICE_HEADER = 0x41


@dataclass(frozen=True)
class HybridKeypoints:
    """The payload of a KEYPOINTS packet of a hybrid stream: head varint (keypoints_len << 1 |
    SHORT) | keypoints (as in a keypoints-only stream) | the frame's low-res picture, to the end.

    SHORT = 0: the rest is a LowresPicture, or nothing (no picture for this frame). SHORT = 1:
    the rest is the one NAL unit of a P picture without its header byte 0x41 (nal_ref_idc 2,
    type 1), what nearly every frame sends: no unit count, no NAL header."""

    keypoints: bytes
    picture: LowresPicture | None

    def __bytes__(self) -> bytes:
        picture = self.picture
        if picture is not None and _short_form(picture):
            head = len(self.keypoints) << 1 | 1
            return encode_varint(head) + self.keypoints + picture.units[0][1:]
        rest = b"" if picture is None else bytes(picture)
        return encode_varint(len(self.keypoints) << 1) + self.keypoints + rest

    @classmethod
    def parse(cls, data: bytes) -> HybridKeypoints:
        head, offset = read_varint(data, 0, "hybrid keypoints length")
        length, short = head >> 1, head & 1
        if len(data) - offset < length:
            raise BitstreamError(f"hybrid keypoints need {length} bytes, got {len(data) - offset}")
        keypoints, rest = bytes(data[offset : offset + length]), data[offset + length :]
        if short:
            if not rest:
                raise BitstreamError("short-form low-res picture is empty: expected its slice")
            return cls(keypoints, LowresPicture((bytes((_H264_P_SLICE_HEADER,)) + rest,)))
        return cls(keypoints, LowresPicture.parse(rest) if rest else None)


def _short_form(picture: LowresPicture) -> bool:
    """Whether a picture travels in the short form: one P-slice unit with more than its header."""
    units = picture.units
    return len(units) == 1 and units[0][0] == _H264_P_SLICE_HEADER and len(units[0]) > 1


@dataclass(frozen=True)
class StreamHeader:
    """What a receiver needs before the first packet: width u16 | height u16 | fps_milli u32 |
    keyframe_codec u8 | keypoint_model u8 | keypoint_step_millipx u16 | expression_dims u8 |
    reference_bank_size u8 | packet_format u8 [| lowres_codec u8 | lowres_width u16 |
    lowres_height u16 | fusion_level u8].

    width and height are the decoded frame size in pixels; fps_milli is frames per second
    times 1000 (25000 for 25 fps); keypoint_step_millipx is the quantisation step of the
    keypoint coder in 1/1000 pixel at 256x256; expression_dims is how many directions of the
    keypoint model's expression basis the stream codes (0..255); reference_bank_size is how
    many references the receiver holds (1..255, revision 2; DEFAULT_BANK_SIZE in a v1 header);
    packet_format the layout of the stream's packets (revision 3; FIXED in older headers);
    lowres_codec and the low-res picture size (revision 4, written only by hybrid streams:
    LowresCodecId.NONE and 0 x 0 otherwise) say that every KEYPOINTS payload is a
    HybridKeypoints (keypoints and a low-res picture); fusion_level (1..255 in a hybrid
    stream, 0 otherwise) is the luma difference up to which the receiver's fusion takes the
    render over the low-res picture (talkcodec.generator.fusion), which the sender sets from
    how coarsely it codes the pictures.
    """

    width: int
    height: int
    fps_milli: int
    keyframe_codec: KeyframeCodecId
    keypoint_model: KeypointModelId
    keypoint_step_millipx: int
    expression_dims: int
    reference_bank_size: int = DEFAULT_BANK_SIZE
    packet_format: PacketFormat = PacketFormat.COMPACT
    lowres_codec: LowresCodecId = LowresCodecId.NONE
    lowres_width: int = 0
    lowres_height: int = 0
    fusion_level: int = 0

    def __post_init__(self) -> None:
        _check_range("width", self.width, MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX)
        _check_range("height", self.height, MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX)
        _check_range("fps_milli", self.fps_milli, MIN_FPS_MILLI, MAX_FPS_MILLI)
        _check_range("keypoint_step_millipx", self.keypoint_step_millipx, 1, _U16_MAX)
        _check_range("expression_dims", self.expression_dims, 0, 255)
        _check_range("reference_bank_size", self.reference_bank_size, 1, MAX_BANK_SIZE)
        codec = _to_enum(KeyframeCodecId, self.keyframe_codec, "keyframe codec id")
        model = _to_enum(KeypointModelId, self.keypoint_model, "keypoint model id")
        packet_format = _to_enum(PacketFormat, self.packet_format, "packet format")
        object.__setattr__(self, "keyframe_codec", codec)
        object.__setattr__(self, "keypoint_model", model)
        object.__setattr__(self, "packet_format", packet_format)
        lowres = _to_enum(LowresCodecId, self.lowres_codec, "low-res codec id")
        object.__setattr__(self, "lowres_codec", lowres)
        _check_lowres_fields(
            lowres, self.lowres_size, self.fusion_level, (self.width, self.height), ValueError
        )

    @property
    def hybrid(self) -> bool:
        """Whether KEYPOINTS payloads carry a low-res picture (HybridKeypoints)."""
        return self.lowres_codec is not LowresCodecId.NONE

    @property
    def lowres_size(self) -> tuple[int, int]:
        """(width, height) of the low-res pictures; (0, 0) in a keypoints-only stream."""
        return self.lowres_width, self.lowres_height

    @property
    def fps(self) -> float:
        return self.fps_milli / 1000

    @property
    def seq_modulo(self) -> int:
        """Packets' seq counts modulo this: 2**16 in FIXED packets, 2**11 in COMPACT ones."""
        return SEQ_MODULO if self.packet_format is PacketFormat.FIXED else COMPACT_SEQ_MODULO

    @property
    def max_keyframe_image_bytes(self) -> int:
        """The largest keyframe image a receiver accepts: the frame's raw RGB bytes and 4 KiB
        of container, more than any lossy coder needs for one picture."""
        return 3 * self.width * self.height + 4096

    @property
    def max_lowres_picture_bytes(self) -> int:
        """The largest low-res picture a receiver accepts (as max_keyframe_image_bytes)."""
        return 3 * self.lowres_width * self.lowres_height + 4096 if self.hybrid else 0

    def __bytes__(self) -> bytes:
        v1 = _STREAM_HEADER.pack(
            self.width,
            self.height,
            self.fps_milli,
            self.keyframe_codec,
            self.keypoint_model,
            self.keypoint_step_millipx,
            self.expression_dims,
        )
        v2 = v1 + _STREAM_HEADER_V2.pack(self.reference_bank_size)
        if self.packet_format is PacketFormat.FIXED and not self.hybrid:
            return v2  # what revision 2 wrote, so its readers read it
        v3 = v2 + _STREAM_HEADER_V3.pack(self.packet_format)
        if not self.hybrid:
            return v3  # what revision 3 wrote
        return v3 + _STREAM_HEADER_V4.pack(
            self.lowres_codec, self.lowres_width, self.lowres_height, self.fusion_level
        )

    @classmethod
    def parse(cls, data: bytes) -> StreamHeader:
        """The header at the start of `data`: the 13 bytes of revision 1, then, when there,
        the bank size of revision 2, the packet format of revision 3 and the low-res stream of
        revision 4; bytes past those are later-revision extensions and are ignored."""
        if len(data) < STREAM_HEADER_BYTES:
            raise BitstreamError(
                f"stream header needs {STREAM_HEADER_BYTES} bytes, got {len(data)}"
            )
        width, height, fps_milli, codec, model, step, dims = _STREAM_HEADER.unpack_from(data)
        bank_size = DEFAULT_BANK_SIZE
        if len(data) >= STREAM_HEADER_V2_BYTES:
            (bank_size,) = _STREAM_HEADER_V2.unpack_from(data, STREAM_HEADER_BYTES)
            if bank_size == 0:
                raise BitstreamError("stream header reference_bank_size: expected 1..255, found 0")
        packet_format = PacketFormat.FIXED
        if len(data) >= STREAM_HEADER_V3_BYTES:
            (packet_format,) = _STREAM_HEADER_V3.unpack_from(data, STREAM_HEADER_V2_BYTES)
            packet_format = _to_enum(PacketFormat, packet_format, "packet format", BitstreamError)
        lowres_codec, lowres_width, lowres_height, fusion_level = LowresCodecId.NONE, 0, 0, 0
        if len(data) >= STREAM_HEADER_V4_BYTES:
            lowres_codec, lowres_width, lowres_height, fusion_level = _STREAM_HEADER_V4.unpack_from(
                data, STREAM_HEADER_V3_BYTES
            )
            lowres_codec = _to_enum(LowresCodecId, lowres_codec, "low-res codec id", BitstreamError)
        for name, value, low, high in (
            ("width", width, MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX),
            ("height", height, MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX),
            ("fps_milli", fps_milli, MIN_FPS_MILLI, MAX_FPS_MILLI),
            ("keypoint_step_millipx", step, 1, _U16_MAX),
        ):
            if not low <= value <= high:
                raise BitstreamError(f"stream header {name}: expected {low}..{high}, found {value}")
        _check_lowres_fields(
            lowres_codec, (lowres_width, lowres_height), fusion_level, (width, height),
            BitstreamError,
        )  # fmt: skip
        return cls(
            width=width,
            height=height,
            fps_milli=fps_milli,
            keyframe_codec=_to_enum(KeyframeCodecId, codec, "keyframe codec id", BitstreamError),
            keypoint_model=_to_enum(KeypointModelId, model, "keypoint model id", BitstreamError),
            keypoint_step_millipx=step,
            expression_dims=dims,
            reference_bank_size=bank_size,
            packet_format=packet_format,
            lowres_codec=lowres_codec,
            lowres_width=lowres_width,
            lowres_height=lowres_height,
            fusion_level=fusion_level,
        )


def _check_lowres_fields(
    codec: LowresCodecId,
    lowres_size: tuple[int, int],
    fusion_level: int,
    frame_size: tuple[int, int],
    error: type[ValueError],
) -> None:
    """A hybrid stream's low-res size (even, MIN_LOWRES_SIDE_PX.. the frame's size) and fusion
    level (1..255); 0 x 0 and 0 in a keypoints-only stream. Sizes are (width, height)."""
    if codec is LowresCodecId.NONE:
        if lowres_size != (0, 0) or fusion_level:
            raise error(
                f"stream header low-res size and fusion level: expected 0x0 and 0 without a "
                f"low-res codec, found {lowres_size[0]}x{lowres_size[1]} and {fusion_level}"
            )
        return
    if not 1 <= fusion_level <= _U8_MAX:
        raise error(f"stream header fusion_level: expected 1..255, found {fusion_level}")
    for name, value, high in (
        ("lowres_width", lowres_size[0], frame_size[0]),
        ("lowres_height", lowres_size[1], frame_size[1]),
    ):
        if not MIN_LOWRES_SIDE_PX <= value <= high or value % 2:
            raise error(
                f"stream header {name}: expected an even {MIN_LOWRES_SIDE_PX}..{high}, "
                f"found {value}"
            )


SEQ_MODULO = 1 << 16  # seq counts packets modulo 2**16 (FIXED packets)
COMPACT_SEQ_MODULO = 1 << 11  # ... and modulo 2**11 in COMPACT ones (82 s at 25 fps)
PTS_MODULO = 1 << 32  # pts_ms counts milliseconds modulo 2**32


def signed_difference(difference: int, modulo: int) -> int:
    """`difference` modulo `modulo`, as the signed value nearest zero (wrap-around arithmetic)."""
    wrapped = difference % modulo
    return wrapped - modulo if wrapped >= modulo // 2 else wrapped


class Arrival(Enum):
    """What a KEYPOINTS packet's seq and pts_ms say about it (KeypointTimeline.classify)."""

    NEXT = "next"  # follows the last accepted packet, perhaps after lost ones
    RESYNC = "resync"  # starts a new timeline: after a fresh start, or two packets that agree
    LATE = "late"  # older than the last accepted packet (reordered or repeated): dropped
    IMPLAUSIBLE = "implausible"  # breaks the limits against the last accepted one: dropped


@dataclass(frozen=True)
class ArrivalVerdict:
    """lost: packets skipped since the last accepted one (NEXT only). step_ms: capture time
    since the last accepted packet (NEXT only: a new timeline has no step). pts_ms: the
    packet's capture time as the timeline has it (an implied one re-derived, see classify)."""

    arrival: Arrival
    lost: int = 0
    step_ms: int = 0
    pts_ms: int = 0

    @property
    def accepted(self) -> bool:
        return self.arrival in (Arrival.NEXT, Arrival.RESYNC)


class KeypointTimeline:
    """The one rule for KEYPOINTS packets' seq and pts_ms (docs/bitstream.md, "Limits"), used
    by the stream decoder (decode, the live receiver, benchmarks) and by `talkcodec info`.

    A packet is accepted when its seq is ahead of the last accepted packet's and its pts_ms
    moved forward by at most MAX_PTS_STEP_MS and at most MAX_PTS_JUMP_MS more than the seq
    advance explains, while the seq ran no further ahead than the time justifies
    (SEQ_SLACK_PACKETS + SEQ_PACKETS_PER_FRAME per frame period). Older packets are late.
    Anything else is implausible: dropped and counted, and the timeline stays where it was, so
    one corrupt field costs one packet. A new timeline (a sender that restarted, a face that
    came back after a while) is accepted in two ways: an INTRA packet with the very pts_ms of
    the fresh-start keyframe just received (the sender sends both for one frame), or a second
    implausible packet that plausibly follows the first.

    stream_ms is the capture time the accepted packets cover: the sum of their steps, plus, for
    each new timeline, its step when it is forward and at most MAX_PTS_STEP_MS, else one frame
    period. It never grows by more than MAX_PTS_STEP_MS per packet.
    """

    def __init__(
        self, fps: float, seq_modulo: int = SEQ_MODULO, implied: ImpliedClock | None = None
    ) -> None:
        """implied: the clock of a COMPACT stream, fed only the timed packets this timeline
        accepts (for_stream makes it)."""
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.frame_ms = 1000 / fps
        self.seq_modulo = seq_modulo
        self._implied = implied
        self.stream_ms = 0
        self._last: tuple[int, int] | None = None  # (seq, pts_ms) of the last accepted packet
        self._candidate: tuple[int, int] | None = None  # the last implausible one
        self._fresh_start_pts_ms: int | None = None

    @classmethod
    def for_stream(cls, header: StreamHeader) -> KeypointTimeline:
        """The timeline of a stream with `header`: its frame rate, seq modulo and, for COMPACT
        packets, the clock that re-derives implied times."""
        compact = header.packet_format is PacketFormat.COMPACT
        implied = ImpliedClock(header.fps_milli) if compact else None
        return cls(header.fps, header.seq_modulo, implied)

    def note_fresh_start(self, pts_ms: int) -> None:
        """A fresh-start keyframe (reference id 0) with this pts_ms was received and decoded."""
        self._fresh_start_pts_ms = pts_ms

    def _ahead(self, since: tuple[int, int], seq: int, pts_ms: int) -> tuple[int, int]:
        """(seq advance, pts advance) of (seq, pts_ms) over `since`, signed, with wrap-around."""
        seq_ahead = signed_difference(seq - since[0], self.seq_modulo)
        return seq_ahead, signed_difference(pts_ms - since[1], PTS_MODULO)

    def _follows(self, seq_ahead: int, pts_ahead: int) -> bool:
        """Whether a packet that far ahead may be the next one (the acceptance rule)."""
        if seq_ahead <= 0 or not 0 <= pts_ahead <= MAX_PTS_STEP_MS:
            return False
        if pts_ahead > seq_ahead * self.frame_ms + MAX_PTS_JUMP_MS:
            return False
        return seq_ahead <= SEQ_SLACK_PACKETS + SEQ_PACKETS_PER_FRAME * pts_ahead / self.frame_ms

    def classify(self, seq: int, pts_ms: int, intra: bool, timed: bool = True) -> ArrivalVerdict:
        """The verdict on the next KEYPOINTS packet to arrive; accepted ones move the timeline.

        timed: whether pts_ms came in the packet. An implied time (COMPACT packets) is only as
        good as the timed packet it was implied from, so the timeline implies it again from
        the last timed packet it accepted (a sender's implied times differ from those only
        after a timed packet was lost or dropped, when the keypoints cannot be decoded until
        the next INTRA packet, which is always timed), and it neither starts nor confirms a
        new timeline."""
        if not timed and self._implied is not None:
            implied = self._implied.implied_pts_ms(PacketKind.KEYPOINTS, seq)
            if implied is None:  # no timed packet accepted yet
                return ArrivalVerdict(Arrival.IMPLAUSIBLE, pts_ms=pts_ms)
            pts_ms = implied
        if self._last is None:
            return self._accept(seq, pts_ms, timed, ArrivalVerdict(Arrival.NEXT, pts_ms=pts_ms))
        seq_ahead, pts_ahead = self._ahead(self._last, seq, pts_ms)
        if self._follows(seq_ahead, pts_ahead):
            self.stream_ms += pts_ahead
            verdict = ArrivalVerdict(Arrival.NEXT, seq_ahead - 1, pts_ahead, pts_ms)
            return self._accept(seq, pts_ms, timed, verdict)
        # The sender's fresh start (its keyframe came on the reliable channel) wins even over
        # a timeline that a damaged packet moved ahead, where it would look late.
        fresh_start = intra and timed and pts_ms == self._fresh_start_pts_ms
        if seq_ahead <= 0 and pts_ahead <= 0 and not fresh_start:
            return ArrivalVerdict(Arrival.LATE, pts_ms=pts_ms)
        if not timed:
            return ArrivalVerdict(Arrival.IMPLAUSIBLE, pts_ms=pts_ms)
        confirmed = self._candidate is not None and self._follows(
            *self._ahead(self._candidate, seq, pts_ms)
        )
        if fresh_start or confirmed:
            forward = 0 < pts_ahead <= MAX_PTS_STEP_MS
            self.stream_ms += pts_ahead if forward else round(self.frame_ms)
            return self._accept(seq, pts_ms, timed, ArrivalVerdict(Arrival.RESYNC, pts_ms=pts_ms))
        self._candidate = (seq, pts_ms)
        return ArrivalVerdict(Arrival.IMPLAUSIBLE, pts_ms=pts_ms)

    def _accept(
        self, seq: int, pts_ms: int, timed: bool, verdict: ArrivalVerdict
    ) -> ArrivalVerdict:
        self._last = (seq, pts_ms)
        self._candidate = self._fresh_start_pts_ms = None
        if timed and self._implied is not None:
            self._implied.note_time(PacketKind.KEYPOINTS, seq, pts_ms, force=True)
        return verdict


# --- compact packets (PacketFormat.COMPACT) ----------------------------------------------------

# The first byte of a compact packet: kind (2 bits) | INTRA | TIME | LENGTH | seq bits 10..8.
_COMPACT_KIND_SHIFT = 6
_COMPACT_INTRA = 0x20
_COMPACT_TIME = 0x10  # an explicit pts_ms u32 follows the 2-byte header
_COMPACT_LENGTH = 0x08  # a varint payload length follows: another packet comes after this one
_COMPACT_SEQ_HIGH = 0x07
_COMPACT_TIME_FIELD = struct.Struct("!I")
COMPACT_HEADER_BYTES = 2
# Wire codes of the 2-bit kind field (explicit, like every id); 3 is reserved.
_COMPACT_KIND_CODES = {PacketKind.KEYPOINTS: 0, PacketKind.KEYFRAME: 1}
_COMPACT_KINDS = {code: kind for kind, code in _COMPACT_KIND_CODES.items()}
# Code 2: a continuation, a 1-byte header (no seq byte) for the KEYPOINTS packet whose seq is
# one past the KEYPOINTS packet before it in the same message; bits 2..0 are reserved, zero.
_COMPACT_CONTINUATION = 2
_COMPACT_CONTINUATION_RESERVED = 0x07
# Code 3 as a message's first byte: a repeat prefix, bits 4..0 the number of packets (1..31) at
# the start of the message that repeat packets of an earlier message; bit 5 reserved, zero.
_COMPACT_REPEAT = 3
_COMPACT_REPEAT_COUNT = 0x1F
_COMPACT_REPEAT_RESERVED = 0x20
MAX_REPEATED_PACKETS = _COMPACT_REPEAT_COUNT
# A bundle (one message holding several packets) holds at most this many: a second of frames
# at 32 fps, far above any latency budget, and a bound on what one message can make a reader do.
MAX_BUNDLE_PACKETS = 32
_VARINT_MAX_BYTES = 4  # 28 bits: up to 256 MiB, above TKC_MAX_RECORD_BYTES


def encode_varint(value: int) -> bytes:
    """`value` (0 .. 2**28 - 1) as an unsigned LEB128 varint: 7 bits per byte, low bits first,
    the top bit set on every byte but the last."""
    _check_range("varint", value, 0, (1 << (7 * _VARINT_MAX_BYTES)) - 1)
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | value & 0x7F)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, offset: int, what: str) -> tuple[int, int]:
    """(value, offset after it) of the minimal varint at data[offset:]; `what` names it."""
    value = 0
    for index in range(_VARINT_MAX_BYTES):
        if offset + index >= len(data):
            raise BitstreamError(f"{what} varint truncated after {index} bytes")
        byte = data[offset + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if byte == 0 and index > 0:
                raise BitstreamError(f"{what} varint is not minimal (ends in a zero byte)")
            return value, offset + index + 1
    raise BitstreamError(f"{what} varint longer than {_VARINT_MAX_BYTES} bytes")


class ImpliedClock:
    """The timestamps a COMPACT stream leaves out (docs/bitstream.md, "Compact packets").

    Per packet kind, the anchor is the furthest-ahead packet (by seq, with wrap-around) that
    carried an explicit pts_ms. A packet without one was captured at the anchor's pts_ms plus
    its seq advance over the anchor times the frame period, rounded half up to a millisecond.
    Writer and reader each keep one and update it from the packets they write or read, so
    both imply the same times as long as no packet with an explicit time was lost (a loss
    stops the keypoint prediction until the next INTRA packet, which always carries one).

    Writers time a packet when it is a keyframe or INTRA, when its time is not the implied
    one, and right after a packet whose time jumped more than MAX_PTS_JUMP_MS past the
    implied one (a sender that stalled), so that two timed packets confirm the new timeline
    at once (KeypointTimeline accepts a jump only when a second timed packet agrees).
    """

    def __init__(self, fps_milli: int) -> None:
        self.fps_milli = fps_milli
        # per kind: (seq, pts_ms, whether that time jumped past the implied one)
        self._anchors: dict[PacketKind, tuple[int, int, bool]] = {}

    def copy(self) -> ImpliedClock:
        clock = ImpliedClock(self.fps_milli)
        clock._anchors = dict(self._anchors)
        return clock

    def implied_pts_ms(self, kind: PacketKind, seq: int) -> int | None:
        """The pts_ms a packet of `kind` with `seq` has when it carries none (None: no anchor)."""
        anchor = self._anchors.get(kind)
        if anchor is None:
            return None
        frames = (seq - anchor[0]) % COMPACT_SEQ_MODULO
        step_ms = (2 * frames * 1_000_000 + self.fps_milli) // (2 * self.fps_milli)
        return (anchor[1] + step_ms) % PTS_MODULO

    def needs_time(self, packet: Packet) -> bool:
        """Whether a writer must send `packet`'s pts_ms (the writer's rule, class doc)."""
        if packet.kind is PacketKind.KEYFRAME or packet.is_intra:
            return True
        anchor = self._anchors.get(packet.kind)
        if anchor is not None and anchor[2] and (packet.seq - anchor[0]) % COMPACT_SEQ_MODULO == 1:
            return True
        return self.implied_pts_ms(packet.kind, packet.seq) != packet.pts_ms

    def note_time(self, kind: PacketKind, seq: int, pts_ms: int, force: bool = False) -> None:
        """A packet with an explicit time was written or read: it anchors when it is ahead of
        the anchor (or always, with force: a timeline that accepted it)."""
        anchor = self._anchors.get(kind)
        ahead = anchor is None or signed_difference(seq - anchor[0], COMPACT_SEQ_MODULO) > 0
        if ahead or force:
            implied = self.implied_pts_ms(kind, seq)
            jumped = implied is not None and (
                signed_difference(pts_ms - implied, PTS_MODULO) > MAX_PTS_JUMP_MS
            )
            self._anchors[kind] = (seq, pts_ms, jumped)


class PacketWriter:
    """Turns one stream's packets into message bytes, in the stream's packet format.

    COMPACT packets need the writer's state (ImpliedClock): one writer per stream, fed every
    packet in sending order, keyframes and keypoints alike.
    """

    def __init__(self, header: StreamHeader) -> None:
        self.packet_format = header.packet_format
        self.clock = ImpliedClock(header.fps_milli)

    def pack(self, packet: Packet) -> bytes:
        """One packet as a whole message (or a .tkc record)."""
        if self.packet_format is PacketFormat.FIXED:
            return bytes(packet)
        return self._pack_compact(packet, last=True)

    def pack_bundle(self, packets: Sequence[Packet], repeats: int = 0) -> bytes:
        """Several packets as one message: each but the last carries its payload length.

        repeats: how many of the first packets repeat packets already sent (in an earlier
        message): a repeat prefix says so, and a receiver that has them drops them."""
        if not 1 <= len(packets) <= MAX_BUNDLE_PACKETS:
            raise ValueError(f"a bundle holds 1..{MAX_BUNDLE_PACKETS} packets, got {len(packets)}")
        if self.packet_format is PacketFormat.FIXED and len(packets) > 1:
            raise ValueError("FIXED packets cannot be bundled: they carry no length")
        if not 0 <= repeats < len(packets) or repeats > MAX_REPEATED_PACKETS:
            raise ValueError(
                f"repeats must be in 0..{min(len(packets) - 1, MAX_REPEATED_PACKETS)}, "
                f"got {repeats}"
            )
        if len(packets) == 1:
            return self.pack(packets[0])
        last = len(packets) - 1
        prefix = bytes((_COMPACT_REPEAT << _COMPACT_KIND_SHIFT | repeats,)) if repeats else b""
        return prefix + b"".join(
            self._pack_compact(p, last=i == last, after=packets[i - 1] if i else None)
            for i, p in enumerate(packets)
        )

    def _pack_compact(self, packet: Packet, last: bool, after: Packet | None = None) -> bytes:
        """One compact packet; `after`: the packet before it in the same message, if any."""
        if packet.seq >= COMPACT_SEQ_MODULO:
            raise ValueError(
                f"compact seq must be in 0..{COMPACT_SEQ_MODULO - 1}, got {packet.seq}"
            )
        timed = self.clock.needs_time(packet)
        flags = _COMPACT_INTRA if packet.is_intra else 0
        flags |= _COMPACT_TIME if timed else 0
        flags |= 0 if last else _COMPACT_LENGTH
        if _continues(after, packet):
            parts = [bytes((_COMPACT_CONTINUATION << _COMPACT_KIND_SHIFT | flags,))]
        else:
            first = _COMPACT_KIND_CODES[packet.kind] << _COMPACT_KIND_SHIFT | packet.seq >> 8
            parts = [bytes((first | flags, packet.seq & 0xFF))]
        if timed:
            parts.append(_COMPACT_TIME_FIELD.pack(packet.pts_ms))
            self.clock.note_time(packet.kind, packet.seq, packet.pts_ms)
        if not last:
            parts.append(encode_varint(len(packet.payload)))
        parts.append(packet.payload)
        return b"".join(parts)


class PacketReader:
    """Turns one stream's messages back into packets, in the stream's packet format: the
    counterpart of PacketWriter, fed every message in arrival order."""

    def __init__(self, header: StreamHeader) -> None:
        self.packet_format = header.packet_format
        self.clock = ImpliedClock(header.fps_milli)

    def parse(self, data: bytes) -> list[Packet]:
        """The packets of one message (several in a COMPACT bundle). A message that does not
        parse as a whole raises BitstreamError and leaves the reader as it was."""
        if self.packet_format is PacketFormat.FIXED:
            return [Packet.parse(data)]
        clock = self.clock.copy()
        packets: list[Packet] = []
        repeats, offset = _parse_repeat_prefix(data)
        while True:
            after = packets[-1] if packets else None
            packet, offset, more = _parse_compact(data, offset, clock, after)
            packets.append(packet)
            if not more:
                break
            if offset >= len(data):
                raise BitstreamError(
                    "bundle ends after a length-prefixed packet: expected another packet"
                )
            if len(packets) == MAX_BUNDLE_PACKETS:
                raise BitstreamError(f"bundle holds more than {MAX_BUNDLE_PACKETS} packets")
        if repeats >= len(packets):
            raise BitstreamError(
                f"repeat prefix names {repeats} repeated packets of a message of "
                f"{len(packets)}: expected fewer"
            )
        self.clock = clock
        return [replace(p, repeated=True) if i < repeats else p for i, p in enumerate(packets)]


def _parse_repeat_prefix(data: bytes) -> tuple[int, int]:
    """(repeated packets, offset of the first packet) of a compact message."""
    if not data or data[0] >> _COMPACT_KIND_SHIFT != _COMPACT_REPEAT:
        return 0, 0
    if data[0] & _COMPACT_REPEAT_RESERVED:
        raise BitstreamError("repeat prefix sets reserved bit 5: expected 0")
    repeats = data[0] & _COMPACT_REPEAT_COUNT
    if repeats == 0:
        raise BitstreamError("repeat prefix names 0 repeated packets: expected 1 to 31")
    return repeats, 1


def compact_packet_kind(first_byte: int) -> PacketKind | None:
    """The kind a compact packet's first byte names (None: a continuation or a reserved
    code); for tools that work on the bytes (talkcodec.fuzzing)."""
    return _COMPACT_KINDS.get(first_byte >> _COMPACT_KIND_SHIFT)


def compact_first_byte(kind: PacketKind, low_bits: int) -> int:
    """A compact packet's first byte naming `kind`, with `low_bits` (flags and seq bits 10..8,
    the low 6 bits) kept."""
    return _COMPACT_KIND_CODES[kind] << _COMPACT_KIND_SHIFT | low_bits & 0x3F


def compact_timed(first_byte: int) -> bool:
    """Whether a (non-continuation) compact packet with this first byte carries pts_ms."""
    return bool(first_byte & _COMPACT_TIME)


def compact_with_time_flag(first_byte: int) -> int:
    return first_byte | _COMPACT_TIME


def _continues(after: Packet | None, packet: Packet) -> bool:
    """Whether `packet` may take a continuation header after `after` in one message."""
    return (
        after is not None
        and after.kind is PacketKind.KEYPOINTS
        and packet.kind is PacketKind.KEYPOINTS
        and packet.seq == (after.seq + 1) % COMPACT_SEQ_MODULO
    )


def _parse_compact(
    data: bytes, offset: int, clock: ImpliedClock, after: Packet | None
) -> tuple[Packet, int, bool]:
    """(packet, offset after it, whether another packet follows) at data[offset:]; `after`:
    the packet before it in the same message, if any."""
    if offset >= len(data):
        raise BitstreamError(f"compact packet header needs {COMPACT_HEADER_BYTES} bytes, got 0")
    first = data[offset]
    code = first >> _COMPACT_KIND_SHIFT
    if code == _COMPACT_CONTINUATION:
        if after is None or after.kind is not PacketKind.KEYPOINTS:
            raise BitstreamError(
                "continuation packet must follow a keypoints packet in its message"
            )
        if first & _COMPACT_CONTINUATION_RESERVED:
            raise BitstreamError(
                f"continuation packet sets reserved bits: 0x{first & 0x07:02x}, expected 0"
            )
        kind, seq = PacketKind.KEYPOINTS, (after.seq + 1) % COMPACT_SEQ_MODULO
        offset += 1
    else:
        if len(data) - offset < COMPACT_HEADER_BYTES:
            raise BitstreamError(
                f"compact packet header needs {COMPACT_HEADER_BYTES} bytes, "
                f"got {len(data) - offset}"
            )
        known = _COMPACT_KINDS.get(code)
        if known is None:
            raise UnknownPacketKind(f"unknown compact packet kind {code}")
        kind, seq = known, (first & _COMPACT_SEQ_HIGH) << 8 | data[offset + 1]
        offset += COMPACT_HEADER_BYTES
    if first & _COMPACT_TIME:
        if len(data) - offset < _COMPACT_TIME_FIELD.size:
            raise BitstreamError(
                f"compact packet pts_ms needs {_COMPACT_TIME_FIELD.size} bytes, "
                f"got {len(data) - offset}"
            )
        (pts_ms,) = _COMPACT_TIME_FIELD.unpack_from(data, offset)
        offset += _COMPACT_TIME_FIELD.size
        clock.note_time(kind, seq, pts_ms)
    else:
        implied = clock.implied_pts_ms(kind, seq)
        if implied is None:
            raise UntimedPacket(
                f"{kind.name.lower()} packet seq {seq} has no pts_ms and no earlier one "
                "to imply it from"
            )
        pts_ms = implied
    more = bool(first & _COMPACT_LENGTH)
    if more:
        length, offset = read_varint(data, offset, "compact packet payload length")
        if len(data) - offset < length:
            raise BitstreamError(
                f"compact packet payload needs {length} bytes, got {len(data) - offset}"
            )
        end = offset + length
    else:
        end = len(data)
    flags = PacketFlags.INTRA if first & _COMPACT_INTRA else PacketFlags(0)
    timed = bool(first & _COMPACT_TIME)
    return Packet(kind, seq, pts_ms, bytes(data[offset:end]), flags, timed), end, more


def _tkc_version(header: StreamHeader) -> int:
    """The .tkc version a stream is written as: FIXED streams exactly as revision 2 wrote them
    (u32 record lengths), so that older readers read them; COMPACT ones with varint lengths."""
    fixed = header.packet_format is PacketFormat.FIXED
    return TKC_VERSION_FIXED_LENGTHS if fixed else TKC_VERSION


def _encode_tkc_preamble(header: StreamHeader) -> bytes:
    header_bytes = bytes(header)
    preamble = _TKC_PREAMBLE.pack(TKC_MAGIC, _tkc_version(header), len(header_bytes))
    return preamble + header_bytes


def tkc_record_bytes(packet_format: PacketFormat, payload_bytes: int, timed: bool) -> int:
    """The bytes a .tkc record of one packet takes: its length field, packet header (a COMPACT
    packet's pts_ms only when `timed`) and payload; what _encode_tkc_record writes."""
    if packet_format is PacketFormat.FIXED:
        return _TKC_RECORD_LENGTH.size + PACKET_HEADER_BYTES + payload_bytes
    size = COMPACT_HEADER_BYTES + _COMPACT_TIME_FIELD.size * timed + payload_bytes
    return size + len(encode_varint(size))


def _encode_tkc_record(writer: PacketWriter, packet: Packet) -> bytes:
    packet_bytes = writer.pack(packet)
    if len(packet_bytes) > TKC_MAX_RECORD_BYTES:
        raise ValueError(
            f"packet of {len(packet_bytes)} bytes does not fit a .tkc record of at most "
            f"{TKC_MAX_RECORD_BYTES} bytes"
        )
    if writer.packet_format is PacketFormat.FIXED:
        return _TKC_RECORD_LENGTH.pack(len(packet_bytes)) + packet_bytes
    return encode_varint(len(packet_bytes)) + packet_bytes


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes; fewer only at end of stream (streams may return short reads)."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = stream.read(size - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


@dataclass(frozen=True)
class TkcFile:
    """A whole .tkc file in memory: magic "TKCF" | version u8 | header_len u8 | StreamHeader |
    records, each record being length varint | one packet in the header's packet format
    (version 2), or length u32 | one FIXED packet (version 1, what FIXED streams are written
    as). Use TkcWriter / TkcReader to stream."""

    header: StreamHeader
    packets: tuple[Packet, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "packets", tuple(self.packets))
        bytes(self)  # every packet must fit its record and the packet format

    def __bytes__(self) -> bytes:
        writer = PacketWriter(self.header)
        records = (_encode_tkc_record(writer, packet) for packet in self.packets)
        return b"".join((_encode_tkc_preamble(self.header), *records))

    @classmethod
    def parse(cls, data: bytes) -> TkcFile:
        reader = TkcReader(io.BytesIO(data))
        return cls(reader.header, tuple(reader))


class TkcWriter:
    """Writes a .tkc stream: the preamble and header at once, then one record per write().

    The caller keeps ownership of `stream` (a buffered binary file object) unless the writer
    came from TkcWriter.open(); close() then closes the file too.
    """

    def __init__(self, stream: BinaryIO, header: StreamHeader) -> None:
        self.header = header
        self.packets_written = 0
        self._stream = stream
        self._owns_stream = False
        self._writer = PacketWriter(header)
        stream.write(_encode_tkc_preamble(header))

    @classmethod
    def open(cls, path: str | Path, header: StreamHeader) -> TkcWriter:
        stream = open(path, "wb")  # noqa: SIM115 -- the writer owns it and closes it
        try:
            writer = cls(stream, header)
        except BaseException:
            stream.close()
            raise
        writer._owns_stream = True
        logger.debug("writing .tkc file %s", path)
        return writer

    def write(self, packet: Packet) -> None:
        self._stream.write(_encode_tkc_record(self._writer, packet))
        self.packets_written += 1

    def close(self) -> None:
        self._stream.flush()
        if self._owns_stream:
            self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class TkcReader:
    """Reads a .tkc stream lazily: the header on construction, then one packet per record.

    Iterating consumes the stream. The caller keeps ownership of `stream` unless the reader
    came from TkcReader.open(); close() then closes the file too.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._owns_stream = False
        self.records_read = 0
        self.version = TKC_VERSION
        self.header = self._read_header()
        self._packets = PacketReader(self.header)

    @classmethod
    def open(cls, path: str | Path) -> TkcReader:
        stream = open(path, "rb")  # noqa: SIM115 -- the reader owns it and closes it
        try:
            reader = cls(stream)
        except BaseException:
            stream.close()
            raise
        reader._owns_stream = True
        logger.debug("reading .tkc file %s", path)
        return reader

    def _read_header(self) -> StreamHeader:
        preamble = _read_up_to(self._stream, _TKC_PREAMBLE.size)
        if len(preamble) < _TKC_PREAMBLE.size:
            raise BitstreamError(
                f"tkc preamble needs {_TKC_PREAMBLE.size} bytes, got {len(preamble)}"
            )
        magic, version, header_len = _TKC_PREAMBLE.unpack(preamble)
        if magic != TKC_MAGIC:
            raise BitstreamError(f"not a .tkc file: expected magic {TKC_MAGIC!r}, found {magic!r}")
        if version not in (TKC_VERSION_FIXED_LENGTHS, TKC_VERSION):
            raise BitstreamError(
                f"unsupported .tkc version: expected {TKC_VERSION_FIXED_LENGTHS} or "
                f"{TKC_VERSION}, found {version}"
            )
        self.version = version
        if header_len < STREAM_HEADER_BYTES:
            raise BitstreamError(
                f"tkc header_len too small: expected at least {STREAM_HEADER_BYTES}, "
                f"found {header_len}"
            )
        header_bytes = _read_up_to(self._stream, header_len)
        if len(header_bytes) < header_len:
            raise BitstreamError(
                f"tkc stream header truncated: expected {header_len} bytes, "
                f"found {len(header_bytes)}"
            )
        return StreamHeader.parse(header_bytes)

    def read_packet(self) -> Packet | None:
        """The next packet, or None at a clean end of stream (between records)."""
        index = self.records_read
        length = self._read_record_length(index)
        if length is None:
            return None
        packet_bytes = _read_up_to(self._stream, length)
        if len(packet_bytes) < length:
            raise BitstreamError(
                f"tkc record {index} truncated: expected {length} bytes, found {len(packet_bytes)}"
            )
        try:
            packets = self._packets.parse(packet_bytes)
        except BitstreamError as exc:
            raise type(exc)(f"tkc record {index}: {exc}") from exc
        if len(packets) != 1:
            raise BitstreamError(
                f"tkc record {index}: expected one packet, found a bundle of {len(packets)}"
            )
        self.records_read += 1
        return packets[0]

    def _read_record_length(self, index: int) -> int | None:
        """The next record's length (None at a clean end): u32 in version 1, else a varint."""
        if self.version == TKC_VERSION_FIXED_LENGTHS:
            length_bytes = _read_up_to(self._stream, _TKC_RECORD_LENGTH.size)
            if not length_bytes:
                return None
            if len(length_bytes) < _TKC_RECORD_LENGTH.size:
                raise BitstreamError(
                    f"tkc record {index} length needs {_TKC_RECORD_LENGTH.size} bytes, "
                    f"got {len(length_bytes)}"
                )
            (length,) = _TKC_RECORD_LENGTH.unpack(length_bytes)
        else:
            length_bytes = b""
            while not length_bytes or length_bytes[-1] & 0x80:
                byte = _read_up_to(self._stream, 1)
                if not byte:
                    if not length_bytes:
                        return None
                    break
                length_bytes += byte
                if len(length_bytes) == _VARINT_MAX_BYTES:
                    break
            length, _ = read_varint(length_bytes, 0, f"tkc record {index} length")
        minimum = self._min_packet_bytes
        if not minimum <= length <= TKC_MAX_RECORD_BYTES:
            raise BitstreamError(
                f"tkc record {index} length out of range: expected "
                f"{minimum}..{TKC_MAX_RECORD_BYTES}, found {length}"
            )
        return length

    @property
    def _min_packet_bytes(self) -> int:
        fixed = self.header.packet_format is PacketFormat.FIXED
        return PACKET_HEADER_BYTES if fixed else COMPACT_HEADER_BYTES

    def __iter__(self) -> Iterator[Packet]:
        while (packet := self.read_packet()) is not None:
            yield packet

    def close(self) -> None:
        if self._owns_stream:
            self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
