from __future__ import annotations

from torch import Tensor

from ...core.adapter import Adapter, AdapterOutput, register_adapter
from ...core.features import TextFeatures, VideoFeatures
from ...core.pooling import pair_cosine, text_embedding, video_embedding
from .config import SingleFrameConfig
from .modules import ensemble, frame_cosines, keep_frame, random_real_frame


@register_adapter("single_frame")
class SingleFrame(Adapter):
    """Singularity's baseline: train on one random frame per video, score by the mean or max over frames at test time.

    In training each video is cut to one of its real frames, drawn uniformly (T = 1 for every adapter,
    head and loss after it). At inference the video keeps all its frames and a text's score is the mean
    (or max, config `ensemble`) over the real frames of the frame-text cosine; the model adds
    (that score - dual cosine) through `extra_similarity`, so the dual encoder's matrix is the
    ensembled score. No weights. List it before other video adapters (it replaces the frames they see).
    """

    config_class = SingleFrameConfig
    stage = "video"

    def forward(self, video, text, ctx) -> AdapterOutput:
        if video is None or not self.training:
            return AdapterOutput(video=video, text=text)
        if video.video_emb is not None:
            raise ValueError(
                "single_frame: the video already has a pooled embedding (video_emb) made from all its frames; "
                "list single_frame before the adapter that pools"
            )
        return AdapterOutput(video=keep_frame(video, random_real_frame(video.frame_mask)), text=text)

    def extra_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor | None:
        if self.training:  # one frame per video: its cosine is already the score
            return None
        scores = ensemble(frame_cosines(text.text_emb, video.frame_emb), video.frame_mask[None], self.config.ensemble)
        return scores - text_embedding(text) @ video_embedding(video).T

    def extra_pair_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor | None:
        if self.training:
            return None
        cosines = frame_cosines(text.text_emb, video.frame_emb, pairs=True)
        return ensemble(cosines, video.frame_mask, self.config.ensemble) - pair_cosine(text, video)
