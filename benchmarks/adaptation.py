"""Rate adaptation: a live call through a bottleneck that steps down from 64 to 8 kbit/s, with
the sender's rate adaptation and without it.

    python benchmarks/adaptation.py [--seconds 35] [--step-s 10] [--high-kbps 64]
        [--low-kbps 8] [--queue-ms 500] [--no-baseline] [--audio]

Each run is `talkcodec call --demo --renderer meshwarp --no-audio --headless --link-kbps 64
--link-step 10:8` in this process: the demo portrait through the real sender (mediapipe,
keypoint coder, WebP keyframes, 25 fps), loopback WebRTC whose sender-to-receiver messages
cross the modelled bottleneck (talkcodec.transport.link: a drop-tail queue of --queue-ms,
reliable channels waiting in the sender's buffer instead), and the receiver with the mesh-warp
renderer; the baseline run adds --no-rate-adaptation. Per second of link time: the wire rate
the sender handed to the link (new and retransmitted bytes, every message with its modelled
SCTP/DTLS/UDP/IPv4 headers), the link's rate, the longest queue wait, messages dropped, frames
displayed and the adapter's target. Recovery time: from the step until the start of the second
from which on every second sent at most the link's rate and queued less than 200 ms
(LinkStats.settled_s). The display has no audio and renders in CPU time; frames the receiver
showed count at the second they were shown.

With --audio the call has the demo voice (Opus, 10 kbit/s, ~20 kbit/s with its RTP/SRTP/UDP/IP
headers) on the same link: the sender counts it in its rate and the face gets what is left
(run it with a --low-kbps the sound fits under, e.g. 26). Its files are adaptation-audio.*.

Writes benchmarks/results/adaptation.json, adaptation.md and adaptation.png.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import asdict

import numpy as np

from talkcodec.audio.sources import DemoVoice
from talkcodec.codec import StreamEncoder
from talkcodec.config import DecoderConfig, EncoderConfig, ReceiverConfig, SenderConfig
from talkcodec.runtime.call import loopback_call
from talkcodec.runtime.demo import demo_clip
from talkcodec.runtime.sources import ArraySource
from talkcodec.transport.link import SETTLED_QUEUE_MS, LinkConfig, RateStep

import common

RUNS = {"adaptive": True, "fixed": False}  # run name: rate adaptation on


def run_call(
    args: argparse.Namespace,
    adapt: bool,
    frames: list[np.ndarray],
    fps: float,
    mouth_open: np.ndarray,
) -> dict:
    """One call; its sender and receiver summaries, and when each frame was shown."""
    link = LinkConfig(
        rate_kbps=args.high_kbps,
        queue_ms=args.queue_ms,
        steps=(RateStep(args.step_s, args.low_kbps),),
    )
    sender = SenderConfig(adapt_rate=adapt, link=link)
    receiver = ReceiverConfig(decoder=DecoderConfig(renderer="meshwarp"))
    shown_s: list[float] = []  # time.monotonic() of each display, the link's clock
    source = ArraySource(frames, fps, loop=True, max_duration_s=args.seconds)
    encoder = StreamEncoder(EncoderConfig(lowres_px=args.lowres))
    try:
        results = asyncio.run(
            loopback_call(
                encoder,
                source,
                sender,
                receiver,
                sinks=lambda _: [lambda image, pts_ms: shown_s.append(time.monotonic())],
                audio_source=DemoVoice(mouth_open, fps, source) if args.audio else None,
            )
        )
    finally:
        encoder.close()
    return {**results, "shown_s": shown_s, "config": {"sender": asdict(sender)}}


def per_second(results: dict) -> list[dict]:
    """The run's seconds of link time: rates in kbit/s, waits in ms, counts."""
    link = results["sender"]["link"]
    start_s = link["clock_start_s"]
    shown = np.floor(np.asarray(results["shown_s"]) - start_s).astype(int)
    history = (results["sender"]["rate_adaptation"] or {}).get("history", [])
    rows, target = [], None
    for index, second in enumerate(link["per_second"]):
        for step in history:
            if index <= step["at_s"] - start_s < index + 1:
                target = step["target_kbps"]
        sent = second["offered_bytes"] + second["retransmitted_bytes"]
        rows.append({
            "t_s": index,
            "link_kbps": second["rate_kbps"],
            "sent_kbps": round(sent * 8 / 1000, 2),
            "delivered_kbps": round(second["delivered_bytes"] * 8 / 1000, 2),
            "queue_ms_max": round(second["queue_ms_max"], 1),
            "dropped_messages": second["dropped_messages"],
            "frames_displayed": int(np.sum(shown == index)),
            "target_kbps": None if target is None else round(target, 2),
        })  # fmt: skip
    return rows


def adaptation_steps(results: dict) -> list[dict]:
    """The adapter's decision at each receiver report, at its link time."""
    start_s = results["sender"]["link"]["clock_start_s"]
    history = (results["sender"]["rate_adaptation"] or {}).get("history", [])
    return [
        {
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in step.items()},
            "at_s": round(step["at_s"] - start_s, 2),
        }
        for step in history
    ]


def summarise(results: dict, rows: list[dict], step_s: float) -> dict:
    sender, receiver = results["sender"], results["receiver"]
    link = sender["link"]
    after = [row for row in rows if row["t_s"] >= step_s]
    [settled] = link["settled_after_steps"]
    return {
        "recovery_s": settled["settled_s"],
        "frames_displayed": receiver["frames_displayed"],
        "frames_displayed_after_step": sum(row["frames_displayed"] for row in after),
        "seconds_after_step": len(after),
        "sent_kbps_after_step_mean": common.mean_of(after, "sent_kbps"),
        "latency_ms": receiver["latency_ms"],
        "queue_delay_ms": link["queue_delay_ms"],
        "max_queue_bytes": link["max_queue_bytes"],
        "messages": link["messages"],
        "keyframes": sender["keyframes"],
        "frames_not_sent_rate_cap": sender["frames_not_sent_rate_cap"],
        "final_bundle_ms": sender["bundle_ms"],
        "final_target_kbps": (sender["rate_adaptation"] or {}).get("target_kbps"),
        "final_payload_target_kbps": (sender["rate_adaptation"] or {}).get("payload_target_kbps"),
        "audio": audio_summary(results),
    }


def audio_summary(results: dict) -> dict | None:
    """The sound's fate on the link: packets handed over, dropped there, received, concealed."""
    sent, got = results["sender"]["audio"], results["receiver"].get("audio")
    if sent is None or got is None:
        return None
    flow = results["sender"]["link"]["flows"].get("audio", {})
    return {
        "packets_sent": sent["packets_sent"],
        "wire_kbit_s": sent["wire_kbit_s"],
        "dropped_on_link": flow.get("overflow_messages", 0) + flow.get("lost_messages", 0),
        "packets_received": got["packets_received"],
        "concealed_ms": got["concealed_ms"],
        "av_offset_ms": results["receiver"]["av_offset_ms"],
    }


def markdown(args: argparse.Namespace, runs: dict[str, dict]) -> str:
    lines = [
        "# Rate adaptation: a bottleneck steps down",
        "",
        f"`python benchmarks/adaptation.py --seconds {args.seconds:g} --step-s {args.step_s:g} "
        f"--high-kbps {args.high_kbps:g} --low-kbps {args.low_kbps:g} "
        f"--queue-ms {args.queue_ms:g}{' --audio' if args.audio else ''}"
        f"{'' if args.lowres == EncoderConfig.lowres_px else f' --lowres {args.lowres}'}`: the "
        "demo portrait "
        f"{'with its voice (Opus on the same link) ' if args.audio else ''}in a loopback call "
        "whose messages "
        f"cross a modelled link of {args.high_kbps:g} kbit/s, {args.low_kbps:g} kbit/s from "
        f"{args.step_s:g} s on, drop-tail queue {args.queue_ms:g} ms (wire bytes with "
        "SCTP/DTLS/UDP/IPv4 headers). Recovery: from the step until every later second sent "
        f"at most the link's rate with its queue under {SETTLED_QUEUE_MS:g} ms.",
        "",
    ]
    header = ["run", "recovery s", "sent kbit/s after step", "frames shown after step",
              "latency p50 / p95 ms", "queue p95 / max ms", "dropped msgs",
              "keyframes"]  # fmt: skip
    table = []
    for name, run in runs.items():
        summary = run["summary"]
        latency, queue = summary["latency_ms"], summary["queue_delay_ms"]
        messages = summary["messages"]
        table.append([
            name,
            common.fmt(summary["recovery_s"], 0) if summary["recovery_s"] is not None
            else "never",
            common.fmt(summary["sent_kbps_after_step_mean"], 2),
            f"{summary['frames_displayed_after_step']} in {summary['seconds_after_step']} s",
            f"{common.fmt(latency['median'], 0)} / {common.fmt(latency['p95'], 0)}",
            f"{common.fmt(queue['p95'], 0)} / {common.fmt(queue['max'], 0)}",
            f"{messages['dropped_overflow'] + messages['dropped_loss']} of "
            f"{messages['submitted']}",
            ", ".join(f"{k} {v}" for k, v in summary["keyframes"].items()),
        ])  # fmt: skip
    lines += common.markdown_table(header, table)
    for name, run in runs.items():
        audio = run["summary"]["audio"]
        if audio is not None:
            offset = audio["av_offset_ms"]
            lines += [
                "",
                f"{name}, sound: {audio['packets_sent']} Opus packets sent "
                f"({common.fmt(audio['wire_kbit_s'], 1)} kbit/s on the wire), "
                f"{audio['dropped_on_link']} dropped on the link, {audio['packets_received']} "
                f"received, {common.fmt(audio['concealed_ms'], 0)} ms concealed; A/V offset "
                f"median {common.fmt(offset['median'], 0)} ms (p5 {common.fmt(offset['p5'], 0)}, "
                f"p95 {common.fmt(offset['p95'], 0)}); the face's payload target at the end "
                f"{common.fmt(run['summary']['final_payload_target_kbps'], 1)} kbit/s.",
            ]
    for name, run in runs.items():
        lines += ["", f"## {name}: per second", ""]
        rows = [
            [r["t_s"], f"{r['link_kbps']:g}", r["sent_kbps"], r["delivered_kbps"],
             round(r["queue_ms_max"]), r["dropped_messages"], r["frames_displayed"],
             common.fmt(r["target_kbps"], 1)]
            for r in run["per_second"]
        ]  # fmt: skip
        lines += common.markdown_table(
            ["s", "link kbit/s", "sent kbit/s", "delivered kbit/s", "queue max ms",
             "dropped", "frames shown", "target kbit/s"],
            rows,
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(args: argparse.Namespace, runs: dict[str, dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axis, delay_axis, frames_axis) = plt.subplots(
        3, 1, figsize=(9, 8), sharex=True, height_ratios=(3, 2, 1.5)
    )
    first = next(iter(runs.values()))["per_second"]
    rate_axis.step([row["t_s"] for row in first], [row["link_kbps"] for row in first], "k-",
                   where="post", lw=2, label="link rate")  # fmt: skip
    for (run_name, run), color in zip(runs.items(), ("tab:blue", "tab:orange"), strict=False):
        rows = run["per_second"]
        t = [row["t_s"] + 0.5 for row in rows]
        rate_axis.plot(t, [row["sent_kbps"] for row in rows], "o-", ms=3, color=color,
                       label=f"sent, {run_name}")  # fmt: skip
        if any(row["target_kbps"] is not None for row in rows):
            target = [np.nan if r["target_kbps"] is None else r["target_kbps"] for r in rows]
            rate_axis.plot(t, target, "--", lw=1, color=color, label=f"target, {run_name}")
        delay_axis.plot(t, [row["queue_ms_max"] for row in rows], "o-", ms=3, color=color,
                        label=run_name)  # fmt: skip
        frames_axis.plot(t, [row["frames_displayed"] for row in rows], "o-", ms=3, color=color)
    rate_axis.set_yscale("log")
    rate_axis.set_ylabel("wire kbit/s")
    rate_axis.legend(fontsize=8)
    delay_axis.axhline(SETTLED_QUEUE_MS, color="grey", lw=0.8, ls=":")
    delay_axis.set_ylabel("longest queue wait, ms")
    delay_axis.legend(fontsize=8)
    frames_axis.set_ylabel("frames shown")
    frames_axis.set_xlabel("link time, s (each point: one second)")
    for axis in (rate_axis, delay_axis, frames_axis):
        axis.axvline(args.step_s, color="grey", lw=0.8)
        axis.grid(True, alpha=0.3)
    figure.suptitle(
        f"{args.high_kbps:g} to {args.low_kbps:g} kbit/s at {args.step_s:g} s, "
        f"queue {args.queue_ms:g} ms"
    )
    figure.tight_layout()
    figure.savefig(common.RESULTS / f"{name}.png", dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=35.0, help="call length")
    parser.add_argument("--step-s", type=float, default=10.0, help="when the link steps down")
    parser.add_argument("--high-kbps", type=float, default=64.0, help="link rate before")
    parser.add_argument("--low-kbps", type=float, default=8.0, help="link rate after")
    parser.add_argument("--queue-ms", type=float, default=LinkConfig.queue_ms)
    parser.add_argument("--no-baseline", action="store_true", help="skip the run without it")
    parser.add_argument("--audio", action="store_true", help="with the demo voice on the link")
    parser.add_argument(
        "--lowres", type=int, default=EncoderConfig.lowres_px,
        help="the sender's --lowres (0: keypoints only)",
    )  # fmt: skip
    args = parser.parse_args()
    clip = demo_clip()
    frames, fps = clip.frames, clip.fps
    runs = {}
    for name, adapt in RUNS.items():
        if name == "fixed" and args.no_baseline:
            continue
        print(f"{name}: a {args.seconds:g} s call")
        results = run_call(args, adapt, frames, fps, clip.mouth_open)
        rows = per_second(results)
        runs[name] = {
            "summary": summarise(results, rows, args.step_s),
            "per_second": rows,
            "adaptation": adaptation_steps(results),
            "config": results["config"],
        }
        summary = runs[name]["summary"]
        print(
            f"  recovery {summary['recovery_s']} s, sent after the step "
            f"{common.fmt(summary['sent_kbps_after_step_mean'], 2)} kbit/s, "
            f"{summary['frames_displayed_after_step']} frames shown after it"
        )
    report = {"command_line": vars(args), "runs": runs}
    name = "adaptation-audio" if args.audio else "adaptation"
    if args.lowres != EncoderConfig.lowres_px:
        name += f"-lowres{args.lowres}"
    path = common.write_results(name, report, markdown(args, runs))
    plot(args, runs, name)
    print(f"wrote {path}, {name}.md and {name}.png")


if __name__ == "__main__":
    main()
