"""The feature cache: extraction, resume after interruption, stale refusal, training without the vision tower."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from _toy_data import ToyQADataset, ToyRetrievalDataset

import vl_adapters as vla
from vl_adapters.core.adapter import ADAPTERS, Adapter, AdapterConfig, AdapterOutput, register_adapter
from vl_adapters.core.model import CacheRefusedError
from vl_adapters.data.cache import FeatureCache, StaleCacheError, cache_fingerprint, extract_features
from vl_adapters.train.config import load_config
from vl_adapters.train.trainer import Trainer

ADAPTER = {"type": "temporal_transformer", "layers": 1, "heads": 2}


def _extract(backbone, data, out, **kw):
    kw = {"batch_size": 3, **kw}
    return extract_features(data, backbone, out, sampler="uniform", num_frames=4, progress=False, **kw)


def test_cache_holds_the_backbone_features(tiny_backbone, tmp_path):
    data = ToyRetrievalDataset(7, bad=(4,))
    _extract(tiny_backbone, data, tmp_path / "cache")
    cache = FeatureCache(tmp_path / "cache")
    assert cache.frame_emb.dtype == np.float16 and cache.frame_emb.shape == (7, 4, 64)
    assert isinstance(cache.frame_emb, np.memmap)
    assert cache.bad_videos == {"video4": "RuntimeError: video4.mp4: corrupt file"}
    rows = [cache.row(v) for v in ("video3", "video0", "video5")]
    got = cache.features(rows)
    clips = [data.load_video(i) for i in (3, 0, 5)]
    direct = tiny_backbone.encode_video(torch.stack([c["frames"] for c in clips]),
                                        torch.stack([c["frame_mask"] for c in clips]))
    assert torch.equal(got.frame_mask, direct.frame_mask)
    torch.testing.assert_close(got.frame_emb, direct.frame_emb, atol=2e-3, rtol=2e-3)  # fp16 storage
    torch.testing.assert_close(got.patch_tokens, direct.patch_tokens, atol=2e-2, rtol=2e-3)
    cache.check(cache_fingerprint(tiny_backbone, sampler="uniform", num_frames=4))


@pytest.mark.determinism
def test_interrupted_extract_resumes_without_reencoding(tiny_backbone, tmp_path, monkeypatch):
    import vl_adapters.data.cache as cache_module

    encoded: list[list[int]] = []  # the rows of each backbone call: the same batches, interrupted or not
    original = cache_module._encode
    monkeypatch.setattr(cache_module, "_encode",
                        lambda backbone, batch, *a: encoded.append(list(batch["rows"])) or original(backbone, batch, *a))
    data = ToyRetrievalDataset(8)
    _extract(tiny_backbone, data, tmp_path / "c", stop_after=5)  # stops after whole batches: rows 0-5
    index = json.loads((tmp_path / "c" / "index.json").read_text())
    assert not index["complete"] and index["done"] == [0, 1, 2, 3, 4, 5]
    with pytest.raises(StaleCacheError, match="incomplete"):
        FeatureCache(tmp_path / "c")
    data.decoded = 0
    _extract(tiny_backbone, data, tmp_path / "c", batch_size=2)  # another batch size: the first one is kept
    assert data.decoded == 2  # only the rest
    resumed, encoded_resumed = FeatureCache(tmp_path / "c"), encoded[:]
    encoded.clear()
    _extract(tiny_backbone, ToyRetrievalDataset(8), tmp_path / "whole")
    assert encoded_resumed == encoded == [[0, 1, 2], [3, 4, 5], [6, 7]]
    whole = FeatureCache(tmp_path / "whole")
    assert np.array_equal(resumed.frame_emb, whole.frame_emb)
    assert np.array_equal(resumed.patch_tokens, whole.patch_tokens)
    assert not list((tmp_path / "c").glob("*.partial"))


def test_stale_cache_is_refused_naming_the_difference(tiny_backbone, tmp_path):
    _extract(tiny_backbone, ToyRetrievalDataset(3), tmp_path / "c")
    cache = FeatureCache(tmp_path / "c")
    with pytest.raises(StaleCacheError, match=r"num_frames: cache has 4, run expects 8"):
        cache.check(cache_fingerprint(tiny_backbone, sampler="uniform", num_frames=8))
    with pytest.raises(StaleCacheError, match="sampler"):
        cache.check(cache_fingerprint(tiny_backbone, sampler="segment_random", num_frames=4))
    with pytest.raises(StaleCacheError, match="other settings"):
        extract_features(ToyRetrievalDataset(3), tiny_backbone, tmp_path / "c", sampler="clips", num_frames=4)


def _cached_trainer(backbone, tmp_path, adapters, train_data, **overrides):
    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "epochs": 1, "progress": False,
                                    "data.batch_size": 4, "data.num_workers": 0, "data.num_frames": 4,
                                    "data.cache": str(tmp_path / "cache"), "model.adapters": adapters, **overrides})
    torch.manual_seed(0)
    model = vla.wrap(backbone, adapters, task="retrieval")
    return Trainer(config, model=model, train_dataset=train_data, eval_dataset=ToyRetrievalDataset(5, seed=1))


def _refuse_both_towers(backbone, monkeypatch):
    def refuse(tower):
        def run(*args, **kwargs):
            raise AssertionError(f"the {tower} tower ran during a cached epoch")
        return run

    monkeypatch.setattr(backbone, "encode_images", refuse("vision"))
    monkeypatch.setattr(backbone, "_encode_tokens", refuse("text"))


def test_training_from_the_cache_runs_neither_tower(tiny_backbone, tmp_path, monkeypatch):
    train_data, eval_data = ToyRetrievalDataset(9, bad=(1,)), ToyRetrievalDataset(5, seed=1)
    _extract(tiny_backbone, train_data, tmp_path / "cache" / "train")
    _extract(tiny_backbone, eval_data, tmp_path / "cache" / "test")
    trainer = _cached_trainer(tiny_backbone, tmp_path, [ADAPTER], train_data)
    _refuse_both_towers(tiny_backbone, monkeypatch)
    train_data.decoded = 0
    metrics = trainer.fit()
    assert train_data.decoded == 0 and "t2v_R@1" in metrics
    assert trainer.model.text_store.encoded == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["feature_cache"].startswith("used")
    assert [v["video_id"] for v in report["skipped_videos"]["videos"]] == ["video1"]


def test_a_cached_video_with_nan_features_is_skipped_and_reported_by_its_id(tiny_backbone, tmp_path):
    import warnings

    train_data = ToyRetrievalDataset(9)
    _extract(tiny_backbone, train_data, tmp_path / "cache" / "train")
    _extract(tiny_backbone, ToyRetrievalDataset(5, seed=1), tmp_path / "cache" / "test")
    emb = np.load(tmp_path / "cache" / "train" / "frame_emb.npy", mmap_mode="r+")
    emb[6, 1, :3] = np.nan  # a broken row, as a failed extraction might leave
    emb.flush()
    del emb
    trainer = _cached_trainer(tiny_backbone, tmp_path, [ADAPTER], train_data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no anonymous NaN warning: the video is named, skipped
        trainer.fit()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [v["video_id"] for v in report["skipped_videos"]["videos"]] == ["video6"]
    assert "cached features of 'video6' hold NaN values" in report["skipped_videos"]["videos"][0]["reason"]


def test_multiple_choice_from_the_cache_runs_neither_tower(tiny_backbone, tmp_path, monkeypatch):
    train_data, eval_data = ToyQADataset(8, task="multiple_choice"), ToyQADataset(4, task="multiple_choice", seed=1)
    _extract(tiny_backbone, train_data, tmp_path / "cache" / "train")
    _extract(tiny_backbone, eval_data, tmp_path / "cache" / "test")
    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "epochs": 2, "progress": False,
                                    "data.batch_size": 3, "data.num_workers": 0, "data.num_frames": 4,
                                    "data.cache": str(tmp_path / "cache"), "model.adapters": [ADAPTER],
                                    "model.task": "multiple_choice"})
    model = vla.wrap(tiny_backbone, [ADAPTER], task="multiple_choice")
    trainer = Trainer(config, model=model, train_dataset=train_data, eval_dataset=eval_data)
    _refuse_both_towers(tiny_backbone, monkeypatch)
    metrics = trainer.fit()
    assert "accuracy" in metrics and trainer.state["step"] == 6


@dataclass
class _InsideConfig(AdapterConfig):
    pass


def test_backbone_adapter_refuses_the_cache_before_training(tiny_backbone, tmp_path):
    @register_adapter("_test_inside_backbone")
    class Inside(Adapter):
        config_class = _InsideConfig
        stage = "backbone"

        def __init__(self, config, dims):
            super().__init__(config, dims)
            self.scale = torch.nn.Parameter(torch.zeros(()))

        def attach(self, backbone):
            pass

        def forward(self, video, text, ctx):
            return AdapterOutput(video=video, text=text)

    try:
        data = ToyRetrievalDataset(4)
        _extract(tiny_backbone, data, tmp_path / "cache" / "train")
        with pytest.raises(CacheRefusedError, match=r"refused.*_test_inside_backbone"):
            _cached_trainer(tiny_backbone, tmp_path, [ADAPTER, "_test_inside_backbone"], data)
        assert not (tmp_path / "run").exists()
    finally:
        ADAPTERS.unregister("_test_inside_backbone")
        tiny_backbone.needs_grad = False
