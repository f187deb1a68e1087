"""The GC keyframe bytes (the image of a KEYFRAME packet, and the whole of a .gck file)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar

from talkcodec.bitstream import BitstreamError

GC_MAGIC = b"GC"
_U8_MAX, _U16_MAX = 0xFF, 0xFFFF


def _checksum(data: bytes) -> int:
    """The low 16 bits of CRC-32: a corrupt latent would otherwise decode to a wrong picture."""
    return zlib.crc32(data) & _U16_MAX


@dataclass(frozen=True)
class GcPayload:
    """magic "GC" | version u8 | channels u8 | height u16 | width u16 | check u16 | latent.

    version names the weights the latent was coded for (1: gc-c8-v1); channels is how many
    latent channels were sent (the first `channels` of the model's); height and width are the
    image size in pixels before padding to a multiple of 16; check is the low 16 bits of the
    CRC-32 of every other byte (header without check, then latent); latent is the range-coded
    symbols (channel by channel, each in anti-diagonal order, under the weights' context prior),
    running to the end. See docs/bitstream.md.
    """

    version: int
    channels: int
    height: int
    width: int
    latent: bytes

    _HEADER: ClassVar[struct.Struct] = struct.Struct("!2sBBHH")
    _CHECK: ClassVar[struct.Struct] = struct.Struct("!H")
    HEADER_BYTES: ClassVar[int] = _HEADER.size + _CHECK.size  # 10

    def __post_init__(self) -> None:
        for name, low, high in (
            ("version", 1, _U8_MAX),
            ("channels", 1, _U8_MAX),
            ("height", 1, _U16_MAX),
            ("width", 1, _U16_MAX),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be in {low}..{high}, got {value}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(channels, rows, columns) of the symbols: the image padded to a multiple of 16."""
        return self.channels, -(-self.height // 16), -(-self.width // 16)

    def __bytes__(self) -> bytes:
        header = self._HEADER.pack(GC_MAGIC, self.version, self.channels, self.height, self.width)
        return header + self._CHECK.pack(_checksum(header + self.latent)) + self.latent

    @classmethod
    def parse(cls, data: bytes) -> GcPayload:
        """The GC payload that is the whole of `data`."""
        data = bytes(data)
        if len(data) < cls.HEADER_BYTES:
            raise BitstreamError(
                f"GC payload needs at least {cls.HEADER_BYTES} bytes, got {len(data)}"
            )
        magic, version, channels, height, width = cls._HEADER.unpack_from(data)
        if magic != GC_MAGIC:
            raise BitstreamError(f"not a GC payload: expected magic {GC_MAGIC!r}, found {magic!r}")
        for name, value in (("channels", channels), ("height", height), ("width", width)):
            if value == 0:
                raise BitstreamError(f"GC payload {name} must be at least 1, found 0")
        if version == 0:
            raise BitstreamError("GC payload version must be at least 1, found 0")
        (check,) = cls._CHECK.unpack_from(data, cls._HEADER.size)
        latent = data[cls.HEADER_BYTES :]
        expected = _checksum(data[: cls._HEADER.size] + latent)
        if check != expected:
            raise BitstreamError(
                f"GC payload of {len(data)} bytes is corrupt: check 0x{check:04x}, "
                f"computed 0x{expected:04x}"
            )
        return cls(version, channels, height, width, latent)
