"""Compact keypoint parameters: rigid head pose + linear expression basis + shoulders.

A frame's landmarks X (N, 3) are modelled as X = s R (M + sum_k c_k B_k) + t, with M the mean
shape (zero-centred, unit RMS radius), B_k expression directions scaled so that a coefficient
of 1 moves the points by 1 (RMS, in mean-shape units), R a rotation, s a scale and t a shift.
The basis is learned from `../shared/data/train` by `python -m talkcodec.keypoints.fit_basis`.

Positions are measured in "pixels at 256": crop pixels times 256 / crop size, so one model and
one quantiser serve 256x256 and 512x512 streams alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import load_file, save_file

from talkcodec.bitstream import KeypointModelId
from talkcodec.keypoints.landmarks import Landmarks

REFERENCE_SIZE_PX = 256
POSE_DIMS = 6  # rotation vector (3), log scale (1), shift x, y (2)
SHOULDER_DIMS = 4
# Rotations about the image's x and y axes (pitch, yaw) move the face points in the image
# about 0.35 times as far as an in-plane rotation of the same angle (measured with
# image_weights on the shipped basis): their step is this much coarser.
OUT_OF_PLANE_FACTOR = 2.5
# Shoulders are not face points: in image_weights a shoulder coordinate weighs this much (px^2
# per px^2), so a coder that trades accuracy for bits keeps them only roughly.
SHOULDER_WEIGHT = 0.02


@dataclass(frozen=True)
class KeypointModel:
    """The shipped basis and the statistics the entropy coder needs.

    mean_shape: (N, 3). basis: (K, N, 3), sum of squares of each B_k equals N.
    param_mean, param_std: (P,) statistics of the parameter vector over the training frames.
    delta_std: (P,) standard deviation of frame-to-frame parameter changes at 25 fps.
    nominal_scale: median s in pixels at 256 (a typical face's RMS radius).
    residual_counts: (G, C, S) int64 or None, the entropy coder's table of predicted-frame
        residuals by parameter group, context and symbol, counted on the training clips
        (`python -m talkcodec.entropy.fit_contexts`; the layout is the coder's). The V2 ids'
        coder uses it.
    joint_counts: int64 or None, the V3 ids' table of predicted-frame changes by group,
        context and the frame's earlier changes (layout: talkcodec.entropy.keypoints
        JOINT_TABLE_SHAPE), counted the same way.
    change_predictor: (P, P) int64 or None, strictly lower triangular: the V3 coder's linear
        prediction of each parameter's change from the changes coded before it in the same
        frame, in 1/PREDICTOR_UNIT (talkcodec.entropy.keypoints). Truncating the model keeps the
        rows and columns of the kept parameters.
    """

    model_id: KeypointModelId
    mean_shape: np.ndarray
    basis: np.ndarray
    param_mean: np.ndarray
    param_std: np.ndarray
    delta_std: np.ndarray
    nominal_scale: float
    residual_counts: np.ndarray | None = None
    joint_counts: np.ndarray | None = None
    change_predictor: np.ndarray | None = None

    @property
    def num_points(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def expression_dims(self) -> int:
        return int(self.basis.shape[0])

    @property
    def num_params(self) -> int:
        return POSE_DIMS + self.expression_dims + SHOULDER_DIMS

    def truncated(self, expression_dims: int) -> KeypointModel:
        """The same model with only the first `expression_dims` expression directions."""
        if not 0 <= expression_dims <= self.expression_dims:
            raise ValueError(f"expression_dims must be 0..{self.expression_dims}")
        keep = np.r_[
            np.arange(POSE_DIMS + expression_dims),
            np.arange(self.num_params - SHOULDER_DIMS, self.num_params),
        ]
        predictor = self.change_predictor
        return KeypointModel(
            self.model_id,
            self.mean_shape,
            self.basis[:expression_dims],
            self.param_mean[keep],
            self.param_std[keep],
            self.delta_std[keep],
            self.nominal_scale,
            self.residual_counts,
            self.joint_counts,
            None if predictor is None else predictor[np.ix_(keep, keep)],
        )

    def quantisation_steps(self, step_px: float, shoulder_factor: float = 4.0) -> np.ndarray:
        """(P,) quantiser step of each parameter such that one step moves points ~step_px.

        Rotation, log scale and expression move points by about nominal_scale per unit (pitch
        and yaw mostly in depth, so their steps are OUT_OF_PLANE_FACTOR coarser); shifts are in
        pixels; shoulders are coarser since they matter less and jitter more.
        """
        angular = step_px / self.nominal_scale
        return np.concatenate(
            [
                np.full(2, angular * OUT_OF_PLANE_FACTOR),
                np.full(2, angular),
                np.full(2, step_px),
                np.full(self.expression_dims, angular),
                np.full(SHOULDER_DIMS, step_px * shoulder_factor),
            ]
        )

    def image_weights(self) -> np.ndarray:
        """(P,) mean squared 2-D motion of the face points per unit of each parameter.

        In px^2 at 256 per unit^2, at the training mean of the parameters (central differences).
        Shoulder coordinates weigh SHOULDER_WEIGHT. A coder uses them to weigh each parameter's
        quantisation error by what it does to the picture.
        """
        base = self.param_mean.astype(np.float64)
        weights = np.full(self.num_params, SHOULDER_WEIGHT)
        delta = 1e-4
        for index in range(self.num_params - SHOULDER_DIMS):
            up, down = base.copy(), base.copy()
            up[index] += delta
            down[index] -= delta
            motion = (self._face_points(up) - self._face_points(down))[:, :2] / (2 * delta)
            weights[index] = float(np.mean(np.sum(motion**2, axis=1)))
        return weights

    # -- fitting and reconstruction -------------------------------------------------------

    def shape(self, coefficients: np.ndarray) -> np.ndarray:
        """(N, 3) shape in model space for (K,) coefficients."""
        return self.mean_shape + np.tensordot(coefficients, self.basis, axes=1)

    def fit(self, landmarks: Landmarks, crop_size: int, iterations: int = 3) -> np.ndarray:
        """(P,) parameters of landmarks given in pixels of a crop_size x crop_size crop."""
        to_ref = REFERENCE_SIZE_PX / crop_size
        points = landmarks.face.astype(np.float64) * to_ref  # (N, 3)
        if points.shape[0] != self.num_points:
            raise ValueError(f"model expects {self.num_points} points, got {points.shape[0]}")
        coefficients = np.zeros(self.expression_dims)
        for _ in range(iterations):
            scale, rotation, shift = similarity_fit(self.shape(coefficients), points)
            in_model_space = (points - shift) @ rotation / scale
            residual = in_model_space - self.mean_shape
            coefficients = (
                np.tensordot(self.basis, residual, axes=([1, 2], [0, 1])) / self.num_points
            )
        rotation_vector = cv2.Rodrigues(rotation)[0].ravel()
        shoulders = landmarks.shoulders.astype(np.float64).ravel() * to_ref
        return np.concatenate(
            [rotation_vector, [np.log(scale)], shift[:2], coefficients, shoulders]
        )

    def reconstruct(self, params: np.ndarray, crop_size: int) -> Landmarks:
        """Landmarks in crop pixels from (P,) parameters (z relative to the head centre)."""
        params = np.asarray(params, dtype=np.float64)
        face = self._face_points(params)
        from_ref = crop_size / REFERENCE_SIZE_PX
        shoulders = params[-SHOULDER_DIMS:].reshape(2, 2) * from_ref
        return Landmarks(
            face=(face * from_ref).astype(np.float32), shoulders=shoulders.astype(np.float32)
        )

    def _face_points(self, params: np.ndarray) -> np.ndarray:
        """(N, 3) float64 face points in pixels at 256 for (P,) float64 parameters."""
        rotation = cv2.Rodrigues(params[0:3].reshape(3, 1))[0]
        scale = np.exp(params[3])
        shift = np.array([params[4], params[5], 0.0])
        coefficients = params[POSE_DIMS : POSE_DIMS + self.expression_dims]
        return scale * self.shape(coefficients) @ rotation.T + shift

    # -- files ----------------------------------------------------------------------------

    def save(self, path: Path, metadata: dict[str, str] | None = None) -> None:
        tensors: dict[str, np.ndarray] = {
            "mean_shape": self.mean_shape.astype(np.float32),
            "basis": self.basis.astype(np.float32),
            "param_mean": self.param_mean.astype(np.float64),
            "param_std": self.param_std.astype(np.float64),
            "delta_std": self.delta_std.astype(np.float64),
            "nominal_scale": np.array([self.nominal_scale], dtype=np.float64),
        }
        if self.residual_counts is not None:
            tensors["residual_counts"] = self.residual_counts.astype(np.int64)
        if self.joint_counts is not None:
            tensors["joint_counts"] = self.joint_counts.astype(np.int64)
        if self.change_predictor is not None:
            tensors["change_predictor"] = self.change_predictor.astype(np.int64)
        info = {"model_id": str(int(self.model_id))} | (metadata or {})
        save_file(tensors, str(path), metadata=info)

    @classmethod
    def load(cls, path: Path, model_id: KeypointModelId) -> KeypointModel:
        tensors = load_file(str(path))
        return cls(
            model_id=model_id,
            mean_shape=tensors["mean_shape"].astype(np.float64),
            basis=tensors["basis"].astype(np.float64),
            param_mean=tensors["param_mean"],
            param_std=tensors["param_std"],
            delta_std=tensors["delta_std"],
            nominal_scale=float(tensors["nominal_scale"][0]),
            residual_counts=tensors.get("residual_counts"),
            joint_counts=tensors.get("joint_counts"),
            change_predictor=tensors.get("change_predictor"),
        )


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares (s, R, t) with target ~ s * source @ R.T + t (Umeyama 1991).

    source, target: (N, 3). Returns scale, (3, 3) proper rotation, (3,) shift.
    """
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_c, target_c = source - source_mean, target - target_mean
    covariance = target_c.T @ source_c / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = (u * sign) @ vt
    variance = (source_c**2).sum() / len(source)
    scale = float((singular * sign).sum() / variance)
    shift = target_mean - scale * source_mean @ rotation.T
    return scale, rotation, shift


def landmark_error_px(reference: Landmarks, decoded: Landmarks, crop_size: int) -> float:
    """Mean 2-D distance between face points, in pixels at 256x256."""
    distance = np.linalg.norm(reference.face[:, :2] - decoded.face[:, :2], axis=1)
    return float(distance.mean() * REFERENCE_SIZE_PX / crop_size)
