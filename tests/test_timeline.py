"""KeypointTimeline: the one rule for keypoint packets' seq and pts_ms (docs/bitstream.md,
"Limits"), on hand-made sequences of (seq, pts_ms)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from talkcodec.bitstream import (
    MAX_PTS_JUMP_MS,
    MAX_PTS_STEP_MS,
    Arrival,
    KeyframeCodecId,
    KeypointModelId,
    KeypointTimeline,
    StreamHeader,
)

FPS = 25.0
FRAME_MS = 40


def _arrivals(timeline: KeypointTimeline, packets: list[tuple[int, int]]) -> list[Arrival]:
    return [timeline.classify(seq, pts, intra=False).arrival for seq, pts in packets]


def test_a_clean_stream_is_accepted_and_covers_its_time() -> None:
    timeline = KeypointTimeline(FPS)
    packets = [(seq, 1_000_000 + seq * FRAME_MS) for seq in range(250)]
    assert set(_arrivals(timeline, packets)) == {Arrival.NEXT}
    assert timeline.stream_ms == 249 * FRAME_MS


def test_lost_packets_are_counted_and_their_time_covered() -> None:
    timeline = KeypointTimeline(FPS)
    timeline.classify(0, 0, intra=True)
    verdict = timeline.classify(5, 5 * FRAME_MS, intra=False)
    assert (verdict.arrival, verdict.lost, verdict.step_ms) == (Arrival.NEXT, 4, 5 * FRAME_MS)


def test_older_and_repeated_packets_are_late() -> None:
    timeline = KeypointTimeline(FPS)
    _arrivals(timeline, [(0, 0), (1, 40), (3, 120)])
    assert _arrivals(timeline, [(2, 80), (3, 120), (0, 0)]) == [Arrival.LATE] * 3
    assert timeline.classify(4, 160, intra=False).arrival is Arrival.NEXT


@pytest.mark.parametrize(
    "corrupt_pts",
    [
        3_724_542_000,  # the 43-day timestamp of the bug report
        120 + MAX_PTS_STEP_MS + 1,
        120 + FRAME_MS + MAX_PTS_JUMP_MS + 1,  # more than the seq advance explains
        0xFFFF_FFFF,
        60,  # behind the last accepted packet although its seq is ahead
    ],
)
def test_one_corrupt_timestamp_costs_one_packet(corrupt_pts: int) -> None:
    timeline = KeypointTimeline(FPS)
    packets = [(seq, seq * FRAME_MS) for seq in range(10)]
    packets[4] = (4, corrupt_pts)
    arrivals = _arrivals(timeline, packets)
    assert arrivals[4] is Arrival.IMPLAUSIBLE
    assert arrivals[:4] + arrivals[5:] == [Arrival.NEXT] * 9
    assert timeline.stream_ms == 9 * FRAME_MS


@pytest.mark.parametrize("corrupt_seq", [4 + 256, 4 + 4096, 4 - 256 + 65536, 40])
def test_one_corrupt_sequence_number_costs_at_most_two_packets(corrupt_seq: int) -> None:
    """A seq far ahead is implausible for 40 ms of time; every later packet then follows the
    last accepted one again."""
    timeline = KeypointTimeline(FPS)
    packets = [(seq, seq * FRAME_MS) for seq in range(12)]
    packets[4] = (corrupt_seq, 4 * FRAME_MS)
    arrivals = _arrivals(timeline, packets)
    assert arrivals[4] is Arrival.IMPLAUSIBLE
    assert arrivals[5:] == [Arrival.NEXT] * 7


def test_a_fresh_start_keyframe_vouches_for_a_long_gap() -> None:
    """The face was away for a minute: the keyframe and the intra keypoint packet sent for the
    frame it came back in share a pts_ms, so the jump is accepted at once."""
    timeline = KeypointTimeline(FPS)
    _arrivals(timeline, [(0, 0), (1, 40)])
    timeline.note_fresh_start(60_040)
    assert timeline.classify(2, 60_040, intra=False).arrival is Arrival.IMPLAUSIBLE
    verdict = timeline.classify(2, 60_040, intra=True)
    assert verdict.arrival is Arrival.RESYNC
    assert timeline.stream_ms == 40 + FRAME_MS  # a gap beyond the step limit is not covered
    assert timeline.classify(3, 60_080, intra=False).arrival is Arrival.NEXT


def test_two_packets_that_agree_start_a_new_timeline() -> None:
    """A sender that restarted (seq from 0 again, the wall clock going on): its first packet is
    implausible, the second follows the first, and the stream goes on from there."""
    timeline = KeypointTimeline(FPS)
    _arrivals(timeline, [(seq, 5_000 + seq * FRAME_MS) for seq in range(100, 110)])
    restarted = [(seq, 20_000 + seq * FRAME_MS) for seq in range(4)]
    assert _arrivals(timeline, restarted) == [
        Arrival.IMPLAUSIBLE,
        Arrival.RESYNC,
        Arrival.NEXT,
        Arrival.NEXT,
    ]


def test_a_corrupt_packet_cannot_vouch_for_itself_twice() -> None:
    timeline = KeypointTimeline(FPS)
    _arrivals(timeline, [(0, 0), (1, 40)])
    corrupt = (2, 90_000_000)
    assert _arrivals(timeline, [corrupt, corrupt]) == [Arrival.IMPLAUSIBLE, Arrival.IMPLAUSIBLE]


def test_wrap_around_of_seq_and_pts_is_a_normal_step() -> None:
    timeline = KeypointTimeline(FPS)
    start_pts = 0xFFFF_FFFF - 50
    packets = [((65534 + i) % 65536, (start_pts + i * FRAME_MS) % (1 << 32)) for i in range(5)]
    assert _arrivals(timeline, packets) == [Arrival.NEXT] * 5
    assert timeline.stream_ms == 4 * FRAME_MS


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF), st.booleans()),
        max_size=60,
    )
)
def test_any_sequence_moves_stream_time_by_at_most_the_step_limit(
    packets: list[tuple[int, int, bool]],
) -> None:
    timeline = KeypointTimeline(FPS)
    for seq, pts, intra in packets:
        if intra:
            timeline.note_fresh_start(pts)
        before = timeline.stream_ms
        verdict = timeline.classify(seq, pts, intra)
        assert 0 <= timeline.stream_ms - before <= MAX_PTS_STEP_MS
        assert verdict.accepted or timeline.stream_ms == before


# -- COMPACT streams: times implied by the frame rate ------------------------------------------


def _compact_timeline() -> KeypointTimeline:
    header = StreamHeader(
        256, 256, 25000, KeyframeCodecId.WEBP, KeypointModelId.MEDIAPIPE_478_V2, 300, 32
    )
    return KeypointTimeline.for_stream(header)


def test_implied_times_follow_the_last_accepted_timed_packet() -> None:
    timeline = _compact_timeline()
    assert timeline.classify(0, 1000, intra=True).pts_ms == 1000
    # The reader implied these from a damaged timed packet (seq 1, 43 days ahead): the
    # timeline drops that one and times the others from seq 0, as the sender did.
    assert timeline.classify(1, 3_724_542_000, intra=False).arrival is Arrival.IMPLAUSIBLE
    verdict = timeline.classify(2, 3_724_542_040, intra=False, timed=False)
    assert (verdict.arrival, verdict.pts_ms, verdict.lost) == (Arrival.NEXT, 1080, 1)
    assert timeline.stream_ms == 80


def test_implied_times_neither_start_nor_confirm_a_new_timeline() -> None:
    timeline = _compact_timeline()
    timeline.classify(0, 0, intra=True)
    # A sender that stalled for 3 s: its packet after the stall is timed, and so is the next
    # one (PacketWriter's rule), which confirms the jump.
    assert timeline.classify(1, 3000, intra=False).arrival is Arrival.IMPLAUSIBLE
    assert timeline.classify(2, 3040, intra=False).arrival is Arrival.RESYNC
    assert timeline.classify(3, 0, intra=False, timed=False).pts_ms == 3080
    # Untimed packets before any timed one was accepted have no time at all.
    fresh = _compact_timeline()
    assert fresh.classify(7, 280, intra=False, timed=False).arrival is Arrival.IMPLAUSIBLE
    assert fresh.classify(8, 320, intra=True).arrival is Arrival.NEXT


def test_a_fresh_start_wins_over_a_timeline_a_damaged_packet_moved_ahead() -> None:
    timeline = KeypointTimeline(FPS)
    timeline.classify(0, 0, intra=True)
    # A damaged packet 300 packets and 8 s ahead still passes the rule...
    assert timeline.classify(300, 8000, intra=False).arrival is Arrival.NEXT
    assert timeline.classify(2, 80, intra=False).arrival is Arrival.LATE
    # ...and the sender's next fresh start (a keyframe, then its intra packet) resets it.
    timeline.note_fresh_start(120)
    assert timeline.classify(3, 120, intra=True).arrival is Arrival.RESYNC
    assert timeline.classify(4, 160, intra=False).arrival is Arrival.NEXT
