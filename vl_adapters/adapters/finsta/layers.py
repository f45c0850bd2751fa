"""Graph encoders: a graph Transformer with edge features (Dwivedi & Bresson), a recurrent graph
Transformer over frames with a gated memory, and the spatial-temporal Gaussian differential layer (STGD)."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch_geometric.utils import scatter


class GraphTransformerLayer(nn.Module):
    """One graph Transformer layer with edge features.

    Per head and edge j -> i: w_ij = (Q h_i * K h_j / sqrt(d)) * E e_ij (a vector); score = clamp(sum w_ij);
    alpha = softmax of the scores over i's incoming edges; h_i' = O_h(concat_heads sum_j alpha_ij V h_j);
    e_ij' = O_e(concat_heads w_ij); then residual + LayerNorm, FFN, residual + LayerNorm on both.
    A node with no incoming edge aggregates zero, so its update depends on itself alone. With
    update_edges=False (the last layer of a stack whose edge states nothing reads) e is returned as given
    and the edge branch has no parameters."""

    def __init__(self, *, dim: int, heads: int = 4, dropout: float = 0.0, clamp: float = 5.0,
                 update_edges: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"GraphTransformerLayer: dim={dim} must be divisible by heads={heads}")
        self.heads, self.head_dim, self.clamp = heads, dim // heads, clamp
        self.q, self.k, self.v, self.e = (nn.Linear(dim, dim) for _ in range(4))
        self.out_node = nn.Linear(dim, dim)
        self.norm_node1, self.norm_node2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn_node = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.edge_branch = nn.ModuleDict(dict(
            out=nn.Linear(dim, dim), norm1=nn.LayerNorm(dim), norm2=nn.LayerNorm(dim),
            ffn=nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)))) if update_edges else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """h [n, dim], edge_index [2, m] (row 0 source j, row 1 target i), e [m, dim] -> (h', e')."""
        q, k, v = self._heads(self.q(h)), self._heads(self.k(h)), self._heads(self.v(h))
        w, mass, total = self._attend(q, k, v, edge_index, edge_index[1], e, h.shape[0])
        return self._update_nodes(h, mass, total), self._update_edges(e, w)

    def forward_copies(self, h: Tensor, edge_index: Tensor, e: Tensor, source: Tensor, cross_index: Tensor,
                       cross_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The layer on a graph made of copies of a base graph plus edges between the copies, without
        materialising the copies' edges: exactly forward() on the graph whose node c is a copy of base node
        source[c] holding a copy of every base edge into source[c], plus cross edges (cross_index [2, c'] in
        copy ids, states cross_e [c', dim]).

        Base nodes and edges are projected and attended once; a copy reached by no cross edge is its base
        node's result, and a reached copy adds its cross edges' weights to its base node's softmax sums.
        h [U, dim], edge_index [2, m] and e [m, dim] over base ids, source [n] -> (h' [n, dim], base edges'
        e' [m, dim], cross edges' e' [c', dim])."""
        q, k, v = self._heads(self.q(h)), self._heads(self.k(h)), self._heads(self.v(h))
        w, mass, total = self._attend(q, k, v, edge_index, edge_index[1], e, h.shape[0])
        n = source.shape[0]  # the cross edges join the copies of base nodes source[cross_index]
        cross_w, cross_mass, cross_total = self._attend(q, k, v, source[cross_index], cross_index[1], cross_e, n)
        reached = torch.zeros(n, dtype=torch.bool, device=h.device).index_fill_(0, cross_index[1], True)
        reached = reached.nonzero().squeeze(1)
        base = source[reached]
        out = self._update_nodes(h, mass, total)[source]
        copies = self._update_nodes(h[base], mass[base] + cross_mass[reached], total[base] + cross_total[reached])
        out = out.index_copy(0, reached, copies)
        return out, self._update_edges(e, w), self._update_edges(cross_e, cross_w)

    def _heads(self, x: Tensor) -> Tensor:
        return rearrange(x, "n (h d) -> n h d", h=self.heads)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, ends: Tensor, into: Tensor, e: Tensor, size: int
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Edge weights w [m, H, d] of the edges ends [2, m] (rows of q/k/v: source, target) and the softmax
        sums of each of `size` targets over the edges into it (into [m]): mass [size, H] = sum exp(score),
        total [size, H, d] = sum exp(score) v_source. Scores are clamped to +-clamp, so exp needs no max
        shift, and the sums of disjoint edge sets add up (forward_copies)."""
        w = q[ends[1]] * k[ends[0]] / math.sqrt(self.head_dim) * self._heads(self.e(e))
        weight = w.sum(-1).clamp(-self.clamp, self.clamp).exp()  # [m, H]
        mass = scatter(weight, into, dim=0, dim_size=size, reduce="sum")
        total = scatter(weight[..., None] * v[ends[0]], into, dim=0, dim_size=size, reduce="sum")
        return w, mass, total

    def _update_nodes(self, h: Tensor, mass: Tensor, total: Tensor) -> Tensor:
        # a node with an incoming edge has mass >= exp(-clamp); one without has total 0 and aggregates zero
        agg = total / mass.clamp_min(math.exp(-self.clamp))[..., None]
        h = self.norm_node1(h + self.dropout(self.out_node(rearrange(agg, "n h d -> n (h d)"))))
        return self.norm_node2(h + self.dropout(self.ffn_node(h)))

    def _update_edges(self, e: Tensor, w: Tensor) -> Tensor:
        if self.edge_branch is None:
            return e
        edge = self.edge_branch
        e = edge["norm1"](e + self.dropout(edge["out"](rearrange(w, "m h d -> m (h d)"))))
        return edge["norm2"](e + self.dropout(edge["ffn"](e)))


class GraphTransformer(nn.Module):
    """A stack of GraphTransformerLayer over one (batched) graph; `last_edges=False` when nothing reads the
    edge states of the last layer."""

    def __init__(self, *, dim: int, layers: int, heads: int = 4, dropout: float = 0.0, last_edges: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            GraphTransformerLayer(dim=dim, heads=heads, dropout=dropout, update_edges=last_edges or i < layers - 1)
            for i in range(layers))

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.layers:
            h, e = layer(h, edge_index, e)
        return h, e


class FrameMemory(nn.Module):
    """MART's gated memory carried across frames: per frame t, with the nodes H_t [B,K,d] and the memory
    M_{t-1} [B,d], s_t = Attn(M_{t-1}, H_t, H_t); c_t = tanh(W_c M_{t-1} + U_c s_t); z_t = sigmoid(W_z M_{t-1}
    + U_z s_t); M_t = (1 - z_t) c_t + z_t M_{t-1} (padded frames keep M_{t-1}). M_{-1} = 0.

    Why a loop over frames: the update is non-linear in M_{t-1} (it sits inside tanh and sigmoid), so unlike
    a linear gated recurrence it has no associative form and no parallel scan. What can be vectorised is: the
    keys and values of all frames are computed at once outside the loop; each step is two [B,d]x[d,d]
    matmuls, a softmax over K nodes and elementwise ops (benchmarks/finsta_cost.py measures the whole)."""

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.query, self.key_value = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim)
        self.gates = nn.Linear(2 * dim, 2 * dim)  # [M_{t-1}; s_t] -> (candidate, update) pre-activations

    def step(self, memory: Tensor, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One frame: memory [B,d], keys/values [B,K,d] -> (candidate c_t, gate z_t, M_t), each [B,d]."""
        logits = torch.einsum("bd,bkd->bk", self.query(memory), keys) / math.sqrt(keys.shape[-1])
        summary = torch.einsum("bk,bkd->bd", logits.softmax(-1), values)
        candidate, update = self.gates(torch.cat([memory, summary], dim=-1)).chunk(2, dim=-1)
        candidate, gate = torch.tanh(candidate), torch.sigmoid(update)
        return candidate, gate, (1 - gate) * candidate + gate * memory

    def forward(self, nodes: Tensor, frame_mask: Tensor) -> Tensor:
        """nodes [B,T,K,d] -> memory after each frame [B,T,d]."""
        keys, values = self.key_value(nodes).chunk(2, dim=-1)
        memory = nodes.new_zeros(nodes.shape[0], nodes.shape[-1])
        out = []
        for t in range(nodes.shape[1]):
            _, _, updated = self.step(memory, keys[:, t], values[:, t])
            memory = torch.where(frame_mask[:, t, None], updated, memory)
            out.append(memory)
        return torch.stack(out, dim=1)


class RecurrentGraphTransformer(nn.Module):
    """R-GTrm block over a DSG whose nodes sit K per frame: graph Transformer layers over the edges (spatial
    edges within frames, temporal coreference edges to the next frame), then the MART memory (FrameMemory)
    carried across frames, which every node of frame t reads as M_{t-1}: h_t <- LayerNorm(h_t + W_read
    M_{t-1})."""

    def __init__(self, *, dim: int, layers: int = 1, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.graph = GraphTransformer(dim=dim, layers=layers, heads=heads, dropout=dropout)
        self.memory = FrameMemory(dim=dim)
        self.read = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor, *, frames: tuple[int, int, int],
                frame_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h [B*T*K, dim] (row-major b, t, k) -> (h', e', memory [B,T,dim])."""
        b, t, k = frames
        h, e = self.graph(h, edge_index, e)
        dense = rearrange(h, "(b t k) d -> b t k d", b=b, t=t, k=k)
        memory = self.memory(dense, frame_mask)
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
