"""Holistic scene graph (HSG): a caption's TSG joined to a video's DSG by cross-modal coreference edges, for a
list of (caption, video) pairs, batched into one graph and encoded by a graph Transformer.

Cross-modal edges: each text object node is linked, in every real frame of the paired video, to the slot that
matches it best in the object-centred contrast's shared space (`OSC`), when that cosine exceeds a threshold.
Because the slots are tracked (video_graph.track_slots), an object's edges follow one region through time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .layers import GraphTransformer

CROSS, TEXT, VIDEO = 0, 1, 2  # edge types of the union graph


@dataclass
class HolisticSceneGraph:
    """The HSGs of a list of (caption, video) pairs, factored: every caption's TSG and every video's DSG are held
    once (the base graph), and each pair holds copies of its caption's and its video's nodes, joined by its
    cross-modal edges. A video's DSG sits in several pairs (its caption's, and as a hard negative), so most of
    the union graph is copies; HolisticEncoder projects and attends over the base graph once and computes
    per copy only what the cross edges change.

    Base: x [U, d] (every caption's TSG nodes, then every video's B*T*K DSG nodes), edge_index [2, m] over base
    ids with edge_attr [m, d] (the source graphs' edge states) and edge_type [m] (TEXT or VIDEO).
    Copies, the pairs' text copies first, then their video copies: node_source [n] (the base node of each);
    text_pair [n_text] and video_pair [n_video] (the pair of each); video_node_mask [n_video] (copy of a real
    frame's node); cross_edge_index [2, c] (text object copy -> slot copy) with cross_similarity [c] (the
    cosine); copy_edges [m'] (base edge of each copy of an edge) with copy_edge_index [2, m'] (in copy ids),
    which only an encoder's second layer reads."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    edge_type: Tensor
    node_source: Tensor
    text_pair: Tensor
    video_pair: Tensor
    video_node_mask: Tensor
    cross_edge_index: Tensor
    cross_similarity: Tensor
    copy_edges: Tensor
    copy_edge_index: Tensor

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
    # every caption object against every slot in one matmul, then each pair's rows: cheaper than gathering a
    # [O, T, K, d'] copy of its video's slot keys for every object copy
    objects = text_objects.nonzero().squeeze(1)
    object_rank = torch.cumsum(text_objects.long(), 0) - 1  # base node -> its row among the objects
    all_sims = F.normalize(object_key[objects], dim=-1) @ rearrange(F.normalize(slot_key, dim=-1), "b t k d -> d (b t k)")
    sims = rearrange(all_sims, "o (b t k) -> o b t k", b=b, t=t)[object_rank[tnodes[rows]], videos[pair]]  # [O, T, K]
    best_sim, best_slot = sims.max(-1)
    keep = frame_mask[videos[pair]] & (best_sim > threshold)  # [O, T]
    obj, frame = keep.nonzero(as_tuple=True)
    slot_node = n_text + pair[obj] * t * k + frame * k + best_slot[obj, frame]
    base_text, base_text_edges = text_nodes.shape[0], text_edge_index.shape[1]
    device = video_nodes.device
    return HolisticSceneGraph(
        x=torch.cat([text_nodes, video_nodes.reshape(b * t * k, d)]),
        edge_index=torch.cat([text_edge_index, video_edge_index + base_text], dim=1),
        edge_attr=torch.cat([text_edge_attr, video_edge_attr]),
        edge_type=torch.cat([torch.full((base_text_edges,), TEXT, device=device),
                             torch.full((video_edge_index.shape[1],), VIDEO, device=device)]),
        node_source=torch.cat([tnodes, vnodes + base_text]), text_pair=text_pair, video_pair=video_pair,
        video_node_mask=frame_mask[:, :, None].expand(b, t, k).reshape(-1)[vnodes],
        cross_edge_index=torch.stack([rows[obj], slot_node]), cross_similarity=best_sim[obj, frame],
        copy_edges=torch.cat([tedges, vedges + base_text_edges]),
        copy_edge_index=torch.cat([tedge_index, vedge_index + n_text], dim=1))


class HolisticEncoder(nn.Module):
    """Graph Transformer over the HSG. Edge features: the source graph's edge state (text, video) plus an
    embedding of the edge type, and on cross-modal edges a projection of the match cosine."""

    def __init__(self, *, dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.edge_type_embedding = nn.Embedding(3, dim)
        self.similarity_proj = nn.Linear(1, dim)
        self.encoder = GraphTransformer(dim=dim, layers=layers, heads=heads, dropout=dropout, last_edges=False)

    def forward(self, graph: HolisticSceneGraph) -> tuple[Tensor, Tensor]:
        """-> (text copies' states [n_text, d], video copies' states [n_video, d]). The first layer runs on the
        factored graph (GraphTransformerLayer.forward_copies); later ones, if any, on the copies' union graph."""
        cross = torch.cat([graph.cross_edge_index, graph.cross_edge_index.flip(0)], dim=1)
        cross_e = self.edge_type_embedding.weight[CROSS] + self.similarity_proj(graph.cross_similarity.repeat(2)[:, None])
        e = graph.edge_attr + self.edge_type_embedding(graph.edge_type)
        first, *rest = self.encoder.layers
        h, e, cross_e = first.forward_copies(graph.x, graph.edge_index, e, graph.node_source, cross, cross_e)
        if rest:
            edge_index = torch.cat([cross, graph.copy_edge_index], dim=1)
            e = torch.cat([cross_e, e[graph.copy_edges]])
            for layer in rest:
                h, e = layer(h, edge_index, e)
        return h[: graph.num_text_nodes], h[graph.num_text_nodes:]
