"""Dynamic scene graphs (DSG) from patch tokens: K object slots per frame, spatial and temporal edges.

No detector weights are assumed, so objects are soft clusters of a frame's patch tokens on features plus
grid coordinates (soft k-means seeded by farthest-point sampling in feature space). All tensor ops over
[frames, patches, slots]; the only Python loops run over the K seeds and the few refinement iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from ...core.features import FeatureShapeError

EDGE_DIM = 6  # dx, dy, distance, log mass ratio, feature cosine, is_temporal


@dataclass
class DynamicSceneGraph:
    """Dense view (K nodes per frame) plus the flat edge lists over nodes numbered (b, t, k) row-major.

    x [B,T,K,C] slot mean tokens, pos [B,T,K,2] centroids in [0,1], mass [B,T,K] share of the frame,
    node_mask [B,T,K], spatial_edge_index [2,Es] / spatial_edge_attr [Es,EDGE_DIM],
    temporal_edge_index [2,Et] (slot at t -> its best match at t+1) / temporal_edge_attr [Et,EDGE_DIM],
    predecessor [B,T,K]: index k' of each slot's best match in frame t-1 (itself at t=0),
    labels [B,T,K] long or None (external detections)."""

    x: Tensor
    pos: Tensor
    mass: Tensor
    node_mask: Tensor
    spatial_edge_index: Tensor
    spatial_edge_attr: Tensor
    temporal_edge_index: Tensor
    temporal_edge_attr: Tensor
    predecessor: Tensor
    labels: Tensor | None = None

    @property
    def edge_index(self) -> Tensor:
        return torch.cat([self.spatial_edge_index, self.temporal_edge_index], dim=1)

    @property
    def edge_attr(self) -> Tensor:
        return torch.cat([self.spatial_edge_attr, self.temporal_edge_attr], dim=0)


def grid_coordinates(grid: tuple[int, int], device=None) -> Tensor:
    """[N, 2] patch centres (y, x) in [0, 1]."""
    gh, gw = grid
    ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) / gh
    xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) / gw
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(gh * gw, 2)


def group_patches(tokens: Tensor, coords: Tensor, *, slots: int, iters: int = 3, temperature: float = 0.1,
                  coord_weight: float = 0.5) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """tokens [F,N,C], coords [N,2] -> assignment [F,N,K] (softmax over slots), slot mean token [F,K,C],
    centroid [F,K,2], mass [F,K]. Differentiable in the tokens (seeds are picked without gradient)."""
    frames, n, _ = tokens.shape
    k = min(slots, n)
    unit = F.normalize(tokens, dim=-1)
    with torch.no_grad():  # farthest-point seeds: distinct feature clusters get their own slot
        first = (unit @ unit.mean(1, keepdim=True).transpose(1, 2)).squeeze(-1).argmin(1)
        seeds = [first]
        closest = 1 - (unit * unit[torch.arange(frames), first][:, None]).sum(-1)
        for _ in range(k - 1):
            nxt = closest.argmax(1)
            seeds.append(nxt)
            closest = torch.minimum(closest, 1 - (unit * unit[torch.arange(frames), nxt][:, None]).sum(-1))
        seeds = torch.stack(seeds, dim=1)  # [F, K]
    centre = torch.gather(unit, 1, seeds[..., None].expand(-1, -1, unit.shape[-1]))
    position = coords[seeds]  # [F, K, 2]
    for _ in range(iters):
        logits = torch.einsum("fnc,fkc->fnk", unit, F.normalize(centre, dim=-1)) / temperature
        logits = logits - coord_weight * torch.cdist(coords.expand(frames, -1, -1), position).square() / temperature
        assign = logits.softmax(-1)  # [F, N, K]
        weight = assign / assign.sum(1, keepdim=True).clamp_min(1e-6)
        centre = torch.einsum("fnk,fnc->fkc", weight, unit)
        position = torch.einsum("fnk,nd->fkd", weight, coords)
    mean_token = torch.einsum("fnk,fnc->fkc", weight, tokens)
    return assign, mean_token, position, assign.mean(1)


def pair_geometry(pos_a: Tensor, pos_b: Tensor, mass_a: Tensor, mass_b: Tensor, feat_a: Tensor, feat_b: Tensor,
                  temporal: bool) -> Tensor:
    """Edge features of a -> b for matching leading shapes: [..., EDGE_DIM]."""
    delta = pos_b - pos_a
    return torch.cat([
        delta, delta.norm(dim=-1, keepdim=True),
        (mass_b.clamp_min(1e-6).log() - mass_a.clamp_min(1e-6).log())[..., None],
        F.cosine_similarity(feat_a, feat_b, dim=-1)[..., None],
        torch.full_like(delta[..., :1], float(temporal)),
    ], dim=-1)


def match_frames(x: Tensor, pos: Tensor, distance_weight: float) -> Tensor:
    """Score [B,T-1,K,K] of slot i at t against slot j at t+1: cosine of features - weight * distance."""
    unit = F.normalize(x, dim=-1)
    cos = torch.einsum("btic,btjc->btij", unit[:, :-1], unit[:, 1:])
    return cos - distance_weight * torch.cdist(pos[:, :-1], pos[:, 1:])


def build_graph(x: Tensor, pos: Tensor, mass: Tensor, frame_mask: Tensor, *, distance_weight: float = 1.0,
                labels: Tensor | None = None) -> DynamicSceneGraph:
    """Edges for slots x [B,T,K,C] at pos [B,T,K,2]: every ordered pair within a real frame (spatial), and each
    slot to its best match in the next real frame (temporal)."""
    b, t, k, _ = x.shape
    device = x.device
    node_id = torch.arange(b * t * k, device=device).view(b, t, k)
    node_mask = frame_mask[..., None].expand(b, t, k)
    # spatial: all i != j within a frame
    ii, jj = torch.meshgrid(torch.arange(k, device=device), torch.arange(k, device=device), indexing="ij")
    off = ii != jj
    ii, jj = ii[off], jj[off]
    src = node_id[:, :, jj]  # [B,T,P] message j -> i
    dst = node_id[:, :, ii]
    keep = frame_mask[..., None].expand_as(src)
    spatial_edge_index = torch.stack([src[keep], dst[keep]])
    spatial_attr = pair_geometry(pos[:, :, jj], pos[:, :, ii], mass[:, :, jj], mass[:, :, ii],
                                 x[:, :, jj], x[:, :, ii], temporal=False)[keep]
    # temporal: slot at t -> argmax at t+1 (both frames real); predecessor: best match at t-1
    if t > 1:
        score = match_frames(x, pos, distance_weight)  # [B,T-1,K,K]
        best_next = score.argmax(-1)  # [B,T-1,K]
        src_t = node_id[:, :-1]
        dst_t = torch.gather(node_id[:, 1:], 2, best_next)
        keep_t = (frame_mask[:, :-1] & frame_mask[:, 1:])[..., None].expand_as(src_t)
        temporal_edge_index = torch.stack([src_t[keep_t], dst_t[keep_t]])
        gather = lambda v: torch.gather(v[:, 1:], 2, best_next[..., None].expand(-1, -1, -1, v.shape[-1]))  # noqa: E731
        temporal_attr = pair_geometry(pos[:, :-1], gather(pos), mass[:, :-1],
                                      gather(mass[..., None])[..., 0], x[:, :-1], gather(x), temporal=True)[keep_t]
        best_prev = score.argmax(-2)  # [B,T-1,K]: for slot j at t+1, best i at t
        first = torch.arange(k, device=device).expand(b, 1, k)
        predecessor = torch.cat([first, best_prev], dim=1)
        # a slot after a padded frame is its own predecessor
        valid_prev = torch.cat([torch.ones(b, 1, k, dtype=torch.bool, device=device),
                                frame_mask[:, :-1, None].expand(b, t - 1, k)], dim=1)
        predecessor = torch.where(valid_prev, predecessor, torch.arange(k, device=device).expand(b, t, k))
    else:
        temporal_edge_index = torch.zeros(2, 0, dtype=torch.long, device=device)
        temporal_attr = x.new_zeros(0, spatial_attr.shape[-1])
        predecessor = torch.arange(k, device=device).expand(b, t, k)
    return DynamicSceneGraph(x=x, pos=pos, mass=mass, node_mask=node_mask,
                             spatial_edge_index=spatial_edge_index, spatial_edge_attr=spatial_attr,
                             temporal_edge_index=temporal_edge_index, temporal_edge_attr=temporal_attr,
                             predecessor=predecessor, labels=labels)


def dsg_from_patches(patch_tokens: Tensor, grid: tuple[int, int], frame_mask: Tensor, *, slots: int, iters: int = 3,
                     temperature: float = 0.1, coord_weight: float = 0.5, distance_weight: float = 1.0) -> DynamicSceneGraph:
    """patch_tokens [B,T,N,C] -> DSG with K = min(slots, N) slot nodes per frame."""
    if patch_tokens is None:
        raise FeatureShapeError("finsta: the DSG needs VideoFeatures.patch_tokens [B,T,N,C] (and grid)")
    b, t = patch_tokens.shape[:2]
    coords = grid_coordinates(grid, patch_tokens.device)
    _, x, pos, mass = group_patches(rearrange(patch_tokens, "b t n c -> (b t) n c"), coords, slots=slots,
                                    iters=iters, temperature=temperature, coord_weight=coord_weight)
    unflat = lambda v: rearrange(v, "(b t) k ... -> b t k ...", b=b, t=t)  # noqa: E731
    return build_graph(unflat(x), unflat(pos), unflat(mass), frame_mask, distance_weight=distance_weight)


def dsg_from_detections(patch_tokens: Tensor, grid: tuple[int, int], frame_mask: Tensor, boxes: Tensor,
                        labels: Tensor | None = None, *, distance_weight: float = 1.0) -> DynamicSceneGraph:
    """The hook for external detections: boxes [B,T,K,4] as (x0, y0, x1, y1) in [0, 1] (rows of zeros pad),
    labels [B,T,K] long or None. A node is the mean of the patch tokens whose centres fall in its box."""
    b, t, n, _ = patch_tokens.shape
    if boxes.ndim != 4 or boxes.shape[:2] != (b, t) or boxes.shape[-1] != 4:
        raise FeatureShapeError(f"finsta detections: boxes must be [B={b}, T={t}, K, 4] (x0, y0, x1, y1), got {list(boxes.shape)}")
    coords = grid_coordinates(grid, patch_tokens.device)  # (y, x)
    y, x = coords[:, 0], coords[:, 1]
    inside = ((x >= boxes[..., 0:1]) & (x <= boxes[..., 2:3]) & (y >= boxes[..., 1:2]) & (y <= boxes[..., 3:4])).float()
    weight = inside / inside.sum(-1, keepdim=True).clamp_min(1)  # [B,T,K,N]
    feats = torch.einsum("btkn,btnc->btkc", weight, patch_tokens.float())
    centre = torch.stack([(boxes[..., 1] + boxes[..., 3]) / 2, (boxes[..., 0] + boxes[..., 2]) / 2], -1)
    return build_graph(feats, centre, inside.mean(-1), frame_mask, distance_weight=distance_weight, labels=labels)
