"""Fuzz the decoders end to end and report crashes, hangs, outputs beyond their bound and the
worst time per case.

    python benchmarks/fuzz.py [--tkc-cases 10000] [--gan-cases 300] [--gc-cases 1000]
                              [--av1-cases 3000] [--live-cases 1000] [--seed 0]

The streams are the real encoder on the shipped demo portrait (talkcodec.fuzzing.demo_stream,
1 s, no clips needed): the default (hybrid: WebP keyframe, low-res x264 pictures), the same
with a GC keyframe, and a keypoint-only stream (--lowres 0).
- .tkc files: damaged by every mutation of talkcodec.fuzzing.TKC_MUTATIONS and decoded by the
  loop of `talkcodec decode` with the mesh-warp renderer (every parser and limit is the same
  for all renderers; 3/5 of --tkc-cases on the default stream, 1/5 on each other), plus
  --gan-cases of the keypoint-only stream with the gan renderer (its receiver's default);
- GC payloads: damaged with and without a valid check and decoded by GCCodec; AV1 keyframe
  payloads (--av1-cases) damaged and decoded by Av1Codec;
- data-channel messages: --live-cases damaged messages of each kind against a receiver on
  loopback WebRTC, between the frames of the real stream.
Writes benchmarks/results/fuzz.json and fuzz.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections import defaultdict
from dataclasses import asdict

from tqdm import tqdm

from talkcodec.config import DecoderConfig, EncoderConfig
from talkcodec.fuzzing import (
    CaseResult,
    TkcRecords,
    decode_keyframe_case,
    decode_tkc_case,
    demo_stream,
    fuzz_live_receiver,
    mutate_av1,
    mutate_gc,
    mutate_tkc,
)

import common

OUTCOMES = ("decoded", "rejected", "crash", "hang", "over_bound")


def summarise(results: list[CaseResult]) -> dict[str, dict[str, object]]:
    """Per mutation (and "all"): cases by outcome, worst seconds, most frames over the bound."""
    groups: dict[str, list[CaseResult]] = defaultdict(list)
    for result in results:
        groups[result.mutation].append(result)
        groups["all"].append(result)
    table = {}
    for name, group in sorted(groups.items()):
        counts = {outcome: sum(r.outcome == outcome for r in group) for outcome in OUTCOMES}
        slowest = max(group, key=lambda r: r.seconds)
        table[name] = {
            "cases": len(group),
            **counts,
            "worst_s": round(slowest.seconds, 4),
            "mean_s": round(sum(r.seconds for r in group) / len(group), 4),
            "most_frames": max(r.frames for r in group),
            "max_frames_over_bound": round(max(r.frames / max(r.frame_bound, 1) for r in group), 3),
            "failures": [asdict(r) for r in group if r.failed][:5],
        }
    return table


def fuzz_tkc(stream: bytes, cases: int, config: DecoderConfig, seed: int, label: str) -> list:
    records = TkcRecords.split(stream)
    rng = random.Random(seed)
    results = []
    for _ in tqdm(range(cases), desc=label, unit="case"):
        mutation, data = mutate_tkc(records, rng)
        results.append(decode_tkc_case(mutation, data, config))
    return results


def fuzz_keyframes(name: str, cases: int, seed: int) -> list[CaseResult]:
    """Damaged payloads of keyframe codec `name` ("gc" or "av1") of the demo portrait, at 256
    and 512 px, each decoded and judged."""
    from talkcodec.keyframe import make_keyframe_codec
    from talkcodec.runtime.demo import demo_frames

    codec = make_keyframe_codec(name)
    portrait = demo_frames(max_frames=1)[0][0]
    payloads = [codec.compress(portrait[128:384, 128:384]), codec.compress(portrait)]
    rng = random.Random(seed)
    results = []
    mutate = {"gc": mutate_gc, "av1": mutate_av1}[name]
    for _ in tqdm(range(cases), desc=f"{name} payloads", unit="case"):
        mutation, data = mutate(rng.choice(payloads), rng)
        results.append(decode_keyframe_case(mutation, data, codec))
    return results


SECTIONS = (
    "tkc_meshwarp",
    "tkc_keypoints_only",
    "tkc_gc_keyframes",
    "tkc_gan",
    "gc_payloads",
    "av1_payloads",
)


def markdown(report: dict[str, object]) -> str:
    lines = ["# Fuzzing the decoders", "", f"`{report['command']}`", ""]
    for section in SECTIONS:
        table = report[section]
        assert isinstance(table, dict)
        lines += [f"## {section}", "", "| mutation | cases | " + " | ".join(OUTCOMES)]
        lines[-1] += " | worst s | mean s | most frames | frames / bound |"
        lines.append("|---" * (len(OUTCOMES) + 6) + "|")
        for name, row in table.items():
            counts = " | ".join(str(row[outcome]) for outcome in OUTCOMES)
            lines.append(
                f"| {name} | {row['cases']} | {counts} | {row['worst_s']} | {row['mean_s']} | "
                f"{row['most_frames']} | {row['max_frames_over_bound']} |"
            )
        lines.append("")
    live = report["live"]
    assert isinstance(live, dict)
    lines += ["## live receiver (loopback WebRTC)", "", "```", json.dumps(live, indent=2), "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tkc-cases", type=int, default=10_000)
    parser.add_argument("--gan-cases", type=int, default=300)
    parser.add_argument("--gc-cases", type=int, default=1000)
    parser.add_argument("--av1-cases", type=int, default=3000)
    parser.add_argument("--live-cases", type=int, default=1000, help="per message kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    webp = demo_stream(25)
    gc = demo_stream(25, EncoderConfig(keyframe_codec="gc"))
    plain = demo_stream(25, EncoderConfig(lowres_px=0))
    mesh = DecoderConfig(renderer="meshwarp")
    share = args.tkc_cases // 5
    report: dict[str, object] = {
        "command": "python benchmarks/fuzz.py "
        f"--tkc-cases {args.tkc_cases} --gan-cases {args.gan_cases} "
        f"--gc-cases {args.gc_cases} --av1-cases {args.av1_cases} "
        f"--live-cases {args.live_cases} --seed {args.seed}",
        "stream_bytes": {"default": len(webp), "gc": len(gc), "keypoints_only": len(plain)},
        "tkc_meshwarp": summarise(
            fuzz_tkc(webp, args.tkc_cases - 2 * share, mesh, args.seed, "tkc (the default)")
        ),
        "tkc_keypoints_only": summarise(
            fuzz_tkc(plain, share, mesh, args.seed + 5, "tkc (keypoints only)")
        ),
        "tkc_gc_keyframes": summarise(
            fuzz_tkc(gc, share, mesh, args.seed + 1, "tkc (gc keyframe)")
        ),
        "tkc_gan": summarise(
            fuzz_tkc(plain, args.gan_cases, DecoderConfig(), args.seed + 2, "tkc (gan renderer)")
        ),
        "gc_payloads": summarise(fuzz_keyframes("gc", args.gc_cases, args.seed + 3)),
        "av1_payloads": summarise(fuzz_keyframes("av1", args.av1_cases, args.seed + 6)),
    }
    print(f"live receiver: {args.live_cases} damaged messages of each kind ...")
    live = asyncio.run(fuzz_live_receiver(webp, args.live_cases, seed=args.seed + 4))
    report["live"] = asdict(live)
    common.write_results("fuzz", report, markdown(report))
    for section in SECTIONS:
        row = report[section]["all"]  # type: ignore[index]
        print(
            f"{section}: {row['cases']} cases, {row['crash']} crashes, {row['hang']} hangs, "
            f"{row['over_bound']} over the bound; worst {row['worst_s']} s, "
            f"{row['rejected']} rejected"
        )
    print(
        f"live: sent {live.sent}, handler errors {len(live.handler_errors)}, frames during "
        f"{live.frames_during} and after {live.frames_after}, RSS {live.rss_mib_before:.0f} -> "
        f"{live.rss_mib_after:.0f} MiB"
    )


if __name__ == "__main__":
    main()
