"""The GC keyframe bytes (the image of a KEYFRAME packet, and the whole of a .gck file)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar

from talkcodec.bitstream import BitstreamError

GC_MAGIC = b"GC"
_U8_MAX, _U16_MAX = 0xFF, 0xFFFF
SELECTIVE_FLAG = 0x80  # the high bit of the channels byte: a selective payload
MAX_CHANNELS = 0x7F  # channels is the low 7 bits of its byte


def _checksum(data: bytes) -> int:
    """The low 16 bits of CRC-32: a corrupt latent would otherwise decode to a wrong picture."""
    return zlib.crc32(data) & _U16_MAX


@dataclass(frozen=True)
class GcPayload:
    """magic "GC" | version u8 | flag:1 channels:7 | height u16 | width u16 | check u16 | body.

    version names the weights the latent was coded for (1: gc-c8-v1, 2: gc-c8-v2, 3:
    gc-c16-v3); channels is how many latent channels were sent (the first `channels` of the
    model's); height and width are the image size in pixels before padding to a multiple of
    16; check is the low 16 bits of the CRC-32 of every other byte (header without check, then
    body).

    Without the flag (the high bit of the channels byte) body is the latent: the range-coded
    symbols (channel by channel, each in anti-diagonal order, under the weights' context prior),
    running to the end. With it, the payload is selective (selective.py) and body is
    background_channels u8 (< channels) | mask length M u16 | mask (M bytes, the range-coded
    person cells) | latent (to the end), the latent holding all `channels` on person cells and
    the first `background_channels` elsewhere. See docs/bitstream.md.
    """

    version: int
    channels: int
    height: int
    width: int
    latent: bytes
    background_channels: int | None = None  # None: not selective
    mask: bytes = b""

    _HEADER: ClassVar[struct.Struct] = struct.Struct("!2sBBHH")
    _CHECK: ClassVar[struct.Struct] = struct.Struct("!H")
    _SELECTIVE: ClassVar[struct.Struct] = struct.Struct("!BH")
    HEADER_BYTES: ClassVar[int] = _HEADER.size + _CHECK.size  # 10
    SELECTIVE_HEADER_BYTES: ClassVar[int] = HEADER_BYTES + _SELECTIVE.size  # 13

    def __post_init__(self) -> None:
        for name, low, high in (
            ("version", 1, _U8_MAX),
            ("channels", 1, MAX_CHANNELS),
            ("height", 1, _U16_MAX),
            ("width", 1, _U16_MAX),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be in {low}..{high}, got {value}")
        if self.background_channels is None:
            if self.mask:
                raise ValueError("a mask needs background_channels (a selective payload)")
            return
        if not 0 <= self.background_channels < self.channels:
            raise ValueError(
                f"background_channels must be in 0..{self.channels - 1}, "
                f"got {self.background_channels}"
            )
        if len(self.mask) > _U16_MAX:
            raise ValueError(f"mask must be at most {_U16_MAX} bytes, got {len(self.mask)}")

    @property
    def selective(self) -> bool:
        """Whether the background latent positions carry only background_channels channels."""
        return self.background_channels is not None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, rows, columns) of the symbols: the image padded to a multiple of 16."""
        return self.channels, -(-self.height // 16), -(-self.width // 16)

    def _body(self) -> bytes:
        if self.background_channels is None:
            return self.latent
        selective = self._SELECTIVE.pack(self.background_channels, len(self.mask))
        return selective + self.mask + self.latent

    def __bytes__(self) -> bytes:
        channels = self.channels | (SELECTIVE_FLAG if self.selective else 0)
        header = self._HEADER.pack(GC_MAGIC, self.version, channels, self.height, self.width)
        body = self._body()
        return header + self._CHECK.pack(_checksum(header + body)) + body

    @classmethod
    def parse(cls, data: bytes) -> GcPayload:
        """The GC payload that is the whole of `data`."""
        data = bytes(data)
        if len(data) < cls.HEADER_BYTES:
            raise BitstreamError(
                f"GC payload needs at least {cls.HEADER_BYTES} bytes, got {len(data)}"
            )
        magic, version, channel_byte, height, width = cls._HEADER.unpack_from(data)
        if magic != GC_MAGIC:
            raise BitstreamError(f"not a GC payload: expected magic {GC_MAGIC!r}, found {magic!r}")
        channels = channel_byte & MAX_CHANNELS
        for name, value in (("channels", channels), ("height", height), ("width", width)):
            if value == 0:
                raise BitstreamError(f"GC payload {name} must be at least 1, found 0")
        if version == 0:
            raise BitstreamError("GC payload version must be at least 1, found 0")
        (check,) = cls._CHECK.unpack_from(data, cls._HEADER.size)
        body = data[cls.HEADER_BYTES :]
        expected = _checksum(data[: cls._HEADER.size] + body)
        if check != expected:
            raise BitstreamError(
                f"GC payload of {len(data)} bytes is corrupt: check 0x{check:04x}, "
                f"computed 0x{expected:04x}"
            )
        if not channel_byte & SELECTIVE_FLAG:
            return cls(version, channels, height, width, body)
        return cls._parse_selective(version, channels, height, width, body)

    @classmethod
    def _parse_selective(
        cls, version: int, channels: int, height: int, width: int, body: bytes
    ) -> GcPayload:
        """The selective payload whose bytes after the check are `body`."""
        if len(body) < cls._SELECTIVE.size:
            raise BitstreamError(
                f"selective GC payload needs at least {cls.SELECTIVE_HEADER_BYTES} bytes, "
                f"got {cls.HEADER_BYTES + len(body)}"
            )
        background_channels, mask_bytes = cls._SELECTIVE.unpack_from(body)
        if background_channels >= channels:
            raise BitstreamError(
                f"selective GC payload background channels must be below its {channels} "
                f"channels, found {background_channels}"
            )
        mask_end = cls._SELECTIVE.size + mask_bytes
        if len(body) < mask_end:
            raise BitstreamError(
                f"selective GC payload mask of {mask_bytes} bytes is truncated: "
                f"{len(body) - cls._SELECTIVE.size} bytes follow its length"
            )
        mask, latent = body[cls._SELECTIVE.size : mask_end], body[mask_end:]
        return cls(version, channels, height, width, latent, background_channels, mask)
