"""An in-process bottleneck between the sender and the receiver of a live call: a rate limit, a
drop-tail queue, random loss and a rate schedule, for tests and benchmarks of rate adaptation
(a loopback call's own connection never congests).

The link sits between the sender's sends and the real channels: what is handed to it is
delivered (for a data channel: really sent on the aiortc channel) when the modelled link would
have carried it, or never. It counts modelled wire bytes: a data-channel message as the SCTP
packets talkcodec/transport/overhead.py says carry it, any other flow (RTP audio packets, say:
RTP_PACKET_OVERHEAD_BYTES plus payload each) as the bytes its caller gives `submit`.

What happens to a packet:

- It waits behind every packet handed to the link before it (one FIFO queue for all flows),
  then takes its bits over the link's rate of the moment to leave (a step of the schedule may
  change the rate mid-packet), and arrives `delay_ms` after its last bit left.
- An unreliable packet (the `keypoints` channel, maxRetransmits=0; RTP) that would wait longer
  than `queue_ms` is dropped: the queue is drop-tail, bounded in time at the rate of the moment.
- A reliable packet (the `keyframe` and `control` channels) is never dropped for a full queue:
  SCTP keeps it in its send buffer until its congestion window lets it go, modelled as a wait
  longer than queue_ms. That wait is the queue that grows without bound when a sender outpaces
  the link, and what the rate adaptation must keep short.
- Each packet that leaves is lost with probability `loss` (seeded; it took its time on the link
  all the same). A lost packet loses its unreliable message; a lost reliable packet is sent
  again `retransmit_ms` after it left (SCTP's fast retransmission), its bytes counted twice.
- A message is delivered once all its packets arrived. A reliable ordered flow (an SCTP stream)
  delivers in the order messages were handed over, so a retransmission holds up what follows.

Not modelled: the reverse path (the receiver's reports reach the sender at once), cross
traffic, SCTP's own congestion window growth, SACKs and their bytes.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from talkcodec.transport.overhead import datachannel_packet_bytes

Deliver = Callable[[], None]
# LinkStats.settled_s: a second counts as settled when its longest queue wait is under this,
# and the seconds must stay so for at least SETTLED_MIN_S (the last second of a call, when the
# sender stops, would pass alone).
SETTLED_QUEUE_MS = 200.0
SETTLED_MIN_S = 3


@dataclass(frozen=True)
class RateStep:
    """From at_s seconds after the link's first packet on, the link carries rate_kbps."""

    at_s: float
    rate_kbps: float

    def __post_init__(self) -> None:
        if not self.at_s >= 0:
            raise ValueError(f"a rate step's time must be >= 0 s, got {self.at_s}")
        if not self.rate_kbps > 0:
            raise ValueError(f"a rate step's rate must be > 0 kbit/s, got {self.rate_kbps}")

    @classmethod
    def parse(cls, text: str) -> RateStep:
        """A step from `AT_S:KBPS`, e.g. `10:8` (8 kbit/s from 10 s on): the CLI's form."""
        at_s, _, rate_kbps = text.partition(":")
        try:
            at, rate = float(at_s), float(rate_kbps)
        except ValueError:
            raise ValueError(f"a rate step must be AT_S:KBPS, got {text!r}") from None
        return cls(at, rate)


@dataclass(frozen=True)
class LinkConfig:
    """The modelled bottleneck (module doc). rate_kbps: wire kbit/s until the first of `steps`.
    queue_ms: the longest an unreliable packet may wait. loss: probability that a packet is
    lost (seeded by loss_seed). delay_ms: one-way propagation delay. retransmit_ms: how long
    after a reliable packet was lost it is sent again."""

    rate_kbps: float
    queue_ms: float = 500.0
    loss: float = 0.0
    loss_seed: int = 0
    delay_ms: float = 0.0
    retransmit_ms: float = 200.0
    steps: tuple[RateStep, ...] = ()

    def __post_init__(self) -> None:
        if not self.rate_kbps > 0:
            raise ValueError(f"link rate_kbps must be > 0, got {self.rate_kbps}")
        if not self.queue_ms >= 0:
            raise ValueError(f"link queue_ms must be >= 0, got {self.queue_ms}")
        if not 0 <= self.loss < 1:
            raise ValueError(f"link loss must be in [0, 1), got {self.loss}")
        if not self.delay_ms >= 0 or not self.retransmit_ms > 0:
            raise ValueError("link delay_ms must be >= 0 and retransmit_ms > 0")
        object.__setattr__(self, "steps", tuple(sorted(self.steps, key=lambda step: step.at_s)))

    def rate_kbps_at(self, t_s: float) -> float:
        """The link's rate t_s seconds after its first packet."""
        rate = self.rate_kbps
        for step in self.steps:
            if step.at_s > t_s:
                break
            rate = step.rate_kbps
        return rate

    def next_step_s(self, t_s: float) -> float:
        """When the rate next changes after t_s (inf: never)."""
        return next((step.at_s for step in self.steps if step.at_s > t_s), math.inf)


class Scheduler(Protocol):
    """What the link needs of an event loop (asyncio's has both): a clock in seconds and a way
    to run a callback at a time of that clock."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> object: ...


class DataChannelLike(Protocol):
    """The parts of an aiortc RTCDataChannel the link reads."""

    label: str
    ordered: bool
    maxRetransmits: int | None
    maxPacketLifeTime: int | None
    readyState: str

    def send(self, data: bytes) -> None: ...


@dataclass
class FlowCounts:
    """One flow's messages (or packets, for `submit`) and their wire bytes, by fate. A message
    lost counts once among the lost, its retransmitted packets among the retransmitted."""

    submitted_messages: int = 0
    submitted_bytes: int = 0
    delivered_messages: int = 0
    delivered_bytes: int = 0
    overflow_messages: int = 0
    overflow_bytes: int = 0
    lost_messages: int = 0
    lost_bytes: int = 0
    retransmitted_packets: int = 0
    retransmitted_bytes: int = 0


@dataclass
class LinkSecond:
    """One second of link time: wire bytes handed over new (offered) and sent again, delivered,
    messages dropped, the longest queue wait of what was handed over, the rate at its start."""

    rate_kbps: float
    offered_bytes: int = 0
    retransmitted_bytes: int = 0
    delivered_bytes: int = 0
    dropped_messages: int = 0
    queue_ms_max: float = 0.0


@dataclass
class LinkStats:
    flows: dict[str, FlowCounts] = field(default_factory=dict)
    # How long each transmission (a message's packets, or a retransmission) waited to start.
    queue_delays_ms: list[float] = field(default_factory=list)
    max_queue_bytes: int = 0
    seconds: list[LinkSecond] = field(default_factory=list)

    def flow(self, name: str) -> FlowCounts:
        return self.flows.setdefault(name, FlowCounts())

    def total(self, name: str) -> int:
        return sum(getattr(counts, name) for counts in self.flows.values())

    def settled_s(self, after_s: float, max_queue_ms: float = SETTLED_QUEUE_MS) -> float | None:
        """How long after after_s the link settled: until the start of the first second from
        which on every second's sent wire rate (new and retransmitted bytes handed over) stayed
        within the link's rate and its longest queue wait under max_queue_ms. None: it never
        did for the last SETTLED_MIN_S seconds or more."""
        settled_from = len(self.seconds)
        for index in range(len(self.seconds) - 1, int(after_s) - 1, -1):
            second = self.seconds[index]
            sent_kbps = (second.offered_bytes + second.retransmitted_bytes) * 8 / 1000
            if sent_kbps > second.rate_kbps or second.queue_ms_max >= max_queue_ms:
                break
            settled_from = index
        if len(self.seconds) - settled_from < SETTLED_MIN_S:
            return None
        return max(0.0, settled_from - after_s)


@dataclass(eq=False)
class _Message:
    flow: str
    wire_bytes: int
    deliver: Deliver
    reliable: bool
    ordered: bool
    missing: int  # packets not arrived yet
    done: bool = False  # arrived whole (or, for `lost`, never will)
    lost: bool = False


class Link:
    """The bottleneck of one direction of a call (module doc). Times are link seconds since
    the first packet handed over; the scheduler (by default the running asyncio loop, looked up
    at that first packet) runs deliveries and retransmissions."""

    def __init__(self, config: LinkConfig, scheduler: Scheduler | None = None) -> None:
        self.config = config
        self.stats = LinkStats()
        self._scheduler = scheduler
        self._rng = random.Random(config.loss_seed)
        self._t0: float | None = None
        self._busy_until_s = 0.0  # when the last packet handed over will have left
        self._in_order: dict[str, deque[_Message]] = {}

    # -- handing things over ------------------------------------------------------------------

    def submit(
        self,
        wire_bytes: int,
        deliver: Deliver,
        reliable: bool = False,
        flow: str = "packets",
        ordered: bool = False,
    ) -> None:
        """One packet of a flow without a data channel (e.g. an RTP audio packet, headers
        included); `deliver` is called when it arrives, never if it is dropped or lost."""
        if wire_bytes <= 0:
            raise ValueError(f"a packet needs > 0 wire bytes, got {wire_bytes}")
        self._hand_over(flow, [wire_bytes], deliver, reliable, ordered)

    def send_message(
        self, flow: str, message_bytes: int, deliver: Deliver, reliable: bool, ordered: bool
    ) -> None:
        """One data-channel message of message_bytes, as the SCTP packets that carry it."""
        self._hand_over(flow, datachannel_packet_bytes(message_bytes), deliver, reliable, ordered)

    def send_datachannel(self, channel: DataChannelLike, data: bytes) -> None:
        """Send `data` on `channel` once the link has carried it: the flow is the channel's
        label, reliable unless it has maxRetransmits or maxPacketLifeTime, ordered as it is."""

        def deliver() -> None:
            if channel.readyState == "open":
                channel.send(data)

        reliable = channel.maxRetransmits is None and channel.maxPacketLifeTime is None
        self.send_message(channel.label, len(data), deliver, reliable, channel.ordered)

    # -- the model -----------------------------------------------------------------------------

    def _clock(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = asyncio.get_running_loop()
        return self._scheduler

    def now_s(self) -> float:
        """Link time: seconds since the first packet handed over (0 before it)."""
        if self._t0 is None:
            return 0.0
        return self._clock().time() - self._t0

    def _at(self, t_s: float, callback: Callable[[], object]) -> None:
        assert self._t0 is not None
        self._clock().call_at(self._t0 + t_s, callback)

    def _hand_over(
        self, flow: str, packets: list[int], deliver: Deliver, reliable: bool, ordered: bool
    ) -> None:
        if self._t0 is None:
            self._t0 = self._clock().time()
        message = _Message(flow, sum(packets), deliver, reliable, ordered, len(packets))
        counts = self.stats.flow(flow)
        counts.submitted_messages += 1
        counts.submitted_bytes += message.wire_bytes
        if ordered:
            self._in_order.setdefault(flow, deque()).append(message)
        self._transmit(message, packets, retransmission=False)

    def _transmit(self, message: _Message, packets: list[int], retransmission: bool) -> None:
        now_s = self.now_s()
        wait_s = max(0.0, self._busy_until_s - now_s)
        second = self._second(now_s)
        sent_bytes = sum(packets)
        if retransmission:
            second.retransmitted_bytes += sent_bytes
        else:
            second.offered_bytes += sent_bytes
        if not message.reliable and wait_s * 1000 > self.config.queue_ms:
            self._finish_lost(message, "overflow")
            return
        self.stats.max_queue_bytes = max(
            self.stats.max_queue_bytes, round(self._bits_between(now_s, self._busy_until_s) / 8)
        )
        self.stats.queue_delays_ms.append(wait_s * 1000)
        second.queue_ms_max = max(second.queue_ms_max, wait_s * 1000)
        left_s = self._transmit_end(now_s + wait_s, 8 * sent_bytes)
        self._busy_until_s = left_s
        lost = [
            size for size in packets if self.config.loss and self._rng.random() < self.config.loss
        ]
        arrived = len(packets) - len(lost)
        if lost and not message.reliable:
            self._finish_lost(message, "loss")
            return
        if arrived:
            self._at(left_s + self.config.delay_ms / 1000, lambda: self._arrive(message, arrived))
        if lost:
            counts = self.stats.flow(message.flow)
            counts.retransmitted_packets += len(lost)
            counts.retransmitted_bytes += sum(lost)
            retransmit_s = left_s + self.config.retransmit_ms / 1000
            self._at(retransmit_s, lambda: self._transmit(message, lost, retransmission=True))

    def _arrive(self, message: _Message, packets: int) -> None:
        message.missing -= packets
        if message.missing > 0:
            return
        message.done = True
        if not message.ordered:
            self._deliver(message)
            return
        queue = self._in_order[message.flow]
        while queue and queue[0].done:
            head = queue.popleft()
            if not head.lost:
                self._deliver(head)

    def _deliver(self, message: _Message) -> None:
        counts = self.stats.flow(message.flow)
        counts.delivered_messages += 1
        counts.delivered_bytes += message.wire_bytes
        self._second(self.now_s()).delivered_bytes += message.wire_bytes
        message.deliver()

    def _finish_lost(self, message: _Message, why: str) -> None:
        """An unreliable message that will never arrive (a full queue or a lost packet)."""
        counts = self.stats.flow(message.flow)
        if why == "overflow":
            counts.overflow_messages += 1
            counts.overflow_bytes += message.wire_bytes
        else:
            counts.lost_messages += 1
            counts.lost_bytes += message.wire_bytes
        self._second(self.now_s()).dropped_messages += 1
        message.lost = True
        if message.ordered:  # an unreliable ordered flow: what follows goes on without it
            self._arrive(message, message.missing)

    def _second(self, t_s: float) -> LinkSecond:
        seconds = self.stats.seconds
        while len(seconds) <= int(t_s):
            seconds.append(LinkSecond(self.config.rate_kbps_at(len(seconds))))
        return seconds[int(t_s)]

    def _transmit_end(self, start_s: float, bits: float) -> float:
        """When `bits` that start to leave at start_s have left, across rate steps."""
        t_s = start_s
        while True:
            rate_bps = self.config.rate_kbps_at(t_s) * 1000
            step_s = self.config.next_step_s(t_s)
            if t_s + bits / rate_bps <= step_s:
                return t_s + bits / rate_bps
            bits -= (step_s - t_s) * rate_bps
            t_s = step_s

    def _bits_between(self, start_s: float, end_s: float) -> float:
        """The bits the link carries from start_s to end_s."""
        bits, t_s = 0.0, start_s
        while t_s < end_s:
            step_s = min(self.config.next_step_s(t_s), end_s)
            bits += (step_s - t_s) * self.config.rate_kbps_at(t_s) * 1000
            t_s = step_s
        return bits

    # -- results -------------------------------------------------------------------------------

    def summary(self) -> dict[str, object]:
        """What the link did, JSON-ready: totals, queue waits, each flow, each second."""
        stats, delays = self.stats, self.stats.queue_delays_ms

        def delay(q: float) -> float | None:
            return round(float(np.percentile(delays, q)), 1) if delays else None

        return {
            "config": asdict(self.config),
            # Link time 0 on the scheduler's clock (an asyncio loop's: time.monotonic()).
            "clock_start_s": self._t0,
            "messages": {
                "submitted": stats.total("submitted_messages"),
                "delivered": stats.total("delivered_messages"),
                "dropped_overflow": stats.total("overflow_messages"),
                "dropped_loss": stats.total("lost_messages"),
            },
            "wire_bytes": {
                "submitted": stats.total("submitted_bytes"),
                "delivered": stats.total("delivered_bytes"),
                "retransmitted": stats.total("retransmitted_bytes"),
                "dropped_overflow": stats.total("overflow_bytes"),
                "dropped_loss": stats.total("lost_bytes"),
            },
            "queue_delay_ms": {"p50": delay(50), "p95": delay(95), "max": delay(100)},
            "max_queue_bytes": stats.max_queue_bytes,
            "flows": {name: asdict(counts) for name, counts in sorted(stats.flows.items())},
            # After each rate step: how long until the sender kept within the new rate.
            "settled_after_steps": [
                {**asdict(step), "settled_s": stats.settled_s(step.at_s, SETTLED_QUEUE_MS)}
                for step in self.config.steps
            ],
            "per_second": [asdict(second) for second in stats.seconds],
        }
