"""What the benchmark scripts share: their command-line preamble, the clips they measure, the
results folder, and markdown tables. The codec loop itself is talkcodec.evaluation.stream_frames
and clip loading talkcodec.keypoints.dataset; scripts import this module as `common` (they run
as `python benchmarks/NAME.py`, which puts this folder on the path).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

from talkcodec.keypoints.dataset import list_clips

RESULTS = Path(__file__).resolve().parent / "results"
DEV_DATA = Path("../shared/data/dev")


def parser(doc: str | None, frames: int | None = 250) -> argparse.ArgumentParser:
    """An argument parser described by the first line of the script's docstring, with --data
    (the dev clips) and, unless frames is None, --frames (the first N frames of each clip)."""
    summary = (doc or "").strip().split("\n")[0]
    made = argparse.ArgumentParser(description=summary)
    made.add_argument("--data", type=Path, default=DEV_DATA, help="folder of clips")
    if frames is not None:
        made.add_argument("--frames", type=int, default=frames, help="first N frames per clip")
    return made


def clips(folder: Path, limit: int | None = None) -> list[Path]:
    """The clips of `folder` (the first `limit`); exits with one line when there are none."""
    if not folder.is_dir():
        raise SystemExit(f"no clips: {folder} is not a folder")
    found = list_clips(folder)[:limit]
    if not found:
        raise SystemExit(f"no clips: {folder} holds no video")
    return found


def write_results(name: str, report: object, markdown: str | None = None) -> Path:
    """benchmarks/results/NAME.json (and NAME.md with `markdown`); returns the JSON's path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    if markdown is not None:
        (RESULTS / f"{name}.md").write_text(markdown)
    return path


def mean_of(rows: Sequence[dict], key: str) -> float | None:
    """The mean of rows[key] over the rows where it is a finite number; None where none is."""
    values = [row[key] for row in rows if row.get(key) is not None and math.isfinite(row[key])]
    return sum(values) / len(values) if values else None


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """The lines of a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
