"""Whole-codec round trip on real clips: bit rates by packet kind and quality of what arrives.

    python benchmarks/roundtrip.py [--data ../shared/data/dev] [--renderer meshwarp] [--frames 250]

Each clip goes through the sender (face crop, landmarks, keypoint coder, keyframe codec) and the
receiver (renderer) in memory at 25 fps, 256x256; decoded frames are compared with the crops the
sender saw. Writes benchmarks/results/roundtrip-<renderer>.json and a side-by-side PNG strip.
"""

from __future__ import annotations

from dataclasses import asdict

import cv2
import numpy as np
from tqdm import tqdm

from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.evaluation import RoundTrip, round_trip

import common


def clip_row(result: RoundTrip) -> dict[str, object]:
    payload = result.payload_bytes
    return {
        "clip": result.clip,
        "frames": result.frames,
        "rendered": result.rendered,
        "psnr_db": float(result.psnr_db.mean()),
        "ssim": float(result.ssim.mean()),
        "keypoints_kbps": result.kbit_per_s("keypoints"),
        "keypoints_bits_per_frame": payload.get("keypoints", 0) * 8 / max(result.frames, 1),
        "keyframe_bytes": payload.get("keyframe", 0),
        "total_kbps": result.kbit_per_s("keypoints") + result.kbit_per_s("keyframe"),
        "total_kbps_with_packet_headers": result.kbit_per_s("keypoints", True)
        + result.kbit_per_s("keyframe", True),
    }


def print_table(rows: list[dict], mean: dict[str, float]) -> None:
    print(
        f"{'clip':<44} {'PSNR':>6} {'SSIM':>6} {'kp kbit/s':>9} {'kp bits/f':>9} "
        f"{'keyframe B':>10} {'total kbit/s':>12}"
    )
    for row in [*rows, {"clip": "mean", **mean}]:
        print(
            f"{row['clip'][:44]:<44} {row['psnr_db']:>6.2f} {row['ssim']:>6.3f} "
            f"{row['keypoints_kbps']:>9.2f} {row['keypoints_bits_per_frame']:>9.1f} "
            f"{row['keyframe_bytes']:>10.0f} {row['total_kbps']:>12.2f}"
        )


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--renderer", default=DecoderConfig.renderer)
    parser.add_argument("--size", type=int, default=EncoderConfig.size_px)
    args = parser.parse_args()
    encoder_config = EncoderConfig(size_px=args.size)
    decoder_config = DecoderConfig(renderer=args.renderer)
    rows, strips = [], []
    for clip in tqdm(common.clips(args.data), desc="clips", unit="clip"):
        result, pairs = round_trip(
            clip, encoder_config, decoder_config, max_frames=args.frames, keep_frames=True
        )
        rows.append(clip_row(result))
        if pairs:
            picks = np.linspace(0, len(pairs) - 1, 4).astype(int)
            strips.append(np.concatenate([np.concatenate(pairs[i], 0) for i in picks], 1))
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "clip"}
    print_table(rows, mean)
    report = {
        "data": str(args.data),
        "encoder": asdict(encoder_config),
        "decoder": asdict(decoder_config),
        "frames_per_clip": args.frames,
        "clips": rows,
        "mean": mean,
    }
    name = f"roundtrip-{args.renderer}"
    common.write_results(name, report)
    if strips:
        # Sent crop above, received frame below. Frames of the clips: never committed (.gitignore).
        sheet = np.concatenate(strips[:3], 0)
        cv2.imwrite(
            str(common.RESULTS / f"{name}-strip.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)
        )


if __name__ == "__main__":
    main()
