"""The interface every renderer (the receiver's frame synthesiser) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from talkcodec.keypoints.landmarks import Landmarks


class Renderer(ABC):
    """Re-synthesises each frame from the decoded keyframe and that frame's landmarks.

    One renderer per stream: it caches whatever depends only on the reference.
    """

    name: ClassVar[str]

    @abstractmethod
    def set_reference(self, image: np.ndarray, landmarks: Landmarks) -> None:
        """Take a new reference: the decoded keyframe ((H, W, 3) uint8 RGB) and its decoded
        landmarks, in pixels of that image."""

    @abstractmethod
    def render(self, landmarks: Landmarks) -> np.ndarray:
        """The (H, W, 3) uint8 RGB frame whose landmarks are `landmarks` (pixels of the
        reference image). Raises RuntimeError before the first set_reference."""
