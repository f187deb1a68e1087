"""Soak: a long `talkcodec call --demo` keeps flat memory and a steady frame rate.

    python benchmarks/soak.py [--minutes 10] [--out-dir DIR] [--sample-s 5] [-- CALL FLAGS]

Runs the real command line, `talkcodec call --demo --headless --duration SECONDS -o
OUT_DIR/call.mp4` (with any CALL FLAGS after `--`), as a child process, so whatever a call does
(sender, receiver, sound, the side-by-side recording) is in it. Every --sample-s seconds it reads
the child's resident memory (VmRSS, and the peak VmHWM, from /proc/PID/status); at the end it
reads the call's stats JSON (call.json, beside the recording) and the recording itself.

Memory: RSS at 1, 5 and 10 minutes (the sample nearest each) and at the end (the last sample,
as the child shuts down), and its growth in MB/min: the slope of a least-squares line through
the samples from minute 1 to the call's --duration (the first minute holds start-up: weights,
the first keyframe, the allocator settling; after the duration come the last frames and the
shutdown). Times count from the child's start, so its few seconds of warm-up are in them; a
slope needs --minutes 2 or more.

Frame rate per minute: the stats JSON holds the receiver's total (frames_displayed over
duration_s), no time series, and the recording cannot be counted as it is: its writer fills one
slot per frame period of capture time, repeating the last frame through any gap (sinks.py,
_TimedWriter), so it always holds the nominal rate. What shows a frame was new is its picture:
a repeat decodes to (nearly) the frame before it, luma differing by under REPEAT_MAD on average
(0-255: x264 at the writer's crf 12 refines a repeated picture by up to about 0.1), where a
newly shown frame of the moving demo differs by more (mostly 0.5 or more). So fps per minute =
frames of that minute of the recording (by timestamp) whose received half differs from the
previous frame's by REPEAT_MAD or more, over the minute. Their total is set beside the
receiver's own count of frames shown, as a check of the measure (on a 15 s call at 25 fps: 368
against 369; on a minute throttled to 4.4 fps: 266 against 263): a frame the writer had no slot
for (two shown within one frame period) or one that equals the frame before is not counted.

Prints the tables and writes benchmarks/results/soak.json and soak.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

import common

RSS_MARKS_MIN = (1, 5, 10)
FIT_FROM_MIN = 1.0
REPEAT_MAD = 0.1  # mean |luma difference| below which a frame repeats the one before
FULL_MINUTE_S = 55.0  # a minute of the recording this long counts in the fps spread
# How long the child may take beyond its --duration (warm-up, writing the recording).
GRACE_S = 300.0


@dataclass(frozen=True)
class MemorySample:
    t_s: float  # since the child started
    rss_mb: float
    peak_mb: float


def read_memory(pid: int) -> tuple[float, float] | None:
    """(VmRSS, VmHWM) of process `pid` in MB (10^6 bytes), or None once it is gone."""
    fields: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    fields[name] = int(value.split()[0]) * 1024 / 1e6  # given in kB
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "VmRSS" not in fields:  # a zombie has no memory left to report
        return None
    return fields["VmRSS"], fields.get("VmHWM", fields["VmRSS"])


def call_command(seconds: float, output: Path, extra: list[str]) -> list[str]:
    """The `talkcodec call` command line, run by this interpreter (the same environment)."""
    flags = ["call", "--demo", "--headless", "--duration", f"{seconds:g}", "-o", str(output)]
    return [sys.executable, "-m", "talkcodec.cli", *flags, *extra]


def run_call(command: list[str], seconds: float, sample_s: float, log: Path) -> list[MemorySample]:
    """Run the call, sampling its memory until it exits; raises if it fails or hangs."""
    samples: list[MemorySample] = []
    with log.open("w") as log_file, tqdm(total=round(seconds), unit="s", desc="call") as bar:
        started = next_sample = time.monotonic()
        child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        while child.poll() is None:
            elapsed = time.monotonic() - started
            memory = read_memory(child.pid)
            if memory is not None:
                samples.append(MemorySample(elapsed, *memory))
                bar.set_postfix(rss_mb=f"{memory[0]:.0f}")
            bar.update(min(round(elapsed), bar.total) - bar.n)
            if elapsed > seconds + GRACE_S:
                child.kill()
                child.wait()
                raise SystemExit(f"the call ran {elapsed:.0f} s, over {seconds:g} s + grace")
            next_sample += sample_s
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.0, next_sample - time.monotonic()))
    if child.returncode != 0:
        tail = log.read_text().strip().splitlines()[-5:]
        raise SystemExit(f"the call failed ({child.returncode}):\n" + "\n".join(tail))
    return samples


def rss_at(samples: list[MemorySample], minutes: float) -> MemorySample | None:
    """The sample nearest `minutes` (None when the call ended before it)."""
    if not samples or samples[-1].t_s < minutes * 60 - 1:
        return None
    return min(samples, key=lambda s: abs(s.t_s - minutes * 60))


def growth_mb_per_min(samples: list[MemorySample], seconds: float) -> tuple[float | None, int]:
    """(slope of RSS over time in MB/min from FIT_FROM_MIN to `seconds`, samples it fits)."""
    late = [s for s in samples if FIT_FROM_MIN * 60 <= s.t_s <= seconds]
    if len(late) < 2:
        return None, len(late)
    minutes = np.array([s.t_s / 60 for s in late])
    slope = np.polyfit(minutes, np.array([s.rss_mb for s in late]), 1)[0]
    return float(slope), len(late)


def frames_per_minute(video: Path) -> list[dict[str, float]]:
    """Per minute of the recording (by frame timestamp): frames recorded, frames new (the
    received half changed from the previous frame by REPEAT_MAD or more), and new frames/s."""
    recorded: dict[int, int] = {}
    new: dict[int, int] = {}
    last_s = 0.0
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        previous: np.ndarray | None = None
        frames = tqdm(container.decode(stream), total=stream.frames or None, unit="frame")
        for frame in frames:
            luma = frame.to_ndarray(format="gray")
            received = luma[:, luma.shape[1] // 2 :].astype(np.int16)  # input | received
            minute, last_s = int(frame.time // 60), frame.time
            recorded[minute] = recorded.get(minute, 0) + 1
            changed = previous is None or bool(np.abs(received - previous).mean() >= REPEAT_MAD)
            new[minute] = new.get(minute, 0) + int(changed)
            previous = received
        frame_s = 1 / float(stream.average_rate) if stream.average_rate else 0.0
    rows = []
    for minute in sorted(recorded):
        span_s = min(60.0, last_s + frame_s - 60 * minute)
        row = {"minute": minute + 1, "span_s": round(span_s, 2)}
        row |= {"recorded_frames": recorded[minute], "new_frames": new[minute]}
        rows.append(row | {"fps": round(new[minute] / span_s, 2)})
    return rows


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": round(float(np.mean(values)), 2), "max": max(values)}


def call_summary(stats: dict) -> dict[str, object]:
    """What the stats JSON says of the whole call, the fields this report shows."""
    receiver, sender = stats.get("receiver", {}), stats.get("sender", {})
    decoder = receiver.get("decoder", {})
    return {
        "duration_s": receiver.get("duration_s"),
        "frames_displayed": receiver.get("frames_displayed"),
        "fps": receiver.get("fps"),
        "latency_ms": receiver.get("latency_ms"),
        "display_gap_ms": receiver.get("display_gap_ms"),
        "lost_packets": decoder.get("lost_packets"),
        "late_packets": decoder.get("late_packets"),
        "dropped_messages": receiver.get("dropped_messages"),
        "wire_kbit_s": receiver.get("wire_kbit_s"),
        "frames_encoded": sender.get("frames_encoded"),
        "frames_dropped_at_capture": sender.get("frames_dropped_at_capture"),
        "frames_not_sent_rate_cap": sender.get("frames_not_sent_rate_cap"),
        "keyframes": sender.get("keyframes"),
    }


def report_for(
    args: argparse.Namespace, command: list[str], samples: list[MemorySample], out_dir: Path
) -> dict[str, object]:
    growth, fitted = growth_mb_per_min(samples, args.minutes * 60)
    marks = {f"{m} min": rss_at(samples, m) for m in RSS_MARKS_MIN if m <= args.minutes}
    marks["end"] = samples[-1] if samples else None
    per_minute = frames_per_minute(out_dir / "call.mp4")
    call = call_summary(json.loads((out_dir / "call.json").read_text()))
    return {
        "command": "talkcodec " + shlex.join(command[3:]),
        "benchmark_command": shlex.join(
            ["python", "benchmarks/soak.py", "--minutes", f"{args.minutes:g}"]
            + (["--", *args.call_flags] if args.call_flags else [])
        ),
        "minutes": args.minutes,
        "sample_s": args.sample_s,
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        "rss_mb": {
            name: None if s is None else {"t_s": round(s.t_s, 1), "rss_mb": round(s.rss_mb, 1)}
            for name, s in marks.items()
        },
        "peak_rss_mb": round(max(s.peak_mb for s in samples), 1) if samples else None,
        "growth_mb_per_min": None if growth is None else round(growth, 3),
        "growth_fit": {"from_min": FIT_FROM_MIN, "samples": fitted},
        "frames_per_minute": per_minute,
        "fps_full_minutes": spread([r["fps"] for r in per_minute if r["span_s"] >= FULL_MINUTE_S]),
        "new_frames_total": sum(row["new_frames"] for row in per_minute),
        "repeat_mad": REPEAT_MAD,
        "call": call,
        "samples": [[round(s.t_s, 1), round(s.rss_mb, 1)] for s in samples],
    }


def markdown(report: dict) -> str:
    memory = common.markdown_table(
        ["at", "t (s)", "RSS (MB)"],
        [
            [name, "-", "-"] if mark is None else [name, mark["t_s"], mark["rss_mb"]]
            for name, mark in report["rss_mb"].items()
        ],
    )
    fps = common.markdown_table(
        ["minute", "seconds", "frames recorded", "new frames", "fps"],
        [
            [r["minute"], r["span_s"], r["recorded_frames"], r["new_frames"], r["fps"]]
            for r in report["frames_per_minute"]
        ],
    )
    call, growth = report["call"], report["growth_mb_per_min"]
    latency = call["latency_ms"] or {}
    machine = report["machine"]
    lines = [
        f"# Soak: a {report['minutes']:g}-minute `talkcodec call --demo`",
        "",
        f"`{report['command']}`, memory sampled every {report['sample_s']:g} s "
        f"(`{report['benchmark_command']}`). Machine: "
        f"{machine['processor']}, {machine['cpus']} cores (load average "
        f"{machine['load_average_1min_at_end']:.1f} at the end).",
        "",
        "## Memory (RSS of the call's process; t from its start)",
        "",
        *memory,
        "",
        f"Growth from minute {report['growth_fit']['from_min']:g} to the call's end: "
        + ("-" if growth is None else f"{growth:+.3f} MB/min")
        + f" (least squares over {report['growth_fit']['samples']} samples); "
        f"peak RSS {common.fmt(report['peak_rss_mb'], 1)} MB.",
        "",
        "## Frames shown per minute (new frames in the recording)",
        "",
        *fps,
        "",
        "Over the full minutes: "
        + (
            "-"
            if report["fps_full_minutes"] is None
            else "fps min {min}, mean {mean}, max {max}".format(**report["fps_full_minutes"])
        )
        + ".",
        "",
        f"New frames in the recording: {report['new_frames_total']}; the receiver counted "
        f"{call['frames_displayed']} shown, {common.fmt(call['fps'], 2)} fps over "
        f"{common.fmt(call['duration_s'], 1)} s. Latency capture to display: median "
        f"{common.fmt(latency.get('median'), 0)} ms, p95 {common.fmt(latency.get('p95'), 0)} ms; "
        f"lost {call['lost_packets']}, late {call['late_packets']} keypoint packets; sender: "
        f"{call['frames_encoded']} frames encoded, {call['frames_dropped_at_capture']} dropped "
        f"at capture, {call['frames_not_sent_rate_cap']} not sent (rate cap), keyframes "
        f"{call['keyframes']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the call")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: a new temp dir")
    parser.add_argument("--sample-s", type=float, default=5.0, help="memory sampling period")
    parser.add_argument("call_flags", nargs="*", help="after --: more `talkcodec call` flags")
    args = parser.parse_args()
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="talkcodec-soak-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60
    command = call_command(seconds, out_dir / "call.mp4", args.call_flags)
    print(f"talkcodec {shlex.join(command[3:])}  (log: {out_dir / 'call.log'})")
    samples = run_call(command, seconds, args.sample_s, out_dir / "call.log")
    report = report_for(args, command, samples, out_dir)
    text = markdown(report)
    path = common.write_results("soak", report, text)
    print(text)
    print(f"wrote {path} and {path.with_suffix('.md')}; the call's files are in {out_dir}")


if __name__ == "__main__":
    main()
