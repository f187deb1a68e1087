"""Shipped keypoint models by wire id, and where their weights live."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from talkcodec.bitstream import BitstreamError, KeypointModelId
from talkcodec.keypoints.model import KeypointModel

WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"

# The V2 and V3 models are the v1 bases (the same files), coded by the two keypoint coders of
# this build: V2 by parameter and context, V3 also in the context of the frame's earlier changes
# (talkcodec.entropy.keypoints; each file holds both coders' tables).
KEYPOINT_MODEL_FILES: dict[KeypointModelId, str] = {
    KeypointModelId.MEDIAPIPE_478_V2: "keypoints-mediapipe478-v1.safetensors",
    KeypointModelId.FAN_68_V2: "keypoints-fan68-v1.safetensors",
    KeypointModelId.MEDIAPIPE_478_V3: "keypoints-mediapipe478-v1.safetensors",
    KeypointModelId.FAN_68_V3: "keypoints-fan68-v1.safetensors",
}
# Ids whose keypoints an earlier coder wrote: named in the error, never decoded wrongly.
RETIRED_KEYPOINT_MODELS: dict[KeypointModelId, KeypointModelId] = {
    KeypointModelId.MEDIAPIPE_478_V1: KeypointModelId.MEDIAPIPE_478_V2,
    KeypointModelId.FAN_68_V1: KeypointModelId.FAN_68_V2,
}

# Which keypoint model codes the landmarks of each detector backend, by keypoint coder: V3 (the
# default: 31.1 bits/frame against V2's 34.8 at the same error on dev) or V2.
MODELS_FOR_CODER: dict[str, dict[str, KeypointModelId]] = {
    "v3": {
        "mediapipe": KeypointModelId.MEDIAPIPE_478_V3,
        "face-alignment": KeypointModelId.FAN_68_V3,
    },
    "v2": {
        "mediapipe": KeypointModelId.MEDIAPIPE_478_V2,
        "face-alignment": KeypointModelId.FAN_68_V2,
    },
}


def keypoint_model_id(detector: str, coder: str) -> KeypointModelId:
    """The wire id a sender writes for a detector backend and a keypoint coder ("v2", "v3")."""
    if coder not in KEYPOINT_CODERS:
        raise ValueError(
            f"keypoint coder must be one of {', '.join(KEYPOINT_CODERS)}, got {coder!r}"
        )
    return MODELS_FOR_CODER[coder][detector]


KEYPOINT_CODERS = tuple(MODELS_FOR_CODER)

# The face-mesh vertex nearest to each of the 68 points of the iBUG/face-alignment layout
# (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67).
FAN68_FROM_MEDIAPIPE478: tuple[int, ...] = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)  # fmt: skip


# The face-mesh vertices each shipped model file is fitted on (None: all 478), by the id of the
# current coder: what the scripts that fit a model's basis and its coding tables on train/
# (fit_basis, entropy.fit_contexts) take.
MODEL_MESH_POINTS: dict[KeypointModelId, tuple[int, ...] | None] = {
    KeypointModelId.MEDIAPIPE_478_V3: None,
    KeypointModelId.FAN_68_V3: FAN68_FROM_MEDIAPIPE478,
}


def weights_dir() -> Path:
    """Where shipped weights are read from: the repository's weights/ folder."""
    return WEIGHTS_DIR


@cache
def load_keypoint_model(model_id: int) -> KeypointModel:
    """The shipped model for a wire id; BitstreamError for an unknown or retired id."""
    try:
        known = KeypointModelId(model_id)
    except ValueError:
        raise BitstreamError(f"unknown keypoint model id {model_id}") from None
    if known in RETIRED_KEYPOINT_MODELS:
        raise BitstreamError(
            f"keypoint model {known.name} was coded by an earlier keypoint coder that this "
            f"build no longer has (it codes {RETIRED_KEYPOINT_MODELS[known].name}): "
            "re-encode the source"
        )
    path = weights_dir() / KEYPOINT_MODEL_FILES[known]
    if not path.is_file():
        raise FileNotFoundError(
            f"keypoint model {known.name} needs {path}; "
            "rebuild it with: python -m talkcodec.keypoints.fit_basis"
        )
    return KeypointModel.load(path, known)
