"""Frozen text features computed once: keyed by token ids under the backbone's fingerprint, trimmed, fp16
token states, bounded memory that spills to disk, segments written by `extract`, and runs that reuse them."""

from __future__ import annotations

import copy

import pytest
import torch
from _toy_data import ToyQADataset, ToyRetrievalDataset

import vl_adapters as vla
from vl_adapters.data.cache import extract_features
from vl_adapters.data.text_cache import TEXT_DIR, TextFeatureStore, dataset_texts, write_text_features

TEXTS = ["a red circle moves left", "the blue square turns", "a red circle moves left", "green"]


class CharTokenizer:
    """Another tokenizer for the same tower: one id per character (the tiny vocabulary has room)."""

    def __call__(self, texts):
        ids = torch.zeros(len(texts), 32, dtype=torch.long)
        for i, text in enumerate(texts):
            row = [49406] + [300 + ord(c) for c in text[:30]] + [49407]
            ids[i, :len(row)] = torch.tensor(row)
        return ids


class TowerCounter:
    """Counts the texts that go through the text tower (padding of fixed-size calls left out)."""

    def __init__(self, backbone, monkeypatch):
        self.texts: list[str] = []
        original = backbone.encode_text

        def counted(texts, *args, **kwargs):
            if not isinstance(texts, torch.Tensor):
                self.texts += [t for t in texts if t]
            return original(texts, *args, **kwargs)

        monkeypatch.setattr(backbone, "encode_text", counted)


def test_each_distinct_text_goes_through_the_tower_once(tiny_backbone, monkeypatch):
    model = vla.wrap(tiny_backbone, [])
    tower = TowerCounter(tiny_backbone, monkeypatch)
    first = model.frozen_text(TEXTS)
    again = model.frozen_text(list(reversed(TEXTS)))
    assert tower.texts == ["a red circle moves left", "the blue square turns", "green"]
    assert torch.equal(first.text_emb, again.text_emb.flip(0))
    direct = tiny_backbone.encode_text(TEXTS)
    torch.testing.assert_close(first.text_emb, direct.text_emb, atol=1e-5, rtol=1e-5)
    # token states: trimmed to the batch's longest real length, fp16-stored, as the tower gave them
    longest = int(direct.token_mask.sum(1).max())
    assert first.token_states.shape[1] == longest < direct.token_states.shape[1]
    assert first.token_states.dtype == torch.float32
    assert torch.equal(first.token_mask, direct.token_mask[:, :longest])
    torch.testing.assert_close(first.token_states, direct.token_states[:, :longest] * first.token_mask[..., None],
                               atol=2e-3, rtol=2e-3)
    assert torch.equal(first.input_ids, direct.input_ids[:, :longest])


@pytest.mark.determinism
def test_features_do_not_depend_on_the_texts_encoded_alongside(tiny_backbone):
    # a resumed run encodes other groups of texts than an uninterrupted one; the features must match bit for bit
    alone = TextFeatureStore().features(tiny_backbone, ["a red circle moves left"])
    crowd = TextFeatureStore().features(tiny_backbone, ["x"] * 3 + ["a red circle moves left"] + ["a b c"] * 70)
    assert torch.equal(alone.text_emb[0], crowd.text_emb[3])
    assert torch.equal(alone.token_states[0], crowd.token_states[3, :alone.token_states.shape[1]])


def test_another_tokenizer_misses(tiny_backbone, monkeypatch):
    model = vla.wrap(tiny_backbone, [])
    model.frozen_text(TEXTS)
    tower = TowerCounter(tiny_backbone, monkeypatch)
    monkeypatch.setattr(tiny_backbone, "tokenizer", CharTokenizer())
    got = model.frozen_text(TEXTS)
    assert tower.texts == ["a red circle moves left", "the blue square turns", "green"]  # all missed
    ids = CharTokenizer()(TEXTS)
    direct = tiny_backbone.encode_text(ids)
    torch.testing.assert_close(got.text_emb, direct.text_emb, atol=1e-5, rtol=1e-5)
    assert got.input_ids[0, 1] == 300 + ord("a")


def test_another_backbone_misses_in_memory_and_on_disk(tiny_backbone, tmp_path, monkeypatch):
    other = copy.deepcopy(tiny_backbone)
    with torch.no_grad():
        other.model.token_embedding.weight.mul_(1.5)  # the same architecture and tokenizer, other weights
    assert other.fingerprint() != tiny_backbone.fingerprint()
    write_text_features(tmp_path / TEXT_DIR, tiny_backbone, TEXTS)
    store = TextFeatureStore()
    assert store.open(tmp_path / TEXT_DIR, tiny_backbone)
    mine = store.features(tiny_backbone, TEXTS)
    assert store.encoded == 0  # served from the segment
    assert not store.open(tmp_path / TEXT_DIR, other)  # another backbone: the segment is not used
    theirs = store.features(other, TEXTS)
    assert store.encoded == 3
    torch.testing.assert_close(theirs.text_emb, other.encode_text(TEXTS).text_emb, atol=1e-5, rtol=1e-5)
    assert (theirs.text_emb - mine.text_emb).abs().max() > 1e-2
    # weights written in place are other weights too: the store notices and re-encodes
    model = vla.wrap(other, [])
    before = model.frozen_text(TEXTS[:1]).text_emb
    with torch.no_grad():
        other.model.token_embedding.weight.mul_(2.0)
    after = model.frozen_text(TEXTS[:1]).text_emb
    torch.testing.assert_close(after, other.encode_text(TEXTS[:1]).text_emb, atol=1e-5, rtol=1e-5)
    assert (after - before).abs().max() > 1e-2


def test_memory_is_bounded_and_spills_to_disk(tiny_backbone):
    store = TextFeatureStore(max_bytes=1)  # every encoded batch spills
    first = store.features(tiny_backbone, TEXTS)
    assert store._memory == {} and len(store._segments) == 1
    spill = store._segments[0].directory
    assert (spill / "token_states.npy").exists()
    again = store.features(tiny_backbone, TEXTS)
    assert store.encoded == 3
    assert torch.equal(first.text_emb, again.text_emb) and torch.equal(first.token_states, again.token_states)
    del store, first, again
    import gc

    gc.collect()
    assert not spill.exists()  # the spill directory goes with the store


def test_strings_are_refused_unless_a_list(tiny_backbone):
    with pytest.raises(TypeError, match="list of strings"):
        vla.wrap(tiny_backbone, []).frozen_text("a red circle")


def test_extract_writes_the_split_texts_and_a_run_reads_them(tiny_backbone, tmp_path, monkeypatch):
    data = ToyRetrievalDataset(5)
    extract_features(data, tiny_backbone, tmp_path / "c", sampler="uniform", num_frames=4, progress=False)
    model = vla.wrap(tiny_backbone, [])
    assert model.text_store.open(tmp_path / "c" / TEXT_DIR, tiny_backbone)

    def refuse(*args, **kwargs):
        raise AssertionError("the text tower ran for a text the cache holds")

    monkeypatch.setattr(tiny_backbone, "_encode_tokens", refuse)
    captions = [s["text"] for s in data.samples]
    got = model.frozen_text(captions)
    monkeypatch.undo()
    torch.testing.assert_close(got.text_emb, tiny_backbone.encode_text(captions).text_emb, atol=1e-5, rtol=1e-5)


def test_multiple_choice_texts_follow_the_adapters_formatting(tiny_backbone, tmp_path, monkeypatch):
    data = ToyQADataset(4, task="multiple_choice")
    plain = dataset_texts(data)
    assert "what colour is clip 0 red" in plain and "" in plain
    templated = vla.wrap(tiny_backbone, ["tem_temporal_aligner"], task="multiple_choice")
    formatted = dataset_texts(data, templated)
    assert set(formatted) != set(plain)
    assert formatted == list(dict.fromkeys(formatted))
    # the segment holds the default formatting; the templated model misses it and encodes its own, once
    write_text_features(tmp_path / TEXT_DIR, tiny_backbone, plain)
    assert templated.text_store.open(tmp_path / TEXT_DIR, tiny_backbone)
    tower = TowerCounter(tiny_backbone, monkeypatch)
    batch = data.collate([data[i] for i in range(4)])
    templated(batch)
    templated(batch)
    expected = [t for t in formatted if t]
    assert sorted(tower.texts) == sorted(t for t in expected if t not in plain)


@pytest.mark.parametrize("spec, keeps_cache", [
    ("st_adapter", True), ("token_masking", True), ({"type": "lora", "towers": "vision"}, True),
    ({"type": "lora", "towers": "both"}, False), ({"type": "lora", "towers": "text"}, False)])
def test_backbone_adapters_off_the_text_tower_keep_its_cached_features(tiny_backbone, monkeypatch, spec, keeps_cache):
    from vl_adapters.core.model import CacheRefusedError

    model = vla.wrap(tiny_backbone, [spec])
    with torch.no_grad():  # away from the identity at initialisation, so an adapted tower would show
        for param in model.trainable_parameters():
            param.add_(0.1)
    tower = TowerCounter(model.backbone, monkeypatch)
    first = model.encode_text(TEXTS)
    again = model.encode_text(TEXTS)
    plain = vla.wrap(tiny_backbone, []).frozen_text(TEXTS)
    with torch.no_grad():
        adapted = model.backbone.encode_text(TEXTS).text_emb
    if keeps_cache:
        assert tower.texts[:3] == ["a red circle moves left", "the blue square turns", "green"]
        assert len(tower.texts) == 3 + len(TEXTS)  # the three distinct texts once, then the direct call above
        assert torch.equal(first.text_emb, again.text_emb) and torch.equal(first.text_emb, plain.text_emb)
        torch.testing.assert_close(first.text_emb, adapted, atol=1e-5, rtol=1e-5)  # the tower is unchanged
        assert torch.equal(model.encode_text(plain).text_emb, plain.text_emb)  # cached features are accepted
    else:
        assert len(tower.texts) == 2 * len(TEXTS) + len(TEXTS)  # every call through the adapted tower
        assert not torch.allclose(first.text_emb, plain.text_emb, atol=1e-3)
        with pytest.raises(CacheRefusedError, match=r"\['lora'\] change the text tower"):
            model.encode_text(plain)


@pytest.mark.slow
def test_a_big_text_tower_on_the_cpu_encodes_new_texts_without_padding():
    backbone = vla.load_backbone("open_clip:ViT-B-32", device="cpu")  # random weights: nothing is downloaded
    sizes: list[int] = []
    original = backbone.encode_text
    backbone.encode_text = lambda texts, *a, **k: sizes.append(len(texts)) or original(texts, *a, **k)
    model = vla.wrap(backbone, [])
    both = model.encode_text(["a dog runs", "a cat sleeps on a mat"])
    assert sizes == [1, 1]  # two calls of one text: no call padded to 64
    alone = TextFeatureStore().features(backbone, ["a cat sleeps on a mat"])
    assert torch.equal(both.text_emb[1], alone.text_emb[0])
    from vl_adapters.data.text_cache import encode_chunk

    assert encode_chunk(vla.load_backbone("tiny", device="cpu")) == 64  # a tiny tower still encodes 64 a call
