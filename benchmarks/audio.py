"""Audio: what the call's Opus costs (payload and on the wire, by packet duration) and how it
survives loss (STOI intelligibility at 0/5/10/20% packet loss, with the receiver's concealment
and with silence in the gaps), on the dev clips' soundtracks.

    python benchmarks/audio.py [--seconds 10]

The packets are made by the sender's encoder (talkcodec.audio.opus), decoded as aiortc decodes
them (libopus, from RTP pts 0) and played out by the receiver's AudioPlayout on a synthetic
clock (each packet arrives 20 ms after its capture), so the concealment measured is the one a
call runs. STOI (Taal et al. 2011, `pystoi`) compares the played sound with the original.
"""

from __future__ import annotations

import random
import sys

import av
import numpy as np
from scipy.signal import resample_poly
from tqdm import tqdm

from talkcodec.audio.opus import OpusEncoder
from talkcodec.audio.playout import AudioPlayout
from talkcodec.audio.receive import to_mono
from talkcodec.audio.sources import SAMPLE_RATE, AudioUnavailable, decode_soundtrack
from talkcodec.config import AudioConfig
from talkcodec.transport.overhead import rtp_audio_packet_cost

import common

LOSSES = (0.0, 0.05, 0.10, 0.20)
FRAME_MS = (20, 40, 60)
BITRATES_KBPS = (8.0, 10.0, 16.0)
ARRIVAL_MS = 20.0


def encode(pcm: np.ndarray, config: AudioConfig) -> list[av.Packet]:
    encoder = OpusEncoder(config)
    n = encoder.frame_samples
    packets: list[av.Packet] = []
    for start in range(0, len(pcm) - n + 1, n):
        packets.extend(encoder.encode(pcm[start : start + n], start))
    return packets


def costs(pcm: np.ndarray, config: AudioConfig) -> dict[str, float]:
    packets = encode(pcm, config)
    seconds = len(pcm) / SAMPLE_RATE
    payload = sum(p.size for p in packets)
    wire = sum(rtp_audio_packet_cost(p.size).wire_bytes for p in packets)
    return {"kbit_s": payload * 8 / seconds / 1000, "wire_kbit_s": wire * 8 / seconds / 1000}


def played(
    pcm: np.ndarray, config: AudioConfig, loss: float, conceal: bool, seed: int
) -> np.ndarray:
    """What the receiver plays, on the input's timeline (samples), after `loss`."""
    packets = encode(pcm, config)
    first_pts = packets[0].pts
    rng = random.Random(seed)
    kept = [p for i, p in enumerate(packets) if i == 0 or rng.random() >= loss]
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format, decoder.layout, decoder.sample_rate = "s16", "stereo", SAMPLE_RATE
    frames = []
    for packet in kept:
        packet.pts -= first_pts
        frames.extend((f.pts, to_mono(f)) for f in decoder.decode(packet))
    out = np.zeros(len(pcm), np.int16)

    def sink(samples: np.ndarray, media_ms: float) -> None:
        start = round(media_ms * SAMPLE_RATE / 1000) + first_pts
        end = min(start + len(samples), len(out))
        if 0 <= start < end:
            out[start:end] = samples[: end - start]

    playout = AudioPlayout([sink], conceal=conceal)
    playout.set_clock(0, 0.0)
    end_ms = len(pcm) * 1000 / SAMPLE_RATE + 500
    now, index = 0.0, 0
    while now < end_ms:
        while index < len(frames) and frames[index][0] * 1000 / SAMPLE_RATE + ARRIVAL_MS <= now:
            playout.push(frames[index][0], frames[index][1], now)
            index += 1
        playout.tick(now)
        now += 5.0
    return out


def stoi(reference: np.ndarray, degraded: np.ndarray) -> float:
    from pystoi import stoi as measure

    ref = resample_poly(reference.astype(np.float64), 1, 3)
    deg = resample_poly(degraded.astype(np.float64), 1, 3)
    return float(measure(ref, deg, 16000, extended=False))


def main() -> None:
    parser = common.parser(__doc__, frames=None)
    parser.add_argument("--seconds", type=float, default=10.0, help="first N s of each soundtrack")
    args = parser.parse_args()
    try:
        import pystoi  # noqa: F401
    except ImportError:
        sys.exit("needs pystoi: pip install pystoi")
    default = AudioConfig()
    rows, cost_rows = [], []
    for clip in tqdm(common.clips(args.data), desc="clips"):
        try:
            pcm = decode_soundtrack(clip)[: round(args.seconds * SAMPLE_RATE)]
        except AudioUnavailable as error:
            print(f"skipped: {error}")
            continue
        if np.abs(pcm).max() == 0:
            print(f"skipped: {clip.name} has a silent soundtrack")
            continue
        for frame_ms in FRAME_MS:
            for kbps in BITRATES_KBPS:
                config = AudioConfig(frame_ms=frame_ms, bitrate_kbps=kbps)
                clean = stoi(pcm, played(pcm, config, 0.0, True, 0))
                cost_rows.append({"clip": clip.name, "frame_ms": frame_ms, "bitrate_kbps": kbps,
                                  **costs(pcm, config), "stoi": clean})  # fmt: skip
        for loss in LOSSES:
            for conceal in (True, False):
                degraded = played(pcm, default, loss, conceal, seed=11)
                rows.append({"clip": clip.name, "loss": loss, "concealment": conceal,
                             "stoi": stoi(pcm, degraded)})  # fmt: skip
    if not rows:
        sys.exit("no dev clip has a soundtrack")
    report(rows, cost_rows, default)


def report(rows: list[dict], cost_rows: list[dict], default: AudioConfig) -> None:
    lines = [
        "# Audio: cost and loss (dev soundtracks)",
        "",
        f"{len({r['clip'] for r in rows})} clips, `python benchmarks/audio.py`. Wire: Opus "
        "payload + 58 B of RTP/SRTP/UDP/IPv4 per packet (talkcodec/transport/overhead.py).",
        "",
        "## Cost and quality without loss, by packet duration and bitrate",
        "",
    ]
    table = []
    for frame_ms in FRAME_MS:
        for kbps in BITRATES_KBPS:
            picked = [
                r for r in cost_rows if r["frame_ms"] == frame_ms and r["bitrate_kbps"] == kbps
            ]
            table.append([frame_ms, f"{kbps:g}", common.fmt(common.mean_of(picked, "kbit_s"), 2),
                          common.fmt(common.mean_of(picked, "wire_kbit_s"), 2),
                          common.fmt(common.mean_of(picked, "stoi"), 3),
                          common.fmt(min(r["stoi"] for r in picked), 3)])  # fmt: skip
    lines += common.markdown_table(
        ["packet ms", "target kbit/s", "payload kbit/s", "wire kbit/s", "STOI mean", "STOI worst"],
        table,
    )
    lines += [
        "",
        f"## Loss (default: {default.frame_ms} ms packets, {default.bitrate_kbps:g} kbit/s)",
        "",
    ]
    table = []
    for loss in LOSSES:
        cells = [f"{loss:.0%}"]
        for conceal in (True, False):
            picked = [r for r in rows if r["loss"] == loss and r["concealment"] == conceal]
            cells += [common.fmt(common.mean_of(picked, "stoi"), 3),
                      common.fmt(min(r["stoi"] for r in picked), 3)]  # fmt: skip
        table.append(cells)
    lines += common.markdown_table(
        ["loss", "STOI concealed mean", "worst", "STOI silence mean", "worst"], table
    )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    path = common.write_results(
        "audio", {"loss": rows, "cost": cost_rows, "default": default.__dict__}, markdown
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
