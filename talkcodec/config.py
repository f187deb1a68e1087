"""Typed configuration of the sender and the receiver; CLI flags map 1:1 onto these fields."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class EncoderConfig:
    """What the sender does with each camera frame.

    The keypoint operating point (step and basis size) was chosen from
    `python benchmarks/keypoints.py`: see benchmarks/results/keypoints.json.
    """

    size_px: int = 256
    fps: float = 25.0
    crop: bool = True
    detector: str = "mediapipe"
    keyframe_codec: str = "webp"
    keyframe_quality: int | None = None
    keypoint_step_px: float = 0.3
    expression_dims: int = 32
    keypoint_refresh_interval_s: float = 1.0
    # A new keyframe every this many seconds of stream time (0: only when needed).
    keyframe_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if not 16 <= self.size_px <= 4096:
            raise ValueError(f"size_px must be in 16..4096, got {self.size_px}")
        if not 0 < self.fps <= 240:
            raise ValueError(f"fps must be in (0, 240], got {self.fps}")
        if not 0.001 <= self.keypoint_step_px <= 65.0:
            raise ValueError(f"keypoint_step_px must be in 0.001..65, got {self.keypoint_step_px}")
        if self.keypoint_refresh_interval_s < 0:
            raise ValueError("keypoint_refresh_interval_s must be >= 0")
        if self.keyframe_interval_s < 0:
            raise ValueError(f"keyframe_interval_s must be >= 0, got {self.keyframe_interval_s}")

    @property
    def refresh_interval_frames(self) -> int:
        return round(self.keypoint_refresh_interval_s * self.fps)


@dataclass(frozen=True)
class DecoderConfig:
    """How the receiver turns keyframes and keypoints back into frames."""

    renderer: str = "meshwarp"


def save_config(config: object, path: Path) -> None:
    """Write a resolved config as JSON beside a run's outputs."""
    path.write_text(json.dumps(asdict(config), indent=2) + "\n")  # type: ignore[call-overload]
