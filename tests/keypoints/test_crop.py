"""talkcodec.keypoints.crop and .landmarks: crop geometry, landmark mapping, a still crop."""

from __future__ import annotations

import numpy as np
import pytest

from talkcodec.bitstream import KeypointModelId
from talkcodec.keypoints.crop import CropBox, FaceCropper, face_crop_target, full_square
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.registry import load_keypoint_model

FRAME_HEIGHT, FRAME_WIDTH = 480, 640
# warpAffine interpolates at 1/32 pixel, so sampled positions are off by up to 1/64.
SUBPIXEL_TOLERANCE = 1 / 64 + 1e-4

BOXES_AND_SIZES = [
    (CropBox(100.25, 50.5, 300.0), 256),  # shrinks
    (CropBox(300.0, 200.75, 100.0), 256),  # enlarges
    (CropBox(200.0, 100.0, 256.0), 256),  # same scale
]


def coordinate_frame() -> np.ndarray:
    """(H, W, 3) float32 frame whose channel 0 is the pixel's x and channel 1 its y."""
    y, x = np.mgrid[0:FRAME_HEIGHT, 0:FRAME_WIDTH].astype(np.float32)
    return np.stack([x, y, np.full_like(x, 7.0)], axis=2)


def sampled_positions(box: CropBox, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame x, y that crop pixel (v, u) shows: x0 + u * side / size, clamped at the edges."""
    v, u = np.mgrid[0:size, 0:size]
    x = np.clip(box.x0 + u * box.side / size, 0, FRAME_WIDTH - 1)
    y = np.clip(box.y0 + v * box.side / size, 0, FRAME_HEIGHT - 1)
    return x, y


def landmarks_at(face_xy: np.ndarray, z: float = 0.0) -> Landmarks:
    face = np.c_[face_xy, np.full(len(face_xy), z)].astype(np.float32)
    shoulders = np.array([[100.0, 400.0], [500.0, 410.0]], dtype=np.float32)
    return Landmarks(face=face, shoulders=shoulders)


@pytest.mark.parametrize(("box", "size"), BOXES_AND_SIZES)
def test_extract_samples_the_box(box: CropBox, size: int) -> None:
    crop = box.extract(coordinate_frame(), size)
    assert crop.shape == (size, size, 3)
    assert crop.dtype == np.float32
    expected_x, expected_y = sampled_positions(box, size)
    np.testing.assert_allclose(crop[..., 0], expected_x, atol=SUBPIXEL_TOLERANCE)
    np.testing.assert_allclose(crop[..., 1], expected_y, atol=SUBPIXEL_TOLERANCE)
    np.testing.assert_array_equal(crop[..., 2], 7.0)
    centre = crop[size // 2, size // 2, :2]
    box_centre = [box.x0 + box.side / 2, box.y0 + box.side / 2]
    np.testing.assert_allclose(centre, box_centre, atol=SUBPIXEL_TOLERANCE)


def test_extract_repeats_the_edge_outside_the_frame() -> None:
    box = CropBox(-50.0, 300.0, 400.0)  # sticks out left and below
    crop = box.extract(coordinate_frame(), 128)
    expected_x, expected_y = sampled_positions(box, 128)
    np.testing.assert_allclose(crop[..., 0], expected_x, atol=SUBPIXEL_TOLERANCE)
    np.testing.assert_allclose(crop[..., 1], expected_y, atol=SUBPIXEL_TOLERANCE)
    assert crop[:, 0, 0].max() == 0.0
    assert crop[-1, :, 1].min() == FRAME_HEIGHT - 1


@pytest.mark.parametrize("size", [64, 256])
def test_extract_keeps_uint8_frames_uint8(size: int) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8)
    crop = CropBox(10.0, 20.0, 128.0).extract(frame, size)
    assert crop.shape == (size, size, 3)
    assert crop.dtype == np.uint8


@pytest.mark.parametrize(("box", "size"), BOXES_AND_SIZES)
def test_to_crop_follows_extract(box: CropBox, size: int) -> None:
    # Bright blobs in the frame land in the crop where to_crop puts their landmarks. Positions
    # are pixel indices (pixel i's centre is at i), the convention extract samples with.
    where_in_box = np.array([[0.3, 0.6], [0.7, 0.25], [0.5, 0.5]])
    off_grid = np.array([[0.37, 0.81], [-0.52, 0.1], [0.0, 0.0]])
    centres = np.array([box.x0, box.y0]) + where_in_box * box.side + off_grid
    y, x = np.mgrid[0:FRAME_HEIGHT, 0:FRAME_WIDTH]
    v, u = np.mgrid[0:size, 0:size]
    moved = box.to_crop(landmarks_at(centres, z=10.0), size)
    scale = size / box.side
    for centre, expected in zip(centres, moved.face, strict=True):
        blob = np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * 4.0**2))
        frame = np.repeat(blob[..., None], 3, axis=2).astype(np.float32)
        crop = box.extract(frame, size)[..., 0].astype(np.float64)
        found = np.array([(crop * u).sum(), (crop * v).sum()]) / crop.sum()
        # Measured within 0.008 frame px; pixel centres at i + 0.5 would be off by 0.5 (scale - 1).
        np.testing.assert_allclose(found, expected[:2], atol=2 * SUBPIXEL_TOLERANCE * scale)
        assert expected[2] == pytest.approx(10.0 * scale)
    expected_shoulders = (np.array([[100.0, 400.0], [500.0, 410.0]]) - [box.x0, box.y0]) * scale
    np.testing.assert_allclose(moved.shoulders, expected_shoulders, rtol=1e-6)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (640, 480, CropBox(80.0, 0.0, 480.0)),
        (480, 640, CropBox(0.0, 80.0, 480.0)),
        (256, 256, CropBox(0.0, 0.0, 256.0)),
        (641, 480, CropBox(80.5, 0.0, 480.0)),
    ],
)
def test_full_square_is_the_largest_centred_square(
    width: int, height: int, expected: CropBox
) -> None:
    assert full_square(width, height) == expected


def test_full_square_of_a_square_frame_extracts_the_frame_itself() -> None:
    frame = np.random.default_rng(1).integers(0, 256, (256, 256, 3), np.uint8)
    np.testing.assert_array_equal(full_square(256, 256).extract(frame, 256), frame)


# -- FaceCropper ------------------------------------------------------------------------------


def synthetic_face(centre_xy: tuple[float, float], radius_px: float = 60.0) -> np.ndarray:
    """(478, 2) face points: the shipped mean shape, scaled and placed in the frame."""
    mean_shape = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2).mean_shape
    return mean_shape[:, :2] * radius_px + np.asarray(centre_xy)


def jittered(face_xy: np.ndarray, rng: np.random.Generator) -> Landmarks:
    """The face as a detector might report it: each point and the whole face wobble a little."""
    wobble = rng.normal(0, 0.7, face_xy.shape) + rng.uniform(-3, 3, size=2)
    return landmarks_at(face_xy + wobble)


def test_cropper_holds_still_while_the_face_jitters_and_jumps_once_when_it_moves() -> None:
    rng = np.random.default_rng(0)
    cropper = FaceCropper()
    face = synthetic_face((320.0, 240.0))
    first = cropper.update(jittered(face, rng))
    assert first is not None
    assert not cropper.moved
    for _ in range(30):
        assert cropper.update(jittered(face, rng)) == first
        assert not cropper.moved

    shifted = face + [0.3 * first.side, 0.0]
    landmarks = jittered(shifted, rng)
    second = cropper.update(landmarks)
    assert cropper.moved
    assert second == face_crop_target(landmarks)
    assert second is not None
    assert second.x0 == pytest.approx(first.x0 + 0.3 * first.side, abs=10)
    for _ in range(30):
        assert cropper.update(jittered(shifted, rng)) == second
        assert not cropper.moved


@pytest.mark.parametrize(("fraction", "moves"), [(0.19, False), (0.21, True)])
def test_cropper_moves_only_past_the_threshold(fraction: float, moves: bool) -> None:
    cropper = FaceCropper(move_threshold=0.2)
    face = synthetic_face((320.0, 240.0))
    first = cropper.update(landmarks_at(face))
    assert first is not None
    direction = np.array([0.6, 0.8])  # a diagonal shift counts by its length
    box = cropper.update(landmarks_at(face + fraction * first.side * direction))
    assert cropper.moved == moves
    assert (box != first) == moves


@pytest.mark.parametrize(("zoom", "moves"), [(1.2, False), (1.35, True), (0.7, True)])
def test_cropper_moves_when_the_face_changes_size(zoom: float, moves: bool) -> None:
    cropper = FaceCropper(resize_threshold=0.25)  # log(1.2) = 0.18, log(1.35) = 0.30
    cropper.update(landmarks_at(synthetic_face((320.0, 240.0))))
    cropper.update(landmarks_at(synthetic_face((320.0, 240.0), radius_px=60.0 * zoom)))
    assert cropper.moved == moves


def test_cropper_keeps_the_previous_box_when_no_face_is_found() -> None:
    cropper = FaceCropper()
    assert cropper.update(None) is None
    face = synthetic_face((320.0, 240.0))
    box = cropper.update(landmarks_at(face))
    cropper.update(landmarks_at(face + [200.0, 0.0]))
    assert cropper.moved
    moved_box = cropper.box
    assert moved_box != box
    assert cropper.update(None) == moved_box
    assert not cropper.moved


# -- Landmarks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("face_shape", "shoulders_shape", "message"),
    [
        ((478, 2), (2, 2), r"face landmarks must be \(N, 3\), got \(478, 2\)"),
        ((478,), (2, 2), r"face landmarks must be \(N, 3\), got \(478,\)"),
        ((1, 478, 3), (2, 2), r"face landmarks must be \(N, 3\), got \(1, 478, 3\)"),
        ((478, 3), (2, 3), r"shoulders must be \(2, 2\), got \(2, 3\)"),
        ((478, 3), (4,), r"shoulders must be \(2, 2\), got \(4,\)"),
    ],
)
def test_landmarks_reject_wrong_shapes(
    face_shape: tuple[int, ...], shoulders_shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Landmarks(face=np.zeros(face_shape, np.float32), shoulders=np.zeros(shoulders_shape))


def test_landmarks_face_box_and_transform() -> None:
    landmarks = landmarks_at(np.array([[10.0, 40.0], [30.0, 20.0], [20.0, 30.0]]), z=4.0)
    assert landmarks.num_face_points == 3
    assert landmarks.face_box() == (10.0, 20.0, 30.0, 40.0)
    moved = landmarks.transformed(2.0, (10.0, 20.0))
    assert moved.face_box() == (0.0, 0.0, 40.0, 40.0)
    np.testing.assert_array_equal(moved.face[:, 2], 8.0)
    assert moved.face.dtype == np.float32
