"""face-alignment (FAN, Bulat & Tzimiropoulos 2017): 68 3D points, an optional backend.

face-alignment downloads its weights on first use, which cannot work offline. This backend only
reads them from the torch hub cache and names the files that are missing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from talkcodec.keypoints.base import DetectorUnavailable, LandmarkDetector, shoulders_from_face
from talkcodec.keypoints.landmarks import Landmarks

logger = logging.getLogger(__name__)


def _hub_checkpoint_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _required_weight_files(face_alignment: Any) -> list[str]:
    """File names face-alignment would download for 3D landmarks with the SFD detector."""
    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    version = getattr(face_alignment, "__version__", "")
    model_version = ".".join(version.split(".")[:2]) if version else ""
    urls_by_version = getattr(api, "models_urls", {})
    urls = urls_by_version.get(model_version) or getattr(api, "default_model_urls", None)
    if not urls or "3DFAN-4" not in urls:
        urls = urls_by_version if "3DFAN-4" in urls_by_version else {}
    detector_urls = getattr(sfd_detector, "models_urls", {})
    wanted = [urls.get("3DFAN-4"), urls.get("depth"), detector_urls.get("s3fd")]
    return [os.path.basename(urlparse(url).path) for url in wanted if url]


class FanDetector(LandmarkDetector):
    """68 3D landmarks per frame from face-alignment, running on the CPU with torch."""

    name = "face-alignment"
    num_face_points = 68

    def __init__(self, *, device: str = "cpu") -> None:
        try:
            import face_alignment
        except ImportError as error:
            raise DetectorUnavailable(
                "the face-alignment backend needs the package: pip install 'talkcodec[fan]'"
            ) from error
        checkpoint_dir = _hub_checkpoint_dir()
        required = _required_weight_files(face_alignment)
        missing = [name for name in required if not (checkpoint_dir / name).is_file()]
        if missing or not required:
            names = ", ".join(missing) if missing else "(could not read the file names)"
            raise DetectorUnavailable(
                f"face-alignment weights are missing from {checkpoint_dir}: {names}. "
                "Copy them there from a machine with internet access; "
                "talkcodec never downloads weights at run time."
            )
        self._model = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.THREE_D, device=device, flip_input=False
        )

    def detect(self, image: np.ndarray) -> Landmarks | None:
        found = self._model.get_landmarks_from_image(np.ascontiguousarray(image))
        if not found:
            return None
        face = np.asarray(found[0], dtype=np.float32)  # (68, 3); FAN's z grows towards the camera
        face[:, 2] = -face[:, 2]
        return Landmarks(face=face, shoulders=shoulders_from_face(face))
