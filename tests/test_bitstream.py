"""talkcodec.bitstream: exact round trips, golden bytes, exact errors, and fuzzed parsers.

The golden files in tests/golden/ pin the wire format. They are only rewritten when
TALKCODEC_REGEN_GOLDEN=1 is set:

    TALKCODEC_REGEN_GOLDEN=1 python -m pytest tests/test_bitstream.py -k golden

Regenerating them is a format change: old streams stop parsing the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talkcodec.bitstream import (
    COMPACT_HEADER_BYTES,
    COMPACT_SEQ_MODULO,
    DEFAULT_BANK_SIZE,
    KEYFRAME_PAYLOAD_HEADER_BYTES,
    MAX_FPS_MILLI,
    MAX_FRAME_SIDE_PX,
    MIN_FPS_MILLI,
    MIN_FRAME_SIDE_PX,
    PACKET_HEADER_BYTES,
    STREAM_HEADER_BYTES,
    STREAM_HEADER_V2_BYTES,
    STREAM_HEADER_V3_BYTES,
    STREAM_HEADER_V4_BYTES,
    TKC_MAGIC,
    TKC_MAX_RECORD_BYTES,
    TKC_VERSION,
    TKC_VERSION_FIXED_LENGTHS,
    BitstreamError,
    HybridKeypoints,
    ImpliedClock,
    KeyframeCodecId,
    KeyframePayload,
    KeypointModelId,
    LowresCodecId,
    LowresPicture,
    Packet,
    PacketFlags,
    PacketFormat,
    PacketKind,
    PacketReader,
    PacketWriter,
    StreamHeader,
    TkcFile,
    TkcReader,
    TkcWriter,
    UntimedPacket,
    encode_varint,
    read_varint,
)

GOLDEN_DIR = Path(__file__).parent / "golden"
REGEN_ENV = "TALKCODEC_REGEN_GOLDEN"

# --- strategies for valid values -------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)

packets = st.builds(
    Packet,
    kind=st.sampled_from(PacketKind),
    seq=u16,
    pts_ms=u32,
    payload=st.binary(max_size=48),
    flags=st.sampled_from([PacketFlags(0), PacketFlags.INTRA]),
)
keyframe_payloads = st.builds(
    KeyframePayload,
    codec=st.sampled_from(KeyframeCodecId),
    reference_id=u8,
    keypoints=st.binary(max_size=48),
    image=st.binary(min_size=1, max_size=48),
)
stream_headers = st.builds(
    StreamHeader,
    width=st.integers(MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX),
    height=st.integers(MIN_FRAME_SIDE_PX, MAX_FRAME_SIDE_PX),
    fps_milli=st.integers(MIN_FPS_MILLI, MAX_FPS_MILLI),
    keyframe_codec=st.sampled_from(KeyframeCodecId),
    keypoint_model=st.sampled_from(KeypointModelId),
    keypoint_step_millipx=st.integers(1, 0xFFFF),
    expression_dims=st.integers(0, 255),
    reference_bank_size=st.integers(1, 255),
    packet_format=st.sampled_from(PacketFormat),
)


@st.composite
def _hybrid_header(draw: st.DrawFn) -> StreamHeader:
    header = draw(stream_headers.filter(lambda h: min(h.width, h.height) >= 16))
    even = st.integers(8, 64).map(lambda half: 2 * half)
    return dataclasses.replace(
        header,
        lowres_codec=LowresCodecId.H264,
        lowres_width=min(draw(even), header.width - header.width % 2),
        lowres_height=min(draw(even), header.height - header.height % 2),
        fusion_level=draw(st.integers(1, 255)),
    )


stream_headers = st.one_of(stream_headers, _hybrid_header())
lowres_pictures = st.builds(
    LowresPicture,
    units=st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=15).map(tuple),
)
hybrid_keypoints = st.builds(
    HybridKeypoints, keypoints=st.binary(max_size=40), picture=st.none() | lowres_pictures
)


def _packets_for(header: StreamHeader, max_size: int) -> st.SearchStrategy[list[Packet]]:
    """Packets a stream with `header` can carry: seq within its modulo, and, so that some
    timestamps are the implied ones, runs of consecutive frames."""
    single = st.builds(
        Packet,
        kind=st.sampled_from(PacketKind),
        seq=st.integers(0, header.seq_modulo - 1),
        pts_ms=u32,
        payload=st.binary(max_size=48),
        flags=st.sampled_from([PacketFlags(0), PacketFlags.INTRA]),
    )

    @st.composite
    def run(draw: st.DrawFn) -> list[Packet]:
        first = draw(single)
        count = draw(st.integers(1, 4))
        clock = ImpliedClock(header.fps_milli)
        clock.note_time(first.kind, first.seq, first.pts_ms)
        seqs = [(first.seq + i) % header.seq_modulo for i in range(1, count)]
        implied = [clock.implied_pts_ms(first.kind, seq) for seq in seqs]
        rest = [
            Packet(first.kind, seq, pts, b"\x01") for seq, pts in zip(seqs, implied, strict=True)
        ]
        return [first, *rest]

    return st.lists(run(), max_size=max_size).map(lambda runs: [p for r in runs for p in r])


@st.composite
def tkc_files(draw: st.DrawFn) -> TkcFile:
    header = draw(stream_headers)
    return TkcFile(header, tuple(draw(_packets_for(header, max_size=3))))


@st.composite
def compact_messages(draw: st.DrawFn) -> tuple[StreamHeader, list[list[Packet]]]:
    """A COMPACT stream's header and its messages, each of 1..4 packets."""
    header = draw(stream_headers.filter(lambda h: h.packet_format is PacketFormat.COMPACT))
    packets = draw(_packets_for(header, max_size=4))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(packets) - 1)), max_size=4)))
    bounds = [0, *[c for c in cuts if c < len(packets)], len(packets)]
    messages = [packets[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return header, [m[i : i + 4] for m in messages for i in range(0, len(m), 4)]


def _read_stream(data: bytes) -> tuple[StreamHeader, list[Packet]]:
    reader = TkcReader(io.BytesIO(data))
    return reader.header, list(reader)


# --- golden files ----------------------------------------------------------------------------

GOLDEN_HEADER = StreamHeader(
    width=512,
    height=512,
    fps_milli=25000,
    keyframe_codec=KeyframeCodecId.WEBP,
    keypoint_model=KeypointModelId.MEDIAPIPE_478_V1,
    keypoint_step_millipx=250,
    expression_dims=16,
)
# The same stream as written by revision 2 (FIXED packets, .tkc version 1).
GOLDEN_HEADER_V2 = dataclasses.replace(GOLDEN_HEADER, packet_format=PacketFormat.FIXED)
GOLDEN_KEYFRAME_PAYLOAD = KeyframePayload(
    codec=KeyframeCodecId.WEBP,
    reference_id=0,
    keypoints=bytes.fromhex("0a0b0c0d0e0f"),
    image=b"RIFF\x04\x00\x00\x00WEBP",
)
GOLDEN_KEYFRAME = Packet(
    kind=PacketKind.KEYFRAME,
    seq=0,
    pts_ms=0,
    payload=bytes(GOLDEN_KEYFRAME_PAYLOAD),
    flags=PacketFlags.INTRA,
)
GOLDEN_KEYPOINTS = Packet(
    kind=PacketKind.KEYPOINTS, seq=1, pts_ms=40, payload=bytes.fromhex("c0ffee")
)
GOLDEN_TKC_V2 = TkcFile(
    header=GOLDEN_HEADER_V2,
    packets=(
        GOLDEN_KEYFRAME,
        GOLDEN_KEYPOINTS,
        Packet(kind=PacketKind.KEYPOINTS, seq=2, pts_ms=80, payload=bytes.fromhex("5a")),
    ),
)
# What a sender of revision 3 writes: the keyframe, the intra keypoints of the same frame (both
# timed), then the next frame's keypoints with the implied time.
GOLDEN_TKC = TkcFile(
    header=GOLDEN_HEADER,
    packets=(
        GOLDEN_KEYFRAME,
        Packet(PacketKind.KEYPOINTS, 0, 0, bytes.fromhex("c0ffee"), PacketFlags.INTRA),
        Packet(PacketKind.KEYPOINTS, 1, 40, bytes.fromhex("5a")),
    ),
)
# One data-channel message holding two frames: an intra one (timed) and the next (implied).
GOLDEN_BUNDLE = (
    Packet(PacketKind.KEYPOINTS, 5, 200, bytes.fromhex("c0ffee"), PacketFlags.INTRA),
    Packet(PacketKind.KEYPOINTS, 6, 240, bytes.fromhex("5a")),
)


def _pack_bundle(packets: tuple[Packet, ...]) -> bytes:
    return PacketWriter(GOLDEN_HEADER).pack_bundle(packets)


def _parse_bundle(data: bytes) -> tuple[Packet, ...]:
    return tuple(PacketReader(GOLDEN_HEADER).parse(data))


GOLDEN_CASES: dict[str, tuple[object, Callable[[object], bytes], Callable[[bytes], object]]] = {
    "packet_keypoints.bin": (GOLDEN_KEYPOINTS, bytes, Packet.parse),
    "packet_keyframe.bin": (GOLDEN_KEYFRAME, bytes, Packet.parse),
    "tkc_three_packets.bin": (GOLDEN_TKC, bytes, TkcFile.parse),
    "tkc_three_packets_v2.bin": (GOLDEN_TKC_V2, bytes, TkcFile.parse),
    "bundle_two_keypoints.bin": (GOLDEN_BUNDLE, _pack_bundle, _parse_bundle),  # type: ignore[dict-item]
}
# Written by revision 2 as tkc version 1 (and still written so for FIXED streams): kept as it
# was, never regenerated.
_V2_FILES_WRITTEN_BEFORE = {"tkc_three_packets_v2.bin"}


def write_golden_files(directory: Path) -> None:
    """Rewrite every golden file from the values above (a format change: see module doc)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, (value, encode, _) in GOLDEN_CASES.items():
        if name not in _V2_FILES_WRITTEN_BEFORE:
            (directory / name).write_bytes(encode(value))


@pytest.fixture(scope="module")
def golden_dir() -> Path:
    if os.environ.get(REGEN_ENV) == "1":
        write_golden_files(GOLDEN_DIR)
    return GOLDEN_DIR


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_bytes_are_pinned(name: str, golden_dir: Path) -> None:
    value, encode, parse = GOLDEN_CASES[name]
    path = golden_dir / name
    assert path.exists(), f"missing {path}; regenerate with {REGEN_ENV}=1 (a format change)"
    data = path.read_bytes()
    assert parse(data) == value
    assert encode(value) == data


def test_golden_keyframe_payload_parses_from_golden_packet(golden_dir: Path) -> None:
    packet = Packet.parse((golden_dir / "packet_keyframe.bin").read_bytes())
    assert KeyframePayload.parse(packet.payload) == GOLDEN_KEYFRAME_PAYLOAD


def test_golden_tkc_streams_lazily(golden_dir: Path) -> None:
    with TkcReader.open(golden_dir / "tkc_three_packets.bin") as reader:
        assert reader.header == GOLDEN_HEADER
        assert list(reader) == list(GOLDEN_TKC.packets)


def test_golden_tkc_is_compact(golden_dir: Path) -> None:
    """Revision 3 against revision 2: 2-byte headers, implied times, varint record lengths."""
    compact = (golden_dir / "tkc_three_packets.bin").read_bytes()
    fixed = (golden_dir / "tkc_three_packets_v2.bin").read_bytes()
    # preamble, header, then per record: varint length, 2-byte header, pts where timed, payload
    assert len(compact) == 6 + 15 + (1 + 2 + 4 + 22) + (1 + 2 + 4 + 3) + (1 + 2 + 1)
    assert len(fixed) == 6 + 14 + (4 + 8 + 22) + (4 + 8 + 3) + (4 + 8 + 1)


def test_revision_2_files_still_read(golden_dir: Path) -> None:
    """The golden file as written before compact packets (tkc version 1, u32 record lengths,
    a 14-byte header): the same packets, FIXED format."""
    data = (golden_dir / "tkc_three_packets_v2.bin").read_bytes()
    assert data[4] == TKC_VERSION_FIXED_LENGTHS and data[5] == STREAM_HEADER_V2_BYTES
    parsed = TkcFile.parse(data)
    assert parsed == GOLDEN_TKC_V2
    assert parsed.header.packet_format is PacketFormat.FIXED


def test_revision_1_files_still_read(golden_dir: Path) -> None:
    """The golden file as written before the stream header carried the bank size (13-byte
    header): the same packets, and the bank size every sender then used by default."""
    data = (golden_dir / "tkc_three_packets_v1.bin").read_bytes()
    assert data[5] == STREAM_HEADER_BYTES
    parsed = TkcFile.parse(data)
    assert parsed.packets == GOLDEN_TKC_V2.packets
    assert parsed.header == GOLDEN_HEADER_V2
    assert parsed.header.reference_bank_size == DEFAULT_BANK_SIZE == 4


# --- field order, spelled out byte by byte ---------------------------------------------------


def test_constants() -> None:
    assert PACKET_HEADER_BYTES == 8
    assert KEYFRAME_PAYLOAD_HEADER_BYTES == 4
    assert STREAM_HEADER_BYTES == 13
    assert STREAM_HEADER_V2_BYTES == 14
    assert STREAM_HEADER_V3_BYTES == 15
    assert TKC_MAGIC == b"TKCF"
    assert (TKC_VERSION_FIXED_LENGTHS, TKC_VERSION) == (1, 2)
    assert COMPACT_HEADER_BYTES == 2
    assert COMPACT_SEQ_MODULO == 2048
    assert TKC_MAX_RECORD_BYTES == 16 * 1024 * 1024


def test_packet_layout() -> None:
    packet = Packet(PacketKind.KEYPOINTS, 0x0102, 0x03040506, b"\xaa", PacketFlags.INTRA)
    assert bytes(packet) == bytes.fromhex("02 01 0102 03040506 aa")


def test_keyframe_payload_layout() -> None:
    payload = KeyframePayload(KeyframeCodecId.JPEG, 3, b"\x11\x22", b"\xff\xd8")
    assert bytes(payload) == bytes.fromhex("02 03 0002 1122 ffd8")


def test_stream_header_layout() -> None:
    header = StreamHeader(
        640, 480, 29970, KeyframeCodecId.GC, KeypointModelId.FAN_68_V1, 500, 24, 7
    )
    assert bytes(header) == bytes.fromhex("0280 01e0 00007512 03 02 01f4 18 07 02")
    assert header.fps == pytest.approx(29.97)
    fixed = dataclasses.replace(header, packet_format=PacketFormat.FIXED)
    assert bytes(fixed) == bytes.fromhex("0280 01e0 00007512 03 02 01f4 18 07")  # revision 2


def test_tkc_layout() -> None:
    header = StreamHeader(
        16, 32, 1000, KeyframeCodecId.WEBP, KeypointModelId.MEDIAPIPE_478_V1, 4, 7
    )
    tkc = TkcFile(header, (Packet(PacketKind.KEYPOINTS, 5, 6, b""),))
    assert bytes(tkc) == bytes.fromhex(
        "544b4346 02 0f 0010 0020 000003e8 01 01 0004 07 04 02 06 10 05 00000006"
    )


def test_compact_packet_layout() -> None:
    writer = PacketWriter(GOLDEN_HEADER)  # 25 fps: a frame every 40 ms
    intra = Packet(PacketKind.KEYPOINTS, 0x123, 1000, b"\xaa", PacketFlags.INTRA)
    # kind 0 | INTRA 0x20 | TIME 0x10 | seq 0x123 >> 8, then seq & 0xff, pts_ms u32, payload
    assert writer.pack(intra) == bytes.fromhex("31 23 000003e8 aa")
    # the next frame 40 ms later: no time on the wire
    assert writer.pack(Packet(PacketKind.KEYPOINTS, 0x124, 1040, b"\xbb")) == bytes.fromhex(
        "01 24 bb"
    )
    # two frames later but 100 ms (a skipped frame and jitter): timed
    late = Packet(PacketKind.KEYPOINTS, 0x126, 1140, b"")
    assert writer.pack(late) == bytes.fromhex("11 26 00000474")
    keyframe = Packet(PacketKind.KEYFRAME, 7, 1140, b"\x01", PacketFlags.INTRA)
    assert writer.pack(keyframe) == bytes.fromhex("70 07 00000474 01")


def test_compact_bundle_layout() -> None:
    bundle = (
        Packet(PacketKind.KEYPOINTS, 1, 0, b"\xaa\xbb", PacketFlags.INTRA),
        Packet(PacketKind.KEYPOINTS, 2, 40, b"\xcc"),
        Packet(PacketKind.KEYPOINTS, 3, 80, b"\xdd"),
    )
    data = PacketWriter(GOLDEN_HEADER).pack_bundle(bundle)
    # every packet but the last carries LENGTH (0x08) and a varint payload length; those that
    # follow a keypoints packet with the next seq take a 1-byte continuation header (kind 2)
    assert data == bytes.fromhex("38 01 00000000 02 aabb 88 01 cc 80 dd")
    assert tuple(PacketReader(GOLDEN_HEADER).parse(data)) == bundle


def test_repeat_prefix_layout_and_recovery() -> None:
    writer = PacketWriter(GOLDEN_HEADER)
    first = [
        Packet(PacketKind.KEYPOINTS, 1, 0, b"\xaa", PacketFlags.INTRA),
        Packet(PacketKind.KEYPOINTS, 2, 40, b"\xbb"),
    ]
    second = [
        Packet(PacketKind.KEYPOINTS, 3, 80, b"\xcc"),
        Packet(PacketKind.KEYPOINTS, 4, 120, b""),
    ]
    lost = writer.pack_bundle(first)
    data = writer.pack_bundle(first + second, repeats=2)
    assert lost == bytes.fromhex("38 01 00000000 01 aa 80 bb")
    # prefix kind 3 | 2 repeated packets, then the bundle as ever: the repeated intra packet
    # keeps its time, everything after it continues (1-byte headers, implied times)
    assert data == bytes.fromhex("c2 38 01 00000000 01 aa 88 01 bb 88 01 cc 80")
    # a receiver that lost the first message gets all four, the first two marked repeated
    parsed = PacketReader(GOLDEN_HEADER).parse(data)
    assert parsed == first + second
    assert [p.repeated for p in parsed] == [True, True, False, False]
    # one that has it reads the same packets (its decoder drops the copies)
    reader = PacketReader(GOLDEN_HEADER)
    reader.parse(lost)
    assert reader.parse(data) == first + second
    with pytest.raises(ValueError, match="repeats must be in 0..1"):
        writer.pack_bundle(second, repeats=2)


def test_repeated_packet_behind_the_anchor_carries_its_time() -> None:
    """A repeated untimed packet before a timed one cannot be implied forward: it is timed."""
    writer = PacketWriter(GOLDEN_HEADER)
    writer.pack(Packet(PacketKind.KEYPOINTS, 0, 0, b"", PacketFlags.INTRA))
    previous = [
        Packet(PacketKind.KEYPOINTS, 1, 40, b"\x01"),
        Packet(PacketKind.KEYPOINTS, 2, 80, b"\x02", PacketFlags.INTRA),
    ]
    writer.pack_bundle(previous)
    data = writer.pack_bundle([*previous, Packet(PacketKind.KEYPOINTS, 3, 120, b"\x03")], 2)
    reader = PacketReader(GOLDEN_HEADER)
    reader.parse(bytes.fromhex("30 00 00000000"))
    parsed = reader.parse(data)
    assert [(p.seq, p.pts_ms, p.timed) for p in parsed] == [
        (1, 40, True),
        (2, 80, True),
        (3, 120, False),
    ]


def test_implied_times_round_half_up() -> None:
    clock = ImpliedClock(29970)  # 33.3667 ms a frame
    clock.note_time(PacketKind.KEYPOINTS, 2040, 0xFFFF_FF00)
    assert clock.implied_pts_ms(PacketKind.KEYPOINTS, 2041) == 0xFFFF_FF00 + 33
    # seq wraps at 2048 and pts_ms at 2**32: 10 frames are 333.67 -> 334 ms
    assert clock.implied_pts_ms(PacketKind.KEYPOINTS, 2) == (0xFFFF_FF00 + 334) % (1 << 32)
    assert clock.implied_pts_ms(PacketKind.KEYFRAME, 2) is None  # anchors are per kind
    clock.note_time(PacketKind.KEYPOINTS, 2000, 5)  # behind the anchor: ignored
    assert clock.implied_pts_ms(PacketKind.KEYPOINTS, 2041) == 0xFFFF_FF00 + 33


def test_varint_round_trip_and_bounds() -> None:
    for value in (0, 1, 127, 128, 300, 16383, 16384, (1 << 28) - 1):
        data = encode_varint(value)
        assert read_varint(data + b"\x99", 0, "x") == (value, len(data))
    assert encode_varint(300) == bytes.fromhex("ac02")
    with pytest.raises(ValueError, match="varint must be in"):
        encode_varint(1 << 28)


@settings(max_examples=60, deadline=None)
@given(compact_messages())
def test_compact_messages_round_trip(case: tuple[StreamHeader, list[list[Packet]]]) -> None:
    header, messages = case
    writer, reader = PacketWriter(header), PacketReader(header)
    for packets in messages:
        assert reader.parse(writer.pack_bundle(packets)) == packets


def test_untimed_packet_without_anchor_is_its_own_error() -> None:
    writer = PacketWriter(GOLDEN_HEADER)
    writer.pack(Packet(PacketKind.KEYPOINTS, 0, 0, b"", PacketFlags.INTRA))
    untimed = writer.pack(Packet(PacketKind.KEYPOINTS, 1, 40, b"\x01"))
    with pytest.raises(UntimedPacket) as excinfo:
        PacketReader(GOLDEN_HEADER).parse(untimed)  # joined late: the intra packet was lost
    assert (
        str(excinfo.value)
        == "keypoints packet seq 1 has no pts_ms and no earlier one to imply it from"
    )
    assert excinfo.value.reason == "undecodable"


def test_reader_state_unchanged_by_a_bad_message() -> None:
    reader = PacketReader(GOLDEN_HEADER)
    reader.parse(bytes.fromhex("30 00 00000064"))  # intra, seq 0, 100 ms
    with pytest.raises(BitstreamError):
        reader.parse(bytes.fromhex("38 05 00009999 05 01"))  # timed, then truncated
    assert reader.parse(bytes.fromhex("00 01"))[0].pts_ms == 140


# --- exact round trips -----------------------------------------------------------------------


@settings(max_examples=50)
@given(packets)
def test_packet_round_trip(packet: Packet) -> None:
    parsed = Packet.parse(bytes(packet))
    assert parsed == packet
    assert type(parsed.kind) is PacketKind
    assert type(parsed.flags) is PacketFlags
    assert len(bytes(packet)) == PACKET_HEADER_BYTES + len(packet.payload)


@settings(max_examples=50)
@given(keyframe_payloads)
def test_keyframe_payload_round_trip(payload: KeyframePayload) -> None:
    parsed = KeyframePayload.parse(bytes(payload))
    assert parsed == payload
    assert type(parsed.codec) is KeyframeCodecId


@settings(max_examples=50)
@given(stream_headers)
def test_stream_header_round_trip(header: StreamHeader) -> None:
    parsed = StreamHeader.parse(bytes(header))
    assert parsed == header
    assert type(parsed.keyframe_codec) is KeyframeCodecId
    assert type(parsed.keypoint_model) is KeypointModelId


@settings(max_examples=50)
@given(tkc_files())
def test_tkc_file_round_trip(tkc: TkcFile) -> None:
    assert TkcFile.parse(bytes(tkc)) == tkc


@settings(max_examples=30)
@given(tkc_files())
def test_writer_matches_tkc_file_and_reader_reads_it(tkc: TkcFile) -> None:
    sink = io.BytesIO()
    with TkcWriter(sink, tkc.header) as writer:
        for packet in tkc.packets:
            writer.write(packet)
    assert writer.packets_written == len(tkc.packets)
    assert sink.getvalue() == bytes(tkc)
    assert _read_stream(sink.getvalue()) == (tkc.header, list(tkc.packets))


class _TrickleStream(io.RawIOBase):
    """A stream that hands out at most 3 bytes per read, as sockets and pipes may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._data.read(min(3, len(buffer)))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_reader_survives_short_reads() -> None:
    reader = TkcReader(_TrickleStream(bytes(GOLDEN_TKC)))  # type: ignore[arg-type]
    assert (reader.header, tuple(reader)) == (GOLDEN_TKC.header, GOLDEN_TKC.packets)


def test_writer_and_reader_own_files_they_open(tmp_path: Path) -> None:
    path = tmp_path / "call.tkc"
    with TkcWriter.open(path, GOLDEN_HEADER) as writer:
        for packet in GOLDEN_TKC.packets:
            writer.write(packet)
    assert path.read_bytes() == bytes(GOLDEN_TKC)
    with TkcReader.open(path) as reader:
        assert tuple(reader) == GOLDEN_TKC.packets


def test_hybrid_layout() -> None:
    # Revision 4 appends lowres_codec u8 | lowres_width u16 | lowres_height u16 | fusion_level
    # u8; keypoints-only streams stay revision 3, byte for byte.
    hybrid = dataclasses.replace(
        GOLDEN_HEADER, lowres_codec=LowresCodecId.H264, lowres_width=64, lowres_height=48,
        fusion_level=16,
    )  # fmt: skip
    assert bytes(hybrid) == bytes(GOLDEN_HEADER) + bytes.fromhex("01 0040 0030 10")
    assert len(bytes(hybrid)) == STREAM_HEADER_V4_BYTES == 21
    assert StreamHeader.parse(bytes(hybrid)) == hybrid and hybrid.hybrid
    assert not GOLDEN_HEADER.hybrid and len(bytes(GOLDEN_HEADER)) == STREAM_HEADER_V3_BYTES
    # SPS, PPS and an IDR slice: a count, two lengths, the units without start codes.
    picture = LowresPicture((b"\x67\x42", b"\x68\xce", b"\x65\x88\x84"))
    assert bytes(picture) == bytes.fromhex("03 02 02 6742 68ce 658884")
    assert picture.idr and not LowresPicture((b"\x41\x9a",)).idr
    assert bytes(LowresPicture((b"\x41\x9a",))) == bytes.fromhex("01 419a")
    # A P picture of one unit takes the short form (head = 2 << 1 | 1, no count, no 0x41);
    # anything else the long one (head = 2 << 1).
    payload = HybridKeypoints(b"\xaa\xbb", LowresPicture((b"\x41\x9a\x02",)))
    assert bytes(payload) == bytes.fromhex("05 aabb 9a02")
    idr = HybridKeypoints(b"\xaa\xbb", picture)
    assert bytes(idr) == bytes.fromhex("04 aabb 03 02 02 6742 68ce 658884")
    assert HybridKeypoints.parse(bytes.fromhex("04 aabb")) == HybridKeypoints(b"\xaa\xbb", None)
    # The long form of a short-form picture still reads.
    long_form = HybridKeypoints.parse(bytes.fromhex("04 aabb 01 419a02"))
    assert long_form == payload


@given(lowres_pictures)
def test_lowres_picture_round_trip(picture: LowresPicture) -> None:
    assert LowresPicture.parse(bytes(picture)) == picture


@given(hybrid_keypoints)
def test_hybrid_keypoints_round_trip(payload: HybridKeypoints) -> None:
    assert HybridKeypoints.parse(bytes(payload)) == payload


def test_stream_header_extension_bytes_are_skipped() -> None:
    # A later revision may append header fields; this reader skips them by header_len.
    header_bytes = bytes(GOLDEN_HEADER) + b"\x99\x98"
    data = TKC_MAGIC + bytes([TKC_VERSION, len(header_bytes)]) + header_bytes
    data += bytes(GOLDEN_TKC)[6 + STREAM_HEADER_V3_BYTES :]
    assert TkcFile.parse(data) == GOLDEN_TKC


# --- exact error messages --------------------------------------------------------------------

_TKC_START = TKC_MAGIC + bytes([TKC_VERSION, STREAM_HEADER_V3_BYTES]) + bytes(GOLDEN_HEADER)
_TKC_V1_START = (
    TKC_MAGIC + bytes([TKC_VERSION_FIXED_LENGTHS, STREAM_HEADER_V2_BYTES]) + bytes(GOLDEN_HEADER_V2)
)
_BUNDLE_OF_33 = bytes.fromhex("38 00 00000000 00") + bytes.fromhex("08 00 00") * 31 + b"\x00\x00"

ERROR_CASES: list[tuple[Callable[[bytes], object], bytes, str]] = [
    (Packet.parse, b"\x02\x00\x00", "packet header needs 8 bytes, got 3"),
    (Packet.parse, bytes.fromhex("07 00 0000 00000000"), "unknown packet kind 7"),
    (
        Packet.parse,
        bytes.fromhex("02 03 0000 00000000"),
        "packet flags 0x03 set reserved bits: expected only bits 0x01, found 0x02",
    ),
    (_parse_bundle, b"\x00", "compact packet header needs 2 bytes, got 1"),
    (
        _parse_bundle,
        bytes.fromhex("80 00"),
        "continuation packet must follow a keypoints packet in its message",
    ),
    (
        _parse_bundle,
        bytes.fromhex("78 00 00000000 00 80"),  # after a keyframe
        "continuation packet must follow a keypoints packet in its message",
    ),
    (
        _parse_bundle,
        bytes.fromhex("38 00 00000000 00 81"),
        "continuation packet sets reserved bits: 0x01, expected 0",
    ),
    (
        _parse_bundle,
        bytes.fromhex("c0 00"),
        "repeat prefix names 0 repeated packets: expected 1 to 31",
    ),
    (
        _parse_bundle,
        bytes.fromhex("e1 30 00 00000000"),
        "repeat prefix sets reserved bit 5: expected 0",
    ),
    (
        _parse_bundle,
        bytes.fromhex("c1 30 00 00000000"),
        "repeat prefix names 1 repeated packets of a message of 1: expected fewer",
    ),
    (_parse_bundle, bytes.fromhex("38 00 00000000 01 aa c0 00"), "unknown compact packet kind 3"),
    (_parse_bundle, bytes.fromhex("10 00 0000"), "compact packet pts_ms needs 4 bytes, got 2"),
    (
        _parse_bundle,
        bytes.fromhex("38 00 00000000 05 01"),
        "compact packet payload needs 5 bytes, got 1",
    ),
    (
        _parse_bundle,
        bytes.fromhex("38 00 00000000 00"),
        "bundle ends after a length-prefixed packet: expected another packet",
    ),
    (
        _parse_bundle,
        bytes.fromhex("38 00 00000000 80"),
        "compact packet payload length varint truncated after 1 bytes",
    ),
    (
        _parse_bundle,
        bytes.fromhex("38 00 00000000 8000"),
        "compact packet payload length varint is not minimal (ends in a zero byte)",
    ),
    (_parse_bundle, _BUNDLE_OF_33, "bundle holds more than 32 packets"),
    (TkcFile.parse, b"TKC", "tkc preamble needs 6 bytes, got 3"),
    (
        TkcFile.parse,
        b"RIFF\x01\x0d" + bytes(GOLDEN_HEADER),
        "not a .tkc file: expected magic b'TKCF', found b'RIFF'",
    ),
    (
        TkcFile.parse,
        b"TKCF\x03\x0d" + bytes(GOLDEN_HEADER),
        "unsupported .tkc version: expected 1 or 2, found 3",
    ),
    (TkcFile.parse, b"TKCF\x01\x05", "tkc header_len too small: expected at least 13, found 5"),
    (
        TkcFile.parse,
        b"TKCF\x01\x0d" + bytes(7),
        "tkc stream header truncated: expected 13 bytes, found 7",
    ),
    (
        StreamHeader.parse,
        bytes.fromhex("0200 0200 000061a8 01 01 00fa 10 04 03"),
        "unknown packet format 3",
    ),
    (TkcFile.parse, _TKC_V1_START + b"\x00\x00", "tkc record 0 length needs 4 bytes, got 2"),
    (
        TkcFile.parse,
        _TKC_V1_START + bytes(4),
        "tkc record 0 length out of range: expected 8..16777216, found 0",
    ),
    (
        TkcFile.parse,
        _TKC_V1_START + (16 * 1024 * 1024 + 1).to_bytes(4, "big"),
        "tkc record 0 length out of range: expected 8..16777216, found 16777217",
    ),
    (
        TkcFile.parse,
        _TKC_V1_START + bytes.fromhex("00000008 09 00 0000 00000000"),
        "tkc record 0: unknown packet kind 9",
    ),
    (
        TkcFile.parse,
        _TKC_START + b"\x00",
        "tkc record 0 length out of range: expected 2..16777216, found 0",
    ),
    (
        TkcFile.parse,
        _TKC_START + encode_varint(16 * 1024 * 1024 + 1),
        "tkc record 0 length out of range: expected 2..16777216, found 16777217",
    ),
    (TkcFile.parse, _TKC_START + b"\x80", "tkc record 0 length varint truncated after 1 bytes"),
    (
        TkcFile.parse,
        _TKC_START + b"\xff\xff\xff\xff",
        "tkc record 0 length varint longer than 4 bytes",
    ),
    (
        TkcFile.parse,
        bytes(GOLDEN_TKC) + b"\x14" + bytes(7),
        "tkc record 3 truncated: expected 20 bytes, found 7",
    ),
    (
        TkcFile.parse,
        _TKC_START + bytes.fromhex("02 c0 00"),
        "tkc record 0: repeat prefix names 0 repeated packets: expected 1 to 31",
    ),
    (
        TkcFile.parse,
        _TKC_START + bytes.fromhex("09 38 00 00000000 00 00 01"),
        "tkc record 0: expected one packet, found a bundle of 2",
    ),
    (LowresPicture.parse, b"", "low-res picture needs 1 byte of unit count, got 0"),
    (LowresPicture.parse, b"\x11\x41", "low-res picture sets reserved bits 0x10: expected 0"),
    (LowresPicture.parse, b"\x00\x41", "low-res picture holds 0 NAL units: expected 1 to 15"),
    (LowresPicture.parse, b"\x02\x05\x41", "low-res NAL unit needs 5 bytes, got 1"),
    (LowresPicture.parse, b"\x02\x00\x41", "low-res NAL unit of 0 bytes: expected at least 1"),
    (
        LowresPicture.parse,
        b"\x02\x01\x41",
        "low-res picture's last NAL unit is empty: expected bytes",
    ),
    (HybridKeypoints.parse, b"", "hybrid keypoints length varint truncated after 0 bytes"),
    (HybridKeypoints.parse, b"\x06ab", "hybrid keypoints need 3 bytes, got 2"),
    (HybridKeypoints.parse, b"\x05ab", "short-form low-res picture is empty: expected its slice"),
    (
        StreamHeader.parse,
        bytes(GOLDEN_HEADER) + bytes.fromhex("01 0040 0011 10"),
        "stream header lowres_height: expected an even 16..512, found 17",
    ),
    (
        StreamHeader.parse,
        bytes(GOLDEN_HEADER) + bytes.fromhex("00 0040 0040 10"),
        "stream header low-res size and fusion level: expected 0x0 and 0 without a low-res "
        "codec, found 64x64 and 16",
    ),
    (
        StreamHeader.parse,
        bytes(GOLDEN_HEADER) + bytes.fromhex("01 0040 0040 00"),
        "stream header fusion_level: expected 1..255, found 0",
    ),
    (
        StreamHeader.parse,
        bytes(GOLDEN_HEADER) + bytes.fromhex("07 0040 0040 10"),
        "unknown low-res codec id 7",
    ),
]


@pytest.mark.parametrize(("parse", "data", "message"), ERROR_CASES)
def test_exact_error_messages(parse: Callable[[bytes], object], data: bytes, message: str) -> None:
    with pytest.raises(BitstreamError) as excinfo:
        parse(data)
    assert str(excinfo.value) == message


def test_streaming_reader_raises_on_bad_magic_at_construction() -> None:
    with pytest.raises(BitstreamError, match="not a .tkc file"):
        TkcReader(io.BytesIO(b"\x00" * 32))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Packet(PacketKind.KEYPOINTS, 65536, 0, b""), "seq must be in 0..65535, got 65536"),
        (
            lambda: Packet(PacketKind.KEYPOINTS, 0, -1, b""),
            "pts_ms must be in 0..4294967295, got -1",
        ),
        (lambda: Packet(7, 0, 0, b""), "unknown packet kind 7"),  # type: ignore[arg-type]
        (
            lambda: Packet(PacketKind.KEYPOINTS, 0, 0, b"", PacketFlags(0x04)),
            "flags must leave reserved bits clear, got 0x04 set",
        ),
        (
            lambda: KeyframePayload(KeyframeCodecId.WEBP, 0, b"", b""),
            "image must not be empty",
        ),
        (
            lambda: KeyframePayload(KeyframeCodecId.WEBP, 0, bytes(65536), b"x"),
            "len(keypoints) must be in 0..65535, got 65536",
        ),
        (
            lambda: StreamHeader(
                0, 16, 1000, KeyframeCodecId.WEBP, KeypointModelId.FAN_68_V1, 1, 0
            ),
            "width must be in 16..4096, got 0",
        ),
        (
            lambda: StreamHeader(
                16, 5000, 1000, KeyframeCodecId.WEBP, KeypointModelId.FAN_68_V1, 1, 0
            ),
            "height must be in 16..4096, got 5000",
        ),
        (
            lambda: StreamHeader(
                16, 16, 999, KeyframeCodecId.WEBP, KeypointModelId.FAN_68_V1, 1, 0
            ),
            "fps_milli must be in 1000..240000, got 999",
        ),
        (
            lambda: TkcFile(
                GOLDEN_HEADER,
                (Packet(PacketKind.KEYFRAME, 0, 0, bytes(TKC_MAX_RECORD_BYTES - 5)),),
            ),
            "packet of 16777217 bytes does not fit a .tkc record of at most 16777216 bytes",
        ),
        (
            lambda: PacketWriter(GOLDEN_HEADER).pack(Packet(PacketKind.KEYPOINTS, 2048, 0, b"")),
            "compact seq must be in 0..2047, got 2048",
        ),
        (
            lambda: PacketWriter(GOLDEN_HEADER_V2).pack_bundle([GOLDEN_KEYPOINTS] * 2),
            "FIXED packets cannot be bundled: they carry no length",
        ),
        (
            lambda: dataclasses.replace(GOLDEN_HEADER, packet_format=5),
            "unknown packet format 5",
        ),
    ],
)
def test_unencodable_values_raise_value_error(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        build()
    assert type(excinfo.value) is ValueError
    assert str(excinfo.value) == message


# --- fuzzing: every parser either succeeds or raises BitstreamError --------------------------

PARSERS: dict[str, tuple[Callable[[bytes], object], st.SearchStrategy[bytes]]] = {
    "Packet.parse": (Packet.parse, packets.map(bytes)),
    "KeyframePayload.parse": (KeyframePayload.parse, keyframe_payloads.map(bytes)),
    "StreamHeader.parse": (StreamHeader.parse, stream_headers.map(bytes)),
    "LowresPicture.parse": (LowresPicture.parse, lowres_pictures.map(bytes)),
    "HybridKeypoints.parse": (HybridKeypoints.parse, hybrid_keypoints.map(bytes)),
    "TkcFile.parse": (TkcFile.parse, tkc_files().map(bytes)),
    "TkcReader": (_read_stream, tkc_files().map(bytes)),
    "PacketReader.parse": (
        _parse_bundle,
        _packets_for(GOLDEN_HEADER, max_size=3)
        .filter(lambda packets: 0 < len(packets) <= 32)
        .map(lambda packets: _pack_bundle(tuple(packets))),
    ),
}


@st.composite
def _truncated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    data = draw(valid)
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def _bit_flipped(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    data = bytearray(draw(valid))
    for bit in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=3)):
        data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


@st.composite
def _valid_prefix_random_tail(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    data = draw(valid)
    return data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=64))


MUTATIONS: dict[str, Callable[[st.SearchStrategy[bytes]], st.SearchStrategy[bytes]]] = {
    "truncated": _truncated,
    "bit_flipped": _bit_flipped,
    "random": lambda _valid: st.binary(max_size=128),
    "valid_prefix_random_tail": _valid_prefix_random_tail,
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("parser", sorted(PARSERS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_parsers_raise_only_bitstream_error(
    parser: str, mutation: str, data: st.DataObject
) -> None:
    parse, valid = PARSERS[parser]
    blob = data.draw(MUTATIONS[mutation](valid), label="input")
    with contextlib.suppress(BitstreamError):
        parse(blob)


@settings(max_examples=50)
@given(st.binary(max_size=64))
def test_packet_encoding_is_canonical(data: bytes) -> None:
    # Whatever parses re-encodes to the very same bytes: no two encodings of one packet.
    try:
        packet = Packet.parse(data)
    except BitstreamError:
        return
    assert bytes(packet) == data


@settings(max_examples=50)
@given(st.binary(max_size=64))
def test_keyframe_payload_encoding_is_canonical(data: bytes) -> None:
    try:
        payload = KeyframePayload.parse(data)
    except BitstreamError:
        return
    assert bytes(payload) == data
