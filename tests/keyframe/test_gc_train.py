"""GC training: the selective-mode mask, selective steps, starting a run from other weights,
widening the latent, the soft rate, and the weights version on export -- on tiny synthetic crops
(no clips)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from talkcodec.keyframe.gc.codec import GCCodec
from talkcodec.keyframe.gc.model import GCModel, GCModelConfig
from talkcodec.keyframe.gc.selective import cell_channels, person_cells, sent_mask
from talkcodec.keyframe.gc.train import (
    CHECKPOINT_NAME,
    MarginalRate,
    TrainConfig,
    Trainer,
    initial_model_state,
    widened_state,
)
from talkcodec.keyframe.gc.weights import export_weights, fit_prior_counts

SIZE = 96  # the smallest crop MS-SSIM's five scales accept


def synthetic_crops(count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(N, 96, 96, 3) smooth random crops and (N, 96, 96) uint8 person probabilities: the
    person is the left half (255), the background the right half (0)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (count, 12, 12, 3)).astype(np.float32)
    crops = np.kron(coarse, np.ones((1, 8, 8, 1), dtype=np.float32)).astype(np.uint8)
    person = np.zeros((count, SIZE, SIZE), dtype=np.uint8)
    person[:, :, : SIZE // 2] = 255
    return crops, person


def tiny_config(**overrides: object) -> TrainConfig:
    settings: dict[str, object] = {
        "crop_px": SIZE,
        "batch_size": 2,
        "warmup_steps": 2,
        "total_steps": 4,
        "checkpoint_every_steps": 2,
        "selective_probability": 1.0,
    }
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def test_person_cells_need_a_quarter_of_a_cell_and_grow_by_one() -> None:
    probability = torch.zeros(1, 1, 80, 80)
    probability[0, 0, 32:48, 32:40] = 1.0  # half of cell (2, 2)
    probability[0, 0, 0:3, 0:3] = 1.0  # 9 of 256 pixels of cell (0, 0): too few
    cells = person_cells(probability)[0]
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[1:4, 1:4] = True  # cell (2, 2) and its 8 neighbours
    assert torch.equal(cells, expected)


def test_channel_counts_and_sent_mask_follow_the_person() -> None:
    cells = torch.tensor([[[True, False]]])
    counts = cell_channels(cells, 8, 2)
    assert counts.tolist() == [[[8, 2]]]
    mask = sent_mask(counts, 8)
    assert mask.shape == (1, 8, 1, 2)
    assert mask[0, :, 0, 0].tolist() == [1.0] * 8
    assert mask[0, :, 0, 1].tolist() == [1.0, 1.0] + [0.0] * 6
    with pytest.raises(ValueError, match="background channels must be in 0..8"):
        cell_channels(cells, 8, 9)


def test_generator_ignores_what_was_not_sent() -> None:
    """Symbols beyond a position's count cannot change the picture: the receiver never has them."""
    torch.manual_seed(0)
    model = GCModel(GCModelConfig()).eval()
    symbols = torch.randint(0, 5, (1, 8, 2, 2))
    other = symbols.clone()
    other[0, 2:, :, 1] = (other[0, 2:, :, 1] + 1) % 5  # differs only where not sent
    counts = torch.tensor([[[8, 2], [8, 2]]])
    with torch.inference_mode():
        assert torch.equal(model.synthesise(symbols, counts), model.synthesise(other, counts))
        assert not torch.equal(model.synthesise(symbols), model.synthesise(other))


def test_selective_steps_send_all_channels_on_the_person_only() -> None:
    crops, person = synthetic_crops()
    trainer = Trainer(tiny_config(), crops, person)
    for _ in range(3):
        trainer.sampler.batch()
        selective = trainer._selective_counts(8)
        assert selective is not None
        counts, background = selective
        assert background in (0, 2)
        assert set(torch.unique(counts).tolist()) <= {8, background}
        assert (counts == 8).any()
    assert trainer._selective_counts(2) is not None  # only background 0 lies below 2 channels
    stats = trainer.train_step()
    assert np.isfinite(stats["selective_mse"]) and np.isfinite(stats["loss"])


def test_selective_steps_need_person_masks() -> None:
    crops, _ = synthetic_crops()
    with pytest.raises(ValueError, match="person probabilities"):
        Trainer(tiny_config(), crops, None)
    plain = Trainer(tiny_config(selective_probability=0.0), crops, None)
    assert "bpp" in plain.train_step()


def test_a_run_starts_from_exported_weights_or_a_checkpoint(tmp_path: Path) -> None:
    crops, person = synthetic_crops()
    trainer = Trainer(tiny_config(), crops, person)
    trainer.train_step()
    trainer.save(tmp_path / CHECKPOINT_NAME)
    weights = tmp_path / "gc.safetensors"
    export_weights(trainer.model, fit_prior_counts(trainer.model, crops), weights, {"steps": "1"})
    for source in (tmp_path / CHECKPOINT_NAME, weights):
        state = initial_model_state(source)
        for name, value in trainer.model.state_dict().items():
            assert torch.equal(state[name], value), name
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt is not a GC training checkpoint"):
        initial_model_state(tmp_path / "bad.pt")
    torch.save({"step": 3}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="neither GC weights nor a GC training checkpoint"):
        initial_model_state(tmp_path / "other.pt")


def test_exported_weights_carry_the_version_payloads_name(tmp_path: Path) -> None:
    crops, _ = synthetic_crops()
    model = GCModel(GCModelConfig())
    path = tmp_path / "gc-v7.safetensors"
    export_weights(model, fit_prior_counts(model, crops), path, {"steps": "0"}, version=7)
    codec = GCCodec(weights=path)
    assert codec.version == 7
    data = codec.compress(crops[0])
    assert data[2] == 7  # the payload's version byte
    assert codec.decompress(data).shape == crops[0].shape


def test_a_widened_model_decodes_every_old_rate_as_before() -> None:
    torch.manual_seed(0)
    narrow = GCModel(GCModelConfig()).eval()
    wide = GCModel(GCModelConfig(channels=16, channel_choices=(2, 4, 8, 12, 16))).eval()
    wide.load_state_dict(widened_state(narrow.state_dict(), wide.state_dict()))
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        symbols, wide_symbols = narrow.analyse(image), wide.analyse(image)
        assert torch.equal(wide_symbols[:, :8], symbols)
        for channels in (2, 4, 8):
            expected = narrow.synthesise(symbols[:, :channels])
            # Equal up to float rounding: the wider convolution sums its zero columns in an
            # order the CPU's kernels choose (bit-equal on some machines, not on others).
            actual = wide.synthesise(wide_symbols[:, :channels])
            torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    # The new channels enter the generator through columns that start at zero.
    first = wide.state_dict()["generator.net.0.1.weight"]
    assert not first[:, 8:16].any() and not first[:, 24:].any()
    with pytest.raises(ValueError, match="can widen, not narrow"):
        widened_state(wide.state_dict(), narrow.state_dict())


def test_soft_rate_follows_the_counts_and_pulls_towards_cheap_centres() -> None:
    model = GCModel(GCModelConfig())
    rate = MarginalRate(8)
    latent = torch.zeros(2, 8, 3, 3)
    # Uniform counts: every value costs log2(5) bits, whatever the latent.
    assert torch.allclose(
        rate.soft_bits(latent, 4, model.quantiser), torch.full((2,), 36 * math.log2(5))
    )
    rate.counts[:, 2] = 1000.0  # the centre 0 is cheap
    latent = torch.full((1, 8, 3, 3), 0.6, requires_grad=True)
    bits = rate.soft_bits(latent, 8, model.quantiser).sum()
    bits.backward()
    assert latent.grad is not None and (latent.grad > 0).all()  # descending moves towards 0
