"""The fixed test crop (talkcodec.keypoints.dataset), AKD bookkeeping and the frames round trip
(talkcodec.evaluation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talkcodec.bitstream import COMPACT_HEADER_BYTES
from talkcodec.config import EncoderConfig
from talkcodec.evaluation import keypoint_agreement, round_trip_frames
from talkcodec.keypoints.base import LandmarkDetector
from talkcodec.keypoints.dataset import fixed_face_box, load_reference_clip
from talkcodec.keypoints.landmarks import Landmarks


class ScriptedDetector(LandmarkDetector):
    """Returns face boxes from a script, one per call (None: no face)."""

    name = "scripted"
    num_face_points = 2

    def __init__(self, boxes: list[tuple[float, float, float, float] | None]) -> None:
        self._boxes = iter(boxes)

    def detect(self, image: np.ndarray) -> Landmarks | None:
        box = next(self._boxes)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        face = np.array([[x0, y0, 0.0], [x1, y1, 0.0]], dtype=np.float32)
        return Landmarks(face=face, shoulders=np.zeros((2, 2), dtype=np.float32))


def frames_of(width: int, height: int, count: int) -> list[np.ndarray]:
    return [np.zeros((height, width, 3), dtype=np.uint8)] * count


def test_fixed_box_is_the_median_talking_head_crop() -> None:
    # A 100 px face at (400..500, 300..400) in a 1280x720 frame, with one outlier and one miss.
    boxes = [(400, 300, 500, 400), (402, 300, 502, 400), None, (900, 100, 1000, 200)]
    box = fixed_face_box(frames_of(1280, 720, 4), ScriptedDetector(boxes))
    assert box is not None
    assert box.side == pytest.approx(190.0)  # crop_scale 1.9 x face side
    # Median of the centres 450, 452, 950; centre y sits 5% of the face height above the face.
    assert box.x0 + box.side / 2 == pytest.approx(452.0)
    assert box.y0 + box.side / 2 == pytest.approx(345.0)


def test_fixed_box_stays_inside_a_frame_that_is_a_face_crop_already() -> None:
    box = fixed_face_box(frames_of(256, 256, 2), ScriptedDetector([(60, 50, 200, 210)] * 2))
    assert box is not None
    assert box.side == 256
    assert (box.x0, box.y0) == (0.0, 0.0)


def test_fixed_box_without_any_face_is_none() -> None:
    assert fixed_face_box(frames_of(64, 64, 2), ScriptedDetector([None, None])) is None


def test_keypoint_agreement_counts_failures_only_where_the_reference_has_a_face() -> None:
    face = np.zeros((3, 3))
    shifted = face + [3.0, 4.0, 0.0]
    reference = [face, face, None, face]
    decoded = [face, shifted, face, None]
    akd, failure_rate = keypoint_agreement(reference, decoded)
    assert akd == pytest.approx(2.5)  # mean of 0 and 5
    assert failure_rate == pytest.approx(1 / 3)


@pytest.mark.data
def test_round_trip_frames_counts_every_byte(dev_clip: Path) -> None:
    reference = load_reference_clip(dev_clip, 256, max_frames=12)
    assert reference is not None
    assert reference.frames.shape == (12, 256, 256, 3)
    result = round_trip_frames(reference.frames, EncoderConfig(crop=False))
    assert result.decoded.shape == reference.frames.shape
    assert result.held_frames == 0
    # Compact packets: a 2-byte header each, and a 4-byte time only on the keyframe and the
    # intra keypoints of the first frame (the other frames' times are implied).
    headers = COMPACT_HEADER_BYTES * len(result.message_bytes) + 4 * 2
    assert sum(result.message_bytes) == result.payload_bytes.sum() + headers
    # One keyframe message, then one keypoint message per frame.
    assert len(result.message_bytes) == 13
    assert result.payload_bytes[0] > 10 * result.payload_bytes[1:].max()
    assert sum(result.payload_bytes_by_kind.values()) == result.payload_bytes.sum()
