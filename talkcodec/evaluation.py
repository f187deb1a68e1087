"""Encode and decode a clip in memory and measure what arrives: used by tests and benchmarks."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkcodec.bitstream import Packet, PacketKind, PacketWriter, StreamHeader
from talkcodec.codec import StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.keypoints.detectors import make_detector
from talkcodec.keypoints.landmarks import Landmarks
from talkcodec.metrics import haarpsi, keypoint_distance, psnr, ssim, ssim_and_ms_ssim
from talkcodec.video import read_frames


@dataclass(frozen=True)
class RoundTrip:
    """A clip through the codec: per-frame quality and the bytes each packet kind cost.

    psnr_db, ssim: (T,) for frames that were rendered. payload_bytes / packet_bytes by packet
    kind ("keyframe", "keypoints"); packet bytes include the packet headers.
    """

    clip: str
    frames: int
    rendered: int
    fps: float
    psnr_db: np.ndarray
    ssim: np.ndarray
    payload_bytes: dict[str, int]
    packet_bytes: dict[str, int]

    def kbit_per_s(self, kind: str, with_headers: bool = False) -> float:
        counts = self.packet_bytes if with_headers else self.payload_bytes
        return counts.get(kind, 0) * 8 * self.fps / self.frames / 1000


@dataclass(frozen=True)
class StreamedFrame:
    """One camera frame through the codec, as stream_frames yields it.

    sent: the (S, S, 3) crop the sender coded (None when no face was found). packets: what it
    sent for the frame, and messages the bytes each became on the wire (one message per
    packet, unbundled). rendered: the frame the receiver rendered from them (None when none
    was: no face, no reference yet, waiting for a refresh). decoded_landmarks: what the
    receiver decodes for this frame. The reference ids are each side's choice of reference.
    """

    index: int
    sent: np.ndarray | None
    packets: list[Packet]
    messages: list[bytes]
    rendered: np.ndarray | None
    decoded_landmarks: Landmarks | None
    sender_reference_id: int | None
    receiver_reference_id: int | None


def stream_frames(
    frames: Iterable[np.ndarray], encoder: StreamEncoder, decoder: StreamDecoder | None = None
) -> Iterator[StreamedFrame]:
    """The one encode-and-decode loop of every measurement: each frame through `encoder` at
    its time in the stream (index / fps), every packet at once through `decoder` (a lossless
    link; None: encode only). Closes neither."""
    fps = encoder.config.fps
    writer = PacketWriter(encoder.header)
    for index, frame in enumerate(frames):
        packets = encoder.encode(frame, round(index * 1000 / fps))
        messages = [writer.pack(packet) for packet in packets]
        rendered = None
        for message in messages if decoder is not None else ():
            decoded = decoder.receive(message)
            rendered = decoded if rendered is None else rendered
        yield StreamedFrame(
            index,
            encoder.last_crop if encoder.last_landmarks is not None else None,
            packets,
            messages,
            rendered,
            encoder.last_decoded_landmarks,
            encoder.selected_reference_id,
            None if decoder is None else decoder.renderer.selected_reference_id,
        )


def round_trip(
    clip: Path,
    encoder_config: EncoderConfig,
    decoder_config: DecoderConfig | None = None,
    max_frames: int | None = None,
    keep_frames: bool = False,
) -> tuple[RoundTrip, list[tuple[np.ndarray, np.ndarray]]]:
    """Encode `clip` as a sender would and decode every packet; compare with the sent crops.

    Returns the measurements and, with keep_frames, the (sent crop, decoded frame) pairs.
    """
    encoder = StreamEncoder(encoder_config)
    decoder = StreamDecoder(encoder.header, decoder_config)
    psnrs, ssims, pairs = [], [], []
    payload: dict[str, int] = {}
    packets: dict[str, int] = {}
    frames = 0
    camera = (frame for _, frame in read_frames(clip, encoder_config.fps, max_frames))
    try:
        for streamed in stream_frames(camera, encoder, decoder):
            frames += 1
            for packet, message in zip(streamed.packets, streamed.messages, strict=True):
                kind = PacketKind(packet.kind).name.lower()
                payload[kind] = payload.get(kind, 0) + len(packet.payload)
                packets[kind] = packets.get(kind, 0) + len(message)
            if streamed.rendered is None or streamed.sent is None:
                continue
            psnrs.append(psnr(streamed.sent, streamed.rendered))
            ssims.append(ssim(streamed.sent, streamed.rendered))
            if keep_frames:
                pairs.append((streamed.sent, streamed.rendered))
    finally:
        encoder.close()
    result = RoundTrip(
        clip.name,
        frames,
        len(psnrs),
        encoder_config.fps,
        np.array(psnrs),
        np.array(ssims),
        payload,
        packets,
    )
    return result, pairs


@dataclass(frozen=True)
class FramesRoundTrip:
    """Given frames through talkcodec, every packet decoded as it arrived.

    message_bytes: each packet as its own message (its packet header included), in order.
    payload_bytes: (T,) coded bytes each frame cost (keyframe image and keypoints, no
    packet headers). decoded: (T, S, S, 3) uint8; where no frame was rendered the receiver
    keeps showing its last one (mid-grey before the first). held_frames: how many those were.
    """

    message_bytes: list[int]
    payload_bytes: np.ndarray
    payload_bytes_by_kind: dict[str, int]
    decoded: np.ndarray
    held_frames: int
    header: StreamHeader
    packets: list[Packet]  # every packet sent, in order (for transport.bundling's wire model)


def round_trip_frames(
    frames: np.ndarray,
    encoder_config: EncoderConfig,
    decoder_config: DecoderConfig | None = None,
) -> FramesRoundTrip:
    """Encode (T, S, S, 3) uint8 RGB frames (already the crops the codec should send: use
    `crop=False` and size_px=S) and decode every packet at once, as over a lossless link."""
    encoder = StreamEncoder(encoder_config)
    decoder = StreamDecoder(encoder.header, decoder_config)
    messages: list[int] = []
    sent: list[Packet] = []
    payload = np.zeros(len(frames), dtype=np.int64)
    by_kind: dict[str, int] = {}
    decoded = np.empty_like(frames)
    shown = np.full(frames.shape[1:], 128, dtype=np.uint8)
    held = 0
    try:
        for streamed in stream_frames(frames, encoder, decoder):
            sent += streamed.packets
            for packet, message in zip(streamed.packets, streamed.messages, strict=True):
                messages.append(len(message))
                payload[streamed.index] += len(packet.payload)
                kind = PacketKind(packet.kind).name.lower()
                by_kind[kind] = by_kind.get(kind, 0) + len(packet.payload)
            if streamed.rendered is None:
                held += 1
            else:
                shown = streamed.rendered
            decoded[streamed.index] = shown
    finally:
        encoder.close()
    return FramesRoundTrip(messages, payload, by_kind, decoded, held, encoder.header, sent)


class LandmarkProbe:
    """Face landmarks for the AKD metric: a mediapipe face mesh of its own in static-image
    mode, so every frame is judged on its own, without tracking from the frame before.

    (JVET's AKD uses face-alignment's 68 points, whose weights are not available here; the
    478-point mesh stands in. It is the detector family talkcodec's sender uses, which may
    favour talkcodec.)
    """

    def __init__(self) -> None:
        self._detector = make_detector("mediapipe", pose_every_n_frames=0, static_images=True)

    def points(self, frame: np.ndarray) -> np.ndarray | None:
        """(478, 3) landmarks in pixels, or None when no face was found."""
        found = self._detector.detect(frame)
        return None if found is None else found.face

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> LandmarkProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def keypoint_agreement(
    reference_points: Sequence[np.ndarray | None], decoded_points: Sequence[np.ndarray | None]
) -> tuple[float, float]:
    """(AKD in pixels, share of frames where detection failed on the decoded frame).

    Only frames with a face found on the reference count; AKD averages those where the decoded
    frame's face was found too (NaN when none was).
    """
    distances, failures, judged = [], 0, 0
    for reference, decoded in zip(reference_points, decoded_points, strict=True):
        if reference is None:
            continue
        judged += 1
        if decoded is None:
            failures += 1
        else:
            distances.append(keypoint_distance(reference, decoded))
    akd = float(np.mean(distances)) if distances else float("nan")
    return akd, failures / judged if judged else float("nan")


def frame_quality(reference: np.ndarray, decoded: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame PSNR (dB), SSIM, MS-SSIM and HaarPSI of (T, H, W, 3) decoded frames: each
    (T,)."""
    pairs = list(zip(reference, decoded, strict=True))
    structural = np.array([ssim_and_ms_ssim(r, d) for r, d in pairs]).reshape(-1, 2)
    return {
        "psnr_db": np.array([psnr(r, d) for r, d in pairs]),
        "ssim": structural[:, 0],
        "ms_ssim": structural[:, 1],
        "haarpsi": np.array([haarpsi(r, d) for r, d in pairs]),
    }
