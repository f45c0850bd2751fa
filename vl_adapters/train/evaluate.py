"""Evaluation over a whole split: retrieval metrics, multiple-choice or open-QA accuracy.

Two steps: `score_split` runs the model once over the split and keeps the scores (retrieval: the
[texts, videos] similarity matrix; multiple choice and open QA: each question's candidate scores);
`split_metrics` turns them into metrics. `evaluate` does both. The bench reads the same scores for its
normalised columns and readouts, so a model is never run twice for one set of numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.features import TextFeatures, VideoFeatures, concat_text_features, concat_video_features
from ..data.views import apply_view, check_view, fixed_permutations
from ..tasks.metrics import answer_credit, credit_metrics, retrieval_metrics
from ..tasks.normalise import normalised_retrieval_metrics, parse_options
from .data import BadVideoError, batch_size_of, make_loader, nothing_left, skipped_of

SHUFFLE_SEED = 1234  # the evaluation's frame permutation of each video: the same for every model


def default_metric(task: str) -> str:
    return "t2v_R@1" if task == "retrieval" else "accuracy"


@dataclass
class SplitScores:
    """A model's scores over a split. Retrieval: `scores` [texts, videos] with `truth` [texts] (column of
    each text's video) and `videos` [columns] (the dataset's video index of each column). Multiple choice
    and open QA: `scores` [questions, candidates] (-inf on padding) with `truth` [questions] (the answer,
    -1 outside the vocabulary). `samples`: the dataset sample of each row; `kinds`: its question_type ('' if
    none); `model`/`video`: what QB-Norm's querybank is scored with (retrieval)."""

    task: str
    scores: torch.Tensor
    truth: torch.Tensor
    samples: torch.Tensor
    kinds: list[str]
    videos: torch.Tensor | None = None
    video: VideoFeatures | None = None

    def __len__(self) -> int:
        return len(self.truth)


@torch.no_grad()
def evaluate(model, dataset, *, batch_size: int = 64, num_workers: int = 0, rerank_k: int | None = None,
             on_bad_video: str = "skip", skipped: list | None = None, progress: bool = False,
             autocast: bool = False, normalise: str = "none", normalise_options: dict | None = None,
             querybank: Sequence[str] | None = None, frame_view: str = "all", ties: str = "truth_first"
             ) -> dict[str, float]:
    """Metrics of `model` on every sample of `dataset` (raw or cached). Bad videos are skipped (and
    appended to `skipped`) or raise, as `on_bad_video` says.

    normalise "dsl" | "qb_norm" (retrieval) adds that method's metrics BESIDE the raw ones, keys prefixed
    `<method>/` (tasks/normalise.py); unprefixed metrics stay raw. qb_norm needs `querybank` (strings).
    Samples with a question_type add per-type metrics (`<metric>/<type>`); for retrieval each type's
    captions are ranked against the videos that have a caption of that type.
    frame_view (data/views.py): "shuffled" feeds each video's frames in one fixed permutation per video
    (SHUFFLE_SEED), so every model sees the same clips. ties: tasks/metrics.py."""
    options = parse_options(normalise, normalise_options)
    if normalise != "none" and getattr(model.task, "name", "") != "retrieval":
        raise ValueError(f"eval.normalise={normalise!r} applies to retrieval only, not to task {model.task.name!r}")
    if normalise == "qb_norm" and not querybank:
        raise ValueError("eval.normalise='qb_norm' needs a querybank (the training split's captions or a file)")
    scores = score_split(model, dataset, batch_size=batch_size, num_workers=num_workers, rerank_k=rerank_k,
                         on_bad_video=on_bad_video, skipped=skipped, progress=progress, autocast=autocast,
                         frame_view=frame_view)
    metrics = split_metrics(scores, ties=ties)
    if normalise != "none":
        bank = None
        if normalise == "qb_norm":
            cast = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with cast:
                bank = querybank_scores(model, list(querybank), scores, rerank_k=rerank_k)
        metrics.update(normalised_retrieval_metrics(scores.scores, scores.truth, normalise, options,
                                                    text_bank_sims=bank))
    return metrics


def split_metrics(scores: SplitScores, *, ties: str = "truth_first") -> dict[str, float]:
    """The task's metrics from a split's scores, overall and per question type when every row has one."""
    typed = all(scores.kinds)
    if scores.task == "retrieval":
        metrics = retrieval_metrics(scores.scores, scores.truth, ties=ties)
        if typed:
            metrics.update(_per_type(scores.scores, scores.truth, scores.kinds, ties))
    else:
        metrics = credit_metrics(answer_credit(scores.scores, scores.truth, ties), scores.kinds if typed else None)
    return _note_nan(metrics, int(scores.scores.isnan().sum()))  # masked candidates are -inf, no fault


@torch.no_grad()
def score_split(model, dataset, *, batch_size: int = 64, num_workers: int = 0, rerank_k: int | None = None,
                on_bad_video: str = "skip", skipped: list | None = None, progress: bool = False,
                autocast: bool = False, frame_view: str = "all") -> SplitScores:
    """Run `model` (in eval mode) once over `dataset` (NothingLeftError when no sample could be scored)."""
    check_view(frame_view)
    was_training = model.training
    model.eval()
    try:
        return _score(model, dataset, batch_size=batch_size, num_workers=num_workers, rerank_k=rerank_k,
                      on_bad_video=on_bad_video, skipped=skipped, progress=progress, autocast=autocast,
                      frame_view=frame_view)
    finally:
        model.train(was_training)


def _score(model, dataset, *, batch_size, num_workers, rerank_k, on_bad_video, skipped, progress, autocast,
           frame_view) -> SplitScores:
    from tqdm.auto import tqdm

    # Every rank evaluates the whole split (metrics need every pair); only rank 0 writes them.
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, seed=0, epoch=0, num_workers=num_workers,
                         shard=False)
    cast = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    task = model.task.name
    permutations = None
    if frame_view == "shuffled":
        permutations = fixed_permutations(len(dataset.video_ids), dataset_num_frames(dataset), SHUFFLE_SEED)
    videos: dict[int, VideoFeatures] = {}
    texts: list[TextFeatures] = []
    owners, samples, kinds, rows, answers = [], [], [], [], []
    skipped_here: list[dict] = []
    for batch in tqdm(loader, desc="eval", disable=not progress, unit="batch"):
        for entry in skipped_of(batch):
            if on_bad_video == "raise":
                raise BadVideoError(f"eval: video {entry['video_id']!r} could not be read: {entry['reason']}")
            skipped_here.append({**entry, "split": "eval"})
            if skipped is not None:
                skipped.append(skipped_here[-1])
        if batch_size_of(batch) == 0:
            continue
        batch = apply_view(batch, frame_view, permutations=permutations)
        samples.extend(batch["sample_index"].tolist())
        kinds.extend(k or "" for k in batch.get("question_type") or [""] * len(batch["sample_index"]))
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
                answers.append(batch.pop("answer").cpu())
                rows.append(model(batch).scores.float().cpu())
    if not samples:
        raise nothing_left(dataset, skipped_here, "evaluate")
    if task != "retrieval":
        width = max(r.shape[1] for r in rows)
        scores = torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1]), value=float("-inf")) for r in rows])
        return SplitScores(task=task, scores=scores, truth=torch.cat(answers), samples=torch.tensor(samples),
                           kinds=kinds)
    order = sorted(videos)
    column = {vi: j for j, vi in enumerate(order)}
    video_all = concat_video_features([videos[vi] for vi in order])
    text_all = concat_text_features(texts)
    with cast:
        if model.uses_backbone_adapters:
            sims = model.score_features(text_all, video_all, rerank_k=rerank_k)
        else:
            sims = model.similarity(text_all, video_all, rerank_k=rerank_k)
    return SplitScores(task=task, scores=sims.float().cpu(), truth=torch.tensor([column[o] for o in owners]),
                       samples=torch.tensor(samples), kinds=kinds, videos=torch.tensor(order), video=video_all)


def dataset_num_frames(dataset) -> int:
    """Frames per clip of a dataset (raw, or cached: the cache's frame count)."""
    cache = getattr(dataset, "cache", None)
    return int(cache.frame_mask.shape[1]) if cache is not None else int(dataset.num_frames)


def _per_type(sims: torch.Tensor, truth: torch.Tensor, kinds: list[str], ties: str) -> dict[str, float]:
    """Retrieval metrics per caption type: a type's captions against the videos that have one of them."""
    if len(set(kinds)) < 2:
        return {}
    out = {}
    for kind in sorted(set(kinds)):
        rows = torch.tensor([k == kind for k in kinds])
        videos = truth[rows].unique()
        column = torch.full((sims.shape[1],), -1, dtype=torch.long)
        column[videos] = torch.arange(len(videos))
        found = retrieval_metrics(sims[rows][:, videos], column[truth[rows]], ties=ties)
        out.update({f"{name}/{kind}": value for name, value in found.items()})
    return out


def _note_nan(metrics: dict, count: int) -> dict:
    """Add "nan_scores" (how many scores were NaN) to `metrics` when there are any: the metrics still rank
    them (last), but such a model is broken and is never kept as the best."""
    if count:
        metrics["nan_scores"] = count
    return metrics


def querybank_scores(model, queries: list[str], scores: SplitScores, *, rerank_k, chunk: int = 1024) -> torch.Tensor:
    """[bank, V]: the bank's queries scored against the evaluated videos exactly as the test texts are."""
    video = scores.video
    if not model.uses_backbone_adapters:  # the split's videos were kept as backbone features
        video = model.encode_video(video)
    return torch.cat([model.score_features(model.encode_text(queries[i:i + chunk]), video, rerank_k=rerank_k).float().cpu()
                      for i in range(0, len(queries), chunk)])
