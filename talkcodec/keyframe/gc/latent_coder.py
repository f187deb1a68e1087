"""Range coding of a quantised latent under the context prior (byte-exact, see prior.py), and of
the selective mode's person-cell mask under an adaptive binary context model.

In selective mode (selective.py) only the first counts[y, x] channels of each latent position are
coded; a neighbour that is not sent is OUTSIDE in its context, exactly like one beyond a border.
"""

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

# The person-cell mask's context: (left cell, above cell), each 0, 1 or beyond the border.
_CELL_OUTSIDE = 2
NUM_CELL_CONTEXTS = (_CELL_OUTSIDE + 1) ** 2  # 9


def _check_counts(counts: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(h, w) int64 channels sent per position, each in 0..k; ValueError otherwise."""
    channels, rows, columns = shape
    counts = np.asarray(counts)
    if counts.shape != (rows, columns) or not np.issubdtype(counts.dtype, np.integer):
        raise ValueError(
            f"counts must be ({rows}, {columns}) integers, got {counts.shape} {counts.dtype}"
        )
    if counts.size and not 0 <= int(counts.min()) <= int(counts.max()) <= channels:
        raise ValueError(f"counts must lie in 0..{channels}")
    return counts.astype(np.int64)


def sent_symbols(shape: tuple[int, ...], counts: np.ndarray) -> np.ndarray:
    """(k, h, w) bool: channel c at (y, x) is sent when c < counts[y, x] ((h, w) ints)."""
    counts = _check_counts(counts, shape)
    return np.arange(shape[0]).reshape(-1, 1, 1) < counts[None]


def encode_latent(
    symbols: np.ndarray, probabilities: np.ndarray, counts: np.ndarray | None = None
) -> bytes:
    """Range-code (k, h, w) symbols 0..L-1 under (C, NUM_CONTEXTS, L) probabilities, k <= C.

    counts: (h, w) ints in 0..k, the channels sent at each position (selective mode); the
    other symbols are skipped and count as OUTSIDE in their neighbours' contexts. None: all k.
    """
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.ndim != 3 or symbols.shape[0] > probabilities.shape[0]:
        raise ValueError(
            f"symbols must be (k<={probabilities.shape[0]}, h, w), got {symbols.shape}"
        )
    channels, rows, columns = symbols.shape
    order = coding_order((channels, rows, columns))
    visible = symbols
    if counts is not None:
        sent = sent_symbols((channels, rows, columns), counts)
        visible = np.where(sent, symbols, OUTSIDE)
        order = order[sent.ravel()[order]]
    channel = np.repeat(np.arange(channels), rows * columns)
    per_symbol = probabilities[channel, contexts(visible).ravel()]  # (k*h*w, L)
    return encode_categorical(symbols.ravel()[order], per_symbol[order])


def decode_latent(
    data: bytes,
    probabilities: np.ndarray,
    shape: tuple[int, int, int],
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """(k, h, w) int64 symbols from bytes made by encode_latent; BitstreamError if unreadable.

    counts: as given to encode_latent; symbols that were not sent come back as 0.
    """
    channels, rows, columns = shape
    if counts is not None:
        counts = _check_counts(counts, shape)
    symbols = np.full(shape, OUTSIDE, dtype=np.int64)  # not (yet) decoded: OUTSIDE
    decoder = CategoricalDecoder(data)
    diagonals = anti_diagonals(rows, columns)
    for channel in range(channels):
        plane = symbols[channel]
        previous = symbols[channel - 1] if channel else None
        for ys, xs in diagonals:
            if counts is not None:
                keep = counts[ys, xs] > channel
                ys, xs = ys[keep], xs[keep]
                if not len(ys):
                    continue
            left = np.where(xs > 0, plane[ys, np.maximum(xs - 1, 0)], OUTSIDE)
            above = np.where(ys > 0, plane[np.maximum(ys - 1, 0), xs], OUTSIDE)
            before = previous[ys, xs] if previous is not None else np.full(len(ys), OUTSIDE)
            context = context_of(left, above, before)
            plane[ys, xs] = decoder.decode(probabilities[channel, context])
    symbols[symbols == OUTSIDE] = 0
    return symbols


def _cell_contexts(cells: np.ndarray) -> np.ndarray:
    """(h, w) bool cells -> (h, w) int64 context left * 3 + above (2 beyond the border)."""
    left = np.full(cells.shape, _CELL_OUTSIDE, dtype=np.int64)
    left[:, 1:] = cells[:, :-1]
    above = np.full(cells.shape, _CELL_OUTSIDE, dtype=np.int64)
    above[1:, :] = cells[:-1, :]
    return left * (_CELL_OUTSIDE + 1) + above


def encode_cell_mask(cells: np.ndarray) -> bytes:
    """Range-code an (h, w) bool person-cell mask in raster order, adaptively.

    Each of the NUM_CELL_CONTEXTS contexts keeps integer counts of the 0s and 1s coded in it so
    far, both starting at 1; a cell is coded with probabilities counts / sum in float64 (the
    same bits on every machine), then its context's count of its value grows by one.
    """
    cells = np.asarray(cells)
    if cells.ndim != 2 or cells.dtype != bool:
        raise ValueError(f"cells must be (h, w) bool, got {cells.shape} {cells.dtype}")
    bits = cells.ravel().astype(np.int64)
    counts = np.ones((NUM_CELL_CONTEXTS, 2), dtype=np.int64)
    probabilities = np.empty((bits.size, 2), dtype=np.float64)
    for index, (context, bit) in enumerate(zip(_cell_contexts(cells).ravel(), bits, strict=True)):
        row = counts[context]
        probabilities[index] = row / row.sum()
        row[bit] += 1
    return encode_categorical(bits, probabilities)


def decode_cell_mask(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool cells from bytes made by encode_cell_mask; BitstreamError if unreadable.

    Other bytes decode to some mask or raise BitstreamError.
    """
    rows, columns = shape
    cells = np.zeros(shape, dtype=bool)
    counts = np.ones((NUM_CELL_CONTEXTS, 2), dtype=np.int64)
    decoder = CategoricalDecoder(data)
    for y in range(rows):
        for x in range(columns):
            left = int(cells[y, x - 1]) if x else _CELL_OUTSIDE
            above = int(cells[y - 1, x]) if y else _CELL_OUTSIDE
            row = counts[left * (_CELL_OUTSIDE + 1) + above]
            bit = int(decoder.decode((row / row.sum())[None])[0])
            cells[y, x] = bit
            row[bit] += 1
    return cells
