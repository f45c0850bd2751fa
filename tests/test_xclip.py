"""xclip: AOSM and the four-grained score against a loop reference, the high-temperature limit, the
fine-grained terms breaking a mean-pooling tie, identity at init, training, dual encoding, bad input."""

import pytest
import torch
import torch.nn.functional as F

import vl_adapters as vla
from vl_adapters.adapters.xclip.modules import aosm
from vl_adapters.core.pooling import cosine_matrix, masked_mean

DIMS = vla.BackboneDims(embed_dim=6, vision_width=4, text_width=5, grid=(1, 1), context_length=8, image_size=32)


def features(a=3, b=4, length=5, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    token_mask = torch.ones(a, length, dtype=torch.bool)
    token_mask[0, 3:] = False
    frame_mask = torch.ones(b, t, dtype=torch.bool)
    frame_mask[1, 2:] = False
    text = vla.TextFeatures(text_emb=torch.randn(a, 6, generator=g),
                            token_states=torch.randn(a, length, 5, generator=g), token_mask=token_mask)
    video = vla.VideoFeatures(frame_emb=torch.randn(b, t, 6, generator=g), frame_mask=frame_mask)
    return text, video


def adapter(seed=0, **config):
    torch.manual_seed(seed)
    return vla.build_adapter({"type": "xclip", **config}, DIMS)


def test_aosm_is_the_mean_at_high_temperature_and_the_max_at_low():
    g = torch.Generator().manual_seed(0)
    sims = torch.rand(3, 5, generator=g)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3, [True] * 4 + [False]])
    torch.testing.assert_close(aosm(sims, mask, 1, 1e6), masked_mean(sims, mask, dim=1))
    torch.testing.assert_close(aosm(sims, mask, 1, 1e-4), sims.masked_fill(~mask, -1).amax(1))
    assert torch.equal(aosm(sims, mask, 1, 0.01, torch.eye(7)), aosm(sims, mask, 1, 0.01))


def _aggregate(values, temperature, mixing):
    """Loop reference of one AOSM step over a list of real values: sum_j (sum_i a_i M_ij) v_j."""
    v = torch.stack(values)
    a = torch.softmax(v / temperature, 0)
    n = len(values)
    return sum(sum(a[i] * mixing[i, j] for i in range(n)) * v[j] for j in range(n))


def reference_score(module, text, video, tau):
    """X-CLIP's score written from the paper's definitions with loops over texts, videos, words and frames."""
    mix = {k: p.detach() for k, p in module.mixing.items()}
    out = torch.zeros(text.batch_size, video.batch_size)
    for i in range(text.batch_size):
        s = F.normalize(text.text_emb[i], dim=-1)
        words = [F.normalize(module.word_proj(text.token_states[i, k]), dim=-1)
                 for k in range(text.token_mask.shape[1]) if text.token_mask[i, k]]
        for j in range(video.batch_size):
            frames = [F.normalize(video.frame_emb[j, t], dim=-1)
                      for t in range(video.num_frames) if video.frame_mask[j, t]]
            v = F.normalize(torch.stack(frames).mean(0), dim=-1)
            vs = s @ module.sentence_video_weight @ v
            vw = _aggregate([w @ v for w in words], tau, mix["video_word"])
            fs = _aggregate([s @ f for f in frames], tau, mix["sentence_frame"])
            fw = [[w @ module.word_frame_weight @ f for f in frames] for w in words]
            per_frame = [_aggregate([fw[k][t] for k in range(len(words))], tau, mix["frame_word_words"])
                         for t in range(len(frames))]
            per_word = [_aggregate(fw[k], tau, mix["frame_word_frames"]) for k in range(len(words))]
            fw_score = 0.5 * (_aggregate(per_frame, tau, mix["frame_word_then_frames"])
                              + _aggregate(per_word, tau, mix["frame_word_then_words"]))
            out[i, j] = 0.25 * (vs + vw + fs + fw_score)
    return out


@pytest.mark.parametrize("chunk", [1 << 24, 7])
def test_score_matches_a_loop_reference(chunk):
    module = adapter(chunk_elements=chunk, gate_init=1.0, aosm_temperature=0.3)
    with torch.no_grad():  # re-weighting away from identity, so the reference checks where each matrix acts
        for p in [module.sentence_video_weight, module.word_frame_weight, *module.mixing.values()]:
            p.add_(0.1 * torch.randn_like(p))
    text, video = features()
    expected = reference_score(module, text, video, 0.3)
    extra = module.extra_similarity(text, video)
    torch.testing.assert_close(extra + cosine_matrix(text, video), expected, rtol=1e-5, atol=1e-5)
    # aligned pairs (multiple choice) score as the matrix's diagonal
    pairs = module.extra_pair_similarity(text, video.index(torch.arange(3)))
    torch.testing.assert_close(pairs, extra.diagonal(), rtol=1e-5, atol=1e-6)


def test_high_temperature_reduces_to_mean_aggregation():
    module = adapter(gate_init=1.0, aosm_temperature=1e6)
    text, video = features()
    sentence, words, word_mask = module.text_side(text)
    pooled, frames, frame_mask = module.video_side(video)
    word_weight = word_mask.float() / word_mask.sum(1, keepdim=True)
    frame_weight = frame_mask.float() / frame_mask.sum(1, keepdim=True)
    video_sentence = sentence @ pooled.T
    video_word = torch.einsum("ald,bd,al->ab", words, pooled, word_weight)
    frame_sentence = torch.einsum("ad,btd,bt->ab", sentence, frames, frame_weight)
    frame_word = torch.einsum("ald,btd,al,bt->ab", words, frames, word_weight, frame_weight)
    means = 0.25 * (video_sentence + video_word + frame_sentence + frame_word)
    torch.testing.assert_close(module.extra_similarity(text, video) + video_sentence, means, rtol=1e-5, atol=1e-5)


def test_fine_grained_terms_break_a_mean_pooling_tie():
    """Video 0 shows e0 then e1; video 1 shows their normalised sum twice: the same mean-pooled embedding,
    so the dual cosine ties them. A text about e0 (sentence and words) finds its frame in video 0."""
    dims = vla.BackboneDims(embed_dim=4, vision_width=4, text_width=4, grid=(1, 1), context_length=4, image_size=32)
    module = vla.build_adapter({"type": "xclip", "gate_init": 1.0}, dims)
    with torch.no_grad():
        module.word_proj.weight.copy_(torch.eye(4))
        module.word_proj.bias.zero_()
    e = torch.eye(4)
    both = F.normalize(e[0] + e[1], dim=0)
    video = vla.VideoFeatures(frame_emb=torch.stack([torch.stack([e[0], e[1]]), torch.stack([both, both])]),
                              frame_mask=torch.ones(2, 2, dtype=torch.bool))
    text = vla.TextFeatures(text_emb=e[:1], token_states=e[0].expand(1, 3, 4).clone(),
                            token_mask=torch.ones(1, 3, dtype=torch.bool))
    dual = cosine_matrix(text, video)
    assert torch.allclose(dual[0, 0], dual[0, 1])  # mean pooling ties
    scores = dual + module.extra_similarity(text, video)
    assert scores[0, 0] > scores[0, 1] + 0.1


def test_identity_at_init_training_and_dual_encoding():
    backbone = vla.load_backbone("tiny:synthetic", device="cpu")
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (4, 5, 3, 32, 32), dtype=torch.uint8, generator=g)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2, 3:] = False
    texts = ["a red circle moves left", "a blue square appears", "the green triangle turns yellow", "a white square"]
    video, text = backbone.encode_video(frames, mask), backbone.encode_text(texts)
    zero_shot = cosine_matrix(text, video)
    for task in ("retrieval", "multiple_choice"):
        torch.manual_seed(0)
        model = vla.wrap(backbone, ["xclip"], task=task).eval()
        assert torch.equal(model.similarity(text, video), zero_shot)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
        model.train()
        for _ in range(3):
            if task == "retrieval":
                batch = {"video": video, "text": text}
            else:
                batch = {"video": video, "question": ["which?"] * 4, "candidate_mask": torch.ones(4, 2, dtype=torch.bool),
                         "candidates": [[texts[i], texts[(i + 1) % 4]] for i in range(4)],
                         "answer": torch.tensor([0, 1, 0, 1])}
            out = model(batch)
            optimiser.zero_grad()
            out.loss.backward()
            optimiser.step()
        unmoved = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
        assert not unmoved
        model.eval()
        trained = model.similarity(text, video)
        assert (trained - zero_shot).abs().max() > 1e-3
        # a dual encoder: one text scored alone gets its row of the batch matrix
        torch.testing.assert_close(model.similarity(text.index(torch.tensor([2])), video)[0], trained[2],
                                   rtol=0, atol=1e-6)
        # multiple-choice pair scores carry the X-CLIP term too
        pairs = model.score_pairs(model.encode_text(text), model.encode_video(video))
        torch.testing.assert_close(pairs, model.task.scale * trained.diagonal(), rtol=1e-5, atol=1e-5)


def test_bad_input_is_named():
    module = adapter()
    text, video = features()
    with pytest.raises(vla.FeatureShapeError, match="token_states"):
        module.extra_similarity(vla.TextFeatures(text_emb=text.text_emb), video)
    with pytest.raises(vla.FeatureShapeError, match="max_frames=2"):
        adapter(max_frames=2).extra_similarity(text, video)
    with pytest.raises(vla.FeatureShapeError, match="context_length 8"):
        long = vla.TextFeatures(text_emb=text.text_emb, token_states=torch.randn(3, 9, 5),
                                token_mask=torch.ones(3, 9, dtype=torch.bool))
        module(None, long, vla.AdapterContext())
    with pytest.raises(vla.ConfigError, match="aosm_temperature"):
        adapter(aosm_temperature=0.0)
    config = module.config
    assert type(config).from_json(config.to_json()) == config
