"""The live sender: newest captured frame -> StreamEncoder -> data channels.

Encoding (face mesh, fit, entropy coding, keyframe compression) runs in one worker thread so
the asyncio loop stays free to service the peer connection. Control messages from the receiver
(keyframe and refresh requests, reports) are handled on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from talkcodec.bitstream import (
    COMPACT_SEQ_MODULO,
    MAX_BUNDLE_PACKETS,
    MAX_REPEATED_PACKETS,
    PTS_MODULO,
    BitstreamError,
    Packet,
    PacketFormat,
    PacketKind,
    PacketWriter,
)
from talkcodec.codec import StreamEncoder
from talkcodec.config import AudioConfig, SenderConfig
from talkcodec.ratecontrol import (
    MIN_TARGET_KBPS,
    Feedback,
    RateAdapter,
    header_kbps,
    plan_wire_rate,
)
from talkcodec.runtime.playout import DEFAULT_MAX_HOLD_MS
from talkcodec.runtime.sources import CapturedFrame, LatestFrame
from talkcodec.transport.bundling import Bundler
from talkcodec.transport.control import (
    LATENCY_UNKNOWN_MS,
    AudioClock,
    KeyframeRequest,
    ReceiverReport,
    RefreshRequest,
    StreamHeaderMessage,
    parse_control,
)
from talkcodec.transport.fragmentation import fragment
from talkcodec.transport.link import Link
from talkcodec.transport.overhead import RTP_AUDIO_PACKET_OVERHEAD_BYTES, rtp_audio_stream_cost
from talkcodec.transport.peer import CallChannels
from talkcodec.transport.stats import MEDIA_CHANNELS, ChannelCounter, rates_kbit_s

if TYPE_CHECKING:
    from talkcodec.audio.track import OpusTrack

logger = logging.getLogger(__name__)

EncodedCallback = Callable[[int, np.ndarray], None]
# Redundancy "auto" (SenderConfig.redundancy): on from a report of 3/256 (1.2%) keypoint
# packets lost, off after this long without such a report.
REDUNDANCY_LOSS_PER_256 = 3
REDUNDANCY_CALM_S = 10.0


@dataclass
class SenderStats:
    frames_encoded: int = 0
    frames_without_face: int = 0
    frames_dropped_at_capture: int = 0  # overwritten in the slot while encoding was busy
    encode_ms: list[float] = field(default_factory=list)
    channels: dict[str, ChannelCounter] = field(default_factory=dict)
    simulated_losses: int = 0  # keypoint messages dropped before sending (--simulate-loss)
    simulated_lost_packets: int = 0  # the keypoint packets those messages held
    bundled_frames: int = 0  # keypoint packets sent in messages (bundles of one or more)
    repeated_packets: int = 0  # copies of earlier packets sent again (redundancy)
    redundant_messages: int = 0  # messages that carried such copies
    keyframe_requests: int = 0
    refresh_requests: int = 0
    control_errors: int = 0
    last_report: ReceiverReport | None = None


def _audio_wire_kbps(config: AudioConfig) -> float:
    """An Opus track's nominal wire rate: its bitrate plus RTP/SRTP/UDP/IPv4 headers."""
    return config.bitrate_kbps + RTP_AUDIO_PACKET_OVERHEAD_BYTES * 8 / config.frame_ms


class CallSender:
    """Sends one stream: the stream header, then packets for each frame it has time for."""

    def __init__(
        self,
        encoder: StreamEncoder,
        channels: CallChannels,
        config: SenderConfig | None = None,
        on_encoded: EncodedCallback | None = None,
    ) -> None:
        self.encoder = encoder
        self.channels = channels
        self.config = config or SenderConfig()
        self.stats = SenderStats()
        self._on_encoded = on_encoded
        self._loss = random.Random(self.config.loss_seed)
        self._keyframe_id = 0
        self._writer = PacketWriter(encoder.header)
        # FIXED packets carry no length, so they cannot share a message.
        compact = encoder.header.packet_format is PacketFormat.COMPACT
        self._bundler = Bundler(encoder.header.fps, self.config.bundle_ms if compact else 0.0)
        self._bundle_timer: asyncio.TimerHandle | None = None
        # A modelled bottleneck the sends cross (tests, benchmarks), and the rate adaptation:
        # it may bundle longer than configured, up to what the receiver's playout holds.
        self.link = Link(self.config.link) if self.config.link is not None else None
        self._configured_bundle_ms = self._bundler.bundle_ms
        self._longest_bundle_ms = DEFAULT_MAX_HOLD_MS if compact else 0.0
        # Made at the first report, when the sender knows whether the call has sound.
        self._adapter: RateAdapter | None = None
        self._payload_target_kbps: float | None = None  # for the encoder, in its thread
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="talkcodec-encode")
        # Redundancy (SenderConfig.redundancy): the last message's packets, repeated first in
        # the next while it is on; "auto" turns it on at reported loss, off after a calm.
        self._previous_bundle: list[Packet] = []
        self._redundant = self.config.redundancy == "on" and compact
        self._loss_seen_s: float | None = None
        # The call's audio track (talkcodec.audio.track), when it has sound.
        self.audio_track: OpusTrack | None = None
        channels.control.on("message", self._on_control)

    def send_header(self) -> None:
        self._send("control", bytes(StreamHeaderMessage(self.encoder.header)))
        if self.audio_track is not None and self.audio_track.clock_origin_ms is not None:
            self.send_audio_clock(self.audio_track.clock_origin_ms)

    def send_audio_clock(self, origin_ms: float) -> None:
        """Tell the receiver where the audio track's first sample sits on the media clock."""
        self._send("control", bytes(AudioClock(round(origin_ms) % PTS_MODULO)))

    async def run(self, slot: LatestFrame) -> None:
        """Encode and send frames until the source closes the slot."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                result = await loop.run_in_executor(self._executor, self._encode_next, slot)
                if result is None:
                    if slot.closed:
                        return
                    continue
                for packet in result:
                    self._send_packet(packet)
        finally:
            self.flush_bundle()
            self.stats.frames_dropped_at_capture = slot.overwritten
            self._executor.shutdown(wait=True)

    def _encode_next(self, slot: LatestFrame) -> list[Packet] | None:
        captured: CapturedFrame | None = slot.get(timeout_s=0.2)
        if captured is None:
            return None
        started = time.perf_counter()
        self.encoder.set_target_kbps(self._payload_target_kbps)
        packets = self.encoder.encode(captured.image, captured.pts_ms)
        self.stats.encode_ms.append((time.perf_counter() - started) * 1000)
        self.stats.frames_encoded += 1
        self.stats.frames_without_face += self.encoder.last_landmarks is None
        if self._on_encoded is not None and self.encoder.last_crop is not None:
            # Under the pts the receiver will see: compact streams snap a capture time to the
            # implied one when it is within a quarter frame.
            sent_pts = [p.pts_ms for p in packets if p.kind is PacketKind.KEYPOINTS]
            self._on_encoded(sent_pts[0] if sent_pts else captured.pts_ms, self.encoder.last_crop)
        return packets

    def _send_packet(self, packet: Packet) -> None:
        if packet.kind is PacketKind.KEYFRAME:
            data = self._writer.pack(packet)
            for part in fragment(data, self._keyframe_id, self.config.fragment_bytes):
                self._send("keyframe", bytes(part))
            self._keyframe_id = (self._keyframe_id + 1) % (1 << 16)
            return
        ready = self._bundler.add(packet)
        if ready and self._bundle_timer is not None:
            self._bundle_timer.cancel()
            self._bundle_timer = None
        for bundle in ready:
            self._send_bundle(bundle)
        if self._bundler.waiting and self._bundle_timer is None:
            # The next frame may never come (no face, a stall): send what waits by then.
            delay_s = self._bundler.max_wait_ms / 1000
            self._bundle_timer = asyncio.get_running_loop().call_later(delay_s, self.flush_bundle)

    def flush_bundle(self) -> None:
        """Send the keypoint packets waiting for a bundle at once."""
        if self._bundle_timer is not None:
            self._bundle_timer.cancel()
            self._bundle_timer = None
        bundle = self._bundler.flush()
        if bundle:
            self._send_bundle(bundle)

    def _send_bundle(self, bundle: list[Packet]) -> None:
        repeats = self._repeats(bundle)
        data = self._writer.pack_bundle(repeats + bundle, repeats=len(repeats))
        self._previous_bundle = bundle
        self.stats.bundled_frames += len(bundle)
        self.stats.repeated_packets += len(repeats)
        self.stats.redundant_messages += bool(repeats)
        if self.config.simulate_loss and self._loss.random() < self.config.simulate_loss:
            self.stats.simulated_losses += 1
            self.stats.simulated_lost_packets += len(bundle)
            return
        self._send("keypoints", data)

    def _repeats(self, bundle: list[Packet]) -> list[Packet]:
        """The packets to repeat before `bundle`: the previous message's, when redundancy is
        on and they lead straight into it (no gap, no keyframe between)."""
        previous = self._previous_bundle
        if not (self._redundant and previous and bundle):
            return []
        if (previous[-1].seq + 1) % COMPACT_SEQ_MODULO != bundle[0].seq:
            return []
        room = min(MAX_REPEATED_PACKETS, MAX_BUNDLE_PACKETS - len(bundle))
        return previous[-room:] if room > 0 else []

    def _follow_loss(self, report: ReceiverReport) -> None:
        """Redundancy "auto": on at a report of >= REDUNDANCY_LOSS_PER_256 lost, off after
        REDUNDANCY_CALM_S of reports without."""
        if self.config.redundancy != "auto" or report.interval_ms == 0:
            return
        if self.encoder.header.packet_format is not PacketFormat.COMPACT:
            return
        now = time.monotonic()
        if report.lost_per_256 >= REDUNDANCY_LOSS_PER_256:
            self._loss_seen_s = now
            self._redundant = True
        elif self._loss_seen_s is not None and now - self._loss_seen_s > REDUNDANCY_CALM_S:
            self._redundant = False

    def _send(self, channel_name: str, data: bytes) -> None:
        channel = getattr(self.channels, channel_name)
        if channel.readyState != "open":
            return
        if self.link is not None:
            self.link.send_datachannel(channel, data)
        else:
            channel.send(data)
        self.stats.channels.setdefault(channel_name, ChannelCounter()).add(len(data))

    def _on_control(self, message: bytes | str) -> None:
        if isinstance(message, str):
            self.stats.control_errors += 1
            return
        try:
            control = parse_control(message)
        except BitstreamError as error:
            self.stats.control_errors += 1
            logger.debug("dropped control message: %s", error)
            return
        if isinstance(control, KeyframeRequest):
            # A receiver without a reference may also have missed the header (it restarted,
            # or its handlers were not yet in place): the header is 14 bytes, send it again.
            self.stats.keyframe_requests += 1
            self.send_header()
            self.encoder.request_keyframe("request")
        elif isinstance(control, RefreshRequest):
            self.stats.refresh_requests += 1
            self.encoder.request_refresh()
        elif isinstance(control, ReceiverReport):
            self.stats.last_report = control
            self._follow_loss(control)
            self._adapt(control)
        else:
            self.stats.control_errors += 1  # a stream header only ever flows the other way

    def _make_adapter(self) -> RateAdapter:
        """The rate adapter, never above --max-kbps (as wire kbit/s: plus message headers, and
        the sound's wire rate, which the adapter's rate includes)."""
        config = self.encoder.config
        user_kbps = config.max_wire_kbps or config.max_kbps
        fps = self.encoder.header.fps
        ceiling_kbps = user_kbps
        if not config.max_wire_kbps:
            ceiling_kbps += header_kbps(fps, self._configured_bundle_ms)
        if self.audio_track is not None:
            ceiling_kbps += _audio_wire_kbps(self.audio_track.config)
        return RateAdapter(max_kbps=ceiling_kbps if user_kbps > 0 else None)

    def _adapt(self, report: ReceiverReport) -> None:
        """Feed a report to the rate adapter and apply its target: the keypoint bundling here,
        the encoder's rate cap before its next frame (_encode_next, in the worker thread)."""
        if not self.config.adapt_rate or report.interval_ms == 0:
            return
        if self._adapter is None:
            self._adapter = self._make_adapter()
        adapter = self._adapter
        channels = self.stats.channels
        media = [channels[name] for name in MEDIA_CHANNELS if name in channels]
        delay_ms = report.queuing_delay_ms
        feedback = Feedback(
            interval_s=report.interval_ms / 1000,
            received_kbps=report.received_wire_bps / 1000,
            loss_fraction=self._network_loss(report),
            queuing_delay_ms=None if delay_ms == LATENCY_UNKNOWN_MS else delay_ms,
        )
        audio_bytes, audio_kbps = self._audio_wire()
        sent_wire_bytes = sum(counter.wire_bytes for counter in media) + audio_bytes
        sent_messages = sum(counter.messages for counter in media)
        target_kbps = adapter.update(time.monotonic(), feedback, sent_wire_bytes, sent_messages)
        if target_kbps is None:
            return
        fps = self.encoder.header.fps
        # The sound keeps its rate; the face gets what is left.
        video_kbps = max(0.0, target_kbps - audio_kbps)
        plan = plan_wire_rate(video_kbps, fps, self._configured_bundle_ms, self._longest_bundle_ms)
        self._payload_target_kbps = plan.payload_kbps
        if self.encoder.config.max_wire_kbps:  # the cap counts wire bytes: give it the rate
            self._payload_target_kbps = max(video_kbps, MIN_TARGET_KBPS)
            self.encoder.wire_bundle_ms = plan.bundle_ms
        if plan.bundle_ms != self._bundler.bundle_ms:
            self.flush_bundle()
            self._bundler = Bundler(fps, plan.bundle_ms)
            adapter.ignore_delay()  # the frames' latency moves by the change

    def _audio_wire(self) -> tuple[int, float]:
        """The audio track's wire bytes so far and the wire kbit/s to keep for it (0, 0 without
        sound): the sound shares the path with the data channels, and the receiver's reports
        count what arrived on both. Kept: its mean wire rate so far (a variable-rate coder
        spends less than its nominal rate in pauses; keeping the nominal rate starved the face
        to a few frames a second on a 26 kbit/s link, benchmarks/adaptation.py --audio)."""
        track = self.audio_track
        if track is None or track.stats.chunks_read == 0:
            return 0, 0.0
        stats = track.stats
        cost = rtp_audio_stream_cost(stats.packets_sent, stats.payload_bytes)
        seconds = stats.chunks_read * track.config.frame_ms / 1000
        return cost.wire_bytes, cost.wire_bytes * 8 / 1000 / seconds

    def _network_loss(self, report: ReceiverReport) -> float:
        """The report's loss, taken as the link's, except with --simulate-loss on: the sender's
        own drops measure loss recovery and say nothing about the link, and subtracting them
        per report left residues up to 30% (the report's interval and the sender's do not line
        up) that drove the rate to its floor on dev clips; the delay signals still count."""
        return 0.0 if self.config.simulate_loss else report.lost_per_256 / 256

    def _adaptation_summary(self, adapter: RateAdapter) -> dict[str, object]:
        return {
            "target_kbps": adapter.target_kbps,
            "payload_target_kbps": self._payload_target_kbps,
            "decreases": sum(step.action == "decrease" for step in adapter.history),
            "history": [asdict(step) for step in adapter.history],
        }

    def _audio_summary(self, track: OpusTrack) -> dict[str, object]:
        stats, config = track.stats, track.config
        cost = rtp_audio_stream_cost(stats.packets_sent, stats.payload_bytes)
        return {
            "packets_sent": stats.packets_sent,
            "payload_bytes": stats.payload_bytes,
            "simulated_losses": stats.simulated_losses,
            **rates_kbit_s(cost, stats.chunks_read * config.frame_ms / 1000),
            "link_losses": track.link_losses(),
            "bitrate_kbps": config.bitrate_kbps,
            "frame_ms": config.frame_ms,
        }

    def summary(self) -> dict[str, object]:
        encode_ms = self.stats.encode_ms
        report = self.stats.last_report
        keypoint_channel = self.stats.channels.get("keypoints")
        keypoint_messages = (keypoint_channel.messages if keypoint_channel else 0) + (
            self.stats.simulated_losses
        )
        return {
            "frames_encoded": self.stats.frames_encoded,
            "frames_without_face": self.stats.frames_without_face,
            "frames_not_sent_rate_cap": (
                self.encoder.rate_cap.skipped_frames if self.encoder.rate_cap is not None else 0
            ),
            "frames_dropped_at_capture": self.stats.frames_dropped_at_capture,
            "encode_ms": {
                "median": float(np.median(encode_ms)) if encode_ms else None,
                "p95": float(np.percentile(encode_ms, 95)) if encode_ms else None,
            },
            "keyframes": dict(self.encoder.keyframe_reasons),
            "messages_sent": {
                name: {"messages": c.messages, "payload_bytes": c.payload_bytes}
                for name, c in sorted(self.stats.channels.items())
            },
            "simulated_keypoint_losses": self.stats.simulated_losses,
            "simulated_keypoint_packets_lost": self.stats.simulated_lost_packets,
            "bundle_ms": self._bundler.bundle_ms,
            "redundancy": {
                "mode": self.config.redundancy,
                "on": self._redundant,
                "repeated_packets": self.stats.repeated_packets,
                "redundant_messages": self.stats.redundant_messages,
            },
            "keypoint_frames_per_message": (
                self.stats.bundled_frames / keypoint_messages if keypoint_messages else None
            ),
            "keyframe_requests_received": self.stats.keyframe_requests,
            "refresh_requests_received": self.stats.refresh_requests,
            "control_errors": self.stats.control_errors,
            "audio": None if self.audio_track is None else self._audio_summary(self.audio_track),
            "rate_adaptation": (
                None if self._adapter is None else self._adaptation_summary(self._adapter)
            ),
            "link": None if self.link is None else self.link.summary(),
            "last_receiver_report": None if report is None else {
                "rendered": report.rendered,
                "lost": report.lost,
                "late": report.late,
                "dropped": report.dropped,
            },
        }  # fmt: skip
