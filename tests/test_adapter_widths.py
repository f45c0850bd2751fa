"""Adapter widths and head counts follow the backbone: the paper's on ViT-B, never wider than a smaller backbone,
heads kept wide; explicit values and official_compat win; the resolved values are saved with the adapter."""

import json

import pytest

import vl_adapters as vla
from vl_adapters.adapters.finsta import FinstaConfig
from vl_adapters.core.config import fit_heads

TINY = vla.BackboneDims(embed_dim=64, vision_width=64, text_width=64, grid=(4, 4), context_length=32, image_size=32,
                        text_layers=2)
VIT_B = vla.BackboneDims(embed_dim=512, vision_width=768, text_width=512, grid=(7, 7), context_length=77,
                         image_size=224)

# adapter -> {field: (on the 64-wide backbone, on ViT-B)}
RESOLVED = {
    "finsta": {"dim": (64, 256), "heads": (2, 4)},
    "fine_grained_alignment": {"dim": (64, 256)},
    "trajectory_word": {"width": (64, 512), "heads": (1, 8), "depth": (1, 2)},
    "tem_temporal_aligner": {"heads": (2, 8)},
    "tem_semantic_aligner": {"width": (64, 128), "heads": (2, 4)},
    "temporal_transformer": {"heads": (2, 8)},
    "multi_level_alignment": {"heads": (2, 8)},
    "salient_frame_scorer": {"hidden": (64, 256)},
}


def built_shapes(name: str, adapter) -> dict:
    """The widths as the modules were built (not as the config says), so a config that resolves but is not
    used fails."""
    if name == "finsta":
        return {"dim": adapter.word_proj.out_features, "heads": adapter.tsg_encoder.layers[0].heads}
    if name == "fine_grained_alignment":
        return {"dim": adapter.patch_proj.out_features}
    if name == "trajectory_word":
        return {"width": adapter.encoder.words_in[1].out_features, "heads": adapter.encoder.layers[0].w2p_qkv.heads,
                "depth": len(adapter.encoder.layers)}
    if name == "tem_temporal_aligner":
        return {"heads": adapter.aligner.encoder.layers[0].self_attn.num_heads}
    if name == "tem_semantic_aligner":
        return {"width": adapter.aligner.text_proj[1].out_features, "heads": adapter.aligner.layers[0].self_attn.heads}
    if name == "temporal_transformer":
        return {"heads": adapter.encoder.layers[0].self_attn.num_heads}
    if name == "multi_level_alignment":
        return {"heads": adapter.temporal.encoder.layers[0].self_attn.num_heads}
    return {"hidden": adapter.scorer.net[1].out_features}


@pytest.mark.parametrize("name", sorted(RESOLVED))
def test_widths_resolve_from_the_backbone(name):
    for index, dims in enumerate((TINY, VIT_B)):
        adapter = vla.build_adapter(name, dims)
        expected = {key: values[index] for key, values in RESOLVED[name].items()}
        saved = adapter.config.to_dict()
        assert {key: saved[key] for key in expected} == expected, (name, dims.embed_dim)
        assert built_shapes(name, adapter) == expected, (name, dims.embed_dim)


def test_heads_stay_wide_and_divide_the_width():
    assert fit_heads(None, width=512, paper=8) == 8
    assert fit_heads(None, width=64, paper=8) == 2  # 2 heads of 32, not 8 of 8
    assert fit_heads(None, width=48, paper=8) == 1  # no count divides 48 into heads >= 32 but 1
    assert fit_heads(None, width=96, paper=4) == 3
    assert fit_heads(None, width=64, paper=12, head_width=64) == 1
    assert fit_heads(5, width=64, paper=8) == 5  # explicit


def test_explicit_values_win_and_the_callers_config_is_left_as_given():
    adapter = vla.build_adapter(FinstaConfig(dim=32, heads=4), VIT_B)
    assert (adapter.config.dim, adapter.config.heads) == (32, 4) and adapter.word_proj.out_features == 32
    unresolved = FinstaConfig()
    vla.build_adapter(unresolved, VIT_B)
    assert unresolved.dim is None and unresolved.heads is None  # one config can serve two backbones
    assert vla.build_adapter(unresolved, TINY).config.dim == 64
    semantic = vla.build_adapter({"type": "tem_semantic_aligner", "width": 256, "heads": 8}, VIT_B)
    assert (semantic.config.width, semantic.config.heads) == (256, 8)
    trajectory = vla.build_adapter({"type": "trajectory_word", "heads": 4}, TINY)
    assert trajectory.encoder.layers[0].w2p_qkv.heads == 4
    with pytest.raises(vla.ConfigError, match="divisible"):
        vla.build_adapter({"type": "trajectory_word", "heads": 3}, TINY)  # resolved width 64 checked too


def test_official_compat_keeps_the_official_sizes_on_any_backbone():
    for dims in (TINY, VIT_B):
        tem = vla.build_adapter({"type": "tem_adapter", "official_compat": True}, dims)
        temporal, semantic = tem.parts()
        assert (semantic.config.width, semantic.config.heads) == (128, 16)
        assert semantic.aligner.text_proj[1].out_features == 128
        assert temporal.config.heads == 16


def test_a_saved_adapter_reloads_with_its_resolved_widths(tmp_path, tiny_backbone, monkeypatch):
    model = vla.wrap(tiny_backbone, ["finsta", "tem_adapter", "trajectory_word"])
    model.save_adapters(tmp_path)
    saved = json.loads((tmp_path / "adapters.json").read_text())["adapters"]
    by_type = {entry["type"]: entry for entry in saved}
    assert (by_type["finsta"]["dim"], by_type["finsta"]["heads"]) == (64, 2)
    assert (by_type["tem_semantic_aligner"]["width"], by_type["trajectory_word"]["heads"]) == (64, 1)
    # the defaults change later: the saved file still rebuilds the shapes it was trained with
    import vl_adapters.adapters.finsta.config as finsta_config
    import vl_adapters.adapters.tem_adapter.config as tem_config
    import vl_adapters.adapters.trajectory_word.config as trajectory_config

    monkeypatch.setattr(finsta_config, "fit_width", lambda width, **_: width or 48)
    monkeypatch.setattr(tem_config, "fit_width", lambda width, **_: width or 32)
    monkeypatch.setattr(trajectory_config, "fit_heads", lambda heads, **_: heads or 4)
    assert vla.build_adapter("finsta", tiny_backbone.dims).config.dim == 48  # the patch took
    loaded = vla.load_adapters(tmp_path, backbone=tiny_backbone)  # strict load: every shape must match
    assert [a.config.to_dict() for a in loaded.adapters] == [a.config.to_dict() for a in model.adapters]


def test_a_saved_file_with_explicit_widths_loads_with_them(tmp_path, tiny_backbone):
    # as written before widths followed the backbone: the ViT-B sizes spelled out in the JSON
    old = [{"type": "finsta", "dim": 256, "heads": 4},
           {"type": "tem_semantic_aligner", "width": 256, "heads": 8},
           {"type": "trajectory_word", "heads": 8}]
    vla.wrap(tiny_backbone, old).save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, backbone=tiny_backbone)
    finsta, semantic, trajectory = loaded.adapters
    assert finsta.word_proj.out_features == 256 and finsta.tsg_encoder.layers[0].heads == 4
    assert semantic.aligner.text_proj[1].out_features == 256 and semantic.aligner.layers[0].self_attn.heads == 8
    assert trajectory.encoder.layers[0].w2p_qkv.heads == 8


def test_trajectory_word_depth_follows_the_text_tower_and_an_explicit_depth_wins():
    tiny = vla.load_backbone("tiny:synthetic")
    assert tiny.dims.text_layers == 2
    assert vla.build_adapter("trajectory_word", tiny.dims).config.depth == 1
    assert vla.build_adapter({"type": "trajectory_word", "depth": 2}, tiny.dims).config.depth == 2
    # the frame selector's layers are checked against the resolved depth
    with pytest.raises(vla.ConfigError, match="select_before"):
        vla.build_adapter({"type": "trajectory_word", "frame_selector": True}, tiny.dims)
