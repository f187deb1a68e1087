"""The receiver's playout buffer: frames that arrive together (a bundle of several frames' keypoints
in one message) are shown at the pace they were captured, not as a burst.

The first frame of a message is shown on arrival and each further one as long after the first
as it was captured after it, so a bundle of two frames costs one frame period of latency and no
more, and a message that came late delays no later message (no delay builds up). A frame is
never held longer than `max_hold_ms`.

Under loss a sender repeats each message's packets at the start of the next (the repeat
prefix, docs/bitstream.md), so a lost message's frames come one message late. The buffer then
delays every frame by the lag such a recovered frame had (`extra_delay_ms`, at most
`max_hold_ms`), so that the next recovered frames are shown in their place rather than
superseded on arrival; after RECOVERY_CALM_MS without a recovery the delay shrinks by
EXTRA_DELAY_DECAY_MS per message (a shift too small to skip a frame).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from talkcodec.bitstream import PTS_MODULO, signed_difference
from talkcodec.codec import DecodedFrame

DEFAULT_MAX_HOLD_MS = 200.0
# More frames than this waiting (a second at 64 fps) means the display stalled: the oldest go.
MAX_HELD_FRAMES = 64
RECOVERY_CALM_MS = 10_000.0
EXTRA_DELAY_DECAY_MS = 1.0


@dataclass(frozen=True)
class _Held:
    frame: DecodedFrame
    play_at_ms: float  # on the receiver's clock (the arrival times' clock)


class PlayoutBuffer:
    """Frames in (with their arrival time, receiver clock in ms), frames out when due.

    held_ms: how long each frame waited after its arrival, for the stats.
    """

    def __init__(self, max_hold_ms: float = DEFAULT_MAX_HOLD_MS) -> None:
        self.max_hold_ms = max_hold_ms
        self._held: deque[_Held] = deque()
        self.overflow = 0
        self.held_ms: list[float] = []
        self.extra_delay_ms = 0.0
        self.recovered_shown_late = 0  # recovered frames that still came after their slot
        self._last_recovery_ms: float | None = None

    def push_message(self, frames: list[DecodedFrame], arrival_ms: float) -> None:
        """The frames one message made decodable, in stream order, and when it arrived.

        The decoder passes on only frames its timeline accepted, so their order is the
        stream's, even across a new timeline (a restarted sender) whose times are earlier.
        Recovered frames (leading ones) are placed before the message's first new frame."""
        if not frames:
            return
        fresh = [frame for frame in frames if not frame.recovered]
        first_pts_ms = (fresh or frames)[0].pts_ms
        self._follow_recoveries(frames[0], first_pts_ms, arrival_ms)
        for frame in frames:
            spacing = signed_difference(frame.pts_ms - first_pts_ms, PTS_MODULO)
            hold = min(max(0.0, spacing + self.extra_delay_ms), self.max_hold_ms)
            self.recovered_shown_late += frame.recovered and spacing + self.extra_delay_ms < 0
            self.held_ms.append(hold)
            self._held.append(_Held(frame, arrival_ms + hold))
        while len(self._held) > MAX_HELD_FRAMES:
            self._held.popleft()
            self.overflow += 1

    def _follow_recoveries(self, first: DecodedFrame, first_pts_ms: int, arrival_ms: float) -> None:
        """Grow the extra delay to the lag of a message's recovered frames, or let it shrink
        once they stopped coming."""
        if first.recovered:
            lag_ms = signed_difference(first_pts_ms - first.pts_ms, PTS_MODULO)
            self.extra_delay_ms = min(max(self.extra_delay_ms, float(lag_ms)), self.max_hold_ms)
            self._last_recovery_ms = arrival_ms
        elif self.extra_delay_ms > 0 and (
            self._last_recovery_ms is None or arrival_ms - self._last_recovery_ms > RECOVERY_CALM_MS
        ):
            self.extra_delay_ms = max(0.0, self.extra_delay_ms - EXTRA_DELAY_DECAY_MS)

    def due(self, now_ms: float) -> list[DecodedFrame]:
        """The frames up to the newest whose time has come, oldest first; they leave the
        buffer. The last is the one to show, the others are superseded (a frame of a late
        message that a newer one, on time, overtook)."""
        last_due = max(
            (i for i, held in enumerate(self._held) if held.play_at_ms <= now_ms), default=-1
        )
        return [self._held.popleft().frame for _ in range(last_due + 1)]

    def next_due_ms(self) -> float | None:
        """When the next held frame is due (receiver clock), or None when none is held."""
        return min((held.play_at_ms for held in self._held), default=None)

    def __len__(self) -> int:
        return len(self._held)
