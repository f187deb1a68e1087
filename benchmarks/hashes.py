"""Fingerprints of the whole codec on dev clips: a hash of every packet the sender emits and of
every frame the receiver renders, to show a refactoring changed nothing.

    python benchmarks/hashes.py [--data ../shared/data/dev] [--clips 3] [--frames 75]
                                [--renderer gan] [-o hashes.json]

Each clip goes through StreamEncoder (the default EncoderConfig, face crop and all) and
StreamDecoder in memory, packet by packet, as talkcodec.evaluation.round_trip does. Prints one
line per clip (SHA-256 of the packets' bytes in order, of the stream header, and of the decoded
frames in order) and, with -o, writes them as JSON; compare two runs with `diff`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from talkcodec.codec import StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.evaluation import stream_frames
from talkcodec.video import read_frames

import common


def fingerprint(clip: Path, frames: int, renderer: str) -> dict[str, object]:
    config = EncoderConfig()
    encoder = StreamEncoder(config)
    decoder = StreamDecoder(encoder.header, DecoderConfig(renderer=renderer))
    packets, rendered = hashlib.sha256(), hashlib.sha256()
    counts = {"packets": 0, "rendered": 0}
    camera = (frame for _, frame in read_frames(clip, config.fps, max_frames=frames))
    try:
        for streamed in stream_frames(camera, encoder, decoder):
            for packet in streamed.packets:
                data = bytes(packet)
                packets.update(len(data).to_bytes(4, "big") + data)
                counts["packets"] += 1
            if streamed.rendered is not None:
                rendered.update(streamed.rendered.tobytes())
                counts["rendered"] += 1
    finally:
        encoder.close()
    return {
        "clip": clip.name,
        **counts,
        "header_sha256": hashlib.sha256(bytes(encoder.header)).hexdigest(),
        "packets_sha256": packets.hexdigest(),
        "frames_sha256": rendered.hexdigest(),
    }


def main() -> None:
    parser = common.parser(__doc__, frames=75)
    parser.add_argument("--clips", type=int, default=3, help="the first N dev clips")
    parser.add_argument("--renderer", default=DecoderConfig.renderer)
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    clips = common.clips(args.data, args.clips)
    rows = [fingerprint(clip, args.frames, args.renderer) for clip in clips]
    for row in rows:
        print(
            f"{row['clip']}: {row['packets']} packets {str(row['packets_sha256'])[:16]}, "
            f"{row['rendered']} frames {str(row['frames_sha256'])[:16]}"
        )
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
