"""Entropy coding of per-frame keypoint parameters with constriction.

Each parameter is quantised with its own step (see KeypointModel.quantisation_steps). A frame is
either intra-coded (each index under a Gaussian fitted to the training statistics, no state) or
predicted: each index's change from the previous decoded frame is one symbol of a categorical
table (RESIDUAL_LIMIT either side, and an escape whose change follows under a wide Laplace),
chosen by the parameter's group (pose, expression, shoulders) and a context: how much that
parameter moved lately (a running mean of its absolute changes, bucketed by
CONTEXT_THRESHOLDS). The tables are counted on the training clips
(`python -m talkcodec.entropy.fit_contexts`) and ship in the keypoint model's file.

The encoder's quantiser can be rate-distortion optimised (rdo_lambda_px2 > 0): where moving a
parameter to its nearest index would cost more bits than the image error it removes is worth
(rdo_lambda_px2: squared px of mean face-point error per bit, KeypointModel.image_weights), it
keeps the previous index or takes the other neighbour. It makes that choice at a few prices of
a bit and keeps the one whose real payload (whole bytes) is worth its error, the frame exactly
as predicted (an empty payload) among them. This is only a choice of indices: the decoder
needs nothing of it. Quantise each frame once, just before coding it.

Encoder and decoder update the contexts from decoded indices only, with IEEE-exact arithmetic
(no transcendental functions), so they agree exactly; an intra frame every
`refresh_interval_frames` resets the state, so a lost packet stops hurting at the next refresh.

Predicted payload: empty for a frame exactly as predicted (no parameter changed); otherwise
the categorical symbols of all P parameters, then the escaped changes in parameter order, in
one range-coded stream trimmed to whole bytes, at least one (rangecoder.encode_parts). Intra
payload: the P indices, range-coded under the intra Gaussians (rangecoder.encode_symbols).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkcodec.bitstream import BitstreamError
from talkcodec.entropy.rangecoder import (
    StagedDecoder,
    SymbolModel,
    decode_symbols,
    encode_parts,
    encode_symbols,
)
from talkcodec.keypoints.model import POSE_DIMS, SHOULDER_DIMS, KeypointModel

MAX_INDEX = 2047  # quantised parameters are clamped to +-MAX_INDEX
_MIN_INTRA_STD = 0.5
_MIN_LAPLACE_SCALE = 0.08
_SCALE_MEMORY = 0.85  # weight of the old scale in the per-parameter running estimate

RESIDUAL_LIMIT = 6  # changes in -6..6 are table symbols 0..12, larger ones escape
ESCAPE = 2 * RESIDUAL_LIMIT + 1
NUM_SYMBOLS = ESCAPE + 1
NUM_GROUPS = 3  # pose, expression, shoulders
# Bucket edges of the running mean absolute change (in quantiser steps): about half an octave
# apart from _MIN_LAPLACE_SCALE up. Literal constants, so both sides bucket identically.
CONTEXT_THRESHOLDS = np.array(
    [0.11, 0.16, 0.23, 0.32, 0.45, 0.64, 0.9, 1.28, 1.8, 2.56, 3.6, 5.1, 7.2, 10.2]
)
NUM_CONTEXTS = len(CONTEXT_THRESHOLDS) + 1
_MIN_ESCAPE_SCALE = 2.0
# The operating point of the rate-distortion optimised quantiser, chosen on dev
# (benchmarks/keypoints.py, results/keypoints.json): at 0.3 px and 32 expression dims it keeps
# the mean landmark error under 0.6 px. The context tables are counted at it. A KeypointEncoder
# uses it only when asked (rdo_lambda_px2): by default it rounds, so that every caller that
# quantises frames without coding them (StreamEncoder.sent_keypoints for training data) gets
# the values the stream decodes.
RDO_LAMBDA_PX2 = 0.008
# The prices of a bit (times rdo_lambda_px2) whose choices the frame-level decision compares.
_RDO_SCALES = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 8.0)


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


def parameter_groups(num_params: int) -> np.ndarray:
    """(P,) int group of each parameter: 0 pose, 1 expression, 2 shoulders."""
    groups = np.ones(num_params, dtype=np.int64)
    groups[:POSE_DIMS] = 0
    groups[num_params - SHOULDER_DIMS :] = 2
    return groups


def residual_symbols(change: np.ndarray) -> np.ndarray:
    """(P,) table symbols of (P,) index changes: change + RESIDUAL_LIMIT, or ESCAPE."""
    escaped = np.abs(change) > RESIDUAL_LIMIT
    return np.where(escaped, ESCAPE, change + RESIDUAL_LIMIT).astype(np.int32)


class _CodingState:
    """What encoder and decoder both know: the models they code with and how they adapt."""

    def __init__(self, model: KeypointModel, quantiser: Quantiser) -> None:
        if model.residual_counts is None:
            raise ValueError(
                "keypoint model has no residual_counts table; count it with "
                "python -m talkcodec.entropy.fit_contexts"
            )
        counts = np.asarray(model.residual_counts, dtype=np.float64)
        if counts.shape != (NUM_GROUPS, NUM_CONTEXTS, NUM_SYMBOLS):
            raise ValueError(
                f"residual_counts must be {(NUM_GROUPS, NUM_CONTEXTS, NUM_SYMBOLS)}, "
                f"got {counts.shape}"
            )
        steps = quantiser.steps
        self.intra_model = SymbolModel(
            "gaussian",
            means=np.clip(np.rint(model.param_mean / steps), -MAX_INDEX, MAX_INDEX),
            scales=np.maximum(model.param_std / steps, _MIN_INTRA_STD),
            max_abs=MAX_INDEX,
        )
        # Integer counts plus one, divided once: the same floats on both sides.
        self._tables = (counts + 1) / (counts + 1).sum(axis=-1, keepdims=True)
        self._groups = parameter_groups(model.num_params)
        # A Laplace with standard deviation sigma has scale b = sigma / sqrt(2).
        self._initial_scales = np.maximum(model.delta_std / steps / np.sqrt(2), _MIN_LAPLACE_SCALE)
        self.previous: np.ndarray | None = None
        self.scales = self._initial_scales.copy()

    def contexts(self) -> np.ndarray:
        """(P,) int context of each parameter for the next predicted frame."""
        return np.searchsorted(CONTEXT_THRESHOLDS, self.scales, side="right")

    def predicted_probabilities(self) -> np.ndarray:
        """(P, NUM_SYMBOLS) table row of each parameter for the next predicted frame."""
        return self._tables[self._groups, self.contexts()]

    def escape_model(self, escaped: np.ndarray) -> SymbolModel:
        """The Laplace of the escaped changes ((P,) bool mask), in parameter order."""
        scales = np.maximum(4 * self.scales[escaped], _MIN_ESCAPE_SCALE)
        return SymbolModel("laplace", np.zeros_like(scales), scales, max_abs=2 * MAX_INDEX)

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
    """Codes one stream's frames; intra every refresh_interval_frames (0: only the first).

    rdo_lambda_px2: what one bit is worth in squared px of mean face-point error; 0 (the
    default): plain rounding, every decoded parameter within half a step; RDO_LAMBDA_PX2 is
    the measured operating point.
    """

    def __init__(
        self,
        model: KeypointModel,
        step_px: float,
        refresh_interval_frames: int = 25,
        rdo_lambda_px2: float = 0.0,
    ) -> None:
        if refresh_interval_frames < 0:
            raise ValueError("refresh_interval_frames must be >= 0")
        if not rdo_lambda_px2 >= 0:
            raise ValueError(f"rdo_lambda_px2 must be >= 0, got {rdo_lambda_px2}")
        self.quantiser = make_quantiser(model, step_px)
        self.refresh_interval_frames = refresh_interval_frames
        self.rdo_lambda_px2 = rdo_lambda_px2
        # Squared px of image error per squared index step of each parameter.
        self._error_weights = model.image_weights() * self.quantiser.steps**2
        self._state = _CodingState(model, self.quantiser)
        self._since_intra = 0

    def encode(self, params: np.ndarray, force_intra: bool = False) -> CodedKeypoints:
        """Code (P,) parameters as the next frame of the stream."""
        return self.encode_indices(self.quantise(params), force_intra)

    def quantise(self, params: np.ndarray) -> np.ndarray:
        """(P,) int32 quantiser indices of (P,) parameters: what the next frame codes.

        Rounded, or with rdo_lambda_px2 > 0 rate-distortion optimised against the last coded
        frame (see the module docstring): then quantise each frame once, just before
        encode_indices codes it.
        """
        params = np.asarray(params, dtype=np.float64)
        previous = self._state.previous
        if previous is None or self.rdo_lambda_px2 == 0:
            return self.quantiser.indices(params)
        scaled = params / self.quantiser.steps
        # Each parameter's choice under a few prices of a bit, and the frame as predicted (an
        # empty payload); the frame takes the one whose real payload size is worth its error.
        options = [self._choose(scaled, self.rdo_lambda_px2 * scale) for scale in _RDO_SCALES]
        options.append(previous)
        costs = [
            float(np.sum(self._error_weights * (option - scaled) ** 2))
            + self.rdo_lambda_px2 * 8 * len(self._predicted_payload(option))
            for option in options
        ]
        return options[int(np.argmin(costs))].astype(np.int32)

    def _choose(self, scaled: np.ndarray, rdo_lambda_px2: float) -> np.ndarray:
        """(P,) int64 indices, each parameter's lower or upper neighbour or its previous index,
        whichever costs least in error plus rdo_lambda_px2 per (estimated) bit."""
        previous = self._state.previous
        assert previous is not None
        lower = np.floor(scaled)
        candidates = np.clip(np.stack([lower, lower + 1, previous]), -MAX_INDEX, MAX_INDEX)
        candidates = candidates.astype(np.int64)
        bits = self._change_bits(candidates - previous)
        cost = self._error_weights * (candidates - scaled) ** 2 + rdo_lambda_px2 * bits
        return candidates[np.argmin(cost, axis=0), np.arange(len(scaled))]

    def _change_bits(self, changes: np.ndarray) -> np.ndarray:
        """(C, P) approximate bits of (C, P) candidate index changes in the next predicted frame."""
        table_bits = -np.log2(self._state.predicted_probabilities())  # (P, NUM_SYMBOLS)
        symbols = residual_symbols(changes)
        bits = np.take_along_axis(table_bits, symbols.T, axis=1).T
        escaped = symbols == ESCAPE
        return bits + np.where(escaped, 2 * np.log2(np.maximum(np.abs(changes), 1)) + 1, 0)

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
            payload = self._predicted_payload(indices)
            self._state.after_predicted(indices)
            self._since_intra += 1
        return CodedKeypoints(payload, intra, self.quantiser.values(indices))

    def _predicted_payload(self, indices: np.ndarray) -> bytes:
        """The payload of (P,) indices as the next predicted frame: empty for the frame exactly
        as predicted, at least a byte for any other."""
        assert self._state.previous is not None
        change = indices.astype(np.int32) - self._state.previous
        if not np.any(change):
            return b""
        symbols = residual_symbols(change)
        escaped = symbols == ESCAPE
        parts = [
            (symbols, self._state.predicted_probabilities()),
            (change[escaped], self._state.escape_model(escaped)),
        ]
        return encode_parts(parts, min_bytes=1)

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
            # No clipping to +-MAX_INDEX: decode_symbols keeps every symbol within it.
            indices = decode_symbols(payload, self._state.intra_model)
            self._state.after_intra(indices)
        else:
            if self._state.previous is None:
                raise BitstreamError("predicted keypoint frame without a decoded previous frame")
            change = np.zeros_like(self._state.previous)
            if payload:  # empty: the frame exactly as predicted
                decoder = StagedDecoder(payload)
                symbols = decoder.categorical(self._state.predicted_probabilities())
                escaped = symbols == ESCAPE
                change = symbols - RESIDUAL_LIMIT
                # The escape model keeps these within +-2 * MAX_INDEX.
                change[escaped] = decoder.symbols(self._state.escape_model(escaped))
            indices = np.clip(self._state.previous + change, -MAX_INDEX, MAX_INDEX)
            self._state.after_predicted(indices.astype(np.int32))
        return self.quantiser.values(indices)

    def decode_intra(self, payload: bytes) -> np.ndarray:
        """(P,) parameters of a self-contained intra frame, leaving the stream state alone."""
        return self.quantiser.values(decode_symbols(payload, self._state.intra_model))
