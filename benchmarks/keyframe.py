"""Keyframe codecs at extreme rates: GC against JPEG, WebP, HEVC intra and AV1 intra.

    python benchmarks/keyframe.py [--data ../shared/data/dev] [--weights PATH] [--no-strips]

Frames: the first frame with a face of every dev clip, face-cropped by the sender's front end at
256x256, and at 512x512 where the crop square in the source is at least 400 px (so it is
upsampled by at most 1.28x). Every codec runs over a sweep of its rate knob; bytes are what
the receiver needs to decode the keyframe on its own: the whole GC payload (header included),
the JPEG and WebP files, the HEVC NAL units without start codes and SEI (parameter sets
included) and the AV1 OBUs without the temporal delimiter, as talkcodec.baselines counts them.

Matched bytes: for each frame and each GC operating point, every other codec is represented by
its largest output that is not larger than GC's; where even its smallest output is larger, it
"cannot go that low" on that frame. Metrics: PSNR (RGB), MS-SSIM (luma, talkcodec.metrics) and
AKD, the mean distance in pixels between the 478 face-mesh landmarks found (static-image mode)
on the original and on the decoded frame; decoded frames where no face is found are counted
apart. Writes benchmarks/results/keyframe.json, keyframe.md and keyframe-rd.png (no pixels of
the clips), and keyframe-<size>-gc<C>-strip.png side-by-sides (gitignored: they show clip frames).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only, not its banner per frame

import av
import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm import tqdm

from talkcodec.baselines import BASELINE_CODECS
from talkcodec.evaluation import LandmarkProbe
from talkcodec.keyframe.classic import JpegCodec, WebPCodec
from talkcodec.keyframe.gc.codec import GCCodec
from talkcodec.keyframe.gc.weights import DEFAULT_WEIGHTS
from talkcodec.keypoints.dataset import list_clips
from talkcodec.keypoints.detectors import make_detector
from talkcodec.keypoints.frontend import FaceFrontend
from talkcodec.metrics import keypoint_distance, ms_ssim, psnr
from talkcodec.video import read_frames

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"
SIZES = (256, 512)
MIN_SOURCE_SIDE_FOR_512 = 400
JPEG_QUALITIES = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50)
WEBP_QUALITIES = (1, 2, 5, 10, 15, 20, 30, 40, 50, 75)
HEVC_QPS = (30, 33, 36, 38, 40, 42, 44, 46, 48, 50, 51)
AV1_CRFS = (35, 40, 45, 48, 50, 52, 54, 56, 58, 60, 62, 63)
GC_CHANNELS = (2, 4, 8)
CODEC_ORDER = ("gc", "jpeg", "webp", "hevc", "av1")


@dataclass(frozen=True)
class DevFrame:
    clip: str
    size: int
    image: np.ndarray  # (size, size, 3) uint8 RGB
    landmarks: np.ndarray | None  # (478, 3) from the static-image probe


def dev_frames(
    folder: Path, probe: LandmarkProbe, max_clips: int | None = None, scan_frames: int = 50
) -> list[DevFrame]:
    """The first frame with a face of every clip, face-cropped at 256 (and 512 where sharp)."""
    frames = []
    for clip in list_clips(folder)[:max_clips]:
        with make_detector("mediapipe", pose_every_n_frames=0) as detector:
            frontend = FaceFrontend(detector, SIZES[0])
            for _, frame in read_frames(clip, None, max_frames=scan_frames):
                result = frontend.process(frame)
                if result.landmarks is not None:
                    break
            else:
                continue
        for size in SIZES:
            if size > SIZES[0] and result.box.side < MIN_SOURCE_SIDE_FOR_512:
                continue
            image = result.box.extract(frame, size)
            frames.append(DevFrame(clip.stem, size, image, probe.points(image)))
    return frames


def _pyav_intra(encoder_name: str, options: dict[str, str], image: np.ndarray) -> bytes:
    """One frame through an FFmpeg encoder: the bytes of all its packets."""
    height, width = image.shape[:2]
    encoder = av.CodecContext.create(encoder_name, "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.framerate = Fraction(25)
    encoder.thread_count = 1
    encoder.options = options
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    frame = frame.reformat(format="yuv420p")
    frame.pts = 0
    packets = [*encoder.encode(frame), *encoder.encode(None)]
    return b"".join(bytes(packet) for packet in packets)


def _pyav_decode(decoder_name: str, data: bytes) -> np.ndarray:
    decoder = av.CodecContext.create(decoder_name, "r")
    frames = [*decoder.decode(av.Packet(data)), *decoder.decode(None)]
    return frames[0].to_ndarray(format="rgb24")


def hevc_intra(image: np.ndarray, qp: int) -> tuple[int, np.ndarray]:
    """(bytes, decoded) of libx265 (preset slow) coding one frame at a fixed QP."""
    options = {"preset": "slow", "x265-params": f"qp={qp}:info=0:log-level=error"}
    data = _pyav_intra("libx265", options, image)
    return BASELINE_CODECS["h265"].sent_bytes(data), _pyav_decode("hevc", data)


def av1_intra(image: np.ndarray, crf: int) -> tuple[int, np.ndarray]:
    """(bytes, decoded) of libsvtav1 (preset 4) coding one frame at a CRF."""
    data = _pyav_intra("libsvtav1", {"preset": "4", "crf": str(crf)}, image)
    return BASELINE_CODECS["av1"].sent_bytes(data), _pyav_decode("libdav1d", data)


def _classic(codec_class: type[JpegCodec] | type[WebPCodec]) -> Callable:
    def code(image: np.ndarray, quality: int) -> tuple[int, np.ndarray]:
        codec = codec_class(quality=quality)
        data = codec.compress(image)
        return len(data), codec.decompress(data)

    return code


def _gc(codecs: dict[int, GCCodec]) -> Callable:
    def code(image: np.ndarray, channels: int) -> tuple[int, np.ndarray]:
        data = codecs[channels].compress(image)
        return len(data), codecs[channels].decompress(data)

    return code


def measure(
    frames: list[DevFrame],
    coders: dict[str, tuple[Callable, tuple[int, ...]]],
    probe: LandmarkProbe,
) -> list[dict]:
    """One record per (frame, codec, setting): bytes, bpp and the three metrics."""
    records = []
    jobs = [
        (frame, name, setting) for frame in frames for name in coders for setting in coders[name][1]
    ]
    for frame, name, setting in tqdm(jobs, desc="coding", unit="image"):
        size_bytes, decoded = coders[name][0](frame.image, setting)
        points = probe.points(decoded) if frame.landmarks is not None else None
        records.append(
            {
                "clip": frame.clip,
                "size": frame.size,
                "codec": name,
                "setting": setting,
                "bytes": size_bytes,
                "bpp": 8 * size_bytes / frame.size**2,
                "psnr_db": psnr(frame.image, decoded),
                "ms_ssim": ms_ssim(frame.image, decoded),
                "akd_px": None if points is None else keypoint_distance(frame.landmarks, points),
                "face_found": points is not None,
            }
        )
    return records


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def matched_table(records: list[dict], frames: list[DevFrame]) -> list[dict]:
    """Per size and GC channel count: every codec at no more bytes than GC, frame by frame."""
    rows = []
    judged = {(f.clip, f.size) for f in frames if f.landmarks is not None}
    for size in sorted({r["size"] for r in records}):
        for channels in GC_CHANNELS:
            gc = {
                r["clip"]: r
                for r in records
                if r["size"] == size and r["codec"] == "gc" and r["setting"] == channels
            }
            for name in CODEC_ORDER:
                chosen, unreachable = [], 0
                for clip, reference in gc.items():
                    if name == "gc":
                        chosen.append(reference)
                        continue
                    options = [
                        r
                        for r in records
                        if (r["clip"], r["size"], r["codec"]) == (clip, size, name)
                        and r["bytes"] <= reference["bytes"]
                    ]
                    if options:
                        chosen.append(max(options, key=lambda r: r["bytes"]))
                    else:
                        unreachable += 1
                rows.append(_row(size, channels, name, chosen, unreachable, judged))
                if unreachable and chosen:
                    # GC on just the frames this codec reached, for a like-for-like comparison.
                    reached = {r["clip"] for r in chosen}
                    same = [gc[clip] for clip in sorted(reached)]
                    rows.append(_row(size, channels, f"gc on {name}'s frames", same, 0, judged))
    return rows


def _row(
    size: int, channels: int, name: str, chosen: list[dict], unreachable: int, judged: set
) -> dict:
    with_face = [r for r in chosen if (r["clip"], size) in judged]
    return {
        "size": size,
        "gc_channels": channels,
        "codec": name,
        "frames": len(chosen),
        "cannot_reach": unreachable,
        "bpp": _mean([r["bpp"] for r in chosen]),
        "bytes": _mean([r["bytes"] for r in chosen]),
        "psnr_db": _mean([r["psnr_db"] for r in chosen]),
        "ms_ssim": _mean([r["ms_ssim"] for r in chosen]),
        "akd_px": _mean([r["akd_px"] for r in with_face if r["face_found"]]),
        "face_lost": sum(not r["face_found"] for r in with_face),
    }


def lowest_rates(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per size and codec: the mean over frames of the bpp of its smallest output."""
    lowest: dict[str, dict[str, float]] = {}
    for size in sorted({r["size"] for r in records}):
        for name in CODEC_ORDER:
            per_clip: dict[str, float] = {}
            for r in records:
                if (r["size"], r["codec"]) == (size, name):
                    per_clip[r["clip"]] = min(per_clip.get(r["clip"], math.inf), r["bpp"])
            lowest.setdefault(f"{size}x{size}", {})[name] = float(np.mean(list(per_clip.values())))
    return lowest


def gc_timings(codec: GCCodec, frames: list[DevFrame], repeats: int = 3) -> dict[str, dict]:
    """Median encode and decode ms per keyframe on the CPU, per size, at 1 thread and at all."""
    timings: dict[str, dict] = {}
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for size in SIZES:
            images = [f.image for f in frames if f.size == size]
            if not images:
                continue
            codec.compress(images[0])  # warm-up: first calls allocate
            encode, decode = [], []
            for image in images * repeats:
                started = time.perf_counter()
                data = codec.compress(image)
                middle = time.perf_counter()
                codec.decompress(data)
                encode.append(1000 * (middle - started))
                decode.append(1000 * (time.perf_counter() - middle))
            timings[f"{size}x{size}/{threads}-thread"] = {
                "encode_ms": statistics.median(encode),
                "decode_ms": statistics.median(decode),
            }
    torch.set_num_threads(default_threads)
    return timings


def curves(records: list[dict], size: int) -> dict[str, list[tuple[float, float, float, float]]]:
    """Per codec: (mean bpp, PSNR, MS-SSIM, AKD) of every setting over the frames of `size`."""
    result: dict[str, list] = {}
    for name in CODEC_ORDER:
        settings = sorted({r["setting"] for r in records if r["codec"] == name})
        points = []
        for setting in settings:
            group = [
                r for r in records if (r["codec"], r["setting"], r["size"]) == (name, setting, size)
            ]
            if not group:
                continue
            akd = [r["akd_px"] for r in group if r["akd_px"] is not None]
            points.append(
                (
                    float(np.mean([r["bpp"] for r in group])),
                    float(np.mean([r["psnr_db"] for r in group])),
                    float(np.mean([r["ms_ssim"] for r in group])),
                    float(np.mean(akd)) if akd else math.nan,
                )
            )
        result[name] = sorted(points)
    return result


def plot(records: list[dict], path: Path) -> None:
    sizes = sorted({r["size"] for r in records})
    figure, axes = plt.subplots(len(sizes), 3, figsize=(15, 4.2 * len(sizes)), squeeze=False)
    styles = {"gc": "o-", "jpeg": "s--", "webp": "^--", "hevc": "v-", "av1": "D-"}
    for row, size in enumerate(sizes):
        for name, points in curves(records, size).items():
            if not points:
                continue
            values = np.array(points)
            for column, label in enumerate(("PSNR (dB)", "MS-SSIM", "AKD (px)")):
                axes[row, column].plot(
                    values[:, 0], values[:, column + 1], styles[name], label=name
                )
                axes[row, column].set_ylabel(label)
        for column in range(3):
            axis = axes[row, column]
            axis.set_xlim(0, 0.3)
            axis.axvline(0.05, color="grey", linewidth=0.8, linestyle=":")
            axis.set_xlabel("bit/pixel")
            axis.set_title(f"{size}x{size} dev face crops")
            axis.grid(alpha=0.3)
        axes[row, 2].set_ylim(bottom=0)
        axes[row, 0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _labelled(image: np.ndarray, text: str) -> np.ndarray:
    image = np.ascontiguousarray(image).copy()
    scale = image.shape[0] / 512
    cv2.putText(
        image,
        text,
        (6, int(26 * scale) + 6),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.9 * scale,
        (255, 255, 0),
        max(1, int(2 * scale)),
        cv2.LINE_AA,
    )
    return image


def strips(
    frames: list[DevFrame],
    coders: dict[str, tuple[Callable, tuple[int, ...]]],
    channels: int,
    out_dir: Path,
) -> list[Path]:
    """Side-by-sides (original | GC | others at no more bytes), a few frames per size."""
    written = []
    for size in SIZES:
        rows = []
        for frame in [f for f in frames if f.size == size][:4]:
            gc_bytes, gc_image = coders["gc"][0](frame.image, channels)
            tiles = [
                _labelled(frame.image, "original"),
                _labelled(gc_image, f"gc-{channels} {gc_bytes} B"),
            ]
            for name in CODEC_ORDER[1:]:
                code, settings = coders[name]
                best = None
                for setting in settings:
                    size_bytes, decoded = code(frame.image, setting)
                    if size_bytes <= gc_bytes and (best is None or size_bytes > best[0]):
                        best = (size_bytes, decoded)
                if best is None:
                    tile = np.full_like(frame.image, 64)
                    tiles.append(_labelled(tile, f"{name}: cannot reach"))
                else:
                    tiles.append(_labelled(best[1], f"{name} {best[0]} B"))
            rows.append(np.concatenate(tiles, axis=1))
        if rows:
            path = out_dir / f"keyframe-{size}-gc{channels}-strip.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
            written.append(path)
    return written


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(
    rows: list[dict], timings: dict[str, dict], lowest: dict[str, dict[str, float]], meta: dict
) -> str:
    lines = [
        "# Keyframe codecs at extreme rates (dev face crops)",
        "",
        f"`python benchmarks/keyframe.py` -- {meta['frames_256']} frames at 256x256, "
        f"{meta['frames_512']} at 512x512 (first frame with a face of each dev clip). GC weights "
        f"`{meta['weights']}` ({meta['weights_steps']} training steps). Every other codec at no "
        "more bytes than GC on each frame; 'cannot reach' counts frames where its smallest "
        "output is still larger. AKD: mean face-mesh landmark distance in px at the frame's size; "
        "'lost' counts decoded frames where no face was found (left out of AKD).",
        "",
    ]
    for size in sorted({r["size"] for r in rows}):
        for channels in GC_CHANNELS:
            group = [r for r in rows if r["size"] == size and r["gc_channels"] == channels]
            bound = channels * math.log2(5) / 256
            lines += [
                f"## {size}x{size}, GC with {channels} channels (bound {bound:.4f} bpp)",
                "",
                "| codec | bpp | bytes | PSNR dB | MS-SSIM | AKD px | lost | cannot reach |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for r in group:
                lines.append(
                    f"| {r['codec']} | {_fmt(r['bpp'], 4)} | {_fmt(r['bytes'], 0)} | "
                    f"{_fmt(r['psnr_db'], 2)} | {_fmt(r['ms_ssim'], 4)} | {_fmt(r['akd_px'], 2)} | "
                    f"{r['face_lost']} | {r['cannot_reach']}/{r['frames'] + r['cannot_reach']} |"
                )
            lines.append("")
    lines += [
        "## The lowest rate each codec reaches (mean bpp of its smallest output per frame)",
        "",
        "| size | " + " | ".join(CODEC_ORDER) + " |",
        "|---|" + "---:|" * len(CODEC_ORDER),
    ]
    for size, by_codec in lowest.items():
        lines.append(f"| {size} | " + " | ".join(f"{by_codec[n]:.4f}" for n in CODEC_ORDER) + " |")
    lines += [
        "",
        "## GC speed on the CPU (median per keyframe)",
        "",
        "| size / threads | encode ms | decode ms |",
        "|---|---:|---:|",
    ]
    for key, value in timings.items():
        lines.append(f"| {key} | {value['encode_ms']:.0f} | {value['decode_ms']:.0f} |")
    lines += ["", f"Machine: {meta['machine']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-strips", action="store_true", help="skip the side-by-side PNGs")
    parser.add_argument("--max-clips", type=int, default=None, help="only the first N clips")
    args = parser.parse_args()
    gc_codecs = {c: GCCodec(quality=c, weights=args.weights) for c in GC_CHANNELS}
    coders = {
        "gc": (_gc(gc_codecs), GC_CHANNELS),
        "jpeg": (_classic(JpegCodec), JPEG_QUALITIES),
        "webp": (_classic(WebPCodec), WEBP_QUALITIES),
        "hevc": (hevc_intra, HEVC_QPS),
        "av1": (av1_intra, AV1_CRFS),
    }
    with LandmarkProbe() as probe:
        frames = dev_frames(args.data, probe, args.max_clips)
        records = measure(frames, coders, probe)
    rows = matched_table(records, frames)
    lowest = lowest_rates(records)
    timings = gc_timings(gc_codecs[8], frames)
    meta = {
        "weights": str(args.weights.relative_to(args.weights.parents[1])),
        "weights_steps": gc_codecs[8].metadata.get("steps"),
        "frames_256": sum(f.size == 256 for f in frames),
        "frames_512": sum(f.size == 512 for f in frames),
        "clips": sorted({f.clip for f in frames}),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, default {torch.get_num_threads()} threads",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "keyframe.json").write_text(
        json.dumps(
            {
                "meta": meta,
                "matched": rows,
                "lowest_bpp": lowest,
                "timings": timings,
                "records": records,
            },
            indent=1,
        )
        + "\n"
    )
    report = markdown(rows, timings, lowest, meta)
    (args.out / "keyframe.md").write_text(report)
    plot(records, args.out / "keyframe-rd.png")
    if not args.no_strips:
        for channels in (4, 8):
            strips(frames, coders, channels, args.out)
    print(report)


if __name__ == "__main__":
    main()
