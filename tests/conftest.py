"""Shared fixtures: where the real clips live, and skipping cleanly when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def dev_dir() -> Path:
    """../shared/data/dev beside the repository; tests that need it skip with a reason."""
    folder = DATA_DIR / "dev"
    if not folder.is_dir() or not any(folder.iterdir()):
        pytest.skip(f"real clips not found: {folder} is absent (see ../shared/data/README.md)")
    return folder


@pytest.fixture(scope="session")
def dev_clip(dev_dir: Path) -> Path:
    """A short 256x256 talking-head clip from the dev set."""
    preferred = dev_dir / "EDTalk__test_data_mouth_source.mp4"
    if preferred.is_file():
        return preferred
    return sorted(p for p in dev_dir.iterdir() if p.suffix == ".mp4")[0]
