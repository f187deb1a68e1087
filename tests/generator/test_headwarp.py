"""talkcodec.generator.headwarp: warp v2 on synthetic people (no mediapipe model needed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from talkcodec.generator.headwarp import build_head_mesh, current_points, head_flow
from talkcodec.keypoints.landmarks import Landmarks
from tests.generator.test_meshwarp import (
    FACE_CENTRE,
    SHOULDERS_OUTSIDE,
    SIZE,
    synthetic_face,
    textured_image,
)


def person_mask() -> np.ndarray:
    """(SIZE, SIZE) probability: a head disc around the face plus a torso below it."""
    rows, columns = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    head = (columns - FACE_CENTRE[0]) ** 2 / 95**2 + (rows - FACE_CENTRE[1]) ** 2 / 115**2 < 1
    torso = (rows > 200) & (np.abs(columns - FACE_CENTRE[0]) < 110)
    return (head | torso).astype(np.float32)


def reference(num_points: int = 478) -> tuple[np.ndarray, Landmarks]:
    landmarks = Landmarks(face=synthetic_face(num_points), shoulders=SHOULDERS_OUTSIDE)
    return textured_image(), landmarks


def transformed(landmarks: Landmarks, rotation: np.ndarray, shift: np.ndarray) -> Landmarks:
    centre = landmarks.face.mean(axis=0)
    face = (landmarks.face - centre) @ rotation.T + centre + shift
    return Landmarks(face=face.astype(np.float32), shoulders=landmarks.shoulders)


def test_still_landmarks_give_the_identity() -> None:
    image, landmarks = reference()
    mesh = build_head_mesh(image, landmarks, person_mask())
    source = head_flow(mesh, landmarks)
    pixel_y, pixel_x = np.mgrid[0:SIZE, 0:SIZE]
    np.testing.assert_allclose(source[..., 0], pixel_x, atol=1e-3)
    np.testing.assert_allclose(source[..., 1], pixel_y, atol=1e-3)


def test_rings_stay_on_the_person_and_background_is_anchored() -> None:
    image, landmarks = reference()
    person = person_mask()
    mesh = build_head_mesh(image, landmarks, person)
    assert len(mesh.ring) > 20
    ring = np.round(mesh.ring[:, :2]).astype(int)
    assert person[ring[:, 1], ring[:, 0]].all()
    fixed = np.round(mesh.fixed).astype(int)
    inside = (fixed[:, 0] > 1) & (fixed[:, 0] < SIZE - 2) & (fixed[:, 1] > 1)
    inside &= fixed[:, 1] < SIZE - 2
    assert (person[fixed[inside, 1], fixed[inside, 0]] == 0).all()


def test_head_motion_moves_the_rings_and_not_the_background() -> None:
    image, landmarks = reference()
    mesh = build_head_mesh(image, landmarks, person_mask())
    shift = np.array([6.0, -4.0, 0.0])
    current, _ = current_points(mesh, transformed(landmarks, np.eye(3), shift))
    num_face = len(mesh.face) + int(mesh.shoulder_mask.sum())
    ring_now = current[num_face : num_face + len(mesh.ring)]
    above_chin = mesh.ring_head_weight == 1.0
    assert above_chin.sum() > 10
    np.testing.assert_allclose(
        ring_now[above_chin] - mesh.ring[above_chin, :2],
        np.tile(shift[:2], (above_chin.sum(), 1)),
        atol=1e-6,
    )
    np.testing.assert_array_equal(current[-len(mesh.fixed) :], mesh.fixed)


@pytest.mark.parametrize("yaw", [0.35, -0.6])
def test_large_turns_leave_no_holes_and_pin_the_border(yaw: float) -> None:
    """A fold must be resolved by depth order: every output pixel samples inside the image,
    and the border anchors map to themselves."""
    image, landmarks = reference()
    mesh = build_head_mesh(image, landmarks, person_mask())
    rotation = Rotation.from_euler("y", yaw).as_matrix()
    source = head_flow(mesh, transformed(landmarks, rotation, np.array([15.0, 0.0, 0.0])))
    assert np.isfinite(source).all()
    assert (source >= -0.5).all() and (source <= SIZE - 0.5).all()
    columns = np.arange(SIZE, dtype=np.float32)
    np.testing.assert_allclose(source[0, :, 0], columns, atol=1e-3)
    np.testing.assert_allclose(source[-1, :, 1], SIZE - 1, atol=1e-3)


def test_sixty_eight_point_faces_work() -> None:
    image, landmarks = reference(num_points=68)
    mesh = build_head_mesh(image, landmarks, person_mask())
    source = head_flow(mesh, transformed(landmarks, np.eye(3), np.array([3.0, 2.0, 0.0])))
    assert source.shape == (SIZE, SIZE, 2)
