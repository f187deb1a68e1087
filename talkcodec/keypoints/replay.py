"""The encoder's replay mode: a "detector" that hands back given landmarks.

StreamEncoder(config, detector=ReplayDetector(track)) runs the sender's whole per-frame path --
crop, fit, quantise, reference bank, keyframes, entropy coding -- on landmarks that were
recorded or made up instead of detected: tests and benchmarks that need no face detector, and
training data built from landmark tracks, go through the very code a live sender runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import numpy as np

from talkcodec.keypoints.base import LandmarkDetector
from talkcodec.keypoints.landmarks import Landmarks


class ReplayDetector(LandmarkDetector):
    """Returns `landmarks` one per detect() call, in order (None: no face in that frame), in
    pixels of the frames it is given; after the last, None (or from the start with loop=True).
    The layout is mediapipe's 478 points, as the default keypoint model expects."""

    name = "replay"
    num_face_points: ClassVar[int] = 478

    def __init__(self, landmarks: Iterable[Landmarks | None], loop: bool = False) -> None:
        self._landmarks = list(landmarks)
        self._loop = loop
        self._index = 0

    def detect(self, image: np.ndarray) -> Landmarks | None:
        if not self._landmarks or (self._index >= len(self._landmarks) and not self._loop):
            return None
        found = self._landmarks[self._index % len(self._landmarks)]
        self._index += 1
        return found
