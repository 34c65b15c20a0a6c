"""Fixtures built locally: tiny random checkpoints saved by transformers, with the R1-format tokenizer."""
import os
from pathlib import Path

import pytest
import torch

import tiny

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """family -> directory of a random model; init_std 0.3 makes greedy choices decisive (no near-ties)."""
    root = tmp_path_factory.mktemp("models")
    return {f: tiny.make_model(root / f, f, init_std=0.3, seed=i) for i, f in enumerate(["qwen2", "llama", "qwen3"])}


@pytest.fixture(scope="session")
def shared_data():
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED / 'data'} is absent: these tests need the shared benchmark files beside the repo")
    return SHARED / "data"


if os.environ.get("PYTEST_XDIST_WORKER"):  # make test: a worker per core, a thread each (and for what they start)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The chains first: they are the longest, and the other workers run everything else beside them."""
    items.sort(key=lambda item: item.path.name not in ("test_reproduce.py", "test_demo.py"))
