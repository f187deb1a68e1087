"""Encode and decode a clip in memory and measure what arrives: used by tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkcodec.bitstream import PACKET_HEADER_BYTES, PacketKind
from talkcodec.codec import StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.metrics import psnr, ssim
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
