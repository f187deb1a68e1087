"""Byte-exact range coding of integer symbols with constriction.

constriction's coders emit 32-bit words, which would cost a per-frame keypoint packet of ~60
bits up to 31 bits of padding. The range coder only needs enough of its final word to land
inside the final interval, so the encoder drops trailing bytes as long as the decoder (which
pads with 0xFF up to a whole word) still reads back exactly the same symbols. The encoder checks
this by decoding, so the result is exact by construction, never by assumption.
"""

from __future__ import annotations

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
    best = full
    for length in range(len(full) - 1, -1, -1):
        try:
            if np.array_equal(decode_symbols(full[:length], model), symbols):
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
