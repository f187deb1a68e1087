"""Classical video codecs as a video call would run them, for comparison: frames in, bytes
per frame and decoded frames out, through PyAV (FFmpeg's libx264, libx265, libvpx-vp9,
libsvtav1 and libdav1d).

Every codec runs in low-delay mode: no B-frames or look-ahead, one keyframe at the start and
none after, a bitrate target (what a call's congestion controller hands the encoder), one
thread (the benchmark runs clips in parallel). The bytes counted per frame are what an RTP
packetiser would carry: H.264/H.265 NAL units without their Annex-B start codes, and without
SEI units (x264 writes its version and settings, about 700 bytes, into one; WebRTC senders
send none); AV1 without temporal-delimiter OBUs (RFC 9066-style AV1 RTP drops them); VP9
frames as they are.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

from talkcodec.bitstream import H264_NAL_SEI, annexb_nal_units, h264_nal_type
from talkcodec.video import keeping_thread_scheduling

logger = logging.getLogger(__name__)

_NO_KEYFRAME_AFTER_START = 100_000  # frames: longer than any clip


_X264_OPTIONS = {
    "preset": "medium",
    "tune": "zerolatency",
    "bf": "0",
    "g": str(_NO_KEYFRAME_AFTER_START),
}
_X265_OPTIONS = {
    "preset": "medium",
    "tune": "zerolatency",
    # info=0: no version SEI; log-level=error: x265 otherwise prints its settings.
    "x265-params": f"bframes=0:keyint={_NO_KEYFRAME_AFTER_START}:info=0:log-level=error",
}
_VP9_OPTIONS = {
    "deadline": "realtime",
    "cpu-used": "8",
    "lag-in-frames": "0",
    "g": str(_NO_KEYFRAME_AFTER_START),
}
# rtc=1 is SVT-AV1's real-time mode (low-delay prediction structure, CBR); preset 10 is the
# speed that mode is tuned for.
_AV1_OPTIONS = {
    "preset": "10",
    "svtav1-params": f"rtc=1:pred-struct=1:rc=2:keyint={_NO_KEYFRAME_AFTER_START}",
}


def _h264_sent_bytes(packet: bytes) -> int:
    return sum(len(nal) for nal in annexb_nal_units(packet) if h264_nal_type(nal) != H264_NAL_SEI)


def _h265_sent_bytes(packet: bytes) -> int:
    return sum(len(nal) for nal in annexb_nal_units(packet) if (nal[0] >> 1) & 0x3F not in (39, 40))


def _av1_sent_bytes(packet: bytes) -> int:
    # A temporal delimiter is the 2-byte OBU 0x12 0x00 (type 2, has_size, size 0).
    return len(packet) - 2 if packet[:2] == b"\x12\x00" else len(packet)


@dataclass(frozen=True)
class BaselineCodec:
    """One classical codec: FFmpeg encoder and decoder names, its low-delay encoder options,
    and how many of a packet's bytes an RTP sender would carry."""

    name: str
    encoder: str
    decoder: str
    options: Mapping[str, str]
    sent_bytes: Callable[[bytes], int]


BASELINE_CODECS: dict[str, BaselineCodec] = {
    "h264": BaselineCodec("h264", "libx264", "h264", _X264_OPTIONS, _h264_sent_bytes),
    "h265": BaselineCodec("h265", "libx265", "hevc", _X265_OPTIONS, _h265_sent_bytes),
    "vp9": BaselineCodec("vp9", "libvpx-vp9", "vp9", _VP9_OPTIONS, len),
    "av1": BaselineCodec("av1", "libsvtav1", "libdav1d", _AV1_OPTIONS, _av1_sent_bytes),
}


@dataclass(frozen=True)
class BaselineResult:
    """A clip through a classical codec.

    frame_bytes: (T,) bytes each input frame cost as an RTP sender would carry them (0 for a
    frame the encoder dropped). encoder_bytes: (T,) bytes of the encoder's own packets.
    decoded: (T, H, W, 3) uint8 RGB, the previous frame repeated where one was dropped.
    """

    codec: str
    target_kbps: float
    fps: float
    frame_bytes: np.ndarray
    encoder_bytes: np.ndarray
    decoded: np.ndarray
    dropped_frames: int

    def kbit_per_s(self) -> float:
        return float(self.frame_bytes.sum()) * 8 * self.fps / len(self.frame_bytes) / 1000


def make_baseline_codec(name: str) -> BaselineCodec:
    """A baseline codec by name; ValueError names the valid ones."""
    try:
        return BASELINE_CODECS[name]
    except KeyError:
        raise ValueError(
            f"unknown baseline codec {name!r}; choose one of {', '.join(BASELINE_CODECS)}"
        ) from None


def encode_decode(
    frames: Sequence[np.ndarray] | np.ndarray,
    codec_name: str,
    kbps: float,
    fps: float = 25.0,
    threads: int = 1,
    scale_px: int | None = None,
) -> BaselineResult:
    """Encode (T, H, W, 3) uint8 RGB frames at a bitrate target and decode them again.

    scale_px: code the frames at scale_px x scale_px instead (area-downscaled, as a sender's
    scaler would) and upscale what is decoded back to H x W (bicubic): what a WebRTC stack that
    lowers the resolution under a thin link shows."""
    if len(frames) == 0:
        raise ValueError("encode_decode needs at least one frame")
    if scale_px is not None:
        if scale_px < 16 or scale_px % 2:
            raise ValueError(f"scale_px must be even and >= 16, got {scale_px}")
        height, width = frames[0].shape[:2]
        small = [
            cv2.resize(image, (scale_px, scale_px), interpolation=cv2.INTER_AREA)
            for image in frames
        ]
        result = encode_decode(small, codec_name, kbps, fps, threads)
        upscaled = np.stack(
            [cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in result.decoded]
        )
        return dataclasses.replace(result, decoded=upscaled)
    codec = make_baseline_codec(codec_name)
    height, width = frames[0].shape[:2]
    encoder = av.CodecContext.create(codec.encoder, "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    rate = Fraction(fps).limit_denominator(1001)
    encoder.time_base = 1 / rate
    encoder.framerate = rate
    encoder.bit_rate = round(kbps * 1000)
    encoder.thread_count = threads
    encoder.options = dict(codec.options)
    packets: list[av.Packet] = []
    with keeping_thread_scheduling():  # SVT-AV1 opens at the first frame
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts = index
            packets.extend(encoder.encode(frame))
        packets.extend(encoder.encode(None))
    return _decode(codec, kbps, fps, packets, len(frames), (height, width))


def _decode(
    codec: BaselineCodec,
    kbps: float,
    fps: float,
    packets: list[av.Packet],
    count: int,
    shape: tuple[int, int],
) -> BaselineResult:
    frame_bytes = np.zeros(count, dtype=np.int64)
    encoder_bytes = np.zeros(count, dtype=np.int64)
    decoder = av.CodecContext.create(codec.decoder, "r")
    decoded: dict[int, np.ndarray] = {}
    for position, packet in enumerate(packets):
        index = packet.pts if packet.pts is not None else position
        data = bytes(packet)
        frame_bytes[index] += codec.sent_bytes(data)
        encoder_bytes[index] += len(data)
        for frame in decoder.decode(packet):
            decoded[frame.pts if frame.pts is not None else len(decoded)] = frame.to_ndarray(
                format="rgb24"
            )
    for frame in decoder.decode(None):
        decoded[frame.pts if frame.pts is not None else len(decoded)] = frame.to_ndarray(
            format="rgb24"
        )
    output = np.empty((count, *shape, 3), dtype=np.uint8)
    previous = np.full((*shape, 3), 128, dtype=np.uint8)
    for index in range(count):
        previous = decoded.get(index, previous)
        output[index] = previous
    dropped = count - sum(1 for index in range(count) if index in decoded)
    if dropped:
        logger.debug("%s at %.0f kbit/s dropped %d of %d frames", codec.name, kbps, dropped, count)
    return BaselineResult(codec.name, kbps, fps, frame_bytes, encoder_bytes, output, dropped)
