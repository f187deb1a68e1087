"""The rate cap (`--max-kbps`) on real clips: file rate, what it cost in frames, and quality.

    python benchmarks/ratecap.py [--data ../shared/data/dev] [--frames 250] [--max-kbps 2]
        [--keyframe-codec gc] [--reference-bank-size 1]

Each clip goes through the sender as `talkcodec encode --max-kbps K` runs it (face crop,
mediapipe, keypoint coder, keyframe codec under the cap) and every packet at once through the
receiver (the default renderer). Rates are what a .tkc file of those packets holds (preamble,
record lengths and packet headers included) over the duration `talkcodec info` reports; the
worst 5-second window starting a second or more into the stream is reported beside it.
Quality compares each frame the sender cropped with what the receiver shows for it: the
frame rendered from it, or, for a frame not sent (the cap) or not renderable, the last one
shown before, as a viewer sees it. Writes benchmarks/results/ratecap-K.json and .md.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from talkcodec.bitstream import PacketKind, PacketWriter, TkcWriter, encode_varint
from talkcodec.cli import stream_info
from talkcodec.codec import StreamDecoder, StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.evaluation import stream_frames
from talkcodec.metrics import psnr, ssim
from talkcodec.ratecontrol import WINDOW_S, WINDOW_START_S
from talkcodec.video import read_frames

import common


def run_clip(clip: Path, config: EncoderConfig, frames: int) -> dict[str, object]:
    encoder = StreamEncoder(config)
    decoder = StreamDecoder(encoder.header, DecoderConfig())
    writer = PacketWriter(encoder.header)
    shown: np.ndarray | None = None
    psnrs, ssims, records = [], [], []  # records: (pts_ms, bytes in the .tkc file)
    sent = 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "capped.tkc"
        camera = (frame for _, frame in read_frames(clip, config.fps, max_frames=frames))
        try:
            with TkcWriter.open(path, encoder.header) as tkc:
                for streamed in stream_frames(camera, encoder, decoder):
                    for packet in streamed.packets:
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
    parser.add_argument("--keyframe-codec", default="gc")
    parser.add_argument("--reference-bank-size", type=int, default=1)
    args = parser.parse_args()
    config = EncoderConfig(
        keyframe_codec=args.keyframe_codec,
        reference_bank_size=args.reference_bank_size,
        max_kbps=args.max_kbps,
    )
    rows = [run_clip(clip, config, args.frames) for clip in tqdm(common.clips(args.data))]
    keys = ["file_kbps", "worst_window_kbps", "psnr_db", "ssim", "frames_not_sent"]
    mean = {key: common.mean_of(rows, key) for key in keys}
    worst = {
        "file_kbps": max(r["file_kbps"] for r in rows),  # type: ignore[type-var]
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
        f"# `--max-kbps {args.max_kbps:g}` (`python benchmarks/ratecap.py`)", "",
        f"Dev clips, first {args.frames} frames at 25 fps, keyframe codec {args.keyframe_codec}, "
        f"reference bank {args.reference_bank_size}, default renderer. Mean file rate "
        f"{common.fmt(mean['file_kbps'], 3)} kbit/s (worst clip "
        f"{common.fmt(worst['file_kbps'], 3)}); mean SSIM {common.fmt(mean['ssim'], 4)}.", "",
        *table, "",
    ])  # fmt: skip
    path = common.write_results(f"ratecap-{args.max_kbps:g}", report, markdown)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
