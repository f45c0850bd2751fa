"""Holistic scene graph (HSG): a caption's TSG joined to a video's DSG by cross-modal coreference edges, for a
list of (caption, video) pairs, batched into one graph and encoded by a graph Transformer.

Cross-modal edges: each text object node is linked, in every real frame of the paired video, to the slot that
matches it best in the object-centred contrast's shared space (`OSC`), when that cosine exceeds a threshold.
Because the slots are tracked (video_graph.track_slots), an object's edges follow one region through time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import GraphTransformer

CROSS, TEXT, VIDEO = 0, 1, 2  # edge types of the union graph


@dataclass
class HolisticSceneGraph:
    """Nodes: every pair's text nodes [0, num_text_nodes), then every pair's T*K video nodes.
    x [n, d]; edge_index [2, m]; edge_attr [m, d] (the source graphs' edge states; cross edges: zero);
    edge_type [m]; cross_similarity [m] (the cosine on cross edges, 0 elsewhere); text_pair [n_text] and
    video_pair [n_video]: the pair of each node; video_node_mask [n_video]: node of a real frame;
    cross_edge_index [2, c]: text object -> slot, in union ids."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    edge_type: Tensor
    cross_similarity: Tensor
    text_pair: Tensor
    video_pair: Tensor
    video_node_mask: Tensor
    cross_edge_index: Tensor

    @property
    def num_text_nodes(self) -> int:
        return self.text_pair.shape[0]


def segments(starts: Tensor, counts: Tensor, picks: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of the consecutive segments [starts[g], starts[g] + counts[g]) for g in picks, concatenated:
    (row ids [n], index into picks of each row [n])."""
    sizes = counts[picks]
    owner = torch.repeat_interleave(torch.arange(picks.shape[0], device=picks.device), sizes)
    first = torch.cumsum(sizes, 0) - sizes
    return starts[picks][owner] + torch.arange(owner.shape[0], device=picks.device) - first[owner], owner


def subgraphs(node_graph: Tensor, edge_index: Tensor, num_graphs: int, picks: Tensor
              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Copies of graphs `picks` (with repeats) out of a batched graph whose nodes are sorted by graph
    (node_graph [n]): (node ids [n'], pick of each node [n'], edge ids [m'], edge_index [2, m'] renumbered to
    positions in the node ids)."""
    node_count = torch.bincount(node_graph, minlength=num_graphs)
    node_start = torch.cumsum(node_count, 0) - node_count
    nodes, node_pick = segments(node_start, node_count, picks)
    edge_graph = node_graph[edge_index[0]]
    order = torch.argsort(edge_graph, stable=True)
    edge_count = torch.bincount(edge_graph, minlength=num_graphs)
    positions, edge_pick = segments(torch.cumsum(edge_count, 0) - edge_count, edge_count, picks)
    edges = order[positions]
    new_start = torch.cumsum(node_count[picks], 0) - node_count[picks]  # where each copy begins
    shift = (new_start - node_start[picks])[edge_pick]
    return nodes, node_pick, edges, edge_index[:, edges] + shift


def build_holistic(text_nodes: Tensor, text_graph: Tensor, text_edge_index: Tensor, text_edge_attr: Tensor,
                   text_objects: Tensor, video_nodes: Tensor, video_edge_index: Tensor, video_edge_attr: Tensor,
                   frame_mask: Tensor, object_key: Tensor, slot_key: Tensor, pairs: Tensor,
                   threshold: float, num_texts: int) -> HolisticSceneGraph:
    """One HSG per (caption, video) pair.

    text_nodes [n_t, d] of captions text_graph [n_t] (sorted), with edges text_edge_index / text_edge_attr;
    text_objects [n_t] bool: object nodes; video_nodes [B,T,K,d] with the DSG's edges over (b, t, k) ids;
    frame_mask [B,T]; object_key [n_t, d'] and slot_key [B,T,K,d']: the space in which text objects and
    slots are matched for cross edges; pairs [P, 2] (caption, video); num_texts: captions in text_graph."""
    b, t, k, d = video_nodes.shape
    captions, videos = pairs[:, 0], pairs[:, 1]
    tnodes, text_pair, tedges, tedge_index = subgraphs(text_graph, text_edge_index, num_texts, captions)
    video_graph = torch.arange(b, device=video_nodes.device).repeat_interleave(t * k)
    vnodes, video_pair, vedges, vedge_index = subgraphs(video_graph, video_edge_index, b, videos)
    n_text = tnodes.shape[0]
    # cross edges: each object of a pair's caption -> its best slot in every real frame of the pair's video
    rows = text_objects[tnodes].nonzero(as_tuple=True)[0]  # object nodes, as positions in the text part
    pair = text_pair[rows]
    sims = torch.einsum("od,otkd->otk", F.normalize(object_key[tnodes[rows]], dim=-1),
                        F.normalize(slot_key[videos[pair]], dim=-1))  # [O, T, K]
    best_sim, best_slot = sims.max(-1)
    keep = frame_mask[videos[pair]] & (best_sim > threshold)  # [O, T]
    obj, frame = keep.nonzero(as_tuple=True)
    slot_node = n_text + pair[obj] * t * k + frame * k + best_slot[obj, frame]
    cross = torch.stack([rows[obj], slot_node])
    similarity = best_sim[obj, frame]
    edge_index = torch.cat([cross, cross.flip(0), tedge_index, vedge_index + n_text], dim=1)
    n_cross = cross.shape[1]
    edge_type = torch.cat([torch.full((2 * n_cross,), CROSS, device=edge_index.device),
                           torch.full((tedges.shape[0],), TEXT, device=edge_index.device),
                           torch.full((vedges.shape[0],), VIDEO, device=edge_index.device)])
    edge_attr = torch.cat([video_nodes.new_zeros(2 * n_cross, d), text_edge_attr[tedges], video_edge_attr[vedges]])
    cross_similarity = torch.cat([similarity, similarity, similarity.new_zeros(tedges.shape[0] + vedges.shape[0])])
    x = torch.cat([text_nodes[tnodes], video_nodes.reshape(b * t * k, d)[vnodes]])
    video_node_mask = frame_mask[:, :, None].expand(b, t, k).reshape(-1)[vnodes]
    return HolisticSceneGraph(x=x, edge_index=edge_index, edge_attr=edge_attr, edge_type=edge_type,
                              cross_similarity=cross_similarity, text_pair=text_pair, video_pair=video_pair,
                              video_node_mask=video_node_mask, cross_edge_index=cross)


class HolisticEncoder(nn.Module):
    """Graph Transformer over the HSG. Edge features: the source graph's edge state (text, video) plus an
    embedding of the edge type, and on cross-modal edges a projection of the match cosine."""

    def __init__(self, *, dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.edge_type_embedding = nn.Embedding(3, dim)
        self.similarity_proj = nn.Linear(1, dim)
        self.encoder = GraphTransformer(dim=dim, layers=layers, heads=heads, dropout=dropout, last_edges=False)

    def forward(self, graph: HolisticSceneGraph) -> tuple[Tensor, Tensor]:
        """-> (text node states [n_text, d], video node states [n_video, d])."""
        cross = (graph.edge_type == CROSS)[:, None]
        e = graph.edge_attr + self.edge_type_embedding(graph.edge_type) + cross * self.similarity_proj(
            graph.cross_similarity[:, None])
        h, _ = self.encoder(graph.x, graph.edge_index, e)
        return h[: graph.num_text_nodes], h[graph.num_text_nodes:]
