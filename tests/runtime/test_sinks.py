"""Side-by-side recording sinks."""

from __future__ import annotations

import numpy as np

from talkcodec.runtime.sinks import InputFrames


def test_recorded_inputs_are_found_at_a_snapped_capture_time() -> None:
    """Compact streams snap capture times to the implied ones (within a quarter frame): the
    side-by-side recording must still find the sender's crop."""
    inputs = InputFrames()
    crop = np.ones((4, 4, 3), np.uint8)
    inputs.add(1007, crop)
    inputs.add(1040, 2 * crop)
    assert inputs.get(1007) is crop
    assert inputs.get(1000) is crop  # snapped 7 ms back
    assert inputs.get(1036) is not None and inputs.get(1036)[0, 0, 0] == 2
    assert inputs.get(1100) is None
