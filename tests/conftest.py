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
