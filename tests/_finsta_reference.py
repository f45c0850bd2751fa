"""Finsta's holistic-graph encoder as it ran before the HSG was factored (every pair's copies materialised),
kept plainly as the reference the factored encoder must match."""

from __future__ import annotations

import torch
from torch_geometric.utils import scatter, softmax

from vl_adapters.adapters.finsta.holistic import CROSS


def reference_layer(layer, h, edge_index, e):
    """GraphTransformerLayer as written before the HSG was factored: torch_geometric's softmax over each node's
    incoming edges of the materialised graph."""
    split = lambda t: t.view(t.shape[0], layer.heads, layer.head_dim)  # noqa: E731
    src, dst = edge_index
    q, k, v = split(layer.q(h)), split(layer.k(h)), split(layer.v(h))
    w = q[dst] * k[src] / layer.head_dim ** 0.5 * split(layer.e(e))
    alpha = softmax(w.sum(-1).clamp(-layer.clamp, layer.clamp), dst, num_nodes=h.shape[0])
    agg = scatter(v[src] * alpha[..., None], dst, dim=0, dim_size=h.shape[0], reduce="sum").flatten(1)
    h = layer.norm_node1(h + layer.out_node(agg))
    h = layer.norm_node2(h + layer.ffn_node(h))
    if layer.edge_branch is not None:
        branch = layer.edge_branch
        e = branch["norm1"](e + branch["out"](w.flatten(1)))
        e = branch["norm2"](e + branch["ffn"](e))
    return h, e


def reference_holistic_encoder(encoder, graph):
    """The HSG encoder on the union graph of every pair's copies, as built before (one copy of a caption's
    and of a video's nodes and edges per pair, cross edges both ways first)."""
    cross, similarity = graph.cross_edge_index, graph.cross_similarity
    c, d = cross.shape[1], graph.x.shape[1]
    x = graph.x[graph.node_source]
    edge_index = torch.cat([cross, cross.flip(0), graph.copy_edge_index], dim=1)
    edge_attr = torch.cat([x.new_zeros(2 * c, d), graph.edge_attr[graph.copy_edges]])
    edge_type = torch.cat([torch.full((2 * c,), CROSS), graph.edge_type[graph.copy_edges]])
    sims = torch.cat([similarity, similarity, similarity.new_zeros(graph.copy_edges.shape[0])])
    is_cross = (edge_type == CROSS)[:, None]
    e = edge_attr + encoder.edge_type_embedding(edge_type) + is_cross * encoder.similarity_proj(sims[:, None])
    h = x
    for layer in encoder.encoder.layers:
        h, e = reference_layer(layer, h, edge_index, e)
    return h[: graph.num_text_nodes], h[graph.num_text_nodes:]

