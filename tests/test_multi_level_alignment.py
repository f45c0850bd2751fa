"""multi_level_alignment: phrases and segments pair in time order, the segment-level loss punishes a wrong
order, identity at init, it trains in retrieval and multiple choice, and bad input is named."""

import pytest
import torch
import torch.nn.functional as F

import vl_adapters as vla
from vl_adapters.adapters.multi_level_alignment.modules import segment_weights, split_phrases
from vl_adapters.core.adapter import AdapterContext
from vl_adapters.core.pooling import cosine_matrix

DIMS = vla.BackboneDims(embed_dim=8, vision_width=6, text_width=8, grid=(1, 1), context_length=16, image_size=32)


@pytest.mark.parametrize("caption, phrases", [
    ("first the red circle moves left, then the blue square appears, then the green triangle turns yellow",
     ["the red circle moves left", "the blue square appears", "the green triangle turns yellow"]),
    ("What happens in the video? first A moves, then B appears", ["A moves", "B appears"]),  # MC guidance
    ("a man walks in. He sits down; and then he leaves", ["a man walks in", "He sits down", "he leaves"]),
    ("a red circle, a blue square and a green triangle", ["a red circle, a blue square and a green triangle"]),
    ("A opens the door, after that B waves. Finally C sits", ["A opens the door", "B waves", "C sits"]),
])
def test_captions_split_into_ordered_phrases(caption, phrases):
    assert split_phrases(caption) == phrases


def test_segments_are_consecutive_equal_parts_of_the_real_frames():
    mask = torch.tensor([[True] * 7 + [False] * 2, [True] * 9])
    video = torch.tensor([0, 0, 0, 1, 1])
    part = torch.tensor([0, 1, 2, 0, 1])
    count = torch.tensor([3, 3, 3, 2, 2])
    weights = segment_weights(mask, video, part, count)
    members = [row.nonzero().flatten().tolist() for row in weights > 0]
    assert members == [[0, 1, 2], [3, 4], [5, 6], [0, 1, 2, 3, 4], [5, 6, 7, 8]]  # in order, padding never used
    torch.testing.assert_close(weights.sum(1), torch.ones(5))


class _Phrases:
    """A stand-in for the frozen text tower: each phrase string has a fixed embedding."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, phrases):
        self.calls.append(list(phrases))
        return vla.TextFeatures(text_emb=torch.stack([self.table[p] for p in phrases]), texts=list(phrases))


def _aligned_toy():
    """Video 0 shows A, B, C in turn (two frames each), video 1 shows D then E; phrase X's embedding is
    frame X's, so the segments align with the phrases in caption order."""
    basis = torch.eye(8)
    table = {name: basis[i] for i, name in enumerate("ABCDE")}
    frames = torch.zeros(2, 6, 8)
    frames[0] = torch.stack([table[n] for n in "AABBCC"])
    frames[1, :4] = torch.stack([table[n] for n in "DDEE"])
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    return vla.VideoFeatures(frame_emb=frames, frame_mask=mask), table


def _segment_loss(module, video, captions, table):
    guidance = vla.TextFeatures(text_emb=torch.ones(len(captions), 8), texts=captions)
    encode = _Phrases(table)
    out = module(video, None, AdapterContext(guidance=guidance, encode_text=encode))
    return out.losses["segment"], encode.calls


def test_segment_i_pairs_with_phrase_i_and_a_swap_raises_the_loss():
    torch.manual_seed(0)
    module = vla.build_adapter({"type": "multi_level_alignment", "layers": 1, "heads": 1, "dropout": 0.0, "text_layers": 0}, DIMS)
    video, table = _aligned_toy()
    aligned, calls = _segment_loss(module, video, ["first A, then B, then C", "first D, then E"], table)
    assert calls == [["A", "B", "C", "D", "E"]]  # one batch of phrases, in caption order
    # the logits behind the loss: phrase i is closest to segment i of its own video, in time order
    weights = segment_weights(video.frame_mask, torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 0, 1]),
                              torch.tensor([3, 3, 3, 2, 2]))
    segments = F.normalize(torch.einsum("st,std->sd", weights, video.frame_emb[[0, 0, 0, 1, 1]]), dim=-1)
    phrases = torch.stack([table[p] for p in "ABCDE"])
    assert (phrases @ segments.T).argmax(1).tolist() == [0, 1, 2, 3, 4]
    swapped, _ = _segment_loss(module, video, ["first B, then A, then C", "first D, then E"], table)
    assert swapped > aligned + 1.0
    # the negatives inside one video matter: with the other video gone, a swap still costs
    alone, _ = _segment_loss(module, video.index(torch.tensor([0])), ["first A, then B, then C"], table)
    alone_swapped, _ = _segment_loss(module, video.index(torch.tensor([0])), ["first B, then A, then C"], table)
    assert alone_swapped > alone + 1.0


def test_identity_at_init_and_it_trains_in_retrieval_and_multiple_choice():
    backbone = vla.load_backbone("tiny:synthetic", device="cpu")
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (4, 6, 3, 32, 32), dtype=torch.uint8, generator=g)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[3, 4:] = False
    captions = ["first the red circle moves left, then the blue square appears", "a red circle and a blue square",
                "first the green triangle disappears, then the red square moves up, then the blue circle turns red",
                "first the white square appears, then the red circle moves down"]
    video, text = backbone.encode_video(frames, mask), backbone.encode_text(captions)  # cached features
    for task in ("retrieval", "multiple_choice"):
        torch.manual_seed(0)
        model = vla.wrap(backbone, ["multi_level_alignment"], task=task).eval()
        zero_shot = cosine_matrix(text, video)
        assert torch.equal(model.similarity(text, video), zero_shot)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
        model.train()
        for _ in range(2):
            if task == "retrieval":
                batch = {"video": video, "text": text}
            else:  # candidate texts "question answer"; only the right one is the caption the losses see
                batch = {"video": video, "question": ["What happens in the video?"] * 4,
                         "candidates": [[captions[i], captions[(i + 1) % 4]] for i in range(4)],
                         "candidate_mask": torch.ones(4, 2, dtype=torch.bool), "answer": torch.tensor([0, 1, 0, 1])}
            out = model(batch)
            optimiser.zero_grad()
            out.loss.backward()
            optimiser.step()
        assert {"multi_level_alignment/global", "multi_level_alignment/segment"} <= set(out.losses)
        assert all(torch.isfinite(v) for v in out.losses.values())
        moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
        for part in ("adapters.0.temporal.", "adapters.0.text_module.", "adapters.0.log_inv_temperature"):
            assert any(n.startswith(part) for n in moved), part
        model.eval()
        trained = model.similarity(text, video)
        assert (trained - zero_shot).abs().max() > 1e-3
        # a dual encoder: one text scored alone gets its row of the batch matrix
        torch.testing.assert_close(model.similarity(text.index(torch.tensor([1])), video)[0], trained[1],
                                   rtol=0, atol=1e-6)


def test_multiple_choice_uses_only_the_right_candidate():
    module = vla.build_adapter({"type": "multi_level_alignment", "layers": 1, "heads": 1, "dropout": 0.0, "text_layers": 0}, DIMS)
    video, table = _aligned_toy()
    candidates = vla.TextFeatures(text_emb=torch.ones(4, 8), texts=["first A, then B", "first C, then A"] * 2)
    encode = _Phrases(table)
    ctx = AdapterContext(task="multiple_choice", text_to_video=torch.tensor([0, 0, 1, 1]), encode_text=encode)
    assert module(video, candidates, ctx).losses == {}  # no guidance (evaluation): wrong answers are never positives
    guidance = vla.TextFeatures(text_emb=torch.ones(2, 8), texts=["first A, then B, then C", "first D, then E"])
    ctx.guidance = guidance
    module(video, candidates, ctx)
    assert encode.calls == [["A", "B", "C", "D", "E"]]


def test_bad_input_is_named():
    module = vla.build_adapter({"type": "multi_level_alignment", "text_layers": 0}, DIMS)
    video, table = _aligned_toy()
    no_strings = vla.TextFeatures(text_emb=torch.ones(2, 8))
    with pytest.raises(ValueError, match="TextFeatures.texts is None"):
        module(video, None, AdapterContext(guidance=no_strings, encode_text=_Phrases(table)))
    two_phrases = vla.TextFeatures(text_emb=torch.ones(2, 8), texts=["first A, then B", "first D, then E"])
    with pytest.raises(ValueError, match="encode_text is None"):
        module(video, None, AdapterContext(guidance=two_phrases))
    with pytest.raises(ValueError, match="2 videos; it must hold one caption per video"):
        module(video, None, AdapterContext(guidance=two_phrases.index(torch.tensor([0])), encode_text=_Phrases(table)))
    with pytest.raises(vla.FeatureShapeError, match="token_states"):
        vla.build_adapter("multi_level_alignment", DIMS)(None, two_phrases, AdapterContext())
    with pytest.raises(vla.ConfigError, match="temperature"):
        vla.build_adapter({"type": "multi_level_alignment", "temperature": 0.0}, DIMS)
    with pytest.raises(vla.ConfigError, match="unknown key"):
        vla.build_adapter({"type": "multi_level_alignment", "segments": 3}, DIMS)
    config = module.config
    assert type(config).from_json(config.to_json()) == config


def test_a_video_that_comes_twice_is_not_its_own_negative():
    """A multiple-choice batch may hold two questions about one video: the copies are positives of each
    other's captions (detected on the input frames, before dropout makes them differ)."""
    module = vla.build_adapter({"type": "multi_level_alignment", "layers": 1, "heads": 1, "dropout": 0.5,
                                "text_layers": 0}, DIMS).train()
    torch.nn.init.normal_(module.temporal.out_proj.weight, std=0.5)  # as after training: dropout now matters
    video, table = _aligned_toy()
    twice = video.index(torch.tensor([0, 0]))
    pooled = F.normalize(twice.frame_emb.mean(1), dim=-1)
    captions = vla.TextFeatures(text_emb=pooled, texts=["which shapes?", "what happens?"])  # one phrase each
    out = module(twice, None, AdapterContext(guidance=captions, encode_text=_Phrases(table)))
    assert set(out.losses) == {"global"}
    assert out.losses["global"] < 0.05  # ln 2 = 0.69 if the copy counted as a negative
