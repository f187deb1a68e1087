"""talkcodec.generator.guide: the refiner's guide channels on synthetic warps and faces."""

from __future__ import annotations

import time

import numpy as np
import pytest

from talkcodec.generator.guide import (
    IBUG_EYES,
    IBUG_INNER_MOUTH,
    LOG_AREA_LIMIT,
    MEDIAPIPE_EYES,
    MEDIAPIPE_INNER_MOUTH,
    draw_guide,
    log_area_change,
)
from talkcodec.generator.refiner import GUIDE_CHANNELS
from talkcodec.keypoints.landmarks import Landmarks

SIZE = 256
MOUTH_CENTRE = (128.0, 180.0)
EYE_CENTRES = ((96.0, 110.0), (160.0, 110.0))
REGION_RADIUS = 12.0


def identity_flow(size: int = SIZE) -> np.ndarray:
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack([columns, rows], axis=-1)  # (H, W, 2) x, y


def circle(centre: tuple[float, float], count: int) -> np.ndarray:
    angle = np.linspace(0, 2 * np.pi, count, endpoint=False)
    return np.stack(
        [centre[0] + REGION_RADIUS * np.cos(angle), centre[1] + REGION_RADIUS * np.sin(angle)], 1
    )


def face_with_regions(
    num_points: int, mouth: tuple[int, ...], eyes: tuple[tuple[int, ...], ...]
) -> Landmarks:
    """Landmarks whose inner-mouth and eye contours are circles; other points far off."""
    face = np.zeros((num_points, 3), dtype=np.float32)
    face[:, :2] = 5.0
    face[list(mouth), :2] = circle(MOUTH_CENTRE, len(mouth))
    for eye, centre in zip(eyes, EYE_CENTRES, strict=True):
        face[list(eye), :2] = circle(centre, len(eye))
    return Landmarks(face=face, shoulders=np.zeros((2, 2), dtype=np.float32))


def at(channel: np.ndarray, xy: tuple[float, float]) -> float:
    return float(channel[round(xy[1]), round(xy[0])])


def test_identity_warp_has_no_area_change() -> None:
    np.testing.assert_allclose(log_area_change(identity_flow()), 0.0, atol=1e-6)


@pytest.mark.parametrize("zoom", [0.5, 0.8, 1.25, 2.0])
def test_area_change_is_the_log_determinant_and_positive_where_more_is_sampled(zoom: float) -> None:
    # Each output pixel samples zoom x zoom reference pixels.
    source = identity_flow() * zoom
    expected = np.log(zoom * zoom)
    np.testing.assert_allclose(log_area_change(source), expected, atol=1e-4)


def test_area_change_is_clipped_and_folds_read_most_stretched() -> None:
    assert np.all(log_area_change(identity_flow() * 10) == LOG_AREA_LIMIT)
    assert np.all(log_area_change(identity_flow() * 0.1) == -LOG_AREA_LIMIT)
    mirrored = identity_flow()
    mirrored[..., 0] = SIZE - 1 - mirrored[..., 0]  # orientation reversed: a folded warp
    assert np.all(log_area_change(mirrored) == -LOG_AREA_LIMIT)
    assert np.all(log_area_change(np.zeros((SIZE, SIZE, 2), np.float32)) == -LOG_AREA_LIMIT)


def test_area_change_sees_a_local_stretch() -> None:
    source = identity_flow()
    # Rows 100..150 of the output sample only 25 rows of the reference: stretched, < 0.
    rows = np.arange(100, 151, dtype=np.float32)
    source[100:151, :, 1] = (100 + (rows - 100) / 2)[:, None]
    source[151:, :, 1] -= 25
    area = log_area_change(source)
    assert area[125, 128] == pytest.approx(np.log(0.5), abs=1e-5)
    assert area[50, 128] == pytest.approx(0.0, abs=1e-6)
    assert area[200, 128] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("num_points", "mouth", "eyes"),
    [
        (478, MEDIAPIPE_INNER_MOUTH, MEDIAPIPE_EYES),
        (468, MEDIAPIPE_INNER_MOUTH, MEDIAPIPE_EYES),
        (68, IBUG_INNER_MOUTH, IBUG_EYES),
    ],
)
def test_mouth_and_eyes_are_filled(
    num_points: int, mouth: tuple[int, ...], eyes: tuple[tuple[int, ...], ...]
) -> None:
    guide = draw_guide(face_with_regions(num_points, mouth, eyes), identity_flow())
    assert guide.shape == (GUIDE_CHANNELS, SIZE, SIZE) and guide.dtype == np.float32
    assert guide.min() >= -LOG_AREA_LIMIT and guide[1:].min() >= 0 and guide[1:].max() <= 1
    assert at(guide[1], MOUTH_CENTRE) == 1.0
    assert all(at(guide[1], eye) == 0.0 for eye in EYE_CENTRES)
    assert all(at(guide[2], eye) == 1.0 for eye in EYE_CENTRES)
    assert at(guide[2], MOUTH_CENTRE) == 0.0
    # The filled areas are about the polygons' (anti-aliasing adds about half a pixel around).
    polygon_area = np.pi * REGION_RADIUS**2
    assert 0.85 * polygon_area < guide[1].sum() < 1.15 * polygon_area
    assert 0.85 * 2 * polygon_area < guide[2].sum() < 1.15 * 2 * polygon_area
    assert guide[1, :50].sum() == 0 and guide[2, 150:].sum() == 0


def test_mirrored_input_gives_the_mirrored_guide() -> None:
    """Flip augmentation flips the guide array: it must be what the mirrored frame draws."""
    landmarks = face_with_regions(478, MEDIAPIPE_INNER_MOUTH, MEDIAPIPE_EYES)
    rng = np.random.default_rng(0)
    source = identity_flow() + rng.normal(0, 0.2, (SIZE, SIZE, 2)).astype(np.float32)
    mirrored_source = source[:, ::-1].copy()
    mirrored_source[..., 0] = SIZE - 1 - mirrored_source[..., 0]
    face = landmarks.face.copy()
    face[:, 0] = SIZE - 1 - face[:, 0]
    mirrored = draw_guide(Landmarks(face=face, shoulders=landmarks.shoulders), mirrored_source)
    expected = draw_guide(landmarks, source)[:, :, ::-1]
    np.testing.assert_allclose(mirrored[0], expected[0], atol=1e-4)
    # Anti-aliased edges may round differently; the regions agree.
    assert np.abs(mirrored[1:] - expected[1:]).mean() < 2e-3


def test_unknown_landmark_layout_is_refused() -> None:
    landmarks = Landmarks(
        face=np.zeros((100, 3), np.float32), shoulders=np.zeros((2, 2), np.float32)
    )
    with pytest.raises(
        ValueError, match=r"no mouth and eye polygons for 100 landmarks \(expected 468, 478 or 68\)"
    ):
        draw_guide(landmarks, identity_flow())
    with pytest.raises(ValueError, match=r"source_xy must be \(H, W, 2\), got \(256, 256\)"):
        draw_guide(landmarks, np.zeros((SIZE, SIZE), np.float32))


def test_guide_is_fast() -> None:
    landmarks = face_with_regions(478, MEDIAPIPE_INNER_MOUTH, MEDIAPIPE_EYES)
    source = identity_flow() * 1.1
    draw_guide(landmarks, source)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        draw_guide(landmarks, source)
        times.append(time.perf_counter() - start)
    # The target is < 2 ms at 256; generous here, since the test machine is shared.
    assert np.median(times) < 0.01
