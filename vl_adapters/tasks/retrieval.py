"""Text-video retrieval: symmetric InfoNCE over the similarity matrix, plus matching for cross adapters."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..core.config import TaskConfig
from ..core.distributed import batch_sizes, gather_rows, is_distributed
from ..core.features import TextFeatures, VideoFeatures
from .base import TaskHead, TaskOutput, register_task


@dataclass
class RetrievalConfig(TaskConfig):
    rerank_k: int = 50  # cross adapters re-rank each text's top-k videos; <= 0 means all
    matching_weight: float = 1.0  # weight of the matching loss that trains cross adapters


@register_task("retrieval")
class RetrievalHead(TaskHead):
    config_class = RetrievalConfig

    def forward(self, model, batch: dict) -> TaskOutput:
        """batch: video (frames or VideoFeatures), frame_mask (optional), text (strings or TextFeatures);
        text i describes video i."""
        video, text = model.encode_inputs(batch["video"], batch["text"], batch.get("frame_mask"))
        b = video.batch_size
        if text.batch_size != b:
            raise ValueError(f"retrieval batch: {b} videos but {text.batch_size} texts; pairs must align")
        if b == 1 and not is_distributed():
            warnings.warn("retrieval: a batch of one pair has no negatives, so its contrastive loss is 0 and "
                          "teaches nothing; use batches of 2 or more pairs", RuntimeWarning, stacklevel=2)
        pairs = torch.arange(b, device=video.frame_emb.device)
        video, text, losses = model.adapt(video, text, text_to_video=pairs, guidance=text)
        sims = model.dual_similarity(text, video)
        if is_distributed():
            # Negatives from every rank, with gradients: local texts against all videos and all texts
            # against local videos. Each rank averages over its own rows; DDP's gradient mean over
            # ranks then equals the gradient of the global-batch loss (all_gather's backward sums the
            # other ranks' gradients into this rank's slice).
            # Ranks may hold different batch sizes (skipped bad videos): rows are padded for the
            # collective and the padding dropped again.
            sizes = batch_sizes(b, video.frame_emb.device)
            targets = pairs + sum(sizes[: dist.get_rank()])
            t2v = self.scale * model.dual_similarity(text, gather_features(video, sizes))
            v2t = self.scale * model.dual_similarity(gather_features(text, sizes), video).T
            losses["retrieval"] = 0.5 * (F.cross_entropy(t2v, targets) + F.cross_entropy(v2t, targets))
        else:
            logits = self.scale * sims
            losses["retrieval"] = 0.5 * (F.cross_entropy(logits, pairs) + F.cross_entropy(logits.T, pairs))
        if model.cross_adapters:
            losses["matching"] = self.config.matching_weight * self._matching_loss(model, video, text, sims)
        return TaskOutput(loss=sum(losses.values()), scores=sims, losses=losses)

    def _matching_loss(self, model, video: VideoFeatures, text: TextFeatures, sims: torch.Tensor) -> torch.Tensor:
        """ALBEF-style pairs: each positive, each text with its hardest other video, each video with its
        hardest other text, scored by the cross adapters.

        A matching head learns its own offset, so its logits get ALBEF's binary cross-entropy. Without
        one, pairs are scored by the temperature-scaled cosine, which has no offset: under BCE a hard
        negative at cosine 0.3 costs ~30 nats at scale 100 and the term swamps the retrieval loss. They
        are ranked instead, each positive against its hard negative by softmax: the retrieval InfoNCE
        restricted to the hardest negative, so at initialisation (cross scores = dual scores) it never
        exceeds the retrieval loss, and it is what re-ranking uses (the order of a text's pairs).
        """
        b = sims.shape[0]
        eye = torch.eye(b, dtype=torch.bool, device=sims.device)
        masked = sims.detach().masked_fill(eye, float("-inf"))
        arange = torch.arange(b, device=sims.device)
        hard_video = masked.argmax(1) if b > 1 else arange
        hard_text = masked.argmax(0) if b > 1 else arange
        text_idx = torch.cat([arange, arange, hard_text])
        video_idx = torch.cat([arange, hard_video, arange])
        scored = model.score_pairs(text.index(text_idx), video.index(video_idx), with_losses=True)
        if scored.from_head:
            labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).to(sims.device)
            loss = F.binary_cross_entropy_with_logits(scored.logits, labels)
        else:
            positive, text_negative, video_negative = scored.logits.split(b)
            loss = 0.5 * (F.softplus(text_negative - positive).mean() + F.softplus(video_negative - positive).mean())
        return loss + sum(scored.losses.values(), torch.zeros((), device=sims.device))


def gather_features(features, sizes: list[int]):
    """VideoFeatures/TextFeatures from every rank concatenated along the batch axis (rank order), with
    gradients. `sizes`: each rank's batch size. Token (and frame) axes are padded to the longest rank's."""
    changes = {}
    for field in dataclasses.fields(features):
        value = getattr(features, field.name)
        if isinstance(value, torch.Tensor):
            changes[field.name] = gather_rows(value, sizes)
        elif field.name == "texts" and value is not None:
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, list(value))
            changes[field.name] = [t for part in parts for t in part]
    return dataclasses.replace(features, **changes)
