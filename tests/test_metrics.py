"""Metrics against loop references written from CLIP4Clip's definitions, and the open_qa head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vl_adapters as vla
from vl_adapters.tasks.metrics import accuracy_metrics, retrieval_metrics


def _reference_ranks(sims: np.ndarray, truth: list[int]) -> np.ndarray:
    # CLIP4Clip: sort each row descending and find where the ground truth's score first appears.
    ranks = []
    for row, t in zip(sims, truth, strict=True):
        ordered = np.sort(-row)
        ranks.append(int(np.where(ordered == -row[t])[0][0]))
    return np.array(ranks)


def _reference_metrics(ranks: np.ndarray) -> dict[str, float]:
    return {"R@1": 100 * np.mean(ranks < 1), "R@5": 100 * np.mean(ranks < 5), "R@10": 100 * np.mean(ranks < 10),
            "MdR": float(np.median(ranks)) + 1, "MnR": float(np.mean(ranks)) + 1}


def test_one_caption_per_video_matches_reference():
    sims = torch.randn(30, 30, generator=torch.Generator().manual_seed(0))
    got = retrieval_metrics(sims)
    t2v = _reference_metrics(_reference_ranks(sims.numpy(), list(range(30))))
    v2t = _reference_metrics(_reference_ranks(sims.T.numpy(), list(range(30))))
    for key, value in t2v.items():
        assert got[f"t2v_{key}"] == pytest.approx(value)
        assert got[f"v2t_{key}"] == pytest.approx(v2t[key])


def test_perfect_and_reversed_rankings():
    perfect = retrieval_metrics(torch.eye(12) + 0.01 * torch.rand(12, 12))
    assert perfect["t2v_R@1"] == 100.0 and perfect["v2t_MdR"] == 1.0
    worst = retrieval_metrics(-torch.eye(12))
    assert worst["t2v_R@1"] == 0.0 and worst["t2v_R@10"] == 0.0 and worst["t2v_MnR"] == 12.0


def test_several_captions_per_video_take_the_best_caption():
    g = torch.Generator().manual_seed(1)
    owner = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    sims = torch.randn(10, 4, generator=g)
    got = retrieval_metrics(sims, owner)
    # t2v: each caption ranks its own video among all videos.
    t2v = _reference_metrics(_reference_ranks(sims.numpy(), owner.tolist()))
    assert got["t2v_MnR"] == pytest.approx(t2v["MnR"]) and got["t2v_R@1"] == pytest.approx(t2v["R@1"])
    # v2t: CLIP4Clip's padded [video, caption-group, caption] tensor, max over captions, then ranks.
    padded = np.full((4, 4, 4), -np.inf)
    for group in range(4):
        caps = (owner == group).nonzero().flatten().tolist()
        for j, c in enumerate(caps):
            padded[:, group, j] = sims[c].numpy()
    group_scores = padded.max(-1)
    v2t = _reference_metrics(_reference_ranks(group_scores, list(range(4))))
    for key, value in v2t.items():
        assert got[f"v2t_{key}"] == pytest.approx(value)


def test_retrieval_metrics_reject_bad_owner():
    with pytest.raises(ValueError, match="text_to_video"):
        retrieval_metrics(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="pass text_to_video"):
        retrieval_metrics(torch.randn(3, 2))


def test_accuracy_overall_and_per_type():
    predicted = torch.tensor([1, 2, 3, 0, 5])
    answer = torch.tensor([1, 2, 0, 0, -1])
    got = accuracy_metrics(predicted, answer, ["what", "what", "who", "who", "who"])
    assert got["accuracy"] == pytest.approx(60.0)
    assert got["accuracy/what"] == pytest.approx(100.0)
    assert got["accuracy/who"] == pytest.approx(100 / 3)


def test_open_qa_head_is_deterministic_and_learns(tiny_backbone):
    task = {"type": "open_qa", "num_answers": 7, "hidden": 16, "dropout": 0.0}
    torch.manual_seed(0)
    first = vla.wrap(tiny_backbone, ["temporal_transformer"], task=task)
    torch.manual_seed(123)
    second = vla.wrap(tiny_backbone, ["temporal_transformer"], task=task)
    for a, b in zip(first.task.parameters(), second.task.parameters(), strict=True):
        assert torch.equal(a, b)
    frames = torch.randn(4, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {"video": frames, "question": ["what is red", "who runs", "what moves", "how many"],
             "answer": torch.tensor([0, 3, -1, 6])}
    out = first(batch)
    assert out.scores.shape == (4, 7) and torch.isfinite(out.loss)
    out.loss.backward()
    assert first.task.classifier[0].weight.grad.abs().sum() > 0
    none_known = first({**batch, "answer": torch.full((4,), -1)})
    assert none_known.loss.item() == 0.0
