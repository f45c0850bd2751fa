import pytest
import torch
from _backbone_adapters import assert_base_bit_identical, base_snapshot, fresh_backbone, paired_batch, train_steps

import vl_adapters as vla
from vl_adapters.core.model import CacheRefusedError, CompositionError

pytest.importorskip("peft")


@pytest.mark.parametrize("kind", ["tiny", "hf"])
def test_identity_at_init_through_wrap(kind, hf_clip_dir):
    backbone = fresh_backbone(kind, hf_clip_dir)
    video, mask, texts = paired_batch()
    plain = vla.wrap(backbone, []).similarity(texts, video, frame_mask=mask)
    model = vla.wrap(backbone, [{"type": "lora", "rank": 4}])
    assert model.adapters[0].lora, "no LoRA layer was injected"
    assert (model.similarity(texts, video, frame_mask=mask) - plain).abs().max() <= 1e-6


@pytest.mark.parametrize("kind", ["tiny", "hf"])
def test_training_changes_lora_only(kind, hf_clip_dir):
    backbone = fresh_backbone(kind, hf_clip_dir)
    snapshot = base_snapshot(backbone)
    model = vla.wrap(backbone, [{"type": "lora", "rank": 4}])
    assert model.backbone.needs_grad and not backbone.needs_grad  # the model's own copy
    before = {k: v.clone() for k, v in model.adapter_state_dict().items()}
    assert before and all("lora_" in k for k in before if k.startswith("adapters.")), sorted(before)[:4]
    train_steps(model, *paired_batch())
    assert_base_bit_identical(model.backbone, snapshot)  # shares the base tensors
    assert_base_bit_identical(backbone, snapshot)
    changed = [k for k, v in model.adapter_state_dict().items() if k.startswith("adapters.") and not torch.equal(v, before[k])]
    assert any("lora_B" in k for k in changed) and any("lora_A" in k for k in changed)
    # Both towers got LoRA by default, and it trained on both.
    vision_key = "visual" if kind == "tiny" else "vision_model"
    assert any(vision_key in k for k in changed) and any(vision_key not in k for k in changed)


def test_targets_per_family_and_towers():
    backbone = fresh_backbone("tiny")
    model = vla.wrap(backbone, [{"type": "lora", "towers": "vision", "targets": "mlp"}])
    keys = list(model.adapters[0].lora)
    assert keys and all(k.startswith("visual__") and ("c_fc" in k or "c_proj" in k) for k in keys)
    video, mask, texts = paired_batch()
    text_before = model.backbone.encode_text(texts).text_emb
    train_steps(model, video, mask, texts, steps=2)
    assert torch.equal(model.backbone.encode_text(texts).text_emb, text_before)  # text tower has no LoRA


def test_merge_matches_unmerged_and_leaves_model_alone():
    backbone = fresh_backbone("tiny")
    model = vla.wrap(backbone, [{"type": "lora", "rank": 4}, "temporal_transformer"])
    video, mask, texts = paired_batch()
    train_steps(model, video, mask, texts)
    expected = model.similarity(texts, video, frame_mask=mask)
    merged = model.merge()
    assert [a.name for a in merged.adapters] == ["temporal_transformer"]
    assert not merged.backbone.needs_grad
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in merged.backbone.model.modules())
    assert any(isinstance(m, BaseTunerLayer) for m in model.backbone.model.modules())
    got = merged.similarity(texts, video, frame_mask=mask)
    assert (got - expected).abs().max() <= 1e-5
    assert (model.similarity(texts, video, frame_mask=mask) - expected).abs().max() == 0
    # Merging did change the weights (LoRA trained), so the check above is not trivially true.
    plain = vla.wrap(fresh_backbone("tiny"), []).similarity(texts, video, frame_mask=mask)
    assert (plain - expected).abs().max() > 1e-4


def test_save_load_round_trip(tmp_path):
    backbone = fresh_backbone("tiny")
    model = vla.wrap(backbone, [{"type": "lora", "rank": 2, "alpha": 4.0}])
    video, mask, texts = paired_batch()
    train_steps(model, video, mask, texts)
    model.save_adapters(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "adapters.safetensors"), framework="pt") as file:
        keys = list(file.keys())
    assert keys and all("lora_" in k for k in keys if not k.startswith("task."))  # no base weight in the file
    loaded = vla.load_adapters(tmp_path, pretrained="")  # a fresh backbone from the saved spec
    assert loaded.adapters[0].config.rank == 2
    assert torch.equal(loaded.similarity(texts, video, frame_mask=mask), model.similarity(texts, video, frame_mask=mask))


def test_cache_refused_with_backbone_adapter():
    backbone = fresh_backbone("tiny")
    video, mask, texts = paired_batch()
    cached_video, cached_text = backbone.encode_video(video, mask), backbone.encode_text(texts)
    model = vla.wrap(backbone, ["lora"])
    with pytest.raises(CacheRefusedError, match=r"backbone adapter\(s\) \['lora'\].*pass frames instead"):
        model.encode_video(cached_video)
    with pytest.raises(CacheRefusedError, match="backbone adapter"):
        model({"video": cached_video, "text": cached_text})


def test_second_wrap_and_detach():
    backbone = fresh_backbone("tiny")
    names_before = sorted(backbone.state_dict())
    model = vla.wrap(backbone, ["lora"])
    other = vla.wrap(backbone, ["lora"])  # each model injects into its own copy of the modules
    assert sorted(backbone.state_dict()) == names_before and not backbone.needs_grad
    with pytest.raises(RuntimeError, match="already carries peft layers"):
        model.adapters[0].attach(model.backbone)
    model.detach_backbone_adapters()
    assert sorted(model.backbone.state_dict()) == names_before and not model.backbone.needs_grad
    model.adapters[0].attach(model.backbone)  # attachable again
    assert other.adapters[0].lora


def test_unsupported_family_is_refused():
    backbone = fresh_backbone("tiny")
    backbone.family = "other"
    with pytest.raises(CompositionError, match=r"supports backbone families \['open_clip', 'hf'\], not 'other'"):
        vla.wrap(backbone, ["lora"])
