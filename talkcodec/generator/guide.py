"""The refiner's guide channels: what the warp and the current landmarks say about each pixel.

    channel 0: log of the warp's local area change, clipped to [-2, 2]. The warp's sampling
        positions source_xy (H, W, 2) map each output pixel to a point of the reference; the
        determinant of their Jacobian is the reference area one output pixel samples. It is
        > 0 where the output samples a larger area of the reference (the reference is squeezed:
        the head moved away or turned that part aside) and < 0 where it samples a smaller one
        (the reference is stretched: a mouth opening wider, disoccluded background, the far
        cheek turning into view), i.e. where the refiner must synthesise. Folded or degenerate
        parts of the warp (determinant <= e^-2) read -2, the most stretched.
    channel 1: the current inner-mouth region, filled (the lips' inner contour).
    channel 2: the current eye regions, filled (both eyes' lid contours).

Polygons come from the mediapipe face mesh (468 or 478 points) or the 68-point iBUG layout
(face-alignment). Regions are anti-aliased; values are in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

from talkcodec.generator.refiner import GUIDE_CHANNELS
from talkcodec.keypoints.landmarks import Landmarks

LOG_AREA_LIMIT = 2.0

# Mediapipe face mesh contours (FACEMESH_LIPS / FACEMESH_*_EYE), walked in order around.
MEDIAPIPE_INNER_MOUTH: tuple[int, ...] = (
    78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95,
)  # fmt: skip
MEDIAPIPE_EYES: tuple[tuple[int, ...], ...] = (
    (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
    (362, 398, 384, 385, 386, 387, 388, 466, 263, 249, 390, 373, 374, 380, 381, 382),
)
# iBUG 68-point layout: eyes 36-41 and 42-47, inner lips 60-67.
IBUG_INNER_MOUTH: tuple[int, ...] = tuple(range(60, 68))
IBUG_EYES: tuple[tuple[int, ...], ...] = (tuple(range(36, 42)), tuple(range(42, 48)))

_FILL_SHIFT_BITS = 4  # cv2.fillPoly's fixed-point fraction bits: sub-pixel vertices


def region_polygons(num_points: int) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    """(inner-mouth indices, (eye indices, ...)) for a landmark set of `num_points` points."""
    if num_points in (468, 478):
        return MEDIAPIPE_INNER_MOUTH, MEDIAPIPE_EYES
    if num_points == 68:
        return IBUG_INNER_MOUTH, IBUG_EYES
    raise ValueError(
        f"no mouth and eye polygons for {num_points} landmarks (expected 468, 478 or 68)"
    )


def log_area_change(source_xy: np.ndarray) -> np.ndarray:
    """(H, W) float32 log det of the Jacobian of (H, W, 2) sampling positions, in [-2, 2].

    Central differences inside, one-sided at the border (like np.gradient).
    """
    source = np.ascontiguousarray(source_xy, dtype=np.float32)
    # cv2.filter2D on both channels at once is ~4x faster than np.gradient on strided views.
    difference = np.array([[-0.5, 0.0, 0.5]], dtype=np.float32)
    d_dcol: np.ndarray = cv2.filter2D(source, -1, difference, borderType=cv2.BORDER_REPLICATE)
    d_drow: np.ndarray = cv2.filter2D(source, -1, difference.T, borderType=cv2.BORDER_REPLICATE)
    # A replicated border halves the difference there: double it back to the one-sided one.
    d_dcol[:, [0, -1]] *= 2
    d_drow[[0, -1]] *= 2
    determinant = d_dcol[..., 0] * d_drow[..., 1] - d_drow[..., 0] * d_dcol[..., 1]
    np.maximum(determinant, np.float32(np.exp(-LOG_AREA_LIMIT)), out=determinant)
    log_area = np.log(determinant)
    return np.minimum(log_area, np.float32(LOG_AREA_LIMIT), out=log_area)


def fill_regions(
    points_xy: np.ndarray, polygons: tuple[tuple[int, ...], ...], height: int, width: int
) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the polygons (indices into (N, 2) points_xy) filled."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    scale = 1 << _FILL_SHIFT_BITS
    contours = [np.round(points_xy[list(polygon)] * scale).astype(np.int32) for polygon in polygons]
    cv2.fillPoly(canvas, contours, (255,), cv2.LINE_AA, _FILL_SHIFT_BITS)
    return canvas.astype(np.float32) * np.float32(1 / 255)


def draw_guide(landmarks: Landmarks, source_xy: np.ndarray) -> np.ndarray:
    """(GUIDE_CHANNELS, H, W) float32 guide for the current frame (see the module docstring).

    landmarks: the current (decoded) landmarks, in output pixels. source_xy: (H, W, 2) the
    warp's sampling positions in the reference (x, y), pixel centres at integers.
    """
    if source_xy.ndim != 3 or source_xy.shape[2] != 2:
        raise ValueError(f"source_xy must be (H, W, 2), got {source_xy.shape}")
    height, width = source_xy.shape[:2]
    mouth, eyes = region_polygons(landmarks.num_face_points)
    points_xy = landmarks.face[:, :2]
    guide = np.empty((GUIDE_CHANNELS, height, width), dtype=np.float32)
    guide[0] = log_area_change(source_xy)
    guide[1] = fill_regions(points_xy, (mouth,), height, width)
    guide[2] = fill_regions(points_xy, eyes, height, width)
    return guide


def normalised_grid(source_xy: np.ndarray) -> np.ndarray:
    """(H, W, 2) pixel positions (x, y), pixel centres at integers -> (1, H, W, 2) float32
    grid normalised to [-1, 1] with corner pixel centres at -1 and 1, as the refiner samples
    (refiner.sample, align_corners=True). Training and the receiver both use this one."""
    height, width = source_xy.shape[:2]
    scale = np.array([2.0 / (width - 1), 2.0 / (height - 1)], dtype=np.float32)
    return (source_xy * scale - 1.0)[None].astype(np.float32)
