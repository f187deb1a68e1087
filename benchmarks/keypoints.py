"""Rate/error curve of the keypoint coder over basis size and quantisation step.

    python benchmarks/keypoints.py [--data ../shared/data/dev] [--fps 25]

For every clip: the sender's front end (face crop, mediapipe landmarks at 256x256), then the
keypoint model and entropy coder exactly as the stream uses them. Rate is the payload bytes the
coder really emits (byte-exact, intra refreshes included); error is the mean 2-D distance
between the detected landmarks and the decoded ones, in pixels at 256x256. Writes
benchmarks/results/keypoints.json and keypoints.png.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from talkcodec.bitstream import KeypointModelId
from talkcodec.entropy.keypoints import KeypointDecoder, KeypointEncoder
from talkcodec.keypoints.dataset import LandmarkTrack, load_tracks
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.model import KeypointModel, landmark_error_px
from talkcodec.keypoints.registry import load_keypoint_model

import common


def measure(
    model: KeypointModel, tracks: list[LandmarkTrack], step_px: float | None, refresh: int
) -> dict[str, float]:
    """Mean payload bits per frame and landmark error over all frames of all tracks.

    step_px=None measures the basis alone (no quantisation, no coding).
    """
    bits, errors, intra_bits = [], [], []
    for track in tracks:
        encoder = decoder = None
        if step_px is not None:
            encoder = KeypointEncoder(model, step_px, refresh)
            decoder = KeypointDecoder(model, step_px)
        for face, shoulders in zip(track.face, track.shoulders, strict=True):
            if np.isnan(face[0, 0]):
                continue
            detected = Landmarks(face, shoulders)
            params = model.fit(detected, track.size)
            if encoder is not None and decoder is not None:
                coded = encoder.encode(params)
                params = decoder.decode(coded.payload, coded.intra)
                if not np.array_equal(params, coded.decoded_params):
                    raise AssertionError("decoder disagrees with encoder")
                bits.append(8 * len(coded.payload))
                if coded.intra:
                    intra_bits.append(8 * len(coded.payload))
            decoded = model.reconstruct(params, track.size)
            errors.append(landmark_error_px(detected, decoded, track.size))
    return {
        "bits_per_frame": float(np.mean(bits)) if bits else 0.0,
        "intra_bits": float(np.mean(intra_bits)) if intra_bits else 0.0,
        "error_px": float(np.mean(errors)),
        "error_px_p95": float(np.percentile(errors, 95)),
        "frames": len(errors),
    }


def main() -> None:
    parser = common.parser(__doc__, frames=None)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--refresh-frames", type=int, default=25)
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 12, 16, 20, 24, 32])
    parser.add_argument("--steps", type=float, nargs="+", default=[0.25, 0.35, 0.5, 0.7, 1.0, 1.4])
    args = parser.parse_args()
    tracks = load_tracks(common.clips(args.data), fps=args.fps)
    full = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V1)
    rows = []
    grid = [(dims, step) for dims in args.dims for step in [None, *args.steps]]
    for dims, step in tqdm(grid, desc="operating points"):
        result = measure(full.truncated(dims), tracks, step, args.refresh_frames)
        rows.append({"expression_dims": dims, "step_px": step} | result)
    columns = ("dims", 4), ("step", 5), ("bits/frame", 10), ("kbit/s", 7), ("intra", 6)
    print(" ".join(f"{name:>{width}}" for name, width in columns), f"{'err px':>7} {'p95':>6}")
    for row in rows:
        step = "basis" if row["step_px"] is None else f"{row['step_px']:.2f}"
        kbps = row["bits_per_frame"] * args.fps / 1000
        print(
            f"{row['expression_dims']:>4} {step:>5} {row['bits_per_frame']:>10.1f} {kbps:>7.2f} "
            f"{row['intra_bits']:>6.0f} {row['error_px']:>7.3f} {row['error_px_p95']:>6.3f}"
        )
    report = {
        "data": str(args.data),
        "clips": [track.clip for track in tracks],
        "fps": args.fps,
        "refresh_frames": args.refresh_frames,
        "rows": rows,
    }
    common.write_results("keypoints", report)
    plot(rows, common.RESULTS / "keypoints.png")


def plot(rows: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for dims in sorted({row["expression_dims"] for row in rows}):
        coded = [r for r in rows if r["expression_dims"] == dims and r["step_px"] is not None]
        axes.plot(
            [r["bits_per_frame"] for r in coded],
            [r["error_px"] for r in coded],
            "o-",
            label=f"{dims} expression dims",
        )
    axes.axvline(80, color="grey", linestyle="--", label="target 80 bits/frame")
    axes.axhline(1.0, color="grey", linestyle=":", label="target 1 px")
    axes.set_xlabel("keypoint payload, bits/frame (byte-exact, refreshes included)")
    axes.set_ylabel("landmark error, px at 256x256")
    axes.set_title("Keypoint coder on dev clips, 25 fps")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
