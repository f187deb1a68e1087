"""talkcodec.transport.link: the modelled bottleneck keeps its rate, its queue bound, its loss
rate and its schedule, on a fake clock (exact times) and once on a real asyncio loop."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable

import pytest

from talkcodec.transport.link import (
    SETTLED_MIN_S,
    Link,
    LinkConfig,
    LinkSecond,
    LinkStats,
    RateStep,
)
from talkcodec.transport.overhead import datachannel_message_cost


class FakeClock:
    """A Scheduler whose time moves only when told to: events run in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[[], object]]] = []
        self._count = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> None:
        heapq.heappush(self._events, (when, self._count, callback))
        self._count += 1

    def run_until(self, t_s: float) -> None:
        assert t_s >= self.now, "a fake clock only moves forwards"
        while self._events and self._events[0][0] <= t_s:
            when, _, callback = heapq.heappop(self._events)
            self.now = when
            callback()
        self.now = t_s


def _offer(
    link: Link,
    clock: FakeClock,
    wire_bytes: int,
    every_s: float,
    count: int,
    reliable: bool = False,
    flow: str = "packets",
) -> list[tuple[int, float]]:
    """Hand `count` packets to the link, one every every_s; returns (index, arrival time)."""
    arrivals: list[tuple[int, float]] = []
    for index in range(count):
        clock.run_until(index * every_s)
        link.submit(
            wire_bytes,
            lambda index=index: arrivals.append((index, clock.now)),
            reliable=reliable,
            flow=flow,
            ordered=reliable,
        )
    clock.run_until(count * every_s + 60)
    return arrivals


def test_packets_leave_at_the_link_rate() -> None:
    clock = FakeClock()
    link = Link(LinkConfig(rate_kbps=10, delay_ms=20), clock)
    # 40 reliable packets of 125 B (1000 bits) at once: one leaves every 0.1 s at 10 kbit/s.
    arrivals = _offer(link, clock, 125, every_s=0, count=40, reliable=True)
    assert [index for index, _ in arrivals] == list(range(40))
    assert [t for _, t in arrivals] == pytest.approx([0.1 * (i + 1) + 0.02 for i in range(40)])
    assert link.stats.max_queue_bytes == 39 * 125
    assert max(link.stats.queue_delays_ms) == pytest.approx(3900)  # reliable: it waits


def test_the_queue_is_bounded_and_overflow_is_dropped_at_the_tail() -> None:
    clock = FakeClock()
    link = Link(LinkConfig(rate_kbps=10, queue_ms=300), clock)
    # Twice the link's rate for 10 s: a packet of 1000 bits every 0.05 s.
    arrivals = _offer(link, clock, 125, every_s=0.05, count=200)
    assert max(link.stats.queue_delays_ms) <= 300
    flow = link.stats.flows["packets"]
    assert flow.delivered_messages == len(arrivals) and 100 <= len(arrivals) <= 105
    assert flow.overflow_messages == 200 - len(arrivals)
    # What got through left at the link rate: 10 kbit/s over the 10 s.
    assert arrivals[-1][1] == pytest.approx(len(arrivals) * 0.1, abs=0.11)
    summary = link.summary()
    assert summary["messages"]["dropped_overflow"] == flow.overflow_messages  # type: ignore[index]
    assert summary["queue_delay_ms"]["max"] <= 300  # type: ignore[index]


def test_losses_are_seeded_and_at_the_set_rate() -> None:
    def lost(seed: int) -> set[int]:
        clock = FakeClock()
        link = Link(LinkConfig(rate_kbps=100, loss=0.2, loss_seed=seed), clock)
        arrivals = _offer(link, clock, 125, every_s=0.02, count=5000)  # half the link's rate
        assert link.stats.flows["packets"].overflow_messages == 0
        return set(range(5000)) - {index for index, _ in arrivals}

    first = lost(seed=1)
    assert len(first) / 5000 == pytest.approx(0.2, abs=0.015)
    assert lost(seed=1) == first and lost(seed=2) != first


def test_a_lost_reliable_packet_is_sent_again_and_holds_up_its_ordered_flow() -> None:
    clock = FakeClock()
    link = Link(LinkConfig(rate_kbps=1000, loss=0.3, loss_seed=0, retransmit_ms=50), clock)
    arrivals = _offer(link, clock, 125, every_s=0.01, count=200, reliable=True)
    assert [index for index, _ in arrivals] == list(range(200))  # all, in order
    flow = link.stats.flows["packets"]
    assert flow.lost_messages == 0 and flow.retransmitted_packets > 40
    assert flow.retransmitted_bytes == 125 * flow.retransmitted_packets
    assert sum(s.offered_bytes for s in link.stats.seconds) == 200 * 125
    assert sum(s.retransmitted_bytes for s in link.stats.seconds) == flow.retransmitted_bytes
    # Nothing waits in a queue at a fifth of the rate: the waits are the retransmissions'.
    assert max(t - index * 0.01 for index, t in arrivals) >= 0.05


def test_a_rate_step_applies_mid_packet_and_to_everything_after() -> None:
    clock = FakeClock()
    link = Link(LinkConfig(rate_kbps=64, steps=(RateStep(1.0, 8),)), clock)
    # 9000 bytes at once: 72000 bits, 64000 of them in the first second, 8000 more at 8 kbit/s.
    arrivals = _offer(link, clock, 9000, every_s=0, count=1, reliable=True)
    assert arrivals[0][1] == pytest.approx(2.0)
    assert [s.rate_kbps for s in link.stats.seconds[:2]] == [64, 8]
    # From then on 8 kbit/s: 1000-byte packets leave once a second.
    later: list[float] = []
    for _ in range(3):
        link.submit(1000, lambda: later.append(clock.now), reliable=True)
    clock.run_until(70)
    assert later == pytest.approx([61, 62, 63])  # handed over at 60 s


def test_data_channel_messages_cost_what_the_overhead_model_says() -> None:
    clock = FakeClock()
    link = Link(LinkConfig(rate_kbps=64), clock)
    delivered: list[int] = []
    for size in (5, 1172, 3000):
        link.send_message("keyframe", size, lambda size=size: delivered.append(size), True, True)
    clock.run_until(10)
    assert delivered == [5, 1172, 3000]
    expected = sum(datachannel_message_cost(size).wire_bytes for size in (5, 1172, 3000))
    assert link.stats.flows["keyframe"].delivered_bytes == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [("8", "a rate step must be AT_S:KBPS, got '8'"), ("x:8", "must be AT_S:KBPS, got 'x:8'")],
)
def test_a_bad_rate_step_is_refused_in_one_line(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        RateStep.parse(text)
    assert RateStep.parse("10:8") == RateStep(10.0, 8.0)
    with pytest.raises(ValueError, match="link loss must be in"):
        LinkConfig(rate_kbps=8, loss=1.0)


class _Channel:
    """What a data channel shows the link (the keypoints channel's reliability)."""

    label = "keypoints"
    ordered = False
    maxRetransmits: int | None = 0
    maxPacketLifeTime: int | None = None
    readyState = "open"

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, float]] = []

    def send(self, data: bytes) -> None:
        self.sent.append((data, asyncio.get_running_loop().time()))


def test_on_an_asyncio_loop_a_message_is_sent_when_the_link_has_carried_it() -> None:
    async def run() -> tuple[_Channel, float, Link]:
        channel = _Channel()
        link = Link(LinkConfig(rate_kbps=8, queue_ms=250))
        started = asyncio.get_running_loop().time()
        for _ in range(3):  # 100 + 93 bytes each: 0.193 s at 8 kbit/s; the third overflows
            link.send_datachannel(channel, b"\x00" * 100)
        await asyncio.sleep(0.5)
        return channel, started, link

    channel, started, link = asyncio.run(run())
    assert len(channel.sent) == 2
    assert channel.sent[0][1] - started == pytest.approx(0.193, abs=0.03)
    assert channel.sent[1][1] - started == pytest.approx(0.386, abs=0.03)
    assert link.stats.flows["keypoints"].overflow_messages == 1


def test_settled_is_the_start_of_the_last_run_of_good_seconds() -> None:
    clock = FakeClock()
    link = Link(LinkConfig(rate_kbps=8, queue_ms=2000), clock)
    # 1000 B/s: twice the rate for 3 s (a queue builds, reliable packets wait), then a tenth.
    for tick in range(100):
        clock.run_until(tick * 0.1)
        link.submit(200 if tick < 30 else 10, lambda: None, reliable=True)
    clock.run_until(20)
    seconds = link.stats.seconds
    assert seconds[1].queue_ms_max > 200 and seconds[2].offered_bytes == 2000
    # The load falls at 3 s; the 3 s queue drains by second 7, whose longest wait is 0.
    assert [round(s.queue_ms_max) for s in seconds[5:8]] == [1200, 300, 0]
    assert link.stats.settled_s(after_s=1.0) == 6.0
    assert link.stats.settled_s(after_s=1.0, max_queue_ms=0) is None
    # Good seconds must last SETTLED_MIN_S: a call's last second (the sender stopped) alone not.
    busy, idle = LinkSecond(8, offered_bytes=2000), LinkSecond(8, offered_bytes=10)
    assert LinkStats(seconds=[busy, busy, idle]).settled_s(after_s=0) is None
    assert LinkStats(seconds=[busy, *[idle] * SETTLED_MIN_S]).settled_s(after_s=0) == 1.0
