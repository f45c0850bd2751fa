"""The wrapped model: a frozen backbone, adapters in stage order, and a task head."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .adapter import Adapter, AdapterConfig, AdapterContext, build_adapter
from .features import TextFeatures, VideoFeatures, check_against
from .io import load_json, load_tensors, readable_directory, save_json, save_tensors
from .pooling import cosine_matrix, pair_cosine, topk_rerank_pairs

STAGE_ORDER = {"backbone": 0, "video": 1, "text": 1, "dual": 1, "cross": 2}
ADAPTERS_FILE, CONFIG_FILE = "adapters.safetensors", "adapters.json"


class PairScores(NamedTuple):
    """score_pairs(..., with_losses=True): logits [P], the cross adapters' named losses, and whether a
    matching head gave the logits (False: they are the task's temperature-scaled cosine, which has no
    learned offset)."""

    logits: Tensor
    losses: dict[str, Tensor]
    from_head: bool


class CompositionError(ValueError):
    """A list of adapters that cannot run together."""


class CacheRefusedError(RuntimeError):
    """Cached backbone features were given while an adapter inside the backbone is active."""


class BackboneMismatchError(ValueError):
    """Saved adapters were trained on other backbone weights than the ones given to load them on."""


class VideoLanguageModel(nn.Module):
    """Frozen backbone, "backbone" adapters inside it, then "video"/"text" adapters, "cross" adapters, task head.

    With "backbone" adapters the model runs its own copy of the backbone's modules, which shares the
    frozen weight tensors (no memory is doubled) and receives the injected layers and hooks: the
    backbone object given to wrap() is left as it was for every other model wrapped on it. Moving or
    casting a model (`to`, `cuda`, `half`, ...) converts its own copy of the frozen tensors, never the
    ones other models (or the caller's `backbone`) share.
    """

    def __init__(self, backbone, adapters: Sequence[Adapter], task) -> None:
        super().__init__()
        adapters = _ordered(adapters, family=getattr(backbone, "family", None))
        self._owns_backbone_modules = any(a.stage == "backbone" for a in adapters)
        if self._owns_backbone_modules:
            backbone = _private_modules(backbone)
        self.backbone = backbone
        self.adapters = nn.ModuleList(adapters)
        for adapter in self.adapters:  # partners bind before moving, so rebuilt modules move too
            adapter.bind(tuple(self.adapters))
        self.task = task
        if hasattr(task, "attach"):  # heads sized from the backbone (open_qa's classifier)
            task.attach(self)
        device = backbone.device
        self.adapters.to(device=device, dtype=torch.float32)  # adapters stay fp32 under a bf16 backbone
        self.task.to(device=device)
        for adapter in self.backbone_adapters:
            adapter.attach(backbone)
        backbone.needs_grad = any(p.requires_grad for a in self.backbone_adapters for p in a.parameters())
        from ..data.text_cache import TextFeatureStore

        self.text_store = TextFeatureStore()  # frozen_text's features (memory, spills, extract's segments)
        self.training_record: dict | None = None  # dataset, config, metrics for the model card (core/hub.py)

    # ---- the stages ---------------------------------------------------------------------
    def _stage(self, *names: str) -> list[Adapter]:
        return [a for a in self.adapters if a.stage in names]

    @property
    def backbone_adapters(self) -> list[Adapter]:
        return self._stage("backbone")

    @property
    def cross_adapters(self) -> list[Adapter]:
        return self._stage("cross")

    @property
    def uses_backbone_adapters(self) -> bool:
        return bool(self.backbone_adapters)

    @property
    def text_tower_adapted(self) -> bool:
        """A backbone adapter changes the text tower (LoRA on it): texts are encoded afresh, not cached."""
        return any(a.changes_text_tower for a in self.backbone_adapters)

    def _context(self, **kwargs) -> AdapterContext:
        return AdapterContext(task=self.task.name, encode_text=self.frozen_text, **kwargs)

    @torch.no_grad()
    def frozen_text(self, texts: Sequence[str]) -> TextFeatures:
        """The backbone's own features of `texts` (before any adapter), each distinct text encoded once:
        the text tower is frozen, so a token sequence's features never change. `text_store` keys them by
        token ids under the backbone's weight fingerprint, keeps token states trimmed to each text's real
        length (fp16), bounds its memory by bytes (spilling to disk) and reads the split's texts written
        by `extract` (store.open). Token axes are padded to the longest text of the batch. A backbone
        adapter on the text tower (LoRA) changes the tower, so it bypasses the store; vision-only ones
        (ST-Adapter, token masking) leave the text tower frozen and keep it."""
        if self.text_tower_adapted:
            return self.backbone.encode_text(list(texts)).float()
        return self.text_store.features(self.backbone, texts)

    def format_candidates(self, question: str, answers: list[str]) -> list[str] | None:
        for adapter in self.adapters:
            formatted = adapter.format_candidates(question, answers)
            if formatted is not None:
                return formatted
        return None

    # ---- encoding -------------------------------------------------------------------------
    def _backbone_video(self, video, frame_mask: Tensor | None) -> VideoFeatures:
        if isinstance(video, VideoFeatures):
            if self.uses_backbone_adapters:
                names = [a.name for a in self.backbone_adapters]
                raise CacheRefusedError(
                    f"cached video features cannot be used while backbone adapter(s) {names} change the "
                    "backbone's forward; pass frames instead (and turn the feature cache off)"
                )
            check_against(video, self.backbone.dims)
            return video.to(self.backbone.device).float()
        return self.backbone.encode_video(video, frame_mask)

    def _backbone_text(self, text) -> TextFeatures:
        if isinstance(text, TextFeatures):
            if self.text_tower_adapted:
                names = [a.name for a in self.backbone_adapters if a.changes_text_tower]
                raise CacheRefusedError(f"cached text features cannot be used while backbone adapter(s) {names} "
                                        "change the text tower; pass the strings instead")
            check_against(text, self.backbone.dims)
            return text.to(self.backbone.device).float()
        if isinstance(text, Tensor) or self.text_tower_adapted:
            return self.backbone.encode_text(text)
        return self.frozen_text(text)  # strings: each distinct text through the frozen tower once per run

    def encode_inputs(self, video, text, frame_mask: Tensor | None = None) -> tuple[VideoFeatures, TextFeatures]:
        """Backbone features (or the given cached features) for a batch, before any adapter."""
        return self._backbone_video(video, frame_mask), self._backbone_text(text)

    def encode_video(self, video, frame_mask: Tensor | None = None) -> VideoFeatures:
        """Frames [B,T,3,H,W] (or cached VideoFeatures) through the backbone and the "video"/"dual" adapters."""
        return self.adapt_video(self._backbone_video(video, frame_mask))

    def adapt_video(self, video: VideoFeatures) -> VideoFeatures:
        """The "video"/"dual" adapters on features from this model's own backbone, its backbone adapters
        included (`vl-adapters search` keeps such features in its index)."""
        ctx = self._context()
        for adapter in self._stage("video", "dual"):
            video = adapter(video, None, ctx).video
        return video

    def encode_text(self, text) -> TextFeatures:
        """Strings or token ids (or cached TextFeatures) through the backbone and the "text"/"dual" adapters."""
        text = self._backbone_text(text)
        ctx = self._context()
        for adapter in self._stage("text", "dual"):
            text = adapter(None, text, ctx).text
        return text

    def adapt(self, video: VideoFeatures, text: TextFeatures, *, text_to_video: Tensor,
              guidance: TextFeatures | None = None) -> tuple[VideoFeatures, TextFeatures, dict[str, Tensor]]:
        """Run the "video", "text" and "dual" adapters on a batch whose text i belongs to video text_to_video[i].

        A video adapter may only change the video and a text adapter only the text, which is what keeps
        the model a dual encoder; all may add auxiliary losses from the pairing. `guidance` (training
        only: the text describing each video, or one per text assigned by text_to_video) is first refined
        by the "cross" adapters that refine texts (`Adapter.refine_guidance`), so a guided video adapter
        reads the text as the cross stage will see it.
        """
        guidance = self._refined_guidance(video, guidance, text_to_video) if self.training else None
        ctx = self._context(text_to_video=text_to_video, guidance=guidance)
        losses: dict[str, Tensor] = {}
        for adapter in self._stage("video", "text", "dual"):
            out = adapter(video, text, ctx)
            if adapter.stage in ("video", "dual"):
                video = out.video
            if adapter.stage in ("text", "dual"):
                text = out.text
            losses.update({f"{adapter.name}/{k}": v for k, v in out.losses.items()})
        return video, text, losses

    def _refined_guidance(self, video: VideoFeatures, guidance: TextFeatures | None,
                          text_to_video: Tensor) -> TextFeatures | None:
        if guidance is None or not self.cross_adapters:
            return guidance
        paired = video if guidance.batch_size == video.batch_size else video.index(text_to_video)
        ctx = self._context(text_to_video=torch.arange(paired.batch_size, device=paired.frame_emb.device))
        for adapter in self.cross_adapters:
            guidance = adapter.refine_guidance(paired, guidance, ctx)
        return guidance

    # ---- scoring -------------------------------------------------------------------------
    def dual_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor:
        """[num_texts, num_videos] cosine similarities of the adapted dual encoder, plus each adapter's
        `extra_similarity` term (None for most; zero at initialisation for those that have one)."""
        return _plus_extras(cosine_matrix(text, video), (a.extra_similarity(text, video) for a in self.adapters))

    def pair_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor:
        """[P] dual similarity of aligned pairs (text p with video p): the diagonal of dual_similarity,
        computed without the rest of the matrix."""
        return _plus_extras(pair_cosine(text, video), (a.extra_pair_similarity(text, video) for a in self.adapters))

    def score_pairs(self, text: TextFeatures, video: VideoFeatures, *, with_losses: bool = False):
        """Logits [P] of aligned pairs (text p with video p) through the "cross" adapters: the last
        matching head's logits if one gives them, else the temperature-scaled dual pair similarity
        (cosine plus the dual adapters' extra terms, which is how they count in multiple choice).
        with_losses: a PairScores (logits, the adapters' losses, whether a head gave the logits)."""
        ctx = self._context(text_to_video=torch.arange(video.batch_size, device=video.frame_emb.device),
                            pair_similarity=self.pair_similarity)
        losses: dict[str, Tensor] = {}
        logits = None
        for adapter in self.cross_adapters:
            out = adapter(video, text, ctx)
            video, text = out.video, out.text
            logits = out.pair_logits if out.pair_logits is not None else logits
            losses.update({f"{adapter.name}/{k}": v for k, v in out.losses.items()})
        from_head = logits is not None
        if not from_head:
            logits = self.task.scale * self.pair_similarity(text, video)
        return PairScores(logits, losses, from_head) if with_losses else logits

    @torch.no_grad()
    def similarity(self, texts, videos, *, frame_mask: Tensor | None = None, rerank_k: int | None = None,
                   pair_chunk_size: int = 1024) -> Tensor:
        """[num_texts, num_videos] scores: cosine similarities of the dual encoder, before any temperature.

        With "cross" adapters, each text's top-k videos (rerank_k, default the task's; <= 0 for all)
        are re-scored jointly, in chunks of pairs; they rank above the rest, which keep their order.
        """
        video = self.encode_video(videos, frame_mask)
        text = self.encode_text(texts)
        return self.score_features(text, video, rerank_k=rerank_k, pair_chunk_size=pair_chunk_size)

    @torch.no_grad()
    def score_features(self, text: TextFeatures, video: VideoFeatures, *, rerank_k: int | None = None,
                       pair_chunk_size: int = 1024) -> Tensor:
        """similarity() for features already through the encoders (and their adapters)."""
        device = self.backbone.device
        text, video = text.to(device), video.to(device)
        sims = self.dual_similarity(text, video)
        if not self.cross_adapters:
            return sims
        k = rerank_k if rerank_k is not None else getattr(self.task.config, "rerank_k", 50)
        k = sims.shape[1] if k is None or k <= 0 else k
        rows, cols = topk_rerank_pairs(sims, k)
        scores = torch.cat([
            self.score_pairs(text.index(r), video.index(c))
            for r, c in zip(rows.split(pair_chunk_size), cols.split(pair_chunk_size), strict=True)
        ])
        # The rest keep the dual order, shifted below every re-ranked score.
        out = sims - sims.max() + scores.min() - 1.0
        out[rows, cols] = scores.to(out.dtype)
        return out

    def forward(self, batch: dict):
        """The task head's loss, scores and named losses for a batch (see the task's docstring)."""
        return self.task(self, batch)

    # ---- parameters ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> VideoLanguageModel:
        super().train(mode)
        self.backbone.train(False)
        return self

    def to(self, *args, **kwargs) -> VideoLanguageModel:
        """As nn.Module.to, except that a floating dtype (model.to(torch.bfloat16)) goes to the backbone
        only: adapters and the task head stay fp32, as wrap() made them, and read fp32 features."""
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if dtype is None or not dtype.is_floating_point:
            return super().to(*args, **kwargs)
        self._convert_frozen_backbone(
            lambda t: t.to(device=device, dtype=dtype if t.is_floating_point() else None, non_blocking=non_blocking))
        self.backbone.to(device=device, dtype=dtype, non_blocking=non_blocking)
        return super().to(device=device, non_blocking=non_blocking) if device is not None else self

    def _apply(self, fn, recurse: bool = True):
        self._convert_frozen_backbone(fn)
        return super()._apply(fn, recurse)

    def _convert_frozen_backbone(self, convert) -> None:
        """Give this model converted copies of the backbone's frozen tensors, in its own module tree.

        nn.Module's conversions write `param.data` in place, and the frozen tensors are shared with every
        model wrapped on the same backbone (and with the caller's backbone object): converting them in
        place would move or cast those too. Trainable tensors inside the backbone (LoRA's) are this
        model's own and are converted in place as usual, so an optimiser holding them stays valid."""
        frozen = {id(t): t for t in _frozen_tensors(self.backbone)}
        converted = {key: convert(t) for key, t in frozen.items()}
        if all(converted[key] is t for key, t in frozen.items()):
            return
        if not self._owns_backbone_modules:
            self.backbone = _private_modules(self.backbone)
            self._owns_backbone_modules = True
        replacement = {key: nn.Parameter(new, requires_grad=False) if isinstance(frozen[key], nn.Parameter) else new
                       for key, new in converted.items()}
        for module in self.backbone.modules():
            for slots in (module._parameters, module._buffers):
                for name, tensor in slots.items():
                    if tensor is not None and id(tensor) in replacement:
                        slots[name] = replacement[id(tensor)]
        self.text_store = copy.deepcopy(self.text_store)  # features of the old tensors: start afresh

    def merge(self) -> VideoLanguageModel:
        """A merged copy for inference: backbone adapters that can be folded into the weights (LoRA) are
        folded into a deep copy of the backbone and dropped; the others (hooks such as st_adapter) keep
        running. This model is left unchanged. Similarities match the unmerged model's within float
        rounding (fp32: 1e-5; see docs/extending.md for bf16)."""
        merged = copy.deepcopy(self)
        kept = [a for a in merged.adapters if not (a.stage == "backbone" and a.merge())]
        merged.adapters = nn.ModuleList(kept)
        merged.backbone._fingerprint = None  # the folded weights are other weights
        merged.backbone.needs_grad = any(p.requires_grad for a in merged.backbone_adapters for p in a.parameters())
        return merged.eval()

    def detach_backbone_adapters(self) -> None:
        """Give the backbone its original forward back (its weights were never changed)."""
        for adapter in self.backbone_adapters:
            adapter.detach()
        self.backbone.needs_grad = False

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def print_trainable_parameters(self) -> None:
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.parameters())
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """Adapter and task-head tensors only (never the backbone's), keyed `adapters.<i>.*` / `task.*`."""
        state = {f"adapters.{k}": v for k, v in self.adapters.state_dict().items()}
        state.update({f"task.{k}": v for k, v in self.task.state_dict().items()})
        return state

    def load_adapter_state_dict(self, state: dict[str, Tensor]) -> None:
        adapters = {k.removeprefix("adapters."): v for k, v in state.items() if k.startswith("adapters.")}
        task = {k.removeprefix("task."): v for k, v in state.items() if k.startswith("task.")}
        self.adapters.load_state_dict(adapters, strict=True)
        self.task.load_state_dict(task, strict=True)

    def describe(self) -> dict:
        """What adapters.json records: the library version, the backbone (spec, pretrained source, weight
        fingerprint, dims), the task config and the adapter configs in order."""
        from .. import __version__

        backbone = self.backbone
        dims = backbone.dims
        # A random initialisation (open_clip without pretrained weights) cannot be loaded again, so it
        # has no fingerprint to compare with; seeded tiny weights and weight files do.
        random = getattr(backbone, "random_weights", False)
        return {
            "library_version": __version__,
            "backbone": {"spec": backbone.spec, "pretrained": getattr(backbone, "pretrained", None),
                         "fingerprint": None if random else backbone.fingerprint(),
                         "dims": {**dims.__dict__, "grid": list(dims.grid)}},
            "task": self.task.config.to_dict(),
            "adapters": [a.config.to_dict() for a in self.adapters],
        }

    def save_adapters(self, directory: str | Path) -> None:
        """adapters.safetensors (weights) + adapters.json (see describe())."""
        directory = Path(directory)
        save_tensors(directory / ADAPTERS_FILE, self.adapter_state_dict())
        save_json(directory / CONFIG_FILE, self.describe())

    def save_pretrained(self, directory: str | Path, *, run: str | Path | None = None) -> Path:
        """save_adapters' files plus the training record and a README.md model card (core/hub.py);
        `run`: the training run directory whose config and metrics the card reports."""
        from .hub import save_pretrained

        return save_pretrained(self, directory, run=run)

    def push_to_hub(self, repo_id: str, *, run: str | Path | None = None, private: bool | None = None,
                    token: str | None = None, commit_message: str = "Upload vl-adapters adapters"):
        """save_pretrained's folder uploaded to the Hugging Face Hub repo `repo_id` (core/hub.py)."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, run=run, private=private, token=token, commit_message=commit_message)


def _plus_extras(similarity: Tensor, extras) -> Tensor:
    """The dual similarity plus the adapters' extra terms (None where an adapter has none)."""
    for extra in extras:
        if extra is not None:
            similarity = similarity + extra.to(similarity.dtype)
    return similarity


def _frozen_tensors(backbone) -> list[Tensor]:
    """The backbone's frozen parameters and its buffers (what wrap() shares between models)."""
    return [*(p for p in backbone.parameters() if not p.requires_grad), *backbone.buffers()]


def _private_modules(backbone):
    """A copy of `backbone`'s module tree whose parameters, buffers and tokenizer are the original's
    objects: adapters can inject layers or hooks into it without touching the original."""
    backbone.fingerprint()  # of the weights as loaded, before any adapter adds its own (cached, copied along)
    shared = [*backbone.parameters(), *backbone.buffers(), getattr(backbone, "tokenizer", None)]
    return copy.deepcopy(backbone, memo={id(obj): obj for obj in shared if obj is not None})


def _ordered(adapters: Sequence[Adapter], family: str | None = None) -> list[Adapter]:
    """Stable sort into backbone -> video/text/dual -> cross, refusing combinations that cannot run.
    Composite adapters are replaced by their parts first.

    Within a stage the given order is kept (it is the order they run in). Refused, with the reason:
    the same adapter twice (they would share a name in the saved file and in the loss names), a
    "backbone" adapter that does not support the backbone's family (it would not find the layers it
    changes), two adapters that both set the pooled video embedding (the second would silently
    overwrite the first's), and an adapter that feeds the cross adapters after it listed after every
    one of them (it would feed none).
    """
    adapters = [part for adapter in adapters for part in adapter.parts()]
    names = [a.name for a in adapters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CompositionError(
            f"adapter(s) {duplicates} listed twice; each adapter may appear once (give one adapter the "
            "settings you want instead of stacking two copies)"
        )
    for adapter in adapters:
        if adapter.stage not in STAGE_ORDER:
            raise CompositionError(f"adapter {adapter.name!r} has stage {adapter.stage!r}; known: {sorted(STAGE_ORDER)}")
        families = getattr(adapter, "families", None)
        if adapter.stage == "backbone" and family is not None and families is not None and family not in families:
            raise CompositionError(
                f"backbone adapter {adapter.name!r} supports backbone families {list(families)}, not {family!r}; "
                "use a backbone of a supported family or drop the adapter"
            )
    pooled = [a.name for a in adapters if getattr(a, "sets_video_emb", False)]
    if len(pooled) > 1:
        raise CompositionError(
            f"adapters {pooled} both set the pooled video embedding (video_emb); the later one would overwrite "
            "the earlier one's, so keep only one of them"
        )
    ordered = sorted(adapters, key=lambda a: STAGE_ORDER[a.stage])
    cross = [a for a in ordered if a.stage == "cross"]
    for i, adapter in enumerate(cross):
        if adapter.feeds_later_cross and cross[:i] and not cross[i + 1:]:
            raise CompositionError(
                f"adapter {adapter.name!r} changes what the cross adapters listed after it see, but it is listed "
                f"after {[a.name for a in cross[:i]]} and before none, so it would change nothing: list it before them"
            )
    return ordered


def wrap(backbone, adapters: Sequence[str | AdapterConfig | dict] = (), task="retrieval") -> VideoLanguageModel:
    """Wrap a frozen backbone with adapters (names, configs or {"type": ...} dicts) and a task head."""
    from ..tasks import build_task

    if isinstance(adapters, (str, AdapterConfig, dict)):
        adapters = [adapters]
    built = [build_adapter(spec, backbone.dims) for spec in adapters]
    return VideoLanguageModel(backbone, built, build_task(task, logit_scale=backbone.logit_scale))


def load_adapters(directory: str | Path, backbone=None, *, allow_backbone_mismatch: bool = False,
                  **backbone_kwargs) -> VideoLanguageModel:
    """Rebuild a wrapped model, in eval mode, from save_adapters' directory.

    Without `backbone`, the recorded spec is loaded with the recorded pretrained source (a `pretrained=`
    keyword overrides the source). The backbone's weight fingerprint must match the recorded one;
    `allow_backbone_mismatch=True` loads onto other weights anyway. Files written before the source and
    fingerprint were recorded load as before: the spec alone, no weight check.
    """
    from ..backbones import load_backbone

    directory = Path(directory)
    directory = readable_directory(directory, CONFIG_FILE)  # a checkpoint swap a crash interrupted
    saved = load_json(directory / CONFIG_FILE)
    recorded = saved["backbone"]
    spec = recorded["spec"]
    if backbone is None:
        if backbone_kwargs.get("pretrained") is None:
            backbone_kwargs["pretrained"] = recorded.get("pretrained")
        source = backbone_kwargs["pretrained"]
        if source and Path(source).is_absolute() and not Path(source).exists():
            raise FileNotFoundError(
                f"{directory / CONFIG_FILE}: the adapters were trained on backbone {spec!r} with weights "
                f"{source!r}, which do not exist here; pass pretrained=<the same weights> (--pretrained)")
        backbone = load_backbone(spec, **backbone_kwargs)
    dims = backbone.dims
    saved_dims = {**recorded["dims"], "grid": tuple(recorded["dims"]["grid"])}
    if backbone.spec != spec or dims.__dict__ != saved_dims:
        raise ValueError(
            f"{directory}: these adapters were trained on backbone {spec!r} with dims {saved_dims}; "
            f"the given backbone is {backbone.spec!r} with dims {dims.__dict__}"
        )
    expected = recorded.get("fingerprint")
    if expected is not None and not allow_backbone_mismatch and backbone.fingerprint() != expected:
        raise BackboneMismatchError(
            f"{directory}: these adapters were trained on {spec!r} weights with fingerprint {expected} "
            f"(pretrained={recorded.get('pretrained')!r}); the backbone given has fingerprint "
            f"{backbone.fingerprint()} (pretrained={getattr(backbone, 'pretrained', None)!r}). Load the same "
            "weights, or pass allow_backbone_mismatch=True (--allow-backbone-mismatch) to use these anyway"
        )
    model = wrap(backbone, saved["adapters"], task=saved["task"])
    model.load_adapter_state_dict(load_tensors(directory / ADAPTERS_FILE, device=str(backbone.device)))
    return model.eval()
