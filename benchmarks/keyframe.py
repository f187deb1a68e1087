"""Keyframe codecs at extreme rates: GC, plain and selective, against JPEG, WebP, HEVC and AV1.

    python benchmarks/keyframe.py [--data ../shared/data/dev] [--weights PATH] [--no-strips]
        [--frames-per-clip N] [--max-clips N] [--out DIR]

Frames: the first frame with a face of every dev clip (with --frames-per-clip N > 1, N frames
spread over the clip's first 8 s: for each of the times 0, 8/N, 16/N, ... s the first frame with
a face at or after it), face-cropped by the sender's front end at 256x256, and at 512x512 where
the crop square in the source is at least 400 px (so it is upsampled by at most 1.28x). Each
crop's person probability comes from mediapipe's selfie segmentation, run once per crop.

Codecs, each over a sweep of its rate knob: "gc" C, GC with C latent channels; "gc-sc0" C and
"gc-sc2" C, GC's selective mode, all C channels on the latent positions covered by the person
and 0 or 2 elsewhere (given the crop's person probability); JPEG; WebP; HEVC intra; AV1 intra;
and "av1-half", the crop downscaled by 2 (area), coded with AV1 intra and upscaled back (bicubic)
-- at these rates a classical sender would code fewer pixels rather than none. Bytes are what
the receiver needs to decode the keyframe on its own: the whole GC payload (header and person
mask included), the JPEG and WebP files, the HEVC NAL units without start codes and SEI
(parameter sets included) and the AV1 OBUs without the temporal delimiter, as
talkcodec.baselines counts them.

Matched bytes: for each frame and each GC anchor (gc C, gc-sc0 C, gc-sc2 C), every classical
codec is represented by its largest output that is not larger than the anchor's; where even its
smallest output is larger, it "cannot go that low" on that frame. Metrics: PSNR (RGB), person
PSNR (the same over the pixels whose person probability is above 0.5: selective mode gives up
background fidelity for the person), MS-SSIM (luma, talkcodec.metrics) and AKD, the mean
distance in pixels between the 478 face-mesh landmarks found (static-image mode) on the original
and on the decoded frame; decoded frames where no face is found are counted apart. The summary
judges every anchor at or below 0.2 bpp against the classical codec that does best against it
on the frames that codec reaches. Writes benchmarks/results/keyframe.json, keyframe.md and
keyframe-rd.png (no pixels of the clips), and keyframe-<size>-gc<C>-strip.png side-by-sides
(gitignored: they show clip frames).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

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
from talkcodec.keyframe.av1 import Av1Codec
from talkcodec.keyframe.classic import JpegCodec, WebPCodec
from talkcodec.keyframe.gc.codec import GCCodec
from talkcodec.keyframe.gc.weights import DEFAULT_WEIGHTS
from talkcodec.keypoints.dataset import list_clips
from talkcodec.keypoints.detectors import make_detector
from talkcodec.keypoints.frontend import FaceFrontend, FrontendFrame
from talkcodec.keypoints.segmentation import PersonSegmenter
from talkcodec.metrics import haarpsi, keypoint_distance, ms_ssim, psnr
from talkcodec.video import read_frames

import common

RESULTS = common.RESULTS
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev"
SIZES = (256, 512)
MIN_SOURCE_SIDE_FOR_512 = 400
FRAME_SPREAD_S = 8.0  # --frames-per-clip N spreads the frames over this much of each clip
SCAN_FRAMES = 50  # frames looked at, from each frame time on, for a face before giving up
PERSON_THRESHOLD = 0.5  # person PSNR: pixels whose person probability is above this
SUMMARY_MAX_BPP = 0.2  # the summary judges the GC anchors at or below this rate
JPEG_QUALITIES = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50)
WEBP_QUALITIES = (1, 2, 5, 10, 15, 20, 30, 40, 50, 75)
HEVC_QPS = (30, 33, 36, 38, 40, 42, 44, 46, 48, 50, 51)
AV1_CRFS = (35, 40, 45, 48, 50, 52, 54, 56, 58, 60, 62, 63)
# A quarter of the pixels: CRF 63 lands near 0.01 bpp, 25 near 0.1 bpp (at the full size).
AV1_HALF_CRFS = (25, 30, *AV1_CRFS)


@dataclass(frozen=True)
class GcVariant:
    """GC as one codec of the benchmark: plain (background_channels None) or selective."""

    name: str
    min_channels: int  # the weights' rungs (latent channel counts) from this one are swept
    background_channels: int | None = None

    def channels(self, ladder: tuple[int, ...]) -> tuple[int, ...]:
        """The channel counts of the weights' `ladder` this variant is swept over."""
        return tuple(c for c in ladder if c >= self.min_channels)


GC_VARIANTS = (
    GcVariant("gc", 1),
    GcVariant("gc-sc0", 1, background_channels=0),
    GcVariant("gc-sc2", 4, background_channels=2),
)
CLASSIC_CODECS = ("jpeg", "webp", "hevc", "av1", "av1-half")
CODEC_ORDER = (*(variant.name for variant in GC_VARIANTS), *CLASSIC_CODECS)


@dataclass(frozen=True)
class DevFrame:
    clip: str
    time_s: float  # of the frame in its clip
    size: int
    image: np.ndarray  # (size, size, 3) uint8 RGB
    landmarks: np.ndarray | None  # (478, 3) from the static-image probe
    person: np.ndarray  # (size, size) float32 person probability (selfie segmentation)

    @property
    def key(self) -> str:
        """Names the frame among those of every clip (sizes apart)."""
        return f"{self.clip}@{self.time_s:.2f}s"


Coder = Callable[[DevFrame, int], tuple[int, np.ndarray]]  # (frame, setting) -> (bytes, decoded)


def _faces_at(
    clip: Path, times_s: list[float], scan_frames: int = SCAN_FRAMES
) -> Iterator[tuple[float, np.ndarray, FrontendFrame]]:
    """(time, frame, front-end result) of the first frame with a face at or after each of the
    ascending `times_s`, giving up on a time after `scan_frames` frames without a face. A time
    whose search ran past the next ones answers for those too (no frame comes twice)."""
    pending = list(times_s)
    frontend, looked = None, 0
    try:
        for time_s, frame in read_frames(clip, None):
            if not pending:
                return
            if time_s < pending[0]:
                continue
            if frontend is None:
                # A fresh front end per frame: its crop is placed as on a call's first frame.
                detector = make_detector("mediapipe", pose_every_n_frames=0)
                frontend, looked = FaceFrontend(detector, SIZES[0]), 0
            result = frontend.process(frame)
            looked += 1
            if result.landmarks is None and looked < scan_frames:
                continue
            frontend.detector.close()
            frontend = None
            if result.landmarks is not None:
                yield time_s, frame, result
            pending = [t for t in pending if t > time_s]
    finally:
        if frontend is not None:
            frontend.detector.close()


def dev_frames(
    folder: Path,
    probe: LandmarkProbe,
    segmenter: PersonSegmenter,
    max_clips: int | None = None,
    frames_per_clip: int = 1,
) -> list[DevFrame]:
    """`frames_per_clip` frames with a face of every clip, face-cropped at 256 (and at 512 where
    sharp), with their probe landmarks and person probability."""
    times_s = [k * FRAME_SPREAD_S / frames_per_clip for k in range(frames_per_clip)]
    frames = []
    for clip in list_clips(folder)[:max_clips]:
        for time_s, frame, result in _faces_at(clip, times_s):
            for size in SIZES:
                if size > SIZES[0] and result.box.side < MIN_SOURCE_SIDE_FOR_512:
                    continue
                image = result.box.extract(frame, size)
                frames.append(
                    DevFrame(clip.stem, time_s, size, image, probe.points(image), segmenter(image))
                )
    return frames


def person_psnr(reference: np.ndarray, decoded: np.ndarray, person: np.ndarray) -> float | None:
    """PSNR in dB over the RGB values of the pixels whose person probability (H, W) is above
    PERSON_THRESHOLD, as talkcodec.metrics.psnr over the whole image; None if there are none."""
    mask = person > PERSON_THRESHOLD
    if not mask.any():
        return None
    difference = reference[mask].astype(np.float64) - decoded[mask].astype(np.float64)  # (P, 3)
    mse = float(np.mean(difference**2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


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
    """(bytes, decoded) of the av1 keyframe codec (SVT-AV1 preset 4) coding one frame at a
    CRF."""
    codec = Av1Codec(quality=63 - crf)
    data = codec.compress(image)
    return len(data), codec.decompress(data)


def av1_half(image: np.ndarray, crf: int) -> tuple[int, np.ndarray]:
    """(bytes, decoded) of av1_intra on the (H/2, W/2) area-downscaled frame, the decoded frame
    upscaled back to (H, W) bicubically; H and W even."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    size_bytes, decoded = av1_intra(small, crf)
    return size_bytes, cv2.resize(decoded, (width, height), interpolation=cv2.INTER_CUBIC)


def _on_image(code: Callable[[np.ndarray, int], tuple[int, np.ndarray]]) -> Coder:
    def code_frame(frame: DevFrame, setting: int) -> tuple[int, np.ndarray]:
        return code(frame.image, setting)

    return code_frame


def _classic(codec_class: type[JpegCodec] | type[WebPCodec]) -> Coder:
    def code(frame: DevFrame, quality: int) -> tuple[int, np.ndarray]:
        codec = codec_class(quality=quality)
        data = codec.compress(frame.image)
        return len(data), codec.decompress(data)

    return code


def _gc(codecs: dict[int, GCCodec]) -> Coder:
    def code(frame: DevFrame, channels: int) -> tuple[int, np.ndarray]:
        # Plain codecs ignore the person probability.
        data = codecs[channels].compress(frame.image, person_probability=frame.person)
        return len(data), codecs[channels].decompress(data)

    return code


def gc_codecs(weights: Path) -> dict[tuple[str, int], GCCodec]:
    """Every GC variant's codec per channel count of the weights, keyed (variant name,
    channels)."""
    codecs = {}
    ladder = GCCodec(weights=weights).channel_choices
    for variant in GC_VARIANTS:
        for channels in variant.channels(ladder):
            codecs[variant.name, channels] = GCCodec(
                quality=channels,
                weights=weights,
                selective=variant.background_channels is not None,
                background_channels=variant.background_channels or 0,
            )
    return codecs


def make_coders(codecs: dict[tuple[str, int], GCCodec]) -> dict[str, tuple[Coder, tuple[int, ...]]]:
    """Per codec name: how it codes a frame at a setting, and the settings swept."""
    coders: dict[str, tuple[Coder, tuple[int, ...]]] = {}
    for variant in GC_VARIANTS:
        by_channels = {c: codec for (name, c), codec in codecs.items() if name == variant.name}
        coders[variant.name] = (_gc(by_channels), tuple(sorted(by_channels)))
    coders["jpeg"] = (_classic(JpegCodec), JPEG_QUALITIES)
    coders["webp"] = (_classic(WebPCodec), WEBP_QUALITIES)
    coders["hevc"] = (_on_image(hevc_intra), HEVC_QPS)
    coders["av1"] = (_on_image(av1_intra), AV1_CRFS)
    coders["av1-half"] = (_on_image(av1_half), AV1_HALF_CRFS)
    return coders


def measure(
    frames: list[DevFrame],
    coders: dict[str, tuple[Coder, tuple[int, ...]]],
    probe: LandmarkProbe,
) -> list[dict]:
    """One record per (frame, codec, setting): bytes, bpp and the five metrics."""
    records = []
    jobs = [
        (frame, name, setting) for frame in frames for name in coders for setting in coders[name][1]
    ]
    for frame, name, setting in tqdm(jobs, desc="coding", unit="image"):
        size_bytes, decoded = coders[name][0](frame, setting)
        points = probe.points(decoded) if frame.landmarks is not None else None
        records.append(
            {
                "clip": frame.clip,
                "time_s": frame.time_s,
                "frame": frame.key,
                "size": frame.size,
                "codec": name,
                "setting": setting,
                "bytes": size_bytes,
                "bpp": 8 * size_bytes / frame.size**2,
                "psnr_db": psnr(frame.image, decoded),
                "person_psnr_db": person_psnr(frame.image, decoded, frame.person),
                "ms_ssim": ms_ssim(frame.image, decoded),
                "haarpsi": haarpsi(frame.image, decoded),
                "akd_px": None if points is None else keypoint_distance(frame.landmarks, points),
                "face_found": points is not None,
            }
        )
    return records


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def matched_table(records: list[dict], frames: list[DevFrame]) -> list[dict]:
    """Per size and GC anchor (variant, channels): the anchor, then every classical codec at no
    more bytes than the anchor, frame by frame (and the anchor on just the frames it reached)."""
    rows = []
    judged = {(f.key, f.size) for f in frames if f.landmarks is not None}
    by_frame: dict[tuple[str, int, str], list[dict]] = defaultdict(list)
    for r in records:
        by_frame[r["frame"], r["size"], r["codec"]].append(r)
    for size in sorted({r["size"] for r in records}):
        for variant in GC_VARIANTS:
            for channels in sorted({r["setting"] for r in records if r["codec"] == variant.name}):
                anchor = {
                    r["frame"]: r
                    for r in records
                    if (r["size"], r["codec"], r["setting"]) == (size, variant.name, channels)
                }
                label = (size, variant.name, channels)
                rows.append(_row(*label, variant.name, list(anchor.values()), 0, judged))
                for name in CLASSIC_CODECS:
                    chosen, unreachable = [], 0
                    for frame, reference in anchor.items():
                        options = [
                            r
                            for r in by_frame[frame, size, name]
                            if r["bytes"] <= reference["bytes"]
                        ]
                        if options:
                            chosen.append(max(options, key=lambda r: r["bytes"]))
                        else:
                            unreachable += 1
                    rows.append(_row(*label, name, chosen, unreachable, judged))
                    if unreachable and chosen:
                        # The anchor on just the frames this codec reached, like for like.
                        same = [anchor[r["frame"]] for r in chosen]
                        codec = f"{variant.name} on {name}'s frames"
                        rows.append(_row(*label, codec, same, 0, judged, frames_of=name))
    return rows


def _row(
    size: int,
    anchor: str,
    channels: int,
    codec: str,
    chosen: list[dict],
    unreachable: int,
    judged: set,
    frames_of: str | None = None,
) -> dict:
    """One table row; frames_of names the codec whose reached frames an anchor row is limited to."""
    with_face = [r for r in chosen if (r["frame"], size) in judged]
    return {
        "size": size,
        "anchor": anchor,
        "gc_channels": channels,
        "codec": codec,
        "frames_of": frames_of,
        "frames": len(chosen),
        "cannot_reach": unreachable,
        "bpp": _mean([r["bpp"] for r in chosen]),
        "bytes": _mean([r["bytes"] for r in chosen]),
        "psnr_db": _mean([r["psnr_db"] for r in chosen]),
        "person_psnr_db": _mean([r["person_psnr_db"] for r in chosen]),
        "ms_ssim": _mean([r["ms_ssim"] for r in chosen]),
        "akd_px": _mean([r["akd_px"] for r in with_face if r["face_found"]]),
        "face_lost": sum(not r["face_found"] for r in with_face),
    }


def summary(rows: list[dict]) -> list[dict]:
    """Per size and GC anchor at or below SUMMARY_MAX_BPP: on MS-SSIM and on AKD, the verdict
    of _toughest against the classical codecs that reach its bytes on some frame ("opposed")."""
    verdicts = []
    for anchor in [r for r in rows if r["codec"] == r["anchor"]]:
        if anchor["bpp"] is None or anchor["bpp"] > SUMMARY_MAX_BPP:
            continue
        group = [
            r
            for r in rows
            if (r["size"], r["anchor"], r["gc_channels"])
            == (anchor["size"], anchor["anchor"], anchor["gc_channels"])
        ]
        limited = {r["frames_of"]: r for r in group if r["frames_of"] is not None}
        pairs = [
            (r, limited.get(r["codec"], anchor))
            for r in group
            if r["codec"] in CLASSIC_CODECS and r["frames"]
        ]
        verdict = {key: anchor[key] for key in ("size", "anchor", "gc_channels", "bpp", "frames")}
        verdict["opposed"] = bool(pairs)
        verdict["ms_ssim"] = _toughest(pairs, "ms_ssim", higher_is_better=True)
        verdict["akd_px"] = _toughest(pairs, "akd_px", higher_is_better=False)
        verdicts.append(verdict)
    return verdicts


def _toughest(pairs: list[tuple[dict, dict]], metric: str, higher_is_better: bool) -> dict | None:
    """Of (classical row, GC anchor row on the same frames) pairs: the classical codec furthest
    ahead of GC on `metric` -- GC beats them all iff it beats that one -- and whether GC does.
    A classical codec without a value (AKD: the face lost on every frame) is furthest behind.
    None where there is no pair or GC has no value (AKD: no face on the originals)."""
    sign = 1 if higher_is_better else -1

    def lead(pair: tuple[dict, dict]) -> float:
        classical, gc = pair
        return -math.inf if classical[metric] is None else sign * (classical[metric] - gc[metric])

    scored = [pair for pair in pairs if pair[1][metric] is not None]
    if not scored:
        return None
    best, gc = max(scored, key=lead)
    return {
        "codec": best["codec"],
        "frames": best["frames"],
        "of_frames": best["frames"] + best["cannot_reach"],
        "classical": best[metric],
        "classical_lost": best["face_lost"],
        "gc": gc[metric],
        "gc_wins": lead((best, gc)) < 0,
    }


def lowest_rates(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per size and codec: the mean over frames of the bpp of its smallest output."""
    lowest: dict[str, dict[str, float]] = {}
    for size in sorted({r["size"] for r in records}):
        for name in CODEC_ORDER:
            per_frame: dict[str, float] = {}
            for r in records:
                if (r["size"], r["codec"]) == (size, name):
                    per_frame[r["frame"]] = min(per_frame.get(r["frame"], math.inf), r["bpp"])
            lowest.setdefault(f"{size}x{size}", {})[name] = float(np.mean(list(per_frame.values())))
    return lowest


def gc_timings(
    plain: GCCodec, selective: GCCodec, frames: list[DevFrame], repeats: int = 3
) -> dict[str, dict]:
    """Median encode and decode ms per keyframe on the CPU, per size, at 1 torch thread and at
    all: plain GC, and selective GC running its own person segmentation in the encode."""
    timings: dict[str, dict] = {}
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for size in SIZES:
            images = [f.image for f in frames if f.size == size]
            if not images:
                continue
            result = {}
            for kind, codec in (("", plain), ("selective_", selective)):
                codec.decompress(codec.compress(images[0]))  # warm-up: first calls allocate
                encode, decode = [], []
                for image in images * repeats:
                    started = time.perf_counter()
                    data = codec.compress(image)
                    middle = time.perf_counter()
                    codec.decompress(data)
                    encode.append(1000 * (middle - started))
                    decode.append(1000 * (time.perf_counter() - middle))
                result[f"{kind}encode_ms"] = statistics.median(encode)
                result[f"{kind}decode_ms"] = statistics.median(decode)
            timings[f"{size}x{size}/{threads}-thread"] = result
    torch.set_num_threads(default_threads)
    return timings


def curves(records: list[dict], size: int) -> dict[str, list[tuple[float, ...]]]:
    """Per codec: (mean bpp, PSNR, person PSNR, MS-SSIM, AKD) of every setting over the frames
    of `size`; nan where a metric has no value."""
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
            metrics = ("bpp", "psnr_db", "person_psnr_db", "ms_ssim", "akd_px")
            means = [_mean([r[metric] for r in group]) for metric in metrics]
            points.append(tuple(math.nan if m is None else m for m in means))
        result[name] = sorted(points)
    return result


PLOT_STYLES = {
    "gc": {"marker": "o", "linestyle": "-", "color": "tab:red"},
    "gc-sc0": {"marker": "o", "linestyle": "--", "color": "tab:orange"},
    "gc-sc2": {"marker": "o", "linestyle": ":", "color": "tab:brown"},
    "jpeg": {"marker": "s", "linestyle": "--", "color": "tab:gray"},
    "webp": {"marker": "^", "linestyle": "--", "color": "tab:olive"},
    "hevc": {"marker": "v", "linestyle": "-", "color": "tab:green"},
    "av1": {"marker": "D", "linestyle": "-", "color": "tab:blue"},
    "av1-half": {"marker": "D", "linestyle": "--", "color": "tab:purple"},
}
PLOT_METRICS = ("PSNR (dB)", "person PSNR (dB)", "MS-SSIM", "AKD (px)")


def plot(records: list[dict], path: Path) -> None:
    sizes = sorted({r["size"] for r in records})
    columns = len(PLOT_METRICS)
    figure, axes = plt.subplots(
        len(sizes), columns, figsize=(5 * columns, 4.2 * len(sizes)), squeeze=False
    )
    for row, size in enumerate(sizes):
        for name, points in curves(records, size).items():
            if not points:
                continue
            values = np.array(points)
            for column, label in enumerate(PLOT_METRICS):
                axes[row, column].plot(
                    values[:, 0], values[:, column + 1], label=name, **PLOT_STYLES[name]
                )
                axes[row, column].set_ylabel(label)
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xlim(0, 0.25)  # the classical codecs' high-rate points run off the right
            axis.axvline(0.05, color="grey", linewidth=0.8, linestyle=":")
            axis.set_xlabel("bit/pixel")
            axis.set_title(f"{size}x{size} dev face crops")
            axis.grid(alpha=0.3)
        # Log scale: a codec losing the face at its lowest rates (tens of px) must not flatten
        # the few-px differences everywhere else.
        axes[row, columns - 1].set_yscale("log")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=len(labels))
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / figure.get_figheight()))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _labelled(image: np.ndarray, text: str) -> np.ndarray:
    image = np.ascontiguousarray(image).copy()
    scale = image.shape[0] / 512
    thickness = max(1, int(2 * scale))
    for colour, width in (((0, 0, 0), thickness + 2), ((255, 255, 0), thickness)):  # outlined
        cv2.putText(
            image,
            text,
            (6, int(26 * scale) + 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.9 * scale,
            colour,
            width,
            cv2.LINE_AA,
        )
    return image


def _strip_row(
    frame: DevFrame,
    coders: dict[str, tuple[Coder, tuple[int, ...]]],
    sent_bytes: dict[tuple[str, str, int], int],
    channels: int,
) -> np.ndarray:
    """original | gc C | gc-sc0 C | each classical codec at its largest output within gc's
    bytes; sent_bytes: bytes per (frame key, codec, setting) at the frame's size."""
    gc_bytes, gc_image = coders["gc"][0](frame, channels)
    selective_bytes, selective_image = coders["gc-sc0"][0](frame, channels)
    tiles = [
        _labelled(frame.image, "original"),
        _labelled(gc_image, f"gc-{channels} {gc_bytes} B"),
        _labelled(selective_image, f"gc-sc0-{channels} {selective_bytes} B"),
    ]
    for name in CLASSIC_CODECS:
        code, settings = coders[name]
        within = [s for s in settings if sent_bytes[frame.key, name, s] <= gc_bytes]
        if not within:
            tiles.append(_labelled(np.full_like(frame.image, 64), f"{name}: cannot reach"))
            continue
        size_bytes, decoded = code(frame, max(within, key=lambda s: sent_bytes[frame.key, name, s]))
        tiles.append(_labelled(decoded, f"{name} {size_bytes} B"))
    return np.concatenate(tiles, axis=1)


def strips(
    frames: list[DevFrame],
    records: list[dict],
    coders: dict[str, tuple[Coder, tuple[int, ...]]],
    channels: int,
    out_dir: Path,
) -> list[Path]:
    """Side-by-sides (see _strip_row), the first frame of each of the first four clips, per size."""
    written = []
    for size in SIZES:
        sent_bytes = {
            (r["frame"], r["codec"], r["setting"]): r["bytes"] for r in records if r["size"] == size
        }
        firsts: dict[str, DevFrame] = {}
        for frame in frames:
            if frame.size == size:
                firsts.setdefault(frame.clip, frame)
        rows = [
            _strip_row(frame, coders, sent_bytes, channels) for frame in list(firsts.values())[:4]
        ]
        if rows:
            path = out_dir / f"keyframe-{size}-gc{channels}-strip.png"
            cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
            written.append(path)
    return written


def compact_json(results: dict) -> str:
    """The results as JSON, one line per record (thousands of them) and floats to 6 digits."""

    def rounded(value: object) -> object:
        if isinstance(value, float):
            return float(f"{value:.6g}") if math.isfinite(value) else value
        if isinstance(value, dict):
            return {key: rounded(item) for key, item in value.items()}
        if isinstance(value, list):
            return [rounded(item) for item in value]
        return value

    results = rounded(results)  # type: ignore[assignment]
    head = {key: value for key, value in results.items() if key != "records"}
    lines = json.dumps(head, indent=1)[:-2] + ',\n "records": [\n'
    records = ",\n".join(json.dumps(record) for record in results["records"])
    return lines + records + "\n ]\n}\n"


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _anchor_title(name: str, channels: int) -> str:
    variant = next(v for v in GC_VARIANTS if v.name == name)
    if variant.background_channels is None:
        return f"GC with {channels} channels (bound {channels * math.log2(5) / 256:.4f} bpp)"
    return (
        f"selective GC ({name}): {channels} channels on the person, "
        f"{variant.background_channels} elsewhere"
    )


def _verdict_cell(verdict: dict | None, opposed: bool, digits: int, show_lost: bool) -> str:
    if verdict is None:
        return "n/a" if opposed else "unopposed: no classical codec gets this low"
    classical = "no face" if verdict["classical"] is None else f"{verdict['classical']:.{digits}f}"
    lost = f", {verdict['classical_lost']} lost" if show_lost and verdict["classical_lost"] else ""
    return (
        f"{'GC wins' if verdict['gc_wins'] else 'GC loses'}: {verdict['gc']:.{digits}f} vs "
        f"{classical} ({verdict['codec']}, {verdict['frames']}/{verdict['of_frames']} "
        f"frames{lost})"
    )


def _summary_lines(verdicts: list[dict]) -> list[str]:
    lines = [
        f"## Summary: GC at or below {SUMMARY_MAX_BPP} bpp against the classical codecs",
        "",
        "Per metric, GC against the classical codec that does best against it, each compared on "
        "the frames it reaches at no more bytes than GC (n/N); where GC beats that one it beats "
        "them all. MS-SSIM: higher is better; AKD: lower is better, 'lost' counts decoded frames "
        "without a face, left out of the classical codec's AKD.",
        "",
        "| size | GC anchor | bpp | MS-SSIM | AKD px |",
        "|---|---|---:|---|---|",
    ]
    for v in verdicts:
        lines.append(
            f"| {v['size']}x{v['size']} | {v['anchor']} {v['gc_channels']} | {v['bpp']:.4f} | "
            f"{_verdict_cell(v['ms_ssim'], v['opposed'], 4, show_lost=False)} | "
            f"{_verdict_cell(v['akd_px'], v['opposed'], 2, show_lost=True)} |"
        )
    if not verdicts:
        lines.append(f"| - | no GC anchor at or below {SUMMARY_MAX_BPP} bpp | | | |")
    return [*lines, ""]


def _matched_lines(rows: list[dict]) -> list[str]:
    lines = []
    for size in sorted({r["size"] for r in rows}):
        for variant in GC_VARIANTS:
            for channels in sorted({r["gc_channels"] for r in rows if r["anchor"] == variant.name}):
                group = [
                    r
                    for r in rows
                    if (r["size"], r["anchor"], r["gc_channels"]) == (size, variant.name, channels)
                ]
                lines += [
                    f"## {size}x{size}, {_anchor_title(variant.name, channels)}",
                    "",
                    "| codec | bpp | bytes | PSNR dB | person PSNR dB | MS-SSIM | AKD px | lost "
                    "| cannot reach |",
                    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
                ]
                for r in group:
                    lines.append(
                        f"| {r['codec']} | {_fmt(r['bpp'], 4)} | {_fmt(r['bytes'], 0)} | "
                        f"{_fmt(r['psnr_db'], 2)} | {_fmt(r['person_psnr_db'], 2)} | "
                        f"{_fmt(r['ms_ssim'], 4)} | {_fmt(r['akd_px'], 2)} | {r['face_lost']} | "
                        f"{r['cannot_reach']}/{r['frames'] + r['cannot_reach']} |"
                    )
                lines.append("")
    return lines


def markdown(
    rows: list[dict],
    verdicts: list[dict],
    timings: dict[str, dict],
    lowest: dict[str, dict[str, float]],
    meta: dict,
) -> str:
    per_clip = meta["frames_per_clip"]
    chosen = (
        "the first frame with a face of each dev clip"
        if per_clip == 1
        else f"up to {per_clip} frames per dev clip, the first with a face at or after each of "
        f"{', '.join(f'{t:g}' for t in meta['frame_times_s'])} s"
    )
    lines = [
        "# Keyframe codecs at extreme rates (dev face crops)",
        "",
        f"`python benchmarks/keyframe.py --frames-per-clip {per_clip}` -- {meta['frames_256']} "
        f"frames at 256x256, {meta['frames_512']} at 512x512, from {len(meta['clips'])} clips "
        f"({chosen}). GC weights `{meta['weights']}` ({meta['weights_steps']} training steps). "
        "Every classical codec at no more bytes than the GC anchor on each frame; 'cannot reach' "
        "counts frames where its smallest output is still larger. av1-half: AV1 intra on the "
        "frame downscaled by 2, upscaled back. Person PSNR: over the pixels the selfie "
        f"segmentation puts on the person (on average {meta['person_share']['256']:.0%} of a "
        "256 crop). AKD: mean face-mesh landmark distance in px at the frame's size; 'lost' "
        "counts decoded frames where no face was found (left out of AKD).",
        "",
        *_summary_lines(verdicts),
        *_matched_lines(rows),
        "## The lowest rate each codec reaches (mean bpp of its smallest output per frame)",
        "",
        "| size | " + " | ".join(CODEC_ORDER) + " |",
        "|---|" + "---:|" * len(CODEC_ORDER),
    ]
    for size, by_codec in lowest.items():
        lines.append(f"| {size} | " + " | ".join(f"{by_codec[n]:.4f}" for n in CODEC_ORDER) + " |")
    lines += [
        "",
        "## GC speed on the CPU (median per keyframe, 8 channels; selective: gc-sc0, its encode "
        "running the person segmentation)",
        "",
        "| size / torch threads | encode ms | decode ms | selective encode ms "
        "| selective decode ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, t in timings.items():
        lines.append(
            f"| {key} | {t['encode_ms']:.0f} | {t['decode_ms']:.0f} | "
            f"{t['selective_encode_ms']:.0f} | {t['selective_decode_ms']:.0f} |"
        )
    lines += ["", f"Machine: {meta['machine']}.", ""]
    return "\n".join(lines)


def _meta(weights: Path, steps: object, frames: list[DevFrame], frames_per_clip: int) -> dict:
    share = {
        str(size): _mean(
            [float(np.mean(f.person > PERSON_THRESHOLD)) for f in frames if f.size == size]
        )
        for size in SIZES
    }
    return {
        "weights": str(weights.relative_to(weights.parents[1])),
        "weights_steps": steps,
        "frames_per_clip": frames_per_clip,
        "frame_times_s": [k * FRAME_SPREAD_S / frames_per_clip for k in range(frames_per_clip)],
        "frames_256": sum(f.size == 256 for f in frames),
        "frames_512": sum(f.size == 512 for f in frames),
        "clips": sorted({f.clip for f in frames}),
        "person_share": share,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, default {torch.get_num_threads()} threads",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-strips", action="store_true", help="skip the side-by-side PNGs")
    parser.add_argument("--max-clips", type=int, default=None, help="only the first N clips")
    parser.add_argument(
        "--frames-per-clip",
        type=int,
        default=1,
        help=f"frames per clip, spread over its first {FRAME_SPREAD_S:g} s (default 1: the first "
        "frame with a face)",
    )
    args = parser.parse_args()
    if args.frames_per_clip < 1:
        parser.error(f"--frames-per-clip must be at least 1, got {args.frames_per_clip}")
    with ExitStack() as stack:
        codecs = gc_codecs(args.weights)
        for codec in codecs.values():
            stack.enter_context(closing(codec))
        coders = make_coders(codecs)
        probe = stack.enter_context(LandmarkProbe())
        segmenter = stack.enter_context(closing(PersonSegmenter()))
        frames = dev_frames(args.data, probe, segmenter, args.max_clips, args.frames_per_clip)
        records = measure(frames, coders, probe)
        timings = gc_timings(codecs["gc", 8], codecs["gc-sc0", 8], frames)
        rows = matched_table(records, frames)
        verdicts = summary(rows)
        lowest = lowest_rates(records)
        meta = _meta(
            args.weights, codecs["gc", 8].metadata.get("steps"), frames, args.frames_per_clip
        )
        args.out.mkdir(parents=True, exist_ok=True)
        results = {
            "meta": meta,
            "summary": verdicts,
            "matched": rows,
            "lowest_bpp": lowest,
            "timings": timings,
            "records": records,
        }
        (args.out / "keyframe.json").write_text(compact_json(results))
        report = markdown(rows, verdicts, timings, lowest, meta)
        (args.out / "keyframe.md").write_text(report)
        plot(records, args.out / "keyframe-rd.png")
        if not args.no_strips:
            for channels in (4, 8):
                strips(frames, records, coders, channels, args.out)
    print(report)


if __name__ == "__main__":
    main()
