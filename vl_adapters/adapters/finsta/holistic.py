"""Holistic scene graph (HSG): each TSG joined to its paired video's DSG by cross-modal coreference edges
between text object nodes and slots whose cosine similarity exceeds a threshold."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import GraphTransformer

CROSS_EDGE_TYPE = 0  # edge types of the union graph: 0 cross-modal, 1 text, 2 video


@dataclass
class HolisticSceneGraph:
    """Nodes: the text nodes [0, n_text) then the video nodes [n_text, n_text + n_video).
    x [n, d]; edge_index [2, m]; edge_type [m]; cross_edge_index [2, c] (text object -> slot, in union ids);
    cross_similarity [c]."""

    x: Tensor
    edge_index: Tensor
    edge_type: Tensor
    cross_edge_index: Tensor
    cross_similarity: Tensor
    num_text_nodes: int


def cross_modal_edges(object_emb: Tensor, object_graph: Tensor, slot_emb: Tensor, text_to_video: Tensor,
                      threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """object_emb [o, d] (text object nodes), object_graph [o] (their caption), slot_emb [B, S, d] (each video's
    slots), text_to_video [Nt] -> (object index [c], flat slot index b*S + s [c], cosine [c]) for every pair
    of an object and a slot of its caption's video with cosine > threshold."""
    video = text_to_video[object_graph]  # [o]
    sims = torch.einsum("od,osd->os", F.normalize(object_emb, dim=-1), F.normalize(slot_emb[video], dim=-1))
    obj, slot = (sims > threshold).nonzero(as_tuple=True)
    return obj, video[obj] * slot_emb.shape[1] + slot, sims[obj, slot]


def build_holistic(text_x: Tensor, text_edge_index: Tensor, object_nodes: Tensor, object_graph: Tensor,
                   video_x: Tensor, video_edge_index: Tensor, slots_per_video: int, text_to_video: Tensor,
                   threshold: float) -> HolisticSceneGraph:
    """text_x [n_t, d] with TSG edges; object_nodes [o] (indices into text_x) of captions object_graph [o];
    video_x [B*S, d] with DSG edges; cross edges in both directions."""
    n_text = text_x.shape[0]
    slot_emb = video_x.view(-1, slots_per_video, video_x.shape[-1])
    obj, slot, sim = cross_modal_edges(text_x[object_nodes], object_graph, slot_emb, text_to_video, threshold)
    cross = torch.stack([object_nodes[obj], slot + n_text])
    edge_index = torch.cat([cross, cross.flip(0), text_edge_index, video_edge_index + n_text], dim=1)
    edge_type = torch.cat([
        torch.full((2 * cross.shape[1],), CROSS_EDGE_TYPE, dtype=torch.long, device=text_x.device),
        torch.full((text_edge_index.shape[1],), 1, dtype=torch.long, device=text_x.device),
        torch.full((video_edge_index.shape[1],), 2, dtype=torch.long, device=text_x.device),
    ])
    return HolisticSceneGraph(torch.cat([text_x, video_x]), edge_index, edge_type, cross, sim, n_text)


class HolisticEncoder(nn.Module):
    """Graph Transformer over the HSG with an embedding per edge type (cross-modal, text, video)."""

    def __init__(self, *, dim: int, layers: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.edge_embedding = nn.Embedding(3, dim)
        self.encoder = GraphTransformer(dim=dim, layers=layers, heads=heads)

    def forward(self, graph: HolisticSceneGraph) -> tuple[Tensor, Tensor]:
        """-> (text node states [n_text, d], video node states [n_video, d])."""
        h, _ = self.encoder(graph.x, graph.edge_index, self.edge_embedding(graph.edge_type))
        return h[: graph.num_text_nodes], h[graph.num_text_nodes:]
