"""Live call statistics: what arrived on each channel, what it cost on the wire, how late
frames were shown and how long the picture froze.

Wire bytes are the messages' own bytes plus the SCTP/DTLS/UDP/IPv4 overhead of each message
(talkcodec/transport/overhead.py). Latency is capture to display: packets carry their capture
time as wall-clock milliseconds, which a receiver on the same machine (or with a synchronised
clock) subtracts from its own.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from talkcodec.bitstream import PTS_MODULO
from talkcodec.transport.overhead import WireCost, datachannel_message_cost

# A latency beyond this is a clock mismatch or a wrapped timestamp, not a measurement.
_MAX_PLAUSIBLE_LATENCY_MS = 60_000
# A report's queuing delay is measured from the lowest latency of this many recent report
# intervals: long enough to outlast a spell of queueing, short enough to follow a path whose
# base delay changed (a slower link takes longer to carry each message; the sender may let
# frames wait longer for a bundle).
DELAY_BASELINE_INTERVALS = 10
MEDIA_CHANNELS = ("keyframe", "keypoints")


def wall_clock_ms() -> int:
    """Now, as a packet's pts_ms: Unix time in milliseconds modulo 2**32."""
    return int(time.time() * 1000) % PTS_MODULO


def latency_ms(pts_ms: int, now_ms: int) -> int | None:
    """now - pts modulo 2**32, or None when that is implausible (clocks disagree)."""
    elapsed = (now_ms - pts_ms) % PTS_MODULO
    return elapsed if elapsed <= _MAX_PLAUSIBLE_LATENCY_MS else None


@dataclass
class ChannelCounter:
    """Messages seen on one channel: count, their bytes, and those bytes on the wire."""

    messages: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0

    def add(self, size: int) -> None:
        self.messages += 1
        self.payload_bytes += size
        self.wire_bytes += datachannel_message_cost(size).wire_bytes


def rates_kbit_s(cost: WireCost, elapsed_s: float) -> dict[str, float]:
    """kbit/s of a stream's payload and of its bytes on the wire over elapsed_s."""
    elapsed_s = max(elapsed_s, 1e-6)
    return {
        "kbit_s": round(cost.payload_bytes * 8 / elapsed_s / 1000, 3),
        "wire_kbit_s": round(cost.wire_bytes * 8 / elapsed_s / 1000, 3),
    }


def percentile(values: list[float] | list[int], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


@dataclass
class CallStats:
    """The receiver's view of a call; summary() is what goes into the stats JSON."""

    started_s: float = field(default_factory=time.monotonic)
    channels: dict[str, ChannelCounter] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[int] = field(default_factory=list)
    displayed_pts_ms: list[int] = field(default_factory=list)
    # Capture-time span from the last frame shown before a keypoint loss to the first after it.
    recoveries_ms: list[int] = field(default_factory=list)
    superseded: int = 0  # decoded frames not rendered because a newer one was waiting
    keyframe_requests: int = 0
    refresh_requests: int = 0

    def count_message(self, channel: str, size: int) -> None:
        self.channels.setdefault(channel, ChannelCounter()).add(size)

    def count_drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def count_display(self, pts_ms: int, now_ms: int) -> int | None:
        """Count a displayed frame; its capture-to-display latency (None: implausible)."""
        self.displayed_pts_ms.append(pts_ms)
        latency = latency_ms(pts_ms, now_ms)
        if latency is not None:
            self.latencies_ms.append(latency)
        return latency

    def elapsed_s(self) -> float:
        return max(time.monotonic() - self.started_s, 1e-6)

    def rates(self, channels: tuple[str, ...] = MEDIA_CHANNELS) -> dict[str, float]:
        """Frames/s and kbit/s (payload and on the wire) over the call so far."""
        elapsed = self.elapsed_s()
        counters = [self.channels[name] for name in channels if name in self.channels]
        payload = sum(counter.payload_bytes for counter in counters)
        wire = sum(counter.wire_bytes for counter in counters)
        return {
            "fps": len(self.displayed_pts_ms) / elapsed,
            "payload_kbit_s": payload * 8 / elapsed / 1000,
            "wire_kbit_s": wire * 8 / elapsed / 1000,
        }

    def freezes_ms(self) -> list[int]:
        """Capture-time gaps between consecutive displayed frames (one frame period when smooth)."""
        pts = self.displayed_pts_ms
        return [(b - a) % PTS_MODULO for a, b in zip(pts, pts[1:], strict=False)]

    def summary(self) -> dict[str, object]:
        elapsed = self.elapsed_s()
        gaps = self.freezes_ms()
        return {
            "duration_s": round(elapsed, 3),
            "frames_displayed": len(self.displayed_pts_ms),
            **{key: round(value, 3) for key, value in self.rates().items()},
            "latency_ms": {
                "median": percentile(self.latencies_ms, 50),
                "p95": percentile(self.latencies_ms, 95),
                "max": max(self.latencies_ms, default=None),
                "samples": len(self.latencies_ms),
            },
            "display_gap_ms": {
                "median": percentile(gaps, 50),
                "p95": percentile(gaps, 95),
                "max": max(gaps, default=None),
            },
            "loss_recovery_ms": {
                "events": len(self.recoveries_ms),
                "median": percentile(self.recoveries_ms, 50),
                "p95": percentile(self.recoveries_ms, 95),
                "max": max(self.recoveries_ms, default=None),
            },
            "channels": {
                name: {
                    "messages": counter.messages,
                    "payload_bytes": counter.payload_bytes,
                    "wire_bytes": counter.wire_bytes,
                    "payload_kbit_s": round(counter.payload_bytes * 8 / elapsed / 1000, 3),
                    "wire_kbit_s": round(counter.wire_bytes * 8 / elapsed / 1000, 3),
                }
                for name, counter in sorted(self.channels.items())
            },
            "dropped_messages": dict(sorted(self.dropped.items())),
            "superseded_frames": self.superseded,
            "keyframe_requests": self.keyframe_requests,
            "refresh_requests": self.refresh_requests,
        }

    def overlay_lines(self) -> list[str]:
        """Short lines for the on-screen overlay."""
        rates = self.rates()
        recent = self.latencies_ms[-50:]
        median = percentile(recent, 50)
        latency = f"{median:.0f} ms" if median is not None else "-"
        return [
            f"{rates['fps']:.1f} fps  latency {latency}",
            f"{rates['payload_kbit_s']:.1f} kbit/s payload, {rates['wire_kbit_s']:.1f} on wire",
        ]


@dataclass(frozen=True)
class IntervalFigures:
    """What a receiver saw in one report interval (ReceiverReport's last four fields):
    queuing_delay_ms is None when no frame was shown in it."""

    interval_ms: int
    received_wire_bps: int
    queuing_delay_ms: int | None
    lost_per_256: int


@dataclass
class ReportInterval:
    """The receiver's state between two reports: where the counters stood at the last one."""

    started_s: float = field(default_factory=time.monotonic)
    wire_bytes: int = 0
    latencies_seen: int = 0
    lost: int = 0
    expected: int = 0
    minima_ms: deque[int] = field(default_factory=lambda: deque(maxlen=DELAY_BASELINE_INTERVALS))

    def close(
        self, now_s: float, stats: CallStats, lost: int, received: int, audio_wire_bytes: int = 0
    ) -> IntervalFigures:
        """The figures of the interval that ends at now_s (the next one starts): media wire
        bits per second (the data channels' and the audio track's, audio_wire_bytes so far),
        the interval's median latency above the recent lowest, and keypoint packets lost per
        256 expected (`lost`, `received`: the decoder's counts so far)."""
        interval_s = max(now_s - self.started_s, 1e-3)
        wire_bytes = audio_wire_bytes + sum(
            stats.channels[c].wire_bytes for c in MEDIA_CHANNELS if c in stats.channels
        )
        latencies = stats.latencies_ms[self.latencies_seen :]
        delay_ms = None
        if latencies:
            self.minima_ms.append(min(latencies))
            delay_ms = max(0, round(float(np.median(latencies))) - min(self.minima_ms))
        lost_now, expected_now = lost - self.lost, lost + received - self.expected
        figures = IntervalFigures(
            interval_ms=round(interval_s * 1000),
            received_wire_bps=round((wire_bytes - self.wire_bytes) * 8 / interval_s),
            queuing_delay_ms=delay_ms,
            lost_per_256=min(255, 256 * lost_now // expected_now) if expected_now > 0 else 0,
        )
        self.started_s, self.wire_bytes = now_s, wire_bytes
        self.latencies_seen += len(latencies)
        self.lost, self.expected = lost, lost + received
        return figures
