"""The classical renderer: a piecewise-affine warp of the keyframe along the landmark mesh."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from talkcodec.generator.base import Renderer
from talkcodec.keypoints.landmarks import Landmarks

logger = logging.getLogger(__name__)

_ANCHORS_PER_SIDE = 5  # corners included
# A shoulder this close to the border (as a fraction of the image size) is left out: it would
# make sliver triangles with the border anchors that fold as soon as it moves.
_SHOULDER_MARGIN_FRACTION = 0.05
# Twice the triangle area (pixels^2) below which a triangle counts as degenerate.
_MIN_DOUBLE_AREA = 1e-3
# cv2.fillConvexPoly takes fixed-point vertices with this many fractional bits.
_FILL_SHIFT_BITS = 4


@dataclass(frozen=True)
class _ReferenceMesh:
    """Everything that depends only on the reference image and its landmarks."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    points: np.ndarray  # (P, 2) float64 reference positions: face, kept shoulders, anchors
    triangles: np.ndarray  # (T, 3) int64 indices into points
    num_face_points: int  # the first num_face_points of `points` are the face
    shoulder_mask: np.ndarray  # (2,) bool: which shoulders are mesh points
    anchors: np.ndarray  # (A, 2) float64 fixed border points
    pixel_x: np.ndarray  # (H, W) float32 column of each pixel
    pixel_y: np.ndarray  # (H, W) float32 row of each pixel


def border_anchors(height: int, width: int, per_side: int = _ANCHORS_PER_SIDE) -> np.ndarray:
    """(4 * (per_side - 1), 2) points evenly spaced along the image border, corners included.

    They sit on whole pixels: a border pixel the rasteriser hands to a neighbouring triangle
    then still maps onto itself.
    """
    xs = np.round(np.linspace(0.0, width - 1.0, per_side))
    ys = np.round(np.linspace(0.0, height - 1.0, per_side))
    top = np.stack([xs[:-1], np.zeros(per_side - 1)], axis=1)
    right = np.stack([np.full(per_side - 1, width - 1.0), ys[:-1]], axis=1)
    bottom = np.stack([xs[:0:-1], np.full(per_side - 1, height - 1.0)], axis=1)
    left = np.stack([np.zeros(per_side - 1), ys[:0:-1]], axis=1)
    return np.concatenate([top, right, bottom, left])


def _shoulders_inside(shoulders: np.ndarray, height: int, width: int) -> np.ndarray:
    """(2,) bool: which of the (2, 2) shoulder points lie inside the image, off its border."""
    margin = _SHOULDER_MARGIN_FRACTION * min(height, width)
    inside_x = (shoulders[:, 0] >= margin) & (shoulders[:, 0] <= width - 1 - margin)
    inside_y = (shoulders[:, 1] >= margin) & (shoulders[:, 1] <= height - 1 - margin)
    return np.asarray(inside_x & inside_y)


def affine_maps(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(T, 2, 3) float32 affine maps sending each source triangle onto its target triangle.

    source, target: (T, 3, 2) vertex positions. A triangle of (near) zero area in `source`
    has no affine map; it gets the translation between the two centroids instead.
    """
    # Closed form rather than np.linalg.solve, which is ~50x slower on many 3x3 systems.
    source_edges = (source[:, 1:] - source[:, :1]).transpose(0, 2, 1)  # (T, 2, 2) columns
    target_edges = (target[:, 1:] - target[:, :1]).transpose(0, 2, 1)  # (T, 2, 2) columns
    (a, b), (c, d) = source_edges[:, 0].T, source_edges[:, 1].T  # [[a, b], [c, d]] per triangle
    determinant = a * d - b * c  # twice the signed area
    degenerate = np.abs(determinant) < _MIN_DOUBLE_AREA
    safe_determinant = np.where(degenerate, 1.0, determinant)
    inverse = np.stack([np.stack([d, -b], axis=1), np.stack([-c, a], axis=1)], axis=1)
    inverse /= safe_determinant[:, None, None]  # (T, 2, 2)
    linear = target_edges @ inverse  # (T, 2, 2)
    linear[degenerate] = np.eye(2)
    origin = np.where(degenerate[:, None], source.mean(axis=1), source[:, 0])  # (T, 2)
    target_origin = np.where(degenerate[:, None], target.mean(axis=1), target[:, 0])  # (T, 2)
    translation = target_origin - (linear @ origin[:, :, None])[:, :, 0]  # (T, 2)
    return np.concatenate([linear, translation[:, :, None]], axis=2).astype(np.float32)


def rasterise_triangle_ids(
    corners: np.ndarray, draw_order: np.ndarray, height: int, width: int
) -> np.ndarray:
    """(H, W) int32 image: 1 + the index of the triangle covering each pixel, 0 where none.

    corners: (T, 3, 2) vertex positions in pixels. Triangles are drawn in `draw_order`, later
    ones over earlier ones.
    """
    ids = np.zeros((height, width), dtype=np.int32)
    fixed = np.round(corners * (1 << _FILL_SHIFT_BITS)).astype(np.int32)  # (T, 3, 2)
    for triangle in draw_order.tolist():
        cv2.fillConvexPoly(ids, fixed[triangle], triangle + 1, cv2.LINE_8, _FILL_SHIFT_BITS)
    return ids


def _apply_maps(
    maps: np.ndarray, ids: np.ndarray, pixel_x: np.ndarray, pixel_y: np.ndarray
) -> np.ndarray:
    """(H, W, 2) float32: each pixel (pixel_x, pixel_y) sent through maps[ids] ((K, 2, 3))."""
    # Gathering flat 6-vectors with np.take is ~3x faster than fancy-indexing (K, 2, 3).
    pixel_maps = np.take(maps.reshape(-1, 6), ids, axis=0)  # (H, W, 6)
    source = np.empty(ids.shape + (2,), dtype=np.float32)
    source[..., 0] = pixel_maps[..., 0] * pixel_x + pixel_maps[..., 1] * pixel_y
    source[..., 0] += pixel_maps[..., 2]
    source[..., 1] = pixel_maps[..., 3] * pixel_x + pixel_maps[..., 4] * pixel_y
    source[..., 1] += pixel_maps[..., 5]
    return source


def piecewise_affine_flow(
    reference_points: np.ndarray,
    current_points: np.ndarray,
    triangles: np.ndarray,
    depth: np.ndarray,
    pixel_x: np.ndarray,
    pixel_y: np.ndarray,
    drawn: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W, 2) float32 backward map: for each output pixel, the reference (x, y) to sample.

    reference_points, current_points: (P, 2) mesh points on the reference and now; triangles:
    (T, 3) indices; depth: (P,) current depths, larger is farther (where triangles overlap the
    nearer one wins); pixel_x, pixel_y: (H, W) pixel coordinates; drawn: (T,) bool, the
    triangles to rasterise (default all). Pixels no drawn triangle covers map to themselves.
    """
    current_corners = current_points[triangles]  # (T, 3, 2)
    # Row 0 is the identity, for pixels outside every triangle (triangle id 0).
    maps = np.concatenate(
        [
            np.eye(2, 3, dtype=np.float32)[None],
            affine_maps(current_corners, reference_points[triangles]),
        ]
    )  # (T + 1, 2, 3)
    far_to_near = np.argsort(-depth[triangles].mean(axis=1), kind="stable")
    if drawn is not None:
        far_to_near = far_to_near[drawn[far_to_near]]
    height, width = pixel_x.shape
    ids = rasterise_triangle_ids(current_corners, far_to_near, height, width)
    return _apply_maps(maps, ids, pixel_x, pixel_y)


def _strictly_inside(points: np.ndarray, height: int, width: int) -> bool:
    """Whether all (P, 2) points lie strictly inside the image, off its border pixels."""
    inside_x = (points[:, 0] > 0) & (points[:, 0] < width - 1)
    inside_y = (points[:, 1] > 0) & (points[:, 1] < height - 1)
    return bool(np.all(inside_x & inside_y))


def pin_border(source: np.ndarray) -> None:
    """Make the outer pixel ring of the (H, W, 2) source coordinates map to itself, in place.

    Only valid while every moving point is strictly inside the image: the border is then made
    of anchor-to-anchor edges, on which the exact map is the identity. cv2.fillConvexPoly
    fills edge pixels generously, so a neighbouring triangle drawn later can otherwise claim a
    border pixel and shift it by a fraction of a pixel.
    """
    height, width = source.shape[:2]
    columns = np.arange(width, dtype=np.float32)
    rows = np.arange(height, dtype=np.float32)
    for row in (0, height - 1):
        source[row, :, 0], source[row, :, 1] = columns, row
    for column in (0, width - 1):
        source[:, column, 0], source[:, column, 1] = column, rows


class MeshWarpRenderer(Renderer):
    """Piecewise-affine warp of the reference from its landmarks to the current ones.

    The mesh is the Delaunay triangulation (on the reference) of the face points, the shoulders
    that lie inside the image and fixed anchors on the image border, so the background stays
    put. Rendering maps backwards: each pixel takes its triangle's affine map current ->
    reference and samples the reference there (bilinear). Where triangles overlap (a fold), the
    nearer one (smaller mean z) wins. Each reference of the bank keeps its own mesh.
    """

    name = "meshwarp"

    def prepare_reference(self, image: np.ndarray, landmarks: Landmarks) -> _ReferenceMesh:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"reference must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
        shoulder_mask = _shoulders_inside(landmarks.shoulders, height, width)
        anchors = border_anchors(height, width)
        points = np.concatenate(
            [
                landmarks.face[:, :2].astype(np.float64),
                landmarks.shoulders[shoulder_mask].astype(np.float64),
                anchors,
            ]
        )
        triangles = Delaunay(points).simplices.astype(np.int64)  # (T, 3)
        pixel_y, pixel_x = np.mgrid[0:height, 0:width].astype(np.float32)
        logger.debug(
            "meshwarp reference %dx%d: %d points, %d triangles",
            width,
            height,
            len(points),
            len(triangles),
        )
        return _ReferenceMesh(
            image=np.ascontiguousarray(image),
            points=points,
            triangles=triangles,
            num_face_points=landmarks.num_face_points,
            shoulder_mask=shoulder_mask,
            anchors=anchors,
            pixel_x=pixel_x,
            pixel_y=pixel_y,
        )

    def flow(self, landmarks: Landmarks) -> np.ndarray:
        """(H, W, 2) float32: for each output pixel, the (x, y) to sample in the reference
        that render(landmarks) would pick.

        Pixels no triangle covers map to themselves.
        """
        _, mesh = self.reference_for(landmarks)
        return self._flow(mesh, landmarks)

    def render_from(self, prepared: _ReferenceMesh, landmarks: Landmarks) -> np.ndarray:
        source = self._flow(prepared, landmarks)
        # OpenCV's stubs miss the documented map2=None form for a (H, W, 2) map.
        return cv2.remap(  # type: ignore[call-overload]
            prepared.image, source, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )  # (H, W, 3) uint8

    def _flow(self, mesh: _ReferenceMesh, landmarks: Landmarks) -> np.ndarray:
        current, depth = self._current_points(mesh, landmarks)  # (P, 2), (P,)
        source = piecewise_affine_flow(
            mesh.points, current, mesh.triangles, depth, mesh.pixel_x, mesh.pixel_y
        )  # (H, W, 2)
        height, width = mesh.pixel_x.shape
        moving = current[: len(current) - len(mesh.anchors)]
        if _strictly_inside(moving, height, width):
            pin_border(source)
        return source

    @staticmethod
    def _current_points(
        mesh: _ReferenceMesh, landmarks: Landmarks
    ) -> tuple[np.ndarray, np.ndarray]:
        """The current (P, 2) positions of the mesh points and their (P,) depths.

        Shoulders and anchors sit at the depth of the farthest face point, behind the face.
        """
        num_face = mesh.num_face_points
        if landmarks.num_face_points != num_face:
            raise ValueError(
                f"reference has {num_face} face points, current landmarks have "
                f"{landmarks.num_face_points}"
            )
        face = landmarks.face.astype(np.float64)
        shoulders = landmarks.shoulders[mesh.shoulder_mask].astype(np.float64)
        points = np.concatenate([face[:, :2], shoulders, mesh.anchors])
        depth = np.full(len(points), face[:, 2].max())
        depth[:num_face] = face[:, 2]
        return points, depth
