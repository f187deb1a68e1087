"""Count the keypoint coder's context tables on the training clips and store them in the
shipped keypoint models.

    python -m talkcodec.entropy.fit_contexts --data ../shared/data/train --weights weights

Runs the keypoint encoder (rate-distortion optimised quantiser included) over every training
clip at one operating point and counts, for every predicted frame and parameter, the coded
symbol by parameter group and context (talkcodec.entropy.keypoints). The quantiser's choices
depend on the table, so the count is repeated from a Laplace-shaped seed a few times. The table
is written as `residual_counts` into each keypoint model file, whose other tensors stay as they
are. Run it after `python -m talkcodec.keypoints.fit_basis`, which writes the files afresh.
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

from talkcodec.entropy.keypoints import (
    CONTEXT_THRESHOLDS,
    ESCAPE,
    NUM_CONTEXTS,
    NUM_GROUPS,
    NUM_SYMBOLS,
    RDO_LAMBDA_PX2,
    RESIDUAL_LIMIT,
    KeypointEncoder,
    parameter_groups,
    residual_symbols,
)
from talkcodec.keypoints.dataset import LandmarkTrack, list_clips, load_tracks
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.model import REFERENCE_SIZE_PX, KeypointModel
from talkcodec.keypoints.registry import KEYPOINT_MODEL_FILES, MODEL_MESH_POINTS

logger = logging.getLogger(__name__)


def seed_counts(total: float = 1000.0) -> np.ndarray:
    """(G, C, S) counts of a Laplace whose scale is each context's middle, for the first pass."""
    edges = np.r_[CONTEXT_THRESHOLDS[0] / 1.4, CONTEXT_THRESHOLDS, CONTEXT_THRESHOLDS[-1] * 1.4]
    middles = np.sqrt(edges[:-1] * edges[1:])  # (C,)
    changes = np.arange(-RESIDUAL_LIMIT, RESIDUAL_LIMIT + 1)
    upper = np.abs(changes) + 0.5
    lower = np.maximum(np.abs(changes) - 0.5, 0)
    inside = np.exp(-lower / middles[:, None]) - np.exp(-upper / middles[:, None])
    inside = np.where(changes == 0, inside, inside / 2)
    tail = np.exp(-(RESIDUAL_LIMIT + 0.5) / middles)
    table = np.concatenate([inside, tail[:, None]], axis=1)
    counts = np.rint(total * table).astype(np.int64)
    return np.broadcast_to(counts, (NUM_GROUPS, NUM_CONTEXTS, NUM_SYMBOLS)).copy()


def count_symbols(
    model: KeypointModel,
    params_per_clip: list[np.ndarray],
    step_px: float,
    refresh_interval_frames: int,
    rdo_lambda_px2: float,
) -> np.ndarray:
    """(G, C, S) int64 counts of the symbols the encoder codes in predicted frames."""
    counts = np.zeros((NUM_GROUPS, NUM_CONTEXTS, NUM_SYMBOLS), dtype=np.int64)
    groups = parameter_groups(model.num_params)
    for params in params_per_clip:
        encoder = KeypointEncoder(model, step_px, refresh_interval_frames, rdo_lambda_px2)
        state = encoder._state  # noqa: SLF001 (the fitter looks into the coder it fits)
        for frame in params:
            if np.isnan(frame[0]):
                continue
            previous, contexts = state.previous, state.contexts()
            indices = encoder.quantise(frame)
            if not encoder.encode_indices(indices).intra:
                assert previous is not None
                np.add.at(counts, (groups, contexts, residual_symbols(indices - previous)), 1)
    return counts


def fit_counts(
    model: KeypointModel,
    tracks: list[LandmarkTrack],
    point_indices: np.ndarray | None,
    step_px: float,
    refresh_interval_frames: int,
    rdo_lambda_px2: float,
    passes: int = 3,
) -> np.ndarray:
    """The model's residual_counts, counted `passes` times, each with the table before."""
    params_per_clip = []
    for track in tqdm(tracks, desc="fit", unit="clip"):
        params = np.full((len(track.face), model.num_params), np.nan)
        for index in np.flatnonzero(track.found):
            face = track.face[index] if point_indices is None else track.face[index][point_indices]
            landmarks = Landmarks(face, track.shoulders[index])
            params[index] = model.fit(landmarks, track.size)
        params_per_clip.append(params)
    counts = seed_counts()
    for index in range(passes):
        with_counts = dataclasses.replace(model, residual_counts=counts)
        counts = count_symbols(
            with_counts, params_per_clip, step_px, refresh_interval_frames, rdo_lambda_px2
        )
        escaped = counts[..., ESCAPE].sum() / max(counts.sum(), 1)
        logger.info("pass %d: %d symbols, %.4f escaped", index + 1, counts.sum(), escaped)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--weights", type=Path, default=Path("weights"))
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--step-px", type=float, default=0.3)
    parser.add_argument("--expression-dims", type=int, default=32)
    parser.add_argument("--refresh-frames", type=int, default=50)
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
        counts = fit_counts(
            model.truncated(args.expression_dims),
            tracks,
            indices,
            args.step_px,
            args.refresh_frames,
            args.rdo_lambda,
        )
        metadata["residual_counts_command"] = "python -m talkcodec.entropy.fit_contexts " + (
            " ".join(argv)
        )
        metadata.pop("model_id", None)  # save() writes it
        dataclasses.replace(model, residual_counts=counts).save(path, metadata)
        print(f"wrote {path}: residual_counts {counts.shape}, {counts.sum()} symbols")


if __name__ == "__main__":
    main()
