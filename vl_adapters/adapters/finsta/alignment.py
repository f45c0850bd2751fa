"""Object-centred spatial contrast (OSC) and predicate-centred temporal contrast (PTC): symmetric InfoNCE
with a learnable temperature and in-batch negatives, on [num_texts, num_videos] structural scores."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter


def node_to_video_scores(nodes: Tensor, node_graph: Tensor, num_texts: int, regions: Tensor,
                         region_mask: Tensor) -> tuple[Tensor, Tensor]:
    """nodes [o, d] of captions node_graph [o]; regions [B, R, d] with region_mask [B, R] ->
    (scores [Nt, B]: per caption, the mean over its nodes of the best region's cosine in each video,
     has_nodes [Nt] bool)."""
    sims = torch.einsum("od,brd->obr", F.normalize(nodes, dim=-1), F.normalize(regions, dim=-1))
    best = sims.masked_fill(~region_mask[None], -2.0).amax(-1)  # [o, B]
    scores = scatter(best, node_graph, dim=0, dim_size=num_texts, reduce="mean")
    count = scatter(torch.ones_like(node_graph), node_graph, dim=0, dim_size=num_texts, reduce="sum")
    return scores, count > 0


def symmetric_info_nce(scores: Tensor, text_to_video: Tensor, scale: Tensor, valid: Tensor | None = None) -> Tensor:
    """scores [Nt, B], text i's positive is video text_to_video[i]; video b's positives are all its texts.
    Texts with valid False (no nodes) take no part."""
    if valid is not None:
        scores, text_to_video = scores[valid], text_to_video[valid]
    if scores.shape[0] == 0:
        return scores.sum() * 0.0
    logits = scores * scale
    text_to_video_loss = F.cross_entropy(logits, text_to_video)
    positive = F.one_hot(text_to_video, logits.shape[1]).bool()  # [Nt, B]
    column = logits.t()  # [B, Nt]
    has_text = positive.any(0)
    log_pos = column.masked_fill(~positive.t(), float("-inf")).logsumexp(-1)
    video_to_text_loss = (column.logsumexp(-1) - log_pos)[has_text].mean()
    return (text_to_video_loss + video_to_text_loss) / 2


class StructuralContrast(nn.Module):
    """Projections of text nodes and video regions into a shared space plus a learnable temperature
    (initialised at `temperature`, bounded at 100 like CLIP's logit scale)."""

    def __init__(self, *, dim: int, temperature: float = 0.07) -> None:
        super().__init__()
        self.text_proj, self.video_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, nodes: Tensor, node_graph: Tensor, num_texts: int, regions: Tensor, region_mask: Tensor,
                text_to_video: Tensor) -> Tensor:
        scores, valid = node_to_video_scores(self.text_proj(nodes), node_graph, num_texts,
                                             self.video_proj(regions), region_mask)
        scale = self.log_inv_temperature.exp().clamp(max=100.0)
        return symmetric_info_nce(scores, text_to_video, scale, valid)
