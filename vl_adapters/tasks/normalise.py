"""Inference normalisation of a retrieval score matrix: DSL (dual softmax) and QB-Norm (querybank
normalisation with the dynamic inverted softmax). Post-processing only: nothing here trains.

Both are reported beside the raw metrics, never instead of them: `normalised_retrieval_metrics` returns
keys prefixed with the method (`dsl/t2v_R@1`, `qb_norm/t2v_R@1`); an unprefixed retrieval metric is
always raw. See docs/normalisation.md for the papers, what each one may see, and where we depart.

Shapes: sims [T, V] (texts x videos, the matrix the evaluator ranks); a text querybank's scores
[Bt, V] (bank texts x the same videos); a video querybank's scores [Bv, T] (bank videos x the test texts).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..core.config import Config, ConfigError
from .metrics import retrieval_metrics

METHODS = ("none", "dsl", "qb_norm")


@dataclass
class DSLOptions(Config):
    """temperature: of the prior softmax over the other side's queries (CAMoE's inverse logit scale)."""

    temperature: float = 0.01

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"eval.normalise_options.temperature must be > 0, got {self.temperature}")


@dataclass
class QBNormOptions(Config):
    """querybank       "train" (the training split's captions) or a file of queries: .txt (one per line),
                       .json (a list of strings) or .jsonl (rows with a "text" field). Never the test split.
    querybank_size  at most this many bank queries, drawn with a fixed seed (0 = all): bounds the cost.
    beta            inverse temperature of the inverted softmax; fix it on a validation split
                    (`choose_beta`), never on the test split. 20 is the official code's default.
    k               the activation set holds every video in some bank query's top-k (official: 1)."""

    querybank: str = "train"
    querybank_size: int = 0
    beta: float = 20.0
    k: int = 1

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"eval.normalise_options.beta must be > 0, got {self.beta}")
        if self.k < 1 or self.querybank_size < 0:
            raise ConfigError(f"eval.normalise_options: k must be >= 1 and querybank_size >= 0, got k={self.k}, "
                              f"querybank_size={self.querybank_size}")
        if not self.querybank:
            raise ConfigError('eval.normalise_options.querybank must be "train" or a file of queries')


_OPTIONS = {"dsl": DSLOptions, "qb_norm": QBNormOptions}


def parse_options(method: str, options: dict | None = None) -> DSLOptions | QBNormOptions | None:
    """The typed options of `method` (None for "none"); unknown methods or keys raise ConfigError."""
    if method not in METHODS:
        raise ConfigError(f"eval.normalise must be one of {METHODS}, got {method!r}")
    options = dict(options or {})
    if method == "none":
        if options:
            raise ConfigError(f"eval.normalise_options {sorted(options)} given, but eval.normalise is 'none'")
        return None
    try:
        return _OPTIONS[method].from_dict(options)
    except ConfigError as error:
        raise ConfigError(f"eval.normalise_options for {method!r}: {error}") from None


# ---- the two normalisations -----------------------------------------------------------------------
def dual_softmax(sims: Tensor, *, dim: int, temperature: float = 0.01) -> Tensor:
    """DSL at inference: sims * softmax(sims / temperature) along `dim`, the axis of the OTHER side's
    queries. For text->video (each row ranks videos) the prior runs over the texts (dim=0): a video that
    every text likes (a hub) spreads its prior thin and drops for the texts that are not its own. It
    reads every test query at once: it is transductive."""
    sims = sims.float()
    return sims * torch.softmax(sims / temperature, dim=dim)


def activation_set(bank_sims: Tensor, k: int = 1) -> Tensor:
    """[G] bool: the gallery items that appear in the top-k of at least one bank query (the hubs the bank sees)."""
    top = bank_sims.topk(min(k, bank_sims.shape[1]), dim=1).indices.flatten()
    active = torch.zeros(bank_sims.shape[1], dtype=torch.bool, device=bank_sims.device)
    active[top] = True
    return active


def querybank_normalise(sims: Tensor, bank_sims: Tensor, *, beta: float = 20.0, k: int = 1) -> Tensor:
    """QB-Norm with the dynamic inverted softmax (Bogolin et al., CVPR 2022).

    sims [Q, G] (test queries x gallery), bank_sims [B, G] (bank queries x the same gallery). A query
    whose nearest gallery item (top-1) lies in the activation set of the bank (`activation_set`, top-k)
    gets the inverted softmax, exp(beta s_qg) / sum_b exp(beta s_bg), per gallery item; every other query
    keeps its raw scores. Returned in log space (beta s_qg - logsumexp_b beta s_bg), which ranks each
    row exactly as the ratio does and cannot overflow. Rows are queries: rank within a row only."""
    sims, bank_sims = sims.float(), bank_sims.float().to(sims.device)
    if bank_sims.ndim != 2 or bank_sims.shape[1] != sims.shape[1]:
        raise ValueError(f"querybank_normalise: the bank scores must be [bank, {sims.shape[1]}] (the same gallery "
                         f"as sims {list(sims.shape)}), got {list(bank_sims.shape)}")
    if bank_sims.shape[0] == 0:
        raise ValueError("querybank_normalise: the querybank is empty")
    normaliser = torch.logsumexp(beta * bank_sims, dim=0)  # [G]
    inverted = beta * sims - normaliser
    hit = activation_set(bank_sims, k)[sims.argmax(1)]  # [Q]
    return torch.where(hit[:, None], inverted, sims)


# ---- metrics --------------------------------------------------------------------------------------
def _direction(metrics: dict[str, float], direction: str, method: str) -> dict[str, float]:
    return {f"{method}/{k}": v for k, v in metrics.items() if k.startswith(direction)}


def normalised_retrieval_metrics(sims: Tensor, text_to_video: Tensor | Sequence[int] | None, method: str,
                                 options: DSLOptions | QBNormOptions | dict | None = None, *,
                                 text_bank_sims: Tensor | None = None,
                                 video_bank_sims: Tensor | None = None, ties: str = "truth_first") -> dict[str, float]:
    """The retrieval metrics of `method`'s normalised matrices, keys prefixed `<method>/` (t2v_* and v2t_*).

    dsl: t2v from dual_softmax over the texts, v2t from dual_softmax over the videos.
    qb_norm: t2v needs `text_bank_sims` [Bt, V]; v2t needs `video_bank_sims` [Bv, T] and is left out
    without it (a text bank says nothing about hub texts)."""
    if not isinstance(options, (DSLOptions, QBNormOptions)):
        options = parse_options(method, options)
    if method == "none":
        return {}
    sims = sims.detach().float().cpu()
    if method == "dsl":
        t2v = dual_softmax(sims, dim=0, temperature=options.temperature)
        v2t = dual_softmax(sims, dim=1, temperature=options.temperature)
    else:
        if text_bank_sims is None:
            raise ValueError("qb_norm needs the querybank's scores against the test videos (text_bank_sims)")
        t2v = querybank_normalise(sims, text_bank_sims.cpu(), beta=options.beta, k=options.k)
        v2t = None
        if video_bank_sims is not None:
            v2t = querybank_normalise(sims.T, video_bank_sims.cpu(), beta=options.beta, k=options.k).T
    out = _direction(retrieval_metrics(t2v, text_to_video, ties=ties), "t2v_", method)
    if v2t is not None:
        out.update(_direction(retrieval_metrics(v2t, text_to_video, ties=ties), "v2t_", method))
    return out


def choose_beta(val_sims: Tensor, val_text_to_video: Tensor | Sequence[int] | None, val_bank_sims: Tensor, *,
                candidates: Sequence[float] = (1.0, 5.0, 10.0, 20.0, 30.0, 50.0), k: int = 1,
                metric: str = "t2v_R@1", ties: str = "truth_first") -> tuple[float, dict[float, float]]:
    """QB-Norm's beta fixed on a VALIDATION split: the candidate with the best `metric` of the normalised
    validation matrix (ties go to the smaller beta). Returns (beta, {beta: metric}). Pass the chosen beta
    to the test evaluation in eval.normalise_options; never choose it on the test split."""
    if not candidates or any(not b > 0 for b in candidates):
        raise ValueError(f"choose_beta: candidates must be positive numbers, got {list(candidates)}")
    table = {}
    for beta in sorted(candidates):  # a handful of candidates, each one matrix op
        normalised = querybank_normalise(val_sims, val_bank_sims, beta=beta, k=k)
        table[float(beta)] = retrieval_metrics(normalised, val_text_to_video, ties=ties)[metric]
    best = max(table, key=lambda b: (table[b], -b))
    return best, table


# ---- the querybank ----------------------------------------------------------------------------------
def querybank_texts(spec: str, *, train_dataset=None, size: int = 0, seed: int = 0) -> list[str]:
    """The bank's query strings: "train" = the captions of `train_dataset` (its samples' "text"), or a
    file (.txt one query per line, .json a list of strings, .jsonl rows with "text"). At most `size`
    (0 = all), drawn with `seed`."""
    if spec == "train":
        samples = getattr(train_dataset, "samples", None)
        if samples is None:
            raise ValueError('querybank "train" needs the training split (a dataset with samples); none was given')
        texts = [s["text"] for s in samples if isinstance(s.get("text"), str)]
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f'querybank {spec!r}: no such file (expected "train" or a .txt/.json/.jsonl file)')
        if path.suffix == ".json":
            texts = json.loads(path.read_text())
            if not (isinstance(texts, list) and all(isinstance(t, str) for t in texts)):
                raise ValueError(f"querybank {path}: expected a JSON list of strings")
        elif path.suffix == ".jsonl":
            texts = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
        else:
            texts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"querybank {spec!r} holds no queries")
    if size and len(texts) > size:
        texts = random.Random(seed).sample(texts, size)
    return texts
