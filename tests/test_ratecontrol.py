"""The rate cap (`--max-kbps`, talkcodec.ratecontrol): its two promises on hand-made spending,
and on a real dev clip through the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from talkcodec.cli import main, stream_info
from talkcodec.config import EncoderConfig
from talkcodec.keyframe import WebPCodec
from talkcodec.ratecontrol import BURST_S, FILE_PREAMBLE_BYTES, WINDOW_S, RateCap


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
