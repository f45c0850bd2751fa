"""Open-ended video QA (MSRVTT-QA, MSVD-QA): classification over an answer vocabulary.

A small head reads the fused video/question embedding [v, q, v*q] (unit-norm dual-encoder
embeddings after the "video"/"text" adapters) and scores every answer. The head is new, so it has no
identity at initialisation; its weights come from a generator seeded by the config, so two models
built from the same config start identical whatever the global RNG state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.config import ConfigError, TaskConfig
from ..core.pooling import text_embedding, video_embedding
from .base import TaskHead, TaskOutput, register_task


@dataclass
class OpenQAConfig(TaskConfig):
    num_answers: int = 1000  # the answer vocabulary's size (the trainer sets it from the training split)
    hidden: int = 512
    dropout: float = 0.1
    init_seed: int = 0
    template: str = "{question}"  # how a question becomes the text the backbone encodes
    answers: list = field(default_factory=list)  # the vocabulary, answer i first (the trainer sets it; may be empty)

    def __post_init__(self) -> None:
        if self.num_answers < 1:
            raise ConfigError(f"OpenQAConfig.num_answers must be >= 1, got {self.num_answers}")
        if self.answers and len(self.answers) != self.num_answers:
            raise ConfigError(f"OpenQAConfig.answers holds {len(self.answers)} answers, num_answers is "
                              f"{self.num_answers}; give one answer per class (or none)")
        if self.hidden < 1:
            raise ConfigError(f"OpenQAConfig.hidden must be >= 1, got {self.hidden}")


@register_task("open_qa")
class OpenQAHead(TaskHead):
    config_class = OpenQAConfig

    def __init__(self, config: OpenQAConfig, *, logit_scale: float, embed_dim: int | None = None) -> None:
        super().__init__(config, logit_scale=logit_scale)
        self.embed_dim = embed_dim
        self.classifier: nn.Sequential | None = None
        if embed_dim is not None:
            self._build(embed_dim)

    def _build(self, embed_dim: int) -> None:
        cfg = self.config
        self.classifier = nn.Sequential(
            nn.Linear(3 * embed_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.num_answers),
        )
        generator = torch.Generator().manual_seed(cfg.init_seed)
        with torch.no_grad():
            for layer in self.classifier:
                if isinstance(layer, nn.Linear):
                    bound = layer.in_features ** -0.5
                    layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=generator))
                    layer.bias.zero_()
        self.classifier.to(self.log_scale.device)
        self.embed_dim = embed_dim

    def attach(self, model) -> None:
        """Size the classifier from the backbone's joint embedding (called by the wrapper)."""
        if self.classifier is None:
            self._build(model.backbone.dims.embed_dim)

    def forward(self, model, batch: dict) -> TaskOutput:
        """batch: video (frames or VideoFeatures), frame_mask (optional), question (B strings) or text
        (TextFeatures [B]), answer [B] long (index in the vocabulary, -1 = not in it: no loss, counted
        wrong), optional question_type (B strings, for per-type accuracy). scores: [B, num_answers]."""
        self.attach(model)
        text_input = batch["text"] if "text" in batch else [
            self.config.template.format(question=q) for q in batch["question"]]
        video, text = model.encode_inputs(batch["video"], text_input, batch.get("frame_mask"))
        b = video.batch_size
        if text.batch_size != b:
            raise ValueError(f"open_qa batch: {b} videos but {text.batch_size} questions; they must align")
        pairs = torch.arange(b, device=video.frame_emb.device)
        video, text, losses = model.adapt(video, text, text_to_video=pairs)
        v, q = video_embedding(video), text_embedding(text)
        scores = self.classifier(torch.cat([v, q, v * q], dim=-1))
        answer: Tensor | None = batch.get("answer")
        if answer is not None:
            answer = answer.to(scores.device)
            known = answer >= 0
            # An all-unknown batch still gives a (zero) loss connected to the graph.
            losses["open_qa"] = (F.cross_entropy(scores[known], answer[known]) if known.any()
                                 else scores.sum() * 0.0)
        loss = sum(losses.values(), torch.zeros((), device=scores.device))
        return TaskOutput(loss=loss, scores=scores, losses=losses)
