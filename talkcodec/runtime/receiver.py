"""The live receiver: data channels -> StreamDecoder -> playout buffer -> frames to its sinks.

Messages are checked and queued on the asyncio loop; one worker thread decodes every queued
packet (keypoint prediction needs them all) into the playout buffer (talkcodec.runtime.playout),
which releases frames at the pace they were captured (a bundle of several frames arrives at
once), and renders only the newest frame that is due, so a slow renderer skips frames instead
of falling behind. Through packet loss the last good frame stays up; the receiver asks for an
intra keypoint packet after a gap and for a keyframe when it has no reference it can trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from talkcodec.bitstream import BitstreamError, PacketKind, StreamHeader
from talkcodec.codec import StreamDecoder
from talkcodec.config import ReceiverConfig
from talkcodec.generator.backends.base import RefinerBackend
from talkcodec.runtime.playout import PlayoutBuffer
from talkcodec.transport.control import (
    LATENCY_UNKNOWN_MS,
    AudioClock,
    KeyframeRequest,
    KeyframeRequestReason,
    ReceiverReport,
    RefreshRequest,
    StreamHeaderMessage,
    parse_control,
)
from talkcodec.transport.fragmentation import Reassembler
from talkcodec.transport.peer import CallChannels
from talkcodec.transport.stats import (
    CallStats,
    ReportInterval,
    percentile,
    wall_clock_ms,
)

if TYPE_CHECKING:
    from talkcodec.audio.receive import AudioReceiver

logger = logging.getLogger(__name__)

# Called in the worker thread with each displayed frame: (H, W, 3) uint8 RGB, its pts_ms.
FrameSink = Callable[[np.ndarray, int], None]
# Packets held while waiting for the stream header (a few seconds at 25 fps).
_MAX_PENDING_BEFORE_HEADER = 128
# No frame shown for _STUCK_S while _STUCK_LATE_PACKETS or more keypoint packets came late: a
# damaged packet moved the decoder's timeline ahead of the stream (KeypointTimeline accepts a
# plausible jump of up to MAX_PTS_STEP_MS), and only a fresh start -- a keyframe with its intra
# packet -- resets it sooner than the stream catches up, so the receiver asks for one.
_STUCK_S = 0.5
_STUCK_LATE_PACKETS = 5


class CallReceiver:
    def __init__(
        self,
        channels: CallChannels,
        config: ReceiverConfig | None = None,
        sinks: list[FrameSink] | None = None,
        backend: RefinerBackend | None = None,
    ) -> None:
        """backend: the renderer's inference backend, made and warmed up before the call
        (commands.warm_up_renderer); the decoder made for the stream header uses it."""
        self.channels = channels
        self.config = config or ReceiverConfig()
        self.sinks = list(sinks or [])
        self.stats = CallStats()
        self.decoder: StreamDecoder | None = None
        # The call's sound (talkcodec.audio.receive), set by whoever takes the audio track.
        self.audio: AudioReceiver | None = None
        self._backend = backend
        self._making_decoder: asyncio.Task[None] | None = None
        self._reassembler = Reassembler()
        # Messages waiting for the worker, with the kind of packets their channel carries.
        self._pending: list[tuple[bytes, PacketKind]] = []
        self._in_worker: list[tuple[bytes, PacketKind]] = []  # the batch the worker has now
        self.playout = PlayoutBuffer()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="talkcodec-render")
        self._last_shown_pts: int | None = None
        # When the last frame was shown (monotonic s), and the decoder's late packets then.
        self._shown_at_s = time.monotonic()
        self._late_when_shown = 0
        self._loss_since_pts: int | None = None
        self._next_keyframe_request = time.monotonic() + self.config.keyframe_request_interval_s
        self._next_refresh_request = 0.0
        self._decoder_counts_seen = 0
        self._report_interval = ReportInterval()  # what the next report's last fields cover
        channels.keyframe.on("message", self._on_keyframe)
        channels.keypoints.on("message", self._on_keypoints)
        channels.control.on("message", self._on_control)
        for channel in (channels.keyframe, channels.keypoints, channels.control):
            channel.on("close", self.stop)

    # -- on the event loop ----------------------------------------------------------------

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def _accept(self, channel: str, message: bytes | str) -> bytes | None:
        if isinstance(message, str):
            self.stats.count_drop("text_message")
            return None
        self.stats.count_message(channel, len(message))
        if len(message) > self.config.max_message_bytes:
            self.stats.count_drop("oversize")
            return None
        return message

    def _on_keyframe(self, message: bytes | str) -> None:
        data = self._accept("keyframe", message)
        if data is None:
            return
        try:
            packet = self._reassembler.add(data)
        except BitstreamError as error:
            self.stats.count_drop("bad_fragment")
            logger.debug("dropped keyframe fragment: %s", error)
            return
        if packet is not None:
            self._queue_kind(packet, PacketKind.KEYFRAME)

    def _on_keypoints(self, message: bytes | str) -> None:
        data = self._accept("keypoints", message)
        if data is not None:
            self._queue_kind(data, PacketKind.KEYPOINTS)

    def _queue_kind(self, message: bytes, kind: PacketKind) -> None:
        """Queue a message for the decoder, which drops packets of the other kind than its
        channel's (`wrong_channel`): the channels differ in delivery, so no sender does that."""
        if self.decoder is None and len(self._pending) >= _MAX_PENDING_BEFORE_HEADER:
            self._pending.pop(0)
            self.stats.count_drop("before_header")
        self._pending.append((message, kind))
        self._wake.set()

    def _on_control(self, message: bytes | str) -> None:
        data = self._accept("control", message)
        if data is None:
            return
        try:
            control = parse_control(data)
        except BitstreamError as error:
            self.stats.count_drop("bad_control")
            logger.debug("dropped control message: %s", error)
            return
        if isinstance(control, StreamHeaderMessage):
            if self.decoder is None and self._making_decoder is None:
                making = asyncio.get_running_loop().create_task(self._make_decoder(control.header))
                self._making_decoder = making
        elif isinstance(control, AudioClock):
            if self.audio is not None:
                self.audio.set_clock(control.origin_ms)
        else:
            self.stats.count_drop("unexpected_control")

    async def _make_decoder(self, header: StreamHeader) -> None:
        """Make the stream's decoder in the worker thread: it loads weights and networks (GC,
        the renderer's backend), which must not stall the loop that serves the connection."""
        loop = asyncio.get_running_loop()
        try:
            self.decoder = await loop.run_in_executor(
                self._executor, StreamDecoder, header, self.config.decoder, self._backend
            )
        except BitstreamError as error:  # a header this build cannot decode (e.g. its model)
            self.stats.count_drop("bad_stream_header")
            logger.warning("cannot decode this stream: %s", error)
            self._making_decoder = None  # the next header may do better
        except BaseException:
            self.stop()  # the renderer cannot run here: run() raises the error
            raise
        finally:
            self._wake.set()

    def _send_control(self, data: bytes) -> None:
        if self.channels.control.readyState == "open":
            self.channels.control.send(data)

    async def run(self) -> None:
        """Decode and display until stop() or a channel closes."""
        loop = asyncio.get_running_loop()
        ticker = asyncio.create_task(self._tick())
        try:
            while not self._stopped.is_set():
                await self._wait_for_work()
                if self.decoder is None:
                    continue
                batch, self._pending = self._pending, []
                self._in_worker = batch
                await loop.run_in_executor(self._executor, self._process, batch)
                self._in_worker = []
                self._after_batch()
        finally:
            ticker.cancel()
            self._executor.shutdown(wait=True)
        making = self._making_decoder
        if making is not None and making.done() and not making.cancelled():
            making.result()  # the decoder could not be made: say why

    async def _wait_for_work(self) -> None:
        """Until a message arrives or the playout buffer's next frame is due."""
        due_ms = self.playout.next_due_ms()
        if due_ms is None:
            await self._wake.wait()
        else:
            timeout_s = max(0.0, (due_ms - time.monotonic() * 1000) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()

    def _after_batch(self) -> None:
        decoder = self.decoder
        now = time.monotonic()
        if (
            self.config.request_refresh
            and decoder is not None
            and not decoder.keypoints_synchronised
            # Keypoints came: decoded ones, or undecodable ones when the first were lost.
            and decoder.stats.keypoint_frames + decoder.stats.undecodable > 0
            and now >= self._next_refresh_request
        ):
            self._next_refresh_request = now + self.config.refresh_request_interval_s
            self.stats.refresh_requests += 1
            self._send_control(bytes(RefreshRequest(0)))

    async def _tick(self) -> None:
        next_report = time.monotonic() + self.config.report_interval_s
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            decoder = self.decoder
            stuck = (
                decoder is not None
                and decoder.stats.late - self._late_when_shown >= _STUCK_LATE_PACKETS
                and now - self._shown_at_s >= _STUCK_S
            )
            # Not before any keypoints came: the sender's first frame, which carries its
            # keyframe, can take a second (its models warming up).
            missing = (
                (decoder is None or decoder.needs_keyframe)
                and "keypoints" in self.stats.channels
                and not self._keyframe_arrived()
            )
            if (missing or stuck) and now >= self._next_keyframe_request:
                self._next_keyframe_request = now + self.config.keyframe_request_interval_s
                self.stats.keyframe_requests += 1
                reason = KeyframeRequestReason.NO_REFERENCE
                if decoder is not None and not decoder.needs_keyframe:
                    reason = KeyframeRequestReason.DECODE_ERROR  # stuck: nothing decodes
                self._send_control(bytes(KeyframeRequest(reason)))
            if now >= next_report:
                next_report = now + self.config.report_interval_s
                self._send_control(bytes(self.report()))

    def _keyframe_arrived(self) -> bool:
        """Whether a keyframe has arrived that the decoder has not taken yet (it waits while the
        decoder is made, or is in the worker's batch): asking for another then only costs a
        second keyframe, as every call start did while the renderer loaded."""
        waiting = (*self._in_worker, *self._pending)
        return any(kind is PacketKind.KEYFRAME for _, kind in waiting)

    def report(self) -> ReceiverReport:
        """The report to send now; it closes a report interval (what arrived since the last)."""
        decoder_stats = self.decoder.stats if self.decoder is not None else None
        recent = self.stats.latencies_ms[-100:]

        def ms(q: float) -> int:
            value = percentile(recent, q)
            return LATENCY_UNKNOWN_MS if value is None else min(round(value), LATENCY_UNKNOWN_MS)

        dropped = sum(self.stats.dropped.values())
        if decoder_stats is not None:
            dropped += decoder_stats.corrupt + decoder_stats.unknown_kind
            dropped += decoder_stats.implausible + decoder_stats.wrong_channel
        # What the network lost, whether or not a repeated copy made up for it.
        lost = decoder_stats.lost + decoder_stats.recovered if decoder_stats else 0
        received = (
            decoder_stats.keypoint_frames - decoder_stats.recovered + decoder_stats.late
            if decoder_stats
            else 0
        )
        audio_bytes = self.audio.wire_bytes() if self.audio is not None else 0
        interval = self._report_interval.close(
            time.monotonic(), self.stats, lost, received, audio_bytes
        )
        delay_ms = interval.queuing_delay_ms
        return ReceiverReport(
            rendered=len(self.stats.displayed_pts_ms),
            lost=lost,
            late=decoder_stats.late if decoder_stats else 0,
            dropped=dropped,
            latency_p50_ms=ms(50),
            latency_p95_ms=ms(95),
            interval_ms=min(interval.interval_ms, 0xFFFF),
            received_wire_bps=min(interval.received_wire_bps, 0xFFFF_FFFF),
            queuing_delay_ms=LATENCY_UNKNOWN_MS if delay_ms is None else min(delay_ms, 0xFFFE),
            lost_per_256=interval.lost_per_256,
        )

    # -- in the worker thread -------------------------------------------------------------

    def _process(self, batch: list[tuple[bytes, PacketKind]]) -> None:
        decoder = self.decoder
        assert decoder is not None
        for message, kind in batch:
            lost_before = decoder.stats.lost + decoder.stats.undecodable
            decoded = decoder.decode(message, channel=kind)
            if (
                decoder.stats.lost + decoder.stats.undecodable > lost_before
                and self._loss_since_pts is None
            ):
                self._loss_since_pts = self._last_shown_pts
            self.playout.push_message(decoded, time.monotonic() * 1000)
        due = self.playout.due(time.monotonic() * 1000)
        if not due:
            return
        self.stats.superseded += len(due) - 1
        newest = due[-1]
        image = decoder.render(newest)
        for sink in self.sinks:
            sink(image, newest.pts_ms)
        latency = self.stats.count_display(newest.pts_ms, wall_clock_ms())
        if self.audio is not None and latency is not None:
            self.audio.note_video(latency)
        if self._loss_since_pts is not None:
            self.stats.recoveries_ms.append((newest.pts_ms - self._loss_since_pts) % (1 << 32))
            self._loss_since_pts = None
        self._last_shown_pts = newest.pts_ms
        self._shown_at_s, self._late_when_shown = time.monotonic(), decoder.stats.late

    def summary(self) -> dict[str, object]:
        summary = self.stats.summary()
        if self.decoder is not None:
            d = self.decoder.stats
            summary["decoder"] = {
                "keyframes": d.keyframes,
                "keypoint_frames": d.keypoint_frames,
                "rendered": d.rendered,
                "lost_packets": d.lost,
                "recovered_packets": d.recovered,
                "repeated_packets": d.repeated,
                "late_packets": d.late,
                "undecodable_packets": d.undecodable,
                "corrupt_packets": d.corrupt,
                "unknown_kind_packets": d.unknown_kind,
                "implausible_packets": d.implausible,
                "timeline_resyncs": d.resyncs,
                "wrong_channel_packets": d.wrong_channel,
            }
            if self.decoder.header.hybrid:
                summary["decoder"].update(
                    lowres_pictures=d.lowres_pictures,
                    lowres_waiting=d.lowres_waiting,
                    lowres_corrupt=d.lowres_corrupt,
                )
            media = [
                self.stats.channels[c]
                for c in ("keyframe", "keypoints")
                if c in self.stats.channels
            ]
            wire = sum(counter.wire_bytes for counter in media)
            summary["wire_header_bytes_per_frame"] = (
                round((wire - d.payload_bytes) / d.keypoint_frames, 2)
                if d.keypoint_frames
                else None
            )
            held = self.playout.held_ms
            summary["playout"] = {
                "held_ms_mean": float(np.mean(held)) if held else None,
                "held_ms_max": float(np.max(held)) if held else None,
                "overflow_frames": self.playout.overflow,
                "extra_delay_ms": self.playout.extra_delay_ms,
                "recovered_frames_late": self.playout.recovered_shown_late,
            }
        summary["keyframe_fragments"] = {
            "duplicates": self._reassembler.duplicates,
            "abandoned": self._reassembler.abandoned,
            "in_progress": self._reassembler.pending,
        }
        if self.audio is not None:
            summary["audio"] = self.audio.summary(self.stats.elapsed_s())
            summary["av_offset_ms"] = self.audio.playout.offset_summary()
        return summary
