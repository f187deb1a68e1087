"""Per-frame speed and fidelity of the GAN refiner on each CPU backend.

    python benchmarks/refiner_speed.py [--weights PATH] [--size 256] [--threads 2] [--runs 100]

Times FrameRefiner (the per-frame network, through each backend's `refine`, numpy in and out)
at SIZE x SIZE: median and p95 over RUNS calls after warm-up, in blocks that take turns so
that load from other processes hits every variant alike (see `timed_ms`). Also times
ReferenceEncoder (once per reference) and compares every variant's frame with torch fp32 on
the same inputs (max abs difference, PSNR). Variants: torch fp32, torch bf16 autocast, ONNX
Runtime fp32 (the backends in talkcodec.generator.backends), and two ONNX Runtime variants that
are not offered as backends (fp16 weights, int8 dynamic quantisation), measured to show why:
on x86 CPUs without AVX512-FP16, ONNX Runtime folds casts back to fp32 into the fp16 graph and
runs the same fp32 convolutions (no faster, less exact), and int8 dynamic quantisation of
these small convolutions is no faster and costs accuracy.

Uses weights/refiner-v1.safetensors when present, else random weights with the zero-initialised
heads perturbed (the report says which). Prints a table and writes
benchmarks/results/refiner-speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from skimage.data import astronaut

from talkcodec.generator.backends import RefinerBackend, make_backend
from talkcodec.generator.refiner import GUIDE_CHANNELS, Refiner
from talkcodec.generator.weights import DEFAULT_REFINER_WEIGHTS, save_refiner

import common

RESULTS = common.RESULTS
Frame = tuple[np.ndarray, np.ndarray, np.ndarray]  # reference, grid, guide


def random_weights(path: Path) -> Path:
    """Untrained refiner weights whose output heads are not zero, so every layer does work."""
    torch.manual_seed(0)
    refiner = Refiner()
    with torch.no_grad():
        for head in (refiner.frame_refiner.flow_head, refiner.frame_refiner.output_head):
            for parameter in head.parameters():
                parameter.normal_(0.0, 0.05)
    save_refiner(refiner, path, metadata={"note": "random, heads perturbed"})
    return path


def sample_frame(size: int) -> Frame:
    """A face reference, a head-motion-like warp grid (rotation, shift, wobble) and guides."""
    image = torch.from_numpy(astronaut()[:256, 96:352]).permute(2, 0, 1)[None].float() / 255
    reference = torch.nn.functional.interpolate(image, size=(size, size), mode="area")
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    angle = np.deg2rad(4.0)
    source_x = np.cos(angle) * x - np.sin(angle) * y + 0.03 + 0.01 * np.sin(3 * y)
    source_y = np.sin(angle) * x + np.cos(angle) * y - 0.02
    grid = np.stack([source_x, source_y], axis=-1)[None].astype(np.float32)  # (1, S, S, 2)

    def blob(cx: float, cy: float, radius: float) -> np.ndarray:
        return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / radius**2)

    # Guide channels: log area change, inner mouth, eyes (see generator/refiner.py).
    guide = np.stack(
        [0.1 * np.sin(2 * x), blob(0.0, 0.45, 0.15), blob(-0.3, -0.2, 0.1) + blob(0.3, -0.2, 0.1)]
    )[None].astype(np.float32)  # (1, G, S, S)
    assert guide.shape[1] == GUIDE_CHANNELS
    return reference.numpy().astype(np.float32), grid, guide


def ort_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the backend
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def unoffered_variants(
    backend: RefinerBackend, frame: Frame, features: object, folder: Path, threads: int
) -> dict[str, Callable[[], np.ndarray]]:
    """ONNX Runtime with fp16 weights (fp32 I/O) and with int8 dynamic quantisation."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.float16 import convert_float_to_float16

    source = backend.models.frame_refiner  # type: ignore[attr-defined]
    reference, grid, guide = frame
    feeds = {"reference": reference, "reference_features": features, "grid": grid, "guide": guide}
    fp16_path = folder / "frame_refiner-fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(fp16_path))
    int8_path = folder / "frame_refiner-int8.onnx"
    quantize_dynamic(str(source), str(int8_path), weight_type=QuantType.QUInt8)
    sessions = {
        "onnxruntime-fp16": ort_session(fp16_path, threads),
        "onnxruntime-int8-dynamic": ort_session(int8_path, threads),
    }
    return {name: partial(_run_first_output, session, feeds) for name, session in sessions.items()}


def _run_first_output(
    session: onnxruntime.InferenceSession, feeds: dict[str, object]
) -> np.ndarray:
    return session.run(None, feeds)[0]


def timed_ms(
    runners: Mapping[str, Callable[[], object]], runs: int, warmup: int, rounds: int = 5
) -> dict[str, list[float]]:
    """Milliseconds per call of each runner.

    The runners take turns in `rounds` blocks of runs/rounds calls, so slow drifts in the load
    from other processes hit them alike; each block starts with `warmup` untimed calls, so a
    runner is never timed right after another one's threads were busy.
    """
    samples: dict[str, list[float]] = {name: [] for name in runners}
    per_block = max(runs // rounds, 1)
    for _ in range(rounds):
        for name, run in runners.items():
            for _ in range(warmup):
                run()
            for _ in range(per_block):
                started = time.perf_counter()
                run()
                samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def fidelity(frame: np.ndarray, reference_frame: np.ndarray) -> dict[str, float | None]:
    error = frame.astype(np.float64) - reference_frame
    mse = float(np.mean(error**2))
    return {
        "max_abs_diff": float(np.abs(error).max()),
        "psnr_vs_torch_fp32_db": None if mse == 0 else 10 * np.log10(1.0 / mse),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per block")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        weights = args.weights or DEFAULT_REFINER_WEIGHTS
        weights_note = str(weights)
        if args.weights is None and not weights.is_file():
            weights = random_weights(scratch_dir / "refiner-random.safetensors")
            weights_note = "random weights, heads perturbed (weights/refiner-v1 not trained yet)"
        print(f"weights: {weights_note}")
        report = run(args, weights, scratch_dir)
    report["weights"] = weights_note
    print_table(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "refiner-speed.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def run(args: argparse.Namespace, weights: Path, scratch_dir: Path) -> dict[str, object]:
    frame = sample_frame(args.size)
    reference, grid, guide = frame
    started = time.perf_counter()
    backends = {
        name: make_backend(name, weights, args.size, args.threads, cache_dir=scratch_dir)
        for name in ("torch", "torch-bf16", "onnxruntime")
    }
    setup_s = time.perf_counter() - started
    features = {name: backend.encode_reference(reference) for name, backend in backends.items()}
    runners: dict[str, Callable[[], np.ndarray]] = {
        name: partial(backend.refine, reference, features[name], grid, guide)
        for name, backend in backends.items()
    }
    runners.update(
        unoffered_variants(
            backends["onnxruntime"], frame, features["onnxruntime"], scratch_dir, args.threads
        )
    )
    encoder_runners: dict[str, Callable[[], object]] = {
        name: partial(backend.encode_reference, reference) for name, backend in backends.items()
    }
    frame_ms = timed_ms(runners, args.runs, args.warmup)
    encoder_ms = timed_ms(encoder_runners, args.runs // 2, 3)
    expected = runners["torch"]().astype(np.float64)
    variants = {}
    for name, run_once in runners.items():
        samples = np.array(frame_ms[name])
        variants[name] = {
            "offered_as_backend": name in backends,
            "describe": backends[name].describe() if name in backends else "not offered",
            "frame_refiner_median_ms": float(np.median(samples)),
            "frame_refiner_p95_ms": float(np.percentile(samples, 95)),
            "frames_per_s_at_median": float(1000 / np.median(samples)),
            "reference_encoder_median_ms": (
                float(np.median(encoder_ms[name])) if name in encoder_ms else None
            ),
            **fidelity(run_once(), expected),
        }
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "size_px": args.size,
        "threads": args.threads,
        "runs": args.runs,
        "warmup": args.warmup,
        "backend_setup_s_including_onnx_export": setup_s,
        "variants": variants,
    }


def print_table(report: dict[str, object]) -> None:
    size = report["size_px"]
    print(
        f"FrameRefiner at {size}x{size}, {report['threads']} threads, {report['runs']} runs "
        f"(load average {report['machine']['load_average_1min']:.1f})"  # type: ignore[index]
    )
    print(
        f"  {'variant':<40} {'median ms':>9} {'p95 ms':>7} {'fps':>6} {'encoder ms':>10} "
        f"{'max |diff|':>10} {'PSNR dB':>8}"
    )
    for name, row in report["variants"].items():  # type: ignore[attr-defined]
        encoder = row["reference_encoder_median_ms"]
        psnr = row["psnr_vs_torch_fp32_db"]
        label = name if row["offered_as_backend"] else f"{name} (not offered)"
        print(
            f"  {label:<40} {row['frame_refiner_median_ms']:>9.2f} "
            f"{row['frame_refiner_p95_ms']:>7.2f} {row['frames_per_s_at_median']:>6.1f} "
            f"{'-' if encoder is None else f'{encoder:.2f}':>10} {row['max_abs_diff']:>10.2e} "
            f"{'exact' if psnr is None else f'{psnr:.1f}':>8}"
        )


if __name__ == "__main__":
    main()
