"""Rate/error curve of the keypoint coder over basis size, quantisation step and RDO lambda.

    python benchmarks/keypoints.py [--data ../shared/data/dev] [--fps 25] [--dims 16 24 32 40]
        [--steps 0.25 0.3 0.35] [--rdo-lambdas 0 0.008] [--refresh-frames 25 50]
        [--coders v2 v3]

For every clip: the sender's front end (face crop, mediapipe landmarks at 256x256), then the
keypoint model and entropy coder exactly as the stream uses them. Rate is the payload bytes the
coder really emits (byte-exact, intra refreshes included; `--coders`: the V2 coder of streams
already written and the joint V3 coder, the default); error is the mean 2-D distance
between the detected landmarks and the decoded ones, in pixels at 256x256, over all frames and
per clip (each dev clip is another person: the mean and worst of the clips). Writes
benchmarks/results/keypoints.json and keypoints.png; the plot shows the curve of the previous
coder (kept in the JSON as `previous_coder`) beside the new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from talkcodec.bitstream import KeypointModelId
from talkcodec.config import EncoderConfig
from talkcodec.entropy.keypoints import RDO_LAMBDA_PX2, KeypointDecoder, KeypointEncoder
from talkcodec.keypoints.dataset import LandmarkTrack, load_tracks
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.model import KeypointModel, landmark_error_px
from talkcodec.keypoints.registry import load_keypoint_model

import common

CODERS = {"v2": KeypointModelId.MEDIAPIPE_478_V2, "v3": KeypointModelId.MEDIAPIPE_478_V3}


def measure_track(
    model: KeypointModel,
    track: LandmarkTrack,
    step_px: float | None,
    refresh: int,
    rdo_lambda_px2: float,
) -> tuple[list[int], list[int], list[float], float]:
    """Payload bits of every frame, of the intra frames, landmark errors, and the shoulders'
    RMS error in px at 256 of one track (step_px=None: the basis alone, nothing coded)."""
    bits, intra_bits, errors, shoulder_errors = [], [], [], []
    encoder = decoder = None
    if step_px is not None:
        encoder = KeypointEncoder(model, step_px, refresh, rdo_lambda_px2)
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
        shoulder_errors.append(np.mean((decoded.shoulders - shoulders) ** 2))
    shoulder_rms = float(np.sqrt(np.mean(shoulder_errors)) * 256 / track.size)
    return bits, intra_bits, errors, shoulder_rms


def measure(
    model: KeypointModel,
    tracks: list[LandmarkTrack],
    step_px: float | None,
    refresh: int,
    rdo_lambda_px2: float = RDO_LAMBDA_PX2,
) -> dict[str, float]:
    """Mean payload bits per frame and landmark error over all frames of all tracks, and the
    mean and worst of the per-clip (per-person) means.

    step_px=None measures the basis alone (no quantisation, no coding).
    """
    bits, errors, intra_bits, clip_bits, clip_errors, shoulder_rms = [], [], [], [], [], []
    for track in tracks:
        track_bits, track_intra, track_errors, track_shoulders = measure_track(
            model, track, step_px, refresh, rdo_lambda_px2
        )
        bits += track_bits
        intra_bits += track_intra
        errors += track_errors
        if track_errors:
            clip_bits.append(float(np.mean(track_bits)) if track_bits else 0.0)
            clip_errors.append(float(np.mean(track_errors)))
            shoulder_rms.append(track_shoulders)
    return {
        "bits_per_frame": float(np.mean(bits)) if bits else 0.0,
        "intra_bits": float(np.mean(intra_bits)) if intra_bits else 0.0,
        "error_px": float(np.mean(errors)),
        "error_px_p95": float(np.percentile(errors, 95)),
        "person_mean_bits": float(np.mean(clip_bits)),
        "person_worst_bits": float(np.max(clip_bits)),
        "person_mean_error_px": float(np.mean(clip_errors)),
        "person_worst_error_px": float(np.max(clip_errors)),
        "shoulder_rms_px": float(np.mean(shoulder_rms)),
        "frames": len(errors),
        "clip_bits_per_frame": clip_bits,
        "clip_error_px": clip_errors,
    }


def main() -> None:
    parser = common.parser(__doc__, frames=None)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--refresh-frames", type=int, nargs="+", default=[25, 50])
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 24, 32, 40])
    parser.add_argument("--steps", type=float, nargs="+", default=[0.25, 0.3, 0.35])
    parser.add_argument("--rdo-lambdas", type=float, nargs="+", default=[0.0, RDO_LAMBDA_PX2])
    parser.add_argument("--coders", nargs="+", choices=sorted(CODERS), default=["v2", "v3"])
    args = parser.parse_args()
    tracks = load_tracks(common.clips(args.data), fps=args.fps)
    rows = []
    grid = [
        (coder, dims, step, rdo_lambda, refresh)
        for coder in args.coders
        for dims in args.dims
        for step in [None, *args.steps]
        for rdo_lambda in ([0.0] if step is None else args.rdo_lambdas)
        for refresh in ([0] if step is None else args.refresh_frames)
        if step is not None or coder == args.coders[0]  # the basis alone: once
    ]
    for coder, dims, step, rdo_lambda, refresh in tqdm(grid, desc="operating points"):
        full = load_keypoint_model(CODERS[coder])
        result = measure(full.truncated(dims), tracks, step, refresh, rdo_lambda)
        rows.append(
            {
                "coder": coder if step is not None else None,
                "expression_dims": dims,
                "step_px": step,
                "rdo_lambda_px2": rdo_lambda,
                "refresh_frames": refresh,
            }
            | result
        )
    print_rows(rows, args.fps)
    previous = common.RESULTS / "keypoints.json"
    report = {
        "data": str(args.data),
        "clips": [track.clip for track in tracks],
        "fps": args.fps,
        "rows": rows,
        "previous_coder": previous_coder_rows(previous),
    }
    common.write_results("keypoints", report)
    plot(rows, report["previous_coder"], common.RESULTS / "keypoints.png")


def previous_coder_rows(path: Path) -> list[dict]:
    """The rows of the coder before context tables and RDO (plain rounding, Laplace changes,
    refresh every 25 frames), as its run of this benchmark wrote them, kept for the plot."""
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    if "previous_coder" in report:
        return report["previous_coder"]
    return [row for row in report["rows"] if row["step_px"] is not None]


def print_rows(rows: list[dict], fps: float) -> None:
    columns = [("coder", 5), ("dims", 4), ("step", 5), ("lambda", 6), ("ref", 3)]
    columns += [("bits/frame", 10)]
    columns += [("kbit/s", 7), ("intra", 6), ("err px", 7), ("p95", 6), ("person", 6)]
    columns += [("worst", 6), ("w.bits", 6), ("sh.px", 6)]
    print(" ".join(f"{name:>{width}}" for name, width in columns))
    for row in rows:
        step = "basis" if row["step_px"] is None else f"{row['step_px']:.2f}"
        kbps = row["bits_per_frame"] * fps / 1000
        print(
            f"{row['coder'] or '-':>5} {row['expression_dims']:>4} {step:>5} "
            f"{row['rdo_lambda_px2']:>6.4f} "
            f"{row['refresh_frames']:>3} {row['bits_per_frame']:>10.1f} {kbps:>7.2f} "
            f"{row['intra_bits']:>6.0f} {row['error_px']:>7.3f} {row['error_px_p95']:>6.3f} "
            f"{row['person_mean_error_px']:>6.3f} {row['person_worst_error_px']:>6.3f} "
            f"{row['person_worst_bits']:>6.1f} {row['shoulder_rms_px']:>6.2f}"
        )


def plot(rows: list[dict], previous: list[dict], path: Path) -> None:
    """Error over bits. Left, every curve: a colour per basis size; the V3 coder solid, V2
    dashed, plain rounding dotted; a marker per refresh interval; the coder before the tables
    in grey. Right, the rate-distortion optimised curves near the targets, V3's operating
    point starred for both coders."""
    figure, (whole, near) = plt.subplots(1, 2, figsize=(13, 5.2))
    curves: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["step_px"] is not None:
            key = (
                row["coder"],
                row["expression_dims"],
                row["rdo_lambda_px2"],
                row["refresh_frames"],
            )
            curves.setdefault(key, []).append(row)
    all_dims = sorted({dims for _, dims, _, _ in curves})
    refreshes = sorted({refresh for *_, refresh in curves})
    for (coder, dims, rdo_lambda, refresh), coded in sorted(curves.items()):
        style = {
            "color": f"C{all_dims.index(dims)}",
            "linestyle": ":" if rdo_lambda == 0 else "-" if coder == "v3" else "--",
            "marker": "os^D"[refreshes.index(refresh) % 4],
            "markersize": 4,
            "label": f"{coder}, {dims} dims, lambda {rdo_lambda:g}, refresh {refresh}",
        }
        bits = [r["bits_per_frame"] for r in coded]
        errors = [r["error_px"] for r in coded]
        whole.plot(bits, errors, **style)
        if rdo_lambda > 0:
            near.plot(bits, errors, **style)
    for dims in sorted({row["expression_dims"] for row in previous}):
        old = [r for r in previous if r["expression_dims"] == dims]
        whole.plot(
            [r["bits_per_frame"] for r in old],
            [r["error_px"] for r in old],
            "x:",
            color="grey",
            alpha=0.3 + 0.7 * (dims == 32),
            label="previous coder (32 dims dark), refresh 25" if dims == 32 else None,
        )
    # The default operating point (V3, RDO lambda 0.009, an intra refresh every 4 s).
    default = EncoderConfig()
    refresh = default.refresh_interval_frames
    for row in rows:
        if (
            row["expression_dims"] == default.expression_dims
            and row["step_px"] == default.keypoint_step_px
            and row["rdo_lambda_px2"] == RDO_LAMBDA_PX2
            and row["refresh_frames"] == refresh
        ):
            near.plot(row["bits_per_frame"], row["error_px"], "*", color="black", markersize=12)
            near.annotate(
                f"{row['coder']} at V3's operating point: {row['bits_per_frame']:.1f} bits, "
                f"{row['error_px']:.3f} px",
                (row["bits_per_frame"], row["error_px"]),
                textcoords="offset points",
                xytext=(8, -12 if row["coder"] == "v3" else 6),
                fontsize=7,
            )
    for axes in (whole, near):
        axes.axvline(32, color="grey", linestyle="--", linewidth=0.8, label="target 32 bits/frame")
        axes.axhline(0.6, color="grey", linestyle=":", linewidth=0.8, label="target 0.6 px")
        axes.set_xlabel("keypoint payload, bits/frame (byte-exact, refreshes included)")
        axes.set_ylabel("landmark error, px at 256x256")
        axes.grid(alpha=0.3)
    whole.set_xlim(15, 90)
    whole.set_ylim(0.35, 1.2)
    whole.set_title("Keypoint coder on dev clips, 25 fps (steps as in the JSON)")
    whole.legend(fontsize=5.5, ncol=2)
    near.set_title("Near the targets: rate-distortion optimised only")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
