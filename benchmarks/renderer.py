"""The receiver's renderer, part by part: what warp v2, the reference bank and the refiner buy.

    python benchmarks/renderer.py [--data ../shared/data/dev] [--frames 250] [--backend auto]

Each clip is cut to a fixed face-centred 256x256 crop at 25 fps (the test conditions of
benchmarks/bandwidth.py), encoded with a bank of 1 (keyframe only), with the default bank of
4 (references under the default budget), and, as a control that spends keyframe bits without
choosing when, with a bank of 1 and a fresh keyframe every --control-interval-s seconds; every
packet stream is decoded by the renderers:

    meshwarp           the foundation's face-mesh warp (bank 1)
    headwarp           warp v2 alone (bank 1)
    headwarp+refs      warp v2 with the reference bank (bank 4)
    gan                warp v2 + refiner (bank 1)
    gan+periodic       warp v2 + refiner, periodic keyframes (the control)
    gan+refs           the full renderer: warp v2 + reference bank + refiner (bank 4)

Per clip and variant: PSNR, SSIM, HaarPSI, AKD (mediapipe landmarks of the decoded frame vs the sent
frame, static-image mode), PSNR on open-mouth frames (decoded mouth opening one descriptor
unit above the first keyframe's), keyframe and total kbit/s, and render ms/frame as measured
inside the decode loop (the 2 cores may be shared: benchmarks/speed.py and
benchmarks/refiner_speed.py time the stages alone). Clips whose head moves (mean face-centre
shift from the first frame >= --motion-px) are summarised apart. Writes
benchmarks/results/renderer.{json,md}, renderer.png and a side-by-side strip
(renderer-strip.png, never committed: it shows frames of the clips).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from talkcodec.bank import DESCRIPTOR_NAMES, DESCRIPTOR_SCALES, describe
from talkcodec.bitstream import PacketKind, StreamHeader
from talkcodec.codec import StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.evaluation import LandmarkProbe, keypoint_agreement, stream_frames
from talkcodec.keypoints.dataset import load_reference_clip
from talkcodec.metrics import haarpsi, psnr, ssim

import common

_MOUTH = DESCRIPTOR_NAMES.index("mouth_open")
# (variant, renderer, sender setting): "single" one keyframe, "refs" the default reference bank,
# "periodic" a bank of 1 with periodic keyframes.
VARIANTS = (
    ("meshwarp", "meshwarp", "single"),
    ("headwarp", "headwarp", "single"),
    ("headwarp+refs", "headwarp", "refs"),
    ("gan", "gan", "single"),
    ("gan+periodic", "gan", "periodic"),
    ("gan+refs", "gan", "refs"),
)


@dataclass(frozen=True)
class EncodedClip:
    """One clip through the sender: the messages of each frame and what they cost."""

    header: StreamHeader
    messages: list[list[bytes]]  # per frame
    keyframe_bytes: int
    keypoint_bytes: int
    mouth_open: np.ndarray  # (T,) decoded mouth opening, NaN without a face


def encode(frames: np.ndarray, config: EncoderConfig) -> EncodedClip:
    encoder = StreamEncoder(config)
    messages, mouths = [], np.full(len(frames), np.nan)
    payload = {PacketKind.KEYFRAME: 0, PacketKind.KEYPOINTS: 0}
    size = (config.size_px, config.size_px)
    try:
        for streamed in stream_frames(frames, encoder):
            for packet in streamed.packets:
                payload[packet.kind] += len(packet.payload)
            messages.append(list(streamed.messages))
            if streamed.decoded_landmarks is not None:
                mouths[streamed.index] = describe(streamed.decoded_landmarks, size)[_MOUTH]
    finally:
        encoder.close()
    return EncodedClip(
        encoder.header,
        messages,
        payload[PacketKind.KEYFRAME],
        payload[PacketKind.KEYPOINTS],
        mouths,
    )


def decode(
    encoded: EncodedClip, config: DecoderConfig, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, float]:
    """(decoded frames (T, S, S, 3), (T,) bool rendered, median render ms)."""
    decoder = StreamDecoder(encoded.header, config)
    decoded = np.zeros((len(encoded.messages), *shape), dtype=np.uint8)
    rendered = np.zeros(len(encoded.messages), dtype=bool)
    times = []
    for index, messages in enumerate(encoded.messages):
        for message in messages:
            # One packet a message here (no bundles): at most one frame each.
            for frame in decoder.decode(message):
                started = time.perf_counter()
                decoded[index] = decoder.render(frame)
                times.append(time.perf_counter() - started)
                rendered[index] = True
    # The first render loads the backend (and exports ONNX once): leave it out of the timing.
    render_ms = 1000 * float(np.median(times[1:])) if len(times) > 1 else float("nan")
    return decoded, rendered, render_ms


def head_motion_px(points: list[np.ndarray | None]) -> float:
    """Mean distance of the face centre from its first position, over frames with a face."""
    centres = [p[:, :2].mean(axis=0) for p in points if p is not None]
    if len(centres) < 2:
        return 0.0
    return float(np.mean(np.linalg.norm(np.array(centres) - centres[0], axis=1)))


def measure_clip(
    clip: Path, args: argparse.Namespace, probe: LandmarkProbe
) -> tuple[list[dict], np.ndarray | None]:
    reference = load_reference_clip(clip, args.size, max_frames=args.frames)
    if reference is None:
        return [], None
    frames = reference.frames
    sent_points = [probe.points(frame) for frame in frames]
    base = EncoderConfig(size_px=args.size, crop=False, lowres_px=0)  # the renderers alone
    settings = {
        "single": replace(base, reference_bank_size=1),
        "refs": base,
        "periodic": replace(
            base, reference_bank_size=1, keyframe_interval_s=args.control_interval_s
        ),
    }
    encoded = {name: encode(frames, config) for name, config in settings.items()}
    rows, strip_columns = [], [frames]
    seconds = len(frames) / base.fps
    for variant, renderer, setting in VARIANTS:
        clip_encoded = encoded[setting]
        decoder_config = DecoderConfig(renderer=renderer, backend=args.backend)
        decoded, rendered, render_ms = decode(clip_encoded, decoder_config, frames.shape[1:])
        pairs = list(zip(frames, decoded, rendered, strict=True))
        psnrs, ssims, haar = (
            np.array([metric(f, d) if r else np.nan for f, d, r in pairs])
            for metric in (psnr, ssim, haarpsi)
        )
        decoded_points = [
            probe.points(d) if r else None for d, r in zip(decoded, rendered, strict=True)
        ]
        judged = [p if r else None for p, r in zip(sent_points, rendered, strict=True)]
        akd, akd_failures = keypoint_agreement(judged, decoded_points)
        mouth = clip_encoded.mouth_open
        first = mouth[np.argmax(rendered)] if rendered.any() else np.nan
        open_mouth = rendered & (mouth >= first + DESCRIPTOR_SCALES[_MOUTH])
        rows.append(
            {
                "clip": reference.clip,
                "variant": variant,
                "frames": len(frames),
                "rendered": int(rendered.sum()),
                "head_motion_px": head_motion_px(sent_points),
                "psnr_db": float(np.nanmean(psnrs)),
                "ssim": float(np.nanmean(ssims)),
                "haarpsi": float(np.nanmean(haar)),
                "akd_px": akd,
                "akd_failures": akd_failures,
                "open_mouth_frames": int(open_mouth.sum()),
                "open_mouth_psnr_db": float(psnrs[open_mouth].mean()) if open_mouth.any() else None,
                "keyframe_kbps": clip_encoded.keyframe_bytes * 8 / seconds / 1000,
                "total_kbps": (clip_encoded.keyframe_bytes + clip_encoded.keypoint_bytes)
                * 8
                / seconds
                / 1000,
                "render_ms": render_ms,
            }
        )
        strip_columns.append(decoded)
    # The frame where the variants differ most from the foundation's warp, for the strip.
    pairs = zip(strip_columns[1], strip_columns[-1], strict=True)
    worst = int(np.argmax([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in pairs]))
    strip = np.concatenate([column[worst] for column in strip_columns], axis=1)
    return rows, strip


_COLUMNS = (
    ("PSNR dB", "psnr_db", 2),
    ("SSIM", "ssim", 3),
    ("HaarPSI", "haarpsi", 3),
    ("AKD px", "akd_px", 2),
    ("open-mouth PSNR dB", "open_mouth_psnr_db", 2),
    ("keyframe kbit/s", "keyframe_kbps", 1),
    ("total kbit/s", "total_kbps", 1),
    ("render ms", "render_ms", 1),
)


def groups(rows: list[dict], motion_px: float) -> dict[str, list[dict]]:
    """All rows, and those of clips with head motion, by group name."""
    moving = [row for row in rows if row["head_motion_px"] >= motion_px]
    return {
        f"all clips ({len({r['clip'] for r in rows})})": rows,
        f"clips with head motion >= {motion_px:g} px ({len({r['clip'] for r in moving})})": moving,
    }


def summary(rows: list[dict], motion_px: float) -> dict[str, dict[str, dict]]:
    """Means per variant over all clips and over the clips with head motion."""
    return {
        group: {
            variant: {
                key: common.mean_of([r for r in subset if r["variant"] == variant], key)
                for _, key, _ in _COLUMNS
            }  # fmt: skip
            for variant, _, _ in VARIANTS
        }
        for group, subset in groups(rows, motion_px).items()
    }


def markdown(rows: list[dict], means: dict[str, dict[str, dict]]) -> str:
    lines = []
    for group, by_variant in means.items():
        lines += [f"### {group}", ""]
        lines.append("| variant | " + " | ".join(name for name, _, _ in _COLUMNS) + " |")
        lines.append("|---|" + "---:|" * len(_COLUMNS))
        for variant, values in by_variant.items():
            cells = [common.fmt(values[key], digits) for _, key, digits in _COLUMNS]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### gan against the plain warps, per clip (each dev clip is another person)", ""]
    lines += [gan_wins(rows), ""]
    lines += ["### per clip", "",
              "| clip | head motion px | variant | PSNR dB | SSIM | HaarPSI | AKD px |",
              "|---|---:|---|---:|---:|---:|---:|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['clip']} | {row['head_motion_px']:.1f} | {row['variant']} | "
            f"{row['psnr_db']:.2f} | {row['ssim']:.3f} | {common.fmt(row['haarpsi'], 3)} | "
            f"{common.fmt(row['akd_px'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def gan_wins(rows: list[dict]) -> str:
    """On how many clips `gan` beats `meshwarp` and `headwarp` (same bits: bank 1) on PSNR,
    HaarPSI and AKD, as a small markdown table."""
    by_clip: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_clip.setdefault(row["clip"], {})[row["variant"]] = row

    def beats(variants: dict[str, dict], other: str, key: str, sign: int) -> bool:
        gan, value = variants["gan"][key], variants[other][key]
        return gan is not None and value is not None and sign * (gan - value) > 0

    table = ["| metric | gan > meshwarp | gan > headwarp | gan > both |", "|---|---:|---:|---:|"]
    metrics = (("PSNR", "psnr_db", 1), ("HaarPSI", "haarpsi", 1), ("AKD", "akd_px", -1))
    for name, key, sign in metrics:
        wins = [
            (beats(v, "meshwarp", key, sign), beats(v, "headwarp", key, sign))
            for v in by_clip.values()
        ]
        counts = (sum(m for m, _ in wins), sum(h for _, h in wins), sum(m and h for m, h in wins))
        table.append(f"| {name} | " + " | ".join(f"{c}/{len(by_clip)}" for c in counts) + " |")
    return "\n".join(table)


def plot(means: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    names = [variant for variant, _, _ in VARIANTS]
    width = 0.38
    panels = [
        ("PSNR (dB)", "psnr_db"),
        ("HaarPSI", "haarpsi"),
        ("AKD (px, lower is better)", "akd_px"),
    ]
    for axis, (label, key) in zip(axes, panels, strict=True):
        for offset, (group, by_variant) in enumerate(means.items()):
            values = [by_variant[name][key] or 0.0 for name in names]
            positions = np.arange(len(names)) + (offset - 0.5) * width
            axis.bar(positions, values, width, label=group)
        axis.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
        axis.set_title(label)
        low = min((v[key] or 0.0) for g in means.values() for v in g.values())
        axis.set_ylim(bottom=low * 0.9 if key != "akd_px" else 0)
    axes[0].legend(fontsize=8)
    figure.suptitle("talkcodec renderers on dev clips, 256x256, 25 fps")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--backend", default=DecoderConfig.backend)
    parser.add_argument("--motion-px", type=float, default=5.0)
    parser.add_argument("--control-interval-s", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=common.RESULTS)
    args = parser.parse_args()
    rows, strips = [], []
    with LandmarkProbe() as probe:
        for clip in tqdm(common.clips(args.data), desc="clips", unit="clip"):
            clip_rows, strip = measure_clip(clip, args, probe)
            rows += clip_rows
            if strip is not None:
                strips.append(strip)
    means = summary(rows, args.motion_px)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "variants": [v for v, _, _ in VARIANTS],
        "means": means,
        "clips": rows,
        "backend": args.backend,
        "frames_per_clip": args.frames,
    }
    (args.out / "renderer.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(rows, means)
    (args.out / "renderer.md").write_text(table)
    plot(means, args.out / "renderer.png")
    if strips:
        # Sent, then each variant in VARIANTS order, one row per clip.
        cv2.imwrite(str(args.out / "renderer-strip.png"), np.concatenate(strips)[..., ::-1])
    print(table)


if __name__ == "__main__":
    main()
