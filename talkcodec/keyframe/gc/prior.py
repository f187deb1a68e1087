"""The prior of the quantised latent: a categorical over the L centres for every symbol, chosen
by its context -- the symbols to its left and above in the same channel and at the same place in
the previous channel (a count-based context model, like JBIG's or CABAC's).

The shipped prior is an integer frequency table (C, 216, L), so encoder and decoder derive
bit-identical probabilities on every machine: no float network sits in the decoding loop. It is
fitted by counting the symbols of the training crops through the trained encoder, smoothed
towards the channel's overall distribution so that rare contexts stay sensible.

Every symbol's context lies on an earlier anti-diagonal (left, above) or an earlier channel, so
the decoder reads a whole anti-diagonal of a channel at once: 8 x 31 steps for a 256x256
keyframe instead of 2048.
"""

from __future__ import annotations

import numpy as np

from talkcodec.keyframe.gc.alphabet import NUM_LEVELS

FREQUENCY_TOTAL = 1 << 16


OUTSIDE = NUM_LEVELS  # the context value of a neighbour beyond the border or channel 0's "previous"
_CONTEXT_BASE = NUM_LEVELS + 1
NUM_CONTEXTS = _CONTEXT_BASE**3  # (left, above, previous channel), each a symbol or OUTSIDE


def context_of(left: np.ndarray, above: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Context indices 0..NUM_CONTEXTS-1 from the three neighbours (symbols or OUTSIDE)."""
    return (left * _CONTEXT_BASE + above) * _CONTEXT_BASE + previous


def contexts(symbols: np.ndarray) -> np.ndarray:
    """(..., k, h, w) symbols -> (..., k, h, w) int64 context index of every symbol."""
    symbols = np.asarray(symbols, dtype=np.int64)
    left = np.full_like(symbols, OUTSIDE)
    left[..., :, 1:] = symbols[..., :, :-1]
    above = np.full_like(symbols, OUTSIDE)
    above[..., 1:, :] = symbols[..., :-1, :]
    previous = np.full_like(symbols, OUTSIDE)
    previous[..., 1:, :, :] = symbols[..., :-1, :, :]
    return context_of(left, above, previous)


def context_counts(symbols: np.ndarray) -> np.ndarray:
    """(C, NUM_CONTEXTS, L) int64 counts of (N, C, h, w) symbols in their contexts."""
    symbols = np.asarray(symbols, dtype=np.int64)
    channels = symbols.shape[1]
    channel = np.arange(channels).reshape(1, channels, 1, 1)
    index = (channel * NUM_CONTEXTS + contexts(symbols)) * NUM_LEVELS + symbols
    counts = np.bincount(index.ravel(), minlength=channels * NUM_CONTEXTS * NUM_LEVELS)
    return counts.reshape(channels, NUM_CONTEXTS, NUM_LEVELS)


def smoothed_counts(counts: np.ndarray, strength: float = 2.0) -> np.ndarray:
    """(C, K, L) counts plus `strength` pseudo-counts spread as the channel's overall symbols."""
    counts = np.asarray(counts, dtype=np.float64)
    overall = counts.sum(axis=1, keepdims=True) + 1  # (C, 1, L)
    return counts + strength * overall / overall.sum(axis=2, keepdims=True)


def frequency_table(counts: np.ndarray, total: int = FREQUENCY_TOTAL) -> np.ndarray:
    """(..., L) uint32 frequencies, each >= 1, every row summing to exactly `total`."""
    counts = np.asarray(counts, dtype=np.float64)
    rows = counts.reshape(-1, counts.shape[-1])
    table = np.floor(rows / rows.sum(axis=1, keepdims=True) * total).astype(np.int64)
    table = np.maximum(table, 1)
    largest = np.argmax(table, axis=1)
    table[np.arange(len(table)), largest] += total - table.sum(axis=1)  # absorbs the rounding
    if (table < 1).any():
        raise ValueError("frequency table would need a count below 1")
    return table.reshape(counts.shape).astype(np.uint32)


def table_probabilities(table: np.ndarray) -> np.ndarray:
    """Float64 probabilities of an integer frequency table, normalised over the last axis.

    Integers divided by their integer sum: the same bits on every IEEE machine.
    """
    table = np.asarray(table, dtype=np.float64)
    return table / table.sum(axis=-1, keepdims=True)


def anti_diagonals(rows: int, columns: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ys, xs) of every anti-diagonal y + x = d of an (rows, columns) grid, d ascending, y
    ascending within one: the order symbols are coded in within a channel."""
    diagonals = []
    for diagonal in range(rows + columns - 1):
        ys = np.arange(max(0, diagonal - columns + 1), min(rows, diagonal + 1))
        diagonals.append((ys, diagonal - ys))
    return diagonals


def coding_order(shape: tuple[int, int, int]) -> np.ndarray:
    """Flat indices into (k, h, w) symbols in coding order: channel by channel, anti-diagonals."""
    channels, rows, columns = shape
    within = np.concatenate([ys * columns + xs for ys, xs in anti_diagonals(rows, columns)])
    return np.concatenate([channel * rows * columns + within for channel in range(channels)])
