from __future__ import annotations

from collections.abc import Callable
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
from .holistic import HolisticEncoder, HolisticSceneGraph, build_holistic
from .layers import GraphTransformer, RecurrentGraphTransformer, STGDLayer
from .students import TextStudent, VideoStudent
from .text_graph import EDGE_TYPES, NODE_TYPES, TextGraphBuilder
from .video_graph import EDGE_DIM, DynamicSceneGraph, dsg_from_detections, dsg_from_patches

OBJECT, PREDICATE = NODE_TYPES.index("object"), NODE_TYPES.index("predicate")


@dataclass
class TextGraphEncoding:
    nodes: Tensor        # [n, dim] node states after the TSG encoder
    graph: Tensor        # [n] caption of each node
    node_type: Tensor    # [n] index into NODE_TYPES
    time: Tensor         # [n] event rank of a predicate, -1 elsewhere
    edge_index: Tensor   # [2, m]
    edges: Tensor        # [m, dim] edge states after the TSG encoder
    pooled: Tensor       # [Nt, dim] structural text feature
    num_texts: int


@dataclass
class VideoGraphEncoding:
    dsg: DynamicSceneGraph
    nodes: Tensor          # [B,T,K,dim] node states after R-GTrm + STGD
    edges: Tensor          # [m, dim] DSG edge states after the last R-GTrm block
    motion: Tensor         # [B,T,K] Gaussian differential motion of the last STGD layer
    regions: Tensor        # [B,T*K,dim] high-order node neighbourhoods (OSC)
    region_mask: Tensor    # [B,T*K]
    intervals: Tensor      # [B,W,dim] temporal-interval features in temporal order (PTC)
    interval_mask: Tensor  # [B,W]
    pooled: Tensor         # [B,dim] structural video feature


@dataclass
class Teacher:
    """What the graph branch tells the students: HSG-refined pooled features of each paired caption and of
    each video (mean over its captions' HSGs); has_* marks rows with a target."""

    text: Tensor        # [Nt, dim]
    has_text: Tensor    # [Nt] bool: the caption has graph nodes
    video: Tensor       # [B, dim]
    has_video: Tensor   # [B] bool: the video has a paired caption


@register_adapter("finsta")
class Finsta(Adapter):
    """Finsta: scene-graph spatio-temporal alignment transferred into a frozen dual encoder.

    Graph branch (training, or inference with use_graphs_at_inference): TSG (node words from the frozen text
    tower) -> graph Transformer; DSG from tracked patch-token slots -> recurrent graph Transformer + STGD;
    OSC (objects vs regions) and PTC (events in caption order vs temporal intervals) contrast the two across
    the batch; the HSG joins each caption's TSG to its video's DSG (and to hard negatives) by cross-modal
    edges, is trained by a matching loss, and its refined node states are what the students distil.
    Students (graph-free) on patch tokens and text token states learn those targets; the structural feature
    (student's by default, the graph branch's unimodal one with use_graphs_at_inference) enters each
    embedding through a zero-initialised projection: identity at init. "dual": each side is refined from
    its own features only. Pairs come from ctx.guidance (one right text per video: in multiple choice the
    right candidate, never the wrong ones), or in retrieval from ctx.text_to_video."""

    config_class = FinstaConfig
    stage = "dual"

    def __init__(self, config: FinstaConfig, dims) -> None:
        super().__init__(config, dims)
        config = self.config
        d, heads = config.dim, config.heads
        if d % heads:
            raise ValueError(f"finsta: dim={d} must be divisible by heads={heads}")
        self.text_graphs = TextGraphBuilder(config.parser)
        # TSG encoder: node words are the frozen text tower's embeddings of the words
        self.word_proj = nn.Linear(dims.embed_dim, d)
        self.node_type_embedding = nn.Embedding(len(NODE_TYPES), d)
        self.edge_type_embedding = nn.Embedding(2 * len(EDGE_TYPES), d)
        self.tsg_encoder = GraphTransformer(dim=d, layers=config.tsg_layers, heads=heads, dropout=config.dropout)
        self.text_node_score = nn.Linear(d, 1, bias=False)  # a bias cancels in the per-graph softmax
        # DSG encoder: (R-GTrm, STGD) blocks
        self.slot_proj = nn.Linear(dims.vision_width, d)
        self.slot_geometry = nn.Linear(3, d)  # centroid (y, x) and mass
        self.dsg_edge_proj = nn.Linear(EDGE_DIM, d)
        self.recurrent = nn.ModuleList(
            RecurrentGraphTransformer(dim=d, layers=1, heads=heads, dropout=config.dropout)
            for _ in range(config.dsg_layers))
        self.stgd = nn.ModuleList(STGDLayer(dim=d, heads=heads, sigma=config.sigma) for _ in range(config.dsg_layers))
        self.video_node_score = nn.Linear(d, 1, bias=False)
        self.interval_proj = nn.Linear(2 * d, d)
        # HSG encoder and its matching head
        self.holistic_encoder = HolisticEncoder(dim=d, layers=config.hsg_layers, heads=heads, dropout=config.dropout)
        self.match_head = nn.Linear(d, 1, bias=False)  # ranked against its negatives: a bias cancels
        # alignment
        self.osc = StructuralContrast(dim=d, temperature=config.temperature)
        self.ptc = StructuralContrast(dim=d, temperature=config.temperature, ordered=True)
        # students and the zero-initialised entry into the embeddings
        self.video_student = VideoStudent(vision_width=dims.vision_width, dim=d, slots=config.slots, heads=heads)
        self.text_student = TextStudent(text_width=dims.text_width, embed_dim=dims.embed_dim, dim=d)
        self.video_gate, self.text_gate = nn.Linear(d, dims.embed_dim), nn.Linear(d, dims.embed_dim)
        for gate in (self.video_gate, self.text_gate):
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)

    # ---- graph branch ------------------------------------------------------------------------------
    def word_features(self, words: list[str], encode_text: Callable | None, device) -> Tensor:
        """[len(words), dim]: the frozen text tower's embedding of each word, projected."""
        if encode_text is None:
            raise FeatureShapeError(
                "finsta encodes scene-graph words with the frozen text tower: run it inside vla.wrap, or pass "
                "AdapterContext(encode_text=...) (strings -> TextFeatures)")
        if not words:
            return self.word_proj.weight.new_zeros(0, self.config.dim)
        return self.word_proj(encode_text(words).text_emb.to(device=device, dtype=self.word_proj.weight.dtype))

    def encode_text_graph(self, text: TextFeatures, encode_text: Callable | None = None) -> TextGraphEncoding:
        if text.texts is None:
            raise FeatureShapeError("finsta: the textual scene graph needs TextFeatures.texts (the caption strings)")
        device = text.text_emb.device
        batch = self.text_graphs(text.texts).to(device)
        vocabulary, word = torch.unique(batch.word, return_inverse=True)
        words = [self.text_graphs.words[i] for i in vocabulary.tolist()]
        h = self.word_features(words, encode_text, device)[word] + self.node_type_embedding(batch.node_type)
        e = self.edge_type_embedding(batch.edge_type)
        if h.shape[0]:
            h, e = self.tsg_encoder(h, batch.edge_index, e)
        pooled = attention_pool(h, batch.batch, text.batch_size, self.text_node_score)
        return TextGraphEncoding(h, batch.batch, batch.node_type, batch.time, batch.edge_index, e, pooled,
                                 text.batch_size)

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
                                coord_weight=cfg.coord_weight, smoothing=cfg.slot_smoothing)

    def encode_video_graph(self, video: VideoFeatures, detections: dict | None = None,
                           encode_text: Callable | None = None) -> VideoGraphEncoding:
        dsg = self.build_video_graph(video, detections)
        b, t, k, _ = dsg.x.shape
        mask = video.frame_mask
        h = self.slot_proj(dsg.x) + self.slot_geometry(torch.cat([dsg.pos, dsg.mass[..., None]], dim=-1))
        if dsg.labels is not None:  # detector class names, embedded like the caption's words
            names = detections.get("label_names")
            if names is None:
                raise FeatureShapeError("finsta detections: 'labels' need 'label_names' (the class name of each id)")
            table = self.word_features(list(names), encode_text, h.device)
            labels = dsg.labels.to(h.device)
            h = h + table[labels.clamp_min(0)] * (labels >= 0)[..., None]
        e = self.dsg_edge_proj(dsg.edge_attr)
        flat = rearrange(h, "b t k d -> (b t k) d")
        motion = torch.zeros_like(dsg.mass)
        for recurrent, stgd in zip(self.recurrent, self.stgd, strict=True):
            flat, e, _ = recurrent(flat, dsg.edge_index, e, frames=(b, t, k), frame_mask=mask)
            dense, motion = stgd(rearrange(flat, "(b t k) d -> b t k d", b=b, t=t), dsg.pos, dsg.predecessor, mask)
            flat = rearrange(dense, "b t k d -> (b t k) d")
        dense = rearrange(flat, "(b t k) d -> b t k d", b=b, t=t)
        node_video = torch.arange(b, device=h.device).repeat_interleave(t * k)
        pooled = attention_pool(flat, node_video, b, self.video_node_score, dsg.node_mask.reshape(-1))
        # temporal intervals, in order: frame state and frame change (slot minus its predecessor), windowed
        previous = torch.cat([dense[:, :1], dense[:, :-1]], dim=1)
        previous = torch.gather(previous, 2, dsg.predecessor[..., None].expand_as(dense))
        per_frame = torch.cat([dense.mean(2), (dense - previous).mean(2)], dim=-1)  # [B,T,2d]
        windows, interval_mask = self.windows(per_frame, mask)
        return VideoGraphEncoding(
            dsg=dsg, nodes=dense, edges=e, motion=motion, regions=rearrange(dense, "b t k d -> b (t k) d"),
            region_mask=rearrange(dsg.node_mask, "b t k -> b (t k)"), intervals=self.interval_proj(windows),
            interval_mask=interval_mask, pooled=pooled)

    def windows(self, per_frame: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """The temporal intervals, in order: means [B,W,C] of per_frame [B,T,C] over its real frames in each
        window of `interval` frames (stride 1), and whether a window holds a real frame [B,W]."""
        width = min(self.config.interval, per_frame.shape[1])
        real = frame_mask[..., None].to(per_frame.dtype)
        window_sum = F.avg_pool1d(rearrange(per_frame * real, "b t c -> b c t"), width, stride=1) * width
        window_count = F.avg_pool1d(rearrange(real, "b t c -> b c t"), width, stride=1) * width  # [B,1,W]
        return rearrange(window_sum / window_count.clamp_min(1), "b c w -> b w c"), window_count[:, 0] > 0

    def structural_scores(self, vg: VideoGraphEncoding, tg: TextGraphEncoding) -> dict[str, tuple[Tensor, Tensor]]:
        """{"osc": (scores [Nt, B], caption has objects [Nt]), "ptc": (scores, caption has predicates)}."""
        objects, predicates = tg.node_type == OBJECT, tg.node_type == PREDICATE
        return {
            "osc": self.osc.scores(tg.nodes[objects], tg.graph[objects], tg.num_texts, vg.regions, vg.region_mask),
            "ptc": self.ptc.scores(tg.nodes[predicates], tg.graph[predicates], tg.num_texts, vg.intervals,
                                   vg.interval_mask, tg.time[predicates]),
        }

    def holistic(self, vg: VideoGraphEncoding, tg: TextGraphEncoding, pairs: Tensor
                 ) -> tuple[HolisticSceneGraph, Tensor, Tensor]:
        """The HSG of each (caption, video) pair in pairs [P, 2] and the pooled encoding of each pair's caption
        and video nodes: (graph, text [P, dim], video [P, dim])."""
        b, t, k, d = vg.nodes.shape
        graph = build_holistic(
            tg.nodes, tg.graph, tg.edge_index, tg.edges, tg.node_type == OBJECT, vg.nodes, vg.dsg.edge_index,
            vg.edges, vg.dsg.node_mask[..., 0], self.osc.text_proj(tg.nodes), self.osc.video_proj(vg.nodes), pairs,
            self.config.hsg_threshold, tg.num_texts)
        text_nodes, video_nodes = self.holistic_encoder(graph)
        num_pairs = pairs.shape[0]
        text = attention_pool(text_nodes, graph.text_pair, num_pairs, self.text_node_score)
        video = attention_pool(video_nodes, graph.video_pair, num_pairs, self.video_node_score, graph.video_node_mask)
        return graph, text, video

    def holistic_losses(self, vg: VideoGraphEncoding, tg: TextGraphEncoding, text_to_video: Tensor,
                        scores: Tensor) -> tuple[Tensor | None, Teacher]:
        """Matching loss over HSGs (each caption with its video, the hardest other video, and its video with
        the hardest other caption, hardest by the structural scores [Nt, B]) and the students' targets from
        the positive pairs' HSGs."""
        nt, b = scores.shape
        captions = torch.arange(nt, device=scores.device)
        pairs = [torch.stack([captions, text_to_video], 1)]
        if b > 1:
            own = F.one_hot(text_to_video, b).bool()
            hard_video = scores.detach().masked_fill(own, float("-inf")).argmax(1)  # [Nt]
            other = text_to_video[:, None] != text_to_video[None]  # [Nt, Nt]: captions of another video
            hard_text = scores.detach()[:, text_to_video].t().masked_fill(~other, float("-inf")).argmax(1)
            negatives = other.any(1)
            pairs += [torch.stack([captions, hard_video], 1), torch.stack([hard_text, text_to_video], 1)[negatives]]
        _, text, video = self.holistic(vg, tg, torch.cat(pairs))
        logits = self.match_head(text + video).squeeze(-1)
        loss = None
        if b > 1:
            positive = logits[:nt]
            versus_video = torch.stack([positive, logits[nt:2 * nt]], 1)
            versus_text = torch.stack([positive[negatives], logits[2 * nt:]], 1)
            target = lambda x: torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # noqa: E731
            loss = (F.cross_entropy(versus_video, target(versus_video))
                    + (F.cross_entropy(versus_text, target(versus_text)) if negatives.any() else 0.0)) / 2
        has_text = torch.bincount(tg.graph, minlength=nt) > 0
        video_target = scatter(video[:nt], text_to_video, dim=0, dim_size=b, reduce="mean")
        has_video = torch.bincount(text_to_video, minlength=b) > 0
        return loss, Teacher(text[:nt], has_text, video_target, has_video)

    # ---- the adapter -----------------------------------------------------------------------------
    @staticmethod
    def training_pairs(video, text, ctx) -> tuple[TextFeatures, Tensor] | None:
        """(texts, text_to_video) that describe the videos: the guidance (one right text per video), or in
        retrieval the batch's own pairing. None otherwise: multiple-choice candidates are not descriptions
        (the wrong ones least of all)."""
        if video is None or text is None:
            return None
        if ctx.guidance is not None:
            return ctx.guidance, torch.arange(video.batch_size, device=video.frame_emb.device)
        if ctx.task == "retrieval" and ctx.text_to_video is not None:
            return text, ctx.text_to_video.to(video.frame_emb.device)
        return None

    def forward(self, video, text, ctx) -> AdapterOutput:
        cfg = self.config
        pairs = self.training_pairs(video, text, ctx) if self.training else None
        graphs = cfg.use_graphs_at_inference
        losses: dict[str, Tensor] = {}
        if video is not None and video.patch_tokens is None:
            raise FeatureShapeError("finsta needs VideoFeatures.patch_tokens [B,T,N,C]")
        if text is not None and text.token_states is None:
            raise FeatureShapeError("finsta needs TextFeatures.token_states and token_mask")
        vg = tg = None
        if video is not None and (pairs is not None or graphs):
            vg = self.encode_video_graph(video, ctx.extras.get("detections"), ctx.encode_text)
        if pairs is not None:
            paired_text, text_to_video = pairs
            tg = self.encode_text_graph(paired_text, ctx.encode_text)
            scores = self.structural_scores(vg, tg)
            losses["osc"] = cfg.osc_weight * self.osc.loss(*scores["osc"], text_to_video)
            losses["ptc"] = cfg.ptc_weight * self.ptc.loss(*scores["ptc"], text_to_video)
            matching, teacher = self.holistic_losses(vg, tg, text_to_video, scores["osc"][0] + scores["ptc"][0])
            if matching is not None:
                losses["hsg"] = cfg.hsg_weight * matching
            student = self.text_student(paired_text.token_states.float(), paired_text.token_mask,
                                        paired_text.text_emb.float())
            losses["distill_text"] = cfg.distill_weight * masked_mse(student, teacher.text, teacher.has_text)
        if video is not None:
            student, ordered = self.video_student(video.patch_tokens.float(), video.grid, video.frame_mask)
            if pairs is not None:
                losses["distill_video"] = cfg.distill_weight * masked_mse(student, teacher.video, teacher.has_video)
                # the order the alignment learns (PTC's intervals) reaches the graph-free student here
                intervals, real = self.windows(ordered, video.frame_mask)
                losses["distill_intervals"] = cfg.distill_weight * masked_mse(intervals, vg.intervals, real)
            video = self._fuse_video(video, self.video_gate(vg.pooled if graphs else student))
        if text is not None:
            if graphs:
                same = pairs is not None and pairs[0] is text
                feature = (tg if same else self.encode_text_graph(text, ctx.encode_text)).pooled
            else:
                feature = self.text_student(text.token_states.float(), text.token_mask, text.text_emb.float())
            text = text.replace(text_emb=text.text_emb + self.text_gate(feature))
        return AdapterOutput(video=video, text=text, losses=losses)

    @staticmethod
    def _fuse_video(video: VideoFeatures, delta: Tensor) -> VideoFeatures:
        if video.video_emb is not None:
            return video.replace(video_emb=video.video_emb + delta)
        return video.replace(frame_emb=video.frame_emb + delta[:, None] * video.frame_mask[..., None])


def attention_pool(h: Tensor, group: Tensor, size: int, scorer: nn.Module, mask: Tensor | None = None) -> Tensor:
    """[size, dim]: per group, the softmax(scorer(h))-weighted sum of its rows (rows with mask False left out;
    an empty group pools to zero)."""
    score = scorer(h).squeeze(-1)
    if mask is not None:
        score = score.masked_fill(~mask, float("-inf"))
    weight = softmax(score, group, num_nodes=size).nan_to_num(0.0) if h.shape[0] else score
    return scatter(weight[:, None] * h, group, dim=0, dim_size=size, reduce="sum")


def masked_mse(student: Tensor, target: Tensor, keep: Tensor) -> Tensor:
    """MSE towards the detached teacher over the rows that have a target."""
    if not keep.any():
        return student.sum() * 0.0
    return F.mse_loss(student[keep], target.detach()[keep])
