"""The receiver's audio playout: lip sync against the picture, concealment of lost packets, and
the measured audio-video offset.

Decoded frames arrive with their RTP-relative pts (48 kHz samples) and are placed on the media
clock by the AUDIO_CLOCK origin. Each frame plays at media time + delay, where the delay follows
the picture's capture-to-display latency (the picture is the slower path: bundling, rendering),
never less than the audio's own arrival latency, and changes by at most SLEW of real time (a
playout that stretches by up to 5%), or jumps up at once when the picture's latency jumped by
more than JUMP_UP_MS. A frame missing at its play time is concealed by the last
good frame, fading (waveform repetition, as simple PLC does), and dropped if it comes later.

The offset at each displayed picture is picture latency - audio latency: positive when the
sound is ahead of the picture, the sign of ITU-R BT.1359 (detectable beyond +45 / -125 ms).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from talkcodec.audio.sources import SAMPLE_RATE
from talkcodec.bitstream import PTS_MODULO, signed_difference
from talkcodec.transport.stats import percentile

logger = logging.getLogger(__name__)

# Called with each played (N,) int16 mono block and the media time (Unix ms) of its first sample.
AudioSink = Callable[[np.ndarray, float], None]

SLEW = 0.05  # the delay changes by at most 5% of the time that passes...
# ... except when the picture's latency jumped up by more than this (its playout buffer began
# to wait for recovered frames, say): slewing 80 ms would leave the sound ahead, beyond
# BT.1359's +45 ms, for 1.6 s; the delay jumps instead (one gap in the sound, once).
JUMP_UP_MS = 40.0
JUMP_FRAMES = 3
ARRIVAL_MARGIN_MS = 5.0  # played no sooner than this after the usual (p95) arrival
CONCEAL_FADE = 0.6  # each further concealed frame is this much quieter
MAX_CONCEAL_MS = 200.0  # beyond this the stream is taken to have paused: silence, no playout
MAX_QUEUED_FRAMES = 100  # frames waiting (for the clock, or to play) beyond this are dropped
RECENT = 200  # arrival latencies and offsets kept for the delay estimate and the report


@dataclass
class AudioPlayoutStats:
    frames_received: int = 0
    frames_played: int = 0
    late_frames: int = 0  # arrived after their slot was concealed: dropped
    overflow_frames: int = 0  # dropped because too many waited
    concealed_ms: float = 0.0  # lost sound concealed (a gap the stream came back from)
    paused_ms: float = 0.0  # gaps beyond MAX_CONCEAL_MS, and the stream's end: silence
    offsets_ms: list[float] = field(default_factory=list)  # one per displayed picture
    delays_ms: list[float] = field(default_factory=list)  # the playout delay, per played frame
    delay_jumps: int = 0  # times the delay jumped up to the picture's (JUMP_UP_MS)


class AudioPlayout:
    """Schedules decoded audio against the media clock; `tick(now_ms)` plays what is due.

    All times are Unix ms (floats) on the receiver's clock, which for latencies is taken to be
    the sender's (same machine or synchronised): a constant difference shifts both streams'
    latencies alike and leaves the offset exact.
    """

    def __init__(
        self, sinks: list[AudioSink], max_delay_ms: float = 400.0, conceal: bool = True
    ) -> None:
        """conceal: False plays silence where a frame is missing (to measure what PLC does)."""
        self.sinks = sinks
        self.max_delay_ms = max_delay_ms
        self.conceal = conceal
        self.stats = AudioPlayoutStats()
        self._origin_ms: float | None = None  # media time of pts 0, unwrapped
        self._queue: deque[tuple[int, np.ndarray]] = deque()  # (pts, samples) in pts order
        # (pts, arrival) of frames that came before the clock
        self._unclocked: deque[tuple[int, float]] = deque(maxlen=MAX_QUEUED_FRAMES)
        self._next_pts: int | None = None  # the next sample to play (None: paused)
        self._paused_at_pts: int | None = None
        self._frame_samples = 0
        self._arrivals_ms: deque[float] = deque(maxlen=RECENT)
        self._required_ms: float | None = None  # p95 arrival + margin, kept as arrivals come
        self._video_latency_ms: float | None = None
        self._frames_above = 0
        self.delay_ms: float | None = None
        self.last_latency_ms: float | None = None  # of the last frame played
        self._last_tick_ms: float | None = None
        self._missing_ms = 0.0  # concealed since the last frame played
        self._last_good: np.ndarray | None = None
        self._concealed_in_row = 0

    # -- inputs ------------------------------------------------------------------------------

    def set_clock(self, origin_ms_mod: int, now_ms: float) -> None:
        """The AUDIO_CLOCK origin (media ms modulo 2**32), unwrapped to the nearest now."""
        behind = signed_difference(round(now_ms) - origin_ms_mod, PTS_MODULO)
        self._origin_ms = round(now_ms) - behind
        for pts, arrival_ms in self._unclocked:
            self._note_arrival(arrival_ms - self.media_ms(pts))
        self._unclocked.clear()

    def push(self, pts: int, samples: np.ndarray, now_ms: float) -> None:
        """A decoded (N,) int16 mono frame at RTP-relative pts (samples at 48 kHz)."""
        self.stats.frames_received += 1
        if self._next_pts is not None and pts < self._next_pts:
            self.stats.late_frames += 1  # its slot has been played or concealed
            return
        if len(self._queue) >= MAX_QUEUED_FRAMES:
            self._queue.popleft()
            self.stats.overflow_frames += 1
        self._queue.append((pts, samples))
        self._frame_samples = self._frame_samples or len(samples)
        if self._origin_ms is None:
            self._unclocked.append((pts, now_ms))
        else:
            self._note_arrival(now_ms - self.media_ms(pts))

    def note_video(self, latency_ms: float) -> None:
        """A picture was displayed with this capture-to-display latency: follow it, and measure
        the offset against the audio playing now."""
        previous = self._video_latency_ms
        # Pictures JUMP_UP_MS later than the average, JUMP_FRAMES in a row: the picture's
        # latency stepped up (not one late render), and the average starts again from there.
        above = previous is not None and latency_ms - previous > JUMP_UP_MS
        self._frames_above = self._frames_above + 1 if above else 0
        if previous is None or self._frames_above >= JUMP_FRAMES:
            self._video_latency_ms, self._frames_above = latency_ms, 0
        else:
            self._video_latency_ms = 0.9 * previous + 0.1 * latency_ms
        if self.last_latency_ms is not None and self._missing_ms == 0:
            self.stats.offsets_ms.append(latency_ms - self.last_latency_ms)

    # -- playout -----------------------------------------------------------------------------

    def media_ms(self, pts: int) -> float:
        assert self._origin_ms is not None
        return self._origin_ms + pts * 1000 / SAMPLE_RATE

    def tick(self, now_ms: float) -> None:
        """Play every frame that is due by now; conceal those missing at their time."""
        if self._origin_ms is None:
            return
        self._steer_delay(now_ms)
        assert self.delay_ms is not None or not self._queue
        while self.delay_ms is not None:
            if self._next_pts is None:
                if not self._queue:
                    return
                self._resume(self._queue[0][0])
            due_ms = self.media_ms(self._next_pts) + self.delay_ms
            if due_ms > now_ms:
                return
            if self._queue and self._queue[0][0] == self._next_pts:
                self._play_next(now_ms)
            elif self._queue and self._queue[0][0] < self._next_pts:
                self._queue.popleft()
                self.stats.late_frames += 1
            elif now_ms - due_ms >= self._frame_ms() / 2:
                self._conceal_next(now_ms)
            else:
                return

    def _resume(self, pts: int) -> None:
        if self._paused_at_pts is not None:
            self.stats.paused_ms += max(0, pts - self._paused_at_pts) * 1000 / SAMPLE_RATE
            self._paused_at_pts = None
        self._next_pts = pts

    def _frame_ms(self) -> float:
        return self._frame_samples * 1000 / SAMPLE_RATE if self._frame_samples else 20.0

    def _note_arrival(self, latency_ms: float) -> None:
        # Once per frame here rather than at every 5 ms tick.
        self._arrivals_ms.append(latency_ms)
        self._required_ms = float(np.percentile(self._arrivals_ms, 95)) + ARRIVAL_MARGIN_MS

    def _target_delay_ms(self) -> float | None:
        required = self._required_ms
        if required is None:
            return None
        wanted = max(required, self._video_latency_ms or 0.0)
        return min(wanted, max(self.max_delay_ms, required))

    def _steer_delay(self, now_ms: float) -> None:
        target = self._target_delay_ms()
        elapsed = 0.0 if self._last_tick_ms is None else now_ms - self._last_tick_ms
        self._last_tick_ms = now_ms
        if target is None:
            return
        if self.delay_ms is None:
            self.delay_ms = target
            return
        if target - self.delay_ms > JUMP_UP_MS:
            self.delay_ms = target
            self.stats.delay_jumps += 1
            return
        step = SLEW * max(elapsed, 0.0)
        self.delay_ms += float(np.clip(target - self.delay_ms, -step, step))

    def _play_next(self, now_ms: float) -> None:
        pts, samples = self._queue.popleft()
        self._last_good = samples
        self._concealed_in_row = 0
        self.stats.concealed_ms += self._missing_ms  # a loss, now that the stream goes on
        self._missing_ms = 0.0
        self.stats.frames_played += 1
        self.last_latency_ms = now_ms - self.media_ms(pts)
        self.stats.delays_ms.append(self.last_latency_ms)
        self._emit(samples, pts)

    def _conceal_next(self, now_ms: float) -> None:
        assert self._next_pts is not None
        count = self._frame_samples or SAMPLE_RATE // 50
        if self._queue and self._queue[0][0] > self._next_pts:
            count = min(count, self._queue[0][0] - self._next_pts)
        duration_ms = count * 1000 / SAMPLE_RATE
        self._missing_ms += duration_ms
        if self._missing_ms > MAX_CONCEAL_MS:
            # The stream paused (or is gone): stop playing until a frame comes again; what
            # was concealed before is counted as the pause, not as a loss.
            self.stats.paused_ms += self._missing_ms
            self._missing_ms = 0.0
            self._paused_at_pts = self._next_pts
            self._next_pts = None
            self.last_latency_ms = None
            return
        self._concealed_in_row += 1
        self._emit(self._concealment(count), self._next_pts)
        self.last_latency_ms = now_ms - self.media_ms(self._next_pts - count)

    def _concealment(self, count: int) -> np.ndarray:
        if self._last_good is None or not self.conceal:
            return np.zeros(count, np.int16)
        repeated = np.resize(self._last_good, count).astype(np.float32)
        gain = CONCEAL_FADE**self._concealed_in_row
        return (repeated * gain).astype(np.int16)

    def _emit(self, samples: np.ndarray, pts: int) -> None:
        media_ms = self.media_ms(pts)
        self._next_pts = pts + len(samples)
        for sink in self.sinks:
            sink(samples, media_ms)

    # -- report ------------------------------------------------------------------------------

    def summary(self) -> dict[str, object]:
        delays = self.stats.delays_ms
        return {
            "frames_received": self.stats.frames_received,
            "frames_played": self.stats.frames_played,
            "late_frames": self.stats.late_frames,
            "overflow_frames": self.stats.overflow_frames,
            "concealed_ms": round(self.stats.concealed_ms, 1),
            "paused_ms": round(self.stats.paused_ms, 1),
            "delay_jumps": self.stats.delay_jumps,
            "playout_delay_ms": {
                "median": percentile(delays, 50),
                "p95": percentile(delays, 95),
            },
        }

    def offset_summary(self) -> dict[str, object]:
        offsets = self.stats.offsets_ms
        return {
            "median": percentile(offsets, 50),
            "p5": percentile(offsets, 5),
            "p95": percentile(offsets, 95),
            "samples": len(offsets),
            "sign": "picture latency - sound latency: positive when the sound leads",
        }
