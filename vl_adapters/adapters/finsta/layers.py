"""Graph encoders: a graph Transformer with edge features (Dwivedi & Bresson), a recurrent graph
Transformer over frames with a gated memory, and the spatial-temporal Gaussian differential layer (STGD)."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import softmax


class GraphTransformerLayer(MessagePassing):
    """One graph Transformer layer with edge features.

    Per head and edge j -> i: w_ij = (Q h_i * K h_j / sqrt(d)) * E e_ij (a vector); score = clamp(sum w_ij);
    alpha = softmax of the scores over i's incoming edges; h_i' = O_h(concat_heads sum_j alpha_ij V h_j);
    e_ij' = O_e(concat_heads w_ij); then residual + LayerNorm, FFN, residual + LayerNorm on both.
    A node with no incoming edge aggregates zero, so its update depends on itself alone."""

    def __init__(self, *, dim: int, heads: int = 4, dropout: float = 0.0, clamp: float = 5.0) -> None:
        super().__init__(aggr="add", node_dim=0)
        if dim % heads:
            raise ValueError(f"GraphTransformerLayer: dim={dim} must be divisible by heads={heads}")
        self.heads, self.head_dim, self.clamp = heads, dim // heads, clamp
        self.q, self.k, self.v, self.e = (nn.Linear(dim, dim) for _ in range(4))
        self.out_node, self.out_edge = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_node1, self.norm_node2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_edge1, self.norm_edge2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn_node = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ffn_edge = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """h [n, dim], edge_index [2, m] (row 0 source j, row 1 target i), e [m, dim] -> (h', e')."""
        split = lambda t: rearrange(t, "n (h d) -> n h d", h=self.heads)  # noqa: E731
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        w = q[edge_index[1]] * k[edge_index[0]] / math.sqrt(self.head_dim) * split(self.e(e))  # [m, H, d]
        score = w.sum(-1).clamp(-self.clamp, self.clamp)
        alpha = softmax(score, edge_index[1], num_nodes=h.shape[0])  # [m, H]
        agg = self.propagate(edge_index, v=v, alpha=alpha, size=(h.shape[0], h.shape[0]))  # [n, H, d]
        h = self.norm_node1(h + self.dropout(self.out_node(rearrange(agg, "n h d -> n (h d)"))))
        h = self.norm_node2(h + self.dropout(self.ffn_node(h)))
        e = self.norm_edge1(e + self.dropout(self.out_edge(rearrange(w, "m h d -> m (h d)"))))
        e = self.norm_edge2(e + self.dropout(self.ffn_edge(e)))
        return h, e

    def message(self, v_j: Tensor, alpha: Tensor) -> Tensor:
        return v_j * alpha[..., None]


class GraphTransformer(nn.Module):
    """A stack of GraphTransformerLayer over one (batched) graph."""

    def __init__(self, *, dim: int, layers: int, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(GraphTransformerLayer(dim=dim, heads=heads, dropout=dropout) for _ in range(layers))

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.layers:
            h, e = layer(h, edge_index, e)
        return h, e


def linear_scan(gate: Tensor, value: Tensor) -> Tensor:
    """M_t = (1 - z_t) * c_t + z_t * M_{t-1}, M_{-1} = 0, for gate z [B,T,d] in (0,1] and value c [B,T,d],
    without a Python loop over t: M_t = sum_{s<=t} (prod_{s<r<=t} z_r) (1 - z_s) c_s."""
    t = gate.shape[1]
    log_z = gate.clamp_min(1e-6).log().cumsum(1)  # L_t
    decay = log_z[:, :, None] - log_z[:, None, :]  # [B, t, s, d] = L_t - L_s
    causal = torch.ones(t, t, dtype=torch.bool, device=gate.device).tril()
    weight = torch.where(causal[None, :, :, None], decay.clamp_max(0).exp(), torch.zeros_like(decay))
    return torch.einsum("btsd,bsd->btd", weight, (1 - gate) * value)


class RecurrentGraphTransformer(nn.Module):
    """R-GTrm block over a DSG (or HSG) whose nodes sit K per frame: graph Transformer layers over the edges
    (spatial edges within frames, temporal coreference edges to the next frame), then a gated frame memory
    carried across frames, which every node of frame t reads as M_{t-1}.

    Memory (MART-like, made linear so it is a scan instead of a loop over frames): s_t = attention pool of
    frame t's nodes; c_t = tanh(U s_t); z_t = sigmoid(U' s_t); M_t = (1 - z_t) c_t + z_t M_{t-1}; padded
    frames keep the memory (z = 1). Nodes: h_t += W_read M_{t-1}."""

    def __init__(self, *, dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.graph = GraphTransformer(dim=dim, layers=layers, heads=heads, dropout=dropout)
        self.pool_query = nn.Parameter(torch.zeros(dim))
        self.candidate, self.update, self.read = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, *, frames: tuple[int, int, int],
                frame_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h [B*T*K, dim] (row-major b, t, k) -> (h', e', memory [B,T,dim])."""
        b, t, k = frames
        h, e = self.graph(h, edge_index, e)
        dense = rearrange(h, "(b t k) d -> b t k d", b=b, t=t, k=k)
        pool = (dense @ self.pool_query).softmax(-1)  # [B,T,K]
        summary = torch.einsum("btk,btkd->btd", pool, dense)
        gate = torch.sigmoid(self.update(summary)).masked_fill(~frame_mask[..., None], 1.0)
        memory = linear_scan(gate, torch.tanh(self.candidate(summary)))
        previous = torch.cat([torch.zeros_like(memory[:, :1]), memory[:, :-1]], dim=1)
        dense = self.norm(dense + self.read(previous)[:, :, None])
        return rearrange(dense, "b t k d -> (b t k) d"), e, memory


def gaussian_differential(pos: Tensor, predecessor: Tensor, frame_mask: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """pos [B,T,K,2], predecessor [B,T,K] (index of each slot's match in frame t-1) ->
    (pair term G [B,T,K,K] = 1 - exp(-|Delta_ij|^2 / 2 sigma^2), motion m [B,T,K] = mean_j G_ij over j != i),
    where Delta_ij = (p_i^t - p_j^t) - (p_i'^{t-1} - p_j'^{t-1}) with i', j' the predecessors. Both are zero
    at t = 0, after a padded frame, and everywhere in a static video."""
    b, t, k, _ = pos.shape
    prev_pos = torch.cat([pos[:, :1], pos[:, :-1]], dim=1)
    prev = torch.gather(prev_pos, 2, predecessor[..., None].expand(-1, -1, -1, 2))  # [B,T,K,2]
    relative_now = pos[:, :, :, None] - pos[:, :, None]
    relative_before = prev[:, :, :, None] - prev[:, :, None]
    pair = 1 - torch.exp(-(relative_now - relative_before).square().sum(-1) / (2 * sigma**2))
    valid = torch.cat([torch.zeros_like(frame_mask[:, :1]), frame_mask[:, :-1] & frame_mask[:, 1:]], dim=1)
    pair = pair * valid[..., None, None]
    motion = pair.sum(-1) / max(k - 1, 1)
    return pair, motion


class STGDLayer(nn.Module):
    """Spatial-temporal Gaussian differential graph Transformer layer over a frame's complete slot graph.

    attention within frame t: a_ij = softmax_j(q_i . k_j / sqrt(d)) over j != i, reweighted by the Gaussian
    differential pair term G_ij (how much i's position relative to j changed since t-1); plus the motion-gated
    feature differential m_i * W_d(h_i^t - h_i'^{t-1}). Projections have no bias, so the layer is exactly the
    identity on a static video (G = 0, m = 0)."""

    def __init__(self, *, dim: int, heads: int = 4, sigma: float = 0.15) -> None:
        super().__init__()
        self.heads, self.sigma = heads, sigma
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.diff = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, h: Tensor, pos: Tensor, predecessor: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """h [B,T,K,dim] -> (h' [B,T,K,dim], motion [B,T,K])."""
        b, t, k, d = h.shape
        pair, motion = gaussian_differential(pos, predecessor, frame_mask, self.sigma)
        q, key, v = rearrange(self.qkv(h), "b t k (three h e) -> three b t h k e", three=3, h=self.heads)
        logits = torch.einsum("bthie,bthje->bthij", q, key) / math.sqrt(d // self.heads)
        eye = torch.eye(k, dtype=torch.bool, device=h.device)
        attn = logits.masked_fill(eye, float("-inf")).softmax(-1).nan_to_num(0.0) * pair[:, :, None]
        spatial = rearrange(torch.einsum("bthij,bthje->bthie", attn, v), "b t h k e -> b t k (h e)")
        prev_h = torch.cat([h[:, :1], h[:, :-1]], dim=1)
        prev_h = torch.gather(prev_h, 2, predecessor[..., None].expand(-1, -1, -1, d))
        differential = motion[..., None] * self.diff(h - prev_h)
        return h + self.out(spatial + differential), motion
