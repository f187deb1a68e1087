"""The offline CLI: real encode/decode of a dev clip, and one-line errors on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from talkcodec.bitstream import HybridKeypoints, KeyframePayload, PacketKind, TkcReader
from talkcodec.cli import main
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.evaluation import round_trip
from talkcodec.video import probe, read_frames

FRAMES = 60


@pytest.fixture(scope="module")
def encoded(dev_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "clip.tkc"
    assert main(["encode", str(dev_clip), "-o", str(path), "--max-frames", str(FRAMES)]) == 0
    return path


@pytest.mark.data
def test_encode_writes_one_fresh_keyframe_and_a_keypoint_packet_per_frame(encoded: Path) -> None:
    with TkcReader.open(encoded) as reader:
        packets = list(reader)
        header = reader.header
    kinds = [packet.kind for packet in packets]
    assert (header.width, header.height, header.fps) == (256, 256, 25.0)
    # The default is the hybrid mode: a 48 px picture in every third keypoint packet.
    assert header.hybrid and header.lowres_size == (48, 48)
    assert kinds[0] is PacketKind.KEYFRAME
    keyframes = [KeyframePayload.parse(p.payload) for p in packets if p.kind is PacketKind.KEYFRAME]
    # One fresh start into slot 0; any later keyframe is an extra reference of the bank.
    assert [keyframe.reference_id == 0 for keyframe in keyframes] == [True] + [False] * (
        len(keyframes) - 1
    )
    assert kinds.count(PacketKind.KEYPOINTS) == FRAMES
    hybrid = [HybridKeypoints.parse(p.payload) for p in packets if p.kind is PacketKind.KEYPOINTS]
    assert [h.picture is not None for h in hybrid] == [i % 3 == 0 for i in range(FRAMES)]
    assert np.mean([8 * len(h.keypoints) for h in hybrid]) < 80


@pytest.mark.data
def test_decode_writes_every_frame_at_the_stream_size(encoded: Path, tmp_path: Path) -> None:
    output = tmp_path / "decoded.mp4"
    assert main(["decode", str(encoded), "-o", str(output)]) == 0
    width, height, fps, _ = probe(output)
    frames = [frame for _, frame in read_frames(output)]
    assert (width, height, fps) == (256, 256, 25.0)
    assert len(frames) == FRAMES
    assert frames[0].shape == (256, 256, 3)


@pytest.mark.data
def test_round_trip_quality_floor(dev_clip: Path) -> None:
    result, _ = round_trip(dev_clip, EncoderConfig(), max_frames=FRAMES)
    assert result.rendered == FRAMES
    # The default (hybrid) stream, measured 27.4 dB / 0.854 SSIM on these 60 frames, its
    # keypoint packets (the low-res pictures inside, the first an IDR) 4.3 kbit/s.
    assert result.psnr_db.mean() > 25.5
    assert result.ssim.mean() > 0.8
    assert result.kbit_per_s("keypoints") < 6.0


@pytest.mark.data
def test_info_prints_rates(encoded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(encoded)]) == 0
    out = capsys.readouterr().out
    assert f"frames: {FRAMES}, duration: 2.40 s" in out
    assert "KEYPOINTS" in out and "payload bits/frame" in out


@pytest.mark.data
def test_fixed_packets_still_encode_and_decode_the_same_stream(
    encoded: Path, dev_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--packet-format fixed writes what revision 2 wrote (8-byte headers, a version-1 file):
    the same packets, more bytes, and `decode` makes the same video of them."""
    fixed = tmp_path / "fixed.tkc"
    args = ["encode", str(dev_clip), "-o", str(fixed), "--max-frames", str(FRAMES)]
    assert main([*args, "--packet-format", "fixed"]) == 0
    with TkcReader.open(fixed) as old, TkcReader.open(encoded) as new:
        assert (old.version, new.version) == (1, 2)
        old_packets, new_packets = list(old), list(new)
        # A keypoints-only FIXED stream writes revision 2's header, one byte shorter (no
        # packet format); a hybrid one needs revision 4's, which has it.
        header_bytes = len(bytes(new.header)) - len(bytes(old.header))
    assert old_packets == new_packets
    records = len(new_packets)
    # 6 more header bytes per packet, 4 per timed one, 3 per u32 length, the header's bytes
    timed = sum(p.timed for p in new_packets)
    saved = fixed.stat().st_size - encoded.stat().st_size
    length_bytes = sum(1 + (len(p.payload) + 2 + 4 * p.timed > 127) for p in new_packets)
    assert saved == 6 * records - 4 * timed + 4 * records - length_bytes - header_bytes
    capsys.readouterr()
    videos = []
    for source in (fixed, encoded):
        output = tmp_path / f"{source.stem}.mp4"
        assert main(["decode", str(source), "-o", str(output), "--renderer", "meshwarp"]) == 0
        videos.append(np.stack([frame for _, frame in read_frames(output)]))
    assert np.array_equal(videos[0], videos[1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"garbage", "not a .tkc file: expected magic b'TKCF', found b'garb'"),
        (b"TKCF\x01", "tkc preamble needs 6 bytes, got 5"),
    ],
)
@pytest.mark.parametrize("command", ["info", "decode"])
def test_corrupt_file_gives_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.tkc"
    path.write_bytes(content)
    extra = ["-o", str(tmp_path / "out.mp4")] if command == "decode" else []
    assert main([command, str(path), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"talkcodec: error: {message}"


@pytest.mark.data
def test_truncated_file_gives_one_line_error(
    encoded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "truncated.tkc"
    path.write_bytes(encoded.read_bytes()[:200])
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("talkcodec: error: tkc record 0 truncated")


def test_missing_input_gives_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["encode", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "o.tkc")]) == 1
    expected = f"talkcodec: error: no such input file: {tmp_path / 'none.mp4'}"
    assert capsys.readouterr().err.strip() == expected


def test_not_a_video_gives_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "not-a-video.mp4"
    path.write_bytes(b"\x00" * 100)
    assert main(["encode", str(path), "-o", str(tmp_path / "o.tkc")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"talkcodec: error: cannot read video {path}")


def test_a_stream_of_the_retired_keypoint_coder_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The golden file of revision 1 codes keypoints with MEDIAPIPE_478_V1: `info` reads it,
    `decode` says why it cannot decode it rather than decoding wrong keypoints."""
    old = Path(__file__).parent / "golden" / "tkc_three_packets_v1.bin"
    assert main(["info", str(old)]) == 0
    capsys.readouterr()
    assert main(["decode", str(old), "-o", str(tmp_path / "old.mp4")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "talkcodec: error: keypoint model MEDIAPIPE_478_V1 was coded by an earlier keypoint "
        "coder that this build no longer has (it codes MEDIAPIPE_478_V2): re-encode the source"
    ]


@pytest.mark.data
def test_hybrid_stream_encodes_reports_its_parts_and_decodes(
    dev_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hybrid.tkc"
    args = ["encode", str(dev_clip), "-o", str(path), "--max-frames", "40"]
    assert main([*args, "--lowres", "64", "--lowres-kbps", "6", "--reference-bank-size", "1"]) == 0
    capsys.readouterr()
    assert main(["info", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["header"]["lowres_codec"] == "H264" and info["header"]["lowres_size"] == [64, 64]
    keypoints = info["by_kind"]["keypoints"]
    assert keypoints["lowres_idr"] == 1 and keypoints["keypoint_bytes"] > 0
    assert keypoints["keypoint_bytes"] + keypoints["lowres_bytes"] == keypoints["payload_bytes"]
    assert 0 < info["lowres_kbps"] < info["payload_kbps"]
    output = tmp_path / "hybrid.mp4"
    assert main(["decode", str(path), "-o", str(output), "--renderer", "meshwarp"]) == 0
    assert len(list(read_frames(output))) == 40


@pytest.mark.data
def test_hybrid_fusion_beats_the_render_alone_on_a_dev_clip(dev_clip: Path) -> None:
    """Quality floor: the same hybrid stream, fused and not, against the sent crops."""
    config = EncoderConfig(lowres_px=64, lowres_kbps=6.0, reference_bank_size=1)
    fused, _ = round_trip(dev_clip, config, DecoderConfig(renderer="meshwarp"), max_frames=40)
    alone, _ = round_trip(
        dev_clip, config, DecoderConfig(renderer="meshwarp", fusion="none"), max_frames=40
    )
    assert fused.rendered == alone.rendered == 40
    assert fused.psnr_db.mean() > alone.psnr_db.mean() + 0.3  # 0.7 dB measured


def test_reference_codec_flags_reach_the_encoder_config() -> None:
    from talkcodec.cli import build_parser
    from talkcodec.options import encoder_config

    parser = build_parser()
    args = parser.parse_args(["encode", "in.mp4", "-o", "out.tkc"])
    assert encoder_config(args).reference_codec == ""  # references keep the keyframe codec
    args = parser.parse_args(
        ["encode", "in.mp4", "-o", "out.tkc", "--reference-codec", "gc", "--reference-quality", "4"]
    )
    config = encoder_config(args)
    assert (config.reference_codec, config.reference_quality) == ("gc", 4)
    with pytest.raises(SystemExit):
        parser.parse_args(["encode", "in.mp4", "-o", "out.tkc", "--reference-codec", "png"])
