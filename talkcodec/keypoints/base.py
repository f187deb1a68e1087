"""The interface every landmark detector backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from talkcodec.keypoints.landmarks import Landmarks


class DetectorUnavailable(RuntimeError):
    """A backend cannot run here: a package or its weights are missing. Says what to install."""


class LandmarkDetector(ABC):
    """Finds one person's face and shoulder landmarks in video frames.

    Detectors may track across calls (video mode), so feed the frames of one stream in order and
    use one detector per stream.
    """

    name: ClassVar[str]
    num_face_points: ClassVar[int]

    @abstractmethod
    def detect(self, image: np.ndarray) -> Landmarks | None:
        """Landmarks in pixels of `image` ((H, W, 3) uint8 RGB), or None when no face is found."""

    def close(self) -> None:  # noqa: B027 (most backends hold nothing to release)
        """Release native resources; the detector is unusable afterwards."""

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shoulders_from_face(face: np.ndarray) -> np.ndarray:
    """A plausible shoulder position when no pose is available, from the face alone.

    face: (N, 3) landmarks in pixels. Returns (2, 2): the person's left shoulder (on the image's
    right) and right shoulder, about one face height below the chin and a face width outwards.
    """
    x0, y0 = face[:, :2].min(axis=0)
    x1, y1 = face[:, :2].max(axis=0)
    width, height = x1 - x0, y1 - y0
    centre_x = (x0 + x1) / 2
    shoulder_y = y1 + 0.9 * height
    return np.array(
        [[centre_x + 1.3 * width, shoulder_y], [centre_x - 1.3 * width, shoulder_y]],
        dtype=np.float32,
    )
