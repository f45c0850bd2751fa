from __future__ import annotations

import json
import string

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


@pytest.fixture(scope="session")
def hf_clip_dir(tmp_path_factory):
    """A small transformers CLIPModel and a character-level CLIP tokenizer saved to a local directory:
    (reference model, tokenizer, directory). Tests may shadow it with their own."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("hfclip_shared")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in string.ascii_lowercase:
            vocab[c + suffix] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file=str(root / "vocab.json"), merges_file=str(root / "merges.txt"),
                              unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=1, bos_token_id=0,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=24,
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval()
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return model, tokenizer, root / "model"
