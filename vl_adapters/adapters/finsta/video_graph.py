"""Dynamic scene graphs (DSG) from patch tokens: K object slots per frame, spatial and temporal edges.

No detector weights are assumed, so objects are soft clusters of a video's patch tokens on features plus
grid coordinates, tracked across frames (`track_slots`). All tensor ops over [frames, patches, slots]; the
only Python loops run over the K seeds and the few refinement iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


def track_slots(tokens: Tensor, coords: Tensor, frame_mask: Tensor, *, slots: int, iters: int = 3,
                temperature: float = 0.1, coord_weight: float = 0.5, smoothing: float = 2.0
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Soft k-means over a whole video whose K slots keep their identity across frames.

    tokens [B,T,N,C], coords [N,2], frame_mask [B,T] -> slot mean token [B,T,K,C], centroid [B,T,K,2],
    mass [B,T,K]. All frames start from the same K seeds (farthest-point sampling over the video's tokens,
    so distinct regions get their own slot); each iteration assigns a frame's patches to slots by cosine to
    the slot's appearance and squared grid distance to the slot's centroid in that frame, then sets a slot's
    appearance to the mass-weighted mean of its per-frame means over neighbouring frames (a Gaussian of
    `smoothing` frames). Slot k is thus the same region in every frame: a moving object keeps its slot while
    its centroid follows it, and a slow change of appearance (a recolouring) is followed too. The only Python
    loops run over the K seeds and the iterations, never over frames."""
    b, t, n, _ = tokens.shape
    k = min(slots, n)
    unit = F.normalize(tokens, dim=-1)
    real = frame_mask[..., None].expand(b, t, n).reshape(b, t * n)
    flat = unit.reshape(b, t * n, -1)
    # each token's cosine to one vector per video: a multiply and sum, as einsum's [M,C]x[C,1] matmuls are ~4x
    # slower at this size
    cosine_to = lambda v: (flat * v[:, None]).sum(-1)  # noqa: E731
    with torch.no_grad():  # farthest-point seeds over the video's real tokens
        mean = F.normalize((flat * real[..., None]).sum(1), dim=-1)
        seeds = [cosine_to(mean).masked_fill(~real, float("inf")).argmin(1)]
        picked = lambda m: flat[torch.arange(b, device=flat.device), m]  # noqa: E731
        closest = (1 - cosine_to(picked(seeds[0]))).masked_fill(~real, float("-inf"))
        for _ in range(k - 1):
            seeds.append(closest.argmax(1))
            closest = torch.minimum(closest, 1 - cosine_to(picked(seeds[-1])))
    centre = torch.stack([picked(m) for m in seeds], dim=1)[:, None].expand(b, t, k, -1)  # [B,T,K,C]
    frames = torch.arange(t, device=tokens.device, dtype=tokens.dtype)
    kernel = torch.exp(-(frames[:, None] - frames[None]).square() / (2 * max(smoothing, 1e-3) ** 2))  # [T,T]
    kernel = kernel * frame_mask[:, None, :].to(tokens.dtype)  # [B,T,S]: real frames only
    position = None
    # slots before patches ([B,T,K,N]): the softmax over K then runs across contiguous rows of N, which torch
    # vectorises, where a softmax over a last dim of K = 6 is ~5x slower; the sums over N become matmuls
    for _ in range(max(iters, 1)):
        logits = torch.einsum("btkc,btnc->btkn", F.normalize(centre, dim=-1), unit) / temperature
        if position is not None:
            distance = torch.cdist(position.reshape(b * t, k, 2), coords.expand(b * t, -1, -1)).view(b, t, k, n)
            logits = logits - coord_weight * distance.square() / temperature
        assign = logits.softmax(2)  # [B,T,K,N]
        weight = assign / assign.sum(3, keepdim=True).clamp_min(1e-6)
        position = torch.einsum("btkn,nd->btkd", weight, coords)
        mass = assign.mean(3)  # [B,T,K]
        frame_centre = torch.einsum("btkn,btnc->btkc", weight, unit)
        share = torch.einsum("bts,bsk->btsk", kernel, mass)
        centre = torch.einsum("btsk,bskc->btkc", share, frame_centre) / share.sum(2)[..., None].clamp_min(1e-6)
    return torch.einsum("btkn,btnc->btkc", weight, tokens), position, mass


def pair_geometry(pos_a: Tensor, pos_b: Tensor, mass_a: Tensor, mass_b: Tensor, cosine: Tensor,
                  temporal: bool) -> Tensor:
    """Edge features of a -> b for matching leading shapes: [..., EDGE_DIM]; cosine [...] of their features."""
    delta = pos_b - pos_a
    return torch.cat([
        delta, delta.norm(dim=-1, keepdim=True),
        (mass_b.clamp_min(1e-6).log() - mass_a.clamp_min(1e-6).log())[..., None],
        cosine[..., None],
        torch.full_like(delta[..., :1], float(temporal)),
    ], dim=-1)


def unit_features(x: Tensor) -> Tensor:
    """x over its norm clamped as F.cosine_similarity clamps it (eps 1e-8), so dot products of these are its
    cosines, while each slot is normalised once rather than once per edge it sits on."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def match_frames(x: Tensor, pos: Tensor, distance_weight: float) -> Tensor:
    """Score [B,T-1,K,K] of slot i at t against slot j at t+1: cosine of features - weight * distance."""
    unit = F.normalize(x, dim=-1)
    cos = torch.einsum("btic,btjc->btij", unit[:, :-1], unit[:, 1:])
    return cos - distance_weight * torch.cdist(pos[:, :-1], pos[:, 1:])


def build_graph(x: Tensor, pos: Tensor, mass: Tensor, frame_mask: Tensor, *, tracked: bool = False,
                distance_weight: float = 1.0, labels: Tensor | None = None) -> DynamicSceneGraph:
    """Edges for slots x [B,T,K,C] at pos [B,T,K,2]: every ordered pair within a real frame (spatial), and each
    slot to the same object in the next real frame (temporal): slot k itself when the slots are `tracked`,
    else its best match (feature cosine - distance_weight * centroid distance)."""
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
    unit = unit_features(x)
    cosine = torch.einsum("btic,btjc->btij", unit, unit)  # [B,T,K,K]: every pair's cosine in one matmul
    spatial_attr = pair_geometry(pos[:, :, jj], pos[:, :, ii], mass[:, :, jj], mass[:, :, ii],
                                 cosine[:, :, jj, ii], temporal=False)[keep]
    # temporal: slot at t -> argmax at t+1 (both frames real); predecessor: best match at t-1
    if t > 1:
        if tracked:
            best_next = torch.arange(k, device=device).expand(b, t - 1, k)
            best_prev = best_next
        else:
            score = match_frames(x, pos, distance_weight)  # [B,T-1,K,K]
            best_next, best_prev = score.argmax(-1), score.argmax(-2)  # [B,T-1,K]; best_prev: j at t+1 <- i at t
        src_t = node_id[:, :-1]
        dst_t = torch.gather(node_id[:, 1:], 2, best_next)
        keep_t = (frame_mask[:, :-1] & frame_mask[:, 1:])[..., None].expand_as(src_t)
        temporal_edge_index = torch.stack([src_t[keep_t], dst_t[keep_t]])
        gather = lambda v: torch.gather(v[:, 1:], 2, best_next[..., None].expand(-1, -1, -1, v.shape[-1]))  # noqa: E731
        temporal_attr = pair_geometry(pos[:, :-1], gather(pos), mass[:, :-1],
                                      gather(mass[..., None])[..., 0], (unit[:, :-1] * gather(unit)).sum(-1),
                                      temporal=True)[keep_t]
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
                     temperature: float = 0.1, coord_weight: float = 0.5, smoothing: float = 2.0) -> DynamicSceneGraph:
    """patch_tokens [B,T,N,C] -> DSG with K = min(slots, N) tracked slot nodes per frame."""
    if patch_tokens is None:
        raise FeatureShapeError("finsta: the DSG needs VideoFeatures.patch_tokens [B,T,N,C] (and grid)")
    coords = grid_coordinates(grid, patch_tokens.device)
    x, pos, mass = track_slots(patch_tokens, coords, frame_mask, slots=slots, iters=iters, temperature=temperature,
                               coord_weight=coord_weight, smoothing=smoothing)
    return build_graph(x, pos, mass, frame_mask, tracked=True)


def dsg_from_detections(patch_tokens: Tensor, grid: tuple[int, int], frame_mask: Tensor, boxes: Tensor,
                        labels: Tensor | None = None, *, distance_weight: float = 1.0) -> DynamicSceneGraph:
    """The hook for external detections: boxes [B,T,K,4] as (x0, y0, x1, y1) in [0, 1] (rows of zeros pad),
    labels [B,T,K] long or None. A node is the mean of the patch tokens whose centres fall in its box."""
    b, t, n, _ = patch_tokens.shape
    if boxes.ndim != 4 or boxes.shape[:2] != (b, t) or boxes.shape[-1] != 4:
        raise FeatureShapeError(
            f"finsta detections: boxes must be [B={b}, T={t}, K, 4] (x0, y0, x1, y1), got {list(boxes.shape)}")
    coords = grid_coordinates(grid, patch_tokens.device)  # (y, x)
    y, x = coords[:, 0], coords[:, 1]
    inside = ((x >= boxes[..., 0:1]) & (x <= boxes[..., 2:3]) & (y >= boxes[..., 1:2]) & (y <= boxes[..., 3:4])).float()
    weight = inside / inside.sum(-1, keepdim=True).clamp_min(1)  # [B,T,K,N]
    feats = torch.einsum("btkn,btnc->btkc", weight, patch_tokens.float())
    centre = torch.stack([(boxes[..., 1] + boxes[..., 3]) / 2, (boxes[..., 0] + boxes[..., 2]) / 2], -1)
    return build_graph(feats, centre, inside.mean(-1), frame_mask, distance_weight=distance_weight, labels=labels)
