from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from ...core.adapter import Adapter, AdapterOutput, FusionInputs, register_adapter
from ...core.distributed import all_gather_with_grad, is_distributed
from ...core.features import FeatureShapeError, TextFeatures, VideoFeatures
from .config import FineGrainedAlignmentConfig


@register_adapter("fine_grained_alignment")
class FineGrainedAlignment(Adapter):
    """TW-BERT's fine-grained align-before-fuse: word-to-best-patch similarity, two-way InfoNCE; a dual encoder.

    Words and patches projected to a small space; s(text, video) = mean over the text's words and the
    video's frames of the best-matching patch in that frame (cosine). Trained by a two-way InfoNCE with
    in-batch negatives (gathered across ranks); it adds `weight * s` to the dual score through
    `extra_similarity` (retrieval) and `extra_pair_similarity` (multiple choice, re-ranking), with
    `weight` a learnable scalar that starts at zero (identity at init).

    Alone, it projects the frozen token states and patch tokens itself. Wrapped beside a fusion adapter
    that shows its inputs (trajectory_word), it binds to it: the contrast runs on the projected words and
    patches that adapter's encoder fuses (its `fusion_words` / `fusion_patches`, under 256-d heads as in
    ALBEF), so the loss aligns what is fused and trains the fusion's input projections.

    A "dual" adapter: it never changes the features and never mixes the two sides at inference, so
    videos are still indexed once and searched by many texts.
    """

    config_class = FineGrainedAlignmentConfig
    stage = "dual"

    def __init__(self, config: FineGrainedAlignmentConfig, dims) -> None:
        super().__init__(config, dims)
        self._build_heads(word_width=dims.text_width, patch_width=dims.vision_width)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature)))
        self.similarity_weight = nn.Parameter(torch.zeros(()))
        self.fusion: FusionInputs | None = None

    def _build_heads(self, *, word_width: int, patch_width: int) -> None:
        self.word_proj = nn.Linear(word_width, self.config.dim)
        self.patch_proj = nn.Linear(patch_width, self.config.dim)

    def bind(self, adapters) -> None:
        partners = [a for a in adapters if a is not self and isinstance(a, FusionInputs)]
        if len(partners) > 1:
            from ...core.model import CompositionError

            raise CompositionError(
                f"fine_grained_alignment aligns the inputs of one fusion encoder; {[a.name for a in partners]} "
                "all offer theirs, so keep one of them"
            )
        if partners:
            partner = partners[0]
            # A plain attribute, not a submodule: the partner's weights belong to (and are saved with) it.
            object.__setattr__(self, "fusion", partner)
            self._build_heads(word_width=partner.fusion_width, patch_width=partner.fusion_width)

    # ---- the fine-grained similarity ------------------------------------------------------
    def project_words(self, text: TextFeatures) -> tuple[Tensor, Tensor]:
        if text.token_states is None:
            raise FeatureShapeError("fine_grained_alignment needs TextFeatures.token_states and token_mask")
        words = text.token_states if self.fusion is None else self.fusion.fusion_words(text)
        return F.normalize(self.word_proj(words), dim=-1), text.token_mask

    def project_patches(self, video: VideoFeatures) -> tuple[Tensor, Tensor]:
        if video.patch_tokens is None:
            raise FeatureShapeError("fine_grained_alignment needs VideoFeatures.patch_tokens [B,T,N,C]")
        patches = video.patch_tokens if self.fusion is None else self.fusion.fusion_patches(video)
        return F.normalize(self.patch_proj(patches), dim=-1), video.frame_mask

    def fine_similarity(self, words: Tensor, word_mask: Tensor, patches: Tensor, frame_mask: Tensor) -> Tensor:
        """words [A,L,d], word_mask [A,L], patches [B,T,N,d], frame_mask [B,T] -> [A,B] in [-1, 1].

        Computed in blocks so that [a, b, L, T, N] stays under chunk_elements; max over patches keeps
        only indices for the backward, so the blocks are freed as they go."""
        _, length, _ = words.shape
        _, frames, patches_per_frame, _ = patches.shape
        per_pair = length * frames * patches_per_frame
        word_weight, frame_weight = _mean_weights(word_mask, words.dtype), _mean_weights(frame_mask, words.dtype)
        video_block = max(1, min(patches.shape[0], self.config.chunk_elements // per_pair))
        text_block = max(1, self.config.chunk_elements // (video_block * per_pair))
        rows = []
        for a in range(0, words.shape[0], text_block):
            row = []
            for b in range(0, patches.shape[0], video_block):
                dots = einsum(words[a:a + text_block], patches[b:b + video_block], "a l d, b t n d -> a b l t n")
                best = dots.max(dim=-1).values
                row.append(einsum(best, word_weight[a:a + text_block], frame_weight[b:b + video_block],
                                  "a b l t, a l, b t -> a b"))
            rows.append(torch.cat(row, dim=1))
        return torch.cat(rows, dim=0)

    def pair_fine_similarity(self, words: Tensor, word_mask: Tensor, patches: Tensor, frame_mask: Tensor) -> Tensor:
        """Aligned pairs: words [P,L,d], patches [P,T,N,d] -> [P], the diagonal of fine_similarity."""
        _, length, _ = words.shape
        _, frames, patches_per_frame, _ = patches.shape
        word_weight, frame_weight = _mean_weights(word_mask, words.dtype), _mean_weights(frame_mask, words.dtype)
        block = max(1, self.config.chunk_elements // (length * frames * patches_per_frame))
        out = []
        for p in range(0, words.shape[0], block):
            part = slice(p, p + block)
            best = einsum(words[part], patches[part], "p l d, p t n d -> p l t n").max(dim=-1).values
            out.append(einsum(best, word_weight[part], frame_weight[part], "p l t, p l, p t -> p"))
        return torch.cat(out)

    def extra_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor:
        """[num_texts, num_videos] term the model adds to the dual cosine matrix."""
        return self.similarity_weight * self.fine_similarity(*self.project_words(text), *self.project_patches(video))

    def extra_pair_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor:
        """[P] the same term for aligned pairs (multiple-choice candidates against their video, re-ranking)."""
        return self.similarity_weight * self.pair_fine_similarity(*self.project_words(text),
                                                                  *self.project_patches(video))

    # ---- training ---------------------------------------------------------------------------
    def forward(self, video, text, ctx) -> AdapterOutput:
        if video is None or text is None:
            return AdapterOutput(video=video, text=text)
        if ctx.guidance is not None:  # the text describing each video (training), one per video
            pairs_text, text_to_video = ctx.guidance, torch.arange(video.batch_size, device=video.frame_emb.device)
        elif ctx.task == "retrieval" and ctx.text_to_video is not None:
            pairs_text, text_to_video = text, ctx.text_to_video
        else:  # e.g. multiple-choice candidates at evaluation: wrong answers are not positives
            return AdapterOutput(video=video, text=text)
        loss = self.contrastive_loss(pairs_text, video, text_to_video)
        return AdapterOutput(video=video, text=text, losses={"fine_grained": self.config.weight * loss})

    def contrastive_loss(self, text: TextFeatures, video: VideoFeatures, text_to_video: Tensor) -> Tensor:
        """Two-way InfoNCE: local texts against all videos, local videos against all texts (all ranks;
        ranks may hold different numbers of texts and videos, and texts of different lengths)."""
        words, word_mask = self.project_words(text)
        patches, frame_mask = self.project_patches(video)
        text_to_video = text_to_video.to(words.device)
        video_sizes = _sizes(video.batch_size, words.device)
        text_sizes = _sizes(text.batch_size, words.device)
        offset = sum(video_sizes[: _rank()])
        all_words, all_word_mask = _gather_rows(words, text_sizes), _gather_rows(word_mask, text_sizes)
        all_patches, all_frame_mask = _gather_rows(patches, video_sizes), _gather_rows(frame_mask, video_sizes)
        all_text_to_video = _gather_rows(text_to_video + offset, text_sizes)
        scale = self.log_inv_temperature.clamp(max=math.log(100.0)).exp()
        text_logits = scale * self.fine_similarity(words, word_mask, all_patches, all_frame_mask)
        video_logits = scale * self.fine_similarity(all_words, all_word_mask, patches, frame_mask).T
        text_loss = F.cross_entropy(text_logits, text_to_video + offset)
        local_videos = torch.arange(video.batch_size, device=words.device) + offset
        positive = all_text_to_video[None, :] == local_videos[:, None]  # [Bv, Nt_all]
        has_positive = positive.any(1)
        log_prob = video_logits.log_softmax(1)
        video_loss = -(log_prob.masked_fill(~positive, torch.finfo(log_prob.dtype).min).logsumexp(1))[has_positive].mean()
        return 0.5 * (text_loss + video_loss)


def _mean_weights(mask: Tensor, dtype) -> Tensor:
    """Weights of a masked mean over the last axis: 1/count where mask is True, else 0."""
    return mask.to(dtype) / mask.sum(-1, keepdim=True).clamp_min(1)


def _rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _sizes(local: int, device) -> list[int]:
    """Every rank's row count (one entry without a process group)."""
    if not is_distributed():
        return [local]
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([local], device=device))
    return [int(n) for n in sizes]


def _gather_rows(tensor: Tensor, sizes: list[int]) -> Tensor:
    """Rows of every rank concatenated in rank order, with gradients for floating tensors. Axis 1 (tokens,
    frames) is padded to the largest across ranks and the batch axis to the largest batch for the
    collective; the batch padding is dropped again. Without a process group: unchanged."""
    if not is_distributed():
        return tensor
    if tensor.ndim > 1:
        length = torch.tensor([tensor.shape[1]], device=tensor.device)
        dist.all_reduce(length, op=dist.ReduceOp.MAX)
        pad = [0, 0] * (tensor.ndim - 2) + [0, int(length) - tensor.shape[1]]
        tensor = F.pad(tensor, pad)
    longest = max(sizes)
    if tensor.shape[0] < longest:
        tensor = torch.cat([tensor, tensor.new_zeros(longest - tensor.shape[0], *tensor.shape[1:])])
    if tensor.is_floating_point():
        gathered = all_gather_with_grad(tensor.contiguous())
    else:
        parts = [torch.empty_like(tensor) for _ in sizes]
        dist.all_gather(parts, tensor.contiguous())
        gathered = torch.cat(parts)
    keep = torch.cat([torch.arange(n) + r * longest for r, n in enumerate(sizes)]).to(gathered.device)
    return gathered.index_select(0, keep)
