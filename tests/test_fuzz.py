"""End-to-end fuzzing of the decoders on a real stream of the shipped demo portrait: every
damaged .tkc file, GC payload and data-channel message ends quickly, in the one exception
type or a bounded result (benchmarks/fuzz.py runs the same cases by the ten thousand)."""

from __future__ import annotations

import asyncio
import io
import json
import random
import struct
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talkcodec.bitstream import MAX_PTS_JUMP_MS, PacketKind, PacketWriter, TkcFile, TkcReader
from talkcodec.cli import main
from talkcodec.codec import StreamDecoder
from talkcodec.config import DecoderConfig, EncoderConfig, config_path
from talkcodec.fuzzing import (
    TKC_MUTATIONS,
    TkcRecords,
    decode_keyframe_case,
    decode_tkc_case,
    demo_stream,
    fuzz_live_receiver,
    mutate_av1,
    mutate_gc,
    mutate_tkc,
)
from talkcodec.keyframe import Av1Codec, GCCodec
from talkcodec.runtime.demo import demo_frames
from talkcodec.video import probe, read_frames

MESH_WARP = DecoderConfig(renderer="meshwarp")
FRAMES = 25
CASE_BUDGET_S = 5.0
# The timestamp of the bug report: 3,724,542 s (43 days) into the stream.
FAR_FUTURE_PTS_MS = 3_724_542_000


@pytest.fixture(scope="module")
def stream() -> bytes:
    """One second of the real encoder on the demo portrait, keypoints only: a WebP keyframe,
    then keypoints."""
    return demo_stream(FRAMES, EncoderConfig(lowres_px=0))


@pytest.fixture(scope="module")
def records(stream: bytes) -> TkcRecords:
    return TkcRecords.split(stream)


def _with_pts(records: TkcRecords, index: int, pts_ms: int) -> bytes:
    changed = list(records.records)
    changed[index] = records.record(records.with_pts(records.packet(changed[index]), pts_ms))
    return records.join(changed)


def test_the_stream_decodes_whole(stream: bytes, records: TkcRecords) -> None:
    result = decode_tkc_case("none", stream, MESH_WARP)
    keypoints = len(records.indices_of(PacketKind.KEYPOINTS))
    assert result.outcome == "decoded" and result.frames == keypoints >= FRAMES - 2


@pytest.fixture(scope="module")
def hybrid_records() -> TkcRecords:
    """The same second as the default, a hybrid stream: a 48 px x264 picture in every third
    keypoint packet."""
    return TkcRecords.split(demo_stream(FRAMES, EncoderConfig()))


@pytest.mark.parametrize("stream_kind", ["records", "hybrid_records"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=st.sampled_from(sorted(TKC_MUTATIONS)), seed=st.integers(0, 2**32 - 1))
def test_damaged_files_end_in_time_rejected_or_bounded(
    request: pytest.FixtureRequest, stream_kind: str, mutation: str, seed: int
) -> None:
    records = request.getfixturevalue(stream_kind)
    _, data = mutate_tkc(records, random.Random(seed), mutation)
    result = decode_tkc_case(mutation, data, MESH_WARP, budget_s=CASE_BUDGET_S)
    assert not result.failed, result
    assert result.frames <= result.frame_bound


def test_the_hybrid_stream_decodes_whole(hybrid_records: TkcRecords) -> None:
    data = hybrid_records.join()
    result = decode_tkc_case("none", data, MESH_WARP)
    assert result.outcome == "decoded"
    keypoints = len(hybrid_records.indices_of(PacketKind.KEYPOINTS))
    assert result.frames == keypoints
    tkc = TkcFile.parse(data)
    decoder = StreamDecoder(tkc.header, MESH_WARP)
    for packet in tkc.packets:
        decoder.decode_packet(packet)
    # A picture in every lowres_every_frames-th keypoint packet (the default cadence), every
    # one decoded.
    every = EncoderConfig().lowres_every_frames
    assert decoder.stats.lowres_pictures == -(-keypoints // every)
    assert decoder.stats.lowres_corrupt == decoder.stats.lowres_waiting == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_a_damaged_timestamp_adds_at_most_the_jump_limit(records: TkcRecords, seed: int) -> None:
    """Whatever one keypoint packet's pts_ms says, the file plays no longer than the stream
    plus the time a timestamp may jump unexplained (MAX_PTS_JUMP_MS: a sender that stalled)."""
    _, data = mutate_tkc(records, random.Random(seed), "timestamp")
    result = decode_tkc_case("timestamp", data, MESH_WARP, budget_s=CASE_BUDGET_S)
    assert result.outcome == "decoded", result
    jump_frames = MAX_PTS_JUMP_MS * 25 // 1000
    assert result.frames <= len(records.indices_of(PacketKind.KEYPOINTS)) + jump_frames


@pytest.fixture(scope="module")
def far_future_file(records: TkcRecords, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bug report's file: one keypoint packet, mid-stream, 43 days in the future."""
    index = records.indices_of(PacketKind.KEYPOINTS)[10]
    path = tmp_path_factory.mktemp("fuzz") / "far-future.tkc"
    path.write_bytes(_with_pts(records, index, FAR_FUTURE_PTS_MS))
    return path


def test_decode_of_a_far_future_timestamp_writes_the_stream_length(
    far_future_file: Path, records: TkcRecords, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.mp4"
    assert main(["decode", str(far_future_file), "-o", str(output), "--renderer", "meshwarp"]) == 0
    frames = [frame for _, frame in read_frames(output)]
    assert len(frames) == len(records.indices_of(PacketKind.KEYPOINTS))
    assert probe(output)[:3] == (256, 256, 25.0)
    assert "1 implausible" in capsys.readouterr().out
    # The run's resolved config lies beside its output.
    assert json.loads(config_path(output).read_text())["renderer"] == "meshwarp"


def test_info_reports_a_far_future_timestamp_as_implausible(
    far_future_file: Path, records: TkcRecords, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", str(far_future_file)]) == 0
    out = capsys.readouterr().out
    keypoints = len(records.indices_of(PacketKind.KEYPOINTS))
    # The packets after the damaged one are timed as the sender timed them (their implied
    # times follow the last timed packet the timeline accepted, not the damaged one).
    with TkcReader(io.BytesIO(records.join())) as reader:
        pts = [p.pts_ms for p in reader if p.kind is PacketKind.KEYPOINTS]
    clean = pts[:10] + pts[11:]
    duration_s = (max(clean) - min(clean)) / 1000 + 0.04
    assert f"frames: {keypoints - 1}, duration: {duration_s:.2f} s" in out
    assert "implausible: 1 keypoint packets" in out


def test_info_of_a_stream_that_starts_late_counts_from_its_first_packet(
    records: TkcRecords, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorded live call starts at a wall-clock pts_ms: its duration is what it covers."""
    with TkcReader(io.BytesIO(records.join())) as reader:
        header, packets = reader.header, list(reader)
    shifted = [replace(packet, pts_ms=packet.pts_ms + 1_700_000_000) for packet in packets]
    late, original = tmp_path / "late.tkc", tmp_path / "original.tkc"
    late.write_bytes(bytes(TkcFile(header, tuple(shifted))))
    original.write_bytes(records.join())
    keypoints = len(records.indices_of(PacketKind.KEYPOINTS))
    reports = []
    for path in (original, late):
        assert main(["info", str(path)]) == 0
        reports.append(capsys.readouterr().out.replace(str(path), "FILE"))
    assert reports[0] == reports[1]
    assert f"frames: {keypoints}, duration: {keypoints * 0.04:.2f} s" in reports[1]
    assert "implausible" not in reports[1]


@pytest.fixture(scope="module")
def gc_codec() -> GCCodec:
    return GCCodec()


@pytest.fixture(scope="module")
def gc_payload(gc_codec: GCCodec) -> bytes:
    return gc_codec.compress(demo_frames(max_frames=1)[0][0][128:384, 128:384])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_damaged_gc_payloads_are_rejected_or_decode_to_their_size(
    gc_payload: bytes, gc_codec: GCCodec, seed: int
) -> None:
    mutation, data = mutate_gc(gc_payload, random.Random(seed))
    result = decode_keyframe_case(mutation, data, gc_codec, budget_s=30)
    assert not result.failed, result


@pytest.fixture(scope="module")
def av1_payload() -> bytes:
    return Av1Codec().compress(demo_frames(max_frames=1)[0][0][128:384, 128:384])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_damaged_av1_payloads_are_rejected_or_decode_to_their_size(
    av1_payload: bytes, seed: int
) -> None:
    mutation, data = mutate_av1(av1_payload, random.Random(seed))
    result = decode_keyframe_case(mutation, data, Av1Codec(), budget_s=30)
    assert not result.failed, result


def test_keyframe_decode_of_a_damaged_gc_file_is_one_line(
    gc_payload: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(5)
    for index in range(6):
        _, data = mutate_gc(gc_payload, rng)
        path = tmp_path / f"damaged-{index}.gck"
        path.write_bytes(data)
        status = main(["keyframe", "decode", str(path), "-o", str(tmp_path / "out.png")])
        captured = capsys.readouterr()
        assert status in (0, 1)
        if status == 1:
            assert len(captured.err.strip().splitlines()) == 1
            assert captured.err.startswith("talkcodec: error: ")


def test_fuzzed_messages_on_every_channel_are_dropped_and_the_call_goes_on(
    stream: bytes,
) -> None:
    report = asyncio.run(asyncio.wait_for(fuzz_live_receiver(stream, cases_per_kind=40), 120))
    assert report.handler_errors == []
    assert set(report.sent.values()) == {40}
    assert report.dropped["oversize"] == 40 and report.dropped["text_message"] == 40
    assert report.frames_before > 0 and report.frames_during > 0
    # The clean second after the fuzzing: 50 frames sent; a busy receiver shows the newest.
    assert report.frames_after > 0
    assert report.pending_fragments <= 4


def test_a_far_future_timestamp_does_not_stall_a_live_receiver() -> None:
    """Packets on a live receiver: one keypoint packet 43 days ahead is dropped and counted;
    the frames after it are shown."""
    from talkcodec.codec import StreamDecoder
    from talkcodec.fuzzing import _LiveReplay

    replay = _LiveReplay(demo_stream(FRAMES, EncoderConfig()), fragment_bytes=1 << 16)
    decoder = StreamDecoder(replay.header, MESH_WARP)
    (keyframe,) = replay.keyframe_messages()
    decoder.decode(keyframe[6:])  # one fragment: the whole packet after its 6-byte header
    shown = [decoder.decode(replay.keypoint_message()) for _ in range(5)]
    shown = [frames[0] if frames else None for frames in shown]
    future = bytearray(replay.keypoint_message())
    assert future[0] & 0x10, "the replay's packets are timed (wall-clock pts_ms)"
    (pts_ms,) = struct.unpack_from("!I", future, 2)
    future_pts_ms = (pts_ms + FAR_FUTURE_PTS_MS) % (1 << 32)
    future[2:6] = struct.pack("!I", future_pts_ms)
    assert decoder.decode(bytes(future)) == []
    shown += [(decoder.decode(replay.keypoint_message()) or [None])[0] for _ in range(30)]
    assert decoder.stats.implausible == 1 and decoder.stats.lost == 1
    # The packet after the dropped one follows a gap: the next intra refresh (the replayed
    # stream's first packet, every 24) resumes the picture.
    rendered = [frame for frame in shown if frame is not None]
    assert len(rendered) >= 5 + 30 - 24
    assert future_pts_ms not in {frame.pts_ms for frame in rendered}
    assert rendered[-1].stream_ms - rendered[0].stream_ms < 2000


def test_info_json_counts_every_byte(
    records: TkcRecords, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`info --json`: payload, file and modelled wire rates over the accepted duration."""
    from talkcodec.transport.overhead import SCTP_PACKET_OVERHEAD_BYTES

    path = tmp_path / "stream.tkc"
    path.write_bytes(records.join())
    assert main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    keypoints = records.indices_of(PacketKind.KEYPOINTS)
    with TkcReader.open(path) as reader:
        header, packets = reader.header, list(reader)
    payload = sum(len(packet.payload) for packet in packets)
    duration_s = len(keypoints) * 0.04
    assert info["frames"] == len(keypoints) and info["duration_s"] == pytest.approx(duration_s)
    assert info["payload_kbps"] == pytest.approx(payload * 8 / duration_s / 1000, rel=1e-3)
    assert info["file_kbps"] == pytest.approx(path.stat().st_size * 8 / duration_s / 1000, 1e-3)
    # The default bundling: a message per two frames (a 40 ms budget at 25 fps), each message
    # its bytes (packets, a length for all but the last), padded to 4, plus one packet's headers.
    kept = [p for p in packets if p.kind is PacketKind.KEYPOINTS]
    bundles = [kept[i : i + 2] for i in range(0, len(kept), 2)]
    writer = PacketWriter(header)
    sizes = [len(writer.pack_bundle(bundle)) for bundle in bundles]
    keypoints_info = info["by_kind"]["keypoints"]
    assert info["bundle_ms"] == 40 and keypoints_info["wire_packets"] == len(bundles)
    expected = sum(-(-size // 4) * 4 + SCTP_PACKET_OVERHEAD_BYTES for size in sizes)
    assert keypoints_info["wire_bytes"] == expected
    assert info["wire_kbps"] > info["file_kbps"] > info["payload_kbps"]
    assert info["dropped_by_decoders"] == {"implausible": 0, "late": 0}
