"""Two peers in one process on loopback WebRTC (iceServers=[]): frames arrive and decode,
fragmented keyframes reassemble, bad messages are counted and survived, and a keyframe
request is answered. The sender's encoder is the real one in its replay mode (landmarks given
in advance), so no face detector runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import av
import numpy as np
import pytest

from talkcodec.audio.sources import SAMPLE_RATE, TimelineSource
from talkcodec.bitstream import (
    KeypointModelId,
)
from talkcodec.codec import StreamEncoder
from talkcodec.config import (
    AudioConfig,
    DecoderConfig,
    EncoderConfig,
    ReceiverConfig,
    SenderConfig,
)
from talkcodec.keypoints.registry import load_keypoint_model
from talkcodec.keypoints.replay import ReplayDetector
from talkcodec.runtime.call import loopback_call
from talkcodec.runtime.receiver import CallReceiver
from talkcodec.runtime.sinks import InputFrames, SideBySideSink
from talkcodec.runtime.sources import ArraySource
from talkcodec.transport.overhead import SCTP_PACKET_OVERHEAD_BYTES
from talkcodec.transport.peer import (
    ChannelCollector,
    connect_in_process,
    create_channels,
    make_peer_connection,
    wait_open,
)
from talkcodec.transport.stats import wall_clock_ms

SIZE = 256
DIMS = 32
FPS = 25.0
REFRESH = 10


GRADIENT = np.stack(
    [*np.mgrid[0:SIZE, 0:SIZE][::-1], np.mgrid[0:SIZE, 0:SIZE].sum(axis=0) // 2], axis=-1
).astype(np.uint8)  # (SIZE, SIZE, 3): x, y and their mean; WebP q100 codes it in about 2.8 kB


def replay_encoder(frames: int = 2000, lowres_px: int = 0) -> StreamEncoder:
    """The real StreamEncoder in its replay mode (no face detector): the landmarks of a random
    walk of the keypoint model, one per frame, on camera frames that are already the crop
    (lowres_px: a hybrid stream)."""
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2).truncated(DIMS)
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(0, model.delta_std * 0.5, (frames, model.num_params)), axis=0)
    landmarks = [model.reconstruct(model.param_mean + step, SIZE) for step in walk]
    config = EncoderConfig(
        size_px=SIZE,
        crop=False,
        keyframe_codec="webp",
        keyframe_quality=100,
        expression_dims=DIMS,
        keypoint_refresh_interval_s=REFRESH / FPS,
        reference_bank_size=1,
        lowres_px=lowres_px,
    )
    return StreamEncoder(config, detector=ReplayDetector(landmarks))


# These tests are about transport: the basic warp renders at once, where the default renderer
# would first load its network (seconds on a fresh machine, longer than these calls).
MESH_WARP = DecoderConfig(renderer="meshwarp")


def _source(seconds: float) -> ArraySource:
    return ArraySource([GRADIENT], FPS, loop=True, max_duration_s=seconds)


def _run(coroutine: Awaitable[dict[str, object]]) -> dict[str, object]:
    return asyncio.run(asyncio.wait_for(coroutine, 60))  # type: ignore[arg-type]


def test_frames_arrive_and_decode_with_fragmented_keyframe() -> None:
    encoder = replay_encoder()
    shown: list[int] = []
    results = _run(
        loopback_call(
            encoder,
            _source(1.2),
            SenderConfig(fragment_bytes=1000),
            ReceiverConfig(decoder=MESH_WARP),
            sinks=lambda receiver: [lambda image, pts: shown.append(image.shape[0])],
        )
    )
    receiver = results["receiver"]
    assert isinstance(receiver, dict)
    assert receiver["decoder"]["keyframes"] == 1
    assert receiver["channels"]["keyframe"]["messages"] >= 3  # the keyframe came in fragments
    assert receiver["frames_displayed"] >= 20 and set(shown) == {SIZE}
    assert receiver["decoder"]["lost_packets"] == 0
    assert receiver["latency_ms"]["median"] < 150
    wire = receiver["channels"]["keypoints"]
    assert (
        wire["wire_bytes"] >= wire["payload_bytes"] + SCTP_PACKET_OVERHEAD_BYTES * wire["messages"]
    )


def test_every_frame_shown_finds_the_crop_it_was_sent_from() -> None:
    """The side-by-side recording pairs each shown frame with the sender's crop by pts: the
    sender reports its crops under the pts the packet carries (a capture time snapped to the
    implied one), so none is missed."""
    encoded: list[int] = []
    shown: list[int] = []
    _run(
        loopback_call(
            replay_encoder(),
            _source(1.2),
            SenderConfig(),
            ReceiverConfig(decoder=MESH_WARP),
            sinks=lambda receiver: [lambda image, pts: shown.append(pts)],
            on_encoded=lambda pts, crop: encoded.append(pts),
        )
    )
    assert len(shown) >= 20 and set(shown) <= set(encoded)


def _lossy_call(seconds: float, redundancy: str, lowres_px: int = 0) -> tuple[dict, dict]:
    """(sender, receiver) summaries of a call that loses 20% of its keypoint messages."""
    results = _run(
        loopback_call(
            replay_encoder(lowres_px=lowres_px),
            _source(seconds),
            SenderConfig(simulate_loss=0.2, loss_seed=3, redundancy=redundancy),
            ReceiverConfig(decoder=MESH_WARP),
        )
    )
    sender, receiver = results["sender"], results["receiver"]
    assert isinstance(sender, dict) and isinstance(receiver, dict)
    return sender, receiver


def test_simulated_loss_is_survived_and_refreshed() -> None:
    sender, receiver = _lossy_call(2.0, redundancy="off")
    assert sender["simulated_keypoint_losses"] > 0
    assert sender["redundancy"]["repeated_packets"] == 0
    # Every lost packet is noticed, but those of a message lost at the very end (a bundle of up
    # to 2 frames at 40 ms): no later packet reveals the gap.
    unnoticed = sender["simulated_keypoint_packets_lost"] - receiver["decoder"]["lost_packets"]
    assert 0 <= unnoticed <= 2
    assert sender["refresh_requests_received"] > 0
    recovery = receiver["loss_recovery_ms"]
    assert recovery["events"] > 0
    # Asked-for refreshes arrive within a few frames, far inside the 1 s refresh interval.
    assert recovery["max"] <= REFRESH * 1000 / FPS


def test_a_hybrid_call_survives_loss_and_restarts_its_lowres_stream() -> None:
    sender, receiver = _lossy_call(2.0, redundancy="off", lowres_px=64)
    decoder = receiver["decoder"]
    assert sender["simulated_keypoint_losses"] > 0 and sender["refresh_requests_received"] > 0
    # Pictures after a loss wait for the IDR the refresh brings, then decode again.
    assert decoder["lowres_waiting"] > 0 and decoder["lowres_corrupt"] == 0
    assert decoder["lowres_pictures"] > decoder["lowres_waiting"]
    # A picture in every lowres_every_frames-th keypoint packet (and at each refresh),
    # decodable or not.
    arrived = decoder["keypoint_frames"] + decoder["undecodable_packets"]
    every = EncoderConfig().lowres_every_frames
    pictures = decoder["lowres_pictures"] + decoder["lowres_waiting"]
    assert arrived // every - 2 <= pictures <= arrived


def test_redundancy_recovers_lost_messages() -> None:
    """Each message repeats the previous one's packets: at 20% loss only messages lost twice
    in a row cost frames, and the playout delays by a message so recovered frames are shown."""
    sender, receiver = _lossy_call(3.0, redundancy="on")
    decoder = receiver["decoder"]
    lost = sender["simulated_keypoint_packets_lost"]
    assert lost > 5 and sender["redundancy"]["on"]
    # Every packet decoded, lost (the first of two messages lost running) or undecodable (the
    # second's copies and what follows until the refresh), but the last message's.
    accounted = (
        decoder["keypoint_frames"] + decoder["lost_packets"] + decoder["undecodable_packets"]
    )
    assert sender["frames_encoded"] - 2 <= accounted <= sender["frames_encoded"]
    assert decoder["recovered_packets"] >= 0.5 * lost
    assert decoder["repeated_packets"] > 0 and decoder["late_packets"] == 0
    assert receiver["playout"]["extra_delay_ms"] >= 1000 / FPS


async def _with_pair(
    scenario: Callable[[StreamEncoder, object, CallReceiver], Awaitable[None]],
    encoder: StreamEncoder,
    receiver_config: ReceiverConfig,
    backend: object = None,
) -> CallReceiver:
    from talkcodec.runtime.sender import CallSender

    sender_pc, receiver_pc = make_peer_connection(), make_peer_connection()
    channels = create_channels(sender_pc)
    collector = ChannelCollector(receiver_pc)
    try:
        await connect_in_process(sender_pc, receiver_pc)
        await wait_open(channels, 20)
        receiver = CallReceiver(await collector.wait(20), receiver_config, backend=backend)  # type: ignore[arg-type]
        sender = CallSender(encoder, channels, SenderConfig(fragment_bytes=1000))
        running = asyncio.create_task(receiver.run())
        await scenario(encoder, sender, receiver)
        receiver.stop()
        await running
    finally:
        await sender_pc.close()
        await receiver_pc.close()
    return receiver


async def _send_frames(sender: object, count: int) -> None:
    for _ in range(count):
        for packet in sender.encoder.encode(GRADIENT, wall_clock_ms()):  # type: ignore[attr-defined]
            sender._send_packet(packet)  # type: ignore[attr-defined]
        await asyncio.sleep(1 / FPS)


def test_bad_messages_are_counted_and_survived() -> None:
    async def scenario(encoder: StreamEncoder, sender: object, receiver: CallReceiver) -> None:
        channels = sender.channels  # type: ignore[attr-defined]
        sender.send_header()  # type: ignore[attr-defined]
        await _send_frames(sender, 3)
        channels.keypoints.send(b"\x01")  # truncated packet
        # a packet of unknown kind 3 behind a good one (first in a message, 3 is a prefix)
        channels.keypoints.send(bytes.fromhex("38 00 00000000 01 aa c0 00"))
        channels.keypoints.send(b"\x02" * 3000)  # over the receiver's size limit
        channels.keypoints.send("text")  # not binary
        channels.keyframe.send(b"\x00\x01\x00\x05\x00\x02x")  # fragment index >= count
        channels.control.send(b"\xff")  # unknown control kind
        await asyncio.sleep(0.3)
        shown_before = len(receiver.stats.displayed_pts_ms)
        await _send_frames(sender, 5)
        await asyncio.sleep(0.3)
        assert len(receiver.stats.displayed_pts_ms) > shown_before

    receiver = asyncio.run(
        asyncio.wait_for(
            _with_pair(
                scenario,
                replay_encoder(),
                ReceiverConfig(decoder=MESH_WARP, max_message_bytes=2000),
            ),
            60,
        )
    )
    assert receiver.stats.dropped == {
        "oversize": 1,
        "text_message": 1,
        "bad_fragment": 1,
        "bad_control": 1,
    }
    assert receiver.decoder is not None
    assert receiver.decoder.stats.corrupt == 1 and receiver.decoder.stats.unknown_kind == 1


def test_keyframe_request_is_answered() -> None:
    """The sender starts without a keyframe; the receiver asks for one and then renders."""

    async def scenario(encoder: StreamEncoder, sender: object, receiver: CallReceiver) -> None:
        sender.send_header()  # type: ignore[attr-defined]
        await _send_frames(sender, 20)  # 0.8 s: the receiver asks after 0.2 s

    encoder = replay_encoder()
    # The stream's first keyframe is made and never sent: the receiver starts without one.
    encoder.encode(GRADIENT, 0)
    receiver = asyncio.run(
        asyncio.wait_for(
            _with_pair(
                scenario,
                encoder,
                ReceiverConfig(decoder=MESH_WARP, keyframe_request_interval_s=0.2),
            ),
            60,
        )
    )
    assert encoder.keyframe_reasons["request"] >= 1 and receiver.stats.keyframe_requests >= 1
    assert receiver.decoder is not None and receiver.decoder.stats.keyframes >= 1
    assert len(receiver.stats.displayed_pts_ms) > 0


@pytest.mark.parametrize("flags", [["--camera", "7"], ["--video", "/nonexistent/clip.mp4"]])
def test_call_without_its_input_gives_one_line_error(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from talkcodec.cli import main

    assert main(["call", *flags, "--headless", "-o", "/tmp/never.mp4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    expected = {
        "--camera": "talkcodec: error: cannot open camera 7 (no such device, or it is busy)",
        "--video": "talkcodec: error: no such input file: /nonexistent/clip.mp4",
    }[flags[0]]
    assert err[0] == expected


def test_the_decoder_is_made_off_the_event_loop_with_the_warmed_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Making a decoder loads weights and networks: the receiver makes it in its worker
    thread, never on the loop serving the connection, and hands it the backend it was given."""
    import threading

    from talkcodec.runtime import receiver as receiver_module

    made: list[tuple[str, object]] = []
    real = receiver_module.StreamDecoder

    def recording(header: object, config: object, backend: object = None) -> object:
        made.append((threading.current_thread().name, backend))
        return real(header, config, backend)  # type: ignore[arg-type]

    monkeypatch.setattr(receiver_module, "StreamDecoder", recording)
    warmed = object()

    async def scenario(encoder: StreamEncoder, sender: object, receiver: CallReceiver) -> None:
        sender.send_header()  # type: ignore[attr-defined]
        await _send_frames(sender, 5)

    receiver = asyncio.run(
        asyncio.wait_for(
            _with_pair(scenario, replay_encoder(), ReceiverConfig(decoder=MESH_WARP), warmed), 60
        )
    )
    assert receiver.decoder is not None
    assert [backend for _, backend in made] == [warmed]
    assert made[0][0].startswith("talkcodec-render")


def test_a_keyframe_that_waits_for_a_slow_decoder_is_not_asked_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keyframe arrives while the decoder is still being made (loading the renderer takes
    seconds on a fresh machine): the receiver waits for it instead of asking for another."""
    import time as time_module

    from talkcodec.runtime import receiver as receiver_module

    real = receiver_module.StreamDecoder

    def slow(header: object, config: object, backend: object = None) -> object:
        time_module.sleep(0.8)  # four request intervals
        return real(header, config, backend)  # type: ignore[arg-type]

    monkeypatch.setattr(receiver_module, "StreamDecoder", slow)

    async def scenario(encoder: StreamEncoder, sender: object, receiver: CallReceiver) -> None:
        sender.send_header()  # type: ignore[attr-defined]
        await _send_frames(sender, 30)  # 1.2 s, the keyframe with the first

    encoder = replay_encoder()
    config = ReceiverConfig(decoder=MESH_WARP, keyframe_request_interval_s=0.2)
    receiver = asyncio.run(asyncio.wait_for(_with_pair(scenario, encoder, config), 60))
    assert receiver.decoder is not None and receiver.decoder.stats.keyframes == 1
    assert receiver.stats.keyframe_requests == 0
    assert encoder.keyframe_reasons.get("request", 0) == 0
    assert len(receiver.stats.displayed_pts_ms) > 0


def test_a_sender_slow_to_send_its_first_frame_is_not_asked_for_a_keyframe() -> None:
    """A sender's first frames can take a second (its models warming up): until keypoints
    come, the receiver has nothing that needs a keyframe and does not ask for one."""

    async def scenario(encoder: StreamEncoder, sender: object, receiver: CallReceiver) -> None:
        sender.send_header()  # type: ignore[attr-defined]
        await asyncio.sleep(0.8)  # four request intervals before the first frame
        await _send_frames(sender, 10)

    encoder = replay_encoder()
    config = ReceiverConfig(decoder=MESH_WARP, keyframe_request_interval_s=0.2)
    receiver = asyncio.run(asyncio.wait_for(_with_pair(scenario, encoder, config), 60))
    assert receiver.stats.keyframe_requests == 0
    assert encoder.keyframe_reasons.get("request", 0) == 0
    assert receiver.decoder is not None and receiver.decoder.stats.keyframes == 1


def test_a_gan_decoder_renders_with_the_backend_it_is_given() -> None:
    from talkcodec.codec import StreamDecoder
    from talkcodec.generator.backends.base import RefinerBackend

    class Ready(RefinerBackend):
        name = "torch"

        def encode_reference(self, reference: np.ndarray) -> object:
            raise AssertionError("not called here")

        def refine(self, *inputs: object) -> np.ndarray:  # type: ignore[override]
            raise AssertionError("not called here")

        def describe(self) -> str:
            return "ready"

    ready = Ready(SIZE, 3)
    decoder = StreamDecoder(replay_encoder().header, DecoderConfig(renderer="gan"), ready)
    assert decoder.renderer.backend_for(SIZE) is ready  # type: ignore[attr-defined]


class _Beeps(TimelineSource):
    """A 300 Hz tone for the first half of every 400 ms of the source's timeline."""

    def samples(self, start: int, count: int) -> np.ndarray:
        index = np.arange(start, start + count)
        tone = np.sin(2 * np.pi * 300 * index / SAMPLE_RATE) * 8000
        return np.where(index % (SAMPLE_RATE * 2 // 5) < SAMPLE_RATE // 5, tone, 0).astype(np.int16)


def _audio_call(tmp_path: Path, audio: AudioConfig) -> dict[str, object]:
    source = _source(3.0)
    return _run(
        loopback_call(
            replay_encoder(),
            source,
            SenderConfig(),
            ReceiverConfig(decoder=MESH_WARP),
            sinks=lambda receiver: [
                SideBySideSink(tmp_path / "call.mp4", InputFrames(), SIZE, FPS, None, audio=True)
            ],
            audio_source=_Beeps(source),
            audio_config=audio,
        )
    )


def test_audio_arrives_in_sync_and_lands_in_the_recording(tmp_path: Path) -> None:
    results = _audio_call(tmp_path, AudioConfig())
    sender, receiver = results["sender"], results["receiver"]
    assert isinstance(sender, dict) and isinstance(receiver, dict)
    sent, got = sender["audio"], receiver["audio"]
    assert sent["packets_sent"] >= 50  # ~3 s of 40 ms packets
    assert got["packets_received"] >= sent["packets_sent"] - 3  # the last may be in flight
    assert got["frames_played"] >= got["packets_received"] - 3
    assert got["wire_kbit_s"] > got["kbit_s"] > 0
    offset = receiver["av_offset_ms"]
    assert offset["samples"] >= 40
    assert -45 <= offset["median"] <= 45
    with av.open(str(tmp_path / "call.mp4")) as container:
        audio = container.streams.audio[0]
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio)])
    assert len(pcm) / SAMPLE_RATE > 2.0
    assert np.abs(pcm).max() > 0.1  # the beeps, not silence


def test_lost_audio_packets_are_concealed(tmp_path: Path) -> None:
    results = _audio_call(tmp_path, AudioConfig(simulate_loss=0.2, loss_seed=5))
    sender, receiver = results["sender"], results["receiver"]
    assert isinstance(sender, dict) and isinstance(receiver, dict)
    dropped = sender["audio"]["simulated_losses"]
    assert dropped >= 5
    # Drops are concealed, except those after the last packet the receiver played (the sender
    # keeps sending while the call closes; a gap at the end is a pause, not a loss).
    concealed_frames = receiver["audio"]["concealed_ms"] / 40
    assert 0.6 * dropped <= concealed_frames <= dropped
    assert receiver["audio"]["frames_played"] >= sender["audio"]["packets_sent"] - 3
