"""Where the sender's audio comes from, as 48 kHz mono int16 chunks stamped with the media clock.

A timeline source (a file's soundtrack, the demo voice) is a function of time: the samples of
its timeline at an offset from the origin its video source started at, read in real time as
the clock passes them, so sound and picture leave the sender together. A live source (the
microphone) stamps each captured block with the wall-clock time of its first sample.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from talkcodec.runtime.sources import FrameSource

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48_000  # Opus's RTP clock (RFC 7587), and what every source delivers
# How long a timeline source waits for its video source to start before giving up.
ORIGIN_TIMEOUT_S = 60.0
# A live source keeps at most this much audio waiting; older blocks are dropped.
MAX_QUEUED_MS = 500


class AudioUnavailable(RuntimeError):
    """There is no audio to send (no microphone, no soundtrack); one line for the user."""


@dataclass(frozen=True)
class AudioChunk:
    """samples: (N,) int16 mono at SAMPLE_RATE. media_ms: Unix time in ms of samples[0]."""

    samples: np.ndarray
    media_ms: float


def now_ms() -> float:
    return time.time() * 1000


class AudioSource(ABC):
    """Chunks of audio in capture order, each returned once its last sample has been captured."""

    @abstractmethod
    async def read(self, count: int) -> AudioChunk | None:
        """The next `count` samples; None when the source has ended."""

    def close(self) -> None:  # noqa: B027 (sources without native handles hold nothing)
        """Release the device."""


class TimelineSource(AudioSource):
    """Samples as a function of time since the origin of a video source (`anchor`): chunk k
    holds timeline samples [k*count, (k+1)*count) and is read when the clock has passed them.
    The first read starts at the chunk the clock is in, so a late start skips, never lags."""

    def __init__(self, anchor: FrameSource) -> None:
        self.anchor = anchor
        self._position: int | None = None

    @abstractmethod
    def samples(self, start: int, count: int) -> np.ndarray | None:
        """(count,) int16 timeline samples from `start` (>= 0); None past the end."""

    async def _origin_ms(self) -> float:
        deadline = time.monotonic() + ORIGIN_TIMEOUT_S
        while self.anchor.origin_wall_ms is None:
            if time.monotonic() > deadline:
                raise AudioUnavailable("the video source never started; no audio sent")
            await asyncio.sleep(0.005)
        return self.anchor.origin_wall_ms

    async def read(self, count: int) -> AudioChunk | None:
        origin = await self._origin_ms()
        if self._position is None:
            elapsed = max(0.0, now_ms() - origin)
            self._position = int(elapsed * SAMPLE_RATE / 1000) // count * count
        start = self._position
        chunk_end_ms = origin + (start + count) * 1000 / SAMPLE_RATE
        delay_s = (chunk_end_ms - now_ms()) / 1000
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        samples = self.samples(start, count)
        if samples is None:
            return None
        self._position = start + count
        return AudioChunk(samples, origin + start * 1000 / SAMPLE_RATE)


def _looped(start: int, count: int, period: int | None) -> np.ndarray:
    """Timeline sample indices [start, start+count), wrapped to a loop of `period` samples."""
    indices = np.arange(start, start + count)
    return indices % period if period else indices


class FileAudio(TimelineSource):
    """A video file's soundtrack, played with its picture (a VideoFileSource of the same file):
    decoded once to 48 kHz mono (about 5.8 MB a minute); looping follows the picture's loop."""

    def __init__(self, path: Path, anchor: FrameSource, loop: bool = False) -> None:
        super().__init__(anchor)
        self.path = path
        self.loop = loop
        self._pcm = decode_soundtrack(path)

    def _period(self) -> int | None:
        if not self.loop or self.anchor.pass_frames is None:
            return None
        return round(self.anchor.pass_frames / self.anchor.fps * SAMPLE_RATE)

    def samples(self, start: int, count: int) -> np.ndarray | None:
        if not self.loop and start >= len(self._pcm):
            return None
        period = self._period()
        indices = _looped(start, count, period)
        out = np.zeros(count, np.int16)
        inside = indices < len(self._pcm)
        out[inside] = self._pcm[indices[inside]]
        return out


def decode_soundtrack(path: Path) -> np.ndarray:
    """(N,) int16 mono 48 kHz samples of the file's first audio stream, placed on the video's
    timeline (an audio stream that starts later is padded with silence)."""
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise AudioUnavailable(f"cannot read the soundtrack of {path}: {error}") from None
    with container:
        if not container.streams.audio:
            raise AudioUnavailable(f"{path} has no soundtrack; the call goes on without audio")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        blocks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                blocks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
            blocks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except av.FFmpegError as error:
            raise AudioUnavailable(f"cannot decode the soundtrack of {path}: {error}") from None
        lead_s = _stream_start_s(stream) - min(
            (_stream_start_s(s) for s in container.streams.video), default=0.0
        )
    pcm = np.concatenate(blocks) if blocks else np.zeros(0, np.int16)
    lead = round(max(lead_s, 0.0) * SAMPLE_RATE)
    return np.concatenate([np.zeros(lead, np.int16), pcm]).astype(np.int16)


def _stream_start_s(stream) -> float:  # type: ignore[no-untyped-def]
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


class DemoVoice(TimelineSource):
    """A voice-like signal synthesised at run time (no recording of anyone) that speaks with the
    demo portrait's mouth: a glottal pulse train at a gliding pitch through two moving formants,
    loud where the mouth is open and silent where it is closed.

    mouth_open: (F,) mouth opening of each frame of the demo loop (any unit); fps its rate.
    """

    def __init__(self, mouth_open: np.ndarray, fps: float, anchor: FrameSource) -> None:
        super().__init__(anchor)
        low, high = np.percentile(mouth_open, [15, 90])
        self._envelope = np.clip((mouth_open - low) / max(high - low, 1e-9), 0.0, 1.0)
        self._fps = fps

    def samples(self, start: int, count: int) -> np.ndarray:
        t = np.arange(start, start + count) / SAMPLE_RATE  # (N,) seconds on the timeline
        frame = t * self._fps
        index = np.floor(frame).astype(int)
        frac = frame - index
        frames = len(self._envelope)
        envelope = (1 - frac) * self._envelope[index % frames] + frac * self._envelope[
            (index + 1) % frames
        ]
        return synthesise_voice(t, envelope)


def synthesise_voice(t: np.ndarray, envelope: np.ndarray) -> np.ndarray:
    """(N,) int16 voiced sound at times t (s) with amplitude envelope (N,) in [0, 1].

    Pitch 130 Hz gliding +-25 Hz; harmonics up to 4 kHz shaped by formants F1 (300-800 Hz,
    rising with the opening, as an open jaw raises it) and F2 (900-2100 Hz, moving slowly).
    Every quantity is a closed-form function of t, so any chunk can be made on its own.
    """
    # Phase = 2 pi * integral of f0(t) = 130 + 18 sin(2 pi 0.31 t) + 7 sin(2 pi 1.7 t).
    phase = (
        2
        * np.pi
        * (
            130 * t
            - 18 / (2 * np.pi * 0.31) * np.cos(2 * np.pi * 0.31 * t)
            - 7 / (2 * np.pi * 1.7) * np.cos(2 * np.pi * 1.7 * t)
        )
    )
    f0 = 130 + 18 * np.sin(2 * np.pi * 0.31 * t) + 7 * np.sin(2 * np.pi * 1.7 * t)
    f1 = 300 + 500 * envelope
    f2 = 1500 + 600 * np.sin(2 * np.pi * 0.53 * t)
    signal = np.zeros_like(t)
    for harmonic in range(1, 31):
        frequency = harmonic * f0  # (N,)
        gain = 1.0 / (1 + ((frequency - f1) / 90) ** 2) + 0.6 / (1 + ((frequency - f2) / 120) ** 2)
        signal += gain / harmonic**0.5 * np.sin(harmonic * phase)
    loudness = np.where(envelope > 0.08, envelope**0.7, 0.0)
    return np.clip(signal * loudness * 4000, -32767, 32767).astype(np.int16)


class Microphone(AudioSource):
    """A sound input device through `sounddevice` (PortAudio), optional: `pip install
    sounddevice`. device: its name or index (None: the system default)."""

    def __init__(self, device: str | int | None = None) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as error:
            raise AudioUnavailable(
                f"no microphone: sounddevice/PortAudio is not available ({error}); "
                "pip install sounddevice, or --no-audio"
            ) from None
        self._blocks: deque[AudioChunk] = deque()
        self._lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = np.zeros(0, np.int16)
        self._pending_ms = 0.0
        self.dropped_blocks = 0
        try:
            self._stream = sounddevice.InputStream(
                samplerate=SAMPLE_RATE, channels=1, dtype="int16", device=device,
                callback=self._on_block,
            )  # fmt: skip
            self._stream.start()
        except Exception as error:  # PortAudioError, ValueError for an unknown device
            raise AudioUnavailable(f"cannot open microphone {device!r}: {error}") from None

    def _on_block(self, data: np.ndarray, frames: int, _time: object, _status: object) -> None:
        # In PortAudio's thread: stamp the block with the time of its first sample.
        chunk = AudioChunk(data[:, 0].copy(), now_ms() - frames * 1000 / SAMPLE_RATE)
        with self._lock:
            self._blocks.append(chunk)
            while len(self._blocks) * frames * 1000 / SAMPLE_RATE > MAX_QUEUED_MS:
                self._blocks.popleft()
                self.dropped_blocks += 1
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _next_block(self) -> AudioChunk:
        if self._wake is None:
            self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while True:
            with self._lock:
                if self._blocks:
                    return self._blocks.popleft()
                self._wake.clear()
            await self._wake.wait()

    async def read(self, count: int) -> AudioChunk | None:
        while len(self._pending) < count:
            block = await self._next_block()
            if not len(self._pending):
                self._pending_ms = block.media_ms
            self._pending = np.concatenate([self._pending, block.samples])
        samples, self._pending = self._pending[:count], self._pending[count:]
        media_ms = self._pending_ms
        self._pending_ms += count * 1000 / SAMPLE_RATE
        return AudioChunk(samples, media_ms)

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()
