"""Range coding of a quantised latent under the context prior (byte-exact, see prior.py)."""

from __future__ import annotations

import numpy as np

from talkcodec.entropy.rangecoder import CategoricalDecoder, encode_categorical
from talkcodec.keyframe.gc.prior import (
    OUTSIDE,
    anti_diagonals,
    coding_order,
    context_of,
    contexts,
)


def encode_latent(symbols: np.ndarray, probabilities: np.ndarray) -> bytes:
    """Range-code (k, h, w) symbols 0..L-1 under (C, NUM_CONTEXTS, L) probabilities, k <= C."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.ndim != 3 or symbols.shape[0] > probabilities.shape[0]:
        raise ValueError(
            f"symbols must be (k<={probabilities.shape[0]}, h, w), got {symbols.shape}"
        )
    channels, rows, columns = symbols.shape
    order = coding_order((channels, rows, columns))
    channel = np.repeat(np.arange(channels), rows * columns)
    per_symbol = probabilities[channel, contexts(symbols).ravel()]  # (k*h*w, L)
    return encode_categorical(symbols.ravel()[order], per_symbol[order])


def decode_latent(
    data: bytes, probabilities: np.ndarray, shape: tuple[int, int, int]
) -> np.ndarray:
    """(k, h, w) int64 symbols from bytes made by encode_latent; BitstreamError if unreadable."""
    channels, rows, columns = shape
    symbols = np.zeros(shape, dtype=np.int64)
    decoder = CategoricalDecoder(data)
    diagonals = anti_diagonals(rows, columns)
    for channel in range(channels):
        plane = symbols[channel]
        previous = symbols[channel - 1] if channel else None
        for ys, xs in diagonals:
            left = np.where(xs > 0, plane[ys, np.maximum(xs - 1, 0)], OUTSIDE)
            above = np.where(ys > 0, plane[np.maximum(ys - 1, 0), xs], OUTSIDE)
            before = previous[ys, xs] if previous is not None else np.full(len(ys), OUTSIDE)
            context = context_of(left, above, before)
            plane[ys, xs] = decoder.decode(probabilities[channel, context])
    return symbols
