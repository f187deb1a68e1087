"""The low-res stream's encoder and decoder: x264 in low-delay mode through PyAV.

One camera frame in, one picture out, at once (zerolatency: no B-frames, no look-ahead, so the
picture of a frame travels in that frame's keypoint packet). The sender codes the face crop
area-downscaled to the stream's low-res size; the receiver decodes it at that size and the
fusion upscales it. Pictures travel as NAL units without start codes and without SEI (x264
writes its version and settings, about 600 bytes, into one): LowresPicture in bitstream.py.

A P picture needs every picture since the last IDR: the decoder says whether it is in step
(`synchronised`) and is reset on a loss; it resumes at the next IDR, which the sender codes at
the stream's start, at every fresh start and on the receiver's request.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import cv2
import numpy as np

from talkcodec.bitstream import (
    H264_NAL_SEI,
    BitstreamError,
    LowresCodecId,
    LowresPicture,
    annexb_nal_units,
    h264_nal_type,
)

logger = logging.getLogger(__name__)

_NO_IDR_AFTER_START = 100_000  # frames: IDRs only when forced
_START_CODE = b"\x00\x00\x00\x01"
_X264_OPTIONS = {
    "preset": "medium",
    "tune": "zerolatency",
    "bf": "0",
    "g": str(_NO_IDR_AFTER_START),
    "forced-idr": "1",
}


class LowresEncoder:
    """Face crops in, one LowresPicture per frame out, at about `kbps` kbit/s."""

    codec_id = LowresCodecId.H264

    def __init__(self, size: tuple[int, int], kbps: float, fps: float) -> None:
        """size: (width, height) of the low-res pictures (even, >= 16)."""
        width, height = size
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ValueError(f"low-res size must be even and >= 16, got {width}x{height}")
        if kbps <= 0:
            raise ValueError(f"low-res rate must be > 0 kbit/s, got {kbps}")
        self.size = size
        self.kbps = kbps
        self._fps = fps
        self._encoder = self._open()
        self._idr_wanted = True
        self._last_pts_ms: int | None = None

    def _open(self) -> av.CodecContext:
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height = self.size
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = Fraction(1, 1000)
        encoder.framerate = Fraction(self._fps).limit_denominator(1001)
        encoder.bit_rate = round(self.kbps * 1000)
        encoder.thread_count = 1
        encoder.options = dict(_X264_OPTIONS)
        return encoder

    def set_kbps(self, kbps: float) -> bool:
        """Code at about kbps from the next picture on (the live sender's rate adaptation).
        x264 under FFmpeg keeps the rate it was opened with, so a change of a quarter or more
        reopens it, and the next picture is an IDR; smaller changes are ignored. Returns
        whether the rate changed."""
        if kbps <= 0:
            raise ValueError(f"low-res rate must be > 0 kbit/s, got {kbps}")
        if abs(kbps - self.kbps) < self.kbps / 4:
            return False
        self.kbps = kbps
        self._encoder = self._open()
        self._last_pts_ms = None
        self._idr_wanted = True
        return True

    def request_idr(self) -> None:
        """Code the next picture as an IDR (a fresh start, or a receiver that lost one)."""
        self._idr_wanted = True

    def encode(self, crop: np.ndarray, pts_ms: int) -> LowresPicture:
        """The picture of one (H, W, 3) uint8 RGB face crop captured at pts_ms."""
        small = cv2.resize(crop, self.size, interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(small), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        # x264 needs rising timestamps; a capture clock that repeats one moves on by 1 ms.
        if self._last_pts_ms is not None and pts_ms <= self._last_pts_ms:
            pts_ms = self._last_pts_ms + 1
        self._last_pts_ms = frame.pts = pts_ms
        if self._idr_wanted:
            frame.pict_type = av.video.frame.PictureType.I
            self._idr_wanted = False
        units: list[bytes] = []
        for packet in self._encoder.encode(frame):
            units += [
                u for u in annexb_nal_units(bytes(packet)) if h264_nal_type(u) != H264_NAL_SEI
            ]
        if not units:
            raise RuntimeError("x264 returned no picture for a frame (not in low-delay mode?)")
        return LowresPicture(tuple(units))


class LowresDecoder:
    """LowresPictures in, (h, w, 3) uint8 RGB pictures out, in step with the encoder."""

    def __init__(self, codec_id: LowresCodecId, size: tuple[int, int]) -> None:
        if codec_id is not LowresCodecId.H264:
            raise BitstreamError(f"unknown low-res codec id {int(codec_id)}")
        self.size = size
        self._decoder: av.CodecContext | None = None
        self.synchronised = False

    def reset(self) -> None:
        """A picture was lost: wait for the next IDR."""
        self.synchronised = False

    def decode(self, picture: LowresPicture) -> np.ndarray | None:
        """The decoded picture; None while waiting for an IDR. A picture that does not decode
        (or decodes to the wrong size) resets the decoder and raises BitstreamError."""
        if picture.idr:
            self._decoder = av.CodecContext.create("h264", "r")
            self._decoder.thread_count = 1
            # A corrupt or hostile SPS cannot make the decoder allocate a much larger picture
            # (FFmpeg checks the size it allocates, its macroblock-aligned and padded one).
            padded = [-(-side // 32) * 32 + 32 for side in self.size]
            self._decoder.options = {"max_pixels": str(padded[0] * padded[1])}
            self.synchronised = True
        if not self.synchronised or self._decoder is None:
            return None
        data = b"".join(_START_CODE + unit for unit in picture.units)
        try:
            frames = self._decoder.decode(av.Packet(data))
        except av.error.FFmpegError as error:
            self.synchronised = False
            raise BitstreamError(f"low-res picture does not decode: {error}") from None
        if len(frames) != 1 or (frames[0].width, frames[0].height) != self.size:
            self.synchronised = False
            shapes = [f"{f.width}x{f.height}" for f in frames]
            raise BitstreamError(
                f"low-res picture decodes to {shapes or 'nothing'}: expected one "
                f"{self.size[0]}x{self.size[1]} picture"
            )
        return frames[0].to_ndarray(format="rgb24")
