"""The shipped `tiny:synthetic` backbone: loads as a normal backbone, knows static content, reproducible."""

from __future__ import annotations

import pytest
import torch

import vl_adapters as vla
from vl_adapters.backbones.pretrain import WEIGHTS_DIR, pretrain, static_retrieval_accuracy


@pytest.fixture(scope="module")
def synthetic_backbone():
    return vla.load_backbone("tiny:synthetic", device="cpu")


def test_shipped_weights_are_small_and_loaded(synthetic_backbone):
    path = WEIGHTS_DIR / "tiny-synthetic.safetensors"
    assert path.exists() and path.stat().st_size < 5 * 2**20
    random_init = vla.load_backbone("tiny:synthetic", pretrained="", device="cpu")
    assert synthetic_backbone.fingerprint() != random_init.fingerprint()
    assert not any(p.requires_grad for p in synthetic_backbone.parameters())


def test_beats_chance_by_a_wide_margin_on_static_frame_caption_retrieval(synthetic_backbone):
    result = static_retrieval_accuracy(synthetic_backbone, num=64, seed=7)
    assert result["t2i_r1"] > 0.5 and result["i2t_r1"] > 0.5  # chance is 1/64
    untrained = static_retrieval_accuracy(vla.load_backbone("tiny:synthetic", pretrained="", device="cpu"),
                                          num=64, seed=7)
    assert untrained["t2i_r1"] < 0.2


def test_pretraining_is_reproducible_and_trimmed(tmp_path):
    a = pretrain(tmp_path / "a.safetensors", steps=2, batch_size=8, log=lambda *_: None)
    b = pretrain(tmp_path / "b.safetensors", steps=2, batch_size=8, log=lambda *_: None)
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert 0 < a["kept_token_rows"] < 200 and a["bytes"] == b["bytes"]
    loaded = vla.load_backbone("tiny:synthetic", pretrained=str(tmp_path / "a.safetensors"), device="cpu")
    ids, _ = loaded.tokenize(["a red circle"])
    assert torch.isfinite(loaded.encode_text(ids).text_emb).all()


def test_missing_checkpoint_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vla.load_backbone("tiny:synthetic", pretrained="/nonexistent/w.safetensors", device="cpu")
