"""Warp v2: the whole head moves with the head pose, the background stays put.

The basic mesh warp only moves the face mesh: hair, ears, neck and shoulders stay behind and the
face tears at its border. Here the mesh gains virtual points, placed on the reference once:

- head rings: the face's convex hull scaled out from its centre, given a depth behind the face
  and moved by the 3-D similarity (rotation, scale, shift) that best maps the reference face
  onto the current one, so hair and ears turn with the head; below the chin they blend towards
  the still torso (the neck stretches);
- torso points: a grid over the person below the head. They hold still: the shoulders the
  stream carries come from the pose model every 4th frame and mostly lie at the crop's border,
  and letting the torso follow them cost 0.5 dB on the dev clips (jitter) where holding it
  still cost nothing;
- background anchors: a grid over what is not the person, and the image border, fixed.

What is person and what is background comes from mediapipe's selfie segmentation of the
reference, on the receiver: it costs no bits, and it is what keeps the rings from dragging a
textured background along with the head. Points in the uncertain band of the mask are left out.
Rendering is the mesh warp's piecewise-affine backward map with depth-ordered rasterisation:
where the moving head folds triangles over the fixed background, the nearer ones win, and since
the border is fixed every output pixel is covered (no tears).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.spatial import ConvexHull, Delaunay

from talkcodec.generator.base import Renderer
from talkcodec.generator.meshwarp import (
    border_anchors,
    piecewise_affine_flow,
    pin_border,
)
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.model import similarity_fit
from talkcodec.keypoints.segmentation import PersonSegmenter

logger = logging.getLogger(__name__)

# Scale factors of the head rings about the face hull's centre (1 is the hull itself).
_RING_SCALES = (1.25, 1.55, 1.9, 2.3)
_RING_POINTS = 24
# Depth of the ring points behind the mean face depth, in face radii: about the head's centre,
# so that the silhouette barely moves when the head turns while the face does.
_RING_DEPTH_RADII = 1.0
# Below the chin line the rings blend from head motion to none over this many face radii.
_NECK_BLEND_RADII = 0.5
_GRID_STEP_FRACTION = 1 / 8  # spacing of the torso and background grids, of the image size
_MASK_THRESHOLD = 0.5
# Points within this many pixels (of 256) of the mask edge are neither person nor background.
_MASK_MARGIN_PX_AT_256 = 6
_BORDER_MARGIN_PX = 2.0
# Landmark indices of the top of the face and the chin, per face model (by point count).
_TOP_AND_CHIN = {478: (10, 152), 468: (10, 152), 68: (27, 8)}


@dataclass(frozen=True)
class HeadMesh:
    """Everything that depends only on one reference."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    face: np.ndarray  # (N, 3) float64 reference face landmarks
    shoulders: np.ndarray  # (2, 2) float64 reference shoulders
    shoulder_mask: np.ndarray  # (2,) bool: shoulders that are mesh points
    ring: np.ndarray  # (R, 3) float64 head ring points (x, y, depth)
    ring_head_weight: np.ndarray  # (R,) 1 = moves with the head, 0 = with the torso
    torso: np.ndarray  # (S, 2) float64 torso points
    fixed: np.ndarray  # (A, 2) float64 background and border anchors
    points: np.ndarray  # (P, 2) all reference positions: face, shoulders, ring, torso, fixed
    triangles: np.ndarray  # (T, 3) int64
    reference_areas: np.ndarray  # (T,) twice the signed area of each triangle on the reference
    depth_behind: float  # depth given to torso and background points
    pixel_x: np.ndarray  # (H, W) float32
    pixel_y: np.ndarray  # (H, W) float32


def _hull_ring(face_xy: np.ndarray, count: int) -> np.ndarray:
    """(count, 2) points evenly spaced by arc length along the convex hull of the face."""
    hull = face_xy[ConvexHull(face_xy).vertices]
    closed = np.concatenate([hull, hull[:1]])
    lengths = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    positions = np.linspace(0.0, cumulative[-1], count, endpoint=False)
    x = np.interp(positions, cumulative, closed[:, 0])
    y = np.interp(positions, cumulative, closed[:, 1])
    return np.stack([x, y], axis=1)


def _grid(height: int, width: int) -> np.ndarray:
    """(G, 2) interior grid points, spaced _GRID_STEP_FRACTION of the image apart."""
    step = max(4.0, _GRID_STEP_FRACTION * min(height, width))
    xs = np.arange(step, width - 1 - step / 2, step)
    ys = np.arange(step, height - 1 - step / 2, step)
    grid_x, grid_y = np.meshgrid(xs, ys)
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def _sample_mask(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(P,) values of the (H, W) boolean mask at the nearest pixels of (P, 2) points."""
    height, width = mask.shape
    columns = np.clip(np.round(points[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, height - 1)
    return mask[rows, columns]


def _inside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    margin = _BORDER_MARGIN_PX
    return (
        (points[:, 0] >= margin)
        & (points[:, 0] <= width - 1 - margin)
        & (points[:, 1] >= margin)
        & (points[:, 1] <= height - 1 - margin)
    )


def _face_frame(face: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre (2,), unit 'down' direction (2,), radius) of the face in the image plane."""
    centre = face[:, :2].mean(axis=0)
    indices = _TOP_AND_CHIN.get(len(face))
    down = np.array([0.0, 1.0])
    if indices is not None:
        top, chin = face[indices[0], :2], face[indices[1], :2]
        if np.linalg.norm(chin - top) > 1e-6:
            down = (chin - top) / np.linalg.norm(chin - top)
    radius = float(np.sqrt(((face[:, :2] - centre) ** 2).sum(axis=1).mean()))
    return centre, down, max(radius, 1.0)


class HeadWarpRenderer(Renderer):
    """Head-, torso- and background-aware piecewise-affine warp of the reference (warp v2)."""

    name = "headwarp"

    def __init__(self, segmenter: PersonSegmenter | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._segmenter = segmenter or PersonSegmenter()

    def prepare_reference(self, image: np.ndarray, landmarks: Landmarks) -> HeadMesh:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"reference must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        person = self._segmenter(image)
        return build_head_mesh(image, landmarks, person)

    def render_from(self, prepared: HeadMesh, landmarks: Landmarks) -> np.ndarray:
        source = head_flow(prepared, landmarks)
        # OpenCV's stubs miss the documented map2=None form for a (H, W, 2) map.
        return cv2.remap(  # type: ignore[call-overload]
            prepared.image, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )  # (H, W, 3) uint8

    def flow(self, landmarks: Landmarks) -> np.ndarray:
        """(H, W, 2) float32: for each output pixel, the (x, y) to sample in the reference
        the bank picks for these landmarks."""
        _, prepared = self.reference_for(landmarks)
        return head_flow(prepared, landmarks)


def build_head_mesh(image: np.ndarray, landmarks: Landmarks, person: np.ndarray) -> HeadMesh:
    """The reference mesh from the image, its landmarks and its (H, W) person probability."""
    height, width = image.shape[:2]
    face = landmarks.face.astype(np.float64)
    margin = max(1, round(_MASK_MARGIN_PX_AT_256 * min(height, width) / 256))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    binary = (person >= _MASK_THRESHOLD).astype(np.uint8)
    surely_person = cv2.erode(binary, kernel).astype(bool)
    surely_background = ~cv2.dilate(binary, kernel).astype(bool)

    centre, down, radius = _face_frame(face)
    chin_level = float(((face[:, :2] - centre) @ down).max())
    hull = _hull_ring(face[:, :2], _RING_POINTS)
    rings = np.concatenate([centre + scale * (hull - centre) for scale in _RING_SCALES])
    inside = _inside(rings, height, width)
    ring_is_person = inside & _sample_mask(surely_person, rings)
    ring_is_background = inside & _sample_mask(surely_background, rings)
    ring_xy = rings[ring_is_person]
    below_chin = ((ring_xy - centre) @ down - chin_level) / radius
    ring_head_weight = np.clip(1.0 - below_chin / _NECK_BLEND_RADII, 0.0, 1.0)
    ring_depth = face[:, 2].mean() + _RING_DEPTH_RADII * radius
    ring = np.concatenate([ring_xy, np.full((len(ring_xy), 1), ring_depth)], axis=1)

    # The grids stay clear of the head: outside the outermost ring's reach around the face.
    grid = _grid(height, width)
    head_reach = _RING_SCALES[-1] * radius * 1.1
    away_from_head = np.linalg.norm(grid - centre, axis=1) > head_reach
    below_head = (grid - centre) @ down > chin_level + _NECK_BLEND_RADII * radius
    torso = grid[_sample_mask(surely_person, grid) & (away_from_head | below_head)]
    background = grid[_sample_mask(surely_background, grid)]
    shoulders = landmarks.shoulders.astype(np.float64)
    shoulder_mask = _inside(shoulders, height, width) & _sample_mask(surely_person, shoulders)
    fixed = np.concatenate([rings[ring_is_background], background, border_anchors(height, width)])
    points = np.concatenate([face[:, :2], shoulders[shoulder_mask], ring_xy, torso, fixed])
    # Delaunay leaves duplicate points out of every triangle, which is all they need.
    triangles = Delaunay(points).simplices.astype(np.int64)  # (T, 3)
    pixel_y, pixel_x = np.mgrid[0:height, 0:width].astype(np.float32)
    return HeadMesh(
        image=np.ascontiguousarray(image),
        face=face,
        shoulders=shoulders,
        shoulder_mask=shoulder_mask,
        ring=ring,
        ring_head_weight=ring_head_weight,
        torso=torso,
        fixed=fixed,
        points=points,
        triangles=triangles,
        reference_areas=_signed_areas(points[triangles]),
        depth_behind=float(face[:, 2].max() + 2 * radius),
        pixel_x=pixel_x,
        pixel_y=pixel_y,
    )


def _signed_areas(corners: np.ndarray) -> np.ndarray:
    """(T,) twice the signed areas of (T, 3, 2) triangles."""
    first, second = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return first[:, 0] * second[:, 1] - first[:, 1] * second[:, 0]


def current_points(mesh: HeadMesh, landmarks: Landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The current (P, 2) positions of mesh.points and their (P,) depths (larger is farther)."""
    face = landmarks.face.astype(np.float64)
    if len(face) != len(mesh.face):
        raise ValueError(
            f"reference has {len(mesh.face)} face points, current landmarks have {len(face)}"
        )
    scale, rotation, translation = similarity_fit(mesh.face, face)
    ring_moved = (scale * mesh.ring @ rotation.T) + translation  # (R, 3)
    weight = mesh.ring_head_weight[:, None]
    ring_xy = weight * ring_moved[:, :2] + (1 - weight) * mesh.ring[:, :2]
    shoulders = landmarks.shoulders.astype(np.float64)[mesh.shoulder_mask]
    points = np.concatenate([face[:, :2], shoulders, ring_xy, mesh.torso, mesh.fixed])
    behind = mesh.depth_behind
    depth = np.concatenate(
        [
            face[:, 2],
            np.full(len(shoulders), behind),
            ring_moved[:, 2],
            np.full(len(mesh.torso), behind),
            np.full(len(mesh.fixed), behind + 1.0),
        ]
    )
    return points, depth


def head_flow(mesh: HeadMesh, landmarks: Landmarks) -> np.ndarray:
    """(H, W, 2) float32: the reference (x, y) each output pixel samples."""
    current, depth = current_points(mesh, landmarks)
    # A triangle whose orientation flipped is a fold: it is not drawn, the ones around it cover
    # its pixels (or, where none does, the still reference shows through).
    flipped = _signed_areas(current[mesh.triangles]) * mesh.reference_areas <= 0
    source = piecewise_affine_flow(
        mesh.points, current, mesh.triangles, depth, mesh.pixel_x, mesh.pixel_y, ~flipped
    )
    height, width = mesh.pixel_x.shape
    # Near-degenerate triangles on a fold's edge can reach far outside the reference.
    np.clip(source[..., 0], 0, width - 1, out=source[..., 0])
    np.clip(source[..., 1], 0, height - 1, out=source[..., 1])
    moving = current[: len(current) - len(mesh.fixed)]
    if bool(np.all(_inside(moving, height, width))):
        pin_border(source)
    return source
