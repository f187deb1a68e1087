"""Bundler: which keypoint packets share a data-channel message."""

from __future__ import annotations

import pytest

from talkcodec.bitstream import MAX_BUNDLE_PACKETS, Packet, PacketKind
from talkcodec.transport.bundling import Bundler, bundle_stream


def _packets(times_ms: list[int]) -> list[Packet]:
    return [Packet(PacketKind.KEYPOINTS, seq, pts, b"\x01") for seq, pts in enumerate(times_ms)]


def _seqs(bundles: list[list[Packet]]) -> list[list[int]]:
    return [[packet.seq for packet in bundle] for bundle in bundles]


@pytest.mark.parametrize(
    ("bundle_ms", "expected"),
    [
        (0, [[0], [1], [2], [3], [4]]),
        (40, [[0, 1], [2, 3], [4]]),  # 2 frames at 25 fps: +40 ms
        (80, [[0, 1, 2], [3, 4]]),
        (50, [[0, 1], [2, 3], [4]]),  # a budget between frame periods rounds down
    ],
)
def test_bundles_hold_the_frames_of_the_latency_budget(
    bundle_ms: float, expected: list[list[int]]
) -> None:
    assert _seqs(bundle_stream(_packets([0, 40, 80, 120, 160]), 25.0, bundle_ms)) == expected


def test_a_gap_sends_what_waits_and_jitter_does_not() -> None:
    bundler = Bundler(25.0, 40)
    packets = _packets([0, 55, 400, 440])  # 55: late by 15 ms (capture jitter); 400: a gap
    assert bundler.add(packets[0]) == []
    assert _seqs(bundler.add(packets[1])) == [[0, 1]]
    assert bundler.add(packets[2]) == [] and bundler.waiting
    assert _seqs(bundler.add(packets[3])) == [[2, 3]] and not bundler.waiting
    gap = Bundler(25.0, 80)
    gap.add(packets[0])
    assert _seqs(gap.add(packets[2])) == [[0]]  # 400 ms later: cannot join
    assert _seqs([gap.flush()]) == [[2]]
    assert gap.max_wait_ms == 100  # the live sender's timer: the budget and half a frame


def test_bundles_never_exceed_the_wire_limit() -> None:
    bundles = bundle_stream(_packets([seq * 4 for seq in range(100)]), 250.0, 1000)
    assert max(len(bundle) for bundle in bundles) == MAX_BUNDLE_PACKETS
    assert sum(len(bundle) for bundle in bundles) == 100


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="bundle_ms >= 0"):
        Bundler(25.0, -1)
