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

A live sender also gives the cap a target below that ceiling, changed as the call goes (the
rate adaptation, RateAdapter below: a GCC-like congestion controller fed by the receiver's
reports): a token bucket that fills at the target and holds TARGET_BURST_S of it. The cap
then allows what both allow, so `--max-kbps` stays an upper bound whatever the target; a stream
without `--max-kbps` gets a cap with no ceiling of its own when it is first given a target.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from talkcodec.bitstream import PTS_MODULO
from talkcodec.keyframe import KeyframeCodec
from talkcodec.transport.fragmentation import DEFAULT_FRAGMENT_BYTES, FRAGMENT_HEADER_BYTES
from talkcodec.transport.overhead import (
    SCTP_MAX_USER_DATA_BYTES,
    SCTP_PACKET_OVERHEAD_BYTES,
    datachannel_stream_cost,
)

BURST_S = 4.0
WINDOW_S = 5.0
WINDOW_START_S = 1.0
# The target's bucket: how much of the target a burst (a keyframe) may take at once. At a low
# target a longer burst is a queue on the link.
TARGET_BURST_S = 1.0
# What a .tkc file spends once: magic, version, header length and a revision-3 stream header.
FILE_PREAMBLE_BYTES = 6 + 15
# Qualities the keyframe codecs are searched over when the budget binds, best first.
_KEYFRAME_QUALITIES = {
    "gc": (8, 4, 2),
    "webp": tuple(range(95, 0, -5)),
    "jpeg": (90, 70, 50, 30, 15, 5),
    "av1": tuple(range(52, 0, -4)),
}


class RateCap:
    """The budget of one stream at max_kbps (see module doc); times are the packets' pts_ms.
    max_kbps None: no ceiling, only the target once set_target_kbps gives one."""

    def __init__(self, max_kbps: float | None, fps: float) -> None:
        if max_kbps is not None and not max_kbps > 0:
            raise ValueError(f"max_kbps must be > 0, got {max_kbps}")
        self.bytes_per_s = math.inf if max_kbps is None else max_kbps * 1000 / 8
        self.frame_ms = 1000 / fps
        self.spent_bytes = FILE_PREAMBLE_BYTES
        self.skipped_frames = 0
        self.target_kbps: float | None = None
        self._start_ms: int | None = None
        self._recent: deque[tuple[float, int]] = deque()  # (ms since start, bytes)
        self._recent_bytes = 0  # the sum of _recent's bytes, kept as it changes
        self._tokens = 0.0  # the target's bucket, in bytes (below zero after an overdraft)
        self._tokens_at_ms: float | None = None  # elapsed ms the bucket was last filled to

    def set_target_kbps(self, target_kbps: float | None) -> None:
        """Hold the stream under target_kbps too, from the next frame on (None: the ceiling
        alone). A first target starts with an empty bucket (it comes when the link is already
        congested); a lower one cuts what the bucket holds to its new size."""
        if target_kbps is not None and not target_kbps > 0:
            raise ValueError(f"target_kbps must be > 0, got {target_kbps}")
        if self.target_kbps is None:
            self._tokens, self._tokens_at_ms = 0.0, None
        self.target_kbps = target_kbps
        if target_kbps is not None:
            self._tokens = min(self._tokens, target_kbps * 1000 / 8 * TARGET_BURST_S)

    def _target_left(self, elapsed_ms: float) -> float:
        """The target's bucket, filled up to elapsed_ms (inf without a target)."""
        if self.target_kbps is None:
            return math.inf
        bytes_per_s = self.target_kbps * 1000 / 8
        if self._tokens_at_ms is not None and elapsed_ms > self._tokens_at_ms:
            filled = self._tokens + bytes_per_s * (elapsed_ms - self._tokens_at_ms) / 1000
            self._tokens = min(filled, bytes_per_s * TARGET_BURST_S)
        if self._tokens_at_ms is None or elapsed_ms > self._tokens_at_ms:
            self._tokens_at_ms = elapsed_ms
        return self._tokens

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
        return min(left, self._target_left(elapsed_ms))

    def spend(self, pts_ms: int, size: int) -> None:
        elapsed_ms = self._elapsed_ms(pts_ms)
        self.spent_bytes += size
        self._recent_bytes += size
        self._recent.append((elapsed_ms, size))
        if self.target_kbps is not None:
            self._target_left(elapsed_ms)
            self._tokens -= size

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


# -- the live sender's rate adaptation -----------------------------------------------------------

# Back off to this share of what the receiver got when the queue grows (GCC's beta).
BACKOFF_FACTOR = 0.85
# Keypoint packets lost in a report interval: above LOSS_BACKOFF the link is congested; between
# LOSS_HOLD and it the target holds (random loss of a few percent is not congestion).
LOSS_BACKOFF = 0.10
LOSS_HOLD = 0.02
# The queue in the network, from the bytes sent and the bytes the receiver got (a cumulative
# sum that drains QUEUE_DRIFT of what arrived each report, so that noise does not add up):
# beyond QUEUE_BACKOFF_MS of what the link carries (less one message, the one on its way) in
# two reports running, it has grown.
QUEUE_BACKOFF_MS = 200
QUEUE_DRIFT = 0.05
# The receiver's queuing delay (its capture-to-display latency above the recent lowest): above
# DELAY_HOLD_MS the target holds; above it and DELAY_RISE_MS more than at the last report, with
# at least QUEUE_CONFIRM_MS of queue in the network, the queue is growing. (A receiver short of
# CPU shows frames late without any queue: its latency alone is not enough to back off.)
DELAY_HOLD_MS = 100
DELAY_RISE_MS = 30
QUEUE_CONFIRM_MS = 50
# After the sender changed its own delay (frames wait longer for a bundle), the latency moves by
# that much: the delay rules sit out this many reports.
DELAY_SETTLE_REPORTS = 2
# Probing up: 8 % a second while far below the capacity the link last showed, then 3 % of that
# capacity a second (GCC's multiplicative and additive increase).
INCREASE_PER_S = 0.08
NEAR_CAPACITY = 0.9
ADDITIVE_PER_S = 0.03
MIN_TARGET_KBPS = 2.0
# A keypoint message's headers on the wire (SCTP/DTLS/UDP/IPv4 and the chunk padding).
MESSAGE_OVERHEAD_BYTES = SCTP_PACKET_OVERHEAD_BYTES + 2
# Bundling is raised until the messages' headers take at most this share of the wire rate.
HEADER_SHARE = 0.5
MIN_PAYLOAD_KBPS = 0.5


@dataclass(frozen=True)
class Feedback:
    """One receiver report as the adapter reads it: the wire kbit/s that arrived over its
    interval, the share of keypoint packets lost in it, and the display latency above its
    recent lowest (None: unknown)."""

    interval_s: float
    received_kbps: float
    loss_fraction: float = 0.0
    queuing_delay_ms: int | None = None


@dataclass(frozen=True)
class AdaptationStep:
    """What one receiver report did: action is decrease, hold, increase or idle (no target
    yet and nothing congested); queue_ms is the network queue the adapter estimated."""

    at_s: float
    action: str
    target_kbps: float | None
    received_kbps: float
    sent_kbps: float
    loss_fraction: float
    queuing_delay_ms: int | None
    queue_ms: float


class RateAdapter:
    """The live sender's congestion controller, after Google Congestion Control (delay- and
    loss-based): from each receiver report, the wire kbit/s the sender should stay under.

    Congestion lowers the target, never above the target it had, and the next report holds
    (what it saw was sent before): a growing queue (over QUEUE_BACKOFF_MS of it in the network
    in two reports running, or a receiver's queuing delay that grew by DELAY_RISE_MS to above
    DELAY_HOLD_MS with some queue in the network) to
    BACKOFF_FACTOR times what the receiver got; loss above LOSS_BACKOFF to the rate in use
    times 1 - loss / 2 (GCC's loss rule). Some loss, a standing delay or a report that saw
    nothing holds. Otherwise the target grows 8 % a second, or additively once near the
    capacity the link showed when it last congested. The target stays None (no limit) until
    the first congestion; it never exceeds max_kbps.

    The network queue is the bytes sent less the bytes received, summed over the reports: the
    delay gradient of GCC, counted in bytes (a report interval lags the sender's by the
    one-way delay, so a queue that grows by q ms leaves q ms of the rate unreceived).
    """

    def __init__(self, max_kbps: float | None = None, min_kbps: float = MIN_TARGET_KBPS) -> None:
        self.max_kbps = max_kbps
        self.min_kbps = min_kbps if max_kbps is None else min(min_kbps, max_kbps)
        self.target_kbps: float | None = None
        self.capacity_kbps: float | None = None  # what the receiver got at the last congestion
        self.history: list[AdaptationStep] = []
        self._last_s: float | None = None
        self._last_sent = (0, 0)  # (media wire bytes, messages) sent by the last report
        self._message_bytes = 0.0  # the mean size of the messages sent since the one before
        self._queued_bytes = 0.0
        self._last_queue_ms = 0.0
        self._last_delay_ms: int | None = None
        self._hold_next = False
        self._delay_ignored = 0

    def ignore_delay(self, reports: int = DELAY_SETTLE_REPORTS) -> None:
        """The sender changed its own share of the latency: do not read the next `reports`
        queuing delays as the link's."""
        self._delay_ignored = reports

    def update(
        self, now_s: float, feedback: Feedback, sent_wire_bytes: int, sent_messages: int
    ) -> float | None:
        """The target after one report; sent_wire_bytes, sent_messages: the media messages the
        sender has handed over so far and their wire bytes (what it sent since the last report
        is the difference)."""
        elapsed_s = 1.0 if self._last_s is None else max(now_s - self._last_s, 1e-3)
        sent_bytes = sent_wire_bytes - self._last_sent[0]
        if sent_messages > self._last_sent[1]:
            self._message_bytes = sent_bytes / (sent_messages - self._last_sent[1])
        self._last_s, self._last_sent = now_s, (sent_wire_bytes, sent_messages)
        queue_ms = self._queue_ms(feedback, sent_bytes)
        standing_ms = min(queue_ms, self._last_queue_ms)  # the queue of two reports running
        self._last_queue_ms = queue_ms
        delay_ms = feedback.queuing_delay_ms if self._delay_ignored == 0 else None
        self._delay_ignored = max(0, self._delay_ignored - 1)
        delay_grew = (
            delay_ms is not None
            and self._last_delay_ms is not None
            and delay_ms > DELAY_HOLD_MS
            and delay_ms - self._last_delay_ms >= DELAY_RISE_MS
        )
        self._last_delay_ms = delay_ms
        received_kbps, loss = feedback.received_kbps, feedback.loss_fraction
        sent_kbps = sent_bytes * 8 / elapsed_s / 1000
        if self._hold_next:  # what this report saw was sent before the last decrease
            action, self._hold_next = "hold", False
        elif standing_ms > QUEUE_BACKOFF_MS or (delay_grew and queue_ms > QUEUE_CONFIRM_MS):
            action = "decrease"
            self._decrease(BACKOFF_FACTOR * received_kbps, received_kbps)
        elif loss > LOSS_BACKOFF:  # from the rate in use: the target may be far above it
            action = "decrease"
            used_kbps = min(sent_kbps, self.target_kbps or sent_kbps)
            self._decrease(used_kbps * (1 - loss / 2), received_kbps)
        elif (
            loss > LOSS_HOLD
            or (delay_ms or 0) > DELAY_HOLD_MS
            or received_kbps == 0  # nothing arrived (yet): no evidence the link is clear
        ):
            action = "hold"
        elif self.target_kbps is None:
            action = "idle"
        else:
            action = "increase"
            self._increase(min(elapsed_s, 2.0))
        if self.capacity_kbps is not None and action != "decrease":
            self.capacity_kbps = max(self.capacity_kbps, received_kbps)
        self.history.append(
            AdaptationStep(
                now_s, action, self.target_kbps, received_kbps, sent_kbps, loss, delay_ms,
                round(queue_ms, 1),
            )
        )  # fmt: skip
        return self.target_kbps

    def _queue_ms(self, feedback: Feedback, sent_bytes: int) -> float:
        """The network queue after this report, in ms of what arrives, less one message (the
        one on its way when the receiver reported: at a low rate a large share of a second).
        0 when nothing arrived: a queue then is not known to be the network's."""
        received_bytes = feedback.received_kbps * 1000 / 8 * feedback.interval_s
        arriving = sent_bytes * (1 - feedback.loss_fraction)  # lost bytes never will
        self._queued_bytes = max(
            0.0, self._queued_bytes + arriving - (1 + QUEUE_DRIFT) * received_bytes
        )
        if feedback.received_kbps <= 0:
            return 0.0
        return max(0.0, self._queued_bytes - self._message_bytes) * 8 / feedback.received_kbps

    def _decrease(self, target_kbps: float, capacity_kbps: float | None) -> None:
        if self.target_kbps is not None:
            target_kbps = min(target_kbps, self.target_kbps)
        self.target_kbps = self._bounded(target_kbps)
        self.capacity_kbps = capacity_kbps
        self._hold_next = True

    def _increase(self, elapsed_s: float) -> None:
        assert self.target_kbps is not None
        capacity = self.capacity_kbps
        if capacity is not None and self.target_kbps >= NEAR_CAPACITY * capacity:
            target = self.target_kbps + ADDITIVE_PER_S * capacity * elapsed_s
        else:
            target = self.target_kbps * (1 + INCREASE_PER_S) ** elapsed_s
        self.target_kbps = self._bounded(target)

    def _bounded(self, target_kbps: float) -> float:
        target_kbps = max(self.min_kbps, target_kbps)
        return target_kbps if self.max_kbps is None else min(self.max_kbps, target_kbps)


@dataclass(frozen=True)
class RatePlan:
    """How a live sender spends a wire rate: how long keypoints wait to share a message (the
    headers of each cost ~87 bytes, several frames' keypoints) and the rate cap's target for
    the stream's own bytes, what the headers leave."""

    bundle_ms: float
    payload_kbps: float


def frames_per_message(fps: float, bundle_ms: float) -> int:
    """Keypoint packets a message holds when every frame is sent, bundled within bundle_ms."""
    return 1 + int(bundle_ms * fps / 1000 + 1e-9)


def keyframe_wire_bytes(record_bytes: int, fragment_bytes: int = DEFAULT_FRAGMENT_BYTES) -> int:
    """What one keyframe packet (of record_bytes in a .tkc file, an upper bound on its message)
    costs on the wire: its fragments (each with its 6-byte header) as data-channel messages."""
    parts = max(1, math.ceil(record_bytes / (fragment_bytes - FRAGMENT_HEADER_BYTES)))
    per_part, rest = divmod(record_bytes, parts)
    sizes = [per_part + (i < rest) + FRAGMENT_HEADER_BYTES for i in range(parts)]
    return datachannel_stream_cost(sizes).wire_bytes


def keyframe_image_allowance(wire_bytes: float) -> float:
    """The most image bytes a keyframe may take to cost at most wire_bytes on the wire: each
    SCTP packet carries SCTP_MAX_USER_DATA_BYTES, plus one packet's headers of slack."""
    usable = wire_bytes - SCTP_PACKET_OVERHEAD_BYTES - FRAGMENT_HEADER_BYTES - 4
    share = SCTP_MAX_USER_DATA_BYTES / (SCTP_MAX_USER_DATA_BYTES + SCTP_PACKET_OVERHEAD_BYTES + 4)
    return usable * share


def header_kbps(fps: float, bundle_ms: float) -> float:
    """The wire rate of keypoint messages' headers when every frame is sent, bundled so."""
    frames = frames_per_message(fps, bundle_ms)
    return fps / frames * MESSAGE_OVERHEAD_BYTES * 8 / 1000


def plan_wire_rate(
    wire_kbps: float, fps: float, min_bundle_ms: float, max_bundle_ms: float
) -> RatePlan:
    """The shortest bundle, in whole frames from min_bundle_ms up to max_bundle_ms, whose
    headers take at most HEADER_SHARE of wire_kbps (max_bundle_ms when none does), and the
    payload target that leaves (at least MIN_PAYLOAD_KBPS: the cap then skips frames)."""
    frame_ms = 1000 / fps
    shortest = int(min_bundle_ms / frame_ms + 1e-9)  # frames a bundle holds beyond its first
    longest = max(shortest, int(max_bundle_ms / frame_ms + 1e-9))
    bundle_ms = min_bundle_ms
    for extra_frames in range(shortest, longest + 1):
        bundle_ms = min_bundle_ms if extra_frames == shortest else extra_frames * frame_ms
        if header_kbps(fps, bundle_ms) <= HEADER_SHARE * wire_kbps:
            break
    payload_kbps = max(MIN_PAYLOAD_KBPS, wire_kbps - header_kbps(fps, bundle_ms))
    return RatePlan(bundle_ms, payload_kbps)
