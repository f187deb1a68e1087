"""The rate cap (`--max-kbps`, talkcodec.ratecontrol): its two promises on hand-made spending,
and on a real dev clip through the encoder; its live target, and the rate adapter that sets it
from synthetic receiver reports."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from talkcodec.bitstream import PacketKind, PacketWriter
from talkcodec.cli import main, stream_info
from talkcodec.codec import StreamEncoder
from talkcodec.config import EncoderConfig
from talkcodec.keyframe import WebPCodec
from talkcodec.ratecontrol import (
    BURST_S,
    FILE_PREAMBLE_BYTES,
    MIN_PAYLOAD_KBPS,
    MIN_TARGET_KBPS,
    TARGET_BURST_S,
    WINDOW_S,
    Feedback,
    RateAdapter,
    RateCap,
    RatePlan,
    header_kbps,
    plan_wire_rate,
)


def test_the_first_keyframe_may_take_the_burst_and_no_more() -> None:
    cap = RateCap(max_kbps=2, fps=25)  # 250 bytes/s
    assert cap.available(0) == pytest.approx(250 * BURST_S - FILE_PREAMBLE_BYTES)
    burst_ms = round(BURST_S * 1000)
    cap.spend(0, 250 * BURST_S)  # a keyframe of the whole burst
    # Frames find room only once the time covered catches up with what was spent.
    assert cap.available(40) < 0 and cap.available(burst_ms - 40) < 0
    later = cap.available(burst_ms + 160)  # covering BURST_S + 0.2 s
    assert later == pytest.approx(250 * 0.2 - FILE_PREAMBLE_BYTES)


def test_windows_after_the_first_second_hold_the_rate() -> None:
    cap = RateCap(max_kbps=8, fps=25)  # 1000 bytes/s
    cap.spend(0, 100)
    for pts in range(40, 6000, 40):  # nothing sent for 6 s: the cumulative budget grows
        assert cap.available(pts) > 0
    cap.spend(6000, 4000)  # a burst after a quiet spell
    # The 5-second window ending now already holds the burst: 1000 B/s x 5 s minus 4000.
    assert cap.available(6040) == pytest.approx(1000 * WINDOW_S - 4000)


def test_keyframes_take_the_best_quality_that_fits() -> None:
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    codec = WebPCodec(quality=95)
    best = len(codec.compress(image))
    data = RateCap(max_kbps=2, fps=25).compress_keyframe(codec, image, best * 0.6)
    assert len(data) <= best * 0.6 and codec.quality == 95  # the codec is left as it was
    floor = RateCap(max_kbps=2, fps=25).compress_keyframe(codec, image, 1)
    assert 1 < len(floor) < best  # nothing fits: the lowest quality, still sent


def test_a_bad_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="max_kbps must be >= 0"):
        EncoderConfig(max_kbps=-1)


@pytest.mark.data
def test_max_kbps_caps_a_real_clip(dev_clip: Path, tmp_path: Path) -> None:
    output = tmp_path / "capped.tkc"
    args = ["encode", str(dev_clip), "-o", str(output), "--max-frames", "150"]
    args += ["--keyframe-codec", "gc", "--reference-bank-size", "1", "--max-kbps", "2"]
    assert main(args) == 0
    info = stream_info(output)
    assert info.duration_s == pytest.approx(6.0, abs=0.05)
    assert output.stat().st_size * 8 / info.duration_s <= 2000
    assert info.frames > 0.6 * 150  # most frames still go out


def _wire_seconds(header, packets, bundle_ms: float) -> list[float]:  # type: ignore[no-untyped-def]
    """Wire bytes of each packet's message(s) by the second of its pts (a message's bytes at
    its first packet), as the live sender would bundle them."""
    from talkcodec.transport.bundling import bundle_stream
    from talkcodec.transport.overhead import datachannel_message_cost

    writer = PacketWriter(header)
    start = packets[0].pts_ms
    seconds = [0.0] * (1 + (packets[-1].pts_ms - start) // 1000)
    keypoints = [p for p in packets if p.kind is PacketKind.KEYPOINTS]
    for packet in packets:
        if packet.kind is PacketKind.KEYFRAME:
            cost = datachannel_message_cost(len(writer.pack(packet)) + 6).wire_bytes
            seconds[(packet.pts_ms - start) // 1000] += cost
    for bundle in bundle_stream(keypoints, header.fps, bundle_ms):
        cost = datachannel_message_cost(len(writer.pack_bundle(bundle))).wire_bytes
        seconds[(bundle[0].pts_ms - start) // 1000] += cost
    return seconds


@pytest.mark.parametrize(
    ("wire_kbps", "bundle_ms", "binds"),
    [(12.0, 40.0, False), (8.0, 40.0, True), (4.0, 120.0, True)],
)
def test_max_wire_kbps_caps_the_stream_on_the_wire(
    wire_kbps: float, bundle_ms: float, binds: bool
) -> None:
    """The cap counted on the wire: the keypoint messages as the sender bundles them, each
    with its ~95 bytes of headers, and the keyframe's, stay within the cap from the start
    (after the BURST_S the first keyframe may take) and over every 5 s window after the first
    second; frames that do not fit are skipped where the cap binds."""
    from tests.test_codec import _ScriptedDetector, _talking_head

    count = 250
    config = EncoderConfig(
        crop=False, reference_bank_size=1, max_wire_kbps=wire_kbps, wire_bundle_ms=bundle_ms
    )
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_talking_head(count)))
    image = np.zeros((256, 256, 3), np.uint8)
    packets = [p for i in range(count) for p in encoder.encode(image, 1000 + i * 40)]
    seconds = np.array(_wire_seconds(encoder.header, packets, bundle_ms)) * 8 / 1000
    assert seconds.sum() <= wire_kbps * max(len(seconds), BURST_S)
    for first in range(1, len(seconds) - int(WINDOW_S) + 1):
        assert seconds[first : first + int(WINDOW_S)].sum() <= wire_kbps * WINDOW_S
    sent = sum(p.kind is PacketKind.KEYPOINTS for p in packets)
    if binds:  # frames skipped, the cap mostly used
        assert 0.3 * count <= sent < count
        assert seconds.sum() >= 0.7 * wire_kbps * len(seconds)
    else:
        assert sent == count
    with pytest.raises(ValueError, match="give one of max_kbps"):
        EncoderConfig(max_kbps=2, max_wire_kbps=8)


# -- the live target and the rate adapter -------------------------------------------------------


def test_a_target_holds_a_cap_without_ceiling_to_its_rate() -> None:
    cap = RateCap(max_kbps=None, fps=25)
    assert cap.available(0) == math.inf  # no ceiling and no target: no limit
    cap.set_target_kbps(8)  # 1000 bytes/s; the bucket starts empty
    spent = 0
    for pts in range(0, 10_000, 40):
        if cap.available(pts) >= 60:
            cap.spend(pts, 60)
            spent += 60
    # 10 s at 1000 B/s, less the bucket's first fill; never more than the target allows.
    assert 1000 * 10 - 60 - 1000 * TARGET_BURST_S <= spent <= 1000 * 10
    cap.set_target_kbps(2)  # lower: the bucket holds at most TARGET_BURST_S of 250 B/s
    assert cap.available(20_000) == pytest.approx(250 * TARGET_BURST_S)
    cap.set_target_kbps(None)
    assert cap.available(20_040) == math.inf


def test_the_users_cap_bounds_any_target() -> None:
    cap = RateCap(max_kbps=2, fps=25)  # 250 bytes/s
    cap.set_target_kbps(64)
    cap.available(0)
    ceiling = cap.available(10_000)
    plain = RateCap(max_kbps=2, fps=25)
    plain.available(0)
    assert ceiling == pytest.approx(plain.available(10_000))  # the target's bucket is larger
    with pytest.raises(ValueError, match="target_kbps must be > 0, got 0"):
        cap.set_target_kbps(0)


def test_an_encoder_without_a_cap_gets_one_for_its_first_target() -> None:
    from talkcodec.codec import StreamEncoder
    from talkcodec.keypoints.replay import ReplayDetector

    encoder = StreamEncoder(EncoderConfig(crop=False), detector=ReplayDetector([]))
    assert encoder.rate_cap is None
    encoder.set_target_kbps(None)
    assert encoder.rate_cap is None
    encoder.set_target_kbps(6.5)
    assert encoder.rate_cap is not None and encoder.rate_cap.target_kbps == 6.5
    assert encoder.rate_cap.bytes_per_s == math.inf  # no ceiling of its own


class _Reports:
    """Synthetic receiver reports, one a second, fed to an adapter with what the sender sent:
    20 messages a second."""

    def __init__(self, adapter: RateAdapter) -> None:
        self.adapter = adapter
        self.now_s = 0.0
        self.sent_bytes = 0
        self.sent_messages = 0

    def report(
        self,
        received_kbps: float,
        loss: float = 0.0,
        delay_ms: int | None = 10,
        sent_kbps: float | None = None,
    ) -> float | None:
        """One report; the sender sent sent_kbps (by default what arrived) since the last."""
        self.now_s += 1.0
        self.sent_bytes += round((received_kbps if sent_kbps is None else sent_kbps) * 125)
        self.sent_messages += 20
        feedback = Feedback(1.0, received_kbps, loss, delay_ms)
        return self.adapter.update(self.now_s, feedback, self.sent_bytes, self.sent_messages)


def test_a_clear_link_sets_no_target() -> None:
    reports = _Reports(RateAdapter())
    for _ in range(5):
        assert reports.report(received_kbps=11, loss=0.01, delay_ms=5) is None
    assert [step.action for step in reports.adapter.history] == ["idle"] * 5


def test_loss_backs_off_from_the_rate_in_use_then_holds_then_probes_up() -> None:
    reports = _Reports(RateAdapter())
    # 25 % lost of the 11 kbit/s sent: 11 x (1 - 0.25 / 2); the link carried 8.
    assert reports.report(received_kbps=8, loss=0.25, sent_kbps=11) == pytest.approx(9.625)
    assert reports.report(received_kbps=6) == pytest.approx(9.625)  # the report after holds
    assert reports.report(received_kbps=6, loss=0.05) == pytest.approx(9.625)  # some loss holds
    # Clear, and near (here above) the 8 kbit/s the link carried: 3 % of it a second.
    assert reports.report(received_kbps=6) == pytest.approx(9.625 + 0.03 * 8)
    assert reports.report(received_kbps=6) == pytest.approx(9.625 + 0.06 * 8)
    # Loss again: from the rate in use, the target (the 30 kbit/s sent cannot have been).
    assert reports.report(received_kbps=30, loss=0.5) == pytest.approx((9.625 + 0.48) * 0.75)
    actions = [step.action for step in reports.adapter.history]
    assert actions == ["decrease", "hold", "hold", "increase", "increase", "decrease"]


def test_a_growing_queue_backs_off_to_what_arrived_then_drains() -> None:
    reports = _Reports(RateAdapter())
    reports.report(received_kbps=11)
    # The link steps down to 8 kbit/s: 11 sent, 8 arrive, 3 kbit (375 B) more queue each
    # second: 325 B after the drift, less the 69-byte message on its way, 256 ms at 8 kbit/s.
    # One report may be noise; two running are a queue.
    assert reports.report(received_kbps=8, sent_kbps=11) is None
    assert reports.adapter.history[-1].queue_ms == pytest.approx(325 - 68.75, abs=0.1)
    assert reports.report(received_kbps=8, sent_kbps=11) == pytest.approx(0.85 * 8)
    assert reports.adapter.history[-1].queue_ms == pytest.approx(650 - 68.75, abs=0.1)
    # The sender keeps under the target; the link drains the queue at 8, then carries 6.
    reports.report(received_kbps=8, sent_kbps=6, delay_ms=150)  # the hold after a decrease
    reports.report(received_kbps=8, sent_kbps=6, delay_ms=150)
    assert reports.adapter.history[-1].queue_ms == pytest.approx(12.5)  # 350 + 750 - 1050 - 37.5
    for _ in range(2):  # a standing delay on the receiver's side holds
        assert reports.report(received_kbps=6, delay_ms=160) == pytest.approx(6.8)
    # Clear, and far below the 8 kbit/s the link carried: 8 % a second.
    assert reports.report(received_kbps=6, delay_ms=20) == pytest.approx(6.8 * 1.08)


def test_a_late_display_without_a_queue_in_the_network_does_not_back_off() -> None:
    """A receiver short of CPU shows frames later and later, but everything sent arrives."""
    reports = _Reports(RateAdapter())
    for delay_ms in (20, 150, 250, 400, 700):
        assert reports.report(received_kbps=11, delay_ms=delay_ms) is None
    assert [step.action for step in reports.adapter.history] == ["idle"] + ["hold"] * 4
    # With some queue in the network (7.2 sent, 6 arriving: 112.5 B, less a 45-byte message on
    # its way, 90 ms), a growing delay backs off; the same queue with a steady delay does not.
    reports = _Reports(RateAdapter())
    reports.report(received_kbps=6, delay_ms=150)
    assert reports.report(received_kbps=6, delay_ms=200, sent_kbps=7.2) == pytest.approx(5.1)
    assert reports.adapter.history[-1].queue_ms == pytest.approx(90)
    reports = _Reports(RateAdapter())
    reports.report(received_kbps=6, delay_ms=150)
    assert reports.report(received_kbps=6, delay_ms=160, sent_kbps=7.2) is None


def test_the_delay_of_the_senders_own_change_is_not_the_links() -> None:
    reports = _Reports(RateAdapter())
    assert reports.report(received_kbps=8, loss=0.2) == pytest.approx(7.2)
    reports.adapter.ignore_delay(2)  # e.g. the sender bundles longer: +160 ms latency
    reports.report(received_kbps=6, delay_ms=180, sent_kbps=6.8)  # the hold after a decrease
    assert reports.report(received_kbps=6, delay_ms=300) > 7.2  # not read as a growing delay
    assert reports.report(received_kbps=6, delay_ms=300) > 7.2  # read again: high, holds
    assert reports.adapter.history[-1].action == "hold"


def test_a_report_that_saw_nothing_changes_nothing() -> None:
    """Nothing arrived (the first keyframe still in flight): no evidence either way, and what
    arrives next settles the bytes it owed."""
    reports = _Reports(RateAdapter())
    assert reports.report(received_kbps=0, delay_ms=None, sent_kbps=40) is None
    assert reports.report(received_kbps=45, sent_kbps=8) is None
    assert [step.action for step in reports.adapter.history] == ["hold", "idle"]


def test_the_target_stays_within_the_ceiling_and_the_floor() -> None:
    reports = _Reports(RateAdapter(max_kbps=10))
    assert reports.report(received_kbps=64, loss=0.2) == 10
    for _ in range(20):
        assert reports.report(received_kbps=64) == 10
    assert reports.report(received_kbps=0.5, loss=0.9) == MIN_TARGET_KBPS


def test_plans_bundle_longer_as_the_wire_rate_falls() -> None:
    # 25 fps, bundles of 2 frames (40 ms): 12.5 messages/s of 87 header bytes, 8.7 kbit/s.
    assert header_kbps(25, 40) == pytest.approx(12.5 * 87 * 8 / 1000)
    assert plan_wire_rate(64, 25, 40, 200) == RatePlan(40, pytest.approx(64 - 8.7))
    # At 6.8 kbit/s the headers may take 3.4: bundles of 6 frames (4.2 messages/s, 2.9 kbit/s;
    # 5 frames would be 5 messages/s, 3.48 kbit/s).
    low = plan_wire_rate(6.8, 25, 40, 200)
    assert low.bundle_ms == pytest.approx(200) and low.payload_kbps == pytest.approx(
        6.8 - 2.9, abs=0.01
    )
    assert plan_wire_rate(13, 25, 40, 200).bundle_ms == pytest.approx(80)
    # A FIXED stream cannot bundle: the payload gets what is left, at least MIN_PAYLOAD_KBPS.
    assert plan_wire_rate(6.8, 25, 0, 0) == RatePlan(0, MIN_PAYLOAD_KBPS)
