"""Opus packets from 48 kHz mono chunks, at the call's low rate (aiortc's own encoder is fixed
at 96 kbit/s stereo, several times a talkcodec call's whole budget)."""

from __future__ import annotations

import fractions

import av
import numpy as np

from talkcodec.audio.sources import SAMPLE_RATE
from talkcodec.config import AudioConfig

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)


class OpusEncoder:
    """One Opus packet per chunk of config.frame_ms. Packet pts are on the chunks' timeline in
    samples, shifted by the encoder's lookahead (the first packet's pts is negative): the pts
    of a packet is the timeline sample its decoded output starts at."""

    def __init__(self, config: AudioConfig) -> None:
        self.config = config
        self.frame_samples = SAMPLE_RATE * config.frame_ms // 1000
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = round(config.bitrate_kbps * 1000)
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = SAMPLE_RATE
        codec.time_base = TIME_BASE
        codec.options = {
            "application": "voip",
            "frame_duration": str(config.frame_ms),
            "vbr": "on",
            "fec": "1" if config.fec else "0",
            "packet_loss": str(config.expected_loss_pct if config.fec else 0),
        }
        codec.open()
        self._codec = codec

    def encode(self, samples: np.ndarray, start_sample: int) -> list[av.Packet]:
        """Packets for (frame_samples,) int16 samples that start at timeline sample start."""
        if samples.shape != (self.frame_samples,):
            raise ValueError(f"expected {self.frame_samples} samples, got {samples.shape}")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, np.int16)[None], format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start_sample
        frame.time_base = TIME_BASE
        return list(self._codec.encode(frame))
