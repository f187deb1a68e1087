"""The classical keyframe codecs' rate ladders on dev face crops: bytes, quality and time.

    python benchmarks/keyframe_ladders.py [--data ../shared/data/dev] [--frames-per-clip 3]

The frames of benchmarks/keyframe.py (the first frame with a face at or after each of 0, 8/N,
16/N, ... s of every dev clip, cropped by the sender's front end at 256x256), each coded by the
keyframe codecs a call can use -- WebP and AV1 (talkcodec.keyframe) at every rung of their
quality knobs -- and HEVC intra (x265, what BPG is) for reference. Per rung: mean bytes, PSNR,
HaarPSI, MS-SSIM, and encode and decode time on one thread. Then, per WebP quality that calls
use (30 in the hybrid mode, 80 with keypoints alone), the bytes AV1 needs for its mean HaarPSI
(talkcodec.bdrate.rate_for_quality: linear in log bytes between rungs), per person (clip) too.
Writes benchmarks/results/keyframe-ladders.{json,md}.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from contextlib import ExitStack, closing

import numpy as np
from keyframe import DevFrame, dev_frames, hevc_intra
from tqdm import tqdm

from talkcodec.bdrate import rate_for_quality
from talkcodec.evaluation import LandmarkProbe
from talkcodec.keyframe import Av1Codec, WebPCodec
from talkcodec.keypoints.segmentation import PersonSegmenter
from talkcodec.metrics import haarpsi, psnr, ssim_and_ms_ssim

import common

WEBP_QUALITIES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
AV1_QUALITIES = (12, 16, 20, 24, 28, 32, 36, 40, 44, 48)
HEVC_QPS = (30, 33, 36, 40, 44)
CALL_WEBP_QUALITIES = (30, 80)  # the hybrid and keypoint-only defaults before AV1

Code = Callable[[np.ndarray], tuple[int, np.ndarray, float, float]]


def _keyframe_coder(codec: WebPCodec | Av1Codec) -> Code:
    def code(image: np.ndarray) -> tuple[int, np.ndarray, float, float]:
        started = time.perf_counter()
        data = codec.compress(image)
        encoded = time.perf_counter()
        decoded = codec.decompress(data)
        return len(data), decoded, encoded - started, time.perf_counter() - encoded

    return code


def _hevc_coder(qp: int) -> Code:
    def code(image: np.ndarray) -> tuple[int, np.ndarray, float, float]:
        started = time.perf_counter()
        size, decoded = hevc_intra(image, qp)
        return size, decoded, time.perf_counter() - started, math.nan

    return code


def _rungs() -> list[tuple[str, int, Code]]:
    rungs = [("webp", q, _keyframe_coder(WebPCodec(q))) for q in WEBP_QUALITIES]
    rungs += [("av1", q, _keyframe_coder(Av1Codec(q))) for q in AV1_QUALITIES]
    rungs += [("hevc", qp, _hevc_coder(qp)) for qp in HEVC_QPS]
    return rungs


def measure(frames: list[DevFrame]) -> list[dict]:
    """One row per (codec, setting, frame)."""
    rows = []
    for codec, setting, code in tqdm(_rungs(), desc="rungs", unit="rung"):
        for frame in frames:
            size, decoded, encode_s, decode_s = code(frame.image)
            _, ms_ssim = ssim_and_ms_ssim(frame.image, decoded)
            rows.append(
                {
                    "codec": codec,
                    "setting": setting,
                    "clip": frame.clip,
                    "frame": frame.key,
                    "bytes": size,
                    "psnr_db": psnr(frame.image, decoded),
                    "haarpsi": haarpsi(frame.image, decoded),
                    "ms_ssim": ms_ssim,
                    "encode_ms": 1000 * encode_s,
                    "decode_ms": 1000 * decode_s,
                }
            )
    return rows


def _ladder(rows: list[dict], codec: str, clip: str | None = None) -> list[dict]:
    """Per setting of `codec` (on one clip's frames, or all): the means of every measure."""
    settings = sorted({r["setting"] for r in rows if r["codec"] == codec})
    ladder = []
    for setting in settings:
        picked = [
            r
            for r in rows
            if r["codec"] == codec and r["setting"] == setting and clip in (None, r["clip"])
        ]
        keys = ("bytes", "psnr_db", "haarpsi", "ms_ssim", "encode_ms", "decode_ms")
        ladder.append({"setting": setting, **{k: common.mean_of(picked, k) for k in keys}})
    return ladder


def matches(rows: list[dict]) -> list[dict]:
    """Per call WebP quality and per clip (and over all): WebP's bytes and HaarPSI, and the
    bytes AV1 needs for that HaarPSI."""
    found = []
    for quality in CALL_WEBP_QUALITIES:
        for clip in [None, *sorted({r["clip"] for r in rows})]:
            webp = next(r for r in _ladder(rows, "webp", clip) if r["setting"] == quality)
            av1 = _ladder(rows, "av1", clip)
            av1_bytes = rate_for_quality(
                [r["bytes"] for r in av1], [r["haarpsi"] for r in av1], webp["haarpsi"]
            )
            found.append(
                {
                    "webp_quality": quality,
                    "clip": clip or "all",
                    "webp_bytes": webp["bytes"],
                    "haarpsi": webp["haarpsi"],
                    "av1_bytes": av1_bytes,
                    "av1_over_webp": None if av1_bytes is None else av1_bytes / webp["bytes"],
                }
            )
    return found


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        "# Keyframe codecs' rate ladders (dev face crops, 256x256)",
        "",
        f"`{report['command']}`: {report['frames']} frames from {report['clips']} clips. "
        "Means over frames; times on one thread (" + report["machine"] + ").",
        "",
    ]
    table = []
    for codec in ("webp", "av1", "hevc"):
        for r in _ladder(rows, codec):
            table.append(
                [
                    codec,
                    r["setting"],
                    f"{r['bytes']:.0f}",
                    f"{r['psnr_db']:.2f}",
                    f"{r['haarpsi']:.4f}",
                    f"{r['ms_ssim']:.4f}",
                    common.fmt(r["encode_ms"], 1),
                    common.fmt(r["decode_ms"], 1),
                ]
            )
    header = ["codec", "setting", "bytes", "PSNR dB", "HaarPSI", "MS-SSIM", "encode ms"]
    lines += common.markdown_table([*header, "decode ms"], table)
    lines += ["", "HEVC: x265 preset slow at a QP; its time is encode and decode together.", ""]
    lines += ["## AV1 at WebP's HaarPSI", ""]
    lines += common.markdown_table(
        ["WebP quality", "person (clip)", "WebP bytes", "HaarPSI", "AV1 bytes", "AV1 / WebP"],
        [
            [
                m["webp_quality"],
                m["clip"],
                f"{m['webp_bytes']:.0f}",
                f"{m['haarpsi']:.4f}",
                common.fmt(m["av1_bytes"], 0),
                common.fmt(m["av1_over_webp"], 3),
            ]
            for m in report["matches"]
        ],
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = common.parser(__doc__, frames=None)
    parser.add_argument("--frames-per-clip", type=int, default=3)
    args = parser.parse_args()
    common.clips(args.data)  # exits with one line where there are none
    with ExitStack() as stack:
        probe = stack.enter_context(LandmarkProbe())
        segmenter = stack.enter_context(closing(PersonSegmenter()))
        frames = dev_frames(args.data, probe, segmenter, frames_per_clip=args.frames_per_clip)
    frames = [f for f in frames if f.size == 256]
    rows = measure(frames)
    report = {
        "command": "python benchmarks/keyframe_ladders.py --frames-per-clip "
        f"{args.frames_per_clip}",
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "frames": len(frames),
        "clips": len({f.clip for f in frames}),
        "rows": rows,
        "matches": matches(rows),
    }
    common.write_results("keyframe-ladders", report, markdown(report))
    for m in report["matches"]:
        if m["clip"] == "all":
            print(
                f"WebP q{m['webp_quality']}: {m['webp_bytes']:.0f} B at HaarPSI "
                f"{m['haarpsi']:.4f}; AV1 needs {common.fmt(m['av1_bytes'], 0)} B "
                f"({common.fmt(m['av1_over_webp'], 3)}x)"
            )


if __name__ == "__main__":
    main()
