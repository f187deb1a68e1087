"""Byte-exact range coding of integer symbols with constriction.

constriction's coders emit 32-bit words, which would cost a per-frame keypoint packet of ~60
bits up to 31 bits of padding. The range coder only needs enough of its final word to land
inside the final interval, so the encoder drops trailing bytes as long as the decoder (which
pads with 0xFF up to a whole word) still reads back exactly the same symbols. The encoder checks
this by decoding, so the result is exact by construction, never by assumption.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import constriction
import numpy as np

from talkcodec.bitstream import BitstreamError

_PAD_BYTE = b"\xff"


@dataclass(frozen=True)
class SymbolModel:
    """Per-symbol distributions for a vector of integer symbols.

    kind: "laplace" or "gaussian". means, scales: (S,) float64 (scale = Laplace b or Gaussian
    std, in symbol units). All symbols lie in [-max_abs, max_abs].
    """

    kind: str
    means: np.ndarray
    scales: np.ndarray
    max_abs: int

    def family(self) -> object:
        model = constriction.stream.model
        if self.kind == "laplace":
            return model.QuantizedLaplace(-self.max_abs, self.max_abs + 1)
        if self.kind == "gaussian":
            return model.QuantizedGaussian(-self.max_abs, self.max_abs + 1)
        raise ValueError(f"unknown symbol model kind {self.kind!r}")


def _words_to_bytes(words: np.ndarray) -> bytes:
    return words.astype(">u4").tobytes()


def _bytes_to_words(data: bytes) -> np.ndarray:
    padded = data + _PAD_BYTE * (-len(data) % 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def encode_symbols(symbols: np.ndarray, model: SymbolModel) -> bytes:
    """Range-code (S,) int symbols, trimmed to the fewest bytes that decode exactly."""
    symbols = np.asarray(symbols, dtype=np.int32)
    if symbols.size and int(np.abs(symbols).max()) > model.max_abs:
        raise ValueError(f"symbol out of range +-{model.max_abs}")
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(symbols, model.family(), model.means, model.scales)
    full = _words_to_bytes(encoder.get_compressed())
    return _trim(full, symbols, lambda data: decode_symbols(data, model))


def _trim(
    full: bytes, symbols: np.ndarray, decode: Callable[[bytes], np.ndarray], min_bytes: int = 0
) -> bytes:
    """The shortest prefix of `full`, of at least min_bytes, that `decode` still reads back as
    exactly `symbols`."""
    best = full
    for length in range(len(full) - 1, min(min_bytes, len(full)) - 1, -1):
        try:
            if np.array_equal(decode(full[:length]), symbols):
                best = full[:length]
                continue
        except BitstreamError:
            pass
        break
    return best


def decode_symbols(data: bytes, model: SymbolModel) -> np.ndarray:
    """(S,) int32 symbols in +-max_abs from bytes made by encode_symbols with the same model.

    Other bytes may decode to other symbols or raise BitstreamError.
    """
    try:
        decoder = constriction.stream.queue.RangeDecoder(_bytes_to_words(data))
        symbols = decoder.decode(model.family(), model.means, model.scales)
    except (ValueError, RuntimeError, AssertionError) as error:
        raise BitstreamError(f"range decoder failed on {len(data)} bytes: {error}") from None
    symbols = np.asarray(symbols, dtype=np.int32)
    # On corrupt input constriction can return max_abs + 1, one past the alphabet; data made by
    # encode_symbols never decodes to that, so it marks the bytes as bad.
    if symbols.size and int(np.abs(symbols).max()) > model.max_abs:
        raise BitstreamError(
            f"range decoder read a symbol outside +-{model.max_abs} from {len(data)} bytes"
        )
    return symbols


def _check_categorical(probabilities: np.ndarray) -> np.ndarray:
    probabilities = np.ascontiguousarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise ValueError(f"probabilities must be (S, K) with K >= 2, got {probabilities.shape}")
    if not (np.isfinite(probabilities).all() and (probabilities > 0).all()):
        raise ValueError("probabilities must be finite and positive")
    return probabilities


def encode_categorical(symbols: np.ndarray, probabilities: np.ndarray) -> bytes:
    """Range-code (S,) symbols in 0..K-1, symbol i under the categorical `probabilities[i]`.

    probabilities: (S, K) float64, positive (rows need not sum to 1). Derive them the same way
    on both sides (e.g. from an integer table): constriction quantises them to fixed point, and
    a float that differs in the last bit can change that. Trimmed to the fewest bytes that
    decode exactly, as encode_symbols.
    """
    symbols = np.asarray(symbols, dtype=np.int32).ravel()
    probabilities = _check_categorical(probabilities)
    if len(symbols) != len(probabilities):
        raise ValueError(f"{len(symbols)} symbols but {len(probabilities)} distributions")
    if symbols.size and not 0 <= int(symbols.min()) <= int(symbols.max()) < probabilities.shape[1]:
        raise ValueError(f"symbol out of range 0..{probabilities.shape[1] - 1}")
    family = constriction.stream.model.Categorical(perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(symbols, family, probabilities)
    full = _words_to_bytes(encoder.get_compressed())
    return _trim(full, symbols, lambda data: decode_categorical(data, probabilities))


def decode_categorical(data: bytes, probabilities: np.ndarray) -> np.ndarray:
    """(S,) int32 symbols from bytes made by encode_categorical with the same probabilities.

    Other bytes may decode to other symbols or raise BitstreamError.
    """
    probabilities = _check_categorical(probabilities)
    family = constriction.stream.model.Categorical(perfect=False)
    try:
        decoder = constriction.stream.queue.RangeDecoder(_bytes_to_words(data))
        symbols = decoder.decode(family, probabilities)
    except (ValueError, RuntimeError, AssertionError) as error:
        raise BitstreamError(f"range decoder failed on {len(data)} bytes: {error}") from None
    symbols = np.asarray(symbols, dtype=np.int32)
    if symbols.size and not 0 <= int(symbols.min()) <= int(symbols.max()) < probabilities.shape[1]:
        raise BitstreamError(
            f"range decoder read a symbol outside 0..{probabilities.shape[1] - 1} "
            f"from {len(data)} bytes"
        )
    return symbols


def encode_parts(
    parts: Sequence[tuple[np.ndarray, SymbolModel | np.ndarray]], min_bytes: int = 0
) -> bytes:
    """Range-code several vectors of symbols into one stream, each under its own model.

    parts: (symbols, model) in coding order; model is a SymbolModel (symbols in +-max_abs) or
    (S, K) categorical probabilities (symbols in 0..K-1, as encode_categorical). A
    StagedDecoder reads them back in the same order, so a later part's model may depend on the
    symbols of an earlier one. Trimmed to the fewest bytes (at least min_bytes, where the
    coder's output is that long) that decode exactly.
    """
    encoder = constriction.stream.queue.RangeEncoder()
    for symbols, model in parts:
        symbols = np.asarray(symbols, dtype=np.int32).ravel()
        if isinstance(model, SymbolModel):
            if symbols.size and int(np.abs(symbols).max()) > model.max_abs:
                raise ValueError(f"symbol out of range +-{model.max_abs}")
            if symbols.size:
                encoder.encode(symbols, model.family(), model.means, model.scales)
            continue
        probabilities = _check_categorical(model)
        if len(symbols) != len(probabilities):
            raise ValueError(f"{len(symbols)} symbols but {len(probabilities)} distributions")
        if (
            symbols.size
            and not 0 <= int(symbols.min()) <= int(symbols.max()) < probabilities.shape[1]
        ):
            raise ValueError(f"symbol out of range 0..{probabilities.shape[1] - 1}")
        if symbols.size:
            encoder.encode(
                symbols, constriction.stream.model.Categorical(perfect=False), probabilities
            )
    full = _words_to_bytes(encoder.get_compressed())
    expected = [np.asarray(symbols, dtype=np.int32).ravel() for symbols, _ in parts]

    def decode(data: bytes) -> np.ndarray:
        decoder = StagedDecoder(data)
        decoded = [
            decoder.symbols(model) if isinstance(model, SymbolModel) else decoder.categorical(model)
            for _, model in parts
        ]
        return np.concatenate([np.zeros(0, np.int32), *decoded])

    return _trim(full, np.concatenate([np.zeros(0, np.int32), *expected]), decode, min_bytes)


class StagedDecoder:
    """Decodes bytes made by encode_categorical, encode_symbols or encode_parts a batch at a
    time, for context models whose later distributions depend on the symbols decoded so far.

    Decoding all symbols in successive batches reads exactly what one call with all the
    distributions would.
    """

    def __init__(self, data: bytes) -> None:
        self._size = len(data)
        self._family = constriction.stream.model.Categorical(perfect=False)
        self._decoder = constriction.stream.queue.RangeDecoder(_bytes_to_words(data))

    def categorical(self, probabilities: np.ndarray) -> np.ndarray:
        """(S,) int32 next symbols, symbol i under `probabilities[i]` ((S, K) float64)."""
        probabilities = _check_categorical(probabilities)
        if not len(probabilities):
            return np.zeros(0, np.int32)
        try:
            symbols = self._decoder.decode(self._family, probabilities)
        except (ValueError, RuntimeError, AssertionError) as error:
            raise BitstreamError(f"range decoder failed on {self._size} bytes: {error}") from None
        symbols = np.asarray(symbols, dtype=np.int32)
        if symbols.size and int(symbols.max()) >= probabilities.shape[1]:
            raise BitstreamError(
                f"range decoder read a symbol outside 0..{probabilities.shape[1] - 1} "
                f"from {self._size} bytes"
            )
        return symbols

    def categorical_one(self, probabilities: np.ndarray) -> int:
        """The next symbol under one categorical row ((1, K) float64, C-contiguous, positive
        and finite: the caller's table, checked once when it was made), without the per-call
        checks of categorical(): for decoders that must go one symbol at a time."""
        try:
            symbol = int(self._decoder.decode(self._family, probabilities)[0])
        except (ValueError, RuntimeError, AssertionError) as error:
            raise BitstreamError(f"range decoder failed on {self._size} bytes: {error}") from None
        if not 0 <= symbol < probabilities.shape[1]:
            raise BitstreamError(
                f"range decoder read a symbol outside 0..{probabilities.shape[1] - 1} "
                f"from {self._size} bytes"
            )
        return symbol

    def symbols(self, model: SymbolModel) -> np.ndarray:
        """(S,) int32 next symbols under `model` (S = len(model.means)), in +-model.max_abs."""
        if not len(model.means):
            return np.zeros(0, np.int32)
        try:
            symbols = self._decoder.decode(model.family(), model.means, model.scales)
        except (ValueError, RuntimeError, AssertionError) as error:
            raise BitstreamError(f"range decoder failed on {self._size} bytes: {error}") from None
        symbols = np.asarray(symbols, dtype=np.int32)
        if int(np.abs(symbols).max()) > model.max_abs:
            raise BitstreamError(
                f"range decoder read a symbol outside +-{model.max_abs} from {self._size} bytes"
            )
        return symbols


class CategoricalDecoder(StagedDecoder):
    """A StagedDecoder of categorical batches only (decode = categorical)."""

    def decode(self, probabilities: np.ndarray) -> np.ndarray:
        """(S,) int32 next symbols, symbol i under `probabilities[i]` ((S, K) float64)."""
        return self.categorical(probabilities)
