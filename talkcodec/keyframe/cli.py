"""`talkcodec keyframe encode|decode`: code one still image with the GC keyframe codec.

    talkcodec keyframe encode IMG -o IMG.gck [--channels 8] [--weights PATH]
        [--selective [--background-channels 0]]
    talkcodec keyframe decode IMG.gck -o OUT.png [--weights PATH]

A .gck file is exactly one GC payload (docs/bitstream.md). talkcodec/cli.py wires these in with
`add_keyframe_commands(commands)` and, for `args.command == "keyframe"`,
`run_keyframe_command(args)`, reporting KeyframeCommandError, BitstreamError and OSError in one
line. `python -m talkcodec.keyframe.cli encode ...` runs them stand-alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from talkcodec.bitstream import BitstreamError

if TYPE_CHECKING:
    from talkcodec.keyframe.gc.codec import GCCodec


class KeyframeCommandError(Exception):
    """A problem to report in one line, with a non-zero exit."""


def add_keyframe_commands(commands: argparse._SubParsersAction) -> None:
    """Add `keyframe` with its `encode` and `decode` subcommands to a subparsers object."""
    keyframe = commands.add_parser("keyframe", help="code one image with the GC keyframe codec")
    actions = keyframe.add_subparsers(dest="keyframe_command", required=True)
    encode = actions.add_parser("encode", help="image (PNG, JPEG, ...) to a .gck file")
    encode.add_argument("input", type=Path, help="input image")
    encode.add_argument("-o", "--output", type=Path, required=True, help="output .gck file")
    encode.add_argument(
        "--channels",
        type=int,
        default=None,
        help="latent channels sent: a rung of the weights' ladder (2, 4, 8, 12, 16; default 8)",
    )
    encode.add_argument(
        "--selective",
        action="store_true",
        help="send all channels only on the person (mediapipe selfie segmentation), "
        "the first --background-channels elsewhere",
    )
    encode.add_argument(
        "--background-channels",
        type=int,
        default=0,
        help="with --selective: latent channels sent off the person, below --channels "
        "(default 0: the background is synthesised)",
    )
    decode = actions.add_parser("decode", help=".gck file to an image (PNG)")
    decode.add_argument("input", type=Path, help="input .gck file")
    decode.add_argument("-o", "--output", type=Path, required=True, help="output image (.png)")
    for parser in (encode, decode):
        parser.add_argument("--weights", type=Path, default=None, help="GC weights (safetensors)")


def _codec(
    weights: Path | None,
    channels: int | None = None,
    selective: bool = False,
    background_channels: int = 0,
) -> GCCodec:
    from talkcodec.keyframe.gc.codec import GCCodec

    try:
        return GCCodec(
            quality=channels,
            weights=weights,
            selective=selective,
            background_channels=background_channels,
        )
    except ValueError as error:
        raise KeyframeCommandError(str(error)) from None


def run_keyframe_encode(
    input_path: Path,
    output: Path,
    channels: int | None,
    weights: Path | None,
    selective: bool = False,
    background_channels: int = 0,
) -> str:
    """Encode an image file into a .gck file; returns the one-line report."""
    if background_channels and not selective:
        raise KeyframeCommandError("--background-channels needs --selective")
    bgr = cv2.imread(str(input_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise KeyframeCommandError(f"cannot read image {input_path}")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    codec = _codec(weights, channels, selective, background_channels)
    started = time.perf_counter()
    try:
        data = codec.compress(image)
    except ValueError as error:
        raise KeyframeCommandError(str(error)) from None
    finally:
        codec.close()
    elapsed_ms = 1000 * (time.perf_counter() - started)
    output.write_bytes(data)
    height, width = image.shape[:2]
    bpp = 8 * len(data) / (height * width)
    return (
        f"{output}: {len(data)} bytes for {width}x{height}, {bpp:.4f} bit/pixel "
        f"(bound {codec.bound_bits_per_pixel():.4f} without entropy coding), "
        f"{codec.quality} channels{_selective_report(data)}, {elapsed_ms:.0f} ms"
    )


def _selective_report(data: bytes) -> str:
    """The report's selective part (person positions, mask bytes), "" if not selective."""
    from talkcodec.keyframe.gc.latent_coder import decode_cell_mask
    from talkcodec.keyframe.gc.payload import GcPayload

    payload = GcPayload.parse(data)
    if payload.background_channels is None:
        return ""
    _, rows, columns = payload.latent_shape
    person = int(decode_cell_mask(payload.mask, (rows, columns)).sum())
    return (
        f", selective: {person}/{rows * columns} latent positions person, "
        f"{payload.background_channels} background channels, mask {len(payload.mask)} bytes"
    )


def run_keyframe_decode(input_path: Path, output: Path, weights: Path | None) -> str:
    """Decode a .gck file into an image file; returns the one-line report."""
    data = input_path.read_bytes()
    codec = _codec(weights)
    started = time.perf_counter()
    image = codec.decompress(data)
    elapsed_ms = 1000 * (time.perf_counter() - started)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    try:
        written = cv2.imwrite(str(output), bgr)
    except cv2.error:
        written = False
    if not written:
        raise KeyframeCommandError(f"cannot write image {output} (use a .png name)")
    height, width = image.shape[:2]
    return f"{output}: {width}x{height} from {len(data)} bytes, {elapsed_ms:.0f} ms"


def run_keyframe_command(args: argparse.Namespace) -> None:
    """Run the `keyframe` subcommand parsed by add_keyframe_commands, printing its report."""
    if args.keyframe_command == "encode":
        report = run_keyframe_encode(
            args.input,
            args.output,
            args.channels,
            args.weights,
            args.selective,
            args.background_channels,
        )
    else:
        report = run_keyframe_decode(args.input, args.output, args.weights)
    print(report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m talkcodec.keyframe.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    add_keyframe_commands(commands)
    args = parser.parse_args(["keyframe", *(sys.argv[1:] if argv is None else argv)])
    try:
        run_keyframe_command(args)
    except (KeyframeCommandError, BitstreamError, OSError) as error:
        print(f"talkcodec: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
