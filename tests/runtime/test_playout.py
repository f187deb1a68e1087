"""PlayoutBuffer: bundled frames are shown at their capture pace, with an in-memory transport
that delays, reorders and loses messages in front of it."""

from __future__ import annotations

import random

import numpy as np

from talkcodec.bitstream import KeypointTimeline
from talkcodec.codec import DecodedFrame
from talkcodec.runtime.playout import PlayoutBuffer


def _frame(pts_ms: int) -> DecodedFrame:
    return DecodedFrame(np.zeros((3, 3)), pts_ms, seq=pts_ms // 40)  # type: ignore[arg-type]


def _play(buffer: PlayoutBuffer, until_ms: float) -> list[tuple[float, int]]:
    """(time shown, pts_ms) of every frame due up to until_ms, checked each millisecond."""
    shown = []
    for now in np.arange(0, until_ms, 1.0):
        shown += [(float(now), frame.pts_ms) for frame in buffer.due(float(now))]
    return shown


def test_a_bundle_plays_at_its_capture_pace() -> None:
    buffer = PlayoutBuffer()
    buffer.push_message([_frame(0), _frame(40)], arrival_ms=100)
    buffer.push_message([_frame(80), _frame(120)], arrival_ms=180)
    assert buffer.next_due_ms() == 100
    assert _play(buffer, 400) == [(100, 0), (140, 40), (180, 80), (220, 120)]


def test_a_late_message_delays_no_later_one() -> None:
    buffer = PlayoutBuffer()
    buffer.push_message([_frame(0), _frame(40)], arrival_ms=100)
    buffer.push_message([_frame(80), _frame(120)], arrival_ms=260)  # 80 ms late
    buffer.push_message([_frame(160), _frame(200)], arrival_ms=260)  # on time, right behind
    # At 260 ms the newest frame due is 160: it is shown, and 80 and 120 (of the late message)
    # leave with it, superseded; nothing waits for the late message's pace.
    assert _play(buffer, 400) == [
        (100, 0), (140, 40), (260, 80), (260, 120), (260, 160), (300, 200)
    ]  # fmt: skip
    assert buffer.held_ms == [0, 40, 0, 40, 0, 40]


def test_holds_are_capped() -> None:
    buffer = PlayoutBuffer(max_hold_ms=100)
    buffer.push_message([_frame(0), _frame(1000)], arrival_ms=0)  # a message spanning 1 s
    # A new timeline (a restarted sender) inside one message: its frame plays at once.
    buffer.push_message([_frame(2000), _frame(40)], arrival_ms=50)
    assert buffer.held_ms == [0, 100, 0, 0] and len(buffer) == 4


def test_frames_come_out_in_order_under_reordering_and_loss() -> None:
    """An unordered, lossy link: messages of 2 frames, 20% lost, delays of 0..150 ms (so some
    overtake others). What comes out is in capture order, each frame once, every frame that
    was not late, and no frame waits longer than its bundle's span."""
    rng = random.Random(4)
    messages = [[_frame(k * 80), _frame(k * 80 + 40)] for k in range(100)]
    arrivals = sorted(
        (k * 80 + 40 + rng.uniform(0, 150), k) for k in range(len(messages)) if rng.random() >= 0.2
    )
    assert [k for _, k in arrivals] != sorted(k for _, k in arrivals)  # some overtook others
    timeline = KeypointTimeline(25.0)
    buffer = PlayoutBuffer()
    shown: list[int] = []
    for arrival_ms, k in arrivals:
        shown += [frame.pts_ms for frame in buffer.due(arrival_ms)]
        # what a decoder passes on: the frames its timeline accepts
        accepted = [
            frame for frame in messages[k]
            if timeline.classify(frame.seq, frame.pts_ms, intra=False).accepted
        ]  # fmt: skip
        buffer.push_message(accepted, arrival_ms)
    shown += [frame.pts_ms for frame in buffer.due(1e9)]
    assert shown == sorted(set(shown))
    assert len(shown) == len(buffer.held_ms) > 0.6 * 2 * len(arrivals)
    assert max(buffer.held_ms) <= 40
