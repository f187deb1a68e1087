"""Reference bank: what extra references cost on the wire and what they buy on screen.

    python benchmarks/references.py [--data ../shared/data/dev] [--renderer meshwarp]
        [--frames 250] [--bank-sizes 1 4] [--threshold T] [--control-interval-s 3]
        [--reference-codecs gc gc:4] [--keyframe-codec webp]

Each clip is cut to a fixed face-centred 256x256 crop (talkcodec.evaluation.load_reference_clip,
the test conditions of benchmarks/bandwidth.py), sent through StreamEncoder and decoded with
StreamDecoder as over a lossless link, once per bank size, and once more with a bank of 1 and a
fresh keyframe every --control-interval-s seconds: the control that spends keyframe bits
without choosing when; `--reference-codecs CODEC[:QUALITY]` adds each bank size above 1 with its
references (not the first keyframe) in that codec: cheaper references. Reported per clip and
setting: extra keyframes (after the first: references, or the control's periodic ones), keyframe
bytes and kbit/s, total kbit/s, PSNR, SSIM and HaarPSI of every frame, and PSNR of the "open
mouth" frames: those whose decoded mouth opening
exceeds the first keyframe's by at least one descriptor unit (DESCRIPTOR_SCALES), i.e. the
frames the first keyframe shows no teeth or mouth interior for. The script also checks, frame
by frame, that the sender's mirrored reference choice equals the receiver's. A last table gives
each setting's gain over the bank of 1 (mean and worst clip) and what it paid for it.

Writes benchmarks/results/references-<keyframe codec>-<renderer>.json and .md. No frames are saved.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace

import numpy as np
from tqdm import tqdm

from talkcodec.bank import DESCRIPTOR_NAMES, DESCRIPTOR_SCALES, describe
from talkcodec.bitstream import PacketKind
from talkcodec.codec import StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.evaluation import stream_frames
from talkcodec.keypoints.dataset import load_reference_clip
from talkcodec.metrics import haarpsi, psnr, ssim

import common

_MOUTH = DESCRIPTOR_NAMES.index("mouth_open")


@dataclass(frozen=True)
class ClipRun:
    """One clip through the codec. Per-frame arrays are (T,); NaN where nothing was rendered."""

    psnr_db: np.ndarray
    ssim: np.ndarray
    haarpsi: np.ndarray
    mouth_open: np.ndarray  # decoded mouth opening (fraction of the eye span)
    keyframe_bytes: int  # payload bytes of all KEYFRAME packets
    keypoint_bytes: int
    keyframe_reasons: dict[str, int]
    selection_mismatches: int  # frames where sender and receiver chose different references


def run_clip(
    frames: np.ndarray, encoder_config: EncoderConfig, decoder_config: DecoderConfig
) -> ClipRun:
    """Send (T, S, S, 3) uint8 crops through the codec and judge every rendered frame."""
    encoder = StreamEncoder(encoder_config)
    decoder = StreamDecoder(encoder.header, decoder_config)
    count = len(frames)
    psnrs, ssims, mouths = np.full(count, np.nan), np.full(count, np.nan), np.full(count, np.nan)
    haarpsis = np.full(count, np.nan)
    payload = {PacketKind.KEYFRAME: 0, PacketKind.KEYPOINTS: 0}
    mismatches = 0
    image_size = (encoder_config.size_px, encoder_config.size_px)
    try:
        for streamed in stream_frames(frames, encoder, decoder):
            for packet in streamed.packets:
                payload[packet.kind] += len(packet.payload)
            if streamed.rendered is None or streamed.decoded_landmarks is None:
                continue
            index, rendered = streamed.index, streamed.rendered
            mismatches += streamed.sender_reference_id != streamed.receiver_reference_id
            psnrs[index], ssims[index], haarpsis[index] = (
                psnr(frames[index], rendered),
                ssim(frames[index], rendered),
                haarpsi(frames[index], rendered),
            )
            mouths[index] = describe(streamed.decoded_landmarks, image_size)[_MOUTH]
    finally:
        encoder.close()
    return ClipRun(
        psnrs,
        ssims,
        haarpsis,
        mouths,
        payload[PacketKind.KEYFRAME],
        payload[PacketKind.KEYPOINTS],
        dict(encoder.keyframe_reasons),
        mismatches,
    )


def _row(clip: str, frames: int, fps: float, setting: str, run: ClipRun) -> dict:
    seconds = frames / fps
    rendered = np.isfinite(run.psnr_db)
    first_mouth = run.mouth_open[np.argmax(rendered)] if rendered.any() else np.nan
    open_mouth = rendered & (run.mouth_open >= first_mouth + DESCRIPTOR_SCALES[_MOUTH])
    keyframes = sum(run.keyframe_reasons.values())
    return {
        "clip": clip,
        "setting": setting,
        "frames": frames,
        "rendered": int(rendered.sum()),
        "extra_keyframes": keyframes - 1,
        "keyframe_reasons": run.keyframe_reasons,
        "keyframe_bytes": run.keyframe_bytes,
        "keyframe_kbps": run.keyframe_bytes * 8 / seconds / 1000,
        "total_kbps": (run.keyframe_bytes + run.keypoint_bytes) * 8 / seconds / 1000,
        "psnr_db": float(np.nanmean(run.psnr_db)),
        "ssim": float(np.nanmean(run.ssim)),
        "haarpsi": float(np.nanmean(run.haarpsi)),
        "open_mouth_frames": int(open_mouth.sum()),
        "open_mouth_psnr_db": float(run.psnr_db[open_mouth].mean()) if open_mouth.any() else None,
        "selection_mismatches": run.selection_mismatches,
    }


_COLUMNS = (
    ("extra keyframes", "extra_keyframes", 0),
    ("keyframe B", "keyframe_bytes", 0),
    ("keyframe kbit/s", "keyframe_kbps", 2),
    ("total kbit/s", "total_kbps", 2),
    ("PSNR dB", "psnr_db", 2),
    ("SSIM", "ssim", 4),
    ("HaarPSI", "haarpsi", 4),
    ("open frames", "open_mouth_frames", 0),
    ("open PSNR dB", "open_mouth_psnr_db", 2),
)


def markdown_table(rows: list[dict], settings: list[str]) -> str:
    """Per clip and setting, then the means over clips per setting."""
    body = [
        [row["clip"], row["setting"], *(common.fmt(row[key], d) for _, key, d in _COLUMNS)]
        for row in rows
    ]
    for setting in settings:
        subset = [row for row in rows if row["setting"] == setting]
        means = (common.fmt(common.mean_of(subset, key), max(d, 1)) for _, key, d in _COLUMNS)
        body.append(["**mean**", setting, *means])
    header = ["clip", "setting", *(name for name, _, _ in _COLUMNS)]
    return "\n".join(common.markdown_table(header, body))


def gains_table(rows: list[dict], settings: list[str]) -> str:
    """Each setting against the first (the bank of 1): the mean and the worst clip's change
    in PSNR and HaarPSI, the extra keyframe kbit/s, and PSNR and HaarPSI gained per kbit/s."""
    first = {row["clip"]: row for row in rows if row["setting"] == settings[0]}
    body = []
    for setting in settings[1:]:
        subset = [row for row in rows if row["setting"] == setting and row["clip"] in first]
        if not subset:
            continue
        psnr_gain = np.array([row["psnr_db"] - first[row["clip"]]["psnr_db"] for row in subset])
        haar_gain = np.array([row["haarpsi"] - first[row["clip"]]["haarpsi"] for row in subset])
        kbps = np.mean(
            [row["keyframe_kbps"] - first[row["clip"]]["keyframe_kbps"] for row in subset]
        )
        per_kbps = 1 / kbps if kbps > 0 else None
        body.append(
            [
                setting,
                f"{psnr_gain.mean():+.2f} ({psnr_gain.min():+.2f})",
                f"{haar_gain.mean():+.4f} ({haar_gain.min():+.4f})",
                f"{kbps:+.2f}",
                common.fmt(per_kbps and psnr_gain.mean() * per_kbps, 3),
                common.fmt(per_kbps and haar_gain.mean() * per_kbps, 5),
            ]
        )
    header = ["setting", "PSNR dB (worst)", "HaarPSI (worst)", "keyframe kbit/s", "dB per kbit/s"]
    header.append("HaarPSI per kbit/s")
    return "\n".join(common.markdown_table(header, body))


def settings_of(args: argparse.Namespace) -> dict[str, EncoderConfig]:
    """The encoder of each setting: one per bank size, and the periodic-keyframe control."""
    base = EncoderConfig(
        size_px=args.size,
        crop=False,
        lowres_px=0,  # references in keypoint-only streams (the hybrid mode keeps a bank of 1)
        reference_threshold=args.threshold,
        keyframe_codec=args.keyframe_codec,
    )
    configs = {f"bank {size}": replace(base, reference_bank_size=size) for size in args.bank_sizes}
    for spec in args.reference_codecs:
        name, _, quality = spec.partition(":")
        for size in args.bank_sizes:
            if size > 1:
                configs[f"bank {size}, {spec} references"] = replace(
                    base,
                    reference_bank_size=size,
                    reference_codec=name,
                    reference_quality=int(quality) if quality else None,
                )
    if args.control_interval_s > 0:
        control = f"bank 1, keyframe every {args.control_interval_s:g} s"
        configs[control] = replace(
            base, reference_bank_size=1, keyframe_interval_s=args.control_interval_s
        )
    return configs


def describe_run(args: argparse.Namespace, rows: list[dict], mismatches: int) -> str:
    base = EncoderConfig()
    codecs = " ".join(args.reference_codecs)
    reference_flag = f" --reference-codecs {codecs}" if codecs else ""
    control = args.control_interval_s
    reference_flag += f" --control-interval-s {control:g}" if control != 3.0 else ""
    if args.threshold is not None:
        reference_flag += f" --threshold {args.threshold:g}"
    if args.bank_sizes != [1, 4]:
        reference_flag += " --bank-sizes " + " ".join(map(str, args.bank_sizes))
    threshold = (
        f"reference threshold {args.threshold:g}"
        if args.threshold is not None
        else "reference threshold by the stream's codecs (2.0 for GC references in a GC "
        "stream, else 2.5)"
    )
    return (
        f"`python benchmarks/references.py --renderer {args.renderer} --keyframe-codec "
        f"{args.keyframe_codec}{reference_flag}`: "
        f"{len({row['clip'] for row in rows})} clips from `{args.data}`, fixed face crop, "
        f"{args.size}x{args.size}, {base.fps:g} fps, first {args.frames} frames, lossless link; "
        f"{threshold}, at most one reference per "
        f"{base.min_reference_interval_s:g} s. `extra keyframes`: keyframes after the first "
        "(references, or the control's periodic keyframes). `open`: frames whose decoded mouth "
        "opening exceeds the first keyframe's by "
        f"at least {DESCRIPTOR_SCALES[_MOUTH]:g} eye spans. Sender and receiver chose different "
        f"references on {mismatches} frames."
    )


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--renderer", default=DecoderConfig.renderer)
    parser.add_argument("--size", type=int, default=EncoderConfig.size_px)
    parser.add_argument("--bank-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--threshold", type=float, default=None,
        help="the reference threshold (default: the encoder's, by the references' codec)",
    )  # fmt: skip
    parser.add_argument(
        "--control-interval-s", type=float, default=3.0,
        help="also run a bank of 1 with a keyframe every this many seconds (0: skip)",
    )  # fmt: skip
    parser.add_argument("--keyframe-codec", default=EncoderConfig.keyframe_codec)
    parser.add_argument(
        "--reference-codecs", nargs="*", default=[], metavar="CODEC[:QUALITY]",
        help="also run each bank size above 1 with its references in these codecs",
    )  # fmt: skip
    args = parser.parse_args()
    configs = settings_of(args)
    rows = []
    for clip in tqdm(common.clips(args.data), desc="clips", unit="clip"):
        reference = load_reference_clip(clip, args.size, EncoderConfig.fps, args.frames)
        if reference is None:
            continue
        for setting, config in configs.items():
            run = run_clip(reference.frames, config, DecoderConfig(renderer=args.renderer))
            rows.append(_row(clip.name, len(reference.frames), config.fps, setting, run))
    table = markdown_table(rows, list(configs))
    gains = gains_table(rows, list(configs))
    print(table)
    print(gains)
    mismatches = sum(row["selection_mismatches"] for row in rows)
    print(f"frames where sender and receiver chose different references: {mismatches}")
    means = {
        setting: {
            key: common.mean_of([r for r in rows if r["setting"] == setting], key)
            for _, key, _ in _COLUMNS
        }
        for setting in configs
    }
    report = {
        "data": str(args.data),
        "frames_per_clip": args.frames,
        "encoder": {setting: asdict(config) for setting, config in configs.items()},
        "renderer": args.renderer,
        "keyframe_codec": args.keyframe_codec,
        "clips": rows,
        "mean": means,
    }
    heading = f"# Reference bank, {args.keyframe_codec} keyframes, renderer {args.renderer}\n\n"
    markdown = heading + describe_run(args, rows, mismatches) + f"\n\n{table}\n\n"
    markdown += "Gain over the bank of 1, per clip (each clip is another person):\n\n"
    markdown += f"{gains}\n"
    name = f"references-{args.keyframe_codec}-{args.renderer}"
    if args.threshold is not None:
        name += f"-threshold{args.threshold:g}"
    common.write_results(name, report, markdown)


if __name__ == "__main__":
    main()
