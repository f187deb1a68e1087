"""Fuzzing the decoders with mutations of real streams: the fuzz tests and benchmarks/fuzz.py.

A stream made by the real encoder from the shipped demo portrait (so nothing needs the clips)
is cut into its .tkc records; `mutate_tkc` damages it the ways files and links do (bit flips,
truncation, duplicated, dropped and reordered records, extreme field values, garbage records,
swapped payloads), and `decode_tkc_case` runs the loop of `talkcodec decode`
(codec.decode_to_frames) on the result under a time budget. Every case must end in time with
either a BitstreamError (a one-line error for the user) or a bounded, playable result: at most
`frame_bound` frames, what the records can justify whatever their timestamps say.
`mutate_gc` does the same for GC keyframe payloads, re-computing their check so that the range
decoder and the generator see the damage too, and `mutate_av1` for AV1 keyframe payloads.
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
import signal
import struct
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from talkcodec.bitstream import (
    COMPACT_HEADER_BYTES,
    MAX_PTS_STEP_MS,
    PACKET_HEADER_BYTES,
    TKC_VERSION_FIXED_LENGTHS,
    BitstreamError,
    PacketFormat,
    PacketKind,
    PacketWriter,
    StreamHeader,
    TkcFile,
    TkcReader,
    compact_first_byte,
    compact_packet_kind,
    compact_timed,
    compact_with_time_flag,
    encode_varint,
    read_varint,
)
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.keyframe.base import KeyframeCodec

_RECORD_LENGTH = struct.Struct("!I")  # .tkc version 1
_PREAMBLE_BYTES = 6  # magic | version | header_len
_U32_MAX = 0xFFFF_FFFF
# Offsets inside a FIXED packet (kind | flags | seq | pts_ms | payload) and a COMPACT one
# (kind, flags and seq high bits | seq low byte | pts_ms when TIME is set | payload).
_FIXED_KIND, _FIXED_FLAGS, _FIXED_SEQ, _FIXED_PTS = 0, 1, 2, 4


class CaseTimeout(Exception):
    """A fuzz case ran past its time budget (a hang, as far as the fuzzer is concerned)."""


@contextlib.contextmanager
def time_budget(seconds: float) -> Iterator[None]:
    """Raise CaseTimeout in the main thread once `seconds` have passed (SIGALRM, Unix)."""

    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"over the {seconds:g} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class TkcRecords:
    """A well-formed .tkc file cut apart: the preamble with the stream header, then each
    record (length | packet) as bytes; version 1 files frame records with a u32 length and
    FIXED packets, version 2 with a varint and the header's packet format."""

    preamble: bytes
    records: tuple[bytes, ...]

    @classmethod
    def split(cls, data: bytes) -> TkcRecords:
        header_len = data[5]
        preamble = data[: _PREAMBLE_BYTES + header_len]
        offset = len(preamble)
        records = []
        while offset < len(data):
            prefix, length = _record_length(data, offset, data[4])
            end = offset + prefix + length
            records.append(data[offset:end])
            offset = end
        return cls(preamble, tuple(records))

    @functools.cached_property
    def compact(self) -> bool:
        """Whether the header names COMPACT packets (parsed once: every record asks)."""
        return StreamHeader.parse(self.preamble[_PREAMBLE_BYTES:]).packet_format is (
            PacketFormat.COMPACT
        )

    def join(self, records: list[bytes] | None = None) -> bytes:
        return self.preamble + b"".join(self.records if records is None else records)

    def packet(self, record: bytes) -> bytes:
        """The packet of a record (its length prefix removed)."""
        prefix, _ = _record_length(record, 0, self.preamble[4])
        return record[prefix:]

    def record(self, packet: bytes) -> bytes:
        """`packet` framed as a record of this file."""
        if self.preamble[4] == TKC_VERSION_FIXED_LENGTHS:
            return _RECORD_LENGTH.pack(len(packet)) + packet
        return encode_varint(len(packet)) + packet

    def kind_of(self, packet: bytes) -> int | None:
        """The packet kind a packet's first byte names (None: none this reader knows)."""
        if not self.compact:
            return packet[_FIXED_KIND]
        return compact_packet_kind(packet[0])

    def header_bytes(self, packet: bytes) -> int:
        """How many bytes of `packet` come before its payload."""
        if not self.compact:
            return PACKET_HEADER_BYTES
        return COMPACT_HEADER_BYTES + 4 * compact_timed(packet[0])

    def packet_fields(self, packet: bytes) -> list[tuple[int, int]]:
        """(offset, size) of the packet header's fields, then of the keyframe payload's codec,
        reference_id and keypoints_len (garbage in keypoint packets)."""
        if self.compact:
            fields = [(0, 1), (1, 1)] + ([(2, 4)] if compact_timed(packet[0]) else [])
        else:
            fields = [(_FIXED_KIND, 1), (_FIXED_FLAGS, 1), (_FIXED_SEQ, 2), (_FIXED_PTS, 4)]
        payload = self.header_bytes(packet)
        return fields + [(payload, 1), (payload + 1, 1), (payload + 2, 2)]

    def with_pts(self, packet: bytes, pts_ms: int) -> bytes:
        """`packet` stamped with `pts_ms` (a COMPACT packet without a time gains one)."""
        stamp = struct.pack("!I", pts_ms)
        if not self.compact:
            return _patch(packet, _FIXED_PTS, stamp)
        if compact_timed(packet[0]):
            return _patch(packet, 2, stamp)
        return bytes([compact_with_time_flag(packet[0]), packet[1]]) + stamp + packet[2:]

    def indices_of(self, kind: PacketKind) -> list[int]:
        return [i for i, r in enumerate(self.records) if self.kind_of(self.packet(r)) == kind]


def _record_length(data: bytes, offset: int, version: int) -> tuple[int, int]:
    """(prefix bytes, packet length) of the record at data[offset:] of a file of `version`."""
    if version == TKC_VERSION_FIXED_LENGTHS:
        (length,) = _RECORD_LENGTH.unpack_from(data, offset)
        return _RECORD_LENGTH.size, length
    length, end = read_varint(data, offset, "record length")
    return end - offset, length


def demo_stream(frames: int = 25, config: EncoderConfig | None = None) -> bytes:
    """A .tkc file of the real encoder on the demo portrait (talkcodec.runtime.demo): about
    `frames` frames (the demo plays forwards then back), a keyframe and keypoint packets."""
    from talkcodec.codec import StreamEncoder
    from talkcodec.runtime.demo import demo_frames

    images, _ = demo_frames(max_frames=frames // 2 + 1)
    config = config or EncoderConfig()
    encoder = StreamEncoder(config)
    try:
        packets = [
            packet
            for index, image in enumerate(images[:frames])
            for packet in encoder.encode(image, round(index * 1000 / config.fps))
        ]
    finally:
        encoder.close()
    return bytes(TkcFile(encoder.header, tuple(packets)))


# -- mutations of a .tkc file -------------------------------------------------------------


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    """`data` with 1 to 8 random bits flipped (unchanged when empty)."""
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 8) if damaged else 0):
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def set_bytes(data: bytes, rng: random.Random) -> bytes:
    """`data` with 1 to 4 random bytes set to 0, 255 or anything (unchanged when empty)."""
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 4) if damaged else 0):
        damaged[rng.randrange(len(damaged))] = rng.choice([0, 0xFF, rng.randrange(256)])
    return bytes(damaged)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """A random prefix of `data`, shorter than it (empty for empty data)."""
    return data[: rng.randrange(len(data))] if data else data


def _flip_bits(stream: TkcRecords, rng: random.Random) -> bytes:
    return flip_bits(stream.join(), rng)


def _set_bytes(stream: TkcRecords, rng: random.Random) -> bytes:
    return set_bytes(stream.join(), rng)


def _truncate(stream: TkcRecords, rng: random.Random) -> bytes:
    return truncate(stream.join(), rng)


def _duplicate_records(stream: TkcRecords, rng: random.Random) -> bytes:
    records = list(stream.records)
    for _ in range(rng.randint(1, 5)):
        records.insert(rng.randrange(len(records) + 1), rng.choice(records))
    return stream.join(records)


def _drop_records(stream: TkcRecords, rng: random.Random) -> bytes:
    records = list(stream.records)
    for _ in range(min(rng.randint(1, 5), len(records))):
        del records[rng.randrange(len(records))]
    return stream.join(records)


def _reorder_records(stream: TkcRecords, rng: random.Random) -> bytes:
    records = list(stream.records)
    start = rng.randrange(len(records))
    window = records[start : start + rng.randint(2, 10)]
    rng.shuffle(window)
    records[start : start + len(window)] = window
    return stream.join(records)


def _patch(record: bytes, offset: int, value: bytes) -> bytes:
    return record[:offset] + value + record[offset + len(value) :]


def _timestamp(stream: TkcRecords, rng: random.Random) -> bytes:
    """One keypoint packet's pts_ms set to anything (the 43-day timestamp of issue 15)."""
    records = list(stream.records)
    index = rng.choice(stream.indices_of(PacketKind.KEYPOINTS))
    pts = rng.choice([rng.randrange(1 << 32), _U32_MAX, 0, rng.randrange(100_000)])
    records[index] = stream.record(stream.with_pts(stream.packet(records[index]), pts))
    return stream.join(records)


def _extreme(rng: random.Random, size: int) -> bytes:
    top = (1 << (8 * size)) - 1
    value = rng.choice([0, 1, top, top - 1, top // 2, top // 2 + 1, rng.randrange(top + 1)])
    return value.to_bytes(size, "big")


# (offset, size) of the stream header's fields in the preamble: width, height, fps_milli,
# keyframe codec, keypoint model, step, expression dims, bank size, packet format; and the
# version and header_len.
_HEADER_FIELDS = [(4, 1), (5, 1), (6, 2), (8, 2), (10, 4), (14, 1), (15, 1), (16, 2), (18, 1)]
_HEADER_FIELDS += [(19, 1), (20, 1)]


def _field_extreme(stream: TkcRecords, rng: random.Random) -> bytes:
    records = list(stream.records)
    if rng.random() < 0.2:
        offset, size = rng.choice(_HEADER_FIELDS)
        if offset + size > len(stream.preamble):
            return stream.join(records)
        preamble = _patch(stream.preamble, offset, _extreme(rng, size))
        return preamble + b"".join(records)
    index = rng.randrange(len(records))
    packet = stream.packet(records[index])
    prefix = len(records[index]) - len(packet)
    # the record's length field, or one field of its packet
    offset, size = rng.choice([(-prefix, prefix), *stream.packet_fields(packet)])
    if offset + size <= len(packet):
        records[index] = _patch(records[index], prefix + offset, _extreme(rng, size))
    return stream.join(records)


def _garbage_record(stream: TkcRecords, rng: random.Random) -> bytes:
    """A well-framed record of random bytes, half of them with a known kind."""
    records = list(stream.records)
    packet = bytearray(rng.randbytes(rng.randint(PACKET_HEADER_BYTES, 300)))
    if rng.random() < 0.5:
        if stream.compact:
            kind = rng.choice([PacketKind.KEYPOINTS, PacketKind.KEYFRAME])
            packet[0] = compact_first_byte(kind, packet[0] & 0x37)
        else:
            packet[0] = rng.choice([PacketKind.KEYFRAME, PacketKind.KEYPOINTS])
            packet[1] &= 0x01
    records.insert(rng.randrange(len(records) + 1), stream.record(bytes(packet)))
    return stream.join(records)


def _swap_payloads(stream: TkcRecords, rng: random.Random) -> bytes:
    """One packet's payload in another's header (a keyframe payload in a keypoint packet...)."""
    records = list(stream.records)
    target = stream.packet(records[rng.randrange(len(records))])
    source = stream.packet(records[rng.randrange(len(records))])
    packet = target[: stream.header_bytes(target)] + source[stream.header_bytes(source) :]
    records[rng.randrange(len(records))] = stream.record(packet)
    return stream.join(records)


TKC_MUTATIONS: dict[str, Callable[[TkcRecords, random.Random], bytes]] = {
    "flip_bits": _flip_bits,
    "set_bytes": _set_bytes,
    "truncate": _truncate,
    "duplicate_records": _duplicate_records,
    "drop_records": _drop_records,
    "reorder_records": _reorder_records,
    "timestamp": _timestamp,
    "field_extreme": _field_extreme,
    "garbage_record": _garbage_record,
    "swap_payloads": _swap_payloads,
}


def mutate_tkc(
    stream: TkcRecords, rng: random.Random, name: str | None = None
) -> tuple[str, bytes]:
    """(mutation name, damaged file bytes); `name` picks one mutation, else a random one."""
    name = name or rng.choice(sorted(TKC_MUTATIONS))
    return name, TKC_MUTATIONS[name](stream, rng)


# -- running one case ---------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    """outcome: "decoded" (a bounded result), "rejected" (BitstreamError), "crash" (any other
    exception), "hang" (over the time budget) or "over_bound" (more frames than the bound).
    detail: the error's one line, or the last line of the traceback of a crash."""

    mutation: str
    outcome: str
    frames: int
    frame_bound: int
    seconds: float
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in ("crash", "hang", "over_bound")


def frame_bound(keypoint_records: int, fps: float) -> int:
    """The most frames a file's records justify: one per keypoint record, as many held, and
    one timestamp step's worth (talkcodec.codec.HoldSchedule)."""
    return 2 * keypoint_records + round(MAX_PTS_STEP_MS * fps / 1000)


def _count_keypoint_records(data: bytes) -> int:
    """KEYPOINTS records of a possibly damaged file, counted from the framing alone."""
    count = 0
    with contextlib.suppress(IndexError, struct.error, BitstreamError):
        stream = TkcRecords(data[: _PREAMBLE_BYTES + data[5]], ())
        stream.compact  # noqa: B018 -- a header that does not parse decodes nothing
        offset = len(stream.preamble)
        while offset < len(data):
            prefix, length = _record_length(data, offset, data[4])
            packet = data[offset + prefix : offset + prefix + length]
            count += stream.kind_of(packet) == PacketKind.KEYPOINTS
            offset += prefix + length
    return count


@dataclass
class _Tally:
    """What a running case has seen so far: frames out, their bound, why it ended badly."""

    frames: int = 0
    bound: int = 0
    detail: str = ""


def _run_case(mutation: str, budget_s: float, work: Callable[[_Tally], str]) -> CaseResult:
    """Run one case's `work` (which returns its outcome) under the time budget; a
    BitstreamError is "rejected", the budget running out "hang", anything else "crash"."""
    tally = _Tally()
    started = time.perf_counter()
    try:
        with time_budget(budget_s):
            outcome = work(tally)
    except BitstreamError as error:
        outcome, tally.detail = "rejected", str(error)
    except CaseTimeout as error:
        outcome, tally.detail = "hang", str(error)
    except Exception:  # noqa: BLE001 -- a fuzzer records every other failure as a crash
        outcome, tally.detail = "crash", traceback.format_exc().strip().splitlines()[-1]
    seconds = time.perf_counter() - started
    return CaseResult(mutation, outcome, tally.frames, tally.bound, seconds, tally.detail)


def decode_tkc_case(
    mutation: str, data: bytes, decoder_config: DecoderConfig, budget_s: float = 10.0
) -> CaseResult:
    """Decode `data` as `talkcodec decode` would (frames counted, not written) and judge it."""
    from talkcodec.codec import HoldSchedule, StreamDecoder, decode_to_frames

    def work(tally: _Tally) -> str:
        reader = TkcReader(io.BytesIO(data))
        header = reader.header
        tally.bound = frame_bound(_count_keypoint_records(data), header.fps)
        decoder = StreamDecoder(header, decoder_config)
        for frame in decode_to_frames(decoder, reader, HoldSchedule(header.fps)):
            if frame.shape != (header.height, header.width, 3):
                tally.detail = f"frame of shape {frame.shape}"
                return "crash"
            tally.frames += 1
            if tally.frames > tally.bound:
                tally.detail = f"{tally.frames} frames, bound {tally.bound}"
                return "over_bound"
        return "decoded"

    return _run_case(mutation, budget_s, work)


# -- GC keyframe payloads -----------------------------------------------------------------


def _with_check(data: bytes) -> bytes:
    """`data` with its GC check recomputed, so only the fields themselves are wrong."""
    from talkcodec.keyframe.gc.payload import GcPayload, _checksum

    if len(data) < GcPayload.HEADER_BYTES:
        return data
    header, body = data[:8], data[GcPayload.HEADER_BYTES :]
    return header + struct.pack("!H", _checksum(header + body)) + body


def mutate_gc(payload: bytes, rng: random.Random) -> tuple[str, bytes]:
    """(mutation name, damaged GC payload): half keep a wrong check, half get a valid one."""
    name = rng.choice(["flip_bits", "set_bytes", "truncate", "field_extreme", "random"])
    if name == "flip_bits":
        data = flip_bits(payload, rng)
    elif name == "set_bytes":
        data = set_bytes(payload, rng)
    elif name == "truncate":
        data = truncate(payload, rng)
    elif name == "field_extreme":
        # version, channels byte, height, width, and a selective payload's first fields
        offset, size = rng.choice([(2, 1), (3, 1), (4, 2), (6, 2), (10, 1), (11, 2)])
        data = _patch(payload, offset, _extreme(rng, size))[: len(payload)]
    else:
        data = payload[:10] + rng.randbytes(rng.randint(0, 2 * len(payload)))
    if rng.random() < 0.5:
        return name + "+check", _with_check(data)
    return name, data


def decode_keyframe_case(
    mutation: str, data: bytes, codec: KeyframeCodec, budget_s: float = 30.0
) -> CaseResult:
    """Decode one damaged keyframe payload with `codec` and judge it: a decoded image must have
    the (height, width) its header states (codec.image_size)."""

    def work(tally: _Tally) -> str:
        tally.bound = 1
        image = codec.decompress(data)
        height, width = codec.image_size(data)
        if image.shape != (height, width, 3) or image.dtype != np.uint8:
            tally.detail = f"image {image.shape} {image.dtype} for {width}x{height}"
            return "crash"
        tally.frames = 1
        return "decoded"

    return _run_case(mutation, budget_s, work)


# -- AV1 keyframe payloads ----------------------------------------------------------------


def mutate_av1(payload: bytes, rng: random.Random) -> tuple[str, bytes]:
    """(mutation name, damaged AV1 keyframe payload): the generic damage, extreme values in
    the sequence header's bytes (its OBU header, size and the size fields), or garbage after
    it."""
    name = rng.choice(["flip_bits", "set_bytes", "truncate", "header_extreme", "random"])
    if name == "flip_bits":
        return name, flip_bits(payload, rng)
    if name == "set_bytes":
        return name, set_bytes(payload, rng)
    if name == "truncate":
        return name, truncate(payload, rng)
    if name == "header_extreme":
        offset = rng.randrange(min(len(payload), 13))
        return name, _patch(payload, offset, _extreme(rng, 1))[: len(payload)]
    header_bytes = 2 + payload[1]  # the sequence header OBU (its size fits one byte)
    return name, payload[:header_bytes] + rng.randbytes(rng.randint(0, 2 * len(payload)))


# -- data-channel messages against a running receiver ------------------------------------


def mutate_message(message: bytes, rng: random.Random) -> bytes:
    """A damaged copy of one data-channel message: bits flipped, bytes set, cut, extended,
    or replaced by random bytes of about its size."""
    choice = rng.randrange(5)
    if choice == 0:
        return flip_bits(message, rng)
    if choice == 1:
        return set_bytes(message, rng)
    if choice == 2:
        return truncate(message, rng)
    if choice == 3:
        return message + rng.randbytes(rng.randint(1, 64))
    return rng.randbytes(rng.randint(0, 2 * len(message) + 8))


LIVE_FUZZ_KINDS = ("keypoints", "keyframe", "control", "wrong_channel", "oversize", "text")


@dataclass
class LiveFuzzReport:
    """What a fuzzed live receiver did: messages sent per kind, what it dropped and counted,
    frames shown before, during and after the fuzzing, errors raised in its handlers (there
    must be none) and its memory."""

    sent: dict[str, int]
    dropped: dict[str, int]
    decoder: dict[str, int]
    frames_before: int
    frames_during: int
    frames_after: int
    handler_errors: list[str]
    pending_fragments: int
    rss_mib_before: float
    rss_mib_after: float


def _rss_mib() -> float:
    """This process's resident memory now, from /proc (Linux), in MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class _LiveReplay:
    """The packets of a real stream as a live sender sends them: seq counting on, pts_ms the
    wall clock, keyframes cut into fragments, the keypoint packets looped (the first is intra)."""

    def __init__(self, data: bytes, fragment_bytes: int = 1000) -> None:
        reader = TkcReader(io.BytesIO(data))
        self.header = reader.header
        packets = list(reader)
        self._keyframe = next(p for p in packets if p.kind is PacketKind.KEYFRAME)
        self._keypoints = [p for p in packets if p.kind is PacketKind.KEYPOINTS]
        self._fragment_bytes = fragment_bytes
        self._writer = PacketWriter(self.header)
        self._index = self._seq = self._keyframe_id = 0
        self._pts_ms = 0
        self._keyframe_pts_ms: int | None = None  # the pts of the frame a keyframe was sent for
        self.last_keypoints = b""
        self.last_fragments: list[bytes] = []

    def _now_ms(self) -> int:
        from talkcodec.transport.stats import wall_clock_ms

        # Strictly increasing, as a capture clock is.
        self._pts_ms = max(wall_clock_ms(), self._pts_ms + 1)
        return self._pts_ms

    def keyframe_messages(self) -> list[bytes]:
        """A fresh start: the keyframe's fragments; the next keypoint packet is intra."""
        from dataclasses import replace

        from talkcodec.transport.fragmentation import fragment

        seq = self._keyframe_id % self.header.seq_modulo
        packet = replace(self._keyframe, seq=seq, pts_ms=self._now_ms())
        parts = fragment(self._writer.pack(packet), self._keyframe_id, self._fragment_bytes)
        self._keyframe_id = (self._keyframe_id + 1) % (1 << 16)
        self._index = 0
        self._keyframe_pts_ms = packet.pts_ms  # the keypoints of that frame carry it too
        self.last_fragments = [bytes(part) for part in parts]
        return self.last_fragments

    def keypoint_message(self) -> bytes:
        from dataclasses import replace

        template = self._keypoints[self._index % len(self._keypoints)]
        pts_ms = self._keyframe_pts_ms if self._keyframe_pts_ms is not None else self._now_ms()
        self._keyframe_pts_ms = None
        packet = replace(template, seq=self._seq, pts_ms=pts_ms)
        self._index += 1
        self._seq = (self._seq + 1) % self.header.seq_modulo
        self.last_keypoints = self._writer.pack(packet)
        return self.last_keypoints


def _control_samples(header_bytes: bytes) -> list[bytes]:
    from talkcodec.transport.control import (
        KeyframeRequest,
        KeyframeRequestReason,
        ReceiverReport,
        RefreshRequest,
    )

    return [
        b"\x01" + header_bytes,
        bytes(KeyframeRequest(KeyframeRequestReason.NO_REFERENCE)),
        bytes(RefreshRequest(7)),
        bytes(ReceiverReport(1, 2, 3, 4, 5, 6)),
    ]


def _fuzz_message(
    kind: str, replay: _LiveReplay, rng: random.Random, max_message_bytes: int
) -> tuple[str, bytes | str]:
    """(channel, message) of one fuzz case of `kind` (LIVE_FUZZ_KINDS)."""
    channels = ("keyframe", "keypoints", "control")
    if kind == "keypoints":
        return "keypoints", mutate_message(replay.last_keypoints, rng)
    if kind == "keyframe":
        return "keyframe", mutate_message(rng.choice(replay.last_fragments), rng)
    if kind == "control":
        samples = _control_samples(bytes(replay.header))
        return "control", mutate_message(rng.choice(samples), rng)
    if kind == "wrong_channel":
        samples = {
            "keyframe": [replay.last_keypoints, *_control_samples(bytes(replay.header))],
            "keypoints": [*replay.last_fragments, *_control_samples(bytes(replay.header))],
            "control": [replay.last_keypoints, *replay.last_fragments],
        }
        channel = rng.choice(channels)
        return channel, rng.choice(samples[channel])
    if kind == "oversize":
        size = max_message_bytes + rng.randint(1, 4096)
        return rng.choice(channels), rng.randbytes(size)
    return rng.choice(channels), rng.choice(["", "hello", "\x00" * 100, "{}"])


async def fuzz_live_receiver(
    data: bytes,
    cases_per_kind: int,
    seed: int = 0,
    decoder_config: DecoderConfig | None = None,
    cases_per_frame: int = 4,
    frame_interval_s: float = 0.02,
) -> LiveFuzzReport:
    """Run a receiver on loopback WebRTC, feed it the real stream `data` (a .tkc file) as a
    live sender would, and between its frames `cases_per_kind` damaged messages of every kind
    of LIVE_FUZZ_KINDS, shuffled; then a clean second of frames. Nothing may raise."""
    import asyncio

    from talkcodec.config import ReceiverConfig
    from talkcodec.runtime.receiver import CallReceiver
    from talkcodec.transport.control import StreamHeaderMessage
    from talkcodec.transport.peer import (
        ChannelCollector,
        connect_in_process,
        create_channels,
        make_peer_connection,
        wait_open,
    )

    rng = random.Random(seed)
    replay = _LiveReplay(data)
    config = ReceiverConfig(decoder=decoder_config or DecoderConfig(renderer="meshwarp"))
    cases = [kind for kind in LIVE_FUZZ_KINDS for _ in range(cases_per_kind)]
    rng.shuffle(cases)
    sent = dict.fromkeys(LIVE_FUZZ_KINDS, 0)
    errors: list[str] = []
    sender_pc, receiver_pc = make_peer_connection(), make_peer_connection()
    channels = create_channels(sender_pc)
    collector = ChannelCollector(receiver_pc)

    def shown() -> int:
        return len(receiver.stats.displayed_pts_ms)

    async def send_frames(count: int) -> None:
        for _ in range(count):
            channels.keypoints.send(replay.keypoint_message())
            await asyncio.sleep(frame_interval_s)

    try:
        await connect_in_process(sender_pc, receiver_pc)
        await wait_open(channels, 20)
        receiver_channels = await collector.wait(20)
        for channel in (
            receiver_channels.keyframe,
            receiver_channels.keypoints,
            receiver_channels.control,
        ):
            channel.on("error", lambda error: errors.append(repr(error)))
        receiver = CallReceiver(receiver_channels, config)
        running = asyncio.create_task(receiver.run())
        channels.control.send(bytes(StreamHeaderMessage(replay.header)))
        for message in replay.keyframe_messages():
            channels.keyframe.send(message)
        await send_frames(25)
        frames_before = shown()
        rss_before = _rss_mib()
        for index, kind in enumerate(cases):
            channel, message = _fuzz_message(kind, replay, rng, config.max_message_bytes)
            getattr(channels, channel).send(message)
            sent[kind] += 1
            if index % cases_per_frame == 0:
                await send_frames(1)
            if index % 250 == 0:  # a fresh keyframe now and then, as after a request
                for fragment_message in replay.keyframe_messages():
                    channels.keyframe.send(fragment_message)
        await asyncio.sleep(0.5)
        frames_during = shown() - frames_before
        for message in replay.keyframe_messages():
            channels.keyframe.send(message)
        await send_frames(50)
        await asyncio.sleep(0.5)
        frames_after = shown() - frames_before - frames_during
        receiver.stop()
        await running
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    summary = receiver.summary()
    decoder = summary.get("decoder", {})
    return LiveFuzzReport(
        sent=sent,
        dropped=dict(receiver.stats.dropped),
        decoder=dict(decoder) if isinstance(decoder, dict) else {},
        frames_before=frames_before,
        frames_during=frames_during,
        frames_after=frames_after,
        handler_errors=errors,
        pending_fragments=summary["keyframe_fragments"]["in_progress"],  # type: ignore[index]
        rss_mib_before=rss_before,
        rss_mib_after=_rss_mib(),
    )
