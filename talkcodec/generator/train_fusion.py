"""Training the learned fusion of the hybrid mode (talkcodec.generator.fusion_net).

    python -m talkcodec.generator.train_fusion --out runs/fusion [--data ../shared/data/train]
        [--steps 6000] [--export weights/fusion-v5.safetensors] [--init-from W]

1. Examples: every clip of --data goes through the real codec (StreamEncoder, hybrid at 48 px,
   GC or WebP keyframe, 3, 4, 6 or 8 kbit/s of low-res and a picture in every second or third
   packet, alternating over the clips) and the decoder's renderer; every third frame's
   low-res picture as the receiver fuses it (StreamDecoder.picture_for), render and camera
   frame are kept in --out/examples (one .npz per clip, made once, reused on a resumed run).
2. Training: random 128 px crops (mirrored half the time), loss 1 - HaarPSI + 2 L1 + 20 MSE
   against the camera frame (--l1-weight, --mse-weight), Adam. Held out are all clips of every
   --holdout-every'th person of the data's MANIFEST.tsv, so validation is on people the network
   never saw. Every --eval-every steps their clips are fused whole and scored with
   talkcodec.metrics (HaarPSI and PSNR), per person; the best mean HaarPSI over people is kept,
   provided no person scores more than 0.02 HaarPSI or 0.3 dB PSNR below the agreement-mask
   fusion (the project's validation rule). Progress goes to --out/log.txt; --out/checkpoint.pt
   resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from talkcodec.generator.fusion import FusionConfig, fuse
from talkcodec.generator.fusion_net import (
    FusionModel,
    FusionNet,
    FusionNetConfig,
    load_fusion,
    save_fusion,
)
from talkcodec.generator.learned_fusion import planes_of
from talkcodec.training.losses import haarpsi as haarpsi_torch

logger = logging.getLogger(__name__)

LOWRES_PX = 48
LOWRES_KBPS = (3.0, 4.0, 6.0, 8.0)
KEYFRAME_CODECS = ("gc", "av1", "webp")
# Pictures in every second and every third packet (the frames between are fused with the last
# picture, moved as the receiver moves it: StreamDecoder.picture_for).
LOWRES_EVERY = (2, 3)
CROP_PX = 128
# A held-out person may lose at most this much HaarPSI, or this much PSNR, against the mask
# fusion (the project's validation rule) for an evaluation to be kept.
MAX_CLIP_DROP = 0.02
MAX_PSNR_DROP_DB = 0.3


def make_examples(clip: Path, index: int, target: Path, max_frames: int) -> bool:
    """Run one clip through the hybrid codec and save its examples; False if it has no face."""
    from talkcodec.codec import StreamDecoder, StreamEncoder
    from talkcodec.config import DecoderConfig, EncoderConfig
    from talkcodec.evaluation import stream_frames
    from talkcodec.keypoints.dataset import load_reference_clip

    reference = load_reference_clip(clip, 256, max_frames=max_frames)
    if reference is None:
        return False
    # The clip's settings, alternating over the clips: the keyframe codec fastest, then the
    # low-res rate, then the cadence.
    settings = list(product(LOWRES_EVERY, LOWRES_KBPS, KEYFRAME_CODECS))
    every, kbps, codec = settings[index % len(settings)]
    config = EncoderConfig(
        size_px=256,
        crop=False,
        keyframe_codec=codec,
        reference_bank_size=1,
        lowres_px=LOWRES_PX,
        lowres_kbps=kbps,
        lowres_every_frames=every,
    )
    encoder = StreamEncoder(config)
    decoder = StreamDecoder(encoder.header, DecoderConfig())
    lowres, renders, truths = [], [], []
    try:
        for streamed in stream_frames(reference.frames, encoder):
            frame = None
            for packet in streamed.packets:
                frame = decoder.decode_packet(packet) or frame
            kept = streamed.index % 3 == 0
            if frame is None or frame.lowres is None or not (kept or frame.picture_fresh):
                continue
            # Frames with a fresh picture are rendered too: the picture a later frame between
            # pictures is fused with is moved by the render's change since then, as the
            # receiver does (StreamDecoder.picture_for).
            render = decoder.renderer.render(frame.landmarks)
            picture = decoder.picture_for(frame, render)
            if kept:
                renders.append(render)
                lowres.append(picture)
                truths.append(reference.frames[streamed.index])
    finally:
        encoder.close()
    if not lowres:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        target,
        lowres=np.stack(lowres),
        render=np.stack(renders),
        truth=np.stack(truths),
        level=encoder.header.fusion_level,
    )
    return True


@dataclass
class ClipExamples:
    """One clip's examples as network inputs, and for a held-out clip the agreement-mask
    fusion's (HaarPSI, PSNR) on them (the baseline every evaluation compares with, scored
    once)."""

    name: str
    planes: np.ndarray  # (N, 11, H, W) float16
    truth: np.ndarray  # (N, H, W, 3) uint8
    mask_scores: tuple[float, float] | None


def _scores(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
    """Mean (HaarPSI, PSNR dB) over (truth, picture) uint8 pairs."""
    from talkcodec.metrics import haarpsi, psnr

    return (
        float(np.mean([haarpsi(truth, picture) for truth, picture in pairs])),
        float(np.mean([psnr(truth, picture) for truth, picture in pairs])),
    )


def load_examples(path: Path, held_out: bool) -> ClipExamples:
    with np.load(path) as data:
        lowres, render, truth = data["lowres"], data["render"], data["truth"]
        level = int(data["level"])
    planes = np.stack([planes_of(lo, re, level) for lo, re in zip(lowres, render, strict=True)])
    mask_scores = None
    if held_out:
        config = FusionConfig.for_level(level)
        pictures = zip(truth, lowres, render, strict=True)
        mask_scores = _scores([(t, fuse(lo, re, config)) for t, lo, re in pictures])
    return ClipExamples(path.stem, planes.astype(np.float16), truth, mask_scores)


def score(model: FusionModel, clip: ClipExamples) -> tuple[float, float]:
    """Mean (HaarPSI, PSNR dB) of the learned fusion over the clip's frames."""
    pairs = []
    with torch.no_grad():
        for planes, truth in zip(clip.planes, clip.truth, strict=True):
            fused = model(torch.from_numpy(planes[None].astype(np.float32)))[0]
            image = np.clip(fused.permute(1, 2, 0).numpy() * 255 + 0.5, 0, 255).astype(np.uint8)
            pairs.append((truth, image))
    return _scores(pairs)


def batch_of(
    clips: list[ClipExamples], size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(planes (B, 11, C, C), truth (B, 3, C, C) float in [0, 1]) of random crops."""
    planes, truths = [], []
    for _ in range(size):
        clip = clips[rng.integers(len(clips))]
        i = rng.integers(len(clip.truth))
        height, width = clip.truth.shape[1:3]
        y, x = rng.integers(0, height - CROP_PX + 1), rng.integers(0, width - CROP_PX + 1)
        plane = clip.planes[i, :, y : y + CROP_PX, x : x + CROP_PX].astype(np.float32)
        truth = clip.truth[i, y : y + CROP_PX, x : x + CROP_PX].transpose(2, 0, 1) / 255.0
        if rng.random() < 0.5:
            plane, truth = plane[..., ::-1], truth[..., ::-1]
        planes.append(np.ascontiguousarray(plane))
        truths.append(np.ascontiguousarray(truth, dtype=np.float32))
    return torch.from_numpy(np.stack(planes)), torch.from_numpy(np.stack(truths))


def held_out_clips(clips: list[Path], every: int) -> dict[str, str]:
    """The clips held out for validation (stem -> person): every `every`th person of the
    data's MANIFEST.tsv (its person_id column; all of that person's clips), or every `every`th
    clip (each its own person) where the folder has no manifest."""
    manifest = clips[0].parent.parent / "MANIFEST.tsv"
    if not manifest.is_file():
        return {clip.stem: clip.stem for clip in clips[::every]}
    rows = [line.split("\t") for line in manifest.read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    file_column, person_column = header.index("file"), header.index("person_id")
    person_of = {Path(row[file_column]).stem: row[person_column] for row in rows}
    people = sorted({person_of.get(clip.stem, clip.stem) for clip in clips})
    held_people = set(people[::every])
    held = {clip.stem: person_of.get(clip.stem, clip.stem) for clip in clips}
    return {stem: person for stem, person in held.items() if person in held_people}


def evaluate(
    model: FusionModel, held: list[ClipExamples], person_of: dict[str, str], step: int
) -> dict:
    """The held-out scores at this step: per person (the mean of their clips) learned and
    plain (mask) HaarPSI and PSNR, their means over people, and the largest drop of any
    person on each."""
    model.eval()
    by_person: dict[str, list[tuple[float, ...]]] = {}
    for clip in held:
        assert clip.mask_scores is not None  # loaded as held out
        learned = score(model, clip)
        row = (learned[0], clip.mask_scores[0], learned[1], clip.mask_scores[1])
        by_person.setdefault(person_of[clip.name], []).append(row)
    scores = {person: np.mean(values, axis=0).tolist() for person, values in by_person.items()}
    rows = np.array(list(scores.values()))  # (people, 4)
    return {
        "step": step,
        "held_haarpsi": float(rows[:, 0].mean()),
        "held_plain_haarpsi": float(rows[:, 1].mean()),
        "held_psnr": float(rows[:, 2].mean()),
        "held_plain_psnr": float(rows[:, 3].mean()),
        "held_worst_drop": float((rows[:, 1] - rows[:, 0]).max()),
        "held_worst_psnr_drop": float((rows[:, 3] - rows[:, 2]).max()),
        "per_person": scores,  # learned HaarPSI, mask HaarPSI, learned PSNR, mask PSNR
    }


def qualifies(entry: dict) -> bool:
    """Whether an evaluation keeps every held-out person within the validation rule."""
    return (
        entry["held_worst_drop"] <= MAX_CLIP_DROP
        and entry["held_worst_psnr_drop"] <= MAX_PSNR_DROP_DB
    )


def train(
    args: argparse.Namespace,
    train_clips: list[ClipExamples],
    held: list[ClipExamples],
    person_of: dict[str, str],
) -> dict | None:
    """Train (resuming from --out/checkpoint.pt) and return the best evaluation, with the
    network's state under "net", or None if no evaluation qualified."""
    net = FusionNet(FusionNetConfig(channels=tuple(args.widths)))
    model = FusionModel(net)
    optimiser = torch.optim.Adam(net.parameters(), lr=args.lr)
    step, best, history = 0, None, []
    checkpoint = args.out / "checkpoint.pt"
    if args.init_from is not None and not checkpoint.is_file():
        initial, _ = load_fusion(args.init_from)
        if initial.config != net.config:
            raise SystemExit(
                f"{args.init_from} has widths {initial.config.channels}, not "
                f"{net.config.channels} (--widths)"
            )
        net.load_state_dict(initial.state_dict())
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        net.load_state_dict(state["net"])
        optimiser.load_state_dict(state["optimiser"])
        step, best, history = state["step"], state["best"], state["history"]
    rng = np.random.default_rng(step)
    start = step
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: 0.5 * (1 + np.cos(np.pi * min(1.0, (s + start) / args.steps)))
    )
    progress = tqdm(total=args.steps, initial=step, desc="fusion", unit="step")
    started = time.time()
    with open(args.out / "log.txt", "a") as log:

        def record(entry: dict) -> None:
            """Log an evaluation and keep the weights if they are the best that qualify."""
            nonlocal best
            history.append(entry)
            print(json.dumps(entry), file=log, flush=True)
            if qualifies(entry) and (best is None or entry["held_haarpsi"] > best["held_haarpsi"]):
                best = entry | {"net": {k: v.clone() for k, v in net.state_dict().items()}}

        if args.init_from is not None and step == 0:
            # The starting weights on these examples: what the run must beat (and the weights
            # kept if no later evaluation does).
            record(evaluate(model, held, person_of, step) | {"init_from": str(args.init_from)})
        while step < args.steps:
            model.train()
            planes, truth = batch_of(train_clips, args.batch, rng)
            fused = model(planes)
            quality = haarpsi_torch(truth, fused).mean()
            error = fused - truth
            loss = (1 - quality) + args.l1_weight * error.abs().mean()
            loss = loss + args.mse_weight * error.square().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            progress.update(1)
            progress.set_postfix(haarpsi=f"{quality.item():.3f}")
            if step % args.eval_every and step != args.steps:
                continue
            entry = evaluate(model, held, person_of, step) | {"loss": float(loss.item())}
            record(entry | {"minutes": (time.time() - started) / 60})
            state = {"net": net.state_dict(), "optimiser": optimiser.state_dict(), "step": step}
            torch.save(state | {"best": best, "history": history}, checkpoint)
    progress.close()
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=120, help="frames read per clip")
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--l1-weight", type=float, default=2.0)
    parser.add_argument("--mse-weight", type=float, default=20.0)
    parser.add_argument(
        "--widths",
        type=int,
        nargs=3,
        default=list(FusionNetConfig().channels),
        help="channels at 1/2, 1/4 and 1/8 of the image",
    )
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--holdout-every", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--export", type=Path, default=None, help="write the best weights here")
    parser.add_argument(
        "--init-from", type=Path, default=None,
        help="start from these fusion weights (e.g. weights/fusion-v5.safetensors)",
    )  # fmt: skip
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = sorted(args.data.glob("*.mp4"))
    if not clips:
        raise SystemExit(f"no clips in {args.data}")
    examples_dir = args.out / "examples"
    for index, clip in enumerate(tqdm(clips, desc="examples", unit="clip")):
        target = examples_dir / f"{clip.stem}.npz"
        if not target.is_file():
            make_examples(clip, index, target, args.frames)
    held_names = held_out_clips(clips, args.holdout_every)
    train_clips, held = [], []
    for path in tqdm(sorted(examples_dir.glob("*.npz")), desc="loading", unit="clip"):
        held_out = path.stem in held_names
        (held if held_out else train_clips).append(load_examples(path, held_out))
    best = train(args, train_clips, held, held_names)
    if args.export is None:
        return
    if best is None:
        raise SystemExit(
            f"no evaluation kept every held-out person within {MAX_CLIP_DROP} HaarPSI "
            f"and {MAX_PSNR_DROP_DB} dB"
        )
    net = FusionNet(FusionNetConfig(channels=tuple(args.widths)))
    net.load_state_dict(best["net"])
    metadata = {
        "data": str(args.data),
        "train_clips": json.dumps(sorted(c.name for c in train_clips)),
        "held_clips": json.dumps(sorted(c.name for c in held)),
        "held_people": json.dumps(sorted(set(held_names.values()))),
        "steps": str(best["step"]),
        "held_haarpsi": f"{best['held_haarpsi']:.4f}",
        "held_plain_haarpsi": f"{best['held_plain_haarpsi']:.4f}",
        "held_psnr": f"{best['held_psnr']:.3f}",
        "held_plain_psnr": f"{best['held_plain_psnr']:.3f}",
        "command": "python -m talkcodec.generator.train_fusion " + " ".join(argv),
    }
    save_fusion(net, args.export, metadata)
    print(
        f"wrote {args.export} (step {best['step']}, held-out HaarPSI "
        f"{best['held_haarpsi']:.4f} vs {best['held_plain_haarpsi']:.4f} with the mask alone)"
    )


if __name__ == "__main__":
    main()
