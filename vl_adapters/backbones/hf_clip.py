"""transformers CLIPModel backbones: `hf:<model id or local directory>`."""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor

from ..core.adapter import BackboneDims
from ..core.registry import BACKBONES
from .base import Backbone


class HFClipBackbone(Backbone):
    family = "hf"

    def __init__(self, *, spec: str, model, tokenizer, mean, std, **kwargs) -> None:
        vision, text = model.config.vision_config, model.config.text_config
        side = vision.image_size // vision.patch_size
        dims = BackboneDims(
            embed_dim=int(model.config.projection_dim),
            vision_width=int(vision.hidden_size),
            text_width=int(text.hidden_size),
            grid=(side, side),
            context_length=int(text.max_position_embeddings),
            image_size=int(vision.image_size),
            text_layers=int(text.num_hidden_layers),
        )
        super().__init__(spec=spec, model=model, dims=dims, mean=mean, std=std,
                         logit_scale=float(model.logit_scale.detach().exp()), **kwargs)
        self.tokenizer = tokenizer

    def vision_tower(self):
        return self.model.vision_model

    def _encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        vision = self.model.vision_model
        out = vision(pixel_values=images.to(next(vision.parameters()).dtype))
        # post_layernorm on the patch tokens too, as open_clip's ln_post does.
        patches = vision.post_layernorm(out.last_hidden_state[:, 1:])
        return self.model.visual_projection(out.pooler_output), patches

    def _encode_tokens(self, input_ids: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model.text_model(input_ids=input_ids, attention_mask=token_mask.long())
        return self.model.text_projection(out.pooler_output), out.last_hidden_state

    def tokenize(self, texts):
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.dims.context_length, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"].bool()

    def token_mask_from_ids(self, input_ids: Tensor) -> Tensor:
        return input_ids != self.tokenizer.pad_token_id

    def token_count(self, text: str) -> int | None:
        return len(self.tokenizer.tokenize(text)) + self.tokenizer.num_special_tokens_to_add()


_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@BACKBONES.register("hf")
def load_hf_clip(name: str, *, pretrained: str | None = None, **kwargs) -> HFClipBackbone:
    """`name` is a Hub id (downloads on a user's machine) or a local directory saved by save_pretrained."""
    from transformers import AutoTokenizer, CLIPModel

    source = pretrained or name
    if not Path(source).is_dir():
        from .base import BackboneWeightsError
        from .hub import cached, hub_unreachable

        why = None if cached(source, ["config.json"]) else hub_unreachable()
        if why:
            raise BackboneWeightsError(f"hf:{name}: {source!r} is no local directory, and the Hugging Face hub, "
                                       f"where it would be downloaded from, {why}; give a directory saved with "
                                       "save_pretrained")
    model = CLIPModel.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    mean, std = _CLIP_MEAN, _CLIP_STD
    processor_file = Path(source) / "preprocessor_config.json"
    if processor_file.exists():
        processor = json.loads(processor_file.read_text())
        mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    backbone = HFClipBackbone(spec=f"hf:{name}", model=model, tokenizer=tokenizer, mean=mean, std=std, **kwargs)
    backbone.pretrained = str(Path(pretrained).resolve()) if pretrained and Path(pretrained).is_dir() else pretrained
    return backbone
