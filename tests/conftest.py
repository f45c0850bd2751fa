from __future__ import annotations

import pytest
import torch

import vl_adapters as vla


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_backbone():
    return vla.load_backbone("tiny", device="cpu")


@pytest.fixture
def frames():
    """Normalised frames [B=3, T=5, 3, 32, 32] for the tiny backbone, the last video padded to 3 frames."""
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(3, 5, 3, 32, 32, generator=generator)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False
    return video, mask


@pytest.fixture
def texts():
    return ["a red circle moves left", "a blue square appears", "the green triangle turns yellow"]
