"""StreamDecoder on synthetic streams: losses, late and corrupt packets, keyframe handling."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from talkcodec import codec
from talkcodec.bitstream import (
    DEFAULT_BANK_SIZE,
    HybridKeypoints,
    KeyframeCodecId,
    KeyframePayload,
    KeypointModelId,
    LowresPicture,
    Packet,
    PacketFlags,
    PacketKind,
    PacketWriter,
    StreamHeader,
)
from talkcodec.codec import ByteBudget, DecodedFrame, StreamDecoder, StreamEncoder
from talkcodec.config import (
    DEFAULT_REFERENCE_THRESHOLD,
    HYBRID_BANK_SIZE,
    HYBRID_KEYFRAME_QUALITIES,
    DecoderConfig,
    EncoderConfig,
)
from talkcodec.entropy.keypoints import KeypointEncoder
from talkcodec.keyframe import WebPCodec
from talkcodec.keypoints.base import LandmarkDetector
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.keypoints.registry import load_keypoint_model

SIZE = 256
DIMS = 32
STEP_PX = 0.3
REFRESH = 10
MESH_WARP = DecoderConfig(renderer="meshwarp")


@pytest.fixture(scope="module")
def header() -> StreamHeader:
    return StreamHeader(
        SIZE, SIZE, 25000, KeyframeCodecId.WEBP, KeypointModelId.MEDIAPIPE_478_V2, 300, DIMS
    )


def _params(count: int, seed: int = 0) -> list[np.ndarray]:
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2).truncated(DIMS)
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, model.delta_std * 0.5, (count, model.num_params)), axis=0)
    return list(model.param_mean + walk)


def _stream(count: int) -> list[Packet]:
    """A keyframe then `count` keypoint packets, as StreamEncoder would send them."""
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2).truncated(DIMS)
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
    frames = [decoder.receive_packet(packet) for packet in _stream(25)]
    assert frames[0] is None  # the keyframe itself renders nothing
    assert all(frame is not None and frame.shape == (SIZE, SIZE, 3) for frame in frames[1:])
    assert decoder.stats.keyframes == 1 and decoder.stats.rendered == 25


def test_keypoints_before_a_keyframe_render_nothing(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    packets = _stream(5)
    assert all(decoder.receive_packet(packet) is None for packet in packets[1:])
    assert decoder.needs_keyframe
    assert decoder.stats.keypoint_frames == 5


def test_lost_packet_stops_rendering_until_the_next_refresh(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    packets = _stream(2 * REFRESH + 1)
    del packets[1 + 3]  # keypoint packet seq 3 is lost
    rendered_seqs = []
    for packet in packets:
        if decoder.receive_packet(packet) is not None:
            rendered_seqs.append(packet.seq)
    assert rendered_seqs == [0, 1, 2, *range(REFRESH, 2 * REFRESH + 1)]
    assert decoder.stats.lost == 1
    assert decoder.stats.undecodable == REFRESH - 4


def test_late_packet_is_dropped_and_counted(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    packets = _stream(6)
    order = [0, 1, 2, 4, 3, 5, 6]  # seq 2 arrives after seq 3
    results = [decoder.receive_packet(packets[i]) for i in order]
    assert results[4] is None
    assert decoder.stats.late == 1 and decoder.stats.lost == 1


def _message(header: StreamHeader, packet: Packet) -> bytes:
    """`packet` as the first message of a stream with `header`."""
    return PacketWriter(header).pack(packet)


@pytest.mark.parametrize(
    ("message", "counter"),
    [
        (b"\x01", "corrupt"),
        (bytes.fromhex("30 00 0000"), "corrupt"),  # a timed intra packet, cut short
        (bytes.fromhex("00 05 aa"), "undecodable"),  # no time, and none earlier to imply it
        (bytes.fromhex("38 00 00000000 01 aa c0 00"), "unknown_kind"),  # kind 3 inside
        (b"\xc0\x00payload", "corrupt"),  # a repeat prefix of no packets
        (Packet(PacketKind.KEYFRAME, 0, 0, b"\x01\x00\x00\x00not an image"), "corrupt"),
        (Packet(PacketKind.KEYFRAME, 0, 0, b"\x01\x00"), "corrupt"),
    ],
)
def test_malformed_messages_are_dropped_and_counted(
    header: StreamHeader, message: bytes | Packet, counter: str
) -> None:
    decoder = StreamDecoder(header)
    if isinstance(message, Packet):
        message = _message(header, message)
    assert decoder.receive(message) is None
    assert getattr(decoder.stats, counter) == 1
    # The stream still decodes afterwards.
    frames = [decoder.receive_packet(packet) for packet in _stream(3)]
    assert frames[-1] is not None


def test_random_messages_never_raise(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    rng = np.random.default_rng(1)
    writer = PacketWriter(header)
    messages = [writer.pack(packet) for packet in _stream(3)]
    for _ in range(300):
        base = bytearray(messages[rng.integers(len(messages))])
        base[rng.integers(len(base))] ^= 1 << int(rng.integers(8))
        decoder.receive(bytes(base))
        decoder.receive(rng.bytes(int(rng.integers(0, 40))))


def test_keyframe_of_the_wrong_size_is_rejected(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    small = WebPCodec().compress(np.zeros((64, 64, 3), np.uint8))
    payload = KeyframePayload(KeyframeCodecId.WEBP, 0, b"", small)
    message = _message(header, Packet(PacketKind.KEYFRAME, 0, 0, bytes(payload)))
    assert decoder.receive(message) is None
    assert decoder.stats.corrupt == 1 and decoder.needs_keyframe


def test_gc_keyframes_decode_with_one_codec_made_before_the_first(
    header: StreamHeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GC stream's decoder loads the weights when it is made (not at the first keyframe,
    mid-call) and reuses that codec for every keyframe."""
    made: list[int] = []
    original = codec.keyframe_codec_for_wire_id
    monkeypatch.setattr(
        codec,
        "keyframe_codec_for_wire_id",
        lambda wire_id: made.append(wire_id) or original(wire_id),
    )
    gc_header = replace(header, keyframe_codec=KeyframeCodecId.GC)
    decoder = StreamDecoder(gc_header, DecoderConfig(renderer="meshwarp"))
    assert made == [KeyframeCodecId.GC]
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2).truncated(DIMS)
    encoder = KeypointEncoder(model, STEP_PX, REFRESH)
    gc = decoder._keyframe_codec(KeyframeCodecId.GC)
    image = np.full((SIZE, SIZE, 3), 90, dtype=np.uint8)
    for seq, reference_id in enumerate((0, 1)):
        payload = KeyframePayload(
            KeyframeCodecId.GC,
            reference_id,
            encoder.encode_intra(_params(1)[0]),
            gc.compress(image),
        )
        decoder.receive_packet(Packet(PacketKind.KEYFRAME, seq, 0, bytes(payload)))
    assert decoder.stats.keyframes == 2 and decoder.stats.corrupt == 0
    assert made == [KeyframeCodecId.GC]


# -- the reference bank -------------------------------------------------------------------------


def _keyframe(params: np.ndarray, reference_id: int, seq: int, value: int = 128) -> Packet:
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2).truncated(DIMS)
    encoder = KeypointEncoder(model, STEP_PX, REFRESH)
    image = np.full((SIZE, SIZE, 3), value, dtype=np.uint8)
    payload = KeyframePayload(
        KeyframeCodecId.WEBP,
        reference_id,
        encoder.encode_intra(params),
        WebPCodec().compress(image),
    )
    return Packet(PacketKind.KEYFRAME, seq, 0, bytes(payload), PacketFlags.INTRA)


def test_keyframe_outside_the_bank_is_dropped_as_corrupt(header: StreamHeader) -> None:
    decoder = StreamDecoder(replace(header, reference_bank_size=2))
    params = _params(1)[0]
    assert decoder.receive_packet(_keyframe(params, 2, 0)) is None
    assert decoder.stats.corrupt == 1 and decoder.stats.keyframes == 0 and decoder.needs_keyframe
    decoder.receive_packet(_keyframe(params, 1, 1))
    assert decoder.stats.keyframes == 1 and not decoder.needs_keyframe


def test_keyframes_fill_the_slots_they_name(header: StreamHeader) -> None:
    decoder = StreamDecoder(header)
    packets = _stream(3)
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2).truncated(DIMS)
    turned = _params(1)[0].copy()
    turned[1] += 0.5  # a head turn of about 30 degrees
    decoder.receive_packet(packets[0])
    decoder.receive_packet(_keyframe(turned, 3, 1, value=250))
    decoder.receive_packet(packets[1])
    assert decoder.renderer.selected_reference_id == 0
    rendered = decoder.render(DecodedFrame(model.reconstruct(turned, SIZE), 40, 1))
    assert decoder.renderer.selected_reference_id == 3 and rendered[128, 128, 0] > 240
    decoder.receive_packet(_keyframe(_params(1)[0], 0, 2))  # a fresh start empties the bank
    decoder.render(DecodedFrame(model.reconstruct(turned, SIZE), 80, 2))
    assert decoder.renderer.selected_reference_id == 0


class _ScriptedDetector(LandmarkDetector):
    """Returns prepared landmarks, one per frame, whatever the image shows."""

    name = "scripted"
    num_face_points = 478

    def __init__(self, faces: list[Landmarks]) -> None:
        self._faces = iter(faces)

    def detect(self, image: np.ndarray) -> Landmarks | None:
        return next(self._faces)


def _talking_head(count: int) -> list[Landmarks]:
    """Landmarks of a head that turns from side to side and moves its face, at 25 fps."""
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2)
    rng = np.random.default_rng(3)
    faces = []
    for index, walk in enumerate(np.cumsum(rng.normal(0, 0.15, (count, 8)), axis=0)):
        params = model.param_mean.copy()
        params[1] += 0.4 * np.sin(2 * np.pi * index / 50)  # yaw, +-23 degrees every 2 s
        params[6:14] += walk * model.param_std[6:14]  # the first 8 expression directions
        faces.append(model.reconstruct(params, SIZE))
    return faces


def _run_scripted(
    config: EncoderConfig, count: int
) -> tuple[StreamEncoder, list[int | None], list[int | None], list[tuple[int, int]]]:
    """Send `count` frames of the scripted talking head and decode each at once.

    Returns the encoder, the sender's and the receiver's reference choice of each frame, and
    the (slot, pts_ms) of every keyframe.
    """
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_talking_head(count)))
    # The mesh warp: reference choice does not depend on the renderer, and it is the fastest.
    # The receiver's bank size comes from the stream header.
    decoder = StreamDecoder(encoder.header, DecoderConfig(renderer="meshwarp"))
    assert decoder.renderer.bank_size == config.reference_bank_size
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    image = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
    sender_choices, receiver_choices, keyframes = [], [], []
    for index in range(count):
        for packet in encoder.encode(image, index * 40):
            if packet.kind is PacketKind.KEYFRAME:
                reference_id = KeyframePayload.parse(packet.payload).reference_id
                keyframes.append((reference_id, packet.pts_ms))
            decoder.receive_packet(packet)
        sender_choices.append(encoder.selected_reference_id)
        receiver_choices.append(decoder.renderer.selected_reference_id)
    assert decoder.stats.rendered == count
    return encoder, sender_choices, receiver_choices, keyframes


def test_sender_and_receiver_choose_the_same_reference() -> None:
    config = EncoderConfig(
        crop=False, reference_bank_size=3, reference_threshold=1.0, min_reference_interval_s=0.2
    )
    encoder, sender, receiver, keyframes = _run_scripted(config, 100)
    slots = [reference_id for reference_id, _ in keyframes]
    assert sender == receiver
    assert encoder.keyframe_reasons == {"start": 1, "reference": len(slots) - 1}
    assert slots[0] == 0 and len(slots) >= 5  # more references than slots: some were replaced
    assert set(slots[1:]) == {1, 2} and set(sender) == {0, 1, 2}


def test_the_reference_threshold_defaults_by_the_references_codec() -> None:
    """A GC stream's cheap GC references go at a smaller distance than WebP or JPEG ones (and
    than GC ones in a WebP stream); a given threshold wins."""
    assert EncoderConfig().reference_threshold_used == DEFAULT_REFERENCE_THRESHOLD == 2.5
    assert EncoderConfig(keyframe_codec="jpeg").reference_threshold_used == 2.5
    assert EncoderConfig(keyframe_codec="gc").reference_threshold_used == 2.0
    assert EncoderConfig(reference_codec="gc").reference_threshold_used == 2.5  # a WebP stream
    assert (
        EncoderConfig(keyframe_codec="gc", reference_codec="webp").reference_threshold_used == 2.5
    )
    assert EncoderConfig(keyframe_codec="gc", reference_threshold=3.0).reference_threshold_used == 3
    with pytest.raises(ValueError, match="^reference_threshold must be > 0, got 0$"):
        EncoderConfig(reference_threshold=0)


def test_references_may_use_their_own_codec_and_the_receiver_decodes_each() -> None:
    config = EncoderConfig(
        crop=False,
        reference_bank_size=3,
        reference_threshold=1.0,
        min_reference_interval_s=0.2,
        reference_codec="jpeg",
        reference_quality=40,
    )
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_talking_head(60)))
    decoder = StreamDecoder(encoder.header, DecoderConfig(renderer="meshwarp"))
    assert encoder.header.keyframe_codec is KeyframeCodecId.AV1  # the hybrid default's
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    codecs = {}
    for index in range(60):
        for packet in encoder.encode(image, index * 40):
            if packet.kind is PacketKind.KEYFRAME:
                payload = KeyframePayload.parse(packet.payload)
                codecs[packet.pts_ms] = (payload.reference_id, payload.codec)
            decoder.receive_packet(packet)
    assert decoder.stats.rendered == 60
    assert codecs[0] == (0, KeyframeCodecId.AV1)
    references = [codec for slot, codec in codecs.values() if slot != 0]
    assert references and set(references) == {KeyframeCodecId.JPEG}


@pytest.mark.parametrize(
    ("coder", "model_id"),
    [(None, KeypointModelId.MEDIAPIPE_478_V3), ("v2", KeypointModelId.MEDIAPIPE_478_V2)],
)
def test_the_keypoint_coder_is_chosen_by_config_and_decodes(
    coder: str | None, model_id: KeypointModelId
) -> None:
    """V3 by default; V2 still written when asked for."""
    chosen = {} if coder is None else {"keypoint_coder": coder}
    config = EncoderConfig(crop=False, reference_bank_size=1, **chosen)
    encoder, sender, receiver, _ = _run_scripted(config, 30)
    assert encoder.header.keypoint_model is model_id
    assert sender == receiver
    with pytest.raises(ValueError, match="^keypoint_coder must be v2 or v3, got 'v4'$"):
        EncoderConfig(keypoint_coder="v4")


def test_bank_of_one_sends_no_extra_references() -> None:
    config = EncoderConfig(crop=False, reference_bank_size=1, min_reference_interval_s=0.0)
    encoder, sender, receiver, keyframes = _run_scripted(config, 50)
    assert keyframes == [(0, 0)] and sender == receiver == [0] * 50
    assert encoder.keyframe_reasons == {"start": 1}


def test_the_default_is_the_hybrid_mode_with_its_own_bank_and_keyframe_codec() -> None:
    hybrid = EncoderConfig()
    assert (hybrid.lowres_px, hybrid.lowres_kbps, hybrid.lowres_every_frames) == (48, 4.0, 3)
    assert hybrid.reference_bank_size == HYBRID_BANK_SIZE == 1
    assert hybrid.keyframe_codec == "av1"
    assert hybrid.keyframe_quality == HYBRID_KEYFRAME_QUALITIES["av1"] == 24
    assert EncoderConfig(keyframe_codec="webp").keyframe_quality == 30
    plain = EncoderConfig(lowres_px=0)
    assert (plain.reference_bank_size, plain.keyframe_quality) == (DEFAULT_BANK_SIZE, None)
    assert plain.keyframe_codec == "av1"  # at its own default quality
    # Asked for, the bank and the quality stay what was asked; GC keeps its own default rung.
    chosen = EncoderConfig(reference_bank_size=4, keyframe_quality=60, keyframe_codec="webp")
    assert (chosen.reference_bank_size, chosen.keyframe_quality) == (4, 60)
    assert EncoderConfig(keyframe_codec="gc").keyframe_quality is None
    with pytest.raises(ValueError, match="^reference_bank_size must be in 1..255, got 256$"):
        EncoderConfig(reference_bank_size=256)


def test_references_keep_their_minimum_interval() -> None:
    config = EncoderConfig(
        crop=False, lowres_px=0, reference_threshold=0.5, min_reference_interval_s=0.4
    )
    encoder, sender, receiver, keyframes = _run_scripted(config, 60)
    assert sender == receiver
    sent_ms = [pts_ms for _, pts_ms in keyframes]
    assert len(sent_ms) >= 3 and min(np.diff(sent_ms)) >= 400
    assert encoder.keyframe_reasons["reference"] == len(sent_ms) - 1


def test_periodic_keyframes_start_afresh_in_slot_zero() -> None:
    config = EncoderConfig(
        crop=False, lowres_px=0, reference_threshold=0.5, min_reference_interval_s=0.4,
        keyframe_interval_s=1.0,
    )  # fmt: skip
    encoder, sender, receiver, keyframes = _run_scripted(config, 60)
    assert sender == receiver
    assert [pts_ms for slot, pts_ms in keyframes if slot == 0] == [0, 1000, 2000]
    assert encoder.keyframe_reasons["interval"] == 2 and encoder.keyframe_reasons["reference"] > 0
    after_fresh_start = [sender[index] for index in (25, 50)]  # the frames of those keyframes
    assert after_fresh_start == [0, 0]


def test_reference_budget_caps_what_references_cost() -> None:
    uncapped = EncoderConfig(
        crop=False, lowres_px=0, reference_threshold=0.5, min_reference_interval_s=0.0,
        reference_budget_kbps=0,
    )  # fmt: skip
    capped = replace(uncapped, reference_budget_kbps=0.4, reference_burst_s=1.0)  # 50 bytes
    free_encoder, *_ = _run_scripted(uncapped, 60)
    encoder, sender, receiver, keyframes = _run_scripted(capped, 60)
    assert sender == receiver
    # Full at the start: one reference goes out, then the 50-byte bucket is overdrawn by a whole
    # keyframe and refills at 50 bytes/s, slower than these 2.4 s can repay.
    assert encoder.keyframe_reasons["reference"] == 1
    assert free_encoder.keyframe_reasons["reference"] > 3


def test_byte_budget_refills_up_to_its_burst() -> None:
    budget = ByteBudget(bytes_per_s=100.0, burst_s=2.0)
    assert budget.available(0)
    budget.spend(250)  # overdrawn: -50
    assert not budget.available(400)  # -10
    assert budget.available(600)  # +10
    budget.spend(10)
    assert budget.available(60_000)  # refilled, capped at 200
    budget.spend(200)
    assert not budget.available(60_000)
    assert ByteBudget(0.0, 0.0).available(0)  # no cap


def test_the_receiver_holds_the_bank_the_stream_header_names(header: StreamHeader) -> None:
    """The bank size travels in the stream header, so no receiver setting can drop a valid
    extra reference: a stream with 8 slots fills slot 7 on a default-made decoder."""
    decoder = StreamDecoder(replace(header, reference_bank_size=8))
    params = _params(1)[0]
    decoder.receive_packet(_keyframe(params, 0, 0))
    decoder.receive_packet(_keyframe(params, 7, 1))
    assert decoder.stats.keyframes == 2 and decoder.stats.corrupt == 0
    assert decoder.renderer.bank_size == 8


# -- compact packets and bundles --------------------------------------------------------------


def test_capture_jitter_costs_no_timestamp_bytes_and_bundles_decode_whole() -> None:
    """A camera's jittery capture times within a quarter frame of the frame rate's are sent
    as the implied ones (2-byte headers); a message of two frames' packets decodes both."""
    config = EncoderConfig(crop=False, reference_bank_size=1, keypoint_refresh_interval_s=0)
    count = 30
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_talking_head(count)))
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    jitter = np.random.default_rng(5).integers(-9, 10, count)
    jitter[0] = 0
    packets = [p for i in range(count) for p in encoder.encode(image, 5000 + i * 40 + jitter[i])]
    keypoints = [p for p in packets if p.kind is PacketKind.KEYPOINTS]
    assert [p.pts_ms for p in keypoints] == [5000 + i * 40 for i in range(count)]
    writer, decoder = PacketWriter(encoder.header), StreamDecoder(encoder.header, MESH_WARP)
    assert decoder.receive(writer.pack(packets[0])) is None  # the keyframe
    sizes, frames = [], []
    for pair in (keypoints[i : i + 2] for i in range(0, count, 2)):
        message = writer.pack_bundle(pair)
        sizes.append(len(message) - sum(len(p.payload) for p in pair))
        frames += decoder.decode(message, channel=PacketKind.KEYPOINTS)
    assert sizes[0] == 2 + 4 + 1 + 1  # the intra packet timed, its length, a continuation
    assert set(sizes[1:]) == {2 + 1 + 1}  # a header, a length byte, a continuation
    assert [frame.pts_ms for frame in frames] == [p.pts_ms for p in keypoints]
    assert decoder.stats.keypoint_frames == count and decoder.stats.lost == 0


def test_repeated_packets_recover_a_lost_message_and_are_dropped_otherwise() -> None:
    """Each message repeats the previous one's two packets: with every third message lost,
    every frame still decodes, recovered ones marked; copies of packets already decoded are
    counted as repeated, not late, and no packet is counted lost."""
    config = EncoderConfig(crop=False, reference_bank_size=1, keypoint_refresh_interval_s=0)
    count = 30
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_talking_head(count)))
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    packets = [p for i in range(count) for p in encoder.encode(image, 5000 + i * 40)]
    keypoints = [p for p in packets if p.kind is PacketKind.KEYPOINTS]
    writer, decoder = PacketWriter(encoder.header), StreamDecoder(encoder.header, MESH_WARP)
    decoder.receive(writer.pack(packets[0]))
    frames, previous = [], []
    for k, pair in enumerate(keypoints[i : i + 2] for i in range(0, count, 2)):
        message = writer.pack_bundle(previous + pair, repeats=len(previous))
        previous = pair
        if k % 3 == 1:
            continue  # lost
        frames += decoder.decode(message, channel=PacketKind.KEYPOINTS)
    assert [frame.pts_ms for frame in frames] == [p.pts_ms for p in keypoints]
    recovered = [frame.seq for frame in frames if frame.recovered]
    assert recovered == [
        p.seq for k in range(1, count // 2, 3) for p in keypoints[2 * k : 2 * k + 2]
    ]
    stats = decoder.stats
    assert stats.recovered == len(recovered) and stats.lost == stats.late == 0
    assert stats.repeated == 2 * (count // 2 - 1) - 2 * len(recovered)


def test_packets_on_the_other_kind_of_channel_are_dropped(header: StreamHeader) -> None:
    decoder = StreamDecoder(header, MESH_WARP)
    writer = PacketWriter(header)
    messages = [writer.pack(packet) for packet in _stream(3)]
    assert decoder.decode(messages[0], channel=PacketKind.KEYPOINTS) == []
    assert decoder.stats.wrong_channel == 1 and decoder.needs_keyframe
    decoder.decode(messages[0], channel=PacketKind.KEYFRAME)
    assert len(decoder.decode(messages[1], channel=PacketKind.KEYPOINTS)) == 1
    assert decoder.decode(messages[2], channel=PacketKind.KEYFRAME) == []
    assert decoder.stats.wrong_channel == 2


def test_compact_sequence_numbers_wrap_at_2048() -> None:
    config = EncoderConfig(crop=False, reference_bank_size=1)
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_talking_head(1) * 2100))
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    seqs = [
        p.seq for i in range(2050) for p in encoder.encode(image, i * 40)
        if p.kind is PacketKind.KEYPOINTS
    ]  # fmt: skip
    assert seqs[2046:] == [2046, 2047, 0, 1]


def _moving_scene(index: int) -> np.ndarray:
    """The gradient scene drifting a pixel a frame; from frame 3 on a grey hand covers the
    top left corner, which keypoints cannot say."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    scene = np.roll(np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8), index, axis=1)
    if index >= 3:
        scene[:96, :96] = 128
    return scene


def _hybrid_pair(
    count: int, every: int = 1, fusion: str = DecoderConfig.fusion
) -> tuple[StreamEncoder, StreamDecoder]:
    config = EncoderConfig(
        crop=False, reference_bank_size=1, lowres_px=64, lowres_kbps=20.0,
        keypoint_refresh_interval_s=0.4, lowres_every_frames=every,
    )  # fmt: skip
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_talking_head(count)))
    return encoder, StreamDecoder(encoder.header, replace(MESH_WARP, fusion=fusion))


def test_the_auto_renderer_drops_the_refiner_only_for_fused_hybrid_streams() -> None:
    encoder, _ = _hybrid_pair(1)
    hybrid = encoder.header
    plain = StreamEncoder(
        EncoderConfig(crop=False, reference_bank_size=1, lowres_px=0),
        detector=_ScriptedDetector(_talking_head(1)),
    ).header
    auto = DecoderConfig()
    assert auto.renderer == "auto"
    assert StreamDecoder(hybrid, auto).renderer.name == "headwarp"
    assert replace(auto, fusion="none").renderer_for(hybrid=True) == "gan"
    assert auto.renderer_for(hybrid=plain.hybrid) == "gan"
    assert replace(auto, renderer="meshwarp").renderer_for(hybrid=True) == "meshwarp"


# How far (mean, 0..255) the fused frame may be from the low-res picture where the render
# disagrees: the mask shows the picture exactly there; the learned fusion starts from a
# softened mask (2% render at its floor) and adds its own corrections (on this synthetic scene,
# far from its training data, fusion v4 is 5.5 from the picture there, v3 10.8 and v2 6.9;
# the render alone is more than 20).
_HAND_TOLERANCE = {"mask": 4, "learned": 12}


@pytest.mark.parametrize("fusion", ["mask", "learned"])
def test_hybrid_frames_fuse_the_lowres_picture_of_each_frame(fusion: str) -> None:
    encoder, decoder = _hybrid_pair(6, fusion=fusion)
    assert encoder.header.hybrid and encoder.header.lowres_size == (64, 64)
    assert 1 <= encoder.header.fusion_level <= 40
    for index in range(6):
        scene = _moving_scene(index)
        for packet in encoder.encode(scene, index * 40):
            frame = decoder.decode_packet(packet)
            if frame is None:
                continue
            assert frame.lowres is not None and frame.lowres.shape == (64, 64, 3)
            fused = decoder.render(frame).astype(int)
            alone = decoder.renderer.render(frame.landmarks).astype(int)
            if index >= 3:  # the hand comes from the low-res picture, not the render
                assert np.abs(fused[8:80, 8:80] - 128).mean() < _HAND_TOLERANCE[fusion]
                assert np.abs(alone[8:80, 8:80] - 128).mean() > 20
            assert np.abs(fused[160:, 160:] - scene[160:, 160:]).mean() < 4
    assert decoder.stats.lowres_pictures == 6 and decoder.stats.lowres_waiting == 0


def test_a_lost_hybrid_packet_waits_for_the_refresh_the_receiver_asks_for() -> None:
    encoder, decoder = _hybrid_pair(12)
    pictures = []
    for index in range(12):
        if index == 7:
            encoder.request_refresh()  # what the live receiver asks once it lost a packet
        packets = encoder.encode(_moving_scene(index), index * 40)
        if index == 3:
            continue  # lost
        for packet in packets:
            frame = decoder.decode_packet(packet)
            if packet.kind is PacketKind.KEYPOINTS:
                pictures.append(None if frame is None else frame.lowres is not None)
        if 4 <= index < 7:
            assert not decoder.keypoints_synchronised
    # Frames 4..6 wait (keypoints and low-res alike), 7 (intra keypoints and an IDR) resumes.
    assert pictures == [True, True, True, None, None, None, True, True, True, True, True]
    assert decoder.stats.lost == 1 and decoder.stats.lowres_waiting == 3
    assert decoder.keypoints_synchronised


def test_hybrid_payloads_that_do_not_parse_are_dropped_and_counted() -> None:
    encoder, decoder = _hybrid_pair(2)
    for packet in encoder.encode(_moving_scene(0), 0):
        decoder.decode_packet(packet)
    packet = encoder.encode(_moving_scene(1), 40)[0]
    # A keypoint length past the end, then a picture that is not H.264.
    assert decoder.decode_packet(replace(packet, payload=b"\x7f")) is None
    keypoints = HybridKeypoints.parse(packet.payload).keypoints
    garbage = HybridKeypoints(keypoints, LowresPicture((b"\x41" + bytes(range(9, 80)),)))
    assert decoder.stats.corrupt == 1
    frame = decoder.decode_packet(replace(packet, payload=bytes(garbage)))
    # The keypoints still render; the low-res stream waits for an IDR.
    assert frame is not None and frame.lowres is None
    assert decoder.stats.lowres_corrupt == 1 and not decoder.keypoints_synchronised


def _still_then_moving_head(count: int, still: int, step_px: float) -> list[Landmarks]:
    """The mean face, still for `still` frames, then moving right by step_px a frame."""
    model = load_keypoint_model(KeypointModelId.MEDIAPIPE_478_V2)
    face = model.reconstruct(model.param_mean, SIZE)
    shift = np.array([1.0, 0.0], dtype=np.float32)
    heads = []
    for index in range(count):
        offset = shift * step_px * max(0, index - still + 1)
        heads.append(
            Landmarks(
                face.face + np.append(offset, 0).astype(np.float32),
                face.shoulders + offset,
            )
        )
    return heads


@pytest.mark.parametrize(
    ("motion", "expected"),
    [
        (0.0, [True, False, False, True, False, False, True, False, False, True]),
        # 12 px a frame at 256 px is 3 low-res pixels at 64: every moving frame brings one.
        (1.0, [True, False, False, True, False, True, True, True, True, True]),
    ],
)
def test_a_moving_face_brings_pictures_sooner(motion: float, expected: list[bool]) -> None:
    config = EncoderConfig(
        crop=False, reference_bank_size=1, lowres_px=64, lowres_kbps=20.0,
        keypoint_refresh_interval_s=10.0, lowres_every_frames=3, lowres_motion=motion,
    )  # fmt: skip
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_still_then_moving_head(10, 5, 12)))
    decoder = StreamDecoder(encoder.header, MESH_WARP)
    carried = []
    for index in range(10):
        for packet in encoder.encode(_moving_scene(index), index * 40):
            frame = decoder.decode_packet(packet)
            if packet.kind is PacketKind.KEYPOINTS:
                carried.append(HybridKeypoints.parse(packet.payload).picture is not None)
                assert frame is not None and frame.lowres is not None
    assert carried == expected
    with pytest.raises(ValueError, match="^lowres_motion must be >= 0, got -1$"):
        EncoderConfig(lowres_motion=-1)


def test_a_live_target_lowers_the_lowres_rate_within_its_bounds() -> None:
    encoder, _ = _hybrid_pair(1)
    lowres = encoder._lowres
    assert lowres is not None and lowres.kbps == 20.0
    encoder.set_target_kbps(6.0)
    assert lowres.kbps == 6.0 - codec.LOWRES_RESERVE_KBPS
    encoder.set_target_kbps(1.0)
    assert lowres.kbps == codec.MIN_LOWRES_KBPS
    encoder.set_target_kbps(None)  # no target: back to the configured rate
    assert lowres.kbps == 20.0


def test_a_target_too_thin_for_pictures_pauses_them_and_the_receiver_stops_fusing() -> None:
    encoder, decoder = _hybrid_pair(30)
    sent = {}  # frame index -> (carried a picture, fused with one)
    for index in range(30):
        if index == 5:
            encoder.set_target_kbps(codec.LOWRES_PAUSE_BELOW_KBPS - 0.5)
        if index == 20:
            encoder.set_target_kbps(None)
        for packet in encoder.encode(_moving_scene(index), index * 40):
            frame = decoder.decode_packet(packet)
            if packet.kind is PacketKind.KEYPOINTS:
                assert frame is not None
                picture = HybridKeypoints.parse(packet.payload).picture
                sent[index] = (picture is not None, frame.lowres is not None)
    # No pictures from frame 5 to 19 (the rate cap may skip frames too, right after the
    # target fell); the receiver fuses the last one (frame 4's) for up to
    # MAX_PICTURE_AGE_FRAMES frame times, then shows the render alone until pictures resume
    # (a P picture: the encoder's and the decoder's last picture are still the same).
    age = codec.MAX_PICTURE_AGE_FRAMES
    assert {i: c for i, (c, _) in sent.items()} == {i: not 5 <= i < 20 for i in sent}
    assert {i: f for i, (_, f) in sent.items()} == {i: i < 5 + age or i >= 20 for i in sent}
    assert any(5 + age <= i < 20 for i in sent) and all(i in sent for i in range(20, 30))
    assert decoder.stats.lowres_waiting == 0 and decoder.stats.lowres_corrupt == 0


def test_frames_between_pictures_fuse_the_last_one_and_a_refresh_brings_one_at_once() -> None:
    encoder, decoder = _hybrid_pair(9, every=3)
    carried, held = [], []
    previous = None
    for index in range(9):
        if index == 4:
            encoder.request_refresh()
        for packet in encoder.encode(_moving_scene(index), index * 40):
            frame = decoder.decode_packet(packet)
            if packet.kind is not PacketKind.KEYPOINTS:
                continue
            carried.append(HybridKeypoints.parse(packet.payload).picture is not None)
            assert frame is not None and frame.lowres is not None
            held.append(frame.lowres is previous)
            previous = frame.lowres
    # Pictures at 0 and 3, at 4 (the refresh: an IDR at once, the cadence restarts) and 7.
    assert carried == [True, False, False, True, True, False, False, True, False]
    assert held == [not c for c in carried]
    assert decoder.stats.lowres_pictures == 4


def _area_down(image: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


@pytest.mark.parametrize("compensation", [True, False])
def test_frames_between_pictures_move_the_last_one_by_the_renders_change(
    compensation: bool,
) -> None:
    config = EncoderConfig(
        crop=False, reference_bank_size=1, lowres_px=64, lowres_kbps=20.0,
        keypoint_refresh_interval_s=10.0, lowres_every_frames=3,
    )  # fmt: skip
    # Still for frames 0..3, then moving 8 px a frame.
    encoder = StreamEncoder(config, detector=_ScriptedDetector(_still_then_moving_head(9, 4, 8)))
    decoder = StreamDecoder(encoder.header, replace(MESH_WARP, lowres_compensation=compensation))
    fused_with: list[np.ndarray] = []
    fuse = decoder.fuse
    decoder.fuse = lambda lowres, render: fused_with.append(lowres) or fuse(lowres, render)
    picture_render = None
    for index in range(9):
        for packet in encoder.encode(_moving_scene(index), index * 40):
            frame = decoder.decode_packet(packet)
            if packet.kind is not PacketKind.KEYPOINTS:
                continue
            assert frame is not None and frame.lowres is not None
            assert frame.picture_fresh == (index % 3 == 0)
            if index == 6:
                continue  # not rendered (a live receiver renders only the newest frame)
            decoder.render(frame)
            alone = decoder.renderer.render(frame.landmarks)
            used = fused_with[-1]
            if frame.picture_fresh:
                picture_render = _area_down(alone, 64)
                assert used is frame.lowres
            elif not compensation or index > 6:  # off, or the picture's frame was not rendered
                assert np.array_equal(used, frame.lowres)
            else:
                moved = frame.lowres + (_area_down(alone, 64) - picture_render)
                assert np.array_equal(used, np.clip(np.rint(moved), 0, 255).astype(np.uint8))
                # Still (frames 1, 2): the picture as it was; moving (4, 5): moved.
                assert np.array_equal(used, frame.lowres) == (index < 4)
