"""talkcodec.generator: the mesh-warp renderer on synthetic meshes, and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from talkcodec.generator import RENDERERS, make_renderer
from talkcodec.generator.meshwarp import MeshWarpRenderer
from talkcodec.keypoints.landmarks import Landmarks

SIZE = 256
FACE_CENTRE = np.array([128.0, 120.0])
FACE_RADII = np.array([50.0, 65.0])
SHOULDERS_OUTSIDE = np.array([[300.0, 330.0], [-40.0, 330.0]], dtype=np.float32)


def textured_image(seed: int = 0) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 noise: every pixel differs, so any misplacement shows."""
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def synthetic_face(num_points: int, seed: int = 0) -> np.ndarray:
    """(N, 3) float32: a fifth of the points on an ellipse, the rest jittered inside it.

    z is a bowl, nearest (smallest) at the centre, like a face seen from the front.
    """
    rng = np.random.default_rng(seed)
    num_rim = num_points // 5
    angle = np.concatenate(
        [
            np.linspace(0, 2 * np.pi, num_rim, endpoint=False),
            rng.uniform(0, 2 * np.pi, num_points - num_rim),
        ]
    )
    radius = np.concatenate(
        [np.ones(num_rim), np.sqrt(rng.uniform(0.0, 0.9, num_points - num_rim))]
    )
    xy = FACE_CENTRE + FACE_RADII * radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    z = 40.0 * radius**2
    return np.concatenate([xy, z[:, None]], axis=1).astype(np.float32)


def moved(landmarks: Landmarks, dx: float, dy: float) -> Landmarks:
    face = landmarks.face + np.array([dx, dy, 0.0], dtype=np.float32)
    return Landmarks(face=face, shoulders=landmarks.shoulders)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse)) if mse > 0 else float("inf")


def renderer_for(
    num_points: int, shoulders: np.ndarray = SHOULDERS_OUTSIDE
) -> tuple[MeshWarpRenderer, np.ndarray, Landmarks]:
    image = textured_image()
    landmarks = Landmarks(face=synthetic_face(num_points), shoulders=shoulders.astype(np.float32))
    renderer = MeshWarpRenderer()
    renderer.set_reference(image, landmarks)
    return renderer, image, landmarks


@pytest.mark.parametrize("num_points", [68, 478])
def test_identical_landmarks_reproduce_reference(num_points: int) -> None:
    renderer, image, landmarks = renderer_for(num_points)
    rendered = renderer.render(landmarks)
    assert rendered.shape == image.shape
    assert rendered.dtype == np.uint8
    assert psnr(image, rendered) > 40.0


def test_identical_landmarks_give_identity_flow() -> None:
    renderer, _, landmarks = renderer_for(478)
    source = renderer.flow(landmarks)
    assert source.shape == (SIZE, SIZE, 2)
    assert source.dtype == np.float32
    pixel_y, pixel_x = np.mgrid[0:SIZE, 0:SIZE]
    assert np.abs(source - np.stack([pixel_x, pixel_y], axis=2)).max() < 1e-3


@pytest.mark.parametrize("num_points", [68, 478])
@pytest.mark.parametrize(("dx", "dy"), [(6, -4), (-3, 5)])
def test_translated_face_moves_its_content(num_points: int, dx: int, dy: int) -> None:
    renderer, image, landmarks = renderer_for(num_points)
    rendered = renderer.render(moved(landmarks, dx, dy))
    x0, y0 = (FACE_CENTRE - 15).astype(int)  # a 30x30 patch well inside the face
    patch = image[y0 : y0 + 30, x0 : x0 + 30].astype(int)
    moved_patch = rendered[y0 + dy : y0 + dy + 30, x0 + dx : x0 + dx + 30].astype(int)
    assert np.abs(moved_patch - patch).max() <= 1


def test_border_ring_stays_put() -> None:
    renderer, image, landmarks = renderer_for(478)
    rendered = renderer.render(moved(landmarks, 9, -7))
    ring = np.ones((SIZE, SIZE), dtype=bool)
    ring[1:-1, 1:-1] = False
    assert np.array_equal(rendered[ring], image[ring])


def test_shoulders_outside_the_image_are_ignored() -> None:
    renderer, image, landmarks = renderer_for(478)
    far_shoulders = Landmarks(face=landmarks.face, shoulders=landmarks.shoulders + 25.0)
    assert np.array_equal(renderer.render(far_shoulders), renderer.render(landmarks))


def test_shoulder_inside_the_image_drags_its_surroundings() -> None:
    shoulders = np.array([[215.0, 225.0], [41.0, 225.0]])
    renderer, _, landmarks = renderer_for(478, shoulders)
    current_shoulders = (shoulders + [[6.0, -5.0], [-4.0, 3.0]]).astype(np.float32)
    source = renderer.flow(Landmarks(face=landmarks.face, shoulders=current_shoulders))
    for (x, y), reference_xy in zip(current_shoulders.astype(int), shoulders, strict=True):
        assert np.allclose(source[y, x], reference_xy, atol=1e-2)


def test_nearer_surface_wins_a_fold() -> None:
    """Two squares of face points; the left one slides onto the right one."""
    grid = np.stack(np.meshgrid(np.linspace(0, 40, 5), np.linspace(0, 40, 5)), -1).reshape(-1, 2)
    left, right = grid + [50.0, 100.0], grid + [150.0, 100.0]
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[100:141, 50:91] = (255, 0, 0)
    image[100:141, 150:191] = (0, 0, 255)
    for left_depth, right_depth, expected in [(0.0, 10.0, (255, 0, 0)), (10.0, 0.0, (0, 0, 255))]:
        depth = np.repeat([left_depth, right_depth], len(grid))[:, None]
        face = np.concatenate([np.concatenate([left, right]), depth], axis=1).astype(np.float32)
        renderer = MeshWarpRenderer()
        renderer.set_reference(image, Landmarks(face=face, shoulders=SHOULDERS_OUTSIDE))
        folded = face.copy()
        folded[: len(grid), 0] += 100.0  # the left square now lies exactly on the right one
        rendered = renderer.render(Landmarks(face=folded, shoulders=SHOULDERS_OUTSIDE))
        assert tuple(rendered[120, 170]) == expected


@pytest.mark.parametrize("how", ["swap", "collapse", "flip"])
def test_folded_or_degenerate_mesh_renders_finite(how: str) -> None:
    renderer, _, landmarks = renderer_for(478)
    face = landmarks.face.copy()
    if how == "swap":  # two far-apart points trade places: many triangles flip over
        face[[0, 200]] = face[[200, 0]]
    elif how == "collapse":  # every face point on one spot: every face triangle has zero area
        face[:, :2] = FACE_CENTRE
    else:  # the face mirrored left-right
        face[:, 0] = 2 * FACE_CENTRE[0] - face[:, 0]
    current = Landmarks(face=face, shoulders=landmarks.shoulders)
    assert np.isfinite(renderer.flow(current)).all()
    rendered = renderer.render(current)
    assert rendered.shape == (SIZE, SIZE, 3)
    assert rendered.dtype == np.uint8


def test_render_before_reference_raises() -> None:
    renderer = MeshWarpRenderer()
    landmarks = Landmarks(face=synthetic_face(68), shoulders=SHOULDERS_OUTSIDE)
    with pytest.raises(RuntimeError, match="no reference yet"):
        renderer.render(landmarks)
    with pytest.raises(RuntimeError, match="no reference yet"):
        renderer.flow(landmarks)


def test_face_point_count_mismatch_raises() -> None:
    renderer, _, _ = renderer_for(478)
    other = Landmarks(face=synthetic_face(68), shoulders=SHOULDERS_OUTSIDE)
    with pytest.raises(
        ValueError, match="^reference has 478 face points, current landmarks have 68$"
    ):
        renderer.render(other)


def test_registry() -> None:
    assert list(RENDERERS) == ["meshwarp", "headwarp", "gan"]
    assert isinstance(make_renderer("meshwarp"), MeshWarpRenderer)
    with pytest.raises(
        ValueError, match="^unknown renderer 'nerf'; choose one of meshwarp, headwarp, gan$"
    ):
        make_renderer("nerf")


def test_border_follows_a_face_that_leaves_the_image() -> None:
    renderer, _, landmarks = renderer_for(478)
    source = renderer.flow(moved(landmarks, -100, 0))  # the face now pokes out on the left
    rows = np.arange(80, 160)
    assert np.abs(source[rows, 0, 0]).max() > 1.0
