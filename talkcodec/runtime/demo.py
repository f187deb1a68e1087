"""The demo camera: a public-domain portrait animated by a shipped keypoint track.

The portrait is scikit-image's `astronaut` (Eileen Collins, a NASA photograph in the public
domain). The track (`weights/demo-track-v1.safetensors`, numbers only) holds a few seconds of
keypoint-model parameters -- head pose and expression coefficients -- fitted to one training
clip. The portrait's own parameters are fitted once; each frame then applies the track's pose
change and expression change since its first frame, and the mesh-warp renderer draws it.

Rebuild the track (deterministic for a given mediapipe build):

    python -m talkcodec.runtime.demo --clip ../shared/data/train/DPE__data_s.mp4 --seconds 6
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import load_file, save_file

from talkcodec.bitstream import KeypointModelId
from talkcodec.generator.meshwarp import MeshWarpRenderer
from talkcodec.keypoints.model import POSE_DIMS, SHOULDER_DIMS, KeypointModel
from talkcodec.keypoints.registry import load_keypoint_model, weights_dir

logger = logging.getLogger(__name__)

TRACK_FILE = "demo-track-v1.safetensors"
TRACK_CROP_PX = 256


class DemoUnavailable(RuntimeError):
    """The demo cannot run here (track missing, or no face found in the portrait)."""


def track_path() -> Path:
    return weights_dir() / TRACK_FILE


def load_track(path: Path | None = None) -> tuple[np.ndarray, float]:
    """(T, P) parameters of the full mediapipe model and their frame rate."""
    path = path or track_path()
    if not path.is_file():
        raise DemoUnavailable(f"demo track {path} is missing; rebuild it: python -m {__name__}")
    tensors = load_file(str(path))
    return tensors["params"].astype(np.float64), float(tensors["fps"][0])


def _compose_rotation(delta_vector: np.ndarray, base_vector: np.ndarray) -> np.ndarray:
    delta = cv2.Rodrigues(delta_vector.reshape(3, 1))[0]
    base = cv2.Rodrigues(base_vector.reshape(3, 1))[0]
    return cv2.Rodrigues(delta @ base)[0].ravel()


def retarget(model: KeypointModel, portrait: np.ndarray, track: np.ndarray) -> np.ndarray:
    """(T, P) parameters: the portrait (P,) moved as the track (T, P) moves from its frame 0.

    Rotation, log scale, shift and expression change by the track's change since frame 0
    (shifts scaled by the ratio of face sizes); the shoulders stay where the portrait has them.
    """
    first = track[0]
    first_rotation = cv2.Rodrigues(first[0:3].reshape(3, 1))[0]
    size_ratio = np.exp(portrait[3] - first[3])
    expression = slice(POSE_DIMS, model.num_params - SHOULDER_DIMS)
    frames = np.repeat(portrait[None], len(track), axis=0)
    for out, params in zip(frames, track, strict=True):
        rotation = cv2.Rodrigues(params[0:3].reshape(3, 1))[0]
        delta = cv2.Rodrigues(rotation @ first_rotation.T)[0].ravel()
        out[0:3] = _compose_rotation(delta, portrait[0:3])
        out[3] = portrait[3] + params[3] - first[3]
        out[4:6] = portrait[4:6] + (params[4:6] - first[4:6]) * size_ratio
        out[expression] = portrait[expression] + params[expression] - first[expression]
    return frames


# Face-mesh points of the inner lips (upper, lower) and of the face's top and chin.
_INNER_LIPS = (13, 14)
_FACE_TOP_CHIN = (10, 152)


@dataclass(frozen=True)
class DemoClip:
    """frames: (512, 512, 3) uint8 RGB, forwards then backwards (a looping demo never jumps).
    mouth_open: (F,) the inner lips' distance over the face's height in each frame, which the
    demo voice (talkcodec.audio.sources.DemoVoice) follows."""

    frames: list[np.ndarray]
    fps: float
    mouth_open: np.ndarray


def mouth_opening(face: np.ndarray) -> float:
    """Inner-lip distance over face height of (478, 3) face-mesh points."""
    lips = abs(face[_INNER_LIPS[1], 1] - face[_INNER_LIPS[0], 1])
    height = abs(face[_FACE_TOP_CHIN[1], 1] - face[_FACE_TOP_CHIN[0], 1])
    return float(lips / max(height, 1e-6))


def demo_frames(max_frames: int | None = None) -> tuple[list[np.ndarray], float]:
    """The animated portrait's frames and their frame rate (demo_clip without the mouth)."""
    clip = demo_clip(max_frames)
    return clip.frames, clip.fps


def demo_clip(max_frames: int | None = None) -> DemoClip:
    """The animated portrait, with how open its mouth is in each frame."""
    from skimage import data

    from talkcodec.keypoints.mediapipe_backend import MediapipeDetector

    track, fps = load_track()
    if max_frames is not None:
        track = track[:max_frames]
    portrait = np.ascontiguousarray(data.astronaut())
    with MediapipeDetector(static_images=True) as detector:
        landmarks = detector.detect(portrait)
    if landmarks is None:
        raise DemoUnavailable("no face found in the demo portrait")
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2)
    size = portrait.shape[0]
    portrait_params = model.fit(landmarks, size)
    renderer = MeshWarpRenderer()
    renderer.set_reference(portrait, model.reconstruct(portrait_params, size))
    meshes = [model.reconstruct(params, size) for params in retarget(model, portrait_params, track)]
    frames = [renderer.render(mesh) for mesh in meshes]
    mouth = np.array([mouth_opening(mesh.face) for mesh in meshes])
    return DemoClip(frames + frames[-2:0:-1], fps, np.concatenate([mouth, mouth[-2:0:-1]]))


def extract_track(clip: Path, seconds: float, fps: float = 25.0) -> np.ndarray:
    """(T, P) parameters of the full model for the first `seconds` of `clip`, as the sender
    crops and fits them. Frames without a face repeat the previous parameters."""
    from talkcodec.keypoints.crop import FaceCropper
    from talkcodec.keypoints.frontend import FaceFrontend
    from talkcodec.keypoints.mediapipe_backend import MediapipeDetector
    from talkcodec.video import read_frames

    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2)
    rows: list[np.ndarray] = []
    with MediapipeDetector() as detector:
        frontend = FaceFrontend(detector, TRACK_CROP_PX)
        frontend._cropper = FaceCropper(move_threshold=10.0, resize_threshold=10.0)  # hold still
        for _, frame in read_frames(clip, fps, max_frames=round(seconds * fps)):
            processed = frontend.process(frame)
            if processed.landmarks is not None:
                rows.append(model.fit(processed.landmarks, TRACK_CROP_PX))
            elif rows:
                rows.append(rows[-1])
    if not rows:
        raise DemoUnavailable(f"no face found in {clip}")
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description="Extract the demo keypoint track from a clip.")
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=track_path())
    args = parser.parse_args()
    params = extract_track(args.clip, args.seconds)
    save_file(
        {"params": params.astype(np.float32), "fps": np.array([25.0], dtype=np.float32)},
        str(args.out),
        metadata={
            "source_clip": args.clip.name,
            "seconds": f"{args.seconds:g}",
            "keypoint_model": KeypointModelId.MEDIAPIPE_478_V2.name,
            "layout": "rotation vector 3, log scale 1, shift 2 (px at 256), expression 48, "
            "shoulders 4 (px at 256)",
        },
    )
    print(f"wrote {args.out}: {params.shape[0]} frames x {params.shape[1]} parameters")


if __name__ == "__main__":
    main()
