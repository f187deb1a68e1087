"""Fit the joint (V3) keypoint coder's tables on the training clips and store them in the
shipped keypoint models.

    python -m talkcodec.entropy.fit_contexts --data ../shared/data/train --weights weights

First the within-frame change predictor: the V2 coder (its shipped residual_counts, rate-
distortion optimised quantiser included) codes every training clip at one operating point, and
each parameter's index change is regressed (ridge) on the changes of the parameters before it,
clipped as the coder clips them; the weights are rounded to 1/PREDICTOR_UNIT. Then the V3
coder's table: it codes the clips and counts, for every predicted frame and parameter, the
coded symbol by table row (talkcodec.entropy.keypoints). The quantiser's choices depend on the
table, so the count is repeated from a Laplace-shaped seed a few times. Both are written into
each keypoint model file (`change_predictor`, `joint_counts`), whose other tensors stay as they
are: the V2 table (`residual_counts`) decodes streams already written, so it is never counted
again (it was counted by the V2 coder on the same 72 clips, at lambda 0.008 and a refresh every
50 frames). Run it after `python -m talkcodec.keypoints.fit_basis`,
which writes the files afresh.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from tqdm import tqdm

from talkcodec.bitstream import KeypointModelId
from talkcodec.entropy.keypoints import (
    CONTEXT_THRESHOLDS,
    ESCAPE_DOWN,
    ESCAPE_UP,
    JOINT_TABLE_SHAPE,
    PREDICTOR_UNIT,
    RDO_LAMBDA_PX2,
    RESIDUAL_LIMIT,
    KeypointEncoder,
)
from talkcodec.keypoints.dataset import LandmarkTrack, list_clips, load_tracks
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.model import (
    POSE_DIMS,
    REFERENCE_SIZE_PX,
    SHOULDER_DIMS,
    KeypointModel,
)
from talkcodec.keypoints.registry import KEYPOINT_MODEL_FILES, MODEL_MESH_POINTS

logger = logging.getLogger(__name__)


# The V2 id of the same model file, whose coder codes the clips the predictor is fitted on.
_V2_OF = {
    KeypointModelId.MEDIAPIPE_478_V3: KeypointModelId.MEDIAPIPE_478_V2,
    KeypointModelId.FAN_68_V3: KeypointModelId.FAN_68_V2,
}
_RIDGE = 50.0  # regularisation of the predictor's regression, in squared index steps


def seed_counts(total: float = 1000.0) -> np.ndarray:
    """JOINT_TABLE_SHAPE counts of a Laplace whose scale is each scale context's middle (its
    escapes split evenly down and up), for the first pass."""
    edges = np.r_[CONTEXT_THRESHOLDS[0] / 1.4, CONTEXT_THRESHOLDS, CONTEXT_THRESHOLDS[-1] * 1.4]
    middles = np.sqrt(edges[:-1] * edges[1:])  # (C,)
    changes = np.arange(-RESIDUAL_LIMIT, RESIDUAL_LIMIT + 1)
    upper = np.abs(changes) + 0.5
    lower = np.maximum(np.abs(changes) - 0.5, 0)
    inside = np.exp(-lower / middles[:, None]) - np.exp(-upper / middles[:, None])
    inside = np.where(changes == 0, inside, inside / 2)
    tail = np.exp(-(RESIDUAL_LIMIT + 0.5) / middles)
    table = np.concatenate([inside, tail[:, None] / 2, tail[:, None] / 2], axis=1)
    counts = np.rint(total * table).astype(np.int64)  # (C, S)
    counts = counts[None, :, None, None, None, :]
    return np.broadcast_to(counts, JOINT_TABLE_SHAPE).copy()


def coded_frames(
    model: KeypointModel,
    params_per_clip: list[np.ndarray],
    step_px: float,
    refresh_interval_frames: int,
    rdo_lambda_px2: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the model's coder codes in the predicted frames of every clip: (F, P) table rows,
    (F, P) symbols and (F, P) index changes."""
    rows, symbols, changes = [], [], []
    for params in params_per_clip:
        encoder = KeypointEncoder(model, step_px, refresh_interval_frames, rdo_lambda_px2)
        state = encoder._state  # noqa: SLF001 (the fitter looks into the coder it fits)
        for frame in params:
            if np.isnan(frame[0]):
                continue
            indices = encoder.quantise(frame)
            if state.previous is not None and not encoder.will_code_intra():
                change = indices.astype(np.int64) - state.previous
                frame_rows, frame_symbols = state.cells(change)
                rows.append(frame_rows)
                symbols.append(frame_symbols)
                changes.append(change)
            encoder.encode_indices(indices)
    return np.array(rows), np.array(symbols), np.array(changes)


def fit_predictor(changes: np.ndarray) -> np.ndarray:
    """(P, P) int64 strictly lower triangular change predictor, in 1/PREDICTOR_UNIT: each
    parameter's change regressed on those before it (clipped as the coder clips them)."""
    clipped = np.clip(changes, -RESIDUAL_LIMIT - 1, RESIDUAL_LIMIT + 1).astype(np.float64)
    count = clipped.shape[1]
    weights = np.zeros((count, count))
    for k in range(1, count):
        earlier = clipped[:, :k]
        gram = earlier.T @ earlier + _RIDGE * np.eye(k)
        weights[k, :k] = np.linalg.solve(gram, earlier.T @ clipped[:, k])
    return np.tril(np.rint(weights * PREDICTOR_UNIT).astype(np.int64), -1)


def clip_params(
    model: KeypointModel, tracks: list[LandmarkTrack], point_indices: np.ndarray | None
) -> list[np.ndarray]:
    """(F, P) fitted parameters of every clip's frames (NaN where no face was found)."""
    params_per_clip = []
    for track in tqdm(tracks, desc="fit", unit="clip"):
        params = np.full((len(track.face), model.num_params), np.nan)
        for index in np.flatnonzero(track.found):
            face = track.face[index] if point_indices is None else track.face[index][point_indices]
            landmarks = Landmarks(face, track.shoulders[index])
            params[index] = model.fit(landmarks, track.size)
        params_per_clip.append(params)
    return params_per_clip


def fit_joint(
    model: KeypointModel,
    params_per_clip: list[np.ndarray],
    step_px: float,
    refresh_interval_frames: int,
    rdo_lambda_px2: float,
    passes: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """The (V3) model's change_predictor and joint_counts: the predictor fitted on what the V2
    coder codes, then the table counted `passes` times, each with the table before."""
    settings = (step_px, refresh_interval_frames, rdo_lambda_px2)
    v2 = dataclasses.replace(model, model_id=_V2_OF[model.model_id])
    predictor = fit_predictor(coded_frames(v2, params_per_clip, *settings)[2])
    counts = seed_counts()
    for index in range(passes):
        with_counts = dataclasses.replace(model, joint_counts=counts, change_predictor=predictor)
        rows, symbols, _ = coded_frames(with_counts, params_per_clip, *settings)
        flat = np.zeros(int(np.prod(JOINT_TABLE_SHAPE)), dtype=np.int64)
        np.add.at(flat, rows.ravel() * JOINT_TABLE_SHAPE[-1] + symbols.ravel(), 1)
        counts = flat.reshape(JOINT_TABLE_SHAPE)
        escaped = counts[..., [ESCAPE_DOWN, ESCAPE_UP]].sum() / max(counts.sum(), 1)
        logger.info("pass %d: %d symbols, %.4f escaped", index + 1, counts.sum(), escaped)
    return predictor, counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--weights", type=Path, default=Path("weights"))
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--step-px", type=float, default=0.3)
    parser.add_argument("--expression-dims", type=int, default=32)
    parser.add_argument("--refresh-frames", type=int, default=100)
    parser.add_argument("--rdo-lambda", type=float, default=RDO_LAMBDA_PX2)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tracks = load_tracks(list_clips(args.data), fps=args.fps, size=REFERENCE_SIZE_PX)
    for model_id, points in MODEL_MESH_POINTS.items():
        indices = None if points is None else np.asarray(points)
        path = args.weights / KEYPOINT_MODEL_FILES[model_id]
        model = KeypointModel.load(path, model_id)
        with safe_open(str(path), "np") as stored:
            metadata = dict(stored.metadata() or {})
        truncated = model.truncated(args.expression_dims)
        predictor, counts = fit_joint(
            truncated,
            clip_params(truncated, tracks, indices),
            args.step_px,
            args.refresh_frames,
            args.rdo_lambda,
        )
        # The predictor of the coded parameters inside the full model's: the directions
        # beyond expression_dims are predicted from nothing and predict nothing.
        keep = np.r_[
            np.arange(POSE_DIMS + args.expression_dims),
            np.arange(model.num_params - SHOULDER_DIMS, model.num_params),
        ]
        full = np.zeros((model.num_params, model.num_params), dtype=np.int64)
        full[np.ix_(keep, keep)] = predictor
        metadata["joint_counts_command"] = "python -m talkcodec.entropy.fit_contexts " + (
            " ".join(argv)
        )
        metadata.pop("model_id", None)  # save() writes it
        fitted = dataclasses.replace(model, joint_counts=counts, change_predictor=full)
        fitted.save(path, metadata)
        print(f"wrote {path}: joint_counts {counts.shape}, {counts.sum()} symbols")


if __name__ == "__main__":
    main()
