"""GC weights compared per dev person: the validation rule for a new set of GC weights.

    python benchmarks/gc_people.py --weights weights/gc-c8-v2.safetensors CANDIDATE.safetensors
        [--frames-per-clip 3] [--data ../shared/data/dev] [--name gc-people]

Frames: those of benchmarks/keyframe.py (`--frames-per-clip` per dev clip at 256x256, each
clip one person). Every weights file codes every frame at each of its latent channel counts
(its ladder: the GC payload's whole bytes, header included). Per person (the mean of their
frames) and per rung: bytes, PSNR, MS-SSIM, HaarPSI and AKD (face-mesh landmark distance, px).

The first weights file is the baseline. Every other one is judged at each rung of the
baseline, per person at the baseline's bytes (the candidate's rungs interpolated in log bytes:
the same channel count need not cost the same; above the candidate's top rung its top rung
counts, reached with fewer bytes), by the project's validation rule: better on the mean over
people, and no person more than 0.3 dB PSNR, 0.01 MS-SSIM or 0.02 HaarPSI below the baseline.
A person whose baseline bytes lie below the candidate's lowest rung is not compared (the
verdict then fails).
Writes benchmarks/results/NAME.json and NAME.md.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack, closing
from pathlib import Path

import keyframe
import numpy as np
from keyframe import DEFAULT_DATA, Coder, DevFrame, dev_frames

from talkcodec.evaluation import LandmarkProbe
from talkcodec.keyframe.gc.codec import GCCodec
from talkcodec.keypoints.segmentation import PersonSegmenter

import common

MAX_PSNR_DROP_DB = 0.3
MAX_MS_SSIM_DROP = 0.01
MAX_HAARPSI_DROP = 0.02
METRICS = ("bytes", "psnr_db", "ms_ssim", "haarpsi", "akd_px")


def _ladder_coder(codec: GCCodec) -> Coder:
    """keyframe.measure's coder of one GC codec at each rung of its ladder."""

    def code(frame: DevFrame, channels: int) -> tuple[int, np.ndarray]:
        codec.quality = channels
        data = codec.compress(frame.image)
        return len(data), codec.decompress(data)

    return code


def measure(weights: list[Path], frames: list[DevFrame], probe: LandmarkProbe) -> list[dict]:
    """keyframe.measure's records, one per (frame, weights file name as codec, channels as
    setting)."""
    with ExitStack() as stack:
        codecs = {p.name: stack.enter_context(closing(GCCodec(weights=p))) for p in weights}
        coders = {name: (_ladder_coder(c), c.channel_choices) for name, c in codecs.items()}
        return keyframe.measure(frames, coders, probe)


def per_person(records: list[dict]) -> dict[tuple[str, int], dict[str, dict[str, float | None]]]:
    """(weights, channels) -> person -> metric -> mean over the person's frames."""
    grouped: dict[tuple[str, int], dict[str, list[dict]]] = {}
    for record in records:  # each dev clip is one person
        key = (record["codec"], record["setting"])
        grouped.setdefault(key, {}).setdefault(record["clip"], []).append(record)
    return {
        key: {
            person: {metric: common.mean_of(rows, metric) for metric in METRICS}
            for person, rows in people.items()
        }
        for key, people in grouped.items()
    }


def at_bytes(table: dict, name: str, person: str, target: float, metric: str) -> float | None:
    """`metric` (higher is better) of weights `name` for `person` at `target` bytes: linear in
    log bytes between the two rungs around it; above its top rung, the top rung's value (what
    it reaches with fewer bytes: a lower bound); None below its lowest rung."""
    points = sorted(
        (values[person]["bytes"], values[person][metric])
        for (weights, _), values in table.items()
        if weights == name and person in values and values[person][metric] is not None
    )
    if not points or target < points[0][0]:
        return None
    if target >= points[-1][0]:
        return points[-1][1]
    sizes, values = zip(*points, strict=True)
    return float(np.interp(np.log(target), np.log(sizes), values))


def verdicts(table: dict, baseline: str, candidate: str) -> list[dict]:
    """The rule's verdict for the candidate at every rung of the baseline, at the baseline's
    bytes per person (the candidate's curve interpolated there: a rung of the same channels
    need not cost the same bytes)."""
    out = []
    for (name, channels), base in sorted(table.items()):
        if name != baseline:
            continue
        psnr_drop, ssim_drop, haar_drop = {}, {}, {}
        for person, values in base.items():
            psnr_at = at_bytes(table, candidate, person, values["bytes"], "psnr_db")
            ssim_at = at_bytes(table, candidate, person, values["bytes"], "ms_ssim")
            haar_at = at_bytes(table, candidate, person, values["bytes"], "haarpsi")
            if psnr_at is not None and ssim_at is not None and haar_at is not None:
                psnr_drop[person] = values["psnr_db"] - psnr_at
                ssim_drop[person] = values["ms_ssim"] - ssim_at
                haar_drop[person] = values["haarpsi"] - haar_at
        if not psnr_drop:
            continue
        mean_gain = float(np.mean([-d for d in psnr_drop.values()]))
        worst = max(psnr_drop, key=psnr_drop.__getitem__)
        ok = (
            len(psnr_drop) == len(base)
            and mean_gain > 0
            and max(psnr_drop.values()) <= MAX_PSNR_DROP_DB
            and max(ssim_drop.values()) <= MAX_MS_SSIM_DROP
            and max(haar_drop.values()) <= MAX_HAARPSI_DROP
        )
        out.append(
            {
                "channels": channels,
                "people": len(psnr_drop),
                "mean_psnr_gain_db": mean_gain,
                "mean_ms_ssim_gain": float(np.mean([-d for d in ssim_drop.values()])),
                "worst_person": worst,
                "worst_psnr_drop_db": psnr_drop[worst],
                "worst_ms_ssim_drop": max(ssim_drop.values()),
                "mean_haarpsi_gain": float(np.mean([-d for d in haar_drop.values()])),
                "worst_haarpsi_drop": max(haar_drop.values()),
                "passes": ok,
            }
        )
    return out


def markdown(table: dict, judged: dict[str, list[dict]], meta: dict) -> str:
    lines = [
        "# GC weights per dev person",
        "",
        f"`{meta['command']}`: {meta['frames']} frames "
        f"at 256x256 from {meta['people']} people (clips). Means over a person's frames, "
        "then over people (worst: the person with the lowest value, highest for AKD).",
        "",
    ]
    rows = []
    for (name, channels), people in sorted(
        table.items(), key=lambda item: (item[0][1], item[0][0])
    ):
        values = list(people.values())
        row = [name, channels]
        for metric, digits in (
            ("bytes", 0),
            ("psnr_db", 2),
            ("ms_ssim", 4),
            ("haarpsi", 3),
            ("akd_px", 2),
        ):
            column = [v[metric] for v in values if v[metric] is not None]
            worst = max(column) if metric == "akd_px" else min(column)
            if metric == "bytes":
                row.append(common.fmt(float(np.mean(column)), 0))
            else:
                row += [common.fmt(float(np.mean(column)), digits), common.fmt(worst, digits)]
        rows.append(row)
    header = [
        "weights",
        "channels",
        "bytes",
        "PSNR dB",
        "worst",
        "MS-SSIM",
        "worst",
        "HaarPSI",
        "worst",
        "AKD px",
        "worst",
    ]
    lines += common.markdown_table(header, rows)
    for candidate, entries in judged.items():
        lines += ["", f"## {candidate} against {meta['baseline']}", ""]
        lines += common.markdown_table(
            [
                "baseline channels",
                "people compared",
                "mean PSNR gain dB",
                "mean MS-SSIM gain",
                "worst person",
                "its PSNR drop dB",
                "worst MS-SSIM drop",
                "mean HaarPSI gain",
                "worst HaarPSI drop",
                "passes",
            ],
            [
                [
                    e["channels"],
                    e["people"],
                    f"{e['mean_psnr_gain_db']:+.2f}",
                    f"{e['mean_ms_ssim_gain']:+.4f}",
                    e["worst_person"],
                    f"{e['worst_psnr_drop_db']:+.2f}",
                    f"{e['worst_ms_ssim_drop']:+.4f}",
                    f"{e['mean_haarpsi_gain']:+.3f}",
                    f"{e['worst_haarpsi_drop']:+.3f}",
                    "yes" if e["passes"] else "no",
                ]
                for e in entries
            ],
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--weights",
        type=Path,
        nargs="+",
        required=True,
        help="GC weights files, the baseline first",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--frames-per-clip", type=int, default=3)
    parser.add_argument("--name", default="gc-people", help="results file name")
    args = parser.parse_args()
    for path in args.weights:
        if not path.is_file():
            raise SystemExit(f"no GC weights at {path}")
    with ExitStack() as stack:
        probe = stack.enter_context(LandmarkProbe())
        segmenter = stack.enter_context(closing(PersonSegmenter()))
        frames = [
            f
            for f in dev_frames(args.data, probe, segmenter, None, args.frames_per_clip)
            if f.size == 256
        ]
        if not frames:
            raise SystemExit(f"no face frames in {args.data}")
        records = measure(args.weights, frames, probe)
    table = per_person(records)
    baseline = args.weights[0].name
    judged = {path.name: verdicts(table, baseline, path.name) for path in args.weights[1:]}
    meta = {
        "command": "python benchmarks/gc_people.py --weights "
        + " ".join(str(p) for p in args.weights)
        + f" --frames-per-clip {args.frames_per_clip}",
        "frames": len(frames),
        "people": len({f.clip for f in frames}),
        "baseline": baseline,
    }
    report = {"meta": meta, "records": records, "verdicts": judged}
    common.write_results(args.name, report, markdown(table, judged, meta))
    print(markdown(table, judged, meta))


if __name__ == "__main__":
    main()
