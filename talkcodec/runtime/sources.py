"""Where the sender's frames come from: a camera, a file played in real time, or frames in
memory (the demo). Each source runs in its own thread and puts frames into a LatestFrame slot:
the sender takes the newest, and a frame it had no time for is overwritten, never queued.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkcodec.transport.stats import wall_clock_ms

logger = logging.getLogger(__name__)


class CaptureError(RuntimeError):
    """A frame source cannot be opened; the message names the device or file."""


@dataclass(frozen=True)
class CapturedFrame:
    """image: (H, W, 3) uint8 RGB. pts_ms: wall-clock capture time (wall_clock_ms())."""

    image: np.ndarray
    pts_ms: int
    index: int


class LatestFrame:
    """A one-frame slot between a capture thread and the sender (thread-safe)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._frame: CapturedFrame | None = None
        self._closed = False
        self.captured = 0
        self.overwritten = 0  # frames dropped because the sender was still busy

    def put(self, frame: CapturedFrame) -> None:
        with self._condition:
            self.captured += 1
            self.overwritten += self._frame is not None
            self._frame = frame
            self._condition.notify_all()

    def close(self) -> None:
        """No more frames will come; get() returns None once the last one is taken."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed and self._frame is None

    def get(self, timeout_s: float) -> CapturedFrame | None:
        """The newest frame not yet taken, waiting up to timeout_s; None if there is none."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout_s)
            frame, self._frame = self._frame, None
            return frame


class FrameSource(ABC):
    """Produces frames in a thread until stopped, exhausted, or max_duration_s has passed."""

    def __init__(self, max_duration_s: float | None = None) -> None:
        self.max_duration_s = max_duration_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # Unix time in ms (float) at which frame 0 of a paced source was due: the origin of
        # its timeline, which a file's soundtrack shares (None until the source starts, and
        # for live cameras).
        self.origin_wall_ms: float | None = None
        # Frames in one pass of a looping source (None until known).
        self.pass_frames: int | None = None

    @property
    @abstractmethod
    def fps(self) -> float:
        """The nominal capture rate."""

    @abstractmethod
    def _frames(self) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 RGB frames, each yielded at its capture time."""

    def start(self, slot: LatestFrame) -> None:
        self._thread = threading.Thread(target=self._run, args=(slot,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self, slot: LatestFrame) -> None:
        started = time.monotonic()
        try:
            for index, image in enumerate(self._frames()):
                if self._stop.is_set():
                    break
                if self.max_duration_s is not None and (
                    time.monotonic() - started >= self.max_duration_s
                ):
                    break
                slot.put(CapturedFrame(image, wall_clock_ms(), index))
        except Exception as error:  # reported by the sender once the thread ends
            self.error = error
            logger.error("frame source failed: %s", error)
        finally:
            slot.close()
            self.close()

    def close(self) -> None:  # noqa: B027 (sources without native handles hold nothing)
        """Release the device or file."""


def _paced(frames: Iterator[np.ndarray], fps: float, source: FrameSource) -> Iterator[np.ndarray]:
    """Yield each frame at its time in a real-time schedule of `fps` frames per second,
    starting now (recorded as source.origin_wall_ms)."""
    stop = source._stop
    start = time.monotonic()
    source.origin_wall_ms = time.time() * 1000
    for index, frame in enumerate(frames):
        delay = start + index / fps - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        yield frame


class ArraySource(FrameSource):
    """Frames from memory at `fps`, in real time; looping repeats them until stopped."""

    def __init__(
        self,
        frames: Sequence[np.ndarray],
        fps: float,
        loop: bool = False,
        max_duration_s: float | None = None,
    ) -> None:
        super().__init__(max_duration_s)
        if not frames:
            raise ValueError("ArraySource needs at least one frame")
        self._images = list(frames)
        self._fps = fps
        self.loop = loop
        self.pass_frames = len(self._images)

    @property
    def fps(self) -> float:
        return self._fps

    def _all(self) -> Iterator[np.ndarray]:
        while True:
            yield from self._images
            if not self.loop:
                return

    def _frames(self) -> Iterator[np.ndarray]:
        return _paced(self._all(), self._fps, self)


class VideoFileSource(FrameSource):
    """A video file played in real time as if it were a camera, at `fps` (resampled)."""

    def __init__(
        self, path: Path, fps: float, loop: bool = False, max_duration_s: float | None = None
    ) -> None:
        from talkcodec.video import probe

        super().__init__(max_duration_s)
        if not path.is_file():
            raise CaptureError(f"no such input file: {path}")
        probe(path)  # raises VideoError naming the file when it is not a video
        self.path = path
        self._fps = fps
        self.loop = loop

    @property
    def fps(self) -> float:
        return self._fps

    def _all(self) -> Iterator[np.ndarray]:
        from talkcodec.video import read_frames

        while True:
            count = 0
            for _, image in read_frames(self.path, self._fps):
                count += 1
                yield image
            self.pass_frames = count
            if not self.loop:
                return

    def _frames(self) -> Iterator[np.ndarray]:
        return _paced(self._all(), self._fps, self)


class CameraSource(FrameSource):
    """An OpenCV camera; its blocking reads set the pace."""

    def __init__(self, index: int, max_duration_s: float | None = None) -> None:
        import cv2

        super().__init__(max_duration_s)
        self.index = index
        # OpenCV would print its own error lines for a missing device; ours says it in one.
        cv2.setLogLevel(0)  # 0: silent
        self._capture = cv2.VideoCapture(index)
        if not self._capture.isOpened():
            self._capture.release()
            raise CaptureError(f"cannot open camera {index} (no such device, or it is busy)")
        self._fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or 30.0

    @property
    def fps(self) -> float:
        return self._fps

    def _frames(self) -> Iterator[np.ndarray]:
        import cv2

        while not self._stop.is_set():
            ok, bgr = self._capture.read()
            if not ok:
                raise CaptureError(f"camera {self.index} stopped delivering frames")
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self._capture.release()
