"""The keypoints of one frame, as a detector finds them and as the decoder rebuilds them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Landmarks:
    """Face and upper-body keypoints of one frame, in pixels of the image they belong to.

    face: (N, 3) float32 -- x and y in pixels, z in pixels on the same scale as x (larger z is
        farther from the camera; only differences in z mean anything). N = 478 for mediapipe
        face mesh with refined eyes and irises, 68 for face-alignment.
    shoulders: (2, 2) float32 -- x, y of the person's left and right shoulder, possibly outside
        the image.
    """

    face: np.ndarray
    shoulders: np.ndarray

    def __post_init__(self) -> None:
        if self.face.ndim != 2 or self.face.shape[1] != 3:
            raise ValueError(f"face landmarks must be (N, 3), got {self.face.shape}")
        if self.shoulders.shape != (2, 2):
            raise ValueError(f"shoulders must be (2, 2), got {self.shoulders.shape}")

    @property
    def num_face_points(self) -> int:
        return int(self.face.shape[0])

    def transformed(self, scale: float, offset_xy: tuple[float, float]) -> Landmarks:
        """Landmarks after the image was shifted by -offset_xy and then scaled by `scale`."""
        offset = np.asarray(offset_xy, dtype=np.float32)
        face = self.face.astype(np.float32).copy()
        face[:, :2] = (face[:, :2] - offset) * scale
        face[:, 2] *= scale
        shoulders = (self.shoulders.astype(np.float32) - offset) * scale
        return Landmarks(face=face, shoulders=shoulders)

    def face_box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) bounding box of the face points."""
        x0, y0 = self.face[:, :2].min(axis=0)
        x1, y1 = self.face[:, :2].max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)
