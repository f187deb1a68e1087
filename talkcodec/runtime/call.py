"""Running a call: the sender and receiver sides over signaling, or both in one process on
loopback (`talkcodec call`). Results are JSON-ready dicts of sender and receiver statistics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from aiortc import RTCPeerConnection
from aiortc.contrib.signaling import BaseSignaling

from talkcodec.audio.receive import AudioReceiver, AudioTrackTaker
from talkcodec.audio.sources import AudioSource
from talkcodec.audio.track import OpusTrack
from talkcodec.codec import StreamEncoder
from talkcodec.config import AudioConfig, ReceiverConfig, SenderConfig
from talkcodec.generator.backends.base import RefinerBackend
from talkcodec.runtime.receiver import CallReceiver, FrameSink
from talkcodec.runtime.sender import CallSender, EncodedCallback
from talkcodec.runtime.sources import CaptureError, FrameSource, LatestFrame
from talkcodec.transport.peer import (
    ChannelCollector,
    answer,
    connect_in_process,
    create_channels,
    make_peer_connection,
    offer,
    wait_open,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
# After the source ends, how long the receiver gets to take in the last packets.
DRAIN_S = 0.5

# Builds the receiver's sinks once it exists (sinks may show its live stats).
SinksFactory = Callable[[CallReceiver], list[FrameSink]]


async def stream(sender: CallSender, source: FrameSource) -> None:
    """Send the stream header, then every frame the sender has time for, until the source ends."""
    slot = LatestFrame()
    sender.send_header()
    source.start(slot)
    try:
        await sender.run(slot)
    finally:
        source.stop()
    if source.error is not None:
        raise CaptureError(str(source.error))


async def _receive_until_done(receiver: CallReceiver, pc: RTCPeerConnection) -> None:
    @pc.on("connectionstatechange")
    def _on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            receiver.stop()

    await receiver.run()


def _close_sinks(sinks: Sequence[FrameSink]) -> None:
    for sink in sinks:
        close = getattr(sink, "close", None)
        if close is not None:
            close()


def _add_audio_track(
    pc: RTCPeerConnection, source: AudioSource | None, config: AudioConfig | None
) -> OpusTrack | None:
    """The sender's audio track on `pc` (before the offer); None without a source."""
    if source is None or not (config or AudioConfig()).enabled:
        return None
    track = OpusTrack(source, config or AudioConfig())
    pc.addTrack(track)
    return track


def _start_audio(sender: CallSender, track: OpusTrack | None) -> None:
    """Let the sender announce the track's clock as soon as its first packet leaves."""
    if track is None:
        return
    sender.audio_track = track
    track.link = sender.link  # the modelled bottleneck, when there is one, carries sound too
    track.on_clock = sender.send_audio_clock
    if track.clock_origin_ms is not None:  # the first packet left before the channels opened
        sender.send_audio_clock(track.clock_origin_ms)


def _add_audio_sinks(audio: AudioReceiver | None, sinks: Sequence[FrameSink]) -> None:
    """Sinks that record sound (those with write_audio) get the call's audio."""
    if audio is None:
        return
    for sink in sinks:
        write_audio = getattr(sink, "write_audio", None)
        if write_audio is not None:
            audio.sinks.append(write_audio)


async def loopback_call(
    encoder: StreamEncoder,
    source: FrameSource,
    sender_config: SenderConfig | None = None,
    receiver_config: ReceiverConfig | None = None,
    sinks: SinksFactory | None = None,
    on_encoded: EncodedCallback | None = None,
    ice_servers: Sequence[str] = (),
    backend: RefinerBackend | None = None,
    audio_source: AudioSource | None = None,
    audio_config: AudioConfig | None = None,
    on_audio: Callable[[AudioReceiver], None] | None = None,
) -> dict[str, object]:
    """Sender and receiver in this process, connected over loopback WebRTC. backend: the
    receiver's renderer backend, warmed up before the call (None: made with the decoder).
    audio_source: the sender's sound (None: a silent call); on_audio: called with the
    receiver's audio once it exists (e.g. to add a sound output)."""
    sender_pc, receiver_pc = make_peer_connection(ice_servers), make_peer_connection(ice_servers)
    channels = create_channels(sender_pc)
    audio_track = _add_audio_track(sender_pc, audio_source, audio_config)
    collector = ChannelCollector(receiver_pc)
    taker = AudioTrackTaker(receiver_pc, audio_config)
    receiver_sinks: list[FrameSink] = []
    try:
        await connect_in_process(sender_pc, receiver_pc)
        await wait_open(channels, CONNECT_TIMEOUT_S)
        receiver = CallReceiver(
            await collector.wait(CONNECT_TIMEOUT_S), receiver_config, backend=backend
        )
        receiver.audio = taker.audio  # before the sinks, which record sound if there is any
        receiver_sinks = sinks(receiver) if sinks else []
        receiver.sinks.extend(receiver_sinks)
        _add_audio_sinks(taker.audio, receiver_sinks)
        if taker.audio is not None and on_audio is not None:
            on_audio(taker.audio)
        sender = CallSender(encoder, channels, sender_config, on_encoded)
        _start_audio(sender, audio_track)
        receiving = asyncio.create_task(receiver.run())
        try:
            await stream(sender, source)
            await asyncio.sleep(DRAIN_S)
        finally:
            receiver.stop()
            await receiving
    finally:
        if taker.audio is not None:
            await taker.audio.close()
        _close_sinks(receiver_sinks)
        await sender_pc.close()
        await receiver_pc.close()
    return {"sender": sender.summary(), "receiver": receiver.summary()}


async def send_call(
    encoder: StreamEncoder,
    source: FrameSource,
    signaling: BaseSignaling,
    sender_config: SenderConfig | None = None,
    on_encoded: EncodedCallback | None = None,
    ice_servers: Sequence[str] = (),
    audio_source: AudioSource | None = None,
    audio_config: AudioConfig | None = None,
) -> dict[str, object]:
    """The sender's side of a two-machine call: offer, then stream until the source ends."""
    pc = make_peer_connection(ice_servers)
    channels = create_channels(pc)
    audio_track = _add_audio_track(pc, audio_source, audio_config)
    try:
        await offer(pc, signaling)
        await wait_open(channels, CONNECT_TIMEOUT_S)
        sender = CallSender(encoder, channels, sender_config, on_encoded)
        _start_audio(sender, audio_track)
        await stream(sender, source)
        await asyncio.sleep(DRAIN_S)
    finally:
        await pc.close()
        await signaling.close()
    return {"sender": sender.summary()}


async def receive_call(
    signaling: BaseSignaling,
    receiver_config: ReceiverConfig | None = None,
    sinks: SinksFactory | None = None,
    ice_servers: Sequence[str] = (),
    backend: RefinerBackend | None = None,
    audio_config: AudioConfig | None = None,
    on_audio: Callable[[AudioReceiver], None] | None = None,
) -> dict[str, object]:
    """The receiver's side: answer, then decode and display until the sender hangs up.
    backend: the renderer backend, warmed up before the call (None: made with the decoder).
    on_audio: called with the receiver's audio when the sender sends sound."""
    pc = make_peer_connection(ice_servers)
    collector = ChannelCollector(pc)
    taker = AudioTrackTaker(pc, audio_config)
    receiver_sinks: list[FrameSink] = []
    try:
        await answer(pc, signaling)
        receiver = CallReceiver(
            await collector.wait(CONNECT_TIMEOUT_S), receiver_config, backend=backend
        )
        receiver.audio = taker.audio  # before the sinks, which record sound if there is any
        receiver_sinks = sinks(receiver) if sinks else []
        receiver.sinks.extend(receiver_sinks)
        _add_audio_sinks(taker.audio, receiver_sinks)
        if taker.audio is not None and on_audio is not None:
            on_audio(taker.audio)
        await _receive_until_done(receiver, pc)
    finally:
        if taker.audio is not None:
            await taker.audio.close()
        _close_sinks(receiver_sinks)
        await pc.close()
        await signaling.close()
    return {"receiver": receiver.summary()}
