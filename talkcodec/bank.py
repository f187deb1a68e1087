"""The reference bank: several decoded keyframes per stream, and the rule that picks one a frame.

The sender may send more than one keyframe ("reference"). The receiver keeps them in numbered
slots (the `reference_id` of a KEYFRAME packet) and, for every frame, renders from the slot
whose face is most like the current one: mouth opening and width, eye openings, head rotation,
position and size.
Sender and receiver apply the same rule to the same decoded landmarks, so the choice costs no
bits and the sender knows which reference each frame was rendered from.

Both sides must agree bit for bit, on different machines. The descriptor is therefore computed
in float64 and rounded to DESCRIPTOR_DECIMALS decimals (last-ulp differences between platforms'
BLAS or libm cannot change it, short of landing exactly on a rounding boundary), and distances
are summed in a fixed order from those rounded values with IEEE operations only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

import numpy as np

from talkcodec.bitstream import DEFAULT_BANK_SIZE, MAX_BANK_SIZE
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.registry import FAN68_FROM_MEDIAPIPE478

DESCRIPTOR_NAMES = (
    "mouth_open",  # inner-lip gap / eye span
    "mouth_width",  # mouth-corner distance / eye span
    "right_eye_open",  # lid gap of the person's right eye / eye span
    "left_eye_open",
    "yaw_rad",  # head turn, from the depth slope of the left-right axis
    "pitch_rad",  # head nod, from the depth slope of the eyes-to-nose axis
    "roll_rad",  # in-plane tilt of the left-right axis
    "centre_x",  # centre of the eyes and nose / image width
    "centre_y",  # centre of the eyes and nose / image height
    "log_size",  # log(eye span / image width)
)
# The change of each descriptor entry that counts as one unit of distance: roughly what the
# mesh warp can no longer fake. A mouth that opens by 6 % of the eye span shows teeth or a dark
# interior the reference lacks; an eye closing by 5 % of the eye span is a blink; 10 degrees of
# yaw or pitch reveal or hide a cheek or the underside of the chin. Mouth width and roll are
# warped well (a stretch and an in-plane rotation), so they weigh little. A head that moved by
# 1/16 of the image or grew by 10 % drags hair, neck and background the face mesh does not
# cover. (On dev with the mesh warp, adding these three entries took the bank from 21.8 to
# 22.2 dB PSNR, and from 21.9 to 23.4 dB on open-mouth frames, for about as many references.)
# Units: those of the entry (fraction of eye span, radians, fraction of the image, log ratio).
DESCRIPTOR_SCALES = (
    0.06,
    0.15,
    0.05,
    0.05,
    math.radians(10),
    math.radians(10),
    math.radians(25),
    1 / 16,
    1 / 16,
    0.1,
)
DESCRIPTOR_DECIMALS = 6
DESCRIPTOR_SIZE = len(DESCRIPTOR_NAMES)


@dataclass(frozen=True)
class FaceLayout:
    """Which points of a landmark layout the descriptor reads. Indices into Landmarks.face.

    Pairs are (upper, lower) lid or lip points; "right" is the person's right (image left).
    The rigid sets avoid the jaw and lips, which move with expression.
    """

    inner_lip_pairs: tuple[tuple[int, int], ...]
    mouth_corners: tuple[int, int]  # (right, left)
    right_eye_pairs: tuple[tuple[int, int], ...]
    left_eye_pairs: tuple[tuple[int, int], ...]
    eye_outer_corners: tuple[int, int]  # (right, left): the eye span that normalises sizes
    right_side: tuple[int, ...]
    left_side: tuple[int, ...]
    upper: tuple[int, ...]  # eye corners and nose bridge
    lower: tuple[int, ...]  # nose base

    def mapped(self, table: tuple[int, ...]) -> FaceLayout:
        """The same layout in another point numbering: index i becomes table[i]."""

        def remap(value: Any) -> Any:
            return table[value] if isinstance(value, int) else tuple(map(remap, value))

        return FaceLayout(**{item.name: remap(getattr(self, item.name)) for item in fields(self)})


# The 68-point iBUG layout of face-alignment: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
# outer lips 48-59, inner lips 60-67.
FAN68_LAYOUT = FaceLayout(
    inner_lip_pairs=((61, 67), (62, 66), (63, 65)),
    mouth_corners=(48, 54),
    right_eye_pairs=((37, 41), (38, 40)),
    left_eye_pairs=((43, 47), (44, 46)),
    eye_outer_corners=(36, 45),
    right_side=(36, 39, 0, 1),
    left_side=(45, 42, 16, 15),
    upper=(36, 39, 42, 45, 27),
    lower=(31, 32, 33, 34, 35),
)

# Layouts by number of face points. The mediapipe mesh reads the vertices nearest to the 68
# points, so both detectors describe a face the same way.
FACE_LAYOUTS: dict[int, FaceLayout] = {
    68: FAN68_LAYOUT,
    478: FAN68_LAYOUT.mapped(FAN68_FROM_MEDIAPIPE478),
}


def _mean_gap(points: np.ndarray, pairs: tuple[tuple[int, int], ...]) -> float:
    upper, lower = np.array(pairs).T
    return float(np.linalg.norm(points[upper] - points[lower], axis=1).mean())


def describe(landmarks: Landmarks, image_size: tuple[int, int]) -> np.ndarray:
    """(DESCRIPTOR_SIZE,) float64 descriptor of a face, rounded to DESCRIPTOR_DECIMALS.

    landmarks: in pixels of an image of `image_size` (width, height). Entries as
    DESCRIPTOR_NAMES. Mouth and eye sizes are 3-D distances divided by the 3-D eye span, so
    they do not change with head size or turn. The pose angles are proxies read off the landmarks
    themselves (no template): each carries a per-person offset that cancels when two frames of
    one stream are compared, which is all the bank does. With z all equal (2-D landmarks) yaw
    and pitch are 0. A layout the bank does not know (another number of points) or a collapsed
    face gives all zeros: every frame then looks alike and the bank keeps to slot 0.
    """
    layout = FACE_LAYOUTS.get(landmarks.num_face_points)
    points = landmarks.face.astype(np.float64)  # (N, 3)
    if layout is None:
        return np.zeros(DESCRIPTOR_SIZE)
    right_corner, left_corner = layout.eye_outer_corners
    span = float(np.linalg.norm(points[left_corner] - points[right_corner]))
    across = points[list(layout.left_side)].mean(0) - points[list(layout.right_side)].mean(0)
    up = points[list(layout.upper)].mean(0) - points[list(layout.lower)].mean(0)
    across_norm = float(np.linalg.norm(across))
    if span < 1e-6 or across_norm < 1e-6:
        return np.zeros(DESCRIPTOR_SIZE)
    across /= across_norm
    up -= (up @ across) * across  # orthogonal to the left-right axis
    up /= max(float(np.linalg.norm(up)), 1e-12)
    mouth_right, mouth_left = layout.mouth_corners
    width, height = image_size
    centre = points[list(layout.upper + layout.lower), :2].mean(0)
    descriptor = np.array(
        [
            _mean_gap(points, layout.inner_lip_pairs) / span,
            float(np.linalg.norm(points[mouth_left] - points[mouth_right])) / span,
            _mean_gap(points, layout.right_eye_pairs) / span,
            _mean_gap(points, layout.left_eye_pairs) / span,
            math.atan2(across[2], math.hypot(across[0], across[1])),
            math.atan2(up[2], math.hypot(up[0], up[1])),
            math.atan2(across[1], across[0]),
            centre[0] / width,
            centre[1] / height,
            math.log(span / width),
        ]
    )
    return np.round(descriptor, DESCRIPTOR_DECIMALS)


def descriptor_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Weighted Euclidean distance between two descriptors (units: see DESCRIPTOR_SCALES).

    Summed term by term in a fixed order with Python floats, so it is the same on every
    machine for the same (rounded) descriptors.
    """
    total = 0.0
    for a, b, scale in zip(first.tolist(), second.tolist(), DESCRIPTOR_SCALES, strict=True):
        difference = (a - b) / scale
        total += difference * difference
    return math.sqrt(total)


def select_reference(bank_descriptors: Mapping[int, np.ndarray], current: np.ndarray) -> int:
    """The slot whose descriptor is nearest to `current`; ties go to the lowest slot id."""
    if not bank_descriptors:
        raise ValueError("cannot select a reference from an empty bank")
    best_id, best_distance = -1, math.inf
    for reference_id in sorted(bank_descriptors):
        distance = descriptor_distance(bank_descriptors[reference_id], current)
        if distance < best_distance:
            best_id, best_distance = reference_id, distance
    return best_id


Item = TypeVar("Item")


class ReferenceBank(Generic[Item]):
    """Slots 0..size-1, each holding a reference's descriptor and whatever the owner caches.

    Storing slot 0 empties the bank first: slot 0 is a fresh start (stream start, crop moved),
    after which the other references no longer match the picture. Slots 1..size-1 are added or
    replaced one at a time.
    """

    def __init__(self, size: int = DEFAULT_BANK_SIZE) -> None:
        if not 1 <= size <= MAX_BANK_SIZE:
            raise ValueError(f"bank size must be in 1..{MAX_BANK_SIZE}, got {size}")
        self.size = size
        self._descriptors: dict[int, np.ndarray] = {}
        self._items: dict[int, Item] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, reference_id: object) -> bool:
        return reference_id in self._items

    @property
    def descriptors(self) -> Mapping[int, np.ndarray]:
        return self._descriptors

    def check_id(self, reference_id: int) -> None:
        if not 0 <= reference_id < self.size:
            raise ValueError(
                f"reference id must be in 0..{self.size - 1} (bank of {self.size}), "
                f"got {reference_id}"
            )

    def store(self, reference_id: int, descriptor: np.ndarray, item: Item) -> None:
        self.check_id(reference_id)
        if reference_id == 0:
            self.clear()
        self._descriptors[reference_id] = descriptor
        self._items[reference_id] = item

    def clear(self) -> None:
        self._descriptors.clear()
        self._items.clear()

    def item(self, reference_id: int) -> Item:
        return self._items[reference_id]

    def select(self, descriptor: np.ndarray) -> int:
        return select_reference(self._descriptors, descriptor)

    def nearest_distance(self, descriptor: np.ndarray) -> float:
        """Distance from `descriptor` to the nearest reference (inf for an empty bank)."""
        distances = (descriptor_distance(d, descriptor) for d in self._descriptors.values())
        return min(distances, default=math.inf)


class BankMirror:
    """The sender's copy of the receiver's bank: descriptors, and when each slot was last used.

    The sender feeds it the decoded landmarks the receiver will see, so `select` returns the
    slot the receiver renders from. When the bank is full a new reference replaces the slot
    least recently selected (storing counts as a use; ties go to the lowest id). Slot 0 is never
    replaced this way: reference id 0 means "start afresh" and would empty the receiver's bank.
    """

    def __init__(self, size: int = DEFAULT_BANK_SIZE) -> None:
        self.bank: ReferenceBank[None] = ReferenceBank(size)
        self._last_used: dict[int, int] = {}

    def store(self, reference_id: int, descriptor: np.ndarray, frame_index: int) -> None:
        if reference_id == 0:
            self._last_used.clear()
        self.bank.store(reference_id, descriptor, None)
        self._last_used[reference_id] = frame_index

    def select(self, descriptor: np.ndarray, frame_index: int) -> int:
        reference_id = self.bank.select(descriptor)
        self._last_used[reference_id] = frame_index
        return reference_id

    def slot_for_new_reference(self) -> int:
        """The lowest free slot above 0, else the least recently used one above 0."""
        if self.bank.size == 1:
            raise ValueError("a bank of 1 has no slot for an extra reference")
        for reference_id in range(1, self.bank.size):
            if reference_id not in self.bank:
                return reference_id
        return min(range(1, self.bank.size), key=lambda slot: (self._last_used[slot], slot))
