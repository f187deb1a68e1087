"""StreamDecoder on synthetic streams: losses, late and corrupt packets, keyframe handling."""

from __future__ import annotations

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
from talkcodec.codec import StreamDecoder
from talkcodec.entropy.keypoints import KeypointEncoder
from talkcodec.keyframe import WebPCodec
from talkcodec.keypoints.registry import load_keypoint_model

SIZE = 256
DIMS = 32
STEP_PX = 0.3
REFRESH = 10


@pytest.fixture(scope="module")
def header() -> StreamHeader:
    return StreamHeader(
        SIZE, SIZE, 25000, KeyframeCodecId.WEBP, KeypointModelId.MEDIAPIPE_478_V1, 300, DIMS
    )


def _params(count: int, seed: int = 0) -> list[np.ndarray]:
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V1).truncated(DIMS)
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, model.delta_std * 0.5, (count, model.num_params)), axis=0)
    return list(model.param_mean + walk)


def _stream(count: int) -> list[Packet]:
    """A keyframe then `count` keypoint packets, as StreamEncoder would send them."""
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V1).truncated(DIMS)
    encoder = KeypointEncoder(model, STEP_PX, REFRESH)
    params = _params(count)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    image = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
    keyframe = KeyframePayload(
        KeyframeCodecId.WEBP, 0, encoder.encode_intra(params[0]), WebPCodec().compress(image)
    )
    packets = [Packet(PacketKind.KEYFRAME, 0, 0, bytes(keyframe), PacketFlags.INTRA)]
    for seq, frame_params in enumerate(params):
        coded = encoder.encode(frame_params)
        flags = PacketFlags.INTRA if coded.intra else PacketFlags(0)
        packets.append(Packet(PacketKind.KEYPOINTS, seq, seq * 40, coded.payload, flags))
    return packets


def test_every_keypoint_packet_renders_a_frame(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    frames = [decoder.receive(bytes(packet)) for packet in _stream(25)]
    assert frames[0] is None  # the keyframe itself renders nothing
    assert all(frame is not None and frame.shape == (SIZE, SIZE, 3) for frame in frames[1:])
    assert decoder.stats.keyframes == 1 and decoder.stats.rendered == 25


def test_keypoints_before_a_keyframe_render_nothing(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    packets = _stream(5)
    assert all(decoder.receive(bytes(packet)) is None for packet in packets[1:])
    assert decoder.needs_keyframe
    assert decoder.stats.keypoint_frames == 5


def test_lost_packet_stops_rendering_until_the_next_refresh(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    packets = _stream(2 * REFRESH + 1)
    del packets[1 + 3]  # keypoint packet seq 3 is lost
    rendered_seqs = []
    for packet in packets:
        if decoder.receive(bytes(packet)) is not None:
            rendered_seqs.append(packet.seq)
    assert rendered_seqs == [0, 1, 2, *range(REFRESH, 2 * REFRESH + 1)]
    assert decoder.stats.lost == 1
    assert decoder.stats.undecodable == REFRESH - 4


def test_late_packet_is_dropped_and_counted(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    packets = _stream(6)
    order = [0, 1, 2, 4, 3, 5, 6]  # seq 2 arrives after seq 3
    results = [decoder.receive(bytes(packets[i])) for i in order]
    assert results[4] is None
    assert decoder.stats.late == 1 and decoder.stats.lost == 1


@pytest.mark.parametrize(
    ("message", "counter"),
    [
        (b"\x01\x00", "corrupt"),
        (bytes(Packet(PacketKind.KEYPOINTS, 0, 0, b""))[:3], "corrupt"),
        (b"\x09\x00\x00\x00\x00\x00\x00\x00payload", "unknown_kind"),
        (bytes(Packet(PacketKind.KEYFRAME, 0, 0, b"\x01\x00\x00\x00not an image")), "corrupt"),
    ],
)
def test_malformed_messages_are_dropped_and_counted(
    header: StreamHeader, message: bytes, counter: str
) -> None:
    decoder = StreamDecoder(header)
    assert decoder.receive(message) is None
    assert getattr(decoder.stats, counter) == 1
    # The stream still decodes afterwards.
    frames = [decoder.receive(bytes(packet)) for packet in _stream(3)]
    assert frames[-1] is not None


def test_random_messages_never_raise(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    rng = np.random.default_rng(1)
    packets = _stream(3)
    for _ in range(300):
        base = bytearray(bytes(packets[rng.integers(len(packets))]))
        base[rng.integers(len(base))] ^= 1 << int(rng.integers(8))
        decoder.receive(bytes(base))
        decoder.receive(rng.bytes(int(rng.integers(0, 40))))


def test_keyframe_of_the_wrong_size_is_rejected(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    small = WebPCodec().compress(np.zeros((64, 64, 3), np.uint8))
    payload = KeyframePayload(KeyframeCodecId.WEBP, 0, b"", small)
    message = bytes(Packet(PacketKind.KEYFRAME, 0, 0, bytes(payload)))
    assert decoder.receive(message) is None
    assert decoder.stats.corrupt == 1 and decoder.needs_keyframe
