"""Evaluation of a trained row on the test part: retrieval on two pools, multiple choice per question
kind, the twin readouts, the shuffle test, and DSL / QB-Norm beside the raw retrieval numbers.

Ranks are tie-aware. A video and its backward twin show the same frames, so an order-blind model gives
them the same score up to float rounding (the frames are summed in another order); a strict comparison
would break those ties by rounding noise, and shuffling the frames would move the numbers of a model
that cannot see order. Scores within `TIE_TOLERANCE` (relative) of each other count as tied, and every
metric is its expectation under a uniform random tie-break: R@K = P(rank < K), a tied two-way choice
is worth one half.
"""

from __future__ import annotations

import torch

from .data import Part, frame_order, mc_batch, text_input, video_input
from .protocol import BenchConfig

SHUFFLE_SEED = 1234  # the test-time permutation of each video's frames, the same for every row
EVAL_CHUNK = 64
TIE_TOLERANCE = 1e-5


# ---------------------------------------------------------------- tie-aware metrics
def tolerance(scores: torch.Tensor) -> torch.Tensor:
    """[Q, 1] the tie tolerance of each row: relative to its largest finite score (at least 1)."""
    finite = scores.masked_fill(~scores.isfinite(), 0.0)
    return TIE_TOLERANCE * finite.abs().amax(1, keepdim=True).clamp_min(1.0)


def recall(scores: torch.Tensor, truth: torch.Tensor, ks=(1, 5)) -> dict[int, float]:
    """Percent of queries (rows) whose truth column ranks within k, expected over random tie-breaks."""
    scores = scores.float().cpu()
    tol = tolerance(scores)
    target = scores.gather(1, truth[:, None])
    greater = (scores > target + tol).sum(1).float()
    tied = ((scores - target).abs() <= tol).sum(1).float()  # includes the truth itself
    return {k: 100.0 * ((k - greater) / tied).clamp(0.0, 1.0).mean().item() for k in ks}


def two_way(right: torch.Tensor, wrong: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """1 where right beats wrong, 0.5 on a tie (within `tol`, one per pair), 0 otherwise."""
    return (right > wrong + tol).float() + 0.5 * ((right - wrong).abs() <= tol).float()


def top1(scores: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """[Q] expected accuracy of the argmax under random tie-breaks (padding candidates score -inf)."""
    tied = scores >= scores.max(1, keepdim=True).values - tolerance(scores)
    return tied.gather(1, answer[:, None]).squeeze(1).float() / tied.sum(1).float()


# ---------------------------------------------------------------- the pools and the views
def pool(part: Part, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(caption indices, video indices, video column of each caption) of a retrieval pool. "static":
    the forward videos with their static captions (the backward twin shares the caption, so it is not
    in the pool); "temporal": every video (both twins) with its event caption."""
    captions = [i for i, k in enumerate(part.caption_kind) if k == kind
                and (kind == "temporal" or part.caption_direction[i] == "forward")]
    captions = torch.tensor(captions, dtype=torch.long)
    videos = part.caption_video[captions].unique()
    column = {int(v): j for j, v in enumerate(videos.tolist())}
    return captions, videos, torch.tensor([column[int(v)] for v in part.caption_video[captions].tolist()])


def test_order(part: Part, view: str) -> torch.Tensor:
    """[V, T'] frames per video at test: the row's view, or with "shuffled" a fixed permutation per video
    (SHUFFLE_SEED), the same for every row. A single-frame view has nothing to shuffle."""
    if view == "shuffled":
        return frame_order(part.num_videos, part.frames.shape[1], "shuffled", torch.Generator().manual_seed(SHUFFLE_SEED))
    return frame_order(part.num_videos, part.frames.shape[1], view, None)


@torch.no_grad()
def encode_part(model, part: Part, videos: torch.Tensor, order: torch.Tensor, captions: torch.Tensor):
    """The adapted video and text features of `videos` (frames `order` of each) and `captions`."""
    from vl_adapters.core.features import concat_text_features, concat_video_features

    frames = model.uses_backbone_adapters
    video = concat_video_features([model.encode_video(video_input(part, v, order[v], frames=frames))
                                   for v in videos.split(EVAL_CHUNK)])
    text = concat_text_features([model.encode_text(text_input(part.text, part.captions, c, frames=frames))
                                 for c in captions.split(EVAL_CHUNK)])
    return video, text


@torch.no_grad()
def evaluate_retrieval(model, part: Part, cfg: BenchConfig, order: torch.Tensor, *, normalise=None,
                       kinds=("static", "temporal")) -> dict[str, float]:
    """R@1/R@5 both ways (percent) on the static and the temporal pool. `normalise(kind, sims, video,
    owner) -> metrics` adds the inference-normalised numbers beside the raw ones."""
    metrics: dict[str, float] = {}
    for kind in kinds:
        captions, videos, owner = pool(part, kind)
        video, text = encode_part(model, part, videos, order, captions)
        sims = model.score_features(text, video, rerank_k=cfg.rerank_k).float().cpu()
        # one caption per video in each pool: video -> text ranks the transposed matrix
        caption_of = torch.empty_like(owner)
        caption_of[owner] = torch.arange(len(owner))
        for direction, found in (("t2v", recall(sims, owner)), ("v2t", recall(sims.T, caption_of))):
            metrics.update({f"{kind}/{direction}_R@{k}": v for k, v in found.items()})
        if kind == "temporal":  # each caption's own video against its backward twin: order-blind = 50
            column = {int(v): j for j, v in enumerate(videos.tolist())}
            twin = torch.tensor([column[int(part.twin_video[v])] for v in videos[owner].tolist()])
            rows = torch.arange(len(owner))
            beats = two_way(sims[rows, owner], sims[rows, twin], tolerance(sims).squeeze(1))
            metrics["temporal/twin"] = 100.0 * beats.mean().item()
        if normalise is not None:
            metrics.update({f"{kind}/{k}": v for k, v in normalise(kind, sims, video, owner).items()})
    return metrics


def questions(part: Part, kind: str) -> torch.Tensor:
    """The questions of a kind that are scored: every temporal question (both twins), and the static
    questions of the forward videos (a backward twin shows the same frames and has the same answer)."""
    q = part.questions
    keep = torch.tensor([k == kind for k in q.kinds]) & (q.forward | (kind == "temporal"))
    return keep.nonzero().flatten()


@torch.no_grad()
def evaluate_mc(model, part: Part, order: torch.Tensor, kinds=("static", "temporal")) -> dict[str, float]:
    """Accuracy (percent) per question kind: the candidate with the highest score of the model's head."""
    frames = model.uses_backbone_adapters
    q = part.questions
    metrics = {}
    for kind in kinds:
        correct, beats_twin = [], []
        for chunk in questions(part, kind).split(EVAL_CHUNK):
            batch = mc_batch(part, chunk, order[q.video[chunk]], frames=frames, with_answer=False)
            scores = model(batch).scores.float().cpu()  # padding slots are -inf
            correct.append(top1(scores, q.answer[chunk]))
            twin = q.twin_candidate[chunk]
            rows = torch.arange(len(chunk))
            beats = two_way(scores[rows, q.answer[chunk]], scores[rows, twin.clamp_min(0)], tolerance(scores).squeeze(1))
            beats_twin.append(beats[twin >= 0])
        metrics[f"mc/{kind}"] = 100.0 * torch.cat(correct).mean().item()
        if kind == "temporal":  # two-way: the right caption against the twin's (order-blind = 50)
            metrics["mc/twin"] = 100.0 * torch.cat(beats_twin).mean().item()
    return metrics


def evaluate(model, part: Part, cfg: BenchConfig, view: str, *, normalise=None) -> dict[str, float]:
    """The task's metrics in the row's test view, and on the temporal part with each video's frames
    shuffled (a fixed permutation), with the drop between the two."""
    if model.task.name == "retrieval":
        metrics = evaluate_retrieval(model, part, cfg, test_order(part, view), normalise=normalise)
        mixed = evaluate_retrieval(model, part, cfg, test_order(part, _shuffled(view)), kinds=("temporal",))
    else:
        metrics = evaluate_mc(model, part, test_order(part, view))
        mixed = evaluate_mc(model, part, test_order(part, _shuffled(view)), kinds=("temporal",))
    metrics.update({f"shuffled/{k}": v for k, v in mixed.items()})
    metrics.update({f"shuffle_drop/{k}": metrics[k] - mixed[k] for k in mixed if k.endswith(("R@1", "temporal", "twin"))})
    return metrics


def _shuffled(view: str) -> str:
    return "shuffled" if view == "all" else view  # a single frame has no order to shuffle


# ---------------------------------------------------------------- inference normalisation
def normalisation(data: dict[str, Part], cfg: BenchConfig):
    """DSL and QB-Norm beside the raw retrieval numbers (vl_adapters/tasks/normalise.py), or None with
    the reason when that module is absent. QB-Norm's querybank: `cfg.qb_bank_size` training captions
    of the pool's kind (a fixed draw); its beta is chosen on the validation part, never on test."""
    import random

    try:
        from vl_adapters.tasks import normalise as norm
    except ImportError:
        return None, "DSL / QB-Norm columns left out: vl_adapters/tasks/normalise.py is not in this tree"
    if "val" not in data:
        return None, "DSL / QB-Norm columns left out: QB-Norm's beta needs a validation part"
    train, val = data["train"], data["val"]
    banks = {}
    for kind in ("static", "temporal"):
        captions = pool(train, kind)[0].tolist()
        banks[kind] = torch.tensor(sorted(random.Random(cfg.data_seed).sample(captions, min(cfg.qb_bank_size, len(captions)))))

    def for_model(model):
        frames = model.uses_backbone_adapters
        bank_text = {kind: model.encode_text(text_input(train.text, train.captions, idx, frames=frames))
                     for kind, idx in banks.items()}
        val_order = test_order(val, "all")

        def apply(kind: str, sims: torch.Tensor, video, owner: torch.Tensor) -> dict[str, float]:
            captions, videos, val_owner = pool(val, kind)
            val_video, val_text = encode_part(model, val, videos, val_order, captions)
            val_sims = model.score_features(val_text, val_video, rerank_k=cfg.rerank_k)
            val_bank = model.score_features(bank_text[kind], val_video, rerank_k=cfg.rerank_k)
            beta, _ = norm.choose_beta(val_sims, val_owner, val_bank)
            test_bank = model.score_features(bank_text[kind], video, rerank_k=cfg.rerank_k)
            out = {"qb_norm/beta": beta}
            for method, options, extra in (("dsl", None, {}), ("qb_norm", {"beta": beta}, {"text_bank_sims": test_bank})):
                found = norm.normalised_retrieval_metrics(sims, owner, method, options, **extra)
                out.update({k: v for k, v in found.items() if k.endswith(("t2v_R@1", "v2t_R@1"))})
            return out

        return apply

    return for_model, None
