"""The receiver's side of the audio track: RTP packets in, lip-synchronised sound out.

aiortc's audio jitter buffer holds four packets before releasing one (4 x 40 ms of latency) and
stops releasing after a lost packet until 16 more have come, then stays that far behind. Our
playout (talkcodec.audio.playout) orders, times and conceals by itself, so the receiver swaps
that buffer for AudioPacketBuffer, which passes every packet on as it comes and drops only those
behind the last one passed (which aiortc's timestamp mapper would take for a wrap-around).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from aiortc import RTCRtpReceiver
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from talkcodec.audio.playout import AudioPlayout, AudioSink
from talkcodec.audio.sources import SAMPLE_RATE, AudioUnavailable
from talkcodec.config import AudioConfig
from talkcodec.transport.overhead import rtp_audio_stream_cost
from talkcodec.transport.stats import rates_kbit_s

logger = logging.getLogger(__name__)

TICK_S = 0.005  # how often the playout looks for due frames
_SEQ_MODULO = 1 << 16
_JITTER_BUFFER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"


@dataclass
class AudioPacketCounts:
    packets: int = 0
    payload_bytes: int = 0
    lost: int = 0  # sequence numbers skipped
    behind: int = 0  # arrived after a later one: dropped


class AudioPacketBuffer:
    """aiortc's JitterBuffer interface (`add`, `capacity`) without the holding: each packet
    ahead of the last one is released at once as one frame (an Opus packet is a frame)."""

    capacity = 16

    def __init__(self) -> None:
        self.counts = AudioPacketCounts()
        self._last_seq: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last_seq is not None:
            ahead = (packet.sequence_number - self._last_seq) % _SEQ_MODULO
            if ahead == 0 or ahead >= _SEQ_MODULO // 2:
                self.counts.behind += 1
                return False, None
            self.counts.lost += ahead - 1
        self._last_seq = packet.sequence_number
        data: bytes = packet._data  # type: ignore[attr-defined]  # set by aiortc's depayloader
        self.counts.packets += 1
        self.counts.payload_bytes += len(data)
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


def install_packet_buffer(receiver: RTCRtpReceiver) -> AudioPacketBuffer | None:
    """Swap the audio receiver's jitter buffer for ours; None (and a warning) when this aiortc
    keeps it elsewhere: the call then has aiortc's latency, and its counts stay empty."""
    if not hasattr(receiver, _JITTER_BUFFER_ATTRIBUTE):
        logger.warning("this aiortc has no audio jitter buffer to replace; audio lags more")
        return None
    buffer = AudioPacketBuffer()
    setattr(receiver, _JITTER_BUFFER_ATTRIBUTE, buffer)
    return buffer


def to_mono(frame) -> np.ndarray:  # type: ignore[no-untyped-def]
    """(N,) int16 from a decoded av.AudioFrame (aiortc decodes Opus to packed s16 stereo)."""
    samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
    return samples.mean(axis=1).astype(np.int16)


class DevicePlayer:
    """Plays the call on a sound output through `sounddevice` (optional); AudioUnavailable when
    there is none. Blocks queue up to 0.5 s; an empty queue plays silence."""

    def __init__(self, device: str | int | None = None) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as error:
            raise AudioUnavailable(
                f"audio is recorded but not played: no sound output ({error})"
            ) from None
        self._blocks: deque[np.ndarray] = deque(maxlen=SAMPLE_RATE // 2 // 480)
        self._pending = np.zeros(0, np.int16)
        self._lock = threading.Lock()
        try:
            self._stream = sounddevice.OutputStream(
                samplerate=SAMPLE_RATE, channels=1, dtype="int16", device=device,
                callback=self._fill,
            )  # fmt: skip
            self._stream.start()
        except Exception as error:  # PortAudioError: no device
            raise AudioUnavailable(
                f"audio is recorded but not played: cannot open the sound output ({error})"
            ) from None

    def __call__(self, samples: np.ndarray, media_ms: float) -> None:
        with self._lock:
            self._blocks.append(samples)

    def _fill(self, out: np.ndarray, frames: int, _time: object, _status: object) -> None:
        with self._lock:
            while len(self._pending) < frames and self._blocks:
                self._pending = np.concatenate([self._pending, self._blocks.popleft()])
            take = self._pending[:frames]
            self._pending = self._pending[frames:]
        out[:, 0] = 0
        out[: len(take), 0] = take

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


class AudioReceiver:
    """Takes the call's audio track, plays it out in sync with the picture into `sinks`."""

    def __init__(self, config: AudioConfig | None = None, sinks: list[AudioSink] | None = None):
        self.config = config or AudioConfig()
        self.playout = AudioPlayout(list(sinks or []), self.config.max_sync_delay_ms)
        self.played_on_device = False
        self._buffer: AudioPacketBuffer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closers: list[DevicePlayer] = []

    @property
    def sinks(self) -> list[AudioSink]:
        return self.playout.sinks

    def add_device(self, device: str | int | None = None) -> None:
        """Also play on a sound output; AudioUnavailable if there is none."""
        player = DevicePlayer(device)
        self.playout.sinks.append(player)
        self._closers.append(player)
        self.played_on_device = True

    def attach(self, track: MediaStreamTrack, receiver: RTCRtpReceiver) -> None:
        """Start consuming the remote audio track (on the event loop)."""
        self._buffer = install_packet_buffer(receiver)
        self._tasks = [
            asyncio.create_task(self._consume(track)),
            asyncio.create_task(self._play()),
        ]

    def set_clock(self, origin_ms: int) -> None:
        self.playout.set_clock(origin_ms, time.time() * 1000)

    def note_video(self, latency_ms: float) -> None:
        self.playout.note_video(latency_ms)

    async def _consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.playout.push(frame.pts, to_mono(frame), time.time() * 1000)

    async def _play(self) -> None:
        while True:
            self.playout.tick(time.time() * 1000)
            await asyncio.sleep(TICK_S)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for player in self._closers:
            player.close()
        self._closers = []

    def wire_bytes(self) -> int:
        """What the packets received so far took on the wire (headers modelled)."""
        counts = self._buffer.counts if self._buffer else AudioPacketCounts()
        return rtp_audio_stream_cost(counts.packets, counts.payload_bytes).wire_bytes

    def summary(self, elapsed_s: float) -> dict[str, object]:
        counts = self._buffer.counts if self._buffer else AudioPacketCounts()
        cost = rtp_audio_stream_cost(counts.packets, counts.payload_bytes)
        return {
            "packets_received": counts.packets,
            "packets_lost": counts.lost,
            "packets_behind": counts.behind,
            "payload_bytes": counts.payload_bytes,
            **rates_kbit_s(cost, elapsed_s),
            "played_on_device": self.played_on_device,
            **self.playout.summary(),
        }


class AudioTrackTaker:
    """Waits on a peer connection for the sender's audio track (it arrives with the offer,
    before the data channels open); `audio` is its AudioReceiver once it came, else None."""

    def __init__(self, pc, config: AudioConfig | None = None) -> None:  # type: ignore[no-untyped-def]
        self.config = config or AudioConfig()
        self.audio: AudioReceiver | None = None
        self._pc = pc
        pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio" or self.audio is not None:
            return
        receiver = next(
            (t.receiver for t in self._pc.getTransceivers() if t.receiver.track is track), None
        )
        if receiver is None:
            logger.warning("audio track without its RTP receiver: not played")
            return
        self.audio = AudioReceiver(self.config)
        self.audio.attach(track, receiver)
