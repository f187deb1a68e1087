"""Keyframe codecs and their registry, selected by name (`--keyframe-codec`) or by wire id.

"gc" loads its weights (the newest weights/gc-c8-v*.safetensors) when constructed; importing
this registry stays cheap because GCCodec imports torch only then.
"""

from __future__ import annotations

from talkcodec.bitstream import BitstreamError, KeyframeCodecId
from talkcodec.keyframe.av1 import Av1Codec
from talkcodec.keyframe.base import KeyframeCodec
from talkcodec.keyframe.classic import JpegCodec, WebPCodec
from talkcodec.keyframe.gc.codec import GCCodec

__all__ = [
    "KEYFRAME_CODECS",
    "Av1Codec",
    "GCCodec",
    "JpegCodec",
    "KeyframeCodec",
    "WebPCodec",
    "keyframe_codec_for_wire_id",
    "make_keyframe_codec",
]

KEYFRAME_CODECS: dict[str, type[KeyframeCodec]] = {
    "webp": WebPCodec,
    "jpeg": JpegCodec,
    "gc": GCCodec,
    "av1": Av1Codec,
}


def make_keyframe_codec(name: str, quality: int | None = None) -> KeyframeCodec:
    """A keyframe codec by name; quality None picks its default. ValueError names valid ones."""
    try:
        codec_class = KEYFRAME_CODECS[name]
    except KeyError:
        raise ValueError(
            f"unknown keyframe codec {name!r}; choose one of {', '.join(KEYFRAME_CODECS)}"
        ) from None
    return codec_class(quality=quality)


def keyframe_codec_for_wire_id(wire_id: int) -> KeyframeCodec:
    """The codec that decodes KEYFRAME packets carrying `wire_id`, at its default quality."""
    for codec_class in KEYFRAME_CODECS.values():
        if codec_class.wire_id == wire_id:
            return codec_class()
    try:
        known = KeyframeCodecId(wire_id)
    except ValueError:
        raise BitstreamError(f"unknown keyframe codec id {wire_id}") from None
    raise BitstreamError(
        f"keyframe codec id {wire_id} ({known.name}) is not available in this build"
    )
