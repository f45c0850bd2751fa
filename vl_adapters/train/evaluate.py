"""Evaluation over a whole split: retrieval metrics, multiple-choice or open-QA accuracy."""

from __future__ import annotations

import contextlib

import torch

from ..core.features import TextFeatures, VideoFeatures, concat_text_features, concat_video_features
from ..tasks.metrics import accuracy_metrics, retrieval_metrics
from .data import BadVideoError, batch_size_of, make_loader, skipped_of


def default_metric(task: str) -> str:
    return "t2v_R@1" if task == "retrieval" else "accuracy"


@torch.no_grad()
def evaluate(model, dataset, *, batch_size: int = 64, num_workers: int = 0, rerank_k: int | None = None,
             on_bad_video: str = "skip", skipped: list | None = None, progress: bool = False,
             autocast: bool = False) -> dict[str, float]:
    """Metrics of `model` on every sample of `dataset` (raw or cached). Bad videos are skipped (and
    appended to `skipped`) or raise, as `on_bad_video` says."""
    was_training = model.training
    model.eval()
    try:
        return _evaluate(model, dataset, batch_size=batch_size, num_workers=num_workers, rerank_k=rerank_k,
                         on_bad_video=on_bad_video, skipped=skipped, progress=progress, autocast=autocast)
    finally:
        model.train(was_training)


@torch.no_grad()
def _evaluate(model, dataset, *, batch_size, num_workers, rerank_k, on_bad_video, skipped, progress, autocast):
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
    for batch in tqdm(loader, desc="eval", disable=not progress, unit="batch"):
        for entry in skipped_of(batch):
            if on_bad_video == "raise":
                raise BadVideoError(f"eval: video {entry['video_id']!r} could not be read: {entry['reason']}")
            if skipped is not None:
                skipped.append({**entry, "split": "eval"})
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
                answers.append(labels.cpu())
                kinds.extend(batch.get("question_type") or [""] * len(labels))
    if task == "retrieval":
        if not texts:
            return {}
        order = sorted(videos)
        column = {vi: j for j, vi in enumerate(order)}
        video_all = concat_video_features([videos[vi] for vi in order])
        text_all = concat_text_features(texts)
        with cast:
            if model.uses_backbone_adapters:
                sims = model.score_features(text_all, video_all, rerank_k=rerank_k)
            else:
                sims = model.similarity(text_all, video_all, rerank_k=rerank_k)
        return retrieval_metrics(sims.float(), torch.tensor([column[o] for o in owners]))
    if not predicted:
        return {}
    typed = [k for k in kinds if k]
    return accuracy_metrics(torch.cat(predicted), torch.cat(answers),
                            kinds if len(typed) == len(kinds) else None)
