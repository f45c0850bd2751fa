"""trajectory_word: locality of trajectories and T2W, masking, exhaustive re-ranking, identity at init, gradients."""

import pytest
import torch

import vl_adapters as vla
from vl_adapters.adapters.trajectory_word import TrajectoryWordConfig
from vl_adapters.adapters.trajectory_word.modules import FrameSelector, TrajectoryWordLayer
from vl_adapters.core.adapter import AdapterContext
from vl_adapters.core.pooling import cosine_matrix

DIMS = vla.BackboneDims(embed_dim=12, vision_width=10, text_width=8, grid=(2, 3), context_length=16, image_size=32)


def features(p=3, length=7, t=4, seed=0, dims=DIMS):
    g = torch.Generator().manual_seed(seed)
    token_mask = torch.ones(p, length, dtype=torch.bool)
    token_mask[0, 4:] = False  # a short text beside longer ones: its padding is not trimmed away
    token_mask[1, 6:] = False
    frame_mask = torch.ones(p, t, dtype=torch.bool)
    frame_mask[2, 2:] = False
    n = dims.grid[0] * dims.grid[1]
    text = vla.TextFeatures(text_emb=torch.randn(p, dims.embed_dim, generator=g),
                            token_states=torch.randn(p, length, dims.text_width, generator=g), token_mask=token_mask)
    video = vla.VideoFeatures(frame_emb=torch.randn(p, t, dims.embed_dim, generator=g), frame_mask=frame_mask,
                              patch_tokens=torch.randn(p, t, n, dims.vision_width, generator=g), grid=dims.grid)
    return text, video


def adapter(seed=0, **config):
    torch.manual_seed(seed)
    module = vla.build_adapter({"type": "trajectory_word", "width": 16, "heads": 4, **config}, DIMS).eval()
    torch.nn.init.normal_(module.head.mlp[-1].weight)  # a trained-looking head, so the encoder matters
    return module


def logits(module, text, video):
    return module(video, text, AdapterContext()).pair_logits


@pytest.mark.parametrize("tie", [True, False])
def test_trajectory_point_in_frame_t_depends_only_on_frame_t(tie):
    torch.manual_seed(0)
    layer = TrajectoryWordLayer(width=16, heads=4, mlp_ratio=2.0, dropout=0.0, tie_weights=tie)
    words, patches = torch.randn(2, 5, 16), torch.randn(2, 4, 6, 16)
    tau = layer.trajectories(words, patches)
    assert tau.shape == (2, 5, 4, 16)
    changed = patches.clone()
    changed[:, 2] = torch.randn(2, 6, 16)
    tau_changed = layer.trajectories(words, changed)
    others = [0, 1, 3]
    torch.testing.assert_close(tau_changed[:, :, others], tau[:, :, others], rtol=0, atol=1e-6)
    assert (tau_changed[:, :, 2] - tau[:, :, 2]).abs().max() > 1e-3


def test_t2w_output_of_a_word_ignores_other_words_trajectories():
    torch.manual_seed(0)
    layer = TrajectoryWordLayer(width=16, heads=4, mlp_ratio=2.0, dropout=0.0, tie_weights=True)
    words, tau = torch.randn(2, 5, 16), torch.randn(2, 5, 3, 16)
    word_mask, frame_mask = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)
    out = layer.t2w(words, tau, word_mask, frame_mask)
    others = tau.clone()
    others[:, 1:] = torch.randn(2, 4, 3, 16)
    out_others = layer.t2w(words, others, word_mask, frame_mask)
    torch.testing.assert_close(out_others[:, 0], out[:, 0], rtol=0, atol=1e-6)
    assert (out_others[:, 1:] - out[:, 1:]).abs().max() > 1e-3
    own = tau.clone()
    own[:, 0] = torch.randn(2, 3, 16)
    assert (layer.t2w(words, own, word_mask, frame_mask)[:, 0] - out[:, 0]).abs().max() > 1e-3
    # a padded frame's trajectory point is ignored
    frame_mask[:, 2] = False
    masked = layer.t2w(words, tau, word_mask, frame_mask)
    own[:, :, :2] = tau[:, :, :2]
    torch.testing.assert_close(layer.t2w(words, own, word_mask, frame_mask), masked, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", [{}, {"tie_weights": False}, {"frame_selector": True, "select_before": [0, 1]}])
def test_padding_words_and_padded_frames_change_nothing(config):
    module = adapter(**config)
    text, video = features()
    reference = logits(module, text, video)
    # new values at padded word positions, extra padded words at the end, new values in padded frames
    states = text.token_states.clone()
    states[~text.token_mask] = torch.randn(int((~text.token_mask).sum()), DIMS.text_width) * 10
    states = torch.cat([states, torch.randn(3, 3, DIMS.text_width)], dim=1)
    mask = torch.cat([text.token_mask, torch.zeros(3, 3, dtype=torch.bool)], dim=1)
    patches = video.patch_tokens.clone()
    patches[~video.frame_mask] = torch.randn(int((~video.frame_mask).sum()), 6, DIMS.vision_width) * 10
    padded = logits(module, text.replace(token_states=states, token_mask=mask), video.replace(patch_tokens=patches))
    torch.testing.assert_close(padded, reference, rtol=0, atol=1e-5)
    # while real words and real frames do matter
    states[0, 1] += torch.randn(DIMS.text_width)
    assert (logits(module, text.replace(token_states=states, token_mask=mask), video) - reference).abs().max() > 1e-4


def test_pair_chunking_gives_the_same_scores():
    text, video = features(p=3)
    whole = logits(adapter(pair_chunk=64), text, video)
    torch.testing.assert_close(logits(adapter(pair_chunk=1), text, video), whole, rtol=0, atol=1e-5)


def test_rerank_with_k_all_equals_exhaustive_cross_scoring(tiny_backbone, frames, texts):
    video_frames, mask = frames
    model = vla.wrap(tiny_backbone, [{"type": "trajectory_word", "heads": 4}]).eval()
    torch.nn.init.normal_(model.adapters[0].head.mlp[-1].weight)
    video, text = model.encode_video(video_frames, mask), model.encode_text(texts)
    rows = torch.arange(3).repeat_interleave(3)
    cols = torch.arange(3).repeat(3)
    with torch.no_grad():
        exhaustive = model.score_pairs(text.index(rows), video.index(cols)).view(3, 3)
    reranked = model.similarity(texts, video_frames, frame_mask=mask, rerank_k=0, pair_chunk_size=2)
    torch.testing.assert_close(reranked, exhaustive, rtol=0, atol=1e-5)
    # top-1: each text's best dual video carries its cross score and ranks first
    top1 = model.similarity(texts, video_frames, frame_mask=mask, rerank_k=1)
    best = model.dual_similarity(text, video).argmax(1)
    torch.testing.assert_close(top1[torch.arange(3), best], exhaustive[torch.arange(3), best], rtol=0, atol=1e-5)
    assert (top1.argmax(1) == best).all()


def test_identity_at_init_through_the_wrapper(tiny_backbone, frames, texts):
    video_frames, mask = frames
    model = vla.wrap(tiny_backbone, ["trajectory_word"]).eval()
    zero_shot = cosine_matrix(tiny_backbone.encode_text(texts), tiny_backbone.encode_video(video_frames, mask))
    dual = model.dual_similarity(model.encode_text(texts), model.encode_video(video_frames, mask))
    torch.testing.assert_close(dual, zero_shot, rtol=0, atol=1e-6)
    scale = model.adapters[0].config.residual_scale
    for k in (0, 50):  # exhaustive, and the default top-50 (more than there are videos)
        reranked = model.similarity(texts, video_frames, frame_mask=mask, rerank_k=k)
        torch.testing.assert_close(reranked, scale * zero_shot, rtol=1e-5, atol=1e-5)
    # with k smaller than the gallery the dual order survives too
    top2 = model.similarity(texts, video_frames, frame_mask=mask, rerank_k=2)
    assert torch.equal(top2.argsort(1), zero_shot.argsort(1))


@pytest.mark.parametrize("config", [{}, {"depth": 2}, {"tie_weights": False, "depth": 2},
                                    {"frame_selector": True, "select_before": [0, 1], "depth": 2}])
def test_gradient_reaches_every_trainable_parameter(tiny_backbone, frames, texts, config):
    video_frames, mask = frames
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, [{"type": "trajectory_word", "heads": 4, **config}])
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model.train()
    batch = {"video": video_frames, "frame_mask": mask, "text": texts}
    for _ in range(2):  # the first step moves the zero-initialised head, which then lets gradient through
        optimizer.zero_grad()
        out = model(batch)
        out.loss.backward()
        optimizer.step()
    assert set(out.losses) == {"retrieval", "matching"}
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().max() == 0)]
    assert not dead


def test_weight_sharing_flag():
    tied, untied = adapter(), adapter(tie_weights=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    width = 16
    layer = tied.encoder.layers[0]
    # eight W x W linears in a tied layer: Q, K, V shared by trajectory step and W2P; T2W's Q, K, V; W_O; W_tau
    attention = sum(m.weight.numel() for m in (layer.w2p_qkv.query, layer.w2p_qkv.key_value, layer.t2w_qkv.query,
                                               layer.t2w_qkv.key_value, layer.out_text, layer.trajectory.proj))
    assert attention == 8 * width * width
    assert layer.out_video_proj is layer.out_text and layer.ffn_video_block is layer.ffn_text
    other = untied.encoder.layers[0]
    assert other.out_video_proj is not other.out_text and other.ffn_video_block is not other.ffn_text
    assert not hasattr(layer, "step_qkv") and hasattr(other, "step_qkv")
    extra_per_layer = count(other.step_qkv) + count(other.out_video) + count(other.ffn_video)
    assert count(untied) - count(tied) == 2 * extra_per_layer


def test_frame_selector_keeps_real_frames_in_temporal_order():
    torch.manual_seed(0)
    selector = FrameSelector(width=8, samples=50, sigma=0.05)
    patches, sentence = torch.randn(2, 6, 3, 8), torch.randn(2, 8)
    frame_mask = torch.ones(2, 6, dtype=torch.bool)
    frame_mask[1, 3:] = False
    selection, new_mask = selector.eval()(patches, sentence, frame_mask, 3)
    picked = selection.argmax(-1)
    assert (picked.diff(dim=1) > 0).all() and new_mask.all()
    assert (picked[1] < 3).all()  # only real frames when there are enough
    selector.train()
    scores_probe = torch.zeros(2, 6, 3, 8, requires_grad=True)
    soft, _ = selector(patches + scores_probe, sentence, frame_mask, 3)
    assert torch.allclose(soft.sum(-1), torch.ones(2, 3))
    (soft * torch.randn_like(soft)).sum().backward()
    assert scores_probe.grad.abs().max() > 0


def test_bad_inputs_are_named():
    module = adapter()
    text, video = features()
    with pytest.raises(vla.FeatureShapeError, match="patch_tokens"):
        module(video.replace(patch_tokens=None, grid=None), text, AdapterContext())
    with pytest.raises(vla.FeatureShapeError, match="token_states"):
        module(video, text.replace(token_states=None, token_mask=None), AdapterContext())
    with pytest.raises(vla.FeatureShapeError, match="aligned pairs"):
        module(video.index(torch.tensor([0, 1])), text, AdapterContext())
    with pytest.raises(vla.ConfigError, match="select_before"):
        vla.build_adapter({"type": "trajectory_word", "depth": 2, "frame_selector": True, "select_before": [2]}, DIMS)


def test_select_before_is_checked_only_with_the_frame_selector():
    # select_before's default [1] names a second layer; without the selector it is not used, so depth 1 builds
    module = vla.build_adapter(TrajectoryWordConfig(depth=1), DIMS)
    assert len(module.encoder.layers) == 1 and not module.encoder.selectors
    with pytest.raises(vla.ConfigError, match="select_before"):
        TrajectoryWordConfig(depth=1, frame_selector=True)


def test_patch_pool_and_save_load(tmp_path, tiny_backbone, frames, texts):
    module = vla.build_adapter({"type": "trajectory_word", "patch_pool": 2, "heads": 4}, tiny_backbone.dims)
    video = tiny_backbone.encode_video(*frames)
    assert module.pooled_patches(video).shape == (3, 5, 4, tiny_backbone.dims.vision_width)
    model = vla.wrap(tiny_backbone, [module.config]).eval()
    torch.nn.init.normal_(model.adapters[0].head.mlp[-1].weight)
    model.save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, backbone=tiny_backbone).eval()
    assert torch.equal(model.similarity(texts, frames[0], rerank_k=0), loaded.similarity(texts, frames[0], rerank_k=0))


class _FeaturesOnlyBackbone(torch.nn.Module):
    """Stands in for a backbone when the test feeds features directly (as a feature cache would)."""

    spec = "features-only"
    logit_scale = 100.0

    def __init__(self, dims, device):
        super().__init__()
        self.dims, self.device = dims, torch.device(device)


@pytest.mark.gpu
@pytest.mark.slow
def test_1000_by_1000_top50_rerank_fits_one_gpu_at_vit_b32_dims():
    dims = vla.BackboneDims(embed_dim=512, vision_width=768, text_width=512, grid=(7, 7), context_length=77, image_size=224)
    torch.manual_seed(0)
    model = vla.wrap(_FeaturesOnlyBackbone(dims, "cuda"), [{"type": "trajectory_word", "depth": 2}]).eval()
    lengths = torch.randint(6, 33, (1000,))
    text = vla.TextFeatures(text_emb=torch.randn(1000, 512), token_states=torch.randn(1000, 77, 512),
                            token_mask=torch.arange(77)[None] < lengths[:, None])
    video = vla.VideoFeatures(frame_emb=torch.randn(1000, 12, 512), frame_mask=torch.ones(1000, 12, dtype=torch.bool),
                              patch_tokens=torch.randn(1000, 12, 49, 768), grid=(7, 7))
    torch.cuda.reset_peak_memory_stats()
    scores = model.similarity(text, video, rerank_k=50, pair_chunk_size=256)
    peak = torch.cuda.max_memory_allocated() / 2**30
    assert scores.shape == (1000, 1000) and torch.isfinite(scores).all()
    assert peak < 16, f"peak GPU memory {peak:.1f} GiB"


@pytest.mark.parametrize("tie", [True, False])
def test_the_last_layer_updates_only_what_the_encoder_reads(tie):
    """After the last layer the encoder reads the sentence token and the summary alone: computing only those
    (the sentence's trajectory and T2W, the summary's W2P) gives exactly the full layer's values."""
    module = adapter(tie_weights=tie, depth=2)
    text, video = features()
    encoder = module.encoder
    words = torch.cat([encoder.sentence_in(text.text_emb)[:, None], encoder.project_words(text.token_states)], dim=1)
    word_mask = torch.cat([torch.ones_like(text.token_mask[:, :1]), text.token_mask], dim=1)
    patches = encoder.project_patches(video.patch_tokens) + encoder.frame_position.weight[:video.num_frames, None]
    summary = encoder.video_in(video.frame_emb.mean(1))
    layer = encoder.layers[-1]
    full_words, full_summary, full_patches = layer(words, summary, patches, word_mask, video.frame_mask)
    last_words, last_summary, none = layer(words, summary, patches, word_mask, video.frame_mask, last=True)
    assert none is None and last_words.shape[1] == 1 and full_patches is not None
    torch.testing.assert_close(last_words[:, 0], full_words[:, 0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(last_summary, full_summary, rtol=1e-6, atol=1e-6)


def _word_to_patch_on_concatenation(q_video, k_video, v_video, k_words, v_words, word_mask):
    """The straightforward W2P: SDPA per (pair, frame) on the words' keys/values copied into every frame
    and concatenated with the frame's tokens."""
    p, t = q_video.shape[:2]
    words = lambda x: x.permute(0, 2, 1, 3)[:, None].expand(-1, t, -1, -1, -1)  # noqa: E731
    frame = lambda x: x.permute(0, 1, 3, 2, 4)  # noqa: E731
    k = torch.cat([words(k_words), frame(k_video)], dim=3).flatten(0, 1)
    v = torch.cat([words(v_words), frame(v_video)], dim=3).flatten(0, 1)
    keep = torch.cat([word_mask, word_mask.new_ones(p, k_video.shape[2])], dim=1)
    keep = keep[:, None].expand(-1, t, -1).reshape(p * t, 1, 1, -1)
    out = torch.nn.functional.scaled_dot_product_attention(frame(q_video).flatten(0, 1), k, v, attn_mask=keep)
    return out.unflatten(0, (p, t)).permute(0, 1, 3, 2, 4).flatten(-2)


@pytest.mark.parametrize("queries", [1, 5])  # the summary alone (last layer) or every token
def test_word_to_patch_matches_sdpa_on_the_concatenation(queries):
    from vl_adapters.adapters.trajectory_word.modules import word_to_patch

    g = torch.Generator().manual_seed(0)
    p, t, n, words, h, d = 3, 4, 4, 6, 2, 8
    tensors = [torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True) for shape in
               [(p, t, queries, h, d), (p, t, 1 + n, h, d), (p, t, 1 + n, h, d), (p, words, h, d), (p, words, h, d)]]
    word_mask = torch.ones(p, words, dtype=torch.bool)
    word_mask[0, 3:] = False  # padded words must get no weight
    word_mask[2, 1:] = False  # the sentence token alone
    grad_out = torch.randn(p, t, queries, h * d, generator=g, dtype=torch.float64)
    results = []
    for fn in (word_to_patch, _word_to_patch_on_concatenation):
        out = fn(*tensors, word_mask)
        grads = torch.autograd.grad(out, tensors, grad_out)
        results.append((out, grads))
    (out, grads), (ref, ref_grads) = results
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)
    # the padded words' values get no gradient: they were not attended to
    assert grads[4][0, 3:].abs().max() == 0


def _layer_with_the_summary_in_every_frame(layer, words, summary, patches, word_mask, frame_mask, last):
    """The straightforward layer: the summary copied into every frame as its token 0, one key/value
    projection of the [P,T,1+N,W] tokens, and W2P as SDPA on the words concatenated with each frame's tokens."""
    t = patches.shape[1]
    w = layer.norm_text(words)
    tokens = layer.norm_video(torch.cat([summary[:, None, None].expand(-1, t, 1, -1), patches], dim=2))
    k_video, v_video = layer.w2p_qkv.kv(tokens)
    k_words, v_words = layer.w2p_qkv.kv(w)
    queries = w[:, :1] if last else w
    if layer.tie_weights:
        tau = layer.trajectory(layer.w2p_qkv.q(queries), k_video[:, :, 1:], v_video[:, :, 1:])
    else:
        tau = layer.trajectories(queries, tokens[:, :, 1:])
    text_update = layer.t2w(w, tau, word_mask, frame_mask, queries=queries)
    video_queries = tokens[:, :, :1] if last else tokens
    mixed = _word_to_patch_on_concatenation(layer.w2p_qkv.q(video_queries), k_video, v_video, k_words, v_words,
                                            word_mask)
    video_update = layer.out_video_proj(mixed)
    weights = frame_mask.to(video_update.dtype)[..., None]
    summary_update = (video_update[:, :, 0] * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    words = (words[:, :1] if last else words) + text_update
    summary = summary + summary_update
    words = words + layer.ffn_text(words)
    summary = summary + layer.ffn_video_block(summary)
    if last:
        return words, summary
    patches = patches + video_update[:, :, 1:]
    return words, summary, patches + layer.ffn_video_block(patches)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("last", [True, False])
def test_layer_matches_the_summary_copied_into_every_frame(tie, last):
    """The layer projects the summary once per pair; outputs and every gradient equal the version that
    copies it into every frame (masked words and a padded frame included)."""
    torch.manual_seed(0)
    layer = TrajectoryWordLayer(width=16, heads=4, mlp_ratio=2.0, dropout=0.0, tie_weights=tie).double()
    p, t, n, length = 3, 4, 5, 6
    words = torch.randn(p, length, 16, dtype=torch.float64, requires_grad=True)
    summary = torch.randn(p, 16, dtype=torch.float64, requires_grad=True)
    patches = torch.randn(p, t, n, 16, dtype=torch.float64, requires_grad=True)
    word_mask = torch.ones(p, length, dtype=torch.bool)
    word_mask[0, 3:] = False
    frame_mask = torch.ones(p, t, dtype=torch.bool)
    frame_mask[2, 2:] = False
    inputs = [words, summary, patches, *layer.parameters()]
    results = []
    for fn in (layer, lambda *a, last: _layer_with_the_summary_in_every_frame(layer, *a, last)):
        outs = [o for o in fn(words, summary, patches, word_mask, frame_mask, last=last) if o is not None]
        loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs)
        results.append((outs, torch.autograd.grad(loss, inputs, allow_unused=True)))
    (outs, grads), (ref_outs, ref_grads) = results
    for out, ref in zip(outs, ref_outs, strict=True):
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for grad, ref in zip(grads, ref_grads, strict=True):
        if ref is None:
            assert grad is None or grad.abs().max() == 0
        else:
            torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-10)
