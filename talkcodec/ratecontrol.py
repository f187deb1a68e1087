"""The sender's rate cap (`--max-kbps`): a ceiling on everything a stream writes, keyframes
included.

The cap counts each packet as a .tkc record holds it (payload, packet header, record length),
plus the file's preamble once, and keeps two promises for a stream that starts at t0:

- from the start: the bytes up to a frame are at most max_kbps over the time the frames so
  far cover, or over BURST_S when that is longer (so the first keyframe may take up to BURST_S
  of the budget; a stream longer than BURST_S stays within max_kbps over its whole length);
- in every WINDOW_S window that starts a second or more after t0: at most max_kbps.

The encoder spends through it: the first keyframe is coded at the best quality that fits what
the budget allows (talkcodec.keyframe qualities, tried from the best down), extra references
are sent only when they fit, and a frame whose keypoint packet does not fit is not sent (the
receiver shows the previous one; the keypoint prediction simply continues from the last frame
sent).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from talkcodec.bitstream import PTS_MODULO
from talkcodec.keyframe import KeyframeCodec

BURST_S = 4.0
WINDOW_S = 5.0
WINDOW_START_S = 1.0
# What a .tkc file spends once: magic, version, header length and a revision-3 stream header.
FILE_PREAMBLE_BYTES = 6 + 15
# Qualities the keyframe codecs are searched over when the budget binds, best first.
_KEYFRAME_QUALITIES = {
    "gc": (8, 4, 2),
    "webp": tuple(range(95, 0, -5)),
    "jpeg": (90, 70, 50, 30, 15, 5),
}


class RateCap:
    """The budget of one stream at max_kbps (see module doc); times are the packets' pts_ms."""

    def __init__(self, max_kbps: float, fps: float) -> None:
        if not max_kbps > 0:
            raise ValueError(f"max_kbps must be > 0, got {max_kbps}")
        self.bytes_per_s = max_kbps * 1000 / 8
        self.frame_ms = 1000 / fps
        self.spent_bytes = FILE_PREAMBLE_BYTES
        self.skipped_frames = 0
        self._start_ms: int | None = None
        self._recent: deque[tuple[float, int]] = deque()  # (ms since start, bytes)
        self._recent_bytes = 0  # the sum of _recent's bytes, kept as it changes

    def _elapsed_ms(self, pts_ms: int) -> float:
        if self._start_ms is None:
            self._start_ms = pts_ms
        return float((pts_ms - self._start_ms) % PTS_MODULO)

    def available(self, pts_ms: int) -> float:
        """How many bytes a frame at pts_ms may still spend under both promises."""
        elapsed_ms = self._elapsed_ms(pts_ms)
        covered_s = max((elapsed_ms + self.frame_ms) / 1000, BURST_S)
        left = self.bytes_per_s * covered_s - self.spent_bytes
        window_start_ms = elapsed_ms + self.frame_ms - WINDOW_S * 1000
        if window_start_ms >= WINDOW_START_S * 1000:
            while self._recent and self._recent[0][0] < window_start_ms:
                self._recent_bytes -= self._recent.popleft()[1]
            left = min(left, self.bytes_per_s * WINDOW_S - self._recent_bytes)
        return left

    def spend(self, pts_ms: int, size: int) -> None:
        self.spent_bytes += size
        self._recent_bytes += size
        self._recent.append((self._elapsed_ms(pts_ms), size))

    def compress_keyframe(self, codec: KeyframeCodec, image: np.ndarray, max_bytes: float) -> bytes:
        """`image` at the best quality of `codec` whose bytes fit max_bytes (the lowest quality
        when none does: a keyframe that must be sent is sent)."""
        qualities = _KEYFRAME_QUALITIES.get(codec.name, ())
        best = codec.quality
        data = b""
        try:
            for quality in (best, *(q for q in qualities if q < best)):
                codec.quality = quality
                data = codec.compress(image)
                if len(data) <= max_bytes:
                    break
        finally:
            codec.quality = best
        return data
