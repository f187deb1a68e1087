"""The sender's audio track: Opus packets handed to aiortc already encoded.

aiortc's RTP sender sends a track's `av.Packet`s as they are (it encodes only raw frames): the
RTP timestamp is a random origin plus the packet's pts. Our pts count samples from the first
packet the track hands over, so the receiver (whose aiortc maps the first RTP timestamp it
receives to 0) sees pts 0 at the clock time announced in the AUDIO_CLOCK control message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from talkcodec.audio.opus import TIME_BASE, OpusEncoder
from talkcodec.audio.sources import SAMPLE_RATE, AudioSource
from talkcodec.config import AudioConfig
from talkcodec.transport.overhead import rtp_audio_packet_cost

if TYPE_CHECKING:
    from talkcodec.transport.link import Link

logger = logging.getLogger(__name__)

# Called with the clock time (Unix ms, float) of the first packet's first decoded sample.
ClockCallback = Callable[[float], None]


@dataclass
class AudioSendStats:
    packets_sent: int = 0
    payload_bytes: int = 0
    simulated_losses: int = 0
    chunks_read: int = 0


class OpusTrack(MediaStreamTrack):
    """kind "audio": reads `source` in real time, hands aiortc one Opus packet per frame_ms."""

    kind = "audio"

    def __init__(
        self, source: AudioSource, config: AudioConfig, on_clock: ClockCallback | None = None
    ) -> None:
        super().__init__()
        self.source = source
        self.config = config
        self.stats = AudioSendStats()
        self._encoder = OpusEncoder(config)
        self.on_clock = on_clock
        self._loss = random.Random(config.loss_seed)
        self._first_pts: int | None = None  # encoder pts of the first packet handed over
        self._origin_ms: float | None = None  # clock time of timeline sample 0
        self.clock_origin_ms: float | None = None  # clock time of our pts 0, once known
        # A modelled bottleneck (the sender's, talkcodec.transport.link) the packets cross
        # before aiortc sends them; None: none. Packets are read in real time by a pump task
        # and wait in _ready for aiortc's next recv() once the link delivered them.
        self.link: Link | None = None
        self._ready: asyncio.Queue[av.Packet | None] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._submitted = 0
        self._delivered = 0

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._read_source())
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._ready.get()
        if packet is None or self.readyState != "live":
            raise MediaStreamError
        return packet

    async def _read_source(self) -> None:
        """Read and encode the source in real time; packets go to _ready (through the link)."""
        try:
            while self.readyState == "live":
                packets = await self._next_packets()
                for packet in packets:
                    if self._hand_over(packet):
                        self._pass_on(packet)
        except MediaStreamError:
            pass
        finally:
            self._ready.put_nowait(None)

    def _pass_on(self, packet: av.Packet) -> None:
        link = self.link
        if link is None:
            self._ready.put_nowait(packet)
            return
        self._submitted += 1

        def deliver() -> None:
            self._delivered += 1
            self._ready.put_nowait(packet)

        link.submit(rtp_audio_packet_cost(packet.size).wire_bytes, deliver, flow="audio")

    def link_losses(self) -> int:
        """Packets handed to the link that it has not delivered (dropped, lost or in flight)."""
        return self._submitted - self._delivered

    async def _next_packets(self) -> list[av.Packet]:
        frame_samples = self._encoder.frame_samples
        chunk = await self.source.read(frame_samples)
        if chunk is None:
            self.stop()
            raise MediaStreamError
        if self._origin_ms is None:
            self._origin_ms = chunk.media_ms
        start = self.stats.chunks_read * frame_samples
        self.stats.chunks_read += 1
        return self._encoder.encode(chunk.samples, start)

    def _hand_over(self, packet: av.Packet) -> bool:
        """Stamp the packet with our pts; False when it is dropped (simulated loss). The first
        packet is always sent: the receiver's pts 0 is the first packet it gets."""
        assert packet.pts is not None and self._origin_ms is not None
        if self._first_pts is None:
            self._first_pts = packet.pts
            self.clock_origin_ms = self._origin_ms + packet.pts * 1000 / SAMPLE_RATE
            if self.on_clock is not None:
                self.on_clock(self.clock_origin_ms)
        elif self.config.simulate_loss and self._loss.random() < self.config.simulate_loss:
            self.stats.simulated_losses += 1
            return False
        packet.pts = packet.pts - self._first_pts
        packet.dts = packet.pts
        packet.time_base = TIME_BASE
        self.stats.packets_sent += 1
        self.stats.payload_bytes += packet.size
        return True

    def stop(self) -> None:
        super().stop()
        self.source.close()
        if self._pump is not None:
            self._pump.cancel()
        self._ready.put_nowait(None)
