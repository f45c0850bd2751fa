"""Tem-Adapter: causality of the prediction branch, per-candidate videos, identity at init, masking,
the official checkpoint converter and the official parameter count."""

import pytest
import torch
from torch import nn

import vl_adapters as vla
from vl_adapters.adapters.tem_adapter import format_candidates
from vl_adapters.adapters.tem_adapter.convert import OfficialCheckpointError, load_official, read_official_checkpoint
from vl_adapters.adapters.tem_adapter.modules import GuidanceText, TemporalAligner, sinusoid_positions
from vl_adapters.core.adapter import AdapterContext, BackboneDims
from vl_adapters.core.config import ConfigError
from vl_adapters.core.features import FeatureShapeError, TextFeatures, VideoFeatures
from vl_adapters.core.pooling import cosine_matrix, pair_cosine

DIMS_512 = BackboneDims(embed_dim=512, vision_width=768, text_width=512, grid=(7, 7), context_length=77, image_size=224)


def aligner(official: bool, width: int = 32) -> TemporalAligner:
    torch.manual_seed(0)
    return TemporalAligner(width=width, heads=4, ffn_dim=64, dropout=0.1, official_compat=official).eval()


def random_guidance(batch: int = 2, width: int = 32, tokens: int = 4) -> GuidanceText:
    token_mask = torch.ones(batch, tokens, dtype=torch.bool)
    token_mask[0, -1] = False
    return GuidanceText(sentences=torch.randn(batch, 1, width), sentence_mask=torch.ones(batch, 1, dtype=torch.bool),
                        tokens=torch.randn(batch, tokens, width), token_mask=token_mask)


@pytest.mark.parametrize("t", [0, 3, 6])
def test_prediction_is_causal_in_fixed_mode(t):
    model = aligner(official=False)
    frames = torch.randn(2, 8, 32)
    mask = torch.ones(2, 8, dtype=torch.bool)
    guidance = random_guidance()
    perturbed = frames.clone()
    perturbed[:, t + 1:] += torch.randn_like(perturbed[:, t + 1:])
    with torch.no_grad():
        before, valid = model.predict(frames, mask, guidance)
        after, _ = model.predict(perturbed, mask, guidance)
    # The prediction of frame j reads frames < j only, so predictions up to frame t+1 are untouched.
    assert torch.allclose(before[:, : t + 2], after[:, : t + 2], atol=1e-6)
    assert not valid[:, 0].any() and valid[:, 1:].all()
    # ... and it does read the past: perturbing frame t changes the prediction of frame t+1.
    past = frames.clone()
    past[:, t] += 1.0
    with torch.no_grad():
        moved, _ = model.predict(past, mask, guidance)
    assert (moved[:, t + 1] - before[:, t + 1]).abs().max() > 1e-4


def test_official_compat_prediction_leaks_the_future():
    model = aligner(official=True)
    frames = torch.randn(2, 8, 32)
    mask = torch.ones(2, 8, dtype=torch.bool)
    t = 3
    perturbed = frames.clone()
    perturbed[:, t + 1:] += torch.randn_like(perturbed[:, t + 1:])
    guidance = random_guidance()
    with torch.no_grad():
        before, _ = model.predict(frames, mask, guidance)
        after, _ = model.predict(perturbed, mask, guidance)
    # The bidirectional memory and the visible diagonal let frames after t reach the outputs up to t.
    assert (before[:, : t + 1] - after[:, : t + 1]).abs().max() > 1e-3


class CrossAttention:
    """Records the decoder's cross-attention weights [B, heads, T, S] and the decoder output of a
    temporal aligner (PyTorch's decoder layer asks for no weights; the pre-hook asks for them)."""

    def __init__(self, temporal_aligner):
        attention = temporal_aligner.aligner.decoder.layers[0].multihead_attn
        self.weights, self.outputs = [], []
        attention.register_forward_pre_hook(
            lambda m, args, kwargs: (args, {**kwargs, "need_weights": True, "average_attn_weights": False}),
            with_kwargs=True)
        attention.register_forward_hook(lambda m, args, out: self.weights.append(out[1]))
        temporal_aligner.aligner.decoder.register_forward_hook(lambda m, args, out: self.outputs.append(out))


def guided_run(adapter, video, guidance):
    recorder = CrossAttention(adapter)
    loss = adapter(video, None, AdapterContext(guidance=guidance)).losses["prediction"]
    return recorder.weights[0], recorder.outputs[0], loss


def test_two_guidance_texts_give_two_attentions_and_two_predictions(tiny_backbone, frames):
    """The description steers the predictor: what it attends to, and what it predicts. (The official
    guidance, one vector added to every memory token, is a constant on all keys: the attention weights
    were identical for any two texts.)"""
    torch.manual_seed(0)
    adapter = vla.build_adapter({"type": "tem_temporal_aligner", "dropout": 0.0}, tiny_backbone.dims).train()
    video = tiny_backbone.encode_video(*frames)
    first = tiny_backbone.encode_text(["first the red circle moves left, then the blue square appears"] * 3)
    second = tiny_backbone.encode_text(["first the blue square disappears, then the red circle moves right"] * 3)
    weights_a, out_a, loss_a = guided_run(adapter, video, first)
    weights_b, out_b, loss_b = guided_run(adapter, video, second)
    assert weights_a.shape[:3] == (3, adapter.config.heads, 5)
    # Each query's weights on the frame states change too: the description's tokens compete for its attention.
    frames_a, frames_b = weights_a[..., :5], weights_b[..., :5]
    assert (frames_a - frames_b).abs().max() > 1e-3
    assert (out_a - out_b).abs().max() > 1e-3 and not torch.isclose(loss_a, loss_b)
    # The same text twice gives the same attention: the difference comes from the text.
    again, _, _ = guided_run(adapter, video, first)
    assert torch.allclose(again, weights_a)


def test_prediction_loss_decreases_and_trains_the_shared_encoder(tiny_backbone, frames, texts):
    torch.manual_seed(0)
    adapter = vla.build_adapter({"type": "tem_temporal_aligner", "dropout": 0.0}, tiny_backbone.dims).train()
    video = tiny_backbone.encode_video(*frames)
    ctx = AdapterContext(guidance=tiny_backbone.encode_text(texts))
    encoder_before = [p.detach().clone() for p in adapter.aligner.encoder.parameters()]
    optimiser = torch.optim.Adam(adapter.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = adapter(video, None, ctx).losses["prediction"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    moved = [not torch.equal(a, b) for a, b in zip(encoder_before, adapter.aligner.encoder.parameters(), strict=True)]
    assert all(moved)


def test_the_semantic_aligners_refined_text_guides_the_temporal_aligner(tiny_backbone, frames):
    """With both aligners, the temporal aligner's guidance is the right answer as the semantic aligner
    refines it (the paper's design): the semantic aligner's weights change the prediction loss, and the
    prediction loss trains the semantic aligner."""
    batch = mc_batch(frames)
    spec = {"type": "tem_adapter", "temporal": {"dropout": 0.0}, "semantic": {"dropout": 0.0}}
    model = vla.wrap(tiny_backbone, [spec], task="multiple_choice").train()
    temporal, semantic = model.adapters
    seen = []
    original = temporal.forward
    temporal.forward = lambda video, text, ctx: (seen.append(ctx.guidance), original(video, text, ctx))[1]
    before = model(batch).losses["tem_temporal_aligner/prediction"]
    before.backward()
    assert semantic.aligner.gate.grad.abs().sum() > 0  # the prediction loss alone reaches the semantic aligner
    with torch.no_grad():
        semantic.aligner.gate.normal_()
        after = model(batch).losses["tem_temporal_aligner/prediction"]
    assert (after - before).abs() > 1e-4
    # what the temporal aligner read is exactly the semantic aligner's refinement of the right answers
    video = tiny_backbone.encode_video(batch["video"], batch["frame_mask"])
    answers = [c[a] for c, a in zip(batch["candidates"], batch["answer"].tolist(), strict=True)]
    right = model.frozen_text([format_candidates("question_answer", q, [a])[0]  # the features the model reads
                               for q, a in zip(batch["question"], answers, strict=True)])
    with torch.no_grad():
        refined = semantic(video, right, AdapterContext()).text.text_emb
    assert torch.allclose(seen[-1].text_emb, refined, atol=1e-5)
    assert not torch.allclose(seen[-1].text_emb, right.text_emb, atol=1e-3)


def test_guidance_of_several_texts_per_video():
    """Several captions of one video: each video's memory holds all of its texts and none of the others'."""
    from vl_adapters.adapters.tem_adapter.adapter import _guidance_per_video

    text = TextFeatures(text_emb=torch.arange(4.0)[:, None].expand(4, 2).clone(),
                        token_states=torch.randn(4, 6, 3), token_mask=torch.ones(4, 6, dtype=torch.bool))
    guidance = _guidance_per_video(text, 3, torch.tensor([2, 0, 2, 0]))
    assert guidance.sentences[:, :, 0].tolist() == [[1.0, 3.0], [0.0, 0.0], [0.0, 2.0]]
    assert guidance.sentence_mask.tolist() == [[True, True], [False, False], [True, True]]
    assert guidance.token_mask.sum(1).tolist() == [12, 0, 12]
    assert torch.equal(guidance.tokens[2, 6:], text.token_states[2])


def test_identity_at_init_retrieval(tiny_backbone, frames, texts):
    video, mask = frames
    zero_shot = cosine_matrix(tiny_backbone.encode_text(texts), tiny_backbone.encode_video(video, mask))
    dual = vla.wrap(tiny_backbone, ["tem_temporal_aligner"])
    assert [a.stage for a in dual.adapters] == ["video"]
    assert (dual.similarity(texts, video, frame_mask=mask) - zero_shot).abs().max() <= 1e-5
    both = vla.wrap(tiny_backbone, ["tem_adapter"])
    assert [a.name for a in both.adapters] == ["tem_temporal_aligner", "tem_semantic_aligner"]
    with torch.no_grad():
        reranked = both.similarity(texts, video, frame_mask=mask, rerank_k=0) / both.task.scale
    assert (reranked - zero_shot).abs().max() <= 1e-5


def mc_batch(frames):
    video, mask = frames
    return {
        "video": video, "frame_mask": mask,
        "question": ["what moves?", "what appears?", "what changes colour?"],
        "candidates": [["a circle", "a square"], ["a star", "a square", "nothing"],
                       ["the triangle", "the circle", "the square", "the star"]],
        "candidate_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool),
        "answer": torch.tensor([0, 2, 3]),
    }


def test_identity_at_init_multiple_choice_with_variable_candidates(tiny_backbone, frames):
    batch = mc_batch(frames)
    model = vla.wrap(tiny_backbone, ["tem_adapter"], task="multiple_choice").eval()
    with torch.no_grad():
        scores = model(batch).scores
    texts = []
    for question, answers in zip(batch["question"], batch["candidates"], strict=True):
        texts += format_candidates("question_answer", question, answers) + [""] * (4 - len(answers))
    video = tiny_backbone.encode_video(batch["video"], batch["frame_mask"])
    owner = torch.arange(3).repeat_interleave(4)
    expected = (model.task.scale * pair_cosine(tiny_backbone.encode_text(texts), video.index(owner))).view(3, 4)
    mask = batch["candidate_mask"]
    assert torch.isinf(scores[~mask]).all()
    assert torch.allclose(scores[mask], expected[mask], atol=1e-4)


def open_gates(model):
    torch.manual_seed(1)
    for adapter in model.adapters:
        if adapter.name == "tem_semantic_aligner":
            adapter.aligner.gate.data.normal_()
        else:
            adapter.aligner.pool_proj.weight.data.normal_(std=0.1)


def test_each_candidate_attends_to_its_own_video(tiny_backbone, frames):
    batch = mc_batch(frames)
    model = vla.wrap(tiny_backbone, ["tem_adapter"], task="multiple_choice").eval()
    open_gates(model)
    features = tiny_backbone.encode_video(batch["video"], batch["frame_mask"])
    changed = features.frame_emb.clone()
    changed[1] += torch.randn_like(changed[1])
    with torch.no_grad():
        before = model({**batch, "video": features}).scores
        after = model({**batch, "video": features.replace(frame_emb=changed)}).scores
    mask = batch["candidate_mask"]
    rows = torch.tensor([True, False, True])
    assert torch.equal(before[rows], after[rows])
    assert (before[1][mask[1]] - after[1][mask[1]]).abs().min() > 1e-6

    # The semantic aligner alone, on aligned pairs: text p's delta depends on video p only.
    semantic = model.adapters[1]
    text = tiny_backbone.encode_text(["a circle", "a square", "a star"])
    ctx = AdapterContext(task="multiple_choice", text_to_video=torch.arange(3))
    out = semantic(features, text, ctx).text.text_emb
    out_changed = semantic(features.replace(frame_emb=changed), text, ctx).text.text_emb
    assert torch.equal(out[[0, 2]], out_changed[[0, 2]]) and not torch.allclose(out[1], out_changed[1])


def test_training_step_losses_and_masking(tiny_backbone, frames):
    batch = mc_batch(frames)
    model = vla.wrap(tiny_backbone, [{"type": "tem_adapter", "temporal": {"prediction_weight": 0.5}}],
                     task="multiple_choice")
    model.train()
    out = model(batch)
    assert set(out.losses) == {"tem_temporal_aligner/prediction", "multiple_choice"}
    out.loss.backward()
    semantic = model.adapters[1]
    assert semantic.aligner.gate.grad.abs().sum() > 0  # the zero gate receives gradient
    assert model.adapters[0].aligner.pool_proj.weight.grad.abs().sum() > 0
    # The prediction loss carries its weight, and is absent at inference.
    model.adapters[0].config.prediction_weight = 1.0
    torch.manual_seed(0)
    full = model(batch).losses["tem_temporal_aligner/prediction"]
    model.adapters[0].config.prediction_weight = 0.5
    torch.manual_seed(0)
    half = model(batch).losses["tem_temporal_aligner/prediction"]
    assert torch.allclose(half, 0.5 * full)
    model.eval()
    assert "tem_temporal_aligner/prediction" not in model(batch).losses
    # Hinge (the official loss, averaged) also works with masked candidates.
    hinge = vla.wrap(tiny_backbone, ["tem_adapter"], task={"type": "multiple_choice", "loss": "hinge"}).train()
    assert torch.isfinite(hinge(batch).loss)


def test_retrieval_training_uses_the_paired_caption(tiny_backbone, frames, texts):
    video, mask = frames
    model = vla.wrap(tiny_backbone, ["tem_temporal_aligner"]).train()
    out = model({"video": video, "frame_mask": mask, "text": texts})
    assert "tem_temporal_aligner/prediction" in out.losses
    out.loss.backward()
    aligner = model.adapters[0].aligner
    assert aligner.guidance_sentence_proj.weight.grad.abs().sum() > 0
    assert aligner.guidance_token_proj.weight.grad.abs().sum() > 0


def test_bad_inputs_raise(tiny_backbone, frames):
    batch = mc_batch(frames)
    model = vla.wrap(tiny_backbone, ["tem_adapter"], task="multiple_choice")
    empty = batch["candidate_mask"].clone()
    empty[1] = False
    with pytest.raises(ValueError, match="no candidate for rows \\[1\\]"):
        model({**batch, "candidate_mask": empty, "answer": None})
    semantic = model.adapters[1]
    video = tiny_backbone.encode_video(batch["video"], batch["frame_mask"])
    text = tiny_backbone.encode_text(["a", "b"])
    with pytest.raises(FeatureShapeError, match="3 videos and 2 texts"):
        semantic(video, text, AdapterContext())
    temporal = model.adapters[0].train()
    ctx = AdapterContext(guidance=text, text_to_video=None)
    with pytest.raises(FeatureShapeError, match="guidance has 2 texts for 3 videos"):
        temporal(video, None, ctx)
    no_tokens = TextFeatures(text_emb=torch.randn(3, 64))
    with pytest.raises(FeatureShapeError, match="token_states"):
        semantic(video, no_tokens, AdapterContext())
    with pytest.raises(ConfigError, match="answer"):
        vla.wrap(tiny_backbone, [{"type": "tem_adapter", "template": "{question} only"}])


def test_config_official_compat_and_save_load(tiny_backbone, frames, tmp_path):
    model = vla.wrap(tiny_backbone, [{"type": "tem_adapter", "official_compat": True}]).eval()
    temporal, semantic = model.adapters
    assert (temporal.config.heads, temporal.config.ffn_dim) == (16, 2048)
    assert (semantic.config.width, semantic.config.heads, semantic.config.use_token_states) == (128, 16, False)
    assert torch.allclose(semantic.aligner.gate, torch.full((64,), 1e-4))
    model.save_adapters(tmp_path)
    again = vla.load_adapters(tmp_path, backbone=tiny_backbone).eval()
    video, mask = frames
    assert torch.equal(model.similarity(["a", "b"], video, frame_mask=mask),
                       again.similarity(["a", "b"], video, frame_mask=mask))
    # official_compat scores pairs by the raw dot product with the pooled encoder vector
    features = tiny_backbone.encode_video(video, mask)
    text = tiny_backbone.encode_text(["a", "b", "c"])
    pooled = temporal(features, None, AdapterContext()).video
    out = semantic(pooled, text, AdapterContext())
    assert torch.allclose(out.pair_logits, (out.text.text_emb * pooled.video_emb).sum(-1))


# ---- the official checkpoints -----------------------------------------------------------------
class OfficialTempAlignerShapes(nn.Module):
    """Modules with the official TempAligner's attribute names and sizes (sequence-first PyTorch layers)."""

    def __init__(self):
        super().__init__()
        self.positional_encoding = nn.Module()
        self.positional_encoding.register_buffer("pe", sinusoid_positions(5000, 512)[:, None])
        self.transformer_encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(512, 16), 1, enable_nested_tensor=False)
        self.transformer_decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(512, 16), 1)


def official_semantic_state() -> dict:
    """The official SemanticAligner's keys and shapes (width 128, one layer, 512-d text and video)."""
    g = torch.Generator().manual_seed(3)
    shapes = {"gamma": [512]}
    for prefix, sizes in (("memory_proj", [(512,), (128, 512), (128,)]), ("text_proj", [(512,), (128, 512)]),
                          ("out_proj", [(128,), (512, 128)])):
        for i, shape in enumerate(sizes):
            shapes[f"context_decoder.{prefix}.{i}.weight"] = list(shape)
            shapes[f"context_decoder.{prefix}.{i}.bias"] = [shape[0]]
    layer = "context_decoder.decoder.0."
    for attn in ("self_attn", "cross_attn"):
        for proj in ("q_proj", "k_proj", "v_proj"):
            shapes[f"{layer}{attn}.{proj}.weight"] = [128, 128]
        shapes[f"{layer}{attn}.proj.weight"] = [128, 128]
        shapes[f"{layer}{attn}.proj.bias"] = [128]
    for norm in ("norm1", "norm2", "norm3"):
        shapes[f"{layer}{norm}.weight"] = [128]
        shapes[f"{layer}{norm}.bias"] = [128]
    shapes.update({f"{layer}mlp.0.weight": [512, 128], f"{layer}mlp.0.bias": [512],
                   f"{layer}mlp.3.weight": [128, 512], f"{layer}mlp.3.bias": [128]})
    return {k: torch.randn(v, generator=g) for k, v in shapes.items()}


@pytest.fixture
def official_files(tmp_path):
    torch.manual_seed(2)
    temporal = OfficialTempAlignerShapes()
    semantic = official_semantic_state()
    kwargs = {"vision_dim": 512, "module_dim": 512}
    torch.save({"epoch": 49, "state_dict": temporal.state_dict(), "optimizer": {}, "model_kwargs": kwargs},
               tmp_path / "tempaligner_49.pt")
    torch.save({"epoch": 49, "state_dict": semantic, "optimizer": {}, "model_kwargs": None},
               tmp_path / "semanticaligner_49.pt")
    return tmp_path / "tempaligner_49.pt", tmp_path / "semanticaligner_49.pt", temporal, semantic


def official_adapters():
    return [vla.build_adapter(spec, DIMS_512) for spec in
            ({"type": "tem_temporal_aligner", "official_compat": True},
             {"type": "tem_semantic_aligner", "official_compat": True})]


class _Holder(nn.Module):
    def __init__(self, adapters):
        super().__init__()
        self.adapters = nn.ModuleList(adapters)


def test_converter_maps_every_official_key(official_files):
    temporal_path, semantic_path, official_temporal, official_semantic = official_files
    holder = _Holder(official_adapters())
    load_official(holder, temporal=temporal_path, semantic=semantic_path)
    ours_t, ours_s = holder.adapters
    for key, value in official_temporal.state_dict().items():
        if key != "positional_encoding.pe":
            assert torch.equal(ours_t.state_dict()["aligner." + key.replace("transformer_", "")], value)
    assert torch.equal(ours_s.aligner.gate, official_semantic["gamma"])
    assert torch.equal(ours_s.aligner.layers[0].cross_attn.q_proj.weight,
                       official_semantic["context_decoder.decoder.0.cross_attn.q_proj.weight"])
    loaded = sum(v.numel() for v in ours_t.state_dict().values()) + sum(v.numel() for v in ours_s.state_dict().values())
    assert loaded == 7_820_672

    # The pooled video vector matches the official computation (mean over time of the encoder output).
    ours_t.eval()
    official_temporal.eval()
    frames = torch.randn(2, 12, 512)
    with torch.no_grad():
        sequence_first = (frames + sinusoid_positions(12, 512)).transpose(0, 1)
        reference = official_temporal.transformer_encoder(sequence_first).mean(0)
        pooled = ours_t(VideoFeatures(frame_emb=frames, frame_mask=torch.ones(2, 12, dtype=torch.bool)), None,
                        AdapterContext()).video.video_emb
    assert torch.allclose(pooled, reference, atol=1e-4)


def test_converter_fails_loudly(official_files, tmp_path):
    temporal_path, semantic_path, _, semantic = official_files
    state = read_official_checkpoint(temporal_path)
    holder = _Holder(official_adapters())
    with pytest.raises(OfficialCheckpointError, match="no mapping for key\\(s\\) \\['extra.weight'\\]"):
        load_official(holder, temporal={**state, "extra.weight": torch.zeros(1)})
    missing = {k: v for k, v in semantic.items() if k != "context_decoder.out_proj.1.bias"}
    with pytest.raises(OfficialCheckpointError, match="missing \\['aligner.out_proj.1.bias'\\]"):
        load_official(holder, semantic=missing)
    with pytest.raises(OfficialCheckpointError, match="shape mismatches"):
        load_official(holder, semantic={**semantic, "gamma": torch.zeros(256)})
    with pytest.raises(OfficialCheckpointError, match="sinusoidal"):
        load_official(holder, temporal={**state, "positional_encoding.pe": torch.zeros(5000, 1, 512)})
    default = _Holder([vla.build_adapter("tem_temporal_aligner", DIMS_512)])
    with pytest.raises(OfficialCheckpointError, match="official_compat"):
        load_official(default, temporal=state)
    torch.save({"weights": [1, 2]}, tmp_path / "odd.pt")
    with pytest.raises(OfficialCheckpointError, match="state dict"):
        read_official_checkpoint(tmp_path / "odd.pt")


def test_official_parameter_count_on_vit_b32_and_cli(official_files, tmp_path):
    pytest.importorskip("open_clip")
    backbone = vla.load_backbone("open_clip:ViT-B-32", pretrained=None, device="cpu")
    model = vla.wrap(backbone, [{"type": "tem_adapter", "official_compat": True}], task="multiple_choice")
    counts = {a.name: sum(p.numel() for p in a.parameters() if p.requires_grad) for a in model.adapters}
    assert counts == {"tem_temporal_aligner": 7_356_416, "tem_semantic_aligner": 464_256}
    # the task head adds its learnable temperature (1 scalar)
    assert sum(p.numel() for p in model.trainable_parameters()) == 7_820_672 + 1

    from vl_adapters.adapters.tem_adapter.convert import convert_official

    temporal_path, semantic_path, official_temporal, _ = official_files
    convert_official(temporal=temporal_path, semantic=semantic_path, out=tmp_path / "converted", backbone=backbone)
    again = vla.load_adapters(tmp_path / "converted", backbone=backbone)
    weight = official_temporal.transformer_encoder.layers[0].linear1.weight
    assert torch.equal(again.adapters[0].aligner.encoder.layers[0].linear1.weight, weight)
    assert again.adapters[0].config.official_compat and again.task.config.loss == "hinge"


def test_cli_convert_subcommand_is_registered(capsys):
    from vl_adapters.cli import main

    with pytest.raises(SystemExit):
        main(["convert-tem-adapter", "--help"])
    assert "--temporal" in capsys.readouterr().out
