"""The registry of landmark detector backends, selected by name (`--detector`)."""

from __future__ import annotations

from collections.abc import Callable

from talkcodec.keypoints.base import LandmarkDetector


def _mediapipe(**options: object) -> LandmarkDetector:
    from talkcodec.keypoints.mediapipe_backend import MediapipeDetector

    return MediapipeDetector(**options)  # type: ignore[arg-type]


def _face_alignment(**options: object) -> LandmarkDetector:
    from talkcodec.keypoints.fan_backend import FanDetector

    return FanDetector(**options)  # type: ignore[arg-type]


# Backends import lazily: face-alignment is optional and mediapipe is slow to import.
DETECTORS: dict[str, Callable[..., LandmarkDetector]] = {
    "mediapipe": _mediapipe,
    "face-alignment": _face_alignment,
}


def make_detector(name: str, **options: object) -> LandmarkDetector:
    """A new detector backend by name; raises ValueError naming the valid ones."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(
            f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}"
        ) from None
    return factory(**options)
