"""token_masking (MAC/SMAUG): in training the ViT blocks see (1 - ratio) of the patches; at eval all of them."""

import pytest
import torch
from _backbone_adapters import assert_base_bit_identical, base_snapshot, fresh_backbone, paired_batch

import vl_adapters as vla
from vl_adapters.adapters.st_adapter.adapter import vision_blocks
from vl_adapters.core.config import ConfigError

PATCHES = 16  # both test towers: 32 x 32 images, 8 x 8 patches


def tokens_seen(backbone) -> list[int]:
    """Token count (class token included) that the first vision block computes on, per call."""
    blocks, batch_first = vision_blocks(backbone)
    seen = []

    def record(module, args, output):
        out = output[0] if isinstance(output, tuple) else output
        seen.append(out.shape[1] if batch_first else out.shape[0])

    blocks[0].register_forward_hook(record)
    return seen


@pytest.mark.parametrize("kind", ["tiny", "hf"])
def test_blocks_see_the_kept_patches_in_training_and_all_at_eval(kind, hf_clip_dir):
    backbone = fresh_backbone(kind, hf_clip_dir)
    video, mask, texts = paired_batch()
    plain = vla.wrap(backbone, []).encode_video(video, mask)
    model = vla.wrap(backbone, [{"type": "token_masking", "ratio": 0.75}])
    seen = tokens_seen(model.backbone)  # backbone adapters work on a private copy of the module tree
    model.train()
    masked = model.encode_video(video, mask)
    assert set(seen) == {1 + 4}  # (1 - 0.75) * 16 patches + the class token
    # The contract holds: [B, T, P, C] patch tokens, the dropped places zero, exactly 4 kept per real frame.
    assert masked.patch_tokens.shape == plain.patch_tokens.shape
    kept = masked.patch_tokens.abs().sum(-1).ne(0).sum(-1)
    assert torch.equal(kept[mask], torch.full((int(mask.sum()),), 4))
    assert not torch.allclose(masked.frame_emb, plain.frame_emb)  # the blocks did run on fewer tokens
    seen.clear()
    model.eval()
    again = model.encode_video(video, mask)
    assert set(seen) == {1 + PATCHES}
    for field in ("frame_emb", "patch_tokens", "frame_mask"):  # identity at eval: no masking at all
        assert torch.equal(getattr(again, field), getattr(plain, field)), field


def test_the_class_token_always_enters_the_blocks():
    backbone = fresh_backbone("tiny")
    entering = []
    backbone.model.visual.ln_pre.register_forward_hook(lambda m, a, out: entering.append(out[:, 0].clone()))
    model = vla.wrap(backbone, [{"type": "token_masking", "ratio": 0.9}])
    video, mask, _ = paired_batch()
    model.encode_video(video, mask)
    model.train()
    model.encode_video(video, mask)
    assert torch.equal(entering[0], entering[1])  # a per-token norm: the same class token, masked or not


@pytest.mark.parametrize("order", [["lora", "token_masking"], ["token_masking", "lora"]])
def test_composes_with_lora_gradients_reach_it_and_the_base_stays_frozen(order):
    backbone = fresh_backbone("tiny")
    snapshot = base_snapshot(backbone)
    model = vla.wrap(backbone, [{"type": "token_masking", "ratio": 0.5} if n == "token_masking" else n for n in order])
    seen = tokens_seen(model.backbone)  # backbone adapters work on a private copy of the module tree
    model.train()
    video, mask, texts = paired_batch()
    model({"video": video, "frame_mask": mask, "text": texts}).loss.backward()
    assert set(seen) == {1 + 8}
    lora = next(a for a in model.adapters if a.name == "lora")
    ups = [p for name, p in lora.named_parameters() if name.endswith(("lora_B.weight", "lora_in_B.weight"))]
    assert ups and all(p.grad is not None and p.grad.abs().sum() > 0 for p in ups)
    assert_base_bit_identical(backbone, snapshot)


@pytest.mark.parametrize("kind", ["tiny", "hf"])
@pytest.mark.parametrize("masking_first", [False, True])
def test_composes_with_st_adapter_which_still_sees_the_full_grid(kind, masking_first, hf_clip_dir):
    backbone = fresh_backbone(kind, hf_clip_dir)
    names = [{"type": "token_masking", "ratio": 0.5}, {"type": "st_adapter", "spatial_kernel": 3}]
    model = vla.wrap(backbone, names if masking_first else names[::-1])
    st = next(a for a in model.adapters if a.name == "st_adapter")
    grids = []
    for block in st.blocks.values():
        block.register_forward_pre_hook(lambda module, args: grids.append(args[0].shape[1]))
    seen = tokens_seen(model.backbone)  # backbone adapters work on a private copy of the module tree
    model.train()
    video, mask, texts = paired_batch()
    model({"video": video, "frame_mask": mask, "text": texts}).loss.backward()
    assert set(grids) == {PATCHES} and set(seen) == {1 + 8}  # the convolution on the grid, the block on 8
    ups = [block.up.weight for block in st.blocks.values()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ups)


def test_motion_strategy_keeps_the_patches_that_change():
    backbone = fresh_backbone("tiny")
    model = vla.wrap(backbone, [{"type": "token_masking", "ratio": 0.75, "strategy": "motion"}]).train()
    g = torch.Generator().manual_seed(0)
    video = torch.randn(1, 1, 3, 32, 32, generator=g).expand(2, 4, 3, 32, 32).clone()  # static frames
    video[:, :, :, :8, :16] = torch.randn(2, 4, 3, 8, 16, generator=g)  # only patches 0 and 1 move
    video[:, :, :, 8:16, :16] = torch.randn(2, 4, 3, 8, 16, generator=g)  # and patches 4 and 5
    out = model.encode_video(video)
    kept = out.patch_tokens.abs().sum(-1).ne(0)  # [B, T, P]
    expected = torch.zeros(PATCHES, dtype=torch.bool)
    expected[[0, 1, 4, 5]] = True
    assert torch.equal(kept, expected.expand_as(kept))


def test_merge_drops_it_and_save_load_round_trip(tmp_path):
    backbone = fresh_backbone("tiny")
    model = vla.wrap(backbone, ["token_masking", "temporal_transformer"]).eval()
    video, mask, texts = paired_batch()
    expected = model.similarity(texts, video, frame_mask=mask)
    merged = model.merge()
    assert [a.name for a in merged.adapters] == ["temporal_transformer"]
    # without a backbone adapter the texts go through the text store, which encodes in fixed-size calls:
    # the same features up to the rounding of another batch size
    torch.testing.assert_close(merged.similarity(texts, video, frame_mask=mask), expected, rtol=0, atol=1e-6)
    model.save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, pretrained="").eval()
    assert torch.equal(loaded.similarity(texts, video, frame_mask=mask), expected)
    model.detach_backbone_adapters()
    seen = tokens_seen(model.backbone)  # backbone adapters work on a private copy of the module tree
    model.train()
    model.encode_video(video, mask)
    assert set(seen) == {1 + PATCHES}  # detached: the tower is the frozen one again


def test_config_errors_name_the_field():
    for bad, field in (({"ratio": 1.0}, "ratio"), ({"ratio": -0.1}, "ratio"), ({"strategy": "text"}, "strategy")):
        with pytest.raises(ConfigError, match=field):
            vla.wrap(fresh_backbone("tiny"), [{"type": "token_masking", **bad}])
