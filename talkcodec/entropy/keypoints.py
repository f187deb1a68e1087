"""Entropy coding of per-frame keypoint parameters with constriction.

Each parameter is quantised with its own step (see KeypointModel.quantisation_steps). A frame is
either intra-coded (each index under a Gaussian fitted to the training statistics, no state) or
predicted: the difference to the previous decoded frame's index under a Laplace distribution
whose scale follows the recent differences of that parameter. Encoder and decoder update the
scales from decoded indices only, so they agree exactly; an intra frame every
`refresh_interval_frames` resets the state, so a lost packet stops hurting at the next refresh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkcodec.bitstream import BitstreamError
from talkcodec.entropy.rangecoder import SymbolModel, decode_symbols, encode_symbols
from talkcodec.keypoints.model import KeypointModel

MAX_INDEX = 2047  # quantised parameters are clamped to +-MAX_INDEX
_MIN_INTRA_STD = 0.5
_MIN_LAPLACE_SCALE = 0.08
_SCALE_MEMORY = 0.85  # weight of the old scale in the per-parameter running estimate


@dataclass(frozen=True)
class Quantiser:
    """Uniform scalar quantiser with one step per parameter. steps: (P,)."""

    steps: np.ndarray

    def indices(self, params: np.ndarray) -> np.ndarray:
        """(P,) int32 indices of (P,) parameters, clamped to +-MAX_INDEX."""
        return np.clip(np.rint(params / self.steps), -MAX_INDEX, MAX_INDEX).astype(np.int32)

    def values(self, indices: np.ndarray) -> np.ndarray:
        return indices.astype(np.float64) * self.steps


def make_quantiser(model: KeypointModel, step_px: float) -> Quantiser:
    if not step_px > 0:
        raise ValueError(f"keypoint step must be > 0 px, got {step_px}")
    return Quantiser(model.quantisation_steps(step_px))


class _CodingState:
    """What encoder and decoder both know: the models they code with and how they adapt."""

    def __init__(self, model: KeypointModel, quantiser: Quantiser) -> None:
        steps = quantiser.steps
        self.intra_model = SymbolModel(
            "gaussian",
            means=np.clip(np.rint(model.param_mean / steps), -MAX_INDEX, MAX_INDEX),
            scales=np.maximum(model.param_std / steps, _MIN_INTRA_STD),
            max_abs=MAX_INDEX,
        )
        # A Laplace with standard deviation sigma has scale b = sigma / sqrt(2).
        self._initial_scales = np.maximum(model.delta_std / steps / np.sqrt(2), _MIN_LAPLACE_SCALE)
        self.previous: np.ndarray | None = None
        self.scales = self._initial_scales.copy()

    def predicted_model(self) -> SymbolModel:
        return SymbolModel(
            "laplace", np.zeros_like(self.scales), self.scales.copy(), max_abs=2 * MAX_INDEX
        )

    def after_intra(self, indices: np.ndarray) -> None:
        self.previous = indices
        self.scales = self._initial_scales.copy()

    def after_predicted(self, indices: np.ndarray) -> None:
        assert self.previous is not None
        change = np.abs(indices - self.previous).astype(np.float64)
        self.scales = np.maximum(
            _SCALE_MEMORY * self.scales + (1 - _SCALE_MEMORY) * change, _MIN_LAPLACE_SCALE
        )
        self.previous = indices


@dataclass(frozen=True)
class CodedKeypoints:
    """One coded frame: payload bytes, whether it is intra, and the parameters it decodes to."""

    payload: bytes
    intra: bool
    decoded_params: np.ndarray


class KeypointEncoder:
    """Codes one stream's frames; intra every refresh_interval_frames (0: only the first)."""

    def __init__(
        self, model: KeypointModel, step_px: float, refresh_interval_frames: int = 25
    ) -> None:
        if refresh_interval_frames < 0:
            raise ValueError("refresh_interval_frames must be >= 0")
        self.quantiser = make_quantiser(model, step_px)
        self.refresh_interval_frames = refresh_interval_frames
        self._state = _CodingState(model, self.quantiser)
        self._since_intra = 0

    def encode(self, params: np.ndarray, force_intra: bool = False) -> CodedKeypoints:
        """Code (P,) parameters as the next frame of the stream."""
        return self.encode_indices(self.quantise(params), force_intra)

    def quantise(self, params: np.ndarray) -> np.ndarray:
        """(P,) int32 quantiser indices of (P,) parameters: what a frame codes."""
        return self.quantiser.indices(np.asarray(params, dtype=np.float64))

    def encode_indices(self, indices: np.ndarray, force_intra: bool = False) -> CodedKeypoints:
        """Code (P,) quantiser indices (quantise()) as the next frame of the stream."""
        intra = (
            force_intra
            or self._state.previous is None
            or (0 < self.refresh_interval_frames <= self._since_intra)
        )
        if intra:
            payload = encode_symbols(indices, self._state.intra_model)
            self._state.after_intra(indices)
            self._since_intra = 1
        else:
            assert self._state.previous is not None
            payload = encode_symbols(indices - self._state.previous, self._state.predicted_model())
            self._state.after_predicted(indices)
            self._since_intra += 1
        return CodedKeypoints(payload, intra, self.quantiser.values(indices))

    def encode_intra(self, params: np.ndarray) -> bytes:
        """Code one frame on its own, leaving the stream state alone (for keyframe packets)."""
        indices = self.quantiser.indices(np.asarray(params, dtype=np.float64))
        return encode_symbols(indices, self._state.intra_model)


class KeypointDecoder:
    """Decodes one stream's frames in sending order; after a gap, wait for an intra frame."""

    def __init__(self, model: KeypointModel, step_px: float) -> None:
        self.quantiser = make_quantiser(model, step_px)
        self._state = _CodingState(model, self.quantiser)

    @property
    def synchronised(self) -> bool:
        """Whether a predicted frame can be decoded now (an intra frame was seen, no gap)."""
        return self._state.previous is not None

    def reset(self) -> None:
        """Forget the state, e.g. after a lost packet: only an intra frame decodes next."""
        self._state.previous = None

    def decode(self, payload: bytes, intra: bool) -> np.ndarray:
        """(P,) parameters of the next frame; BitstreamError if it cannot be decoded."""
        if intra:
            indices = self._decode_indices(payload, self._state.intra_model)
            self._state.after_intra(indices)
        else:
            if self._state.previous is None:
                raise BitstreamError("predicted keypoint frame without a decoded previous frame")
            change = self._decode_indices(payload, self._state.predicted_model())
            indices = np.clip(self._state.previous + change, -MAX_INDEX, MAX_INDEX)
            self._state.after_predicted(indices.astype(np.int32))
        return self.quantiser.values(indices)

    def decode_intra(self, payload: bytes) -> np.ndarray:
        """(P,) parameters of a self-contained intra frame, leaving the stream state alone."""
        return self.quantiser.values(self._decode_indices(payload, self._state.intra_model))

    @staticmethod
    def _decode_indices(payload: bytes, model: SymbolModel) -> np.ndarray:
        # No clipping to +-MAX_INDEX: a predicted frame's changes reach +-2 * MAX_INDEX, and
        # decode_symbols already keeps every symbol within the model's +-max_abs.
        return decode_symbols(payload, model)
