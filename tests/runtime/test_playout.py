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


def _recovered(pts_ms: int) -> DecodedFrame:
    return DecodedFrame(np.zeros((3, 3)), pts_ms, pts_ms // 40, recovered=True)  # type: ignore[arg-type]


def test_recovered_frames_take_their_slots_once_the_delay_has_grown() -> None:
    """Messages of 2 frames every 80 ms, each repeating the previous one's: after the first
    recovery (shown late, superseded) the buffer delays by one message, and the next lost
    message's frames are shown in their place, at the capture pace."""
    buffer = PlayoutBuffer()
    buffer.push_message([_frame(0), _frame(40)], arrival_ms=100)
    # message 2 (80, 120) lost; message 3 brings its copies
    buffer.push_message([_recovered(80), _recovered(120), _frame(160), _frame(200)], 260)
    assert buffer.extra_delay_ms == 80 and buffer.recovered_shown_late == 0
    buffer.push_message([_frame(240), _frame(280)], arrival_ms=340)
    # message 5 (320, 360) lost, recovered by message 6 at 500 ms
    buffer.push_message([_recovered(320), _recovered(360), _frame(400), _frame(440)], 500)
    shown = _play(buffer, 800)
    assert shown[-6:] == [(420, 240), (460, 280), (500, 320), (540, 360), (580, 400), (620, 440)]
    assert [pts for _, pts in shown] == list(range(0, 480, 40))


def test_the_extra_delay_shrinks_after_a_calm() -> None:
    buffer = PlayoutBuffer()
    buffer.push_message([_recovered(0), _frame(80)], arrival_ms=100)
    assert buffer.extra_delay_ms == 80
    buffer.push_message([_frame(120)], arrival_ms=5_000)  # within the calm: kept
    assert buffer.extra_delay_ms == 80
    for k in range(10):
        buffer.push_message([_frame(160 + 40 * k)], arrival_ms=20_000 + 40 * k)
    assert buffer.extra_delay_ms == 70
