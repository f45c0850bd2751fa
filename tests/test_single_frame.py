"""single_frame (Singularity): one random real frame per video in training, seeded; mean / max frame
ensembling at inference with the documented scores; identity on one-frame videos; bad input named."""

import pytest
import torch
import torch.nn.functional as F

import vl_adapters as vla
from vl_adapters.adapters.single_frame.modules import random_real_frame
from vl_adapters.core.adapter import AdapterContext
from vl_adapters.core.pooling import cosine_matrix

DIMS = vla.BackboneDims(embed_dim=6, vision_width=4, text_width=5, grid=(1, 2), context_length=8, image_size=32)


@pytest.fixture(scope="module")
def backbone():
    return vla.load_backbone("tiny:synthetic", device="cpu")


def toy_video(seed=0):
    """Three videos of five frames (the second has three real ones, the third two at the end), every
    frame distinct, with patch tokens that name their frame."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [False] * 3 + [True] * 2])
    frame_emb = torch.randn(3, 5, 6, generator=g) * mask[..., None]
    patches = torch.arange(15.0).view(3, 5, 1, 1).expand(3, 5, 2, 4).clone()
    return vla.VideoFeatures(frame_emb=frame_emb, frame_mask=mask, patch_tokens=patches, grid=(1, 2))


def test_training_keeps_exactly_one_random_real_frame():
    module = vla.build_adapter("single_frame", DIMS).train()
    video = toy_video()
    seen = [set() for _ in range(3)]
    for draw in range(60):
        torch.manual_seed(draw)
        out = module(video, None, AdapterContext()).video
        assert out.frame_emb.shape == (3, 1, 6) and out.frame_mask.all()
        for b in range(3):
            frame = int(out.patch_tokens[b, 0, 0, 0]) - 5 * b  # the patch tokens travel with their frame
            assert video.frame_mask[b, frame], f"video {b} got padded frame {frame}"
            assert torch.equal(out.frame_emb[b, 0], video.frame_emb[b, frame])
            seen[b].add(frame)
        torch.manual_seed(draw)  # seeded: the same seed draws the same frames
        assert torch.equal(module(video, None, AdapterContext()).video.patch_tokens, out.patch_tokens)
    assert seen == [{0, 1, 2, 3, 4}, {0, 1, 2}, {3, 4}]  # every real frame can be drawn, no padded one


def test_the_model_trains_on_the_drawn_frame(backbone):
    video = backbone.encode_video(torch.randint(0, 256, (3, 4, 3, 32, 32), dtype=torch.uint8,
                                                generator=torch.Generator().manual_seed(0)))
    text = backbone.encode_text(["a red circle", "a blue square", "a green triangle"])
    model = vla.wrap(backbone, ["single_frame"]).train()
    torch.manual_seed(5)
    loss = model({"video": video, "text": text}).losses["retrieval"]
    torch.manual_seed(5)
    index = random_real_frame(video.frame_mask)
    frames = video.frame_emb[torch.arange(3), index]
    logits = model.task.scale * F.normalize(text.text_emb, dim=-1) @ F.normalize(frames, dim=-1).T
    expected = 0.5 * (F.cross_entropy(logits, torch.arange(3)) + F.cross_entropy(logits.T, torch.arange(3)))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_inference_scores_are_the_frame_ensemble(how, backbone):
    model = vla.wrap(backbone, [{"type": "single_frame", "ensemble": how}]).eval()
    video = toy_video()
    video = video.replace(frame_emb=torch.randn(3, 5, 64) * video.frame_mask[..., None], patch_tokens=None, grid=None)
    texts = ["a red circle", "a blue square", "a green triangle", "a white square"]
    text = backbone.encode_text(texts)
    expected = torch.zeros(4, 3)
    for i in range(4):
        for b in range(3):
            cosines = torch.stack([F.cosine_similarity(text.text_emb[i], video.frame_emb[b, t], dim=0)
                                   for t in range(5) if video.frame_mask[b, t]])
            expected[i, b] = cosines.mean() if how == "mean" else cosines.max()
    scores = model.similarity(text, video)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(scores, cosine_matrix(text, video), atol=1e-3)  # not mean pooling
    # multiple choice scores aligned pairs the same way
    pairs = model.score_pairs(text.index(torch.tensor([0, 1, 2])), video)
    torch.testing.assert_close(pairs, model.task.scale * expected.diagonal(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["mean", "max"])
def test_one_frame_videos_keep_the_backbone_scores(how, backbone):
    video = backbone.encode_video(torch.randint(0, 256, (3, 1, 3, 32, 32), dtype=torch.uint8,
                                                generator=torch.Generator().manual_seed(1)))
    text = backbone.encode_text(["a red circle", "a blue square"])
    model = vla.wrap(backbone, [{"type": "single_frame", "ensemble": how}]).eval()
    assert not list(model.adapters[0].parameters())  # no weights of its own
    torch.testing.assert_close(model.similarity(text, video), cosine_matrix(text, video), rtol=0, atol=1e-6)
    assert torch.equal(model.encode_video(video).frame_emb, video.frame_emb)  # inference never drops frames


def test_bad_input_is_named():
    with pytest.raises(vla.ConfigError, match="ensemble must be one of"):
        vla.build_adapter({"type": "single_frame", "ensemble": "lse"}, DIMS)
    module = vla.build_adapter("single_frame", DIMS).train()
    video = toy_video()
    with pytest.raises(ValueError, match="list single_frame before"):
        module(video.replace(video_emb=video.frame_emb.mean(1)), None, AdapterContext())
    empty = video.replace(frame_mask=torch.zeros(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"videos \[0, 1, 2\] have no real frame"):
        module(empty, None, AdapterContext())
    config = module.config
    assert type(config).from_json(config.to_json()) == config
