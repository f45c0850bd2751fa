from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum
from torch import Tensor, nn

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.features import FeatureShapeError, TextFeatures, VideoFeatures
from ...core.pooling import text_embedding, video_embedding
from .config import XClipConfig
from .modules import aosm

# The paper's position-mixing matrices: which grain each one re-weights, over words (L) or frames (T).
_MIXING = {"video_word": "L", "sentence_frame": "T", "frame_word_words": "L", "frame_word_frames": "T",
           "frame_word_then_frames": "T", "frame_word_then_words": "L"}


@register_adapter("xclip")
class XClip(Adapter):
    """X-CLIP: video-sentence, video-word, frame-sentence and frame-word scores, each aggregated by AOSM; a dual encoder.

    Words are the text tower's token states projected to the joint space (a learned linear: the
    backbone's own text projection is not part of the feature contract); frames are the frame
    embeddings after any video adapter; the video is the pooled video embedding. The four scores are
    averaged as in the paper. At retrieval the model adds `gate * (X-CLIP score - dual cosine)` to the
    dual cosine through `extra_similarity`: the gate starts at `gate_init` (0: identity at
    initialisation; 1: the paper's score). Each side is computed from its own features only, so
    videos are indexed once and searched by many texts; the task loss trains it through the score.
    """

    config_class = XClipConfig
    stage = "dual"

    def __init__(self, config: XClipConfig, dims) -> None:
        super().__init__(config, dims)
        width = dims.embed_dim
        self.word_proj = nn.Linear(dims.text_width, width)
        self.gate = nn.Parameter(torch.tensor(float(config.gate_init)))
        if config.reweight:
            self.sentence_video_weight = nn.Parameter(torch.eye(width))
            self.word_frame_weight = nn.Parameter(torch.eye(width))
            sizes = {"L": dims.context_length, "T": config.max_frames}
            self.mixing = nn.ParameterDict({k: nn.Parameter(torch.eye(sizes[axis])) for k, axis in _MIXING.items()})

    # ---- each side from its own features -------------------------------------------------
    def check_text(self, text: TextFeatures) -> int:
        """The texts' real length (up to the last real token), after checking they carry words."""
        if text.token_states is None:
            raise FeatureShapeError("xclip needs TextFeatures.token_states and token_mask (the words)")
        mask = text.token_mask
        positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
        length = max(int((mask * positions).amax()), 1) if mask.numel() else 1
        if length > self.dims.context_length:
            raise FeatureShapeError(
                f"xclip: texts of {length} tokens exceed the backbone's context_length {self.dims.context_length}"
            )
        return length

    def check_video(self, video: VideoFeatures) -> None:
        if self.config.reweight and video.num_frames > self.config.max_frames:
            raise FeatureShapeError(
                f"xclip: {video.num_frames} frames exceed max_frames={self.config.max_frames}; raise it in the config"
            )

    def text_side(self, text: TextFeatures) -> tuple[Tensor, Tensor, Tensor]:
        """(sentence [A,D], words [A,L,D], word_mask [A,L]), unit-norm; trailing padding trimmed."""
        length = self.check_text(text)
        mask = text.token_mask
        words = F.normalize(self.word_proj(text.token_states[:, :length]), dim=-1)
        return text_embedding(text), words, mask[:, :length]

    def video_side(self, video: VideoFeatures) -> tuple[Tensor, Tensor, Tensor]:
        """(video [B,D], frames [B,T,D], frame_mask [B,T]), unit-norm."""
        self.check_video(video)
        return video_embedding(video), F.normalize(video.frame_emb, dim=-1), video.frame_mask

    # ---- the multi-grained score -----------------------------------------------------------
    def score(self, sentence, words, word_mask, pooled, frames, frame_mask, *, pairs: bool = False) -> Tensor:
        """X-CLIP's score: [A,B] for every text against every video, or [P] for aligned pairs (pairs=True)."""
        reweight = self.config.reweight
        keyed = sentence @ self.sentence_video_weight if reweight else sentence
        local = words @ self.word_frame_weight if reweight else words
        if pairs:  # video p goes with text p: a video axis of size 1
            video_sentence = (keyed * pooled).sum(-1)[:, None]
            video_word = einsum(words, pooled, "p l d, p d -> p l")[..., None]
            frame_sentence = einsum(sentence, frames, "p d, p t d -> p t")[:, None]
            frame_word = einsum(local, frames, "p l d, p t d -> p l t")[:, :, None]
            frame_mask = frame_mask[:, None]  # [P, 1, T]
        else:
            video_sentence = keyed @ pooled.T
            video_word = einsum(words, pooled, "a l d, b d -> a l b")
            frame_sentence = einsum(sentence, frames, "a d, b t d -> a b t")
            frame_word = einsum(local, frames, "a l d, b t d -> a l b t")
            frame_mask = frame_mask[None]  # [1, B, T]
        word_mask3 = word_mask[:, :, None]
        mix = self.mixing if reweight else {}
        tau = self.config.aosm_temperature
        video_word = aosm(video_word, word_mask3, 1, tau, mix.get("video_word"))
        frame_sentence = aosm(frame_sentence, frame_mask, 2, tau, mix.get("sentence_frame"))
        per_frame = aosm(frame_word, word_mask3[..., None], 1, tau, mix.get("frame_word_words"))  # [A, B, T]
        per_word = aosm(frame_word, frame_mask[:, None], 3, tau, mix.get("frame_word_frames"))  # [A, L, B]
        frame_word = 0.5 * (aosm(per_frame, frame_mask, 2, tau, mix.get("frame_word_then_frames"))
                            + aosm(per_word, word_mask3, 1, tau, mix.get("frame_word_then_words")))
        total = 0.25 * (video_sentence + video_word + frame_sentence + frame_word)
        return total[:, 0] if pairs else total

    def extra_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor:
        """[num_texts, num_videos] gate * (X-CLIP score - dual cosine), scored in blocks."""
        sentence, words, word_mask = self.text_side(text)
        pooled, frames, frame_mask = self.video_side(video)
        per_pair = words.shape[1] * frames.shape[1]
        video_block = max(1, min(pooled.shape[0], self.config.chunk_elements // per_pair))
        text_block = max(1, self.config.chunk_elements // (video_block * per_pair))
        rows = []
        for a in range(0, sentence.shape[0], text_block):
            t = slice(a, a + text_block)
            rows.append(torch.cat([
                self.score(sentence[t], words[t], word_mask[t], pooled[v], frames[v], frame_mask[v])
                for v in (slice(b, b + video_block) for b in range(0, pooled.shape[0], video_block))
            ], dim=1))
        return self.gate * (torch.cat(rows) - sentence @ pooled.T)

    def extra_pair_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor:
        """[P] the same for aligned pairs (multiple choice), without scoring every text against every video."""
        sentence, words, word_mask = self.text_side(text)
        pooled, frames, frame_mask = self.video_side(video)
        block = max(1, self.config.chunk_elements // (words.shape[1] * frames.shape[1]))
        scores = torch.cat([
            self.score(sentence[p], words[p], word_mask[p], pooled[p], frames[p], frame_mask[p], pairs=True)
            for p in (slice(i, i + block) for i in range(0, sentence.shape[0], block))
        ])
        return self.gate * (scores - (sentence * pooled).sum(-1))

    def forward(self, video, text, ctx) -> AdapterOutput:
        # The features pass through unchanged; checking them here reports bad input when it is encoded.
        if text is not None:
            self.check_text(text)
        if video is not None:
            self.check_video(video)
        return AdapterOutput(video=video, text=text)
