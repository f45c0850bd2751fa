"""Object-centred spatial contrast (OSC) and predicate-centred temporal contrast (PTC): symmetric InfoNCE
with a learnable temperature and in-batch negatives, on [num_texts, num_videos] structural scores.

OSC scores a caption's object nodes against a video's regions (best region per object, mean over objects).
PTC scores a caption's predicate nodes against a video's temporal intervals in the caption's event order:
the events (predicates grouped by their event time) are matched to intervals whose positions never go
back in time (a monotonic alignment, max-plus dynamic programming over the events), so "A then B" and
"B then A" score differently on the same video."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter

from ...core.contrastive import bounded_scale, two_way_infonce

MASKED = -2.0  # below any cosine: a padded region or interval is never the best one


def node_to_video_scores(nodes: Tensor, node_graph: Tensor, num_texts: int, regions: Tensor,
                         region_mask: Tensor) -> tuple[Tensor, Tensor]:
    """nodes [o, d] of captions node_graph [o]; regions [B, R, d] with region_mask [B, R] ->
    (scores [Nt, B]: per caption, the mean over its nodes of the best region's cosine in each video,
     has_nodes [Nt] bool)."""
    sims = torch.einsum("od,brd->obr", F.normalize(nodes, dim=-1), F.normalize(regions, dim=-1))
    best = sims.masked_fill(~region_mask[None], MASKED).amax(-1)  # [o, B]
    scores = scatter(best, node_graph, dim=0, dim_size=num_texts, reduce="mean")
    count = scatter(torch.ones_like(node_graph), node_graph, dim=0, dim_size=num_texts, reduce="sum")
    return scores, count > 0


def ordered_interval_scores(nodes: Tensor, node_graph: Tensor, node_time: Tensor, num_texts: int,
                            intervals: Tensor, interval_mask: Tensor) -> tuple[Tensor, Tensor]:
    """nodes [p, d] (predicates) of captions node_graph [p] at event ranks node_time [p] (0, 1, ... within
    each caption); intervals [B, W, d] in temporal order with interval_mask [B, W] ->
    (scores [Nt, B], has_nodes [Nt]): the best monotonic alignment of each caption's events to a video's
    intervals (event r+1 at an interval no earlier than event r's), averaged over the caption's events;
    an event's match to an interval is the mean cosine of its predicates."""
    sims = torch.einsum("pd,bwd->pbw", F.normalize(nodes, dim=-1), F.normalize(intervals, dim=-1))
    sims = sims.masked_fill(~interval_mask[None], MASKED)
    events = int(node_time.max()) + 1 if node_time.numel() else 1
    slot = node_graph * events + node_time  # (caption, event) of each predicate
    size = num_texts * events
    per_event = scatter(sims, slot, dim=0, dim_size=size, reduce="mean").view(num_texts, events, *sims.shape[1:])
    present = scatter(torch.ones_like(slot), slot, dim=0, dim_size=size, reduce="sum").view(num_texts, events) > 0
    best = per_event[:, 0]  # [Nt, B, W]: best alignment of events 0..r ending at interval w
    for r in range(1, events):  # events per caption: a handful; the work per step is one [Nt, B, W] tensor
        extended = per_event[:, r] + best.cummax(-1).values
        best = torch.where(present[:, r, None, None], extended, best)
    count = present.sum(1)
    return best.amax(-1) / count.clamp_min(1)[:, None], count > 0


def symmetric_info_nce(scores: Tensor, text_to_video: Tensor, scale: Tensor, valid: Tensor | None = None) -> Tensor:
    """scores [Nt, B], text i's positive is video text_to_video[i]; video b's positives are all its texts.
    Texts with valid False (no nodes) take no part."""
    if valid is not None:
        scores, text_to_video = scores[valid], text_to_video[valid]
    if scores.shape[0] == 0:
        return scores.sum() * 0.0
    return two_way_infonce(scores * scale, F.one_hot(text_to_video, scores.shape[1]).bool())


class StructuralContrast(nn.Module):
    """Projections of text nodes and video regions into a shared space plus a learnable temperature
    (initialised at `temperature`, bounded at 100 like CLIP's logit scale). `ordered` scores with
    ordered_interval_scores (PTC) instead of node_to_video_scores (OSC)."""

    def __init__(self, *, dim: int, temperature: float = 0.07, ordered: bool = False) -> None:
        super().__init__()
        self.text_proj, self.video_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.ordered = ordered

    def scores(self, nodes: Tensor, node_graph: Tensor, num_texts: int, regions: Tensor, region_mask: Tensor,
               node_time: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(scores [Nt, B], has_nodes [Nt]) in the shared space."""
        if self.ordered:
            return ordered_interval_scores(self.text_proj(nodes), node_graph, node_time, num_texts,
                                           self.video_proj(regions), region_mask)
        return node_to_video_scores(self.text_proj(nodes), node_graph, num_texts, self.video_proj(regions), region_mask)

    def loss(self, scores: Tensor, valid: Tensor, text_to_video: Tensor) -> Tensor:
        return symmetric_info_nce(scores, text_to_video, bounded_scale(self.log_inv_temperature), valid)
