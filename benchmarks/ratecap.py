"""The rate cap (`--max-kbps`) on real clips: file rate, what it cost in frames, and quality.

    python benchmarks/ratecap.py [--data ../shared/data/dev] [--frames 250] [--max-kbps 2]
        [--max-wire-kbps W] [--keyframe-codec gc] [--reference-bank-size 1]

Each clip goes through the sender as `talkcodec encode --max-kbps K` runs it (face crop,
mediapipe, keypoint coder, keyframe codec under the cap) and every packet at once through the
receiver (the default renderer). Rates are what a .tkc file of those packets holds (preamble,
record lengths and packet headers included) over the duration `talkcodec info` reports; the
worst 5-second window starting a second or more into the stream is reported beside it.
Quality compares each frame the sender cropped with what the receiver shows for it: the
frame rendered from it, or, for a frame not sent (the cap) or not renderable, the last one
shown before, as a viewer sees it. Writes benchmarks/results/ratecap-K.json and .md.

With --max-wire-kbps W the cap counts wire bytes instead (`talkcodec encode --max-wire-kbps
W`): keypoint messages bundled within 40 ms as the live sender sends them, keyframes in their
fragments, each with its SCTP/DTLS/UDP/IPv4 headers; the worst window is then taken over those
messages' wire bytes. Writes ratecap-wire-W.json and .md.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkcodec.bitstream import (
    Packet,
    PacketKind,
    PacketWriter,
    StreamHeader,
    TkcWriter,
    encode_varint,
)
from talkcodec.cli import stream_info
from talkcodec.codec import StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.evaluation import stream_frames
from talkcodec.metrics import psnr, ssim
from talkcodec.ratecontrol import WINDOW_S, WINDOW_START_S, keyframe_wire_bytes
from talkcodec.transport.bundling import bundle_stream
from talkcodec.transport.overhead import datachannel_message_cost
from talkcodec.video import read_frames

import common


def run_clip(clip: Path, config: EncoderConfig, frames: int) -> dict[str, object]:
    encoder = StreamEncoder(config)
    decoder = StreamDecoder(encoder.header, DecoderConfig())
    writer = PacketWriter(encoder.header)
    shown: np.ndarray | None = None
    psnrs, ssims, records = [], [], []  # records: (pts_ms, bytes in the .tkc file)
    packets: list[Packet] = []
    sent = 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "capped.tkc"
        camera = (frame for _, frame in read_frames(clip, config.fps, max_frames=frames))
        try:
            with TkcWriter.open(path, encoder.header) as tkc:
                for streamed in stream_frames(camera, encoder, decoder):
                    for packet in streamed.packets:
                        packets.append(packet)
                        tkc.write(packet)
                        size = len(writer.pack(packet))
                        records.append((packet.pts_ms, size + len(encode_varint(size))))
                    sent += any(p.kind is PacketKind.KEYPOINTS for p in streamed.packets)
                    shown = streamed.rendered if streamed.rendered is not None else shown
                    if streamed.sent is not None and shown is not None:
                        psnrs.append(psnr(streamed.sent, shown))
                        ssims.append(ssim(streamed.sent, shown))
        finally:
            encoder.close()
        info = stream_info(path)
    if config.max_wire_kbps:
        records = _wire_records(encoder.header, packets, config.wire_bundle_ms)
    skipped = encoder.rate_cap.skipped_frames if encoder.rate_cap is not None else 0
    return {
        "clip": clip.name,
        "file_kbps": info.kbps(info.file_bytes),
        "payload_kbps": info.kbps(info.total("payload_bytes")),
        "wire_kbps": info.kbps(info.total("wire_bytes")),
        "worst_window_kbps": _worst_window_kbps(records),
        "duration_s": info.duration_s,
        "frames_sent": sent,
        "frames_not_sent": skipped,
        "keyframes": dict(encoder.keyframe_reasons),
        "keyframe_bytes": info.by_kind.get("keyframe", {}).get("payload_bytes", 0),
        "psnr_db": float(np.mean(psnrs)) if psnrs else None,
        "ssim": float(np.mean(ssims)) if ssims else None,
    }


def _wire_records(header: StreamHeader, packets: list[Packet], bundle_ms: float) -> list:
    """(pts_ms, wire bytes) of each message a live sender would send, in time order."""
    writer = PacketWriter(header)
    records = [
        (p.pts_ms, keyframe_wire_bytes(len(writer.pack(p))))
        for p in packets
        if p.kind is PacketKind.KEYFRAME
    ]
    keypoints = [p for p in packets if p.kind is PacketKind.KEYPOINTS]
    for bundle in bundle_stream(keypoints, header.fps, bundle_ms):
        records.append(
            (bundle[0].pts_ms, datachannel_message_cost(len(writer.pack_bundle(bundle))).wire_bytes)
        )
    return sorted(records)


def _worst_window_kbps(records: list[tuple[int, int]]) -> float | None:
    """The largest rate over WINDOW_S windows that start WINDOW_START_S or more in."""
    if not records:
        return None
    start = records[0][0]
    times = np.array([pts - start for pts, _ in records], dtype=float)
    sizes = np.array([size for _, size in records], dtype=float)
    worst = None
    for begin in times[times >= WINDOW_START_S * 1000]:
        inside = (times >= begin) & (times < begin + WINDOW_S * 1000)
        if times[-1] >= begin + WINDOW_S * 1000 - 40:  # only whole windows
            rate = sizes[inside].sum() * 8 / WINDOW_S / 1000
            worst = rate if worst is None else max(worst, rate)
    return worst


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--max-kbps", type=float, default=2.0)
    parser.add_argument("--max-wire-kbps", type=float, default=0.0, help="cap wire bytes")
    parser.add_argument("--keyframe-codec", default="gc")
    parser.add_argument("--reference-bank-size", type=int, default=1)
    args = parser.parse_args()
    config = EncoderConfig(
        lowres_px=0,  # the cheapest sender: keypoints only
        keyframe_codec=args.keyframe_codec,
        reference_bank_size=args.reference_bank_size,
        max_kbps=0.0 if args.max_wire_kbps else args.max_kbps,
        max_wire_kbps=args.max_wire_kbps,
    )
    wire = bool(args.max_wire_kbps)
    flag = f"--max-wire-kbps {args.max_wire_kbps:g}" if wire else f"--max-kbps {args.max_kbps:g}"
    name = f"ratecap-wire-{args.max_wire_kbps:g}" if wire else f"ratecap-{args.max_kbps:g}"
    rows = [run_clip(clip, config, args.frames) for clip in tqdm(common.clips(args.data))]
    keys = ["file_kbps", "wire_kbps", "worst_window_kbps", "psnr_db", "ssim", "frames_not_sent"]
    mean = {key: common.mean_of(rows, key) for key in keys}
    worst = {
        "file_kbps": max(r["file_kbps"] for r in rows),  # type: ignore[type-var]
        "wire_kbps": max(r["wire_kbps"] for r in rows),  # type: ignore[type-var]
        "worst_window_kbps": max(r["worst_window_kbps"] or 0 for r in rows),  # type: ignore[type-var]
        "ssim": min(r["ssim"] for r in rows if r["ssim"] is not None),  # type: ignore[type-var]
    }
    report = {"config": dataclasses.asdict(config), "frames": args.frames, "mean": mean,
              "worst": worst, "clips": rows}  # fmt: skip
    columns = ["file_kbps", "worst_window_kbps", "wire_kbps", "duration_s", "frames_sent",
               "frames_not_sent", "keyframe_bytes", "psnr_db", "ssim"]  # fmt: skip
    table = common.markdown_table(
        ["clip", *columns],
        [[r["clip"], *(common.fmt(r[c], 3) if isinstance(r[c], float) else r[c] for c in columns)]
         for r in rows],
    )  # fmt: skip
    markdown = "\n".join([
        f"# `{flag}` (`python benchmarks/ratecap.py {flag}`)", "",
        f"Dev clips, first {args.frames} frames at 25 fps, keyframe codec {args.keyframe_codec}, "
        f"reference bank {args.reference_bank_size}, default renderer. Mean file rate "
        f"{common.fmt(mean['file_kbps'], 3)} kbit/s (worst clip "
        f"{common.fmt(worst['file_kbps'], 3)}), on the wire {common.fmt(mean['wire_kbps'], 3)} "
        f"(worst {common.fmt(worst['wire_kbps'], 3)}), worst 5 s window "
        f"{common.fmt(worst['worst_window_kbps'], 3)} ({'wire' if wire else 'file'} bytes); "
        f"mean SSIM {common.fmt(mean['ssim'], 4)}.", "",
        *table, "",
    ])  # fmt: skip
    path = common.write_results(name, report, markdown)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
