"""Backbones give the contract's features, stay frozen, and match their library's own encoders."""


import pytest
import torch
import torch.nn.functional as F

import vl_adapters as vla


def meanp_cosine(image_emb, text_emb, b, t):
    """CLIP4Clip meanP zero-shot: mean of normalised frame embeddings, re-normalised, cosine with text."""
    frames = F.normalize(image_emb, dim=-1).view(b, t, -1).mean(1)
    return F.normalize(text_emb, dim=-1) @ F.normalize(frames, dim=-1).T


def test_tiny_features_follow_contract(tiny_backbone, frames, texts):
    video, mask = frames
    features = tiny_backbone.encode_video(video, mask)
    dims = tiny_backbone.dims
    assert features.frame_emb.shape == (3, 5, dims.embed_dim)
    assert features.patch_tokens.shape == (3, 5, 16, dims.vision_width)
    assert features.grid == (4, 4)
    assert torch.all(features.frame_emb[2, 3:] == 0) and features.frame_emb[2, :3].abs().sum() > 0
    text = tiny_backbone.encode_text(texts)
    assert text.text_emb.shape == (3, dims.embed_dim) and text.texts == texts
    assert text.token_states.shape[:2] == text.token_mask.shape == (3, dims.context_length)


def test_padded_frames_do_not_change_real_ones(tiny_backbone, frames):
    video, mask = frames
    full = tiny_backbone.encode_video(video, mask)
    alone = tiny_backbone.encode_video(video[2:, :3])
    torch.testing.assert_close(full.frame_emb[2, :3], alone.frame_emb[0], rtol=0, atol=1e-5)


def test_chunking_gives_same_features(frames):
    video, _ = frames
    small = vla.load_backbone("tiny", device="cpu", chunk_size=2).encode_video(video)
    large = vla.load_backbone("tiny", device="cpu", chunk_size=512).encode_video(video)
    torch.testing.assert_close(small.frame_emb, large.frame_emb, rtol=0, atol=1e-5)


def test_uint8_frames_are_transformed(tiny_backbone):
    raw = torch.randint(0, 256, (2, 3, 3, 48, 64), dtype=torch.uint8)
    assert tiny_backbone.transform(raw).shape == (2, 3, 3, 32, 32)
    torch.testing.assert_close(tiny_backbone.encode_video(raw).frame_emb,
                               tiny_backbone.encode_video(tiny_backbone.transform(raw)).frame_emb)


def test_float_frames_in_0_1_are_refused_and_the_same_frames_as_uint8_or_normalised_are_not(tiny_backbone):
    raw = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    with pytest.raises(vla.FeatureShapeError, match=r"span \[0, 1\] with no negative value.*not normalised"):
        tiny_backbone.encode_video(raw.float() / 255)
    torch.testing.assert_close(tiny_backbone.encode_video(raw).frame_emb,
                               tiny_backbone.encode_video(tiny_backbone.transform(raw)).frame_emb)
    dark = torch.zeros(1, 2, 3, 32, 32)  # a black video normalised: no positive value, accepted
    tiny_backbone.encode_video(dark)


def test_frozen_and_eval(tiny_backbone, frames):
    assert not any(p.requires_grad for p in tiny_backbone.parameters())
    model = vla.wrap(tiny_backbone, ["temporal_transformer"])
    model.train()
    assert model.training and not tiny_backbone.training and not tiny_backbone.model.training
    out = tiny_backbone.encode_video(frames[0])
    assert not out.frame_emb.requires_grad


def test_wrong_frame_shape_is_named(tiny_backbone):
    with pytest.raises(vla.FeatureShapeError, match=r"encode_video: frames: expected shape \[B, T, 3, H, W\]"):
        tiny_backbone.encode_video(torch.zeros(2, 3, 32, 32))


def test_unknown_family_and_missing_checkpoint():
    with pytest.raises(vla.RegistryError, match="unknown backbone family 'open_clp'.*open_clip"):
        vla.load_backbone("open_clp:ViT-B-32")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        vla.load_backbone("tiny", pretrained="/nonexistent/weights.safetensors")


@pytest.mark.slow
def test_open_clip_weights_that_do_not_load_are_named_in_one_error(tiny_backbone, tmp_path):
    from safetensors.torch import save_file

    from vl_adapters.backbones.base import BackboneWeightsError

    tiny = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_backbone.model.state_dict().items()}, str(tiny))
    with pytest.raises(BackboneWeightsError, match=r"open_clip:ViT-B-32: .*tiny.safetensors holds weights of another "
                                                   r"architecture: \d+ tensor\(s\) of another shape"):
        vla.load_backbone("open_clip:ViT-B-32", pretrained=str(tiny), device="cpu")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(BackboneWeightsError, match=r"notes.pt is not a checkpoint open_clip can read"):
        vla.load_backbone("open_clip:ViT-B-32", pretrained=str(tmp_path / "notes.pt"), device="cpu")
    with pytest.raises(BackboneWeightsError, match=r"unknown pretrained tag 'opnai'; open_clip knows .*openai"):
        vla.load_backbone("open_clip:ViT-B-32", pretrained="opnai", device="cpu")


def test_hub_weights_in_the_local_cache_need_no_network(tmp_path, monkeypatch):
    import socket

    from huggingface_hub import constants

    from vl_adapters.backbones.base import BackboneWeightsError
    from vl_adapters.backbones.open_clip_backbone import _check_tag

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setenv("https_proxy", "")
    with pytest.raises(BackboneWeightsError, match="cannot be reached from here .*Network is unreachable"):
        _check_tag("ViT-B-32", "openai")
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "open_clip_model.safetensors").write_bytes(b"cached")
    _check_tag("ViT-B-32", "openai")  # cached: no network needed, open_clip reads the cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (repo / "snapshots" / ("0" * 40) / "open_clip_model.safetensors").unlink()
    with pytest.raises(BackboneWeightsError, match=r"HF_HUB_OFFLINE is set"):
        _check_tag("ViT-B-32", "openai")


def test_an_hf_id_that_is_neither_cached_nor_downloadable_is_said_in_one_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from vl_adapters.backbones.base import BackboneWeightsError

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(BackboneWeightsError, match=r"hf:openai/clip-vit-base-patch32: .*no local directory.*"
                                                   r"HF_HUB_OFFLINE is set"):
        vla.load_backbone("hf:openai/clip-vit-base-patch32", device="cpu")


@pytest.fixture(scope="module")
def vit_b32_file(tmp_path_factory):
    """open_clip ViT-B-32 with random weights, written to a local safetensors file (no download)."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path_factory.mktemp("vitb32") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model.eval(), path


@pytest.mark.slow
def test_open_clip_parity_from_local_file(vit_b32_file):
    import open_clip

    reference, path = vit_b32_file
    backbone = vla.load_backbone("open_clip:ViT-B-32", pretrained=str(path), device="cpu")
    model = vla.wrap(backbone, ["temporal_transformer"])
    b, t = 2, 3
    video = torch.randn(b, t, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    texts = ["a dog runs on the grass", "someone is cooking pasta"]
    ours = model.similarity(texts, video)
    with torch.no_grad():
        image_emb = reference.encode_image(video.flatten(0, 1))
        text_emb = reference.encode_text(open_clip.get_tokenizer("ViT-B-32")(texts))
    expected = meanp_cosine(image_emb, text_emb, b, t)
    assert (ours - expected).abs().max() <= 1e-4
    assert backbone.dims.embed_dim == 512 and backbone.dims.grid == (7, 7) and backbone.dims.vision_width == 768


def test_hf_parity_from_local_dir(hf_clip_dir):
    reference, tokenizer, path = hf_clip_dir
    backbone = vla.load_backbone(f"hf:{path}", device="cpu")
    assert backbone.dims.grid == (4, 4) and backbone.dims.embed_dim == 24
    model = vla.wrap(backbone, ["temporal_transformer"])
    b, t = 2, 4
    video = torch.randn(b, t, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    texts = ["a cat sits", "dogs run fast"]
    ours = model.similarity(texts, video)
    with torch.no_grad():
        image_emb = reference.get_image_features(pixel_values=video.flatten(0, 1))
        enc = tokenizer(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
        text_emb = reference.get_text_features(**enc)
    image_emb = getattr(image_emb, "pooler_output", image_emb)
    text_emb = getattr(text_emb, "pooler_output", text_emb)
    expected = meanp_cosine(image_emb, text_emb, b, t)
    assert (ours - expected).abs().max() <= 1e-4
    features = backbone.encode_video(video)
    assert features.patch_tokens.shape == (b, t, 16, 32)
