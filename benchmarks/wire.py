"""Where a talkcodec stream's bits go: payload, packet headers, the .tkc file and the wire.

    python benchmarks/wire.py [--data ../shared/data/dev] [--frames 250]
        [--keyframe-codec gc] [--reference-bank-size 1] [--bundle-ms 0 40 80]

Each clip goes through the sender exactly as `talkcodec encode` runs it (face crop, mediapipe,
keypoint coder, keyframe codec) for its first --frames frames at 25 fps. The same packets are
then written both ways: FIXED packets (8-byte headers, u32 .tkc record lengths: what streams
were before stream header revision 3) and COMPACT ones (2-byte headers, implied timestamps,
varint record lengths); and their wire cost is modelled (talkcodec.transport.bundling: keyframes
fragmented, keypoint packets bundled within each --bundle-ms, every message with its
SCTP/DTLS/UDP/IPv4 headers, talkcodec.transport.overhead). Rates are over the clip's duration.

Writes benchmarks/results/wire.json and wire.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkcodec.bitstream import Packet, PacketFormat, PacketKind, TkcFile
from talkcodec.codec import StreamEncoder
from talkcodec.config import EncoderConfig
from talkcodec.transport.bundling import stream_wire_cost
from talkcodec.video import read_frames

import common


def encode_clip(
    clip: Path, config: EncoderConfig, frames: int
) -> tuple[StreamEncoder, list[Packet], int]:
    """The packets `talkcodec encode` writes for the clip's first `frames` frames, and how
    many frames the clip had."""
    encoder = StreamEncoder(config)
    packets: list[Packet] = []
    count = 0
    try:
        for index, (_, frame) in enumerate(read_frames(clip, config.fps, max_frames=frames)):
            packets += encoder.encode(frame, round(index * 1000 / config.fps))
            count += 1
    finally:
        encoder.close()
    return encoder, packets, count


def measure(
    encoder: StreamEncoder, packets: list[Packet], frames: int, bundles: list[float]
) -> dict[str, object]:
    """Rates (kbit/s over `frames` frames) of the packets in each packet format."""
    duration_s = frames / encoder.config.fps
    payload = sum(len(p.payload) for p in packets)
    keypoint_packets = sum(p.kind is PacketKind.KEYPOINTS for p in packets)
    row: dict[str, object] = {
        "frames": frames,
        "keypoint_packets": keypoint_packets,
        "keyframes": sum(p.kind is PacketKind.KEYFRAME for p in packets),
        "keyframe_payload_bytes": sum(
            len(p.payload) for p in packets if p.kind is PacketKind.KEYFRAME
        ),
        "payload_kbps": payload * 8 / duration_s / 1000,
    }
    for packet_format in (PacketFormat.FIXED, PacketFormat.COMPACT):
        header = dataclasses.replace(encoder.header, packet_format=packet_format)
        name = packet_format.name.lower()
        file_bytes = len(bytes(TkcFile(header, tuple(packets))))
        row[f"{name}_file_kbps"] = file_bytes * 8 / duration_s / 1000
        for bundle_ms in bundles if packet_format is PacketFormat.COMPACT else [0.0]:
            costs = stream_wire_cost(header, packets, bundle_ms)
            wire = sum(cost.wire_bytes for cost in costs.values())
            keypoints = costs.get("keypoints")
            key = f"{name}_bundle{bundle_ms:g}"
            row[f"{key}_wire_kbps"] = wire * 8 / duration_s / 1000
            row[f"{key}_keypoint_messages"] = keypoints.packets if keypoints else 0
            # headers of every kind (packet, framing, transport) per frame, keyframes included
            row[f"{key}_header_bytes_per_frame"] = (wire - payload) / max(keypoint_packets, 1)
    return row


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--keyframe-codec", default="gc")
    parser.add_argument("--reference-bank-size", type=int, default=1)
    parser.add_argument("--bundle-ms", type=float, nargs="+", default=[0.0, 40.0, 80.0])
    args = parser.parse_args()
    config = EncoderConfig(  # keypoint-only streams: their framing is what is measured
        keyframe_codec=args.keyframe_codec, reference_bank_size=args.reference_bank_size,
        lowres_px=0,
    )  # fmt: skip
    rows = []
    for clip in tqdm(common.clips(args.data), unit="clip"):
        encoder, packets, frames = encode_clip(clip, config, args.frames)
        rows.append({"clip": clip.name, **measure(encoder, packets, frames, args.bundle_ms)})
    keys = [k for k in rows[0] if k.endswith(("kbps", "per_frame"))]
    mean = {key: common.mean_of(rows, key) for key in keys}
    report = {
        "config": dataclasses.asdict(config),
        "frames": args.frames,
        "bundle_ms": args.bundle_ms,
        "mean": mean,
        "clips": rows,
    }
    columns = ["payload_kbps", "fixed_file_kbps", "compact_file_kbps", "fixed_bundle0_wire_kbps"]
    columns += [f"compact_bundle{b:g}_wire_kbps" for b in args.bundle_ms]
    headers = ["fixed_bundle0_header_bytes_per_frame"]
    headers += [f"compact_bundle{b:g}_header_bytes_per_frame" for b in args.bundle_ms]
    table = common.markdown_table(
        ["clip", *columns, *headers],
        [
            [row["clip"], *(common.fmt(row[c], 2) for c in columns + headers)]
            for row in [*rows, {"clip": "mean", **mean}]
        ],
    )
    markdown = "\n".join(
        [
            "# Where the bits go (`python benchmarks/wire.py`)",
            "",
            f"Dev clips, first {args.frames} frames at 25 fps, keyframe codec "
            f"{config.keyframe_codec}, reference bank {config.reference_bank_size}. kbit/s "
            "over each clip's duration; header bytes per frame = (wire - payload) / frames.",
            "",
            *table,
            "",
        ]
    )
    path = common.write_results("wire", report, markdown)
    print(markdown)
    print(f"wrote {path}")
    print(np.round([mean[c] for c in columns], 2))


if __name__ == "__main__":
    main()
