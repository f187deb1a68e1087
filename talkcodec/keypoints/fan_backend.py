"""face-alignment (FAN, Bulat & Tzimiropoulos 2017): 68 3D points, an optional backend.

face-alignment downloads its weights on first use, which cannot work offline. This backend only
reads them from the torch hub cache and names the files that are missing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from talkcodec.keypoints.base import DetectorUnavailable, LandmarkDetector, shoulders_from_face
from talkcodec.keypoints.landmarks import Landmarks

logger = logging.getLogger(__name__)


def _hub_checkpoint_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _required_weight_files() -> list[str]:
    """File names face-alignment would download for 3D landmarks with the SFD detector.

    face-alignment picks its URL table by the torch version ("2.13" for 2.13.0), falling back to
    `default_model_urls`; releases before 1.3 had one flat table. This mirrors that choice.
    """
    import torch
    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    torch_version = torch.__version__.split("+")[0]
    parts = 2 if "dev" in torch_version else 1
    version_key = torch_version.rsplit(".", parts)[0]
    tables = getattr(api, "models_urls", {})
    if "3DFAN-4" in tables:
        urls = tables
    else:
        urls = tables.get(version_key) or getattr(api, "default_model_urls", {})
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
        required = _required_weight_files()
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
