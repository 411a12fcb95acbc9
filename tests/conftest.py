import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def digits16():
    """(train, test) TensorDatasets of sklearn digits at 16x16, as the smoke profile uses."""
    from robust_mim.data import load_dataset

    return load_dataset("digits", "data", "train", 16), load_dataset("digits", "data", "test", 16)
