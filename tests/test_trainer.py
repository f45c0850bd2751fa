"""The trainer on the CPU: a full run's files, exact resume, bad videos, config errors, eval re-ranking."""

from __future__ import annotations

import json

import pytest
import torch
from _toy_data import ToyRetrievalDataset

import vl_adapters as vla
from vl_adapters.core.config import ConfigError
from vl_adapters.core.io import load_tensors
from vl_adapters.train.config import load_config
from vl_adapters.train.data import BadVideoError
from vl_adapters.train.evaluate import evaluate
from vl_adapters.train.trainer import Trainer, read_metrics_log

ADAPTER = {"type": "temporal_transformer", "layers": 1, "heads": 2, "dropout": 0.1}


def _config(run_dir, **overrides):
    base = {"run_dir": str(run_dir), "epochs": 2, "seed": 3, "progress": False, "log_every": 1,
            "data.batch_size": 4, "data.eval_batch_size": 8, "data.num_workers": 0,
            "optim.lr": 1e-3, "optim.accumulation": 1, "model.adapters": [ADAPTER]}
    base.update(overrides)
    return load_config(overrides=base)


def _trainer(tiny_backbone, run_dir, dataset=None, **overrides):
    config = _config(run_dir, **overrides)
    torch.manual_seed(config.seed)
    model = vla.wrap(tiny_backbone, config.model.adapters, task="retrieval")
    dataset = dataset or ToyRetrievalDataset(10)
    return Trainer(config, model=model, train_dataset=dataset, eval_dataset=ToyRetrievalDataset(6, seed=1))


def test_full_run_writes_the_run_directory(tiny_backbone, tmp_path):
    backbone_before = {k: v.clone() for k, v in tiny_backbone.state_dict().items()}
    trainer = _trainer(tiny_backbone, tmp_path / "run")
    start = {k: v.clone() for k, v in trainer.model.adapter_state_dict().items()}
    metrics = trainer.fit()
    run = tmp_path / "run"
    assert {"t2v_R@1", "v2t_MnR"} <= set(metrics)
    for name in ("config.yaml", "config.json", "metrics.jsonl", "report.json",
                 "checkpoints/last/adapters.safetensors", "checkpoints/best/optimizer.safetensors",
                 "checkpoints/last/rng.json", "checkpoints/last/scheduler.json"):
        assert (run / name).exists(), name
    records = read_metrics_log(run)
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [0, 1]
    assert records[-2]["kind"] == "train" and records[-2]["step"] == 6  # 3 batches x 2 epochs
    report = json.loads((run / "report.json").read_text())
    assert report["finished"] and report["skipped_videos"]["count"] == 0 and report["train_samples"] == 10
    changed = [k for k, v in trainer.model.adapter_state_dict().items() if not torch.equal(v, start[k])]
    assert changed, "training did not move any adapter weight"
    for k, v in tiny_backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), f"backbone weight {k} changed"
    # The saved adapters load back into a model that scores like the trained one.
    loaded = vla.load_adapters(run / "checkpoints" / "last", backbone=tiny_backbone)
    for k, v in loaded.adapter_state_dict().items():
        assert torch.equal(v, trainer.model.adapter_state_dict()[k])


@pytest.mark.determinism
@pytest.mark.parametrize("accumulation", [1, 2])
def test_stopped_and_resumed_run_is_bit_identical(tiny_backbone, tmp_path, accumulation):
    whole = _trainer(tiny_backbone, tmp_path / "whole", **{"optim.accumulation": accumulation})
    whole.fit()
    first = _trainer(tiny_backbone, tmp_path / "parts", **{"optim.accumulation": accumulation, "max_steps": 1})
    first.fit()
    assert json.loads((tmp_path / "parts" / "report.json").read_text())["finished"] is False
    # A fresh process: new model with other random init, RNG disturbed; all must come from the checkpoint.
    torch.manual_seed(999)
    resumed = _trainer(tiny_backbone, tmp_path / "parts", **{"optim.accumulation": accumulation})
    torch.rand(7)
    resumed.resume()
    resumed.fit()
    a = load_tensors(tmp_path / "whole" / "checkpoints" / "last" / "adapters.safetensors")
    b = load_tensors(tmp_path / "parts" / "checkpoints" / "last" / "adapters.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_bad_video_is_skipped_and_reported(tiny_backbone, tmp_path):
    trainer = _trainer(tiny_backbone, tmp_path / "run", dataset=ToyRetrievalDataset(10, bad=(2, 7)))
    trainer.fit()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    listed = {v["video_id"] for v in report["skipped_videos"]["videos"]}
    assert listed == {"video2", "video7"}
    # grouped by a short reason key (not by each whole message, which names the file)
    assert report["skipped_videos"]["by_reason"] == {"corrupt": ["video2", "video7"]}


def test_bad_video_raises_when_asked(tiny_backbone, tmp_path):
    trainer = _trainer(tiny_backbone, tmp_path / "run", dataset=ToyRetrievalDataset(10, bad=(2,)),
                       on_bad_video="raise")
    with pytest.raises(BadVideoError, match="video2"):
        trainer.fit()


def test_unknown_config_keys_fail_before_any_work(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 1\noptim:\n  lr: 1e-4\n  warmpu_ratio: 0.1\n")
    with pytest.raises(ConfigError, match="optim.warmpu_ratio"):
        load_config(path)
    with pytest.raises(ConfigError, match="bogus"):
        load_config(overrides=["bogus=1"])
    with pytest.raises(ConfigError, match="on_bad_video"):
        load_config(overrides=["on_bad_video=ignore"])
    path.write_text("epochs: 1\noptim:\n  lr: 1e-4\n")
    assert load_config(path, ["optim.lr=3e-4"]).optim.lr == pytest.approx(3e-4)
    assert not (tmp_path / "runs").exists()


def test_eval_with_cross_adapter_rerank_all_equals_exhaustive(tiny_backbone):
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, ["temporal_transformer", "trajectory_word"], task="retrieval")
    for p in model.parameters():  # leave identity: make the cross scores matter
        if p.requires_grad:
            p.data.add_(0.05 * torch.randn_like(p))
    data = ToyRetrievalDataset(6, seed=2, captions_per_video=2)
    top_all = evaluate(model, data, batch_size=4, rerank_k=0)
    exhaustive = evaluate(model, data, batch_size=4, rerank_k=6)
    top_one = evaluate(model, data, batch_size=4, rerank_k=1)
    assert top_all == exhaustive
    assert set(top_one) == set(top_all)


@pytest.mark.parametrize("task", ["open_qa", "multiple_choice"])
def test_qa_tasks_train_and_report_accuracy_per_type(tiny_backbone, tmp_path, task):
    from _toy_data import ToyQADataset

    config = _config(tmp_path / task, epochs=1)
    spec = {"type": "open_qa", "num_answers": 3, "hidden": 16} if task == "open_qa" else task
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, config.model.adapters, task=spec)
    trainer = Trainer(config, model=model, train_dataset=ToyQADataset(8, task=task),
                      eval_dataset=ToyQADataset(6, task=task, seed=1))
    metrics = trainer.fit()
    assert set(metrics) == {"accuracy", "accuracy/what", "accuracy/who"}
    assert 0.0 <= metrics["accuracy"] <= 100.0
    best = json.loads((tmp_path / task / "report.json").read_text())["best"]
    assert best["metric"] == "accuracy"


@pytest.mark.gpu
def test_trainer_on_cuda_with_bf16_backbone(tmp_path):
    backbone = vla.load_backbone("tiny", device="cuda", precision="bf16")
    config = _config(tmp_path / "gpu", epochs=1, device="cuda")
    model = vla.wrap(backbone, config.model.adapters, task="retrieval")
    metrics = Trainer(config, model=model, train_dataset=ToyRetrievalDataset(8),
                      eval_dataset=ToyRetrievalDataset(4, seed=1)).fit()
    assert "t2v_R@1" in metrics
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())


@pytest.mark.parametrize("normalise", ["dsl", "qb_norm"])
def test_every_epochs_evaluation_reports_the_configured_normalisation(tiny_backbone, tmp_path, normalise):
    trainer = _trainer(tiny_backbone, tmp_path / "run", epochs=1, **{"eval.normalise": normalise})
    metrics = trainer.fit()
    assert "t2v_R@1" in metrics and f"{normalise}/t2v_R@1" in metrics
    logged = [r for r in read_metrics_log(tmp_path / "run") if r["kind"] == "eval"]
    assert f"{normalise}/t2v_R@1" in logged[-1]


def test_a_split_whose_every_video_is_skipped_stops_the_run_saying_so(tiny_backbone, tmp_path):
    from vl_adapters.train.data import NothingLeftError

    with pytest.raises(NothingLeftError, match=r"all 10 video\(s\) of the split to train on were skipped \(10 corrupt\)"):
        _trainer(tiny_backbone, tmp_path / "a", dataset=ToyRetrievalDataset(10, bad=tuple(range(10)))).fit()
    trainer = _trainer(tiny_backbone, tmp_path / "b")
    trainer.eval_dataset = ToyRetrievalDataset(4, bad=(0, 1, 2, 3))
    with pytest.raises(NothingLeftError, match=r"all 4 video\(s\) of the split to evaluate were skipped .*video0.mp4"):
        trainer.fit()


def test_a_diverged_run_keeps_no_nan_best_and_ends_as_failed(tiny_backbone, tmp_path):
    from vl_adapters.train.trainer import NonFiniteError

    trainer = _trainer(tiny_backbone, tmp_path / "run", **{"optim.lr": 1e10, "nonfinite_loss": "skip"})
    with pytest.raises(NonFiniteError, match=r"skipped 5 of its 6 optimiser steps .*more than 50%: it diverged"):
        trainer.fit()
    evals = [r for r in read_metrics_log(tmp_path / "run") if r["kind"] == "eval"]
    assert evals and all(r["nan_scores"] == 36 and r["t2v_R@1"] == 0.0 for r in evals)  # 6 texts x 6 videos
    assert not (tmp_path / "run" / "checkpoints" / "best").exists()  # R@1 = 0.0 of NaN scores is no best
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert not report["finished"] and "diverged" in report["error"] and report["best"]["value"] is None
    # a finite evaluation is kept as best; one with NaN scores after it never replaces it
    trainer = _trainer(tiny_backbone, tmp_path / "other")
    trainer._maybe_best({"t2v_R@1": 10.0})
    trainer._maybe_best({"t2v_R@1": 50.0, "nan_scores": 3})
    assert trainer.state["best_value"] == 10.0


def test_loader_workers_are_capped_to_the_cpus_and_said_once(monkeypatch):
    import importlib
    import os
    import warnings

    from vl_adapters.train.data import make_loader

    collate_module = importlib.import_module("vl_adapters.data.collate")  # the package's `collate` is the function

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(collate_module, "_capped_said", False, raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaders = [make_loader(ToyRetrievalDataset(4), batch_size=2, shuffle=False, seed=0, epoch=0, num_workers=4)
                   for _ in range(2)]
        for loader in loaders:
            loader.check_worker_number_rationality()  # DataLoader's own warning, given on every iterator
    assert [loader.num_workers for loader in loaders] == [2, 2]
    assert [str(w.message) for w in caught] == [
        "num_workers=4 is more than the 2 CPU(s) available here: using 2 DataLoader worker(s)"]
