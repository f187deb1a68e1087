"""The sender's per-frame front end: find the face, crop around it, landmarks in crop pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkcodec.keypoints.base import LandmarkDetector
from talkcodec.keypoints.crop import CropBox, FaceCropper, full_square
from talkcodec.keypoints.landmarks import Landmarks


@dataclass(frozen=True)
class FrontendFrame:
    """One processed camera frame.

    image: (size, size, 3) uint8 RGB crop. landmarks: in crop pixels, None when no face was
    found. box: where the crop lies in the camera frame. crop_moved: the crop changed since the
    previous frame (the receiver's keyframe no longer lines up).
    """

    image: np.ndarray
    landmarks: Landmarks | None
    box: CropBox
    crop_moved: bool


class FaceFrontend:
    """Detects on the full camera frame (the detector crops its own face region internally, so
    precision does not suffer), then cuts the smoothed square crop and maps the landmarks into it.
    With `crop=False` the input is taken to be a face crop already: its centred square is used.
    """

    def __init__(self, detector: LandmarkDetector, size: int, crop: bool = True) -> None:
        self.detector = detector
        self.size = size
        self._cropper = FaceCropper() if crop else None

    def hold_crop(self, hold: bool) -> None:
        """Keep the crop where it is (no re-framing, so no keyframe for it) while `hold`."""
        if self._cropper is not None:
            self._cropper.hold = hold

    def process(self, frame: np.ndarray) -> FrontendFrame:
        found = self.detector.detect(frame)
        height, width = frame.shape[:2]
        moved = False
        if self._cropper is None:
            box = full_square(width, height)
        else:
            box = self._cropper.update(found) or full_square(width, height)
            moved = self._cropper.moved
        landmarks = box.to_crop(found, self.size) if found is not None else None
        return FrontendFrame(box.extract(frame, self.size), landmarks, box, moved)
