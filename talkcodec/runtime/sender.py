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
from dataclasses import dataclass, field

import numpy as np

from talkcodec.bitstream import (
    BitstreamError,
    Packet,
    PacketFormat,
    PacketKind,
    PacketWriter,
)
from talkcodec.codec import StreamEncoder
from talkcodec.config import SenderConfig
from talkcodec.runtime.sources import CapturedFrame, LatestFrame
from talkcodec.transport.bundling import Bundler
from talkcodec.transport.control import (
    KeyframeRequest,
    ReceiverReport,
    RefreshRequest,
    StreamHeaderMessage,
    parse_control,
)
from talkcodec.transport.fragmentation import fragment
from talkcodec.transport.peer import CallChannels
from talkcodec.transport.stats import ChannelCounter

logger = logging.getLogger(__name__)

EncodedCallback = Callable[[int, np.ndarray], None]


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
    keyframe_requests: int = 0
    refresh_requests: int = 0
    control_errors: int = 0
    last_report: ReceiverReport | None = None


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
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="talkcodec-encode")
        channels.control.on("message", self._on_control)

    def send_header(self) -> None:
        self._send("control", bytes(StreamHeaderMessage(self.encoder.header)))

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
        packets = self.encoder.encode(captured.image, captured.pts_ms)
        self.stats.encode_ms.append((time.perf_counter() - started) * 1000)
        self.stats.frames_encoded += 1
        self.stats.frames_without_face += self.encoder.last_landmarks is None
        if self._on_encoded is not None and self.encoder.last_crop is not None:
            self._on_encoded(captured.pts_ms, self.encoder.last_crop)
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
        data = self._writer.pack_bundle(bundle)
        self.stats.bundled_frames += len(bundle)
        if self.config.simulate_loss and self._loss.random() < self.config.simulate_loss:
            self.stats.simulated_losses += 1
            self.stats.simulated_lost_packets += len(bundle)
            return
        self._send("keypoints", data)

    def _send(self, channel_name: str, data: bytes) -> None:
        channel = getattr(self.channels, channel_name)
        if channel.readyState != "open":
            return
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
        else:
            self.stats.control_errors += 1  # a stream header only ever flows the other way

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
            "keypoint_frames_per_message": (
                self.stats.bundled_frames / keypoint_messages if keypoint_messages else None
            ),
            "keyframe_requests_received": self.stats.keyframe_requests,
            "refresh_requests_received": self.stats.refresh_requests,
            "control_errors": self.stats.control_errors,
            "last_receiver_report": None if report is None else {
                "rendered": report.rendered,
                "lost": report.lost,
                "late": report.late,
                "dropped": report.dropped,
            },
        }  # fmt: skip
