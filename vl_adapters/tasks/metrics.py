"""Retrieval and QA metrics, computed the way CLIP4Clip reports them.

Ranks are 0-based counts of candidates scored strictly higher than the ground truth (ties favour the
ground truth, as CLIP4Clip's sort-and-find does). R@K is the percentage of queries with rank < K,
MdR the median rank + 1, MnR the mean rank + 1.

`ties="expected"` instead counts scores within a relative `TIE_TOLERANCE` of the truth as tied and
reports each metric's expectation under a uniform random tie-break: R@K = P(rank < K), a tied argmax
is worth 1/(number tied). An order-blind model scores a video and its frames in another order alike up
to float rounding; this is what keeps such rounding from deciding a comparison (the bench uses it). A NaN score never helps: a NaN candidate counts as
-inf and a NaN ground truth ranks last (a comparison with NaN is always false, so counting "scores >
target" alone would give a NaN target rank 0, a perfect hit); scores holding NaN are warned about.

Several captions per video: text->video ranks every caption against all videos; video->text scores
each video against each *caption group* by the best of that group's captions (CLIP4Clip pads the
[videos, captions, videos] tensor with -inf and takes the max over captions), then ranks groups.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

RECALL_AT = (1, 5, 10)
TIES = ("truth_first", "expected")
TIE_TOLERANCE = 1e-5  # relative to a row's largest finite score (at least 1)


def tie_tolerance(scores: Tensor) -> Tensor:
    """[Q, 1] the tie tolerance of each row."""
    finite = scores.masked_fill(~scores.isfinite(), 0.0)
    return TIE_TOLERANCE * finite.abs().amax(1, keepdim=True).clamp_min(1.0)


def rank_counts(scores: Tensor, truth: Tensor, ties: str = "truth_first") -> tuple[Tensor, Tensor]:
    """(candidates above the truth [Q], candidates tied with it, the truth included [Q]). With
    "truth_first" ties count as below (tied = 1). A NaN candidate counts as -inf; a NaN truth ranks last."""
    if scores.ndim != 2 or truth.shape != (scores.shape[0],):
        raise ValueError(f"ranks_of_truth: expected scores [Q, C] and truth [Q], got {list(scores.shape)} "
                         f"and {list(truth.shape)}")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    scores = scores.float().nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    target = scores.gather(1, truth.long()[:, None].to(scores.device))
    margin = tie_tolerance(scores) if ties == "expected" else torch.zeros_like(target)
    above = (scores > target + margin).sum(1)
    tied = ((scores - target).abs() <= margin).sum(1).clamp_min(1) if ties == "expected" else torch.ones_like(above)
    missing = target[:, 0] == float("-inf")  # a NaN truth (or -inf): last, alone
    return (torch.where(missing, scores.shape[1] - 1, above).float(),
            torch.where(missing, 1, tied).float())


def ranks_of_truth(scores: Tensor, truth: Tensor) -> Tensor:
    """scores [Q, C], truth [Q] column index of each query's ground truth -> 0-based ranks [Q]."""
    return rank_counts(scores, truth)[0].long()


def rank_metrics(ranks: Tensor, prefix: str = "", tied: Tensor | None = None) -> dict[str, float]:
    """R@1/5/10 (percent), MdR and MnR from 0-based ranks (`tied`: candidates tied with each truth,
    itself included; the metrics are then expectations over random tie-breaks)."""
    above = ranks.float()
    tied = torch.ones_like(above) if tied is None else tied.float()
    out = {f"{prefix}R@{k}": 100.0 * ((k - above) / tied).clamp(0.0, 1.0).mean().item() for k in RECALL_AT}
    expected = above + 0.5 * (tied - 1)
    # CLIP4Clip uses np.median (the mean of the two middle values for an even count).
    out[f"{prefix}MdR"] = _median(expected) + 1
    out[f"{prefix}MnR"] = expected.mean().item() + 1
    return out


def _median(values: Tensor) -> float:
    ordered = values.sort().values
    n = len(ordered)
    mid = n // 2
    return ordered[mid].item() if n % 2 else 0.5 * (ordered[mid - 1].item() + ordered[mid].item())


def retrieval_metrics(sims: Tensor, text_to_video: Tensor | Sequence[int] | None = None, *,
                      ties: str = "truth_first") -> dict[str, float]:
    """sims [num_texts, num_videos]; text_to_video [num_texts] (video column of each text; default the
    diagonal, one caption per video). Returns t2v_* and v2t_* metrics."""
    sims = sims.detach().float().cpu()
    n_texts, n_videos = sims.shape
    nan = int(sims.isnan().sum())
    if nan:
        warnings.warn(f"retrieval_metrics: {nan} of {sims.numel()} scores are NaN; they rank last",
                      RuntimeWarning, stacklevel=2)
    if text_to_video is None:
        if n_texts != n_videos:
            raise ValueError(f"retrieval_metrics: {n_texts} texts and {n_videos} videos; pass text_to_video")
        text_to_video = torch.arange(n_videos)
    owner = torch.as_tensor(text_to_video, dtype=torch.long).cpu()
    if owner.shape != (n_texts,) or (owner.numel() and (owner.min() < 0 or owner.max() >= n_videos)):
        raise ValueError(f"retrieval_metrics: text_to_video must be [{n_texts}] indices in [0, {n_videos})")
    above, tied = rank_counts(sims, owner, ties)
    metrics = rank_metrics(above, "t2v_", tied)
    # Video -> text: best caption of each video's caption group, a [num_videos, num_videos] matrix.
    has_caption = torch.zeros(n_videos, dtype=torch.bool)
    has_caption[owner] = True
    group_scores = torch.full((n_videos, n_videos), float("-inf"))
    index = owner[None].expand(n_videos, -1)
    group_scores = group_scores.scatter_reduce(1, index, sims.T.nan_to_num(nan=float("-inf")), reduce="amax")
    # a group whose captions are all NaN stays NaN (so that it ranks last, not as a -inf tie)
    finite_count = torch.zeros(n_videos, n_videos).scatter_add(1, index, (~sims.T.isnan()).float())
    group_scores = group_scores.masked_fill((finite_count == 0) & has_caption, float("nan"))
    queried = has_caption.nonzero().flatten()
    group_scores = group_scores[queried][:, has_caption]
    truth = torch.arange(len(queried))
    above, tied = rank_counts(group_scores, truth, ties)
    metrics.update(rank_metrics(above, "v2t_", tied))
    return metrics


def answer_credit(scores: Tensor, answer: Tensor, ties: str = "truth_first") -> Tensor:
    """[Q] 1 where the answer has the top score (-inf marks padding candidates), 0 otherwise; with
    ties="expected", 1 / (candidates tied at the top) when the answer is among them. Answer -1 (outside
    the vocabulary) earns 0."""
    scores = scores.detach().float().cpu().nan_to_num(nan=float("-inf"))
    answer = answer.detach().cpu().long()
    known = answer >= 0
    above, tied = rank_counts(scores, answer.clamp_min(0), ties)
    return torch.where(known & (above == 0), 1.0 / tied, 0.0)


def accuracy_metrics(predicted: Tensor, answer: Tensor, question_types: Sequence[str] | None = None
                     ) -> dict[str, float]:
    """Accuracy (percent) overall and per question type ("accuracy/<type>"); answer -1 counts as wrong
    (an answer outside the vocabulary can never be predicted)."""
    predicted, answer = predicted.detach().cpu().long(), answer.detach().cpu().long()
    if predicted.shape != answer.shape:
        raise ValueError(f"accuracy_metrics: predicted {list(predicted.shape)} vs answer {list(answer.shape)}")
    return credit_metrics(((predicted == answer) & (answer >= 0)).float(), question_types)


def credit_metrics(credit: Tensor, question_types: Sequence[str] | None = None) -> dict[str, float]:
    """Accuracy (percent) from each question's credit in [0, 1], overall and per question type."""
    correct = credit.float()
    out = {"accuracy": 100.0 * correct.mean().item() if len(correct) else 0.0}
    if question_types is not None:
        if len(question_types) != len(correct):
            raise ValueError(f"accuracy: {len(question_types)} question types for {len(correct)} answers")
        for kind in sorted(set(question_types)):
            rows = torch.tensor([t == kind for t in question_types])
            out[f"accuracy/{kind}"] = 100.0 * correct[rows].mean().item()
    return out
