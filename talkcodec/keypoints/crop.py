"""Sender-side face crop: a square around the face that holds still unless the face wanders."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talkcodec.keypoints.landmarks import Landmarks


@dataclass(frozen=True)
class CropBox:
    """A square region of the camera frame: top-left corner and side, in frame pixels."""

    x0: float
    y0: float
    side: float

    def extract(self, frame: np.ndarray, size: int) -> np.ndarray:
        """The region resampled to (size, size, 3); parts outside the frame repeat its edge."""
        scale = size / self.side
        matrix = np.array(
            [[scale, 0.0, -self.x0 * scale], [0.0, scale, -self.y0 * scale]], dtype=np.float64
        )
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        return cv2.warpAffine(
            frame, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE
        )

    def to_crop(self, landmarks: Landmarks, size: int) -> Landmarks:
        """Landmarks moved from frame pixels into the pixels of `extract(frame, size)`."""
        return landmarks.transformed(size / self.side, (self.x0, self.y0))


def full_square(frame_width: int, frame_height: int) -> CropBox:
    """The largest centred square of a frame: the crop for input that is already a face crop."""
    side = min(frame_width, frame_height)
    return CropBox((frame_width - side) / 2, (frame_height - side) / 2, float(side))


def face_crop_target(landmarks: Landmarks, crop_scale: float = 1.9) -> CropBox:
    """The square a talking-head crop would use for these landmarks (VoxCeleb-like framing).

    The face mesh spans chin to upper forehead; the square is `crop_scale` times its larger side,
    centred a little above the mesh centre so hair and shoulders both show.
    """
    x0, y0, x1, y1 = landmarks.face_box()
    side = crop_scale * max(x1 - x0, y1 - y0)
    centre_x = (x0 + x1) / 2
    centre_y = (y0 + y1) / 2 - 0.05 * (y1 - y0)
    return CropBox(centre_x - side / 2, centre_y - side / 2, side)


class FaceCropper:
    """Keeps the crop still so it never jitters, and re-frames only when it must.

    The crop stays exactly where it is while the face stays inside a dead band around where it
    was framed; the receiver's warp follows the head within the crop. When the face moves more
    than `move_threshold` of the crop side or changes size by more than `resize_threshold`
    (log ratio), the crop jumps to the new framing in one step and `moved` is set for that frame:
    the receiver's keyframe no longer lines up, so the sender sends a new one. One jump costs one
    keyframe; a glide would cost one per frame.
    """

    def __init__(
        self,
        crop_scale: float = 1.9,
        move_threshold: float = 0.2,
        resize_threshold: float = 0.25,
    ) -> None:
        self.crop_scale = crop_scale
        self.move_threshold = move_threshold
        self.resize_threshold = resize_threshold
        self.box: CropBox | None = None
        self.moved = False
        # While set, the crop stays where it is however far the face goes (a sender whose
        # rate cap cannot pay for the keyframe a re-framing needs).
        self.hold = False

    def update(self, landmarks: Landmarks | None) -> CropBox | None:
        """The crop for this frame given its landmarks in frame pixels (None: face not found)."""
        self.moved = False
        if landmarks is None:
            return self.box
        target = face_crop_target(landmarks, self.crop_scale)
        if self.box is None:
            self.box = target
        elif not self.hold and self._far(self.box, target):
            self.box = target
            self.moved = True
        return self.box

    def _far(self, box: CropBox, target: CropBox) -> bool:
        shift = np.hypot(
            (target.x0 + target.side / 2) - (box.x0 + box.side / 2),
            (target.y0 + target.side / 2) - (box.y0 + box.side / 2),
        )
        resize = abs(np.log(target.side / box.side))
        return bool(shift > self.move_threshold * box.side or resize > self.resize_threshold)
