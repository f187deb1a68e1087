"""Encode and decode a clip in memory and measure what arrives: used by tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkcodec.bitstream import PACKET_HEADER_BYTES, PacketKind
from talkcodec.codec import StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.keypoints.detectors import make_detector
from talkcodec.metrics import keypoint_distance, psnr, ssim, ssim_and_ms_ssim
from talkcodec.video import read_frames


@dataclass(frozen=True)
class RoundTrip:
    """A clip through the codec: per-frame quality and the bytes each packet kind cost.

    psnr_db, ssim: (T,) for frames that were rendered. payload_bytes / packet_bytes by packet
    kind ("keyframe", "keypoints"); packet bytes include the 8-byte packet header.
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
    try:
        for index, (_, frame) in enumerate(read_frames(clip, encoder_config.fps, max_frames)):
            frames += 1
            pts_ms = round(index * 1000 / encoder_config.fps)
            decoded = None
            for packet in encoder.encode(frame, pts_ms):
                kind = PacketKind(packet.kind).name.lower()
                payload[kind] = payload.get(kind, 0) + len(packet.payload)
                packets[kind] = packets.get(kind, 0) + len(packet.payload) + PACKET_HEADER_BYTES
                decoded = decoder.receive(bytes(packet))
            if decoded is None or encoder.last_crop is None:
                continue
            psnrs.append(psnr(encoder.last_crop, decoded))
            ssims.append(ssim(encoder.last_crop, decoded))
            if keep_frames:
                pairs.append((encoder.last_crop, decoded))
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

    message_bytes: each packet as sent (8-byte packet header included), in order.
    payload_bytes: (T,) coded bytes each frame cost (keyframe image and keypoints, no
    packet headers). decoded: (T, S, S, 3) uint8; where no frame was rendered the receiver
    keeps showing its last one (mid-grey before the first). held_frames: how many those were.
    """

    message_bytes: list[int]
    payload_bytes: np.ndarray
    payload_bytes_by_kind: dict[str, int]
    decoded: np.ndarray
    held_frames: int


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
    payload = np.zeros(len(frames), dtype=np.int64)
    by_kind: dict[str, int] = {}
    decoded = np.empty_like(frames)
    shown = np.full(frames.shape[1:], 128, dtype=np.uint8)
    held = 0
    try:
        for index, frame in enumerate(frames):
            rendered = None
            for packet in encoder.encode(frame, round(index * 1000 / encoder_config.fps)):
                message = bytes(packet)
                messages.append(len(message))
                payload[index] += len(packet.payload)
                kind = PacketKind(packet.kind).name.lower()
                by_kind[kind] = by_kind.get(kind, 0) + len(packet.payload)
                rendered = decoder.receive(message) if rendered is None else rendered
            if rendered is None:
                held += 1
            else:
                shown = rendered
            decoded[index] = shown
    finally:
        encoder.close()
    return FramesRoundTrip(messages, payload, by_kind, decoded, held)


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
    """Per-frame PSNR (dB), SSIM and MS-SSIM of (T, H, W, 3) decoded frames: each (T,)."""
    pairs = list(zip(reference, decoded, strict=True))
    structural = np.array([ssim_and_ms_ssim(r, d) for r, d in pairs]).reshape(-1, 2)
    return {
        "psnr_db": np.array([psnr(r, d) for r, d in pairs]),
        "ssim": structural[:, 0],
        "ms_ssim": structural[:, 1],
    }
