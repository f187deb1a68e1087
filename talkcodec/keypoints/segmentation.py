"""Person segmentation: which pixels of a frame are the person (a perception stage, like the
face keypoint detectors), for the keyframe codec's selective mode and the head warp."""

from __future__ import annotations

from typing import Any

import numpy as np


class PersonSegmenter:
    """mediapipe selfie segmentation: (H, W, 3) uint8 RGB -> (H, W) float32 person probability."""

    def __init__(self) -> None:
        self._model: Any = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._model is None:
            from mediapipe.python.solutions import selfie_segmentation

            self._model = selfie_segmentation.SelfieSegmentation(model_selection=0)
        result = self._model.process(np.ascontiguousarray(image))
        mask = result.segmentation_mask
        if mask is None:  # pragma: no cover - mediapipe returns a mask for every image
            return np.zeros(image.shape[:2], dtype=np.float32)
        return np.asarray(mask, dtype=np.float32)

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None
