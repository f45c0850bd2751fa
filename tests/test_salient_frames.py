"""salient_frames (LGDN): a video-only scorer learned from the captions picks the frames the cross adapters see."""

import pytest
import torch
import torch.nn.functional as F

import vl_adapters as vla
from vl_adapters.core.adapter import AdapterContext
from vl_adapters.core.config import ConfigError
from vl_adapters.core.features import FeatureShapeError, TextFeatures, VideoFeatures
from vl_adapters.core.model import CompositionError

T, DIM = 8, 64  # the tiny backbone's joint width


def toy_task(n: int, seed: int, *, patches: bool = False):
    """Videos where ONE frame (at a random position) shows the caption's content and the others are
    unrelated filler (scenery, transitions): captions and content live in the first half of the
    embedding, filler in the second half. Returns (video, text, salient position [n])."""
    g = torch.Generator().manual_seed(seed)
    caption = torch.zeros(n, DIM)
    caption[:, : DIM // 2] = F.normalize(torch.randn(n, DIM // 2, generator=g), dim=-1)
    frames = torch.zeros(n, T, DIM)
    frames[..., DIM // 2:] = F.normalize(torch.randn(n, T, DIM // 2, generator=g), dim=-1)
    salient = torch.randint(T, (n,), generator=g)
    frames[torch.arange(n), salient] = caption + 0.3 * torch.randn(n, DIM, generator=g) / DIM**0.5
    mask = torch.ones(n, T, dtype=torch.bool)
    tokens = torch.randn(n, T, 16, 64, generator=g) if patches else None
    video = VideoFeatures(frame_emb=frames, frame_mask=mask, patch_tokens=tokens, grid=(4, 4) if patches else None)
    states = torch.randn(n, 5, 64, generator=g)
    text = TextFeatures(text_emb=caption + 0.05 * torch.randn(n, DIM, generator=g), token_states=states,
                        token_mask=torch.ones(n, 5, dtype=torch.bool))
    return video, text, salient


def kept(model, video) -> torch.Tensor:
    return model.encode_video(video).salient_index


def test_after_training_the_scorer_keeps_the_frame_that_carries_the_caption(tiny_backbone):
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, [{"type": "salient_frames", "keep": 2}])
    scorer = model.adapters[0]
    assert scorer.name == "salient_frame_scorer" and scorer.stage == "video"
    held_out, held_text, truth = toy_task(256, seed=1)
    hit = lambda: (kept(model, held_out) == truth[:, None]).any(1).float().mean().item()  # noqa: E731
    before = hit()
    weights = {k: v.clone() for k, v in scorer.state_dict().items()}
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    losses = []
    for step in range(150):
        video, text, _ = toy_task(32, seed=100 + step)
        out = model({"video": video, "text": text})
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(out.losses["salient_frame_scorer/saliency"].item())
    model.eval()
    assert any(not torch.equal(v, weights[k]) for k, v in scorer.state_dict().items())  # it trains
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])
    after = hit()
    assert before < 0.5 and after > 0.95, (before, after)  # chance is 2 of 8 frames
    # The kept frames are the ones most relevant to each video's own caption under the learned scorer,
    # although at inference the scorer reads the video alone.
    relevance = torch.einsum("btd,bd->bt", F.normalize(held_out.frame_emb, dim=-1), F.normalize(held_text.text_emb, dim=-1))
    best_by_text = relevance.argmax(1)
    scores = scorer.scorer(held_out.frame_emb, held_out.frame_mask)
    assert (scores.argmax(1) == best_by_text).float().mean() > 0.95


def test_dual_scores_are_identical_at_init_and_the_video_keeps_every_frame(tiny_backbone):
    video, text, _ = toy_task(6, seed=2)
    plain = vla.wrap(tiny_backbone, [])
    model = vla.wrap(tiny_backbone, ["salient_frames"])
    encoded = model.encode_video(video)
    assert torch.equal(encoded.frame_emb, video.frame_emb) and encoded.num_frames == T
    assert encoded.salient_index.shape == (6, 3)
    expected = plain.dual_similarity(plain.encode_text(text), plain.encode_video(video))
    assert torch.equal(model.dual_similarity(model.encode_text(text), encoded), expected)
    # The filter alone scores pairs by the pooled video over ALL frames: the ranking is the dual one.
    assert torch.equal(model.similarity(text, video, rerank_k=0).argsort(1), expected.argsort(1))


def _copy_cross(source, target, name):
    target_adapter = next(a for a in target.adapters if a.name == name)
    source_adapter = next(a for a in source.adapters if a.name == name)
    target_adapter.load_state_dict(source_adapter.state_dict())
    return target_adapter


def test_cross_adapters_see_only_the_kept_frames_and_start_unchanged(tiny_backbone):
    video, text, _ = toy_task(5, seed=3, patches=True)
    torch.manual_seed(0)
    alone = vla.wrap(tiny_backbone, ["trajectory_word"]).eval()
    model = vla.wrap(tiny_backbone, [{"type": "salient_frames", "keep": 2}, "trajectory_word"]).eval()
    assert [a.name for a in model.adapters] == ["salient_frame_scorer", "salient_frame_filter", "trajectory_word"]
    trajectory = _copy_cross(alone, model, "trajectory_word")
    seen = []
    trajectory.register_forward_pre_hook(lambda module, args: seen.append(args[0].num_frames))
    with_filter = model.similarity(text, video, rerank_k=0)
    assert set(seen) == {2}  # every re-scored pair: 2 of 8 frames
    # Identity at init: the matching head starts at zero and the pooled video still covers all frames.
    assert torch.allclose(with_filter, alone.similarity(text, video, rerank_k=0), atol=1e-6)
    with torch.no_grad():  # once the head reads the frames, 2 frames give other scores than 8
        for adapter in (trajectory, alone.adapters[0]):
            adapter.head.mlp[-1].weight.fill_(0.5)
    assert not torch.allclose(model.similarity(text, video, rerank_k=0), alone.similarity(text, video, rerank_k=0))


def test_tem_adapter_pools_all_frames_and_its_semantic_aligner_sees_the_kept_ones(tiny_backbone):
    video, text, _ = toy_task(4, seed=4)
    model = vla.wrap(tiny_backbone, [{"type": "salient_frames", "keep": 3}, "tem_adapter"]).eval()
    seen = {}

    def record(module, args):
        seen.setdefault(module.name, args[0].num_frames)

    for adapter in model.adapters:
        adapter.register_forward_pre_hook(record)
    model.similarity(text, video, rerank_k=0)
    assert seen == {"salient_frame_scorer": T, "tem_temporal_aligner": T, "salient_frame_filter": T,
                    "tem_semantic_aligner": 3}


def test_text_guide_keeps_the_frames_each_text_points_at(tiny_backbone):
    video, _, _ = toy_task(1, seed=5)
    model = vla.wrap(tiny_backbone, [{"type": "salient_frames", "guide": "text", "keep": 1}])
    assert [a.name for a in model.adapters] == ["salient_frame_filter"]  # no scorer, no weights
    frames = video.frame_emb[0]
    two = video.index(torch.tensor([0, 0]))
    texts = TextFeatures(text_emb=torch.stack([frames[1], frames[6]]))
    out = model.adapters[0](two, texts, AdapterContext())
    assert torch.equal(out.video.frame_emb[:, 0], torch.stack([frames[1], frames[6]]))


def test_training_then_save_and_load_round_trip(tiny_backbone, tmp_path):
    model = vla.wrap(tiny_backbone, [{"type": "salient_frames", "keep": 2}, "trajectory_word"])
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    model.train()
    video, text, _ = toy_task(4, seed=6, patches=True)
    for _ in range(2):
        loss = model({"video": video, "text": text}).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    model.save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, backbone=tiny_backbone).eval()
    assert [a.name for a in loaded.adapters] == ["salient_frame_scorer", "salient_frame_filter", "trajectory_word"]
    assert torch.equal(loaded.similarity(text, video, rerank_k=0), model.similarity(text, video, rerank_k=0))


def test_wrong_use_is_refused_with_the_reason(tiny_backbone):
    video, text, _ = toy_task(2, seed=7)
    learned_alone = vla.wrap(tiny_backbone, [{"type": "salient_frame_filter", "guide": "learned"}])
    with pytest.raises(FeatureShapeError, match="salient_index"):
        learned_alone.similarity(text, video, rerank_k=0)
    for bad in ({"keep": 0}, {"guide": "audio"}, {"temperature": 0.0}, {"loss_weight": -1.0}, {"frames": 3}):
        with pytest.raises(ConfigError):
            vla.wrap(tiny_backbone, [{"type": "salient_frames", **bad}])
    # the filter feeds the cross adapters listed after it: after every one of them it would feed none
    with pytest.raises(CompositionError, match=r"listed after \['trajectory_word'\] and before none"):
        vla.wrap(tiny_backbone, ["trajectory_word", "salient_frames"])
    between = vla.wrap(tiny_backbone, ["tem_semantic_aligner", "salient_frames", "trajectory_word"])
    assert [a.name for a in between.cross_adapters] == ["tem_semantic_aligner", "salient_frame_filter",
                                                        "trajectory_word"]
    scorer = vla.wrap(tiny_backbone, ["salient_frame_scorer"]).adapters[0].train()
    ctx = AdapterContext(guidance=TextFeatures(text_emb=torch.randn(3, DIM)))
    with pytest.raises(FeatureShapeError, match="one caption per video"):
        scorer(video, None, ctx)


def test_the_evaluator_runs_it_end_to_end(tiny_backbone):
    from _toy_data import ToyRetrievalDataset

    from vl_adapters.train.evaluate import evaluate

    dataset = ToyRetrievalDataset(6, num_frames=4)
    torch.manual_seed(0)
    alone = vla.wrap(tiny_backbone, ["trajectory_word"])
    model = vla.wrap(tiny_backbone, [{"type": "salient_frames", "keep": 2}, "trajectory_word"])
    _copy_cross(alone, model, "trajectory_word")
    assert evaluate(model, dataset, batch_size=4, rerank_k=3) == evaluate(alone, dataset, batch_size=4, rerank_k=3)
