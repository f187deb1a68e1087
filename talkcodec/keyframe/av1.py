"""AV1 intra keyframes: SVT-AV1 codes one still picture, dav1d decodes it (both through PyAV).

The payload is the encoder's OBUs without the temporal delimiter (the 2-byte OBU an AV1 RTP
sender drops too): a sequence header OBU, then the frame's OBUs, each with its size field.
The picture's size is read from the sequence header (AV1 spec 5.5) before anything is decoded.

Pictures are coded 4:2:0 at 8 bits, at any size from MIN_SIDE to MAX_SIDE (odd sides too).
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import ClassVar, cast

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from talkcodec.bitstream import BitstreamError, KeyframeCodecId
from talkcodec.keyframe.base import KeyframeCodec, check_image
from talkcodec.video import keeping_thread_scheduling

_TEMPORAL_DELIMITER = b"\x12\x00"  # OBU type 2, has_size_field, size 0
_OBU_SEQUENCE_HEADER = 1
MIN_SIDE = 4  # px: SVT-AV1 fails on smaller pictures
MAX_SIDE = 4096  # px: the largest side this codec codes or lets dav1d allocate


class _Bits:
    """MSB-first reader over bytes (AV1's f(n) and leb128)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0  # bits

    def read(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self._position >> 3
            if byte >= len(self._data):
                raise BitstreamError("av1 sequence header is truncated")
            value = (value << 1) | ((self._data[byte] >> (7 - (self._position & 7))) & 1)
            self._position += 1
        return value

    def uvlc(self) -> int:
        leading_zeros = 0
        while not self.read(1):
            leading_zeros += 1
            if leading_zeros >= 32:
                raise BitstreamError("av1 sequence header has an over-long uvlc field")
        return self.read(leading_zeros) + (1 << leading_zeros) - 1


def _leb128(data: bytes, offset: int) -> tuple[int, int]:
    """(value, offset after it) of the leb128 at data[offset:] (at most 8 bytes, AV1 4.10.5)."""
    value = 0
    for index in range(8):
        if offset + index >= len(data):
            raise BitstreamError("av1 keyframe ends inside an OBU size field")
        byte = data[offset + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, offset + index + 1
    raise BitstreamError("av1 keyframe has an OBU size field over 8 bytes")


def _first_obu(data: bytes) -> tuple[int, bytes]:
    """(type, payload) of the OBU at the start of `data`, which must carry its size field."""
    header = data[0]
    if header & 0x80:
        raise BitstreamError(
            f"av1 keyframe starts with OBU header {header:#04x}: forbidden bit set"
        )
    if not header & 0x02:
        raise BitstreamError("av1 keyframe's first OBU has no size field")
    offset = 2 if header & 0x04 else 1  # an extension byte follows when its flag is set
    size, offset = _leb128(data, offset)
    if offset + size > len(data):
        raise BitstreamError(
            f"av1 keyframe's first OBU says {size} bytes, {len(data) - offset} follow"
        )
    return (header >> 3) & 0x0F, data[offset : offset + size]


def _skip_timing_and_operating_points(bits: _Bits) -> None:
    """Reads a full sequence header's fields between reduced_still_picture_header and the
    frame size (AV1 spec 5.5.1 to 5.5.5)."""
    decoder_model_info_present = False
    buffer_delay_length = 0
    if bits.read(1):  # timing_info_present_flag
        bits.read(32)  # num_units_in_display_tick
        bits.read(32)  # time_scale
        if bits.read(1):  # equal_picture_interval
            bits.uvlc()  # num_ticks_per_picture_minus_1
        decoder_model_info_present = bool(bits.read(1))
        if decoder_model_info_present:
            buffer_delay_length = bits.read(5) + 1
            bits.read(32)  # num_units_in_decoding_tick
            bits.read(5)  # buffer_removal_time_length_minus_1
            bits.read(5)  # frame_presentation_time_length_minus_1
    initial_display_delay_present = bool(bits.read(1))
    for _ in range(bits.read(5) + 1):  # operating_points_cnt_minus_1 + 1
        bits.read(12)  # operating_point_idc
        if bits.read(5) > 7:  # seq_level_idx
            bits.read(1)  # seq_tier
        if decoder_model_info_present and bits.read(1):  # decoder_model_present_for_this_op
            bits.read(buffer_delay_length)  # decoder_buffer_delay
            bits.read(buffer_delay_length)  # encoder_buffer_delay
            bits.read(1)  # low_delay_mode_flag
        if initial_display_delay_present and bits.read(1):
            bits.read(4)  # initial_display_delay_minus_1


def sequence_header_size(data: bytes) -> tuple[int, int]:
    """(height, width) of the pictures of an AV1 payload that starts with its sequence header
    OBU (max_frame_height/width, AV1 spec 5.5.1). Raises BitstreamError otherwise."""
    obu_type, payload = _first_obu(data)
    if obu_type != _OBU_SEQUENCE_HEADER:
        raise BitstreamError(
            f"av1 keyframe must start with a sequence header OBU, got type {obu_type}"
        )
    bits = _Bits(payload)
    profile = bits.read(3)
    if profile > 2:
        raise BitstreamError(f"av1 sequence header has profile {profile}: 0 to 2 exist")
    bits.read(1)  # still_picture
    if bits.read(1):  # reduced_still_picture_header
        bits.read(5)  # seq_level_idx[0]
    else:
        _skip_timing_and_operating_points(bits)
    width_bits = bits.read(4) + 1
    height_bits = bits.read(4) + 1
    width = bits.read(width_bits) + 1
    height = bits.read(height_bits) + 1
    return height, width


class Av1Codec(KeyframeCodec):
    """AV1 intra (SVT-AV1 preset 4, constant quality), the smallest classical keyframe here:
    on dev face crops at 256x256 it needs about two thirds of WebP's bytes for the same
    HaarPSI and PSNR (README, Keyframes)."""

    name = "av1"
    wire_id = KeyframeCodecId.AV1
    # quality = 63 - SVT-AV1's CRF (63..1): higher is better and larger.
    default_quality: ClassVar[int] = 40  # about WebP 80's HaarPSI in 3/4 of its bytes
    MIN_QUALITY: ClassVar[int] = 0
    MAX_QUALITY: ClassVar[int] = 62
    PRESET: ClassVar[str] = "4"  # preset 3 gains ~0.003 HaarPSI for twice the time

    def __init__(self, quality: int | None = None) -> None:
        """quality: 0..62 (63 - CRF), higher is better and larger; None picks the default."""
        quality = self.default_quality if quality is None else quality
        if not self.MIN_QUALITY <= quality <= self.MAX_QUALITY:
            raise ValueError(
                f"av1 quality must be in {self.MIN_QUALITY}..{self.MAX_QUALITY}, got {quality}"
            )
        self.quality = quality

    def compress(self, image: np.ndarray) -> bytes:
        check_image(image)
        height, width = image.shape[:2]
        if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
            raise ValueError(
                f"av1 codes sides of {MIN_SIDE} to {MAX_SIDE} px, got {width}x{height}"
            )
        # SVT-AV1 prints a banner per encoder unless told to log errors only; it reads this
        # when an encoder opens.
        os.environ.setdefault("SVT_LOG", "1")
        encoder = av.CodecContext.create("libsvtav1", "w")
        encoder.width, encoder.height = width, height
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = Fraction(1, 25)
        encoder.framerate = Fraction(25)
        encoder.thread_count = 1
        encoder.options = {"preset": self.PRESET, "crf": str(63 - self.quality)}
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        frame.pts = 0
        with keeping_thread_scheduling():  # the encoder opens at its first frame
            packets = [*encoder.encode(frame), *encoder.encode(None)]
        data = b"".join(bytes(packet) for packet in packets)
        return data.removeprefix(_TEMPORAL_DELIMITER)

    def image_size(self, data: bytes) -> tuple[int, int]:
        if not data:
            raise BitstreamError("av1 keyframe is empty")
        return sequence_header_size(data)

    def decompress(self, data: bytes) -> np.ndarray:
        height, width = self.image_size(data)
        if height > MAX_SIDE or width > MAX_SIDE:
            raise BitstreamError(
                f"av1 keyframe says {width}x{height}: sides over {MAX_SIDE} px are refused"
            )
        decoder = cast(VideoCodecContext, av.CodecContext.create("libdav1d", "r"))
        decoder.thread_count = 1
        try:
            frames = [*decoder.decode(av.Packet(data)), *decoder.decode(None)]
        except (av.error.FFmpegError, ValueError) as error:
            raise BitstreamError(
                f"av1 keyframe of {len(data)} bytes does not decode: {error}"
            ) from None
        if len(frames) != 1 or (frames[0].height, frames[0].width) != (height, width):
            shapes = [f"{f.width}x{f.height}" for f in frames]
            raise BitstreamError(
                f"av1 keyframe decodes to {shapes or 'nothing'}: its header says one "
                f"{width}x{height} picture"
            )
        return frames[0].to_ndarray(format="rgb24")  # (H, W, 3) uint8
