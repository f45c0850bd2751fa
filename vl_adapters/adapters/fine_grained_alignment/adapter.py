from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from ...core.adapter import Adapter, AdapterOutput, FusionInputs, register_adapter
from ...core.contrastive import bounded_scale, infonce, two_way_infonce
from ...core.distributed import batch_sizes, gather_rows, is_distributed, rank
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
        self._paired = None  # (inputs, similarity) of the last retrieval step's contrast, for extra_similarity

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
        similarity = self._kept_similarity(text, video)
        if similarity is None:
            similarity = self.fine_similarity(*self.project_words(text), *self.project_patches(video))
        return self.similarity_weight * similarity

    def extra_pair_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor:
        """[P] the same term for aligned pairs (multiple-choice candidates against their video, re-ranking)."""
        return self.similarity_weight * self.pair_fine_similarity(*self.project_words(text),
                                                                  *self.project_patches(video))

    # ---- training ---------------------------------------------------------------------------
    def forward(self, video, text, ctx) -> AdapterOutput:
        self._paired = None
        if video is None or text is None:
            return AdapterOutput(video=video, text=text)
        if ctx.guidance is not None:  # the text describing each video (training), one per video
            pairs_text, text_to_video = ctx.guidance, torch.arange(video.batch_size, device=video.frame_emb.device)
        elif ctx.task == "retrieval" and ctx.text_to_video is not None:
            pairs_text, text_to_video = text, ctx.text_to_video
        else:  # e.g. multiple-choice candidates at evaluation: wrong answers are not positives
            return AdapterOutput(video=video, text=text)
        loss = self.contrastive_loss(pairs_text, video, text_to_video, keep=ctx.task == "retrieval")
        return AdapterOutput(video=video, text=text, losses={"fine_grained": self.config.weight * loss})

    def contrastive_loss(self, text: TextFeatures, video: VideoFeatures, text_to_video: Tensor, *,
                         keep: bool = False) -> Tensor:
        """Two-way InfoNCE: local texts against all videos, local videos against all texts (all ranks;
        ranks may hold different numbers of texts and videos, and texts of different lengths).

        One process: both directions read one [texts, videos] similarity, and with `keep` (a retrieval
        step, whose head scores the same batch next) extra_similarity reuses it once instead of computing
        it again."""
        words, word_mask = self.project_words(text)
        patches, frame_mask = self.project_patches(video)
        text_to_video = text_to_video.to(words.device)
        scale = bounded_scale(self.log_inv_temperature)
        if not is_distributed():
            similarity = self.fine_similarity(words, word_mask, patches, frame_mask)
            if keep and self.training and torch.is_grad_enabled():
                self._paired = ((text.token_states, text.token_mask, video.patch_tokens, video.frame_mask), similarity)
            return two_way_infonce(scale * similarity, F.one_hot(text_to_video, video.batch_size).bool())
        video_sizes = batch_sizes(video.batch_size, words.device)
        text_sizes = batch_sizes(text.batch_size, words.device)
        offset = sum(video_sizes[: rank()])
        all_words, all_word_mask = gather_rows(words, text_sizes), gather_rows(word_mask, text_sizes)
        all_patches, all_frame_mask = gather_rows(patches, video_sizes), gather_rows(frame_mask, video_sizes)
        all_text_to_video = gather_rows(text_to_video + offset, text_sizes)
        text_logits = scale * self.fine_similarity(words, word_mask, all_patches, all_frame_mask)
        video_logits = scale * self.fine_similarity(all_words, all_word_mask, patches, frame_mask).T
        local_videos = torch.arange(video.batch_size, device=words.device) + offset
        to_videos = F.one_hot(text_to_video + offset, text_logits.shape[1]).bool()
        to_texts = all_text_to_video[None, :] == local_videos[:, None]  # [Bv, Nt_all]
        return 0.5 * (infonce(text_logits, to_videos) + infonce(video_logits, to_texts))

    def __getstate__(self):
        # a copy of the model (merge, deepcopy) does not carry a step's similarity, which holds its graph
        return {**super().__getstate__(), "_paired": None}

    def _kept_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor | None:
        """The similarity contrastive_loss kept, if it was of exactly these features (once: it is dropped)."""
        kept, self._paired = self._paired, None
        if kept is None or not (self.training and torch.is_grad_enabled()):
            return None
        inputs, similarity = kept
        given = (text.token_states, text.token_mask, video.patch_tokens, video.frame_mask)
        return similarity if all(a is b for a, b in zip(inputs, given, strict=True)) else None


def _mean_weights(mask: Tensor, dtype) -> Tensor:
    """Weights of a masked mean over the last axis: 1/count where mask is True, else 0."""
    return mask.to(dtype) / mask.sum(-1, keepdim=True).clamp_min(1)
