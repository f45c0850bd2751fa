from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.features import FeatureShapeError, TextFeatures, VideoFeatures
from .alignment import StructuralContrast
from .config import FinstaConfig
from .holistic import HolisticEncoder, build_holistic
from .layers import GraphTransformer, RecurrentGraphTransformer, STGDLayer
from .students import TextStudent, VideoStudent
from .text_graph import EDGE_TYPES, NODE_TYPES, TextGraphBuilder
from .video_graph import EDGE_DIM, DynamicSceneGraph, dsg_from_detections, dsg_from_patches


@dataclass
class TextGraphEncoding:
    nodes: Tensor        # [n, dim] node states after the TSG encoder
    graph: Tensor        # [n] caption of each node
    node_type: Tensor    # [n] index into NODE_TYPES
    edge_index: Tensor   # [2, m]
    pooled: Tensor       # [Nt, dim] structural text feature


@dataclass
class VideoGraphEncoding:
    dsg: DynamicSceneGraph
    nodes: Tensor          # [B,T,K,dim] node states after R-GTrm + STGD
    motion: Tensor         # [B,T,K] Gaussian differential motion of the last STGD layer
    regions: Tensor        # [B,T*K,dim] high-order node neighbourhoods (OSC)
    region_mask: Tensor    # [B,T*K]
    intervals: Tensor      # [B,W,dim] temporal-interval features (PTC)
    interval_mask: Tensor  # [B,W]
    pooled: Tensor         # [B,dim] structural video feature


@register_adapter("finsta")
class Finsta(Adapter):
    """Finsta: scene-graph spatio-temporal alignment transferred into a frozen dual encoder.

    Graph branch (training, or inference with use_graphs_at_inference): TSG -> graph Transformer; DSG from
    patch-token slots -> recurrent graph Transformer + STGD; OSC and PTC contrast the two across the batch.
    Students (graph-free) on patch tokens and text token states learn the graph branch's pooled structural
    features by distillation. The structural feature (student's by default, the graph branch's with
    use_graphs_at_inference) enters each embedding through a zero-initialised projection: identity at init.
    "dual": each side is refined from its own features only."""

    config_class = FinstaConfig
    stage = "dual"

    def __init__(self, config: FinstaConfig, dims) -> None:
        super().__init__(config, dims)
        d, heads = config.dim, config.heads
        if d % heads:
            raise ValueError(f"finsta: dim={d} must be divisible by heads={heads}")
        self.text_graphs = TextGraphBuilder(config.parser, config.word_buckets)
        # TSG encoder
        self.word_embedding = nn.Embedding(config.word_buckets, d)
        self.node_type_embedding = nn.Embedding(len(NODE_TYPES), d)
        self.edge_type_embedding = nn.Embedding(2 * len(EDGE_TYPES), d)
        self.sentence_proj = nn.Linear(dims.embed_dim, d)
        self.tsg_encoder = GraphTransformer(dim=d, layers=config.tsg_layers, heads=heads, dropout=config.dropout)
        self.text_node_score = nn.Linear(d, 1)
        # DSG encoder: (R-GTrm, STGD) blocks
        self.slot_proj = nn.Linear(dims.vision_width, d)
        self.slot_geometry = nn.Linear(3, d)  # centroid (y, x) and mass
        self.dsg_edge_proj = nn.Linear(EDGE_DIM, d)
        self.recurrent = nn.ModuleList(
            RecurrentGraphTransformer(dim=d, layers=1, heads=heads, dropout=config.dropout) for _ in range(config.dsg_layers))
        self.stgd = nn.ModuleList(STGDLayer(dim=d, heads=heads, sigma=config.sigma) for _ in range(config.dsg_layers))
        self.video_node_score = nn.Linear(d, 1)
        self.interval_proj = nn.Linear(2 * d, d)
        self.holistic_encoder = HolisticEncoder(dim=d, layers=1, heads=heads)
        # alignment
        self.osc = StructuralContrast(dim=d, temperature=config.temperature)
        self.ptc = StructuralContrast(dim=d, temperature=config.temperature)
        # students and the zero-initialised entry into the embeddings
        self.video_student = VideoStudent(vision_width=dims.vision_width, dim=d, slots=config.slots)
        self.text_student = TextStudent(text_width=dims.text_width, embed_dim=dims.embed_dim, dim=d)
        self.video_gate, self.text_gate = nn.Linear(d, dims.embed_dim), nn.Linear(d, dims.embed_dim)
        for gate in (self.video_gate, self.text_gate):
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)

    # ---- graph branch ------------------------------------------------------------------------------
    def encode_text_graph(self, text: TextFeatures) -> TextGraphEncoding:
        if text.texts is None:
            raise FeatureShapeError("finsta: the textual scene graph needs TextFeatures.texts (the caption strings)")
        device = text.text_emb.device
        batch = self.text_graphs(text.texts).to(device)
        h = (self.word_embedding(batch.word) + self.node_type_embedding(batch.node_type)
             + self.sentence_proj(text.text_emb)[batch.batch])
        h, _ = self.tsg_encoder(h, batch.edge_index, self.edge_type_embedding(batch.edge_type))
        weight = softmax(self.text_node_score(h).squeeze(-1), batch.batch, num_nodes=h.shape[0])
        pooled = scatter(weight[:, None] * h, batch.batch, dim=0, dim_size=text.batch_size, reduce="sum")
        return TextGraphEncoding(h, batch.batch, batch.node_type, batch.edge_index, pooled)

    def build_video_graph(self, video: VideoFeatures, detections: dict | None = None) -> DynamicSceneGraph:
        if video.patch_tokens is None:
            raise FeatureShapeError("finsta: the dynamic scene graph needs VideoFeatures.patch_tokens [B,T,N,C]")
        cfg = self.config
        if detections is not None:
            return dsg_from_detections(video.patch_tokens.float(), video.grid, video.frame_mask,
                                       detections["boxes"].to(video.frame_emb.device), detections.get("labels"),
                                       distance_weight=cfg.match_distance_weight)
        return dsg_from_patches(video.patch_tokens.float(), video.grid, video.frame_mask, slots=cfg.slots,
                                iters=cfg.slot_iters, temperature=cfg.slot_temperature,
                                coord_weight=cfg.coord_weight, distance_weight=cfg.match_distance_weight)

    def encode_video_graph(self, video: VideoFeatures, detections: dict | None = None) -> VideoGraphEncoding:
        dsg = self.build_video_graph(video, detections)
        b, t, k, _ = dsg.x.shape
        mask = video.frame_mask
        h = self.slot_proj(dsg.x) + self.slot_geometry(torch.cat([dsg.pos, dsg.mass[..., None]], dim=-1))
        if dsg.labels is not None:  # detector class ids share the hashed word table
            h = h + self.word_embedding(dsg.labels.clamp_min(0) % self.config.word_buckets)
        e = self.dsg_edge_proj(dsg.edge_attr)
        flat = rearrange(h, "b t k d -> (b t k) d")
        motion = torch.zeros_like(dsg.mass)
        for recurrent, stgd in zip(self.recurrent, self.stgd, strict=True):
            flat, e, _ = recurrent(flat, dsg.edge_index, e, frames=(b, t, k), frame_mask=mask)
            dense, motion = stgd(rearrange(flat, "(b t k) d -> b t k d", b=b, t=t), dsg.pos, dsg.predecessor, mask)
            flat = rearrange(dense, "b t k d -> (b t k) d")
        dense = rearrange(flat, "(b t k) d -> b t k d", b=b, t=t)
        # pooled structural feature: attention over the nodes of real frames
        score = self.video_node_score(dense).squeeze(-1).masked_fill(~dsg.node_mask, float("-inf"))
        weight = rearrange(score, "b t k -> b (t k)").softmax(-1)
        pooled = torch.einsum("bn,bnd->bd", weight, rearrange(dense, "b t k d -> b (t k) d"))
        # temporal intervals: frame state and frame change (slot minus its matched predecessor), windowed
        previous = torch.cat([dense[:, :1], dense[:, :-1]], dim=1)
        previous = torch.gather(previous, 2, dsg.predecessor[..., None].expand_as(dense))
        real = mask[..., None].to(dense.dtype)
        per_frame = torch.cat([dense.mean(2), (dense - previous).mean(2)], dim=-1) * real  # [B,T,2d]
        width = min(self.config.interval, t)
        window_sum = F.avg_pool1d(rearrange(per_frame, "b t c -> b c t"), width, stride=1) * width
        window_count = F.avg_pool1d(rearrange(real, "b t c -> b c t"), width, stride=1) * width  # [B,1,W]
        intervals = self.interval_proj(rearrange(window_sum / window_count.clamp_min(1), "b c w -> b w c"))
        return VideoGraphEncoding(
            dsg=dsg, nodes=dense, motion=motion, regions=rearrange(dense, "b t k d -> b (t k) d"),
            region_mask=rearrange(dsg.node_mask, "b t k -> b (t k)"), intervals=intervals,
            interval_mask=window_count[:, 0] > 0, pooled=pooled)

    def holistic(self, video: VideoFeatures, text: TextFeatures, text_to_video: Tensor):
        """The HSG of a paired batch and its encoding: (HolisticSceneGraph, text node states, video node
        states). Not fed into the embeddings (that would leak each caption into its video's embedding)."""
        vg, tg = self.encode_video_graph(video), self.encode_text_graph(text)
        objects = (tg.node_type == NODE_TYPES.index("object")).nonzero(as_tuple=True)[0]
        graph = build_holistic(tg.nodes, tg.edge_index, objects, tg.graph[objects],
                               rearrange(vg.nodes, "b t k d -> (b t k) d"), vg.dsg.edge_index,
                               vg.regions.shape[1], text_to_video.to(tg.nodes.device), self.config.hsg_threshold)
        return (graph, *self.holistic_encoder(graph))

    # ---- the adapter -----------------------------------------------------------------------------
    def alignment_losses(self, vg: VideoGraphEncoding, tg: TextGraphEncoding, text_to_video: Tensor) -> dict[str, Tensor]:
        num_texts = tg.pooled.shape[0]
        objects = tg.node_type == NODE_TYPES.index("object")
        predicates = tg.node_type == NODE_TYPES.index("predicate")
        osc = self.osc(tg.nodes[objects], tg.graph[objects], num_texts, vg.regions, vg.region_mask, text_to_video)
        ptc = self.ptc(tg.nodes[predicates], tg.graph[predicates], num_texts, vg.intervals, vg.interval_mask,
                       text_to_video)
        return {"osc": osc, "ptc": ptc}

    def forward(self, video, text, ctx) -> AdapterOutput:
        cfg = self.config
        paired = self.training and video is not None and text is not None and ctx.text_to_video is not None
        losses: dict[str, Tensor] = {}
        vg = tg = None
        if video is not None and (paired or cfg.use_graphs_at_inference):
            vg = self.encode_video_graph(video, ctx.extras.get("detections"))
        if text is not None and (paired or cfg.use_graphs_at_inference):
            tg = self.encode_text_graph(text)
        if video is not None:
            if video.patch_tokens is None:
                raise FeatureShapeError("finsta needs VideoFeatures.patch_tokens [B,T,N,C]")
            student = self.video_student(video.patch_tokens.float(), video.grid, video.frame_mask)
            feature = vg.pooled if cfg.use_graphs_at_inference else student
            if paired:
                losses["distill_video"] = cfg.distill_weight * F.mse_loss(student, vg.pooled.detach())
            video = self._fuse_video(video, self.video_gate(feature))
        if text is not None:
            if text.token_states is None:
                raise FeatureShapeError("finsta needs TextFeatures.token_states and token_mask")
            student = self.text_student(text.token_states.float(), text.token_mask, text.text_emb)
            feature = tg.pooled if cfg.use_graphs_at_inference else student
            if paired:
                losses["distill_text"] = cfg.distill_weight * F.mse_loss(student, tg.pooled.detach())
            text = text.replace(text_emb=text.text_emb + self.text_gate(feature))
        if paired:
            aligned = self.alignment_losses(vg, tg, ctx.text_to_video.to(tg.pooled.device))
            losses["osc"] = cfg.osc_weight * aligned["osc"]
            losses["ptc"] = cfg.ptc_weight * aligned["ptc"]
        return AdapterOutput(video=video, text=text, losses=losses)

    @staticmethod
    def _fuse_video(video: VideoFeatures, delta: Tensor) -> VideoFeatures:
        if video.video_emb is not None:
            return video.replace(video_emb=video.video_emb + delta)
        return video.replace(frame_emb=video.frame_emb + delta[:, None] * video.frame_mask[..., None])
