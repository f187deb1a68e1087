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

Two coders share all of this; the stream's keypoint model id says which one wrote it
(joint_coded):
- V2 ids: each parameter's symbol is chosen by its group and context alone (residual_counts,
  (NUM_GROUPS, NUM_CONTEXTS, NUM_SYMBOLS); escapes are one symbol).
- V3 ids (2026-12-07; EncoderConfig.keypoint_coder "v3"): a parameter's symbol also depends
  on the changes coded before it in the same frame, which the decoder has by then. An
  integer linear prediction from those changes (change_predictor, in 1/PREDICTOR_UNIT; the
  changes clipped to +-(RESIDUAL_LIMIT + 1), i.e. what the symbols alone say) gives a
  direction: where it points down the symbol is mirrored, so one table serves both
  directions; its size is one context.
  The share of earlier parameters that changed at all (activity) is another, and the sign of
  the parameter's own last change relative to that direction a third. Escapes are two symbols,
  down and up, so the symbols alone give the prediction. Table joint_counts,
  JOINT_TABLE_SHAPE. All of it is integer arithmetic but the scales, which are V2's.
  Measured on dev (benchmarks/keypoints.py): about 2 bits a frame fewer than V2 at the same
  error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkcodec.bitstream import BitstreamError, KeypointModelId
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

# The V3 (joint) coder. Symbols 0..2L are changes -L..L, then an escape down and an escape up.
ESCAPE_DOWN = ESCAPE
ESCAPE_UP = ESCAPE + 1
NUM_JOINT_SYMBOLS = ESCAPE_UP + 1
PREDICTOR_UNIT = 64  # change_predictor's weights are in 1/64
# |prediction| bucket edges in 1/PREDICTOR_UNIT steps; below the first, no direction.
PREDICTION_EDGES = (8, 24, 48)
# Bucket edges of the share of earlier parameters that changed, in 1/20: 0.15, 0.3, 0.5 (the
# share counts half a changed parameter more, so the first parameter sits in the middle).
ACTIVITY_EDGES_TWENTIETHS = (3, 6, 10)
NUM_RELATIONS = 3  # own last change against the direction: opposite, none, along
JOINT_TABLE_SHAPE = (
    NUM_GROUPS,
    NUM_CONTEXTS,
    len(PREDICTION_EDGES) + 1,
    len(ACTIVITY_EDGES_TWENTIETHS) + 1,
    NUM_RELATIONS,
    NUM_JOINT_SYMBOLS,
)
JOINT_CODED = frozenset({KeypointModelId.MEDIAPIPE_478_V3, KeypointModelId.FAN_68_V3})
# The operating point of the rate-distortion optimised quantiser, chosen on dev
# (benchmarks/keypoints.py, results/keypoints.json): at 0.3 px, 32 expression dims and a refresh
# every 4 s, the V3 coder keeps the mean landmark error where V2 had it at 0.008 (0.59 px) for
# 3.6 bits a frame fewer. The V3 table is counted at it (V2's at 0.008, refresh 50). A
# KeypointEncoder uses it only when asked (rdo_lambda_px2): by default it rounds, so that every
# caller that quantises frames without coding them (StreamEncoder.sent_keypoints for training
# data) gets the values the stream decodes.
RDO_LAMBDA_PX2 = 0.009
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


Model = SymbolModel | np.ndarray  # a part's model in rangecoder.encode_parts


def joint_symbols(change: np.ndarray) -> np.ndarray:
    """Joint-coder symbols of index changes: change + RESIDUAL_LIMIT, ESCAPE_DOWN or ESCAPE_UP."""
    symbols = change + RESIDUAL_LIMIT
    symbols = np.where(change < -RESIDUAL_LIMIT, ESCAPE_DOWN, symbols)
    return np.where(change > RESIDUAL_LIMIT, ESCAPE_UP, symbols).astype(np.int32)


def mirrored(symbols: np.ndarray) -> np.ndarray:
    """Joint-coder symbols of the opposite changes (an involution)."""
    flipped = np.where(symbols == ESCAPE_DOWN, ESCAPE_UP, 2 * RESIDUAL_LIMIT - symbols)
    return np.where(symbols == ESCAPE_UP, ESCAPE_DOWN, flipped).astype(np.int32)


def joint_coded(model_id: int) -> bool:
    """Whether streams of this keypoint model id are coded by the joint (V3) coder."""
    return model_id in JOINT_CODED


def _probabilities(counts: np.ndarray) -> np.ndarray:
    """Rows of a count table as probabilities, + 1/2 each: integers halved, divided once, so
    both sides get the same floats."""
    doubled = 2 * counts.astype(np.float64) + 1
    return doubled / doubled.sum(axis=-1, keepdims=True)


class _CodingState:
    """What encoder and decoder both know: the models they code with and how they adapt. The
    V2 coder's (each parameter by its group and context); _JointState is V3's."""

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
        self._init_common(model, quantiser)
        # Integer counts plus one, divided once: the same floats on both sides.
        self.table = ((counts + 1) / (counts + 1).sum(axis=-1, keepdims=True)).reshape(
            -1, NUM_SYMBOLS
        )

    def _init_common(self, model: KeypointModel, quantiser: Quantiser) -> None:
        steps = quantiser.steps
        self.intra_model = SymbolModel(
            "gaussian",
            means=np.clip(np.rint(model.param_mean / steps), -MAX_INDEX, MAX_INDEX),
            scales=np.maximum(model.param_std / steps, _MIN_INTRA_STD),
            max_abs=MAX_INDEX,
        )
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
        return self.table[self._groups * NUM_CONTEXTS + self.contexts()]

    def cells(self, change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P,) table rows and (P,) symbols a predicted frame with these index changes codes
        (what the table counts)."""
        return self._groups * NUM_CONTEXTS + self.contexts(), residual_symbols(change)

    def escape_model(self, escaped: np.ndarray) -> SymbolModel:
        """The Laplace of the escaped changes ((P,) bool mask), in parameter order."""
        scales = np.maximum(4 * self.scales[escaped], _MIN_ESCAPE_SCALE)
        return SymbolModel("laplace", np.zeros_like(scales), scales, max_abs=2 * MAX_INDEX)

    def payload_parts(self, change: np.ndarray) -> list[tuple[np.ndarray, Model]]:
        """What a predicted frame with these (P,) index changes codes, in order: its symbols,
        then the escaped changes."""
        rows, symbols = self.cells(change)
        escaped = np.abs(change) > RESIDUAL_LIMIT
        return [(symbols, self.table[rows]), (change[escaped], self.escape_model(escaped))]

    def change_bits(self, changes: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """(C, P) approximate bits of (C, P) candidate changes in the next predicted frame
        (reference: the (P,) change whose contexts they are judged in; unused here)."""
        table_bits = -np.log2(self.predicted_probabilities())  # (P, NUM_SYMBOLS)
        symbols = residual_symbols(changes)
        bits = np.take_along_axis(table_bits, symbols.T, axis=1).T
        escaped = symbols == ESCAPE
        return bits + np.where(escaped, 2 * np.log2(np.maximum(np.abs(changes), 1)) + 1, 0)

    def decode_changes(self, decoder: StagedDecoder) -> np.ndarray:
        """(P,) index changes of a predicted frame's payload."""
        symbols = decoder.categorical(self.predicted_probabilities())
        escaped = symbols == ESCAPE
        change = symbols - RESIDUAL_LIMIT
        # The escape model keeps these within +-2 * MAX_INDEX.
        change[escaped] = decoder.symbols(self.escape_model(escaped))
        return change

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


class _JointState(_CodingState):
    """The V3 coder's state: V2's scales, plus the frame's earlier changes as context (see the
    module docstring). rows() is the encoder's all-at-once form of what the decoder works out
    parameter by parameter (decode_changes); the two are the same integer arithmetic."""

    def __init__(self, model: KeypointModel, quantiser: Quantiser) -> None:
        if model.joint_counts is None or model.change_predictor is None:
            raise ValueError(
                "keypoint model has no joint_counts or change_predictor table; count them "
                "with python -m talkcodec.entropy.fit_contexts"
            )
        counts = np.asarray(model.joint_counts)
        if counts.shape != JOINT_TABLE_SHAPE:
            raise ValueError(f"joint_counts must be {JOINT_TABLE_SHAPE}, got {counts.shape}")
        predictor = np.asarray(model.change_predictor, dtype=np.int64)
        if predictor.shape != (model.num_params,) * 2 or np.any(np.triu(predictor)):
            raise ValueError(
                f"change_predictor must be strictly lower triangular "
                f"{(model.num_params,) * 2}, got {predictor.shape}"
            )
        self._init_common(model, quantiser)
        self.table = _probabilities(counts).reshape(-1, NUM_JOINT_SYMBOLS)
        self._predictor = predictor
        # For the decoder's loop: each row as its own (1, S) array, each parameter's weights
        # on the parameters before it as Python ints.
        self._table_rows = [np.ascontiguousarray(row[None]) for row in self.table]
        self._predictor_rows = [predictor[k, :k].tolist() for k in range(len(predictor))]
        self._bits_cache: tuple[tuple[bytes, ...], np.ndarray, np.ndarray] | None = None
        # The sign of each parameter's last change (0 after an intra frame).
        self.last_sign = np.zeros(model.num_params, dtype=np.int64)

    def _base_rows(self) -> np.ndarray:
        return self._groups * NUM_CONTEXTS + self.contexts()

    @staticmethod
    def _row(
        base: int, prediction: int, changed_before: int, position: int, last_sign: int
    ) -> tuple[int, bool]:
        """Table row and mirror flag of one parameter from its integer context inputs: the
        one definition encoder (rows) and decoder (decode_changes) both use. Python ints, not
        numpy scalars: the decoder runs it once per parameter and frame."""
        magnitude = abs(prediction)
        bucket = sum(magnitude >= edge for edge in PREDICTION_EDGES)
        direction = (prediction > 0) - (prediction < 0) if magnitude >= PREDICTION_EDGES[0] else 0
        # share = (changed_before + 1/2) / (position + 1) >= edge / 20, in integers.
        share = 20 * (2 * changed_before + 1)
        activity = sum(edge * 2 * (position + 1) <= share for edge in ACTIVITY_EDGES_TWENTIETHS)
        relation = last_sign * (direction or 1) + 1
        buckets, activities = len(PREDICTION_EDGES) + 1, len(ACTIVITY_EDGES_TWENTIETHS) + 1
        row = ((base * buckets + bucket) * activities + activity) * NUM_RELATIONS + relation
        return row, direction < 0

    def rows(self, change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P,) table rows and mirror flags of a whole frame's (P,) index changes."""
        clipped = np.clip(change.astype(np.int64), -RESIDUAL_LIMIT - 1, RESIDUAL_LIMIT + 1)
        predictions = self._predictor @ clipped  # strictly lower triangular: earlier ones only
        changed = (change != 0).astype(np.int64)
        befores = np.cumsum(changed) - changed
        inputs = zip(
            self._base_rows().tolist(),
            predictions.tolist(),
            befores.tolist(),
            range(len(change)),
            self.last_sign.tolist(),
            strict=True,
        )
        rows, mirror = zip(*(self._row(*values) for values in inputs), strict=True)
        return np.array(rows, dtype=np.int64), np.array(mirror, dtype=bool)

    def cells(self, change: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, mirror = self.rows(change)
        symbols = joint_symbols(change)
        return rows, np.where(mirror, mirrored(symbols), symbols)

    def change_bits(self, changes: np.ndarray, reference: np.ndarray) -> np.ndarray:
        # The quantiser asks for several candidate sets in the same frame's contexts.
        key = (reference.tobytes(), self.scales.tobytes(), self.last_sign.tobytes())
        if self._bits_cache is None or self._bits_cache[0] != key:
            rows, mirror = self.rows(reference)
            self._bits_cache = (key, -np.log2(self.table[rows]), mirror)
        _, table_bits, mirror = self._bits_cache  # (P, NUM_JOINT_SYMBOLS), (P,)
        symbols = joint_symbols(changes)
        symbols = np.where(mirror[None, :], mirrored(symbols), symbols)
        bits = np.take_along_axis(table_bits, symbols.T, axis=1).T
        escaped = np.abs(changes) > RESIDUAL_LIMIT
        return bits + np.where(escaped, 2 * np.log2(np.maximum(np.abs(changes), 1)) + 1, 0)

    def decode_changes(self, decoder: StagedDecoder) -> np.ndarray:
        count = len(self._groups)
        bases = self._base_rows().tolist()
        last_signs = self.last_sign.tolist()
        limit = RESIDUAL_LIMIT
        clipped = [0] * count
        symbols = [0] * count
        changed_before = 0
        for k in range(count):
            prediction = sum(
                w * c for w, c in zip(self._predictor_rows[k], clipped[:k], strict=True)
            )
            row, mirror = self._row(bases[k], prediction, changed_before, k, last_signs[k])
            symbol = decoder.categorical_one(self._table_rows[row])
            if mirror:  # change c was coded as -c, escapes swapped
                symbol = {ESCAPE_DOWN: ESCAPE_UP, ESCAPE_UP: ESCAPE_DOWN}.get(
                    symbol, 2 * limit - symbol
                )
            symbols[k] = symbol
            value = {ESCAPE_DOWN: -limit - 1, ESCAPE_UP: limit + 1}.get(symbol, symbol - limit)
            clipped[k] = value
            changed_before += value != 0
        coded = np.array(symbols, dtype=np.int32)
        change = coded - RESIDUAL_LIMIT
        escaped = coded >= ESCAPE_DOWN
        values = decoder.symbols(self.escape_model(escaped))
        signs = np.sign(np.array(clipped)[escaped])
        if np.any(np.sign(values) != signs) or np.any(np.abs(values) <= RESIDUAL_LIMIT):
            raise BitstreamError("escaped keypoint change disagrees with its escape symbol")
        change[escaped] = values
        return change

    def after_intra(self, indices: np.ndarray) -> None:
        super().after_intra(indices)
        self.last_sign = np.zeros_like(self.last_sign)

    def after_predicted(self, indices: np.ndarray) -> None:
        assert self.previous is not None
        self.last_sign = np.sign(indices.astype(np.int64) - self.previous)
        super().after_predicted(indices)


def coding_state(model: KeypointModel, quantiser: Quantiser) -> _CodingState:
    """The coder of the model's id: V3 (joint) or V2."""
    if joint_coded(model.model_id):
        return _JointState(model, quantiser)
    return _CodingState(model, quantiser)


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
        self._state = coding_state(model, self.quantiser)
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
        # Bits are judged in the contexts of the rounded frame (exact for V2, whose contexts do
        # not depend on the frame's changes), the same for every price of a bit.
        rounded = np.clip(np.rint(scaled), -MAX_INDEX, MAX_INDEX).astype(np.int64) - previous
        options = [
            self._choose(scaled, rounded, self.rdo_lambda_px2 * scale) for scale in _RDO_SCALES
        ]
        options.append(previous)
        costs = [
            float(np.sum(self._error_weights * (option - scaled) ** 2))
            + self.rdo_lambda_px2 * 8 * len(self._predicted_payload(option))
            for option in options
        ]
        return options[int(np.argmin(costs))].astype(np.int32)

    def _choose(self, scaled: np.ndarray, rounded: np.ndarray, rdo_lambda_px2: float) -> np.ndarray:
        """(P,) int64 indices, each parameter's lower or upper neighbour or its previous index,
        whichever costs least in error plus rdo_lambda_px2 per (estimated) bit; rounded: the
        (P,) changes of the rounded frame, whose contexts the bits are judged in."""
        previous = self._state.previous
        assert previous is not None
        lower = np.floor(scaled)
        candidates = np.clip(np.stack([lower, lower + 1, previous]), -MAX_INDEX, MAX_INDEX)
        candidates = candidates.astype(np.int64)
        bits = self._state.change_bits(candidates - previous, rounded)
        cost = self._error_weights * (candidates - scaled) ** 2 + rdo_lambda_px2 * bits
        return candidates[np.argmin(cost, axis=0), np.arange(len(scaled))]

    def will_code_intra(self, force_intra: bool = False) -> bool:
        """Whether the next frame is coded intra (the first, a forced one, or a refresh)."""
        return (
            force_intra
            or self._state.previous is None
            or (0 < self.refresh_interval_frames <= self._since_intra)
        )

    def encode_indices(self, indices: np.ndarray, force_intra: bool = False) -> CodedKeypoints:
        """Code (P,) quantiser indices (quantise()) as the next frame of the stream."""
        intra = self.will_code_intra(force_intra)
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
        return encode_parts(self._state.payload_parts(change), min_bytes=1)

    def encode_intra(self, params: np.ndarray) -> bytes:
        """Code one frame on its own, leaving the stream state alone (for keyframe packets)."""
        indices = self.quantiser.indices(np.asarray(params, dtype=np.float64))
        return encode_symbols(indices, self._state.intra_model)


class KeypointDecoder:
    """Decodes one stream's frames in sending order; after a gap, wait for an intra frame."""

    def __init__(self, model: KeypointModel, step_px: float) -> None:
        self.quantiser = make_quantiser(model, step_px)
        self._state = coding_state(model, self.quantiser)

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
                change = self._state.decode_changes(StagedDecoder(payload))
            indices = np.clip(self._state.previous + change, -MAX_INDEX, MAX_INDEX)
            self._state.after_predicted(indices.astype(np.int32))
        return self.quantiser.values(indices)

    def decode_intra(self, payload: bytes) -> np.ndarray:
        """(P,) parameters of a self-contained intra frame, leaving the stream state alone."""
        return self.quantiser.values(decode_symbols(payload, self._state.intra_model))
