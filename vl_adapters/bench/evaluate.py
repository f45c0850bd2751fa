"""What the bench measures on a trained job, beyond the trainer's own evaluation.

On the test split, from one scoring pass per frame view (train/evaluate.py's `score_split`):
- the task's metrics, overall and per question type, tie-aware (tasks/metrics.py, ties="expected": an
  order-blind model scores a video and the same frames in another order alike up to rounding, and that
  rounding must not decide a comparison);
- the same with each test video's frames in one fixed random order (`shuffled/...`) and the drop;
- the twin readouts, when the rows name a `twin` video (bench/twins.py);
- DSL and QB-Norm beside the raw retrieval numbers, never mixed in (`dsl/...`, `qb_norm/...`): QB-Norm's
  querybank is training captions and its beta is chosen on the validation split (without one: the
  official default, 20), never on test.
On the validation split (when the run has one): the task's metrics, `val/...`, which pick the
shuffled-training control before any test number is read.
"""

from __future__ import annotations

import torch

from vl_adapters.tasks import normalise as norm
from vl_adapters.train.evaluate import SplitScores, querybank_scores, score_split, split_metrics

from .twins import twin_metrics

TIES = "expected"


def evaluate_job(model, config, evaluation: dict, *, row, trainer=None, log=None) -> dict[str, float]:
    from vl_adapters.train.trainer import open_split

    device_is_cuda = next(iter(model.parameters()), torch.empty(0)).is_cuda

    def score(dataset, view: str) -> SplitScores:
        return score_split(model, dataset, batch_size=config.data.eval_batch_size, num_workers=config.data.num_workers,
                           rerank_k=config.eval.rerank_k, on_bad_video=config.on_bad_video, autocast=device_is_cuda,
                           frame_view=view)

    test = open_split(config, evaluation["test_split"], model)
    scores = score(test, row.test_view)
    metrics = {**split_metrics(scores, ties=TIES), **twin_metrics(test, scores)}
    if evaluation["shuffle_test"] and row.test_view == "all":
        mixed = score(test, "shuffled")
        shuffled = {**split_metrics(mixed, ties=TIES), **twin_metrics(test, mixed)}
        metrics.update({f"shuffled/{k}": v for k, v in shuffled.items()})
        metrics.update({f"shuffle_drop/{k}": metrics[k] - v for k, v in shuffled.items() if _percent(k)})
    val = None
    if validation_split(config):
        val_dataset = trainer.eval_dataset if trainer is not None and trainer.eval_dataset is not None else \
            open_split(config, config.data.eval_split, model)
        val = score(val_dataset, row.test_view)
        metrics.update({f"val/{k}": v for k, v in split_metrics(val, ties=TIES).items()})
    if scores.task == "retrieval" and evaluation["normalise"]:
        metrics.update(_normalised(model, config, evaluation, scores, val, trainer))
    return metrics


def validation_split(config) -> bool:
    """The run has a validation split distinct from the test split (what selection may read)."""
    return bool(config.data.eval_split) and config.data.eval_split != "test"


def _percent(key: str) -> bool:
    name = key.split("/")[0]
    return name.startswith(("t2v_R@", "v2t_R@", "accuracy", "twin"))


def _pools(scores: SplitScores) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """'' -> the whole matrix; each question type -> (its caption rows, its video columns)."""
    every = torch.arange(len(scores))
    pools = {"": (every, torch.arange(scores.scores.shape[1]))}
    if all(scores.kinds) and len(set(scores.kinds)) > 1:
        for kind in sorted(set(scores.kinds)):
            rows = torch.tensor([k == kind for k in scores.kinds]).nonzero().flatten()
            pools[kind] = (rows, scores.truth[rows].unique())
    return pools


def _restrict(scores: SplitScores, rows: torch.Tensor, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    position = torch.full((scores.scores.shape[1],), -1, dtype=torch.long)
    position[columns] = torch.arange(len(columns))
    return scores.scores[rows][:, columns], position[scores.truth[rows]]


def _normalised(model, config, evaluation, scores: SplitScores, val: SplitScores | None, trainer) -> dict[str, float]:
    """DSL and QB-Norm t2v/v2t metrics on the whole test matrix and on each question type's pool."""
    out: dict[str, float] = {}
    bank = None
    if "qb_norm" in evaluation["normalise"]:
        from vl_adapters.train.trainer import build_split

        train = trainer.train_dataset if trainer is not None else build_split(
            config, config.data.train_split, size=model.backbone.dims.image_size, train=False)
        queries = norm.querybank_texts("train", train_dataset=train, size=evaluation["querybank_size"], seed=0)
        with torch.no_grad():
            bank = {"test": querybank_scores(model, queries, scores, rerank_k=config.eval.rerank_k)}
            if val is not None:
                bank["val"] = querybank_scores(model, queries, val, rerank_k=config.eval.rerank_k)
    val_pools = _pools(val) if val is not None else {}
    for kind, (rows, columns) in _pools(scores).items():
        suffix = f"/{kind}" if kind else ""
        sims, truth = _restrict(scores, rows, columns)
        if "dsl" in evaluation["normalise"]:
            found = norm.normalised_retrieval_metrics(sims, truth, "dsl", {}, ties=TIES)
            out.update({f"{k}{suffix}": v for k, v in found.items()})
        if bank is not None and (val is None or kind in val_pools):
            beta = norm.QBNormOptions().beta  # no validation split: the official default, never tuned on test
            if val is not None:
                val_sims, val_truth = _restrict(val, *val_pools[kind])
                beta, _ = norm.choose_beta(val_sims, val_truth, bank["val"][:, val_pools[kind][1]], ties=TIES)
            found = norm.normalised_retrieval_metrics(sims, truth, "qb_norm", {"beta": beta}, ties=TIES,
                                                      text_bank_sims=bank["test"][:, columns])
            out.update({f"{k}{suffix}": v for k, v in found.items()})
            out[f"qb_norm/beta{suffix}"] = beta
    return out
