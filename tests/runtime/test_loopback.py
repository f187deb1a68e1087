"""Two peers in one process on loopback WebRTC (iceServers=[]): frames arrive and decode,
fragmented keyframes reassemble, bad messages are counted and survived, and a keyframe
request is answered. The sender's encoder is a stand-in that replays a synthetic stream, so no
face detector runs."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from talkcodec.bitstream import (
    KeyframeCodecId,
    KeyframePayload,
    KeypointModelId,
    Packet,
    PacketFlags,
    PacketKind,
    StreamHeader,
)
from talkcodec.config import DecoderConfig
from talkcodec.entropy.keypoints import KeypointEncoder
from talkcodec.keyframe import WebPCodec
from talkcodec.keypoints.registry import load_keypoint_model
from talkcodec.runtime.call import loopback_call
from talkcodec.runtime.receiver import CallReceiver, ReceiverConfig
from talkcodec.runtime.sender import SenderConfig
from talkcodec.runtime.sources import ArraySource
from talkcodec.transport.peer import (
    ChannelCollector,
    connect_in_process,
    create_channels,
    make_peer_connection,
    wait_open,
)

SIZE = 256
DIMS = 32
FPS = 25.0
REFRESH = 10


class ReplayEncoder:
    """Stands in for StreamEncoder: a keyframe when wanted, then predicted keypoint packets
    of a random walk (intra every REFRESH frames, or when a refresh is requested)."""

    def __init__(self, keyframe_at_start: bool = True) -> None:
        self.model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V1).truncated(DIMS)
        self.header = StreamHeader(
            SIZE, SIZE, 25000, KeyframeCodecId.WEBP, KeypointModelId.MEDIAPIPE_478_V1, 300, DIMS
        )
        self._coder = KeypointEncoder(self.model, 0.3, REFRESH)
        self._rng = np.random.default_rng(0)
        self._params = self.model.param_mean.copy()
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        self.image = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
        self.keyframe_wanted = keyframe_at_start
        self.refresh_wanted = False
        self.keyframe_reasons: Counter[str] = Counter()
        self.last_crop: np.ndarray | None = None
        self.keyframe_seq = 0
        self.keypoint_seq = 0
        self.keyframe_requests = 0

    def request_keyframe(self, reason: str = "request") -> None:
        self.keyframe_requests += 1
        self.keyframe_wanted = True

    def request_refresh(self) -> None:
        self.refresh_wanted = True

    def encode(self, frame: np.ndarray, pts_ms: int) -> list[Packet]:
        self.last_crop = self.image
        self._params = self._params + self._rng.normal(0, self.model.delta_std * 0.5)
        packets = []
        if self.keyframe_wanted:
            self.keyframe_wanted = False
            self.keyframe_reasons["start"] += 1
            payload = KeyframePayload(
                KeyframeCodecId.WEBP,
                0,
                self._coder.encode_intra(self._params),
                WebPCodec(quality=100).compress(self.image),  # about 2.8 kB,
            )
            packets.append(
                Packet(
                    PacketKind.KEYFRAME,
                    self.keyframe_seq,
                    pts_ms,
                    bytes(payload),
                    PacketFlags.INTRA,
                )  # fmt: skip
            )
            self.keyframe_seq += 1
        intra = bool(packets) or self.refresh_wanted
        coded = self._coder.encode(self._params, force_intra=intra)
        self.refresh_wanted = False
        flags = PacketFlags.INTRA if coded.intra else PacketFlags(0)
        packets.append(
            Packet(PacketKind.KEYPOINTS, self.keypoint_seq, pts_ms, coded.payload, flags)
        )
        self.keypoint_seq += 1
        return packets


# These tests are about transport: the basic warp renders at once, where the default renderer
# would first load its network (seconds on a fresh machine, longer than these calls).
MESH_WARP = DecoderConfig(renderer="meshwarp")


def _source(seconds: float) -> ArraySource:
    blank = np.zeros((8, 8, 3), np.uint8)
    return ArraySource([blank], FPS, loop=True, max_duration_s=seconds)


def _run(coroutine: Awaitable[dict[str, object]]) -> dict[str, object]:
    return asyncio.run(asyncio.wait_for(coroutine, 60))  # type: ignore[arg-type]


def test_frames_arrive_and_decode_with_fragmented_keyframe() -> None:
    encoder = ReplayEncoder()
    shown: list[int] = []
    results = _run(
        loopback_call(
            encoder,  # type: ignore[arg-type]
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
    assert wire["wire_bytes"] > wire["payload_bytes"] + 90 * wire["messages"]


def test_simulated_loss_is_survived_and_refreshed() -> None:
    results = _run(
        loopback_call(
            ReplayEncoder(),  # type: ignore[arg-type]
            _source(2.0),
            SenderConfig(simulate_loss=0.2, loss_seed=3),
            ReceiverConfig(decoder=MESH_WARP),
        )
    )
    sender, receiver = results["sender"], results["receiver"]
    assert isinstance(sender, dict) and isinstance(receiver, dict)
    assert sender["simulated_keypoint_losses"] > 0
    assert receiver["decoder"]["lost_packets"] == sender["simulated_keypoint_losses"]
    assert sender["refresh_requests_received"] > 0
    recovery = receiver["loss_recovery_ms"]
    assert recovery["events"] > 0
    # Asked-for refreshes arrive within a few frames, far inside the 1 s refresh interval.
    assert recovery["max"] <= REFRESH * 1000 / FPS


async def _with_pair(
    scenario: Callable[[ReplayEncoder, object, CallReceiver], Awaitable[None]],
    encoder: ReplayEncoder,
    receiver_config: ReceiverConfig,
) -> CallReceiver:
    from talkcodec.runtime.sender import CallSender

    sender_pc, receiver_pc = make_peer_connection(), make_peer_connection()
    channels = create_channels(sender_pc)
    collector = ChannelCollector(receiver_pc)
    try:
        await connect_in_process(sender_pc, receiver_pc)
        await wait_open(channels, 20)
        receiver = CallReceiver(await collector.wait(20), receiver_config)
        sender = CallSender(encoder, channels, SenderConfig(fragment_bytes=1000))  # type: ignore[arg-type]
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
        for packet in sender.encoder.encode(np.zeros((8, 8, 3), np.uint8), 0):  # type: ignore[attr-defined]
            sender._send_packet(packet)  # type: ignore[attr-defined]
        await asyncio.sleep(1 / FPS)


def test_bad_messages_are_counted_and_survived() -> None:
    async def scenario(encoder: ReplayEncoder, sender: object, receiver: CallReceiver) -> None:
        channels = sender.channels  # type: ignore[attr-defined]
        sender.send_header()  # type: ignore[attr-defined]
        await _send_frames(sender, 3)
        channels.keypoints.send(b"\x01\x00")  # truncated packet
        channels.keypoints.send(b"\x09\x00\x00\x00\x00\x00\x00\x00payload")  # unknown kind
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
                scenario, ReplayEncoder(), ReceiverConfig(decoder=MESH_WARP, max_message_bytes=2000)
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

    async def scenario(encoder: ReplayEncoder, sender: object, receiver: CallReceiver) -> None:
        sender.send_header()  # type: ignore[attr-defined]
        await _send_frames(sender, 20)  # 0.8 s: the receiver asks after 0.2 s

    encoder = ReplayEncoder(keyframe_at_start=False)
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
    assert encoder.keyframe_requests >= 1 and receiver.stats.keyframe_requests >= 1
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
