"""`vl-adapters search`: which videos of a folder match a text query, by a trained model.

The folder is indexed once: its videos go through the frozen backbone into a feature cache
(data/cache.py, fingerprinted: backbone weights, sampler, frames, transform), kept under the index
directory and keyed by the folder, those settings, the list of files (name, size, modification time)
and, for models with backbone adapters (whose backbone output the index then holds), their weights. A
later search with the same model family on the unchanged folder reads the index and decodes nothing;
a changed folder is indexed again and the older index of that folder removed. Queries go through the
text tower and the adapters; a model with cross adapters re-ranks each query's top videos jointly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from . import add_model_arguments, autocast, frame_settings, load_model

EXAMPLES = """\
examples:
  vl-adapters search --model runs/msrvtt --videos ~/videos "a dog jumps into a pool"
  vl-adapters search --model user/name --videos ~/videos "a man cooks" "a cat sleeps" --top-k 10
  vl-adapters search --model runs/msrvtt --videos ~/videos "a red car" --json

The first search of a folder indexes it (every video through the frozen backbone, once); later ones
read the index (under --index) and decode nothing until the folder's files change. Unreadable videos
are skipped and listed. See docs/sharing.md.
"""

INDEX_CHUNK = 256  # cached videos per adapter call when scoring (bounds the fp32 copies in memory)


class Hit(NamedTuple):
    video: Path
    score: float


@dataclass
class SearchIndex:
    folder: Path
    directory: Path  # the feature cache
    video_ids: list[str]  # readable videos, in cache order
    bad_videos: dict[str, str]  # video id -> why it could not be read
    reused: bool  # True when nothing was decoded to build it


def default_index_root() -> Path:
    """$XDG_CACHE_HOME/vl-adapters/search (~/.cache/vl-adapters/search)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vl-adapters" / "search"


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _backbone_adapter_digest(model) -> str:
    """A hash of the backbone adapters' weights (their output is what the index then holds)."""
    digest = hashlib.sha256()
    for adapter in model.backbone_adapters:
        for name, tensor in sorted(adapter.state_dict().items()):
            digest.update(f"{adapter.name}.{name}".encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_index(model, folder: str | Path, *, index_root: str | Path | None = None, num_frames: int | None = None,
                sampler: str | None = None, batch_size: int = 16, num_workers: int = 0,
                progress: bool | None = None) -> SearchIndex:
    """Index the videos under `folder` for `model` (or find the index built before: see the module's doc)."""
    from ..data.cache import FeatureCache, StaleCacheError, cache_fingerprint, extract_features
    from ..data.folder import video_folder

    num_frames, sampler = frame_settings(model, num_frames, sampler)
    model.eval()  # backbone adapters (token masking) behave as at test time
    backbone = model.backbone
    videos = video_folder(folder, num_frames=num_frames, sampler=sampler, size=backbone.dims.image_size)
    fingerprint = cache_fingerprint(backbone, sampler=sampler, num_frames=num_frames, dataset=videos)
    listing = [(vid, *_stat(videos.video_path(i))) for i, vid in enumerate(videos.video_ids)]
    settings = _digest({**fingerprint, "backbone_adapters": _backbone_adapter_digest(model)})
    home = Path(index_root or default_index_root()) / _digest(str(videos.root.resolve()))
    directory = home / f"{settings}-{_digest(listing)}"
    try:
        cache = FeatureCache(directory)
        reused = True
    except (FileNotFoundError, StaleCacheError):  # not built yet, or a build a crash interrupted: (re)sume it
        with torch.no_grad():
            extract_features(videos, backbone, directory, sampler=sampler, num_frames=num_frames,
                             batch_size=batch_size, num_workers=num_workers, progress=progress)
        cache, reused = FeatureCache(directory), False
        for older in home.glob(f"{settings}-*"):  # this folder's earlier contents, for the same settings
            if older != directory:
                shutil.rmtree(older, ignore_errors=True)
    cache.check(fingerprint)
    good = [vid for vid in cache.index["video_ids"] if vid not in cache.bad_videos]
    return SearchIndex(folder=videos.root, directory=directory, video_ids=good, bad_videos=dict(cache.bad_videos),
                       reused=reused)


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


@torch.no_grad()
def search(model, index: SearchIndex, queries: list[str], *, top_k: int = 5,
           rerank_k: int | None = None) -> list[list[Hit]]:
    """The `top_k` best videos of the index for each query, best first, with their scores: the dual
    encoder's cosine similarity, or, with cross adapters, their joint score for the re-ranked videos
    (each query's top max(rerank_k, top_k) by cosine; rerank_k defaults to the task's)."""
    from ..core.features import concat_video_features
    from ..data.cache import FeatureCache

    if not queries:
        raise ValueError("search: give at least one query")
    if not index.video_ids:
        return [[] for _ in queries]
    model.eval()
    cache = FeatureCache(index.directory)
    rows = [cache.row(vid) for vid in index.video_ids]
    with autocast(model):
        parts = []
        for start in range(0, len(rows), INDEX_CHUNK):
            features = cache.features(rows[start:start + INDEX_CHUNK])
            if model.uses_backbone_adapters:  # the index holds this model's adapted backbone output
                video = model.adapt_video(features.to(model.backbone.device).float())
            else:
                video = model.encode_video(features)
            parts.append(video)
        video = concat_video_features(parts)
        text = model.encode_text(list(queries))
        if model.cross_adapters:
            default = getattr(model.task.config, "rerank_k", 50)
            rerank_k = max(rerank_k if rerank_k is not None else default, top_k)
        scores = model.score_features(text, video, rerank_k=rerank_k).float().cpu()
    best = scores.topk(min(top_k, scores.shape[1]), dim=1)
    return [[Hit(index.folder / index.video_ids[j], float(s)) for s, j in zip(values.tolist(), columns.tolist(),
                                                                              strict=True)]
            for values, columns in zip(best.values, best.indices, strict=True)]


# ---- the command ----------------------------------------------------------------------------------
def register(sub) -> None:
    import argparse

    parser = sub.add_parser("search", help="rank the videos of a folder for text queries with a trained model",
                            description="Rank the videos of a folder for each text query (top-k with scores).",
                            epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queries", nargs="+", metavar="QUERY", help="text queries, e.g. \"a dog jumps into a pool\"")
    parser.add_argument("--videos", required=True, metavar="FOLDER", help="folder of video files (subfolders too)")
    add_model_arguments(parser)
    parser.add_argument("--top-k", type=int, default=5, help="videos shown per query (default 5)")
    parser.add_argument("--rerank-k", type=int, help="cross adapters re-rank each query's top-k (default: the task's)")
    parser.add_argument("--index", metavar="DIR", help=f"where indexes are kept (default {default_index_root()})")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per backbone call while indexing")
    parser.add_argument("--num-workers", type=int, default=4, help="processes decoding videos while indexing")
    parser.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    from ..core.config import ConfigError

    if args.top_k < 1:
        raise ConfigError(f"--top-k: expected a positive number of videos, got {args.top_k}")
    model = load_model(args)
    index = build_index(model, args.videos, index_root=args.index, num_frames=args.num_frames,
                        batch_size=args.batch_size, num_workers=args.num_workers)
    results = search(model, index, args.queries, top_k=args.top_k, rerank_k=args.rerank_k)
    how = "reused, no video decoded" if index.reused else "built"
    print(f"vl-adapters search: {len(index.video_ids)} videos of {index.folder} indexed (index {how}: "
          f"{index.directory})", file=sys.stderr)
    if index.bad_videos:
        names = sorted(index.bad_videos)
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        print(f"vl-adapters search: skipped {len(names)} unreadable video(s): {shown}", file=sys.stderr)
    if args.json:
        print(json.dumps({
            "model": str(args.model), "videos": str(index.folder), "index": str(index.directory),
            "index_reused": index.reused, "indexed": len(index.video_ids),
            "skipped": [{"video": str(index.folder / vid), "reason": reason}
                        for vid, reason in sorted(index.bad_videos.items())],
            "results": [{"query": query, "top": [{"rank": rank, "video": str(hit.video), "score": hit.score}
                                                 for rank, hit in enumerate(hits, 1)]}
                        for query, hits in zip(args.queries, results, strict=True)],
        }, indent=2))
        return 0
    for query, hits in zip(args.queries, results, strict=True):
        print(json.dumps(query))
        for rank, hit in enumerate(hits, 1):
            print(f"  {rank:>3}  {hit.score:8.4f}  {hit.video}")
    return 0
