"""Shared fixtures. Tests run on the CPU, in parallel under pytest-xdist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One math thread per xdist worker: with two workers on two cores, torch's default of one thread per core made a
# SmolLM2 decode step 10x slower through oversubscription. Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"


@pytest.fixture
def gsm8k_train() -> Path:
    if not GSM8K_TRAIN.exists():
        pytest.skip(f"{GSM8K_TRAIN} is not present (it is only in the development checkout)")
    return GSM8K_TRAIN


@pytest.fixture(scope="session")
def worker_port_base() -> int:
    """A port range of this pytest-xdist worker's own (gw0 -> 29500, gw1 -> 29600, ...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 29500 + 100 * int(worker.removeprefix("gw") or 0)


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B kept off the network and out of $HOME: offline, quiet, no API key; its config, cache and data
    directories, and `WANDB_DIR` (which the trainer's explicit `dir=` must win over), under the returned folder."""
    home = tmp_path / "wandb_home"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        folder = home / name.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(name, str(folder))
    return home

