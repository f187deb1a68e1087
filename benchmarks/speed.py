"""Speed of each stage of talkcodec per frame, and end to end, on real clips.

    python benchmarks/speed.py [--data ../shared/data/dev] [--clips 3] [--frames 250] [--size 256]
        [--renderer gan] [--backend auto]

Stages, timed one by one on the same frames as the sender and receiver would run them:
capture decode (reading and resampling the source video), landmarks (face mesh and pose on the
camera frame), the rest of the sender (crop, fit, quantise, reference bank, entropy coding),
keypoint decoding, keyframe encode and decode (once per keyframe, reported per keyframe),
rendering. The stages are those of the real StreamEncoder and StreamDecoder (reference bank
and budget included), with the encoder's detector and keyframe codec wrapped in timers. End to
end: StreamEncoder and StreamDecoder over the whole clip, capture included, in one thread of
control. For scale, H.264 (libx264, one thread, 20 kbit/s) encode
plus decode of the same crops. Prints a table and writes benchmarks/results/speed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from talkcodec.baselines import encode_decode
from talkcodec.bitstream import PacketKind, PacketWriter
from talkcodec.codec import DecodedFrame, StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.evaluation import stream_frames
from talkcodec.generator.gan import GanRenderer
from talkcodec.generator.guide import draw_guide, normalised_grid
from talkcodec.generator.headwarp import head_flow
from talkcodec.keyframe import KeyframeCodec, make_keyframe_codec
from talkcodec.keypoints.base import LandmarkDetector
from talkcodec.keypoints.detectors import make_detector
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.video import read_frames

import common

STAGES = (
    "capture_decode",
    "landmarks",
    "sender_other",
    "keypoint_decode",
    "keyframe_encode",
    "keyframe_decode",
    "render",
    # The gan renderer's per-frame parts, timed again one by one.
    "render_warp",
    "render_guide",
    "render_refiner",
    # Hybrid streams (--lowres): the fusion of render and low-res picture, timed again alone
    # (it is inside "render"; the low-res picture's decoding is inside "keypoint_decode").
    "render_fusion",
)
T = TypeVar("T")


class StageClock:
    """Wall time of each call per stage, in milliseconds."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {stage: [] for stage in STAGES}

    def time(self, stage: str, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        result = work()
        self.samples[stage].append((time.perf_counter() - started) * 1000)
        return result


def time_render_parts(renderer: GanRenderer, landmarks: Landmarks, clock: StageClock) -> None:
    """The gan renderer's per-frame work, part by part: warp v2, guide, refiner network."""
    _, prepared = renderer.reference_for(landmarks)
    backend = renderer.backend_for(prepared.mesh.image.shape[1])
    source = clock.time("render_warp", lambda: head_flow(prepared.mesh, landmarks))
    guide = clock.time("render_guide", lambda: draw_guide(landmarks, source)[None])
    grid = normalised_grid(source)
    clock.time(
        "render_refiner",
        lambda: backend.refine(prepared.reference, prepared.features, grid, guide),
    )


class _TimedDetector(LandmarkDetector):
    """The encoder's own detector, each call timed as the "landmarks" stage."""

    name = "timed"

    def __init__(self, inner: LandmarkDetector, clock: StageClock) -> None:
        self.num_face_points = inner.num_face_points  # type: ignore[misc]
        self._inner, self._clock = inner, clock

    def detect(self, image: np.ndarray) -> Landmarks | None:
        return self._clock.time("landmarks", lambda: self._inner.detect(image))

    def close(self) -> None:
        self._inner.close()


class _TimedKeyframeCodec(KeyframeCodec):
    """The encoder's keyframe codec, each compress() timed as the "keyframe_encode" stage."""

    def __init__(self, inner: KeyframeCodec, clock: StageClock) -> None:
        self.name, self.wire_id = inner.name, inner.wire_id  # type: ignore[misc]
        self._inner, self._clock = inner, clock

    def compress(self, image: np.ndarray) -> bytes:
        return self._clock.time("keyframe_encode", lambda: self._inner.compress(image))

    def image_size(self, data: bytes) -> tuple[int, int]:
        return self._inner.image_size(data)

    def decompress(self, data: bytes) -> np.ndarray:
        return self._inner.decompress(data)


def time_stages(
    clip: Path,
    config: EncoderConfig,
    decoder_config: DecoderConfig,
    max_frames: int,
    clock: StageClock,
) -> None:
    """The real StreamEncoder and StreamDecoder on a clip, each stage timed on its own: the
    encoder's detector and keyframe codec are wrapped in timers, the rest of encode() is
    "sender_other" (crop, fit, quantise, reference bank, keypoint entropy coding)."""
    detector = _TimedDetector(make_detector(config.detector), clock)
    keyframe_codec = make_keyframe_codec(config.keyframe_codec, config.keyframe_quality)
    encoder = StreamEncoder(config, detector, _TimedKeyframeCodec(keyframe_codec, clock))
    decoder = StreamDecoder(encoder.header, decoder_config)
    writer = PacketWriter(encoder.header)
    frames = read_frames(clip, config.fps, max_frames)
    try:
        for index in range(max_frames):
            frame = clock.time("capture_decode", lambda: next(frames, None))
            if frame is None:
                break
            timed = {stage: len(clock.samples[stage]) for stage in ("landmarks", "keyframe_encode")}
            started = time.perf_counter()
            packets = encoder.encode(frame[1], round(index * 1000 / config.fps))
            spent = (time.perf_counter() - started) * 1000
            for stage, count in timed.items():
                spent -= sum(clock.samples[stage][count:])
            clock.samples["sender_other"].append(spent)
            for packet in packets:
                _time_receiver(decoder, writer.pack(packet), packet.kind, clock)
    finally:
        detector.close()


def _time_receiver(
    decoder: StreamDecoder, message: bytes, kind: PacketKind, clock: StageClock
) -> None:
    if kind is PacketKind.KEYFRAME:
        clock.time("keyframe_decode", lambda: decoder.decode(message))
        return
    for decoded in clock.time("keypoint_decode", lambda: decoder.decode(message)):
        _time_frame(decoder, decoded, clock)


def _time_frame(decoder: StreamDecoder, decoded: DecodedFrame, clock: StageClock) -> None:
    clock.time("render", lambda: decoder.render(decoded))
    if isinstance(decoder.renderer, GanRenderer):
        time_render_parts(decoder.renderer, decoded.landmarks, clock)
    lowres = decoded.lowres
    if lowres is not None:
        render = decoder.renderer.render(decoded.landmarks)
        clock.time("render_fusion", lambda: decoder.fuse(lowres, render))


def end_to_end(
    clip: Path, config: EncoderConfig, decoder_config: DecoderConfig, max_frames: int
) -> tuple[int, float]:
    """(frames, seconds) for capture, StreamEncoder and StreamDecoder over a clip."""
    encoder = StreamEncoder(config)
    decoder = StreamDecoder(encoder.header, decoder_config)
    count = 0
    started = time.perf_counter()
    camera = (frame for _, frame in read_frames(clip, config.fps, max_frames))
    try:
        for _ in stream_frames(camera, encoder, decoder):
            count += 1
    finally:
        encoder.close()
    return count, time.perf_counter() - started


def h264_ms_per_frame(clip: Path, config: EncoderConfig, max_frames: int) -> float:
    """libx264 encode + decode time per frame of the clip's centre crops, for scale."""
    frames = np.stack([f for _, f in read_frames(clip, config.fps, max_frames)])
    side = min(frames.shape[1:3])
    top, left = (frames.shape[1] - side) // 2, (frames.shape[2] - side) // 2
    crops = frames[:, top : top + side, left : left + side]
    if side != config.size_px:
        import cv2

        crops = np.stack(
            [cv2.resize(c, (config.size_px,) * 2, interpolation=cv2.INTER_AREA) for c in crops]
        )
    started = time.perf_counter()
    encode_decode(crops, "h264", 20, config.fps)
    return (time.perf_counter() - started) * 1000 / len(crops)


def _summary(samples: list[float]) -> dict[str, float | int]:
    values = np.array(samples) if samples else np.array([np.nan])
    return {
        "calls": len(samples),
        "mean_ms": float(values.mean()),
        "median_ms": float(np.median(values)),
        "p95_ms": float(np.percentile(values, 95)),
    }


_PER_FRAME_STAGES = ("capture_decode", "landmarks", "sender_other", "keypoint_decode", "render")
_NOTES = [
    "Keyframe encode/decode happen once per keyframe (stream start, crop jump, extra "
    "reference), not per frame; their times are per keyframe; keyframe_decode includes "
    "the renderer preparing the reference.",
    "landmarks includes the pose model, which runs on every 4th frame; sender_other is "
    "the rest of StreamEncoder.encode (crop, fit, quantise, reference bank, keypoint "
    "entropy coding).",
    "End to end runs sender and receiver in one process, one frame after another.",
]


def report_of(args: argparse.Namespace, clips: list[Path], stages: dict, e2e: dict) -> dict:
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "clips": [clip.name for clip in clips],
        "frames_per_clip": args.frames,
        "encoder": {
            "size_px": args.size,
            "fps": EncoderConfig.fps,
            "detector": EncoderConfig.detector,
            "keyframe_codec": EncoderConfig.keyframe_codec,
            "lowres_px": args.lowres,
            "lowres_kbps": args.lowres_kbps if args.lowres else None,
        },  # fmt: skip
        "decoder": {"renderer": args.renderer, "backend": args.backend},
        "stages": stages,
        "sum_of_per_frame_stages_ms": sum(stages[s]["mean_ms"] for s in _PER_FRAME_STAGES),
        "end_to_end": e2e,
        "notes": _NOTES,
    }


def print_report(report: dict) -> None:
    print(f"{'stage':<22} {'calls':>6} {'mean ms':>8} {'median':>8} {'p95':>8}")
    for stage, row in report["stages"].items():
        print(
            f"{stage:<22} {row['calls']:>6} {row['mean_ms']:>8.2f} {row['median_ms']:>8.2f} "
            f"{row['p95_ms']:>8.2f}"
        )
    e2e = report["end_to_end"]
    print(f"sum of per-frame stages: {report['sum_of_per_frame_stages_ms']:.2f} ms/frame")
    print(
        f"end to end: {e2e['frames_per_s']:.1f} frames/s ({e2e['ms_per_frame']:.2f} ms/frame, "
        f"{e2e['frames']} frames)"
    )
    print(
        f"H.264 encode+decode for scale: {report['h264_encode_decode_ms_per_frame']:.2f} ms/frame"
    )


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--clips", type=int, default=3, help="first N clips of the folder")
    parser.add_argument("--size", type=int, default=EncoderConfig.size_px)
    parser.add_argument("--renderer", default=DecoderConfig.renderer)
    parser.add_argument("--backend", default=DecoderConfig.backend)
    parser.add_argument(
        "--lowres", type=int, default=EncoderConfig.lowres_px,
        help="hybrid mode: low-res side (px; 0: keypoints only)",
    )  # fmt: skip
    parser.add_argument("--lowres-kbps", type=float, default=EncoderConfig.lowres_kbps)
    args = parser.parse_args()
    clips = common.clips(args.data, args.clips)
    config = EncoderConfig(size_px=args.size, lowres_px=args.lowres, lowres_kbps=args.lowres_kbps)
    decoder_config = DecoderConfig(renderer=args.renderer, backend=args.backend)
    clock = StageClock()
    total_frames, total_s, h264_ms = 0, 0.0, []
    for clip in tqdm(clips, desc="clips", unit="clip"):
        time_stages(clip, config, decoder_config, args.frames, clock)
        frames, seconds = end_to_end(clip, config, decoder_config, args.frames)
        total_frames += frames
        total_s += seconds
        h264_ms.append(h264_ms_per_frame(clip, config, args.frames))
    stages = {stage: _summary(clock.samples[stage]) for stage in STAGES if clock.samples[stage]}
    e2e = {
        "frames": total_frames,
        "seconds": total_s,
        "frames_per_s": total_frames / total_s,
        "ms_per_frame": total_s * 1000 / total_frames,
    }
    report = report_of(args, clips, stages, e2e)
    report["h264_encode_decode_ms_per_frame"] = float(np.mean(h264_ms))
    common.write_results(f"speed-hybrid{args.lowres}" if args.lowres else "speed", report)
    print_report(report)


if __name__ == "__main__":
    main()
