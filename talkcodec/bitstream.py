"""Wire formats: packets (the unit that travels on data channels) and the .tkc file.

Every byte is documented in docs/bitstream.md. Ids on the wire are the explicit constants below,
never derived from ordering. Every parse error raises BitstreamError; constructing a value that
cannot be encoded raises ValueError.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
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


class KeypointModelId(IntEnum):
    """Wire id of the keypoint parameterisation (detector layout + shipped basis)."""

    MEDIAPIPE_478_V1 = 1
    FAN_68_V1 = 2


class PacketKind(IntEnum):
    """Wire id of what a packet carries; 3..255 are reserved for later kinds (e.g. control)."""

    KEYFRAME = 1
    KEYPOINTS = 2


class PacketFlags(IntFlag):
    """Per-packet flag bits; every bit not named here is reserved and must be zero."""

    INTRA = 0x01  # keypoints coded without prediction: a receiver may start decoding here


_PACKET_HEADER = struct.Struct("!BBHI")  # kind | flags | seq | pts_ms
_KEYFRAME_HEADER = struct.Struct("!BBH")  # codec | reference_id | keypoints_len
_STREAM_HEADER = struct.Struct(
    "!HHIBBHB"
)  # width | height | fps_milli | codec | model | step | dims
_STREAM_HEADER_V2 = struct.Struct("!B")  # reference_bank_size, appended by revision 2
_TKC_PREAMBLE = struct.Struct("!4sBB")  # magic | version | header_len
_TKC_RECORD_LENGTH = struct.Struct("!I")

PACKET_HEADER_BYTES = _PACKET_HEADER.size  # 8
KEYFRAME_PAYLOAD_HEADER_BYTES = _KEYFRAME_HEADER.size  # 4
STREAM_HEADER_BYTES = _STREAM_HEADER.size  # 13, the v1 size; later revisions may append fields
STREAM_HEADER_V2_BYTES = STREAM_HEADER_BYTES + _STREAM_HEADER_V2.size  # 14, what writers write
# The receiver's reference bank (talkcodec.bank): reference_id is a u8 below the bank size,
# which the stream header carries since revision 2. A v1 header (13 bytes) means the default,
# which every sender of that revision used unless told otherwise.
DEFAULT_BANK_SIZE = 4
MAX_BANK_SIZE = 255
TKC_MAGIC = b"TKCF"
TKC_VERSION = 1
# Far above any real packet (a keyframe is tens of kB); bounds what a corrupt length can allocate.
TKC_MAX_RECORD_BYTES = 16 * 1024 * 1024

# Limits of what a stream can honestly mean (docs/bitstream.md, "Limits"). Readers reject a
# stream header outside them and drop, and count, a packet outside them.
MIN_FRAME_SIDE_PX = 16
MAX_FRAME_SIDE_PX = 4096
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


@dataclass(frozen=True)
class StreamHeader:
    """What a receiver needs before the first packet: width u16 | height u16 | fps_milli u32 |
    keyframe_codec u8 | keypoint_model u8 | keypoint_step_millipx u16 | expression_dims u8 |
    reference_bank_size u8.

    width and height are the decoded frame size in pixels; fps_milli is frames per second
    times 1000 (25000 for 25 fps); keypoint_step_millipx is the quantisation step of the
    keypoint coder in 1/1000 pixel at 256x256; expression_dims is how many directions of the
    keypoint model's expression basis the stream codes (0..255); reference_bank_size is how
    many references the receiver holds (1..255, revision 2; DEFAULT_BANK_SIZE in a v1 header).
    """

    width: int
    height: int
    fps_milli: int
    keyframe_codec: KeyframeCodecId
    keypoint_model: KeypointModelId
    keypoint_step_millipx: int
    expression_dims: int
    reference_bank_size: int = DEFAULT_BANK_SIZE

    def __post_init__(self) -> None:
        _check_range("width", self.width, MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX)
        _check_range("height", self.height, MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX)
        _check_range("fps_milli", self.fps_milli, MIN_FPS_MILLI, MAX_FPS_MILLI)
        _check_range("keypoint_step_millipx", self.keypoint_step_millipx, 1, _U16_MAX)
        _check_range("expression_dims", self.expression_dims, 0, 255)
        _check_range("reference_bank_size", self.reference_bank_size, 1, MAX_BANK_SIZE)
        codec = _to_enum(KeyframeCodecId, self.keyframe_codec, "keyframe codec id")
        model = _to_enum(KeypointModelId, self.keypoint_model, "keypoint model id")
        object.__setattr__(self, "keyframe_codec", codec)
        object.__setattr__(self, "keypoint_model", model)

    @property
    def fps(self) -> float:
        return self.fps_milli / 1000

    @property
    def max_keyframe_image_bytes(self) -> int:
        """The largest keyframe image a receiver accepts: the frame's raw RGB bytes and 4 KiB
        of container, more than any lossy coder needs for one picture."""
        return 3 * self.width * self.height + 4096

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
        return v1 + _STREAM_HEADER_V2.pack(self.reference_bank_size)

    @classmethod
    def parse(cls, data: bytes) -> StreamHeader:
        """The header at the start of `data`: the 13 bytes of revision 1, then, when there,
        the bank size of revision 2; bytes past those are later-revision extensions and are
        ignored."""
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
        for name, value, low, high in (
            ("width", width, MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX),
            ("height", height, MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX),
            ("fps_milli", fps_milli, MIN_FPS_MILLI, MAX_FPS_MILLI),
            ("keypoint_step_millipx", step, 1, _U16_MAX),
        ):
            if not low <= value <= high:
                raise BitstreamError(f"stream header {name}: expected {low}..{high}, found {value}")
        return cls(
            width=width,
            height=height,
            fps_milli=fps_milli,
            keyframe_codec=_to_enum(KeyframeCodecId, codec, "keyframe codec id", BitstreamError),
            keypoint_model=_to_enum(KeypointModelId, model, "keypoint model id", BitstreamError),
            keypoint_step_millipx=step,
            expression_dims=dims,
            reference_bank_size=bank_size,
        )


SEQ_MODULO = 1 << 16  # seq counts packets modulo 2**16
PTS_MODULO = 1 << 32  # pts_ms counts milliseconds modulo 2**32


def _signed(difference: int, modulo: int) -> int:
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
    since the last accepted packet (NEXT only: a new timeline has no step)."""

    arrival: Arrival
    lost: int = 0
    step_ms: int = 0

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

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.frame_ms = 1000 / fps
        self.stream_ms = 0
        self._last: tuple[int, int] | None = None  # (seq, pts_ms) of the last accepted packet
        self._candidate: tuple[int, int] | None = None  # the last implausible one
        self._fresh_start_pts_ms: int | None = None

    def note_fresh_start(self, pts_ms: int) -> None:
        """A fresh-start keyframe (reference id 0) with this pts_ms was received and decoded."""
        self._fresh_start_pts_ms = pts_ms

    @staticmethod
    def _ahead(since: tuple[int, int], seq: int, pts_ms: int) -> tuple[int, int]:
        """(seq advance, pts advance) of (seq, pts_ms) over `since`, signed, with wrap-around."""
        return _signed(seq - since[0], SEQ_MODULO), _signed(pts_ms - since[1], PTS_MODULO)

    def _follows(self, seq_ahead: int, pts_ahead: int) -> bool:
        """Whether a packet that far ahead may be the next one (the acceptance rule)."""
        if seq_ahead <= 0 or not 0 <= pts_ahead <= MAX_PTS_STEP_MS:
            return False
        if pts_ahead > seq_ahead * self.frame_ms + MAX_PTS_JUMP_MS:
            return False
        return seq_ahead <= SEQ_SLACK_PACKETS + SEQ_PACKETS_PER_FRAME * pts_ahead / self.frame_ms

    def classify(self, seq: int, pts_ms: int, intra: bool) -> ArrivalVerdict:
        """The verdict on the next KEYPOINTS packet to arrive; accepted ones move the timeline."""
        if self._last is None:
            return self._accept(seq, pts_ms, ArrivalVerdict(Arrival.NEXT))
        seq_ahead, pts_ahead = self._ahead(self._last, seq, pts_ms)
        if self._follows(seq_ahead, pts_ahead):
            self.stream_ms += pts_ahead
            return self._accept(seq, pts_ms, ArrivalVerdict(Arrival.NEXT, seq_ahead - 1, pts_ahead))
        if seq_ahead <= 0 and pts_ahead <= 0:
            return ArrivalVerdict(Arrival.LATE)
        fresh_start = intra and pts_ms == self._fresh_start_pts_ms
        confirmed = self._candidate is not None and self._follows(
            *self._ahead(self._candidate, seq, pts_ms)
        )
        if fresh_start or confirmed:
            forward = 0 < pts_ahead <= MAX_PTS_STEP_MS
            self.stream_ms += pts_ahead if forward else round(self.frame_ms)
            return self._accept(seq, pts_ms, ArrivalVerdict(Arrival.RESYNC))
        self._candidate = (seq, pts_ms)
        return ArrivalVerdict(Arrival.IMPLAUSIBLE)

    def _accept(self, seq: int, pts_ms: int, verdict: ArrivalVerdict) -> ArrivalVerdict:
        self._last = (seq, pts_ms)
        self._candidate = self._fresh_start_pts_ms = None
        return verdict


def _encode_tkc_preamble(header: StreamHeader) -> bytes:
    header_bytes = bytes(header)
    return _TKC_PREAMBLE.pack(TKC_MAGIC, TKC_VERSION, len(header_bytes)) + header_bytes


def _check_record_size(packet: Packet) -> None:
    size = PACKET_HEADER_BYTES + len(packet.payload)
    if size > TKC_MAX_RECORD_BYTES:
        raise ValueError(
            f"packet of {size} bytes does not fit a .tkc record of at most "
            f"{TKC_MAX_RECORD_BYTES} bytes"
        )


def _encode_tkc_record(packet: Packet) -> bytes:
    _check_record_size(packet)
    packet_bytes = bytes(packet)
    return _TKC_RECORD_LENGTH.pack(len(packet_bytes)) + packet_bytes


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
    records, each record being length u32 | Packet. Use TkcWriter / TkcReader to stream."""

    header: StreamHeader
    packets: tuple[Packet, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "packets", tuple(self.packets))
        for packet in self.packets:
            _check_record_size(packet)

    def __bytes__(self) -> bytes:
        records = (_encode_tkc_record(packet) for packet in self.packets)
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
        self._stream.write(_encode_tkc_record(packet))
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
        self.header = self._read_header()

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
        if version != TKC_VERSION:
            raise BitstreamError(
                f"unsupported .tkc version: expected {TKC_VERSION}, found {version}"
            )
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
        length_bytes = _read_up_to(self._stream, _TKC_RECORD_LENGTH.size)
        if not length_bytes:
            return None
        if len(length_bytes) < _TKC_RECORD_LENGTH.size:
            raise BitstreamError(
                f"tkc record {index} length needs {_TKC_RECORD_LENGTH.size} bytes, "
                f"got {len(length_bytes)}"
            )
        (length,) = _TKC_RECORD_LENGTH.unpack(length_bytes)
        if not PACKET_HEADER_BYTES <= length <= TKC_MAX_RECORD_BYTES:
            raise BitstreamError(
                f"tkc record {index} length out of range: expected "
                f"{PACKET_HEADER_BYTES}..{TKC_MAX_RECORD_BYTES}, found {length}"
            )
        packet_bytes = _read_up_to(self._stream, length)
        if len(packet_bytes) < length:
            raise BitstreamError(
                f"tkc record {index} truncated: expected {length} bytes, found {len(packet_bytes)}"
            )
        try:
            packet = Packet.parse(packet_bytes)
        except BitstreamError as exc:
            raise BitstreamError(f"tkc record {index}: {exc}") from exc
        self.records_read += 1
        return packet

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
