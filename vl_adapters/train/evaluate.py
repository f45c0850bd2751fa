"""Evaluation over a whole split: retrieval metrics, multiple-choice or open-QA accuracy."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ..core.features import TextFeatures, VideoFeatures, concat_text_features, concat_video_features
from ..tasks.metrics import accuracy_metrics, retrieval_metrics
from ..tasks.normalise import normalised_retrieval_metrics, parse_options
from .data import BadVideoError, batch_size_of, make_loader, nothing_left, skipped_of


def default_metric(task: str) -> str:
    return "t2v_R@1" if task == "retrieval" else "accuracy"


@torch.no_grad()
def evaluate(model, dataset, *, batch_size: int = 64, num_workers: int = 0, rerank_k: int | None = None,
             on_bad_video: str = "skip", skipped: list | None = None, progress: bool = False,
             autocast: bool = False, normalise: str = "none", normalise_options: dict | None = None,
             querybank: Sequence[str] | None = None) -> dict[str, float]:
    """Metrics of `model` on every sample of `dataset` (raw or cached). Bad videos are skipped (and
    appended to `skipped`) or raise, as `on_bad_video` says.

    normalise "dsl" | "qb_norm" (retrieval) adds that method's metrics BESIDE the raw ones, keys prefixed
    `<method>/` (tasks/normalise.py); unprefixed metrics stay raw. qb_norm needs `querybank` (strings)."""
    options = parse_options(normalise, normalise_options)
    if normalise != "none" and getattr(model.task, "name", "") != "retrieval":
        raise ValueError(f"eval.normalise={normalise!r} applies to retrieval only, not to task {model.task.name!r}")
    if normalise == "qb_norm" and not querybank:
        raise ValueError("eval.normalise='qb_norm' needs a querybank (the training split's captions or a file)")
    was_training = model.training
    model.eval()
    try:
        return _evaluate(model, dataset, batch_size=batch_size, num_workers=num_workers, rerank_k=rerank_k,
                         on_bad_video=on_bad_video, skipped=skipped, progress=progress, autocast=autocast,
                         normalise=normalise, options=options, querybank=querybank)
    finally:
        model.train(was_training)


@torch.no_grad()
def _evaluate(model, dataset, *, batch_size, num_workers, rerank_k, on_bad_video, skipped, progress, autocast,
              normalise="none", options=None, querybank=None):
    from tqdm.auto import tqdm

    # Every rank evaluates the whole split (metrics need every pair); only rank 0 writes them.
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, seed=0, epoch=0, num_workers=num_workers,
                         shard=False)
    cast = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    task = model.task.name
    videos: dict[int, VideoFeatures] = {}
    texts: list[TextFeatures] = []
    owners: list[int] = []
    predicted, answers, kinds = [], [], []
    skipped_here: list[dict] = []
    nan_scores = 0  # NaN scores of the QA heads (masked candidates are -inf, which is no fault)
    for batch in tqdm(loader, desc="eval", disable=not progress, unit="batch"):
        for entry in skipped_of(batch):
            if on_bad_video == "raise":
                raise BadVideoError(f"eval: video {entry['video_id']!r} could not be read: {entry['reason']}")
            skipped_here.append({**entry, "split": "eval"})
            if skipped is not None:
                skipped.append(skipped_here[-1])
        if batch_size_of(batch) == 0:
            continue
        with cast:
            if task == "retrieval":
                if model.uses_backbone_adapters:  # features change inside the backbone: adapt here
                    video = model.encode_video(batch["video"], batch.get("frame_mask"))
                    text = model.encode_text(batch["text"])
                else:  # backbone-level features; the adapters run over the whole split in similarity()
                    video, text = model.encode_inputs(batch["video"], batch["text"], batch.get("frame_mask"))
                for i, vi in enumerate(batch["video_index"].tolist()):
                    if vi not in videos:
                        videos[vi] = video.index(torch.tensor([i])).to("cpu")
                texts.append(text.to("cpu"))
                owners.extend(batch["video_index"].tolist())
            else:
                labels = batch.pop("answer")
                out = model(batch)
                predicted.append(out.scores.float().argmax(-1).cpu())
                nan_scores += int(out.scores.isnan().sum())
                answers.append(labels.cpu())
                kinds.extend(batch.get("question_type") or [""] * len(labels))
    if not texts and not predicted:
        raise nothing_left(dataset, skipped_here, "evaluate")
    if task == "retrieval":
        order = sorted(videos)
        column = {vi: j for j, vi in enumerate(order)}
        video_all = concat_video_features([videos[vi] for vi in order])
        text_all = concat_text_features(texts)
        with cast:
            if model.uses_backbone_adapters:
                sims = model.score_features(text_all, video_all, rerank_k=rerank_k)
            else:
                sims = model.similarity(text_all, video_all, rerank_k=rerank_k)
        truth = torch.tensor([column[o] for o in owners])
        metrics = retrieval_metrics(sims.float(), truth)
        _note_nan(metrics, int(sims.isnan().sum()))
        if normalise != "none":
            bank = None
            if normalise == "qb_norm":
                with cast:
                    bank = _querybank_scores(model, list(querybank), video_all, rerank_k=rerank_k,
                                             adapted=model.uses_backbone_adapters)
            metrics.update(normalised_retrieval_metrics(sims, truth, normalise, options, text_bank_sims=bank))
        return metrics
    typed = [k for k in kinds if k]
    metrics = accuracy_metrics(torch.cat(predicted), torch.cat(answers), kinds if len(typed) == len(kinds) else None)
    return _note_nan(metrics, nan_scores)


def _note_nan(metrics: dict, count: int) -> dict:
    """Add "nan_scores" (how many scores were NaN) to `metrics` when there are any: the metrics still rank
    them (last), but such a model is broken and is never kept as the best."""
    if count:
        metrics["nan_scores"] = count
    return metrics


def _querybank_scores(model, queries: list[str], video: VideoFeatures, *, rerank_k, adapted: bool,
                      chunk: int = 1024) -> torch.Tensor:
    """[bank, V]: the bank's queries scored against the evaluated videos exactly as the test texts are."""
    if not adapted:
        video = model.encode_video(video)
    return torch.cat([model.score_features(model.encode_text(queries[i:i + chunk]), video, rerank_k=rerank_k).float().cpu()
                      for i in range(0, len(queries), chunk)])
