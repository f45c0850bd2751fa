import pytest
import torch
from _backbone_adapters import assert_base_bit_identical, base_snapshot, fresh_backbone, paired_batch, train_steps

import vl_adapters as vla
from vl_adapters.core.config import ConfigError


def randomise(model):
    """Give the zero-initialised up-projections values, so the adapter does something."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for block in model.adapters[0].blocks.values():
            block.up.weight.copy_(torch.randn(block.up.weight.shape, generator=generator) * 0.2)


@pytest.mark.parametrize("kind", ["tiny", "hf"])
def test_identity_at_init_through_wrap(kind, hf_clip_dir):
    backbone = fresh_backbone(kind, hf_clip_dir)
    video, mask, texts = paired_batch()
    plain = vla.wrap(backbone, []).similarity(texts, video, frame_mask=mask)
    model = vla.wrap(backbone, ["st_adapter"])
    assert len(model.adapters[0].blocks) == 2  # every block of the 2-block towers
    assert (model.similarity(texts, video, frame_mask=mask) - plain).abs().max() <= 1e-6
    randomise(model)
    assert (model.similarity(texts, video, frame_mask=mask) - plain).abs().max() > 1e-4  # the hooks do run


@pytest.mark.parametrize("kind", ["tiny", "hf"])
def test_training_changes_adapter_only(kind, hf_clip_dir):
    backbone = fresh_backbone(kind, hf_clip_dir)
    snapshot = base_snapshot(backbone)
    model = vla.wrap(backbone, [{"type": "st_adapter", "blocks": [-1], "spatial_kernel": 3}])
    assert model.backbone.needs_grad and not backbone.needs_grad and list(model.adapters[0].blocks) == ["1"]
    before = {k: v.clone() for k, v in model.adapters.state_dict().items()}
    train_steps(model, *paired_batch())
    assert_base_bit_identical(model.backbone, snapshot)  # shares the base tensors
    assert_base_bit_identical(backbone, snapshot)
    changed = {k for k, v in model.adapters.state_dict().items() if not torch.equal(v, before[k])}
    assert {"0.blocks.1.up.weight", "0.blocks.1.down.weight", "0.blocks.1.conv.weight"} <= changed


def test_frames_mix_within_a_video_only():
    backbone = fresh_backbone("tiny")
    model = vla.wrap(backbone, [{"type": "st_adapter", "blocks": [-1]}])  # one block: reach of 1 frame
    randomise(model)
    video, mask, _ = paired_batch()  # video 1 has 2 real frames of 4
    base = model.encode_video(video, mask).frame_emb
    changed = video.clone()
    changed[0, 1] += 1.0  # a neighbour of frame 0 in video 0
    changed[1, 3] += 5.0  # a padded frame
    after = model.encode_video(changed, mask).frame_emb
    assert (after[0, 0] - base[0, 0]).abs().max() > 1e-4  # frame 0 sees frame 1 (temporal kernel 3)
    assert (after[0, 3] - base[0, 3]).abs().max() == 0  # out of the kernel's reach
    assert torch.equal(after[1:], base[1:])  # other videos and padding untouched
    # Chunking cuts at video boundaries: the same result with one video per chunk.
    model.backbone.chunk_size = 1
    try:
        assert (model.encode_video(video, mask).frame_emb - base).abs().max() <= 1e-5
    finally:
        model.backbone.chunk_size = 256


def test_merge_keeps_hooks_and_save_load_round_trip(tmp_path):
    backbone = fresh_backbone("tiny")
    model = vla.wrap(backbone, [{"type": "st_adapter", "bottleneck_ratio": 0.25}, "temporal_transformer"])
    video, mask, texts = paired_batch()
    train_steps(model, video, mask, texts)
    expected = model.similarity(texts, video, frame_mask=mask)
    merged = model.merge()  # nothing to fold: the copy keeps its own hooks on its own backbone
    assert [a.name for a in merged.adapters] == ["st_adapter", "temporal_transformer"]
    assert torch.equal(merged.similarity(texts, video, frame_mask=mask), expected)
    model.save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, pretrained="").eval()
    assert torch.equal(loaded.similarity(texts, video, frame_mask=mask), expected)
    model.detach_backbone_adapters()
    plain = vla.wrap(fresh_backbone("tiny"), []).similarity(texts, video, frame_mask=mask)
    assert torch.equal(vla.wrap(backbone, []).similarity(texts, video, frame_mask=mask), plain)


def test_config_errors_name_the_field():
    backbone = fresh_backbone("tiny")
    with pytest.raises(ConfigError, match="temporal_kernel must be odd"):
        vla.wrap(backbone, [{"type": "st_adapter", "temporal_kernel": 2}])
    with pytest.raises(ConfigError, match="index 5 is out of range for a tower of 2 blocks"):
        vla.wrap(backbone, [{"type": "st_adapter", "blocks": [5]}])
