"""talkcodec.keypoints.model: similarity fit, fit/reconstruct round trip, shipped models, files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors import safe_open

from talkcodec.bitstream import BitstreamError, KeypointModelId
from talkcodec.entropy.keypoints import JOINT_TABLE_SHAPE
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.model import (
    POSE_DIMS,
    SHOULDER_DIMS,
    SHOULDER_WEIGHT,
    KeypointModel,
    landmark_error_px,
    similarity_fit,
)
from talkcodec.keypoints.registry import KEYPOINT_MODEL_FILES, load_keypoint_model

seeds = st.integers(0, 2**32 - 1)


def random_rotation(rng: np.random.Generator, max_angle: float = np.pi) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return cv2.Rodrigues(axis * rng.uniform(0, max_angle))[0]


def assert_proper_rotation(rotation: np.ndarray) -> None:
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-12)


@given(seeds)
def test_similarity_fit_recovers_a_known_transform(seed: int) -> None:
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(int(rng.integers(4, 200)), 3))
    scale, rotation = rng.uniform(0.1, 10), random_rotation(rng)
    shift = rng.uniform(-300, 300, size=3)
    target = scale * source @ rotation.T + shift

    fitted_scale, fitted_rotation, fitted_shift = similarity_fit(source, target)

    assert fitted_scale == pytest.approx(scale, rel=1e-9)
    np.testing.assert_allclose(fitted_rotation, rotation, atol=1e-9)
    np.testing.assert_allclose(fitted_shift, shift, atol=1e-9 * 300)
    assert_proper_rotation(fitted_rotation)


def fit_residual(
    source: np.ndarray, target: np.ndarray, scale: float, rotation: np.ndarray, shift: np.ndarray
) -> float:
    return float(((scale * source @ rotation.T + shift - target) ** 2).sum())


@given(seeds)
def test_similarity_fit_returns_the_best_proper_rotation_for_mirrored_points(seed: int) -> None:
    rng = np.random.default_rng(seed)
    source = rng.normal(size=(50, 3)) * [3.0, 2.0, 1.0]
    mirrored = source * [-1.0, 1.0, 1.0] @ random_rotation(rng).T + 5.0

    scale, rotation, shift = similarity_fit(source, mirrored)

    assert_proper_rotation(rotation)
    assert scale > 0
    best = fit_residual(source, mirrored, scale, rotation, shift)
    for axis in np.r_[np.eye(3), -np.eye(3), rng.normal(size=(10, 3))]:
        nudge = cv2.Rodrigues(0.02 * axis / np.linalg.norm(axis))[0]  # no nearby rotation is better
        assert fit_residual(source, mirrored, scale, rotation @ nudge, shift) > best


def test_similarity_fit_matches_mirrored_flat_points_with_a_half_turn() -> None:
    # A flat shape's mirror image is also a rotated copy, so a proper rotation fits it exactly.
    rng = np.random.default_rng(0)
    source = np.c_[rng.normal(size=(30, 2)), np.zeros(30)]
    mirrored = source * [-1.0, 1.0, 1.0]
    scale, rotation, shift = similarity_fit(source, mirrored)
    assert_proper_rotation(rotation)
    assert scale == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(scale * source @ rotation.T + shift, mirrored, atol=1e-12)


def model_params(model: KeypointModel, rng: np.random.Generator) -> np.ndarray:
    """(P,) plausible parameters: turned head, typical size and place, typical expression."""
    rotation_vector = cv2.Rodrigues(random_rotation(rng, max_angle=0.4))[0].ravel()
    log_scale = np.log(model.nominal_scale) + rng.normal(0, 0.1)
    shift = rng.normal(128, 15, size=2)
    expression = rng.normal(0, model.param_std[POSE_DIMS : POSE_DIMS + model.expression_dims])
    shoulders = rng.normal(model.param_mean[-SHOULDER_DIMS:], 10)
    return np.concatenate([rotation_vector, [log_scale], shift, expression, shoulders])


@pytest.mark.parametrize("model_id", list(KEYPOINT_MODEL_FILES))
@pytest.mark.parametrize("crop_size", [256, 512])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_recovers_landmarks_and_params_made_by_the_model(
    model_id: KeypointModelId, crop_size: int, seed: int
) -> None:
    model = load_keypoint_model(model_id).truncated(32)
    params = model_params(model, np.random.default_rng(seed))
    landmarks = model.reconstruct(params, crop_size)

    fitted = model.fit(landmarks, crop_size)

    refit = model.reconstruct(fitted, crop_size)
    assert landmark_error_px(landmarks, refit, crop_size) < 0.001  # measured ~1e-6
    np.testing.assert_allclose(refit.shoulders, landmarks.shoulders)
    # Landmarks are float32, so the params come back to float32 precision of ~250 px.
    np.testing.assert_allclose(fitted[:-SHOULDER_DIMS], params[:-SHOULDER_DIMS], atol=1e-4)
    np.testing.assert_allclose(fitted[-SHOULDER_DIMS:], params[-SHOULDER_DIMS:], atol=1e-3)


def test_reconstruct_places_the_face_by_pose() -> None:
    model = load_keypoint_model(KeypointModelId.FAN_68_V2).truncated(0)
    params = np.zeros(model.num_params)
    params[3] = np.log(40.0)
    params[4:6] = [100.0, 120.0]
    landmarks = model.reconstruct(params, crop_size=512)
    # The mean shape is centred with unit RMS radius: a scaled, shifted copy, then x2 for 512.
    expected = (40.0 * model.mean_shape + [100.0, 120.0, 0.0]) * 2
    np.testing.assert_allclose(landmarks.face, expected, rtol=1e-6, atol=1e-4)


def test_landmark_error_is_measured_in_pixels_at_256() -> None:
    face = np.random.default_rng(0).uniform(0, 512, size=(10, 3)).astype(np.float32)
    shoulders = np.zeros((2, 2), dtype=np.float32)
    reference = Landmarks(face=face, shoulders=shoulders)
    moved = face + np.array([2.0, 0.0, 30.0], dtype=np.float32)  # z does not count
    decoded = Landmarks(face=moved, shoulders=shoulders)
    assert landmark_error_px(reference, decoded, crop_size=512) == pytest.approx(1.0, rel=1e-6)
    assert landmark_error_px(reference, decoded, crop_size=256) == pytest.approx(2.0, rel=1e-6)
    assert landmark_error_px(reference, reference, crop_size=512) == 0.0


@pytest.mark.parametrize(
    ("model_id", "num_points"),
    [(KeypointModelId.MEDIAPIPE_478_V2, 478), (KeypointModelId.FAN_68_V2, 68)],
)
def test_shipped_models_load_with_sane_statistics(
    model_id: KeypointModelId, num_points: int
) -> None:
    model = load_keypoint_model(model_id)
    assert model.model_id == model_id
    assert model.num_points == num_points
    assert model.expression_dims == 48
    assert model.num_params == POSE_DIMS + 48 + SHOULDER_DIMS
    assert model.mean_shape.shape == (num_points, 3)
    assert model.basis.shape == (48, num_points, 3)
    for stats in (model.param_mean, model.param_std, model.delta_std):
        assert stats.shape == (model.num_params,)
        assert np.all(np.isfinite(stats))
    assert np.all(model.param_std > 0)
    assert np.all(model.delta_std > 0)
    assert 20 < model.nominal_scale < 100
    # The conventions the model docstring promises.
    np.testing.assert_allclose(model.mean_shape.mean(axis=0), 0, atol=1e-6)
    assert np.sqrt((model.mean_shape**2).sum(axis=1).mean()) == pytest.approx(1, rel=1e-6)
    np.testing.assert_allclose((model.basis**2).sum(axis=(1, 2)), num_points, rtol=1e-5)
    # The entropy coder's table: counts of predicted-frame symbols on the training clips.
    assert model.residual_counts is not None
    assert model.residual_counts.ndim == 3
    assert np.all(model.residual_counts >= 0)
    assert model.residual_counts.sum() > 100_000
    # The joint (V3) coder's table and its strictly lower triangular change predictor.
    assert model.joint_counts is not None
    assert model.joint_counts.shape == JOINT_TABLE_SHAPE
    assert np.all(model.joint_counts >= 0)
    assert model.joint_counts.sum() > 100_000
    assert model.change_predictor is not None
    assert model.change_predictor.shape == (model.num_params, model.num_params)
    assert not np.any(np.triu(model.change_predictor))
    assert np.any(model.change_predictor)


def test_image_weights_measure_how_far_each_parameter_moves_the_face() -> None:
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2).truncated(32)
    weights = model.image_weights()
    assert weights.shape == (model.num_params,)
    # A shift moves every point by exactly as many pixels; shoulders weigh SHOULDER_WEIGHT.
    np.testing.assert_allclose(weights[4:6], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(weights[-SHOULDER_DIMS:], SHOULDER_WEIGHT)
    # Pitch and yaw move the face mostly in depth: far less in the image than roll does.
    assert np.all(weights[0:2] < 0.25 * weights[2])
    # With the steps of quantisation_steps, one step of any face parameter moves the points
    # by about step_px in the image (pitch and yaw included, thanks to their coarser step).
    step_px = 0.3
    motion = np.sqrt(weights * model.quantisation_steps(step_px) ** 2)[:-SHOULDER_DIMS]
    assert np.all((0.7 * step_px < motion) & (motion < 1.1 * step_px))


@pytest.mark.parametrize("kept", [0, 1, 32, 48])
def test_truncated_keeps_pose_first_expressions_and_shoulders(kept: int) -> None:
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2)
    small = model.truncated(kept)
    assert small.expression_dims == kept
    assert small.num_params == POSE_DIMS + kept + SHOULDER_DIMS
    np.testing.assert_array_equal(small.basis, model.basis[:kept])
    for stats, full in [(small.param_std, model.param_std), (small.delta_std, model.delta_std)]:
        np.testing.assert_array_equal(stats[: POSE_DIMS + kept], full[: POSE_DIMS + kept])
        np.testing.assert_array_equal(stats[-SHOULDER_DIMS:], full[-SHOULDER_DIMS:])
    assert len(small.quantisation_steps(0.3)) == small.num_params
    # The change predictor keeps the rows and columns of the kept parameters.
    keep = [*range(POSE_DIMS + kept), *range(model.num_params - SHOULDER_DIMS, model.num_params)]
    assert model.change_predictor is not None and small.change_predictor is not None
    np.testing.assert_array_equal(small.change_predictor, model.change_predictor[keep][:, keep])


@pytest.mark.parametrize("kept", [49, -1])
def test_truncated_rejects_impossible_sizes(kept: int) -> None:
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2)
    with pytest.raises(ValueError, match=r"^expression_dims must be 0\.\.48$"):
        model.truncated(kept)


def test_fit_rejects_the_wrong_number_of_points() -> None:
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2)
    fan = load_keypoint_model(KeypointModelId.FAN_68_V2)
    landmarks = fan.reconstruct(fan.param_mean, crop_size=256)
    with pytest.raises(ValueError, match="^model expects 478 points, got 68$"):
        model.fit(landmarks, crop_size=256)


@pytest.mark.parametrize("model_id", list(KEYPOINT_MODEL_FILES))
def test_save_load_round_trip(model_id: KeypointModelId, tmp_path: Path) -> None:
    model = load_keypoint_model(model_id)
    path = tmp_path / "model.safetensors"
    model.save(path, metadata={"source": "test"})

    loaded = KeypointModel.load(path, model_id)

    assert loaded.model_id == model_id
    assert loaded.nominal_scale == model.nominal_scale
    names = ("mean_shape", "basis", "param_mean", "param_std", "delta_std", "residual_counts")
    for name in (*names, "joint_counts", "change_predictor"):
        assert np.array_equal(getattr(loaded, name), getattr(model, name)), name
    with safe_open(str(path), framework="numpy") as stored:
        assert stored.metadata() == {"model_id": str(int(model_id)), "source": "test"}


@pytest.mark.parametrize("retired", [KeypointModelId.MEDIAPIPE_478_V1, KeypointModelId.FAN_68_V1])
def test_retired_models_say_so_and_never_decode_wrongly(retired: KeypointModelId) -> None:
    with pytest.raises(BitstreamError, match=f"keypoint model {retired.name} was coded by an "):
        load_keypoint_model(retired)
