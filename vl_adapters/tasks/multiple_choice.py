"""Multiple-choice video QA: score each candidate against its own video; variable K with a mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.config import ConfigError, TaskConfig
from .base import TaskHead, TaskOutput, register_task

LOSSES = ("cross_entropy", "hinge")


@dataclass
class MultipleChoiceConfig(TaskConfig):
    loss: str = "cross_entropy"  # or "hinge": Tem-Adapter's max(0, margin + s_wrong - s_right), averaged
    margin: float = 1.0
    template: str = "{question} {answer}"  # used unless an adapter formats candidates itself

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"MultipleChoiceConfig.loss must be one of {LOSSES}, got {self.loss!r}")


@register_task("multiple_choice")
class MultipleChoiceHead(TaskHead):
    config_class = MultipleChoiceConfig

    def candidate_texts(self, model, questions: list[str], answers: list[list[str]]) -> list[str]:
        """Flattened [B*K] texts to encode, K = the longest candidate list (padding slots are '')."""
        k = max(len(a) for a in answers)
        texts = []
        for question, options in zip(questions, answers, strict=True):
            formatted = model.format_candidates(question, options)
            if formatted is None:
                formatted = [self.config.template.format(question=question, answer=a) for a in options]
            texts.extend(formatted + [""] * (k - len(options)))
        return texts

    def forward(self, model, batch: dict) -> TaskOutput:
        """batch: video, frame_mask, candidate_mask [B,K] bool, answer [B] (index of the right candidate),
        and either question (B strings) + candidates (B lists of strings) or text (TextFeatures [B*K])."""
        mask: Tensor = batch["candidate_mask"]
        b, k = mask.shape
        if "text" in batch:
            text_input = batch["text"]
        else:
            text_input = self.candidate_texts(model, batch["question"], batch["candidates"])
        video, text = model.encode_inputs(batch["video"], text_input, batch.get("frame_mask"))
        mask = mask.to(video.frame_emb.device)
        if video.batch_size != b or text.batch_size != b * k:
            raise ValueError(
                f"multiple-choice batch: candidate_mask is [{b}, {k}], so expected {b} videos and {b * k} "
                f"candidate texts, got {video.batch_size} and {text.batch_size}"
            )
        if not mask.any(1).all():
            empty = (~mask.any(1)).nonzero().flatten().tolist()
            raise ValueError(f"multiple-choice batch: candidate_mask has no candidate for rows {empty}")
        answer = batch.get("answer")
        owner = torch.arange(b, device=mask.device).repeat_interleave(k)
        guidance = None
        if answer is not None:
            answer = answer.to(mask.device)
            if not mask[torch.arange(b, device=mask.device), answer].all():
                raise ValueError("multiple-choice batch: an answer index points at a masked-out candidate")
            guidance = text.index(torch.arange(b, device=mask.device) * k + answer)
        video, text, losses = model.adapt(video, text, text_to_video=owner, guidance=guidance)
        scores = model.score_pairs(text, video.index(owner)).view(b, k)
        scores = scores.masked_fill(~mask, float("-inf"))
        if answer is not None:
            losses["multiple_choice"] = self._loss(scores, answer, mask)
        loss = sum(losses.values(), torch.zeros((), device=scores.device))
        return TaskOutput(loss=loss, scores=scores, losses=losses)

    def _loss(self, scores: Tensor, answer: Tensor, mask: Tensor) -> Tensor:
        if self.config.loss == "cross_entropy":
            return F.cross_entropy(scores, answer)
        right = scores.gather(1, answer[:, None])
        wrong = mask.clone()
        wrong[torch.arange(len(answer)), answer] = False
        hinge = (self.config.margin + scores - right).clamp_min(0) * wrong
        return hinge.sum(1).mean()
