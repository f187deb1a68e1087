"""Reading and writing video files with PyAV, resampled to the codec's frame rate."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)


class VideoError(RuntimeError):
    """A video file cannot be opened or decoded; the message names the file."""


@contextmanager
def keeping_thread_scheduling() -> Iterator[None]:
    """Puts the calling thread's scheduling policy back as it was, around code that opens an
    SVT-AV1 encoder: where it may (as root), SVT-AV1 makes the thread that opens an encoder
    SCHED_FIFO at priority 99, which then starves everything else on the machine, other
    processes included."""
    if not hasattr(os, "sched_getscheduler"):  # not Linux: nothing to put back
        yield
        return
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
            os.sched_setscheduler(0, policy, param)


def probe(path: str | Path) -> tuple[int, int, float, float]:
    """(width, height, fps, duration_s) of the first video stream."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            duration = 0.0
            if stream.duration and stream.time_base:
                duration = float(stream.duration * stream.time_base)
            if not duration and container.duration:
                duration = container.duration / av.time_base
            return stream.width, stream.height, fps, duration
    except (av.FFmpegError, IndexError, OSError) as error:
        raise VideoError(f"cannot read video {path}: {error}") from None


def read_frames(
    path: str | Path, fps: float | None = None, max_frames: int | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (time_s, frame (H, W, 3) uint8 RGB), resampled to `fps` by nearest earlier frame.

    With fps=None every decoded frame is yielded at its own time. Resampling repeats or drops
    source frames as a camera running at `fps` would have seen them.
    """
    count = 0
    next_time = 0.0
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise VideoError(f"cannot open video {path}: {error}") from None
    with container:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        previous: tuple[float, np.ndarray] | None = None
        try:
            for frame in container.decode(stream):
                time_s = float(frame.time) if frame.time is not None else 0.0
                image = frame.to_ndarray(format="rgb24")
                if fps is None:
                    yield time_s, image
                    count += 1
                    if max_frames is not None and count >= max_frames:
                        return
                    continue
                # Emit every output instant that falls before this frame from the previous one.
                while previous is not None and next_time < time_s - 1e-6:
                    yield next_time, previous[1]
                    count += 1
                    next_time = count / fps
                    if max_frames is not None and count >= max_frames:
                        return
                previous = (time_s, image)
        except av.FFmpegError as error:
            raise VideoError(f"cannot decode video {path}: {error}") from None
        if fps is not None and previous is not None and (max_frames is None or count < max_frames):
            yield next_time, previous[1]


class VideoWriter:
    """Writes RGB frames to an H.264 mp4 (near-lossless by default: crf 12), and with
    audio_rate a mono AAC track (96 kbit/s) from int16 blocks; audio is one continuous run of
    samples from the file's start (the caller pads gaps)."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        crf: int = 12,
        audio_rate: int | None = None,
    ):
        self._container = av.open(str(path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self._audio = None
        self._audio_samples = 0
        if audio_rate is not None:
            self._audio = self._container.add_stream("aac", rate=audio_rate, layout="mono")
            self._audio.bit_rate = 96_000
            self._resampler = av.AudioResampler(
                format="fltp", layout="mono", rate=audio_rate, frame_size=1024
            )

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def write_audio(self, samples: np.ndarray) -> None:
        """(N,) int16 mono samples, following the previous ones."""
        if self._audio is None:
            raise ValueError("this writer was opened without an audio track")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, np.int16)[None], format="s16", layout="mono"
        )
        frame.sample_rate = self._audio.rate
        frame.pts = self._audio_samples
        self._audio_samples += len(samples)
        self._encode_audio(self._resampler.resample(frame))

    def _encode_audio(self, frames: list[av.AudioFrame]) -> None:
        assert self._audio is not None
        for frame in frames:
            for packet in self._audio.encode(frame):
                self._container.mux(packet)

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        if self._audio is not None:
            self._encode_audio(self._resampler.resample(None))
            for packet in self._audio.encode():
                self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
