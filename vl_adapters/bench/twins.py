"""Twin readouts, for data whose rows name a `twin` video (the synthetic benchmark's backward twin: the
same frames in reverse order). Each readout is a two-way choice that only frame order can decide, so an
order-blind model scores exactly 50:

- retrieval: each caption's own video against its twin video (captions the twin shares, such as the
  synthetic static captions, are left out: nothing can prefer either video for them);
- multiple choice: the right candidate against the candidate that answers the twin's question.

Keys: `twin` (every readout) and `twin/<question type>`. The rows are read back from the dataset's JSONL
file; other datasets have no twins and get no readout.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import PurePosixPath

import torch

from vl_adapters.tasks.metrics import tie_tolerance
from vl_adapters.train.evaluate import SplitScores


def annotation_rows(dataset) -> list[dict] | None:
    """The JSONL rows behind `dataset`'s samples (one per sample, in order), or None when the dataset
    is not a JSONL file or its rows do not line up with its samples."""
    inner = getattr(dataset, "dataset", dataset)  # a CachedDataset wraps the dataset
    path = getattr(inner, "annotation_file", None)
    if path is None or not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows if len(rows) == len(inner.samples) else None


def _video_id(row: dict) -> str:
    """The row's video id as the JSONL reader makes it: `video_id`, else the path without its suffix."""
    return str(row["video_id"]) if "video_id" in row else PurePosixPath(str(row["video"])).with_suffix("").as_posix()


def two_way(right: torch.Tensor, wrong: torch.Tensor, tolerance: torch.Tensor) -> torch.Tensor:
    """1 where right beats wrong, 0.5 on a tie (within `tolerance`), 0 otherwise."""
    return (right > wrong + tolerance).float() + 0.5 * ((right - wrong).abs() <= tolerance).float()


def twin_metrics(dataset, scores: SplitScores) -> dict[str, float]:
    rows = annotation_rows(dataset)
    if rows is None or not any("twin" in r for r in rows):
        return {}
    picks = _retrieval_pairs(dataset, rows, scores) if scores.task == "retrieval" else _choice_pairs(rows, scores)
    if picks is None:
        return {}
    query, right, wrong = picks
    tolerance = tie_tolerance(scores.scores)[query, 0]
    credit = two_way(scores.scores[query, right], scores.scores[query, wrong], tolerance)
    out = {"twin": 100.0 * credit.mean().item()}
    kinds = [scores.kinds[i] for i in query.tolist()]
    if all(kinds) and len(set(kinds)) > 1:
        for kind in sorted(set(kinds)):
            mask = torch.tensor([k == kind for k in kinds])
            out[f"twin/{kind}"] = 100.0 * credit[mask].mean().item()
    return out


def _retrieval_pairs(dataset, rows: list[dict], scores: SplitScores):
    """(query rows, own video columns, twin video columns) of the captions their twin does not share."""
    texts_of = defaultdict(set)
    for row in rows:
        texts_of[_video_id(row)].add(row["text"].strip())
    video_index = {v: i for i, v in enumerate(dataset.video_ids)}
    column = {int(v): j for j, v in enumerate(scores.videos.tolist())}
    query, right, wrong = [], [], []
    for i, sample in enumerate(scores.samples.tolist()):
        row = rows[sample]
        twin = row.get("twin")
        twin_column = column.get(video_index.get(str(twin), -1))
        if twin_column is None or row["text"].strip() in texts_of[str(twin)]:
            continue
        query.append(i), right.append(int(scores.truth[i])), wrong.append(twin_column)
    return (torch.tensor(query), torch.tensor(right), torch.tensor(wrong)) if query else None


def _choice_pairs(rows: list[dict], scores: SplitScores):
    """(questions, their answer, the candidate answering the twin's same question) where that differs."""
    answer_of = {(_video_id(r), r.get("question")): r["candidates"][r["answer"]]
                 for r in rows if "candidates" in r}
    query, right, wrong = [], [], []
    for i, sample in enumerate(scores.samples.tolist()):
        row = rows[sample]
        theirs = answer_of.get((str(row.get("twin")), row.get("question")))
        mine = row["candidates"][row["answer"]]
        if theirs is None or theirs == mine or theirs not in row["candidates"]:
            continue
        query.append(i), right.append(row["answer"]), wrong.append(row["candidates"].index(theirs))
    return (torch.tensor(query), torch.tensor(right), torch.tensor(wrong)) if query else None
