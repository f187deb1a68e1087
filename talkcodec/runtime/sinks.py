"""What the receiver does with each displayed frame: show it, record it, record it beside the
sender's input. Sinks run in the receiver's worker thread."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from talkcodec.audio.sources import SAMPLE_RATE
from talkcodec.bitstream import PTS_MODULO
from talkcodec.video import VideoWriter

logger = logging.getLogger(__name__)

WINDOW_TITLE = "talkcodec"
MAX_EARLY_AUDIO_BLOCKS = 250  # sound held until the first frame (a few seconds)
MAX_AUDIO_GAP_SAMPLES = 60 * SAMPLE_RATE


def display_available() -> bool:
    """Whether an OpenCV window can open (a desktop session, or a non-Linux system)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def draw_overlay(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """A copy of `image` with `lines` of text in its top-left corner."""
    out = image.copy()
    scale = max(image.shape[0] / 512, 0.35)
    for row, text in enumerate(lines):
        origin = (6, int((row + 1) * 22 * scale) + 4)
        cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, (0, 0, 0), 3)
        cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, (255, 255, 0), 1)
    return out


class WindowSink:
    """Shows frames in an OpenCV window; closing it or pressing q calls on_quit."""

    def __init__(self, overlay: Callable[[], list[str]] | None, on_quit: Callable[[], None]):
        self._overlay = overlay
        self._on_quit = on_quit

    def __call__(self, image: np.ndarray, pts_ms: int) -> None:
        shown = draw_overlay(image, self._overlay()) if self._overlay else image
        cv2.imshow(WINDOW_TITLE, cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        if cv2.waitKey(1) & 0xFF == ord("q"):
            self._on_quit()

    def close(self) -> None:
        cv2.destroyAllWindows()


def _early_audio() -> deque[tuple[np.ndarray, float]]:
    """Sound blocks waiting for the recording to start: the newest MAX_EARLY_AUDIO_BLOCKS."""
    return deque(maxlen=MAX_EARLY_AUDIO_BLOCKS)


class _TimedWriter:
    """Writes frames into their capture-time slots at `fps`, repeating the last one through
    gaps, so the recording plays in real time whatever was skipped or lost. With `audio`, sound
    goes on the same timeline (media time - the first frame's pts), silence filling its gaps;
    sound from before the first frame is not recorded. Frames and sound may come from
    different threads."""

    def __init__(self, path: Path, width: int, height: int, fps: float, audio: bool) -> None:
        self._writer = VideoWriter(
            path, width, height, fps, audio_rate=SAMPLE_RATE if audio else None
        )
        self._fps = fps
        self._first_pts: int | None = None
        self._written = 0
        self._last: np.ndarray | None = None
        self._lock = threading.Lock()
        self._audio = audio
        self._audio_written = 0  # samples
        self._early_audio = _early_audio()  # before the first frame

    def write(self, image: np.ndarray, pts_ms: int) -> None:
        with self._lock:
            if self._first_pts is None:
                self._first_pts = pts_ms
                early, self._early_audio = self._early_audio, _early_audio()
                for samples, media_ms in early:
                    self._place_audio(samples, media_ms)
            slot = round(((pts_ms - self._first_pts) % PTS_MODULO) * self._fps / 1000)
            while self._last is not None and self._written < slot:
                self._writer.write(self._last)
                self._written += 1
            if self._written <= slot:
                self._writer.write(image)
                self._written += 1
            self._last = image

    def write_audio(self, samples: np.ndarray, media_ms: float) -> None:
        """(N,) int16 mono samples whose first is at media time media_ms (Unix ms)."""
        if not self._audio:
            return
        with self._lock:
            if self._first_pts is None:
                self._early_audio.append((samples, media_ms))
                return
            self._place_audio(samples, media_ms)

    def _place_audio(self, samples: np.ndarray, media_ms: float) -> None:
        assert self._first_pts is not None
        offset_ms = (media_ms - self._first_pts + PTS_MODULO / 2) % PTS_MODULO - PTS_MODULO / 2
        position = round(offset_ms * SAMPLE_RATE / 1000)
        skip = max(0, self._audio_written - position)  # before the start, or already written
        samples = samples[skip:]
        if not len(samples):
            return
        gap = position + skip - self._audio_written
        if gap > MAX_AUDIO_GAP_SAMPLES:  # a clock jump, not a pause: do not fill hours
            gap = 0
        if gap > 0:
            self._writer.write_audio(np.zeros(gap, np.int16))
        self._writer.write_audio(samples)
        self._audio_written += gap + len(samples)

    def close(self) -> None:
        with self._lock:
            self._writer.close()


class RecordSink:
    """Records the received frames (optionally with the overlay) to a video file, opened at the
    first frame with its size; `fps` may be a callable (known once the stream header came)."""

    def __init__(
        self,
        path: Path,
        fps: float | Callable[[], float],
        overlay: Callable[[], list[str]] | None,
        audio: bool = False,
    ):
        self._path = path
        self._fps = fps
        self._writer: _TimedWriter | None = None
        self._overlay = overlay
        self._audio = audio
        self._early_audio = _early_audio()  # before the writer opens

    def __call__(self, image: np.ndarray, pts_ms: int) -> None:
        if self._writer is None:
            fps = self._fps() if callable(self._fps) else self._fps
            writer = _TimedWriter(self._path, image.shape[1], image.shape[0], fps, self._audio)
            for samples, media_ms in self._early_audio:
                writer.write_audio(samples, media_ms)
            self._early_audio.clear()
            self._writer = writer
        self._writer.write(draw_overlay(image, self._overlay()) if self._overlay else image, pts_ms)

    def write_audio(self, samples: np.ndarray, media_ms: float) -> None:
        if self._writer is None:
            self._early_audio.append((samples, media_ms))
        else:
            self._writer.write_audio(samples, media_ms)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class InputFrames:
    """The sender's crops by pts (thread-safe, bounded), for side-by-side recordings."""

    def __init__(self, capacity: int = 256) -> None:
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def add(self, pts_ms: int, image: np.ndarray) -> None:
        with self._lock:
            self._frames[pts_ms] = image
            while len(self._frames) > self._capacity:
                self._frames.popitem(last=False)

    def get(self, pts_ms: int) -> np.ndarray | None:
        with self._lock:
            return self._frames.get(pts_ms)


class SideBySideSink:
    """Records input | received, paired by capture time (same-machine calls)."""

    def __init__(
        self,
        path: Path,
        inputs: InputFrames,
        size_px: int,
        fps: float,
        overlay: Callable[[], list[str]] | None,
        audio: bool = False,
    ):
        self._writer = _TimedWriter(path, 2 * size_px, size_px, fps, audio)
        self._inputs = inputs
        self._overlay = overlay

    def __call__(self, image: np.ndarray, pts_ms: int) -> None:
        sent = self._inputs.get(pts_ms)
        if sent is None or sent.shape != image.shape:
            sent = np.zeros_like(image)
        received = draw_overlay(image, self._overlay()) if self._overlay else image
        self._writer.write(np.concatenate([sent, received], axis=1), pts_ms)

    def write_audio(self, samples: np.ndarray, media_ms: float) -> None:
        self._writer.write_audio(samples, media_ms)

    def close(self) -> None:
        self._writer.close()
