"""Learn the keypoint model (mean shape, expression basis, coding statistics) from clips.

    python -m talkcodec.keypoints.fit_basis --data ../shared/data/train --out weights/

Writes keypoints-mediapipe478-v1.safetensors (the mediapipe face mesh) and
keypoints-fan68-v1.safetensors (the 68-point layout of face-alignment, learned from the same
tracks through the usual mapping of the 68 points onto face-mesh vertices).

The files it writes have no entropy-coder tables yet: count them next with
`python -m talkcodec.entropy.fit_contexts` (the keypoint coder refuses a model without them).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkcodec.bitstream import KeypointModelId
from talkcodec.keypoints.dataset import LandmarkTrack, list_clips, load_tracks
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.model import (
    POSE_DIMS,
    REFERENCE_SIZE_PX,
    KeypointModel,
    similarity_fit,
)
from talkcodec.keypoints.registry import KEYPOINT_MODEL_FILES, MODEL_MESH_POINTS

logger = logging.getLogger(__name__)

MAX_EXPRESSION_DIMS = 48


def normalise_shape(shape: np.ndarray) -> np.ndarray:
    """(N, 3) shape centred at the origin with unit RMS radius."""
    centred = shape - shape.mean(axis=0)
    return centred / np.sqrt((centred**2).sum(axis=1).mean())


def procrustes_mean(shapes: np.ndarray, iterations: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes analysis of (F, N, 3) shapes.

    Returns the mean shape (N, 3) and every shape mapped into its frame (F, N, 3).
    """
    mean = normalise_shape(shapes[0])
    aligned = shapes
    for _ in range(iterations):
        aligned = np.empty_like(shapes)
        for index, shape in enumerate(shapes):
            scale, rotation, shift = similarity_fit(mean, shape)
            aligned[index] = (shape - shift) @ rotation / scale
        new_mean = normalise_shape(aligned.mean(axis=0))
        # Keep the mean's orientation where it was so the iteration cannot drift.
        _, rotation, _ = similarity_fit(new_mean, mean)
        mean = new_mean @ rotation.T
    return mean, aligned


def expression_basis(aligned: np.ndarray, mean: np.ndarray, dims: int) -> np.ndarray:
    """(dims, N, 3) principal directions of the aligned shapes, each with sum of squares N."""
    residual = (aligned - mean).reshape(len(aligned), -1)
    _, _, vt = np.linalg.svd(residual - residual.mean(axis=0), full_matrices=False)
    num_points = mean.shape[0]
    return vt[:dims].reshape(dims, num_points, 3) * np.sqrt(num_points)


def coding_statistics(
    model: KeypointModel, tracks: list[tuple[np.ndarray, np.ndarray]]
) -> KeypointModel:
    """The model with parameter and frame-to-frame statistics measured on the tracks."""
    all_params, deltas, scales = [], [], []
    for faces, shoulders in tqdm(tracks, desc="statistics", unit="clip"):
        params = np.full((len(faces), model.num_params), np.nan)
        for index, (face, shoulder) in enumerate(zip(faces, shoulders, strict=True)):
            if not np.isnan(face[0, 0]):
                params[index] = model.fit(Landmarks(face, shoulder), REFERENCE_SIZE_PX)
        valid = ~np.isnan(params[:, 0])
        all_params.append(params[valid])
        both = valid[1:] & valid[:-1]
        deltas.append((params[1:] - params[:-1])[both])
        scales.append(np.exp(params[valid, 3]))
    stacked, stacked_deltas = np.concatenate(all_params), np.concatenate(deltas)
    return KeypointModel(
        model.model_id,
        model.mean_shape,
        model.basis,
        param_mean=stacked.mean(axis=0),
        param_std=stacked.std(axis=0) + 1e-6,
        delta_std=stacked_deltas.std(axis=0) + 1e-6,
        nominal_scale=float(np.median(np.concatenate(scales))),
    )


def fit_model(
    model_id: KeypointModelId,
    tracks: list[LandmarkTrack],
    point_indices: np.ndarray | None,
    max_shapes: int = 6000,
    seed: int = 0,
) -> KeypointModel:
    """Fit mean shape and basis on a random subset of frames, then statistics on all of them."""
    per_clip = []
    for track in tracks:
        faces = track.face * (REFERENCE_SIZE_PX / track.size)
        shoulders = track.shoulders * (REFERENCE_SIZE_PX / track.size)
        if point_indices is not None:
            faces = faces[:, point_indices]
        per_clip.append((faces, shoulders))
    shapes = np.concatenate([faces[~np.isnan(faces[:, 0, 0])] for faces, _ in per_clip])
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(shapes), size=min(max_shapes, len(shapes)), replace=False)
    logger.info("fitting on %d of %d frames", len(chosen), len(shapes))
    mean, aligned = procrustes_mean(shapes[chosen].astype(np.float64))
    basis = expression_basis(aligned, mean, MAX_EXPRESSION_DIMS)
    empty = np.zeros(POSE_DIMS + MAX_EXPRESSION_DIMS + 4)
    model = KeypointModel(model_id, mean, basis, empty, empty + 1, empty + 1, 1.0)
    return coding_statistics(model, per_clip)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--out", type=Path, default=Path("weights"))
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips = list_clips(args.data)
    tracks = load_tracks(clips, fps=args.fps, size=REFERENCE_SIZE_PX)
    args.out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "clips": ",".join(clip.name for clip in clips),
        "fps": str(args.fps),
        "seed": str(args.seed),
        "command": "python -m talkcodec.keypoints.fit_basis " + " ".join(argv),
    }
    for model_id, points in MODEL_MESH_POINTS.items():
        indices = None if points is None else np.asarray(points)
        model = fit_model(model_id, tracks, indices, seed=args.seed)
        path = args.out / KEYPOINT_MODEL_FILES[model_id]
        model.save(path, metadata)
        print(
            f"wrote {path}: {model.num_points} points, nominal scale {model.nominal_scale:.1f} px"
        )
    print("now count the keypoint coder's tables: python -m talkcodec.entropy.fit_contexts")


if __name__ == "__main__":
    main()
