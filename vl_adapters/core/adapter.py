"""The Adapter base class: what every aligner, built in or third party, implements."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from .config import AdapterConfig, ConfigError
from .features import TextFeatures, VideoFeatures
from .registry import ADAPTERS, RegistryError

STAGES = ("backbone", "video", "text", "dual", "cross")


@dataclass(frozen=True)
class BackboneDims:
    """What an adapter may know of the backbone: sizes only, never its internals."""

    embed_dim: int
    vision_width: int
    text_width: int
    grid: tuple[int, int]
    context_length: int
    image_size: int
    text_layers: int = 12  # the text tower's depth (methods that take part of a text encoder scale with it)


@dataclass
class AdapterContext:
    """What the model tells adapters about the batch beside the features themselves.

    text_to_video  [Nt] long: index of the video each text belongs to, or None when texts and
                   videos are unpaired (encoding alone, or scoring every text against every video).
                   For "cross" adapters texts and videos always come as aligned pairs.
    guidance       TextFeatures [B]: the text describing each video (training only), as refined by the
                   "cross" adapters' `refine_guidance` (the semantic aligner's text); language-guided
                   adapters (Tem-Adapter) read it, nothing at inference may depend on it.
    task           the task head's name.
    encode_text    the frozen text tower as a function of strings -> TextFeatures (no gradient,
                   memoised by the model), for adapters that must encode texts of their own making
                   (phrases of a caption, scene-graph node words); None outside a wrapped model.
    pair_similarity the model's dual score of aligned pairs, (text, video) -> [P]: the cosine plus every
                   adapter's extra_pair_similarity. Given to "cross" adapters, so a matching head builds on
                   the same score the dual ranking uses; None outside a wrapped model's score_pairs.
    """

    task: str = "retrieval"
    text_to_video: Tensor | None = None
    guidance: TextFeatures | None = None
    extras: dict = field(default_factory=dict)
    encode_text: Callable[[Sequence[str]], TextFeatures] | None = None
    pair_similarity: Callable[[TextFeatures, VideoFeatures], Tensor] | None = None


@dataclass
class AdapterOutput:
    """Refined features plus named auxiliary losses, already multiplied by their config weights.

    pair_logits [P]: a "cross" adapter with its own matching head scores each aligned pair here;
    otherwise pairs are scored by the cosine of the refined embeddings.
    """

    video: VideoFeatures
    text: TextFeatures | None
    losses: dict[str, Tensor] = field(default_factory=dict)
    pair_logits: Tensor | None = None


class Adapter(nn.Module):
    """Base class. Subclasses set `config_class` and `stage` and implement `forward`.

    Stages: "backbone" adapters change the backbone's own forward; "video" adapters refine only the
    video (called with text=None when videos are encoded alone); "text" adapters only the text (video=None);
    "dual" adapters refine both sides, each from its own side only (called with the other side None when
    encoding alone), so the model stays a dual encoder; "cross" adapters score aligned (video, text) pairs.

    Identity at initialisation: every adapter enters through a residual whose last projection or
    gate starts at zero, so a freshly wrapped model reproduces the backbone's similarities.
    """

    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig
    stage: ClassVar[str] = "video"
    name: ClassVar[str] = ""
    # Composition rules read these (see core/model.py `_ordered`):
    # backbone families a "backbone" adapter can attach to (None: any), and whether the adapter sets the
    # pooled video embedding (VideoFeatures.video_emb), which two adapters cannot both do, and whether a
    # "cross" adapter acts only on the cross adapters listed after it (listed after all of them, it is inert).
    families: ClassVar[tuple[str, ...] | None] = None
    sets_video_emb: ClassVar[bool] = False
    feeds_later_cross: ClassVar[bool] = False

    def __init__(self, config: AdapterConfig, dims: BackboneDims) -> None:
        super().__init__()
        self.config = config.resolve(dims)  # widths left to the backbone, set (and saved) as built
        self.dims = dims

    def forward(self, video: VideoFeatures, text: TextFeatures | None, ctx: AdapterContext) -> AdapterOutput:
        raise NotImplementedError

    def extra_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor | None:
        """Optional [num_texts, num_videos] term added to the dual cosine matrix (dual-encoder adapters that
        score words against patches, e.g. fine_grained_alignment). It must come from each side's own
        features and start at zero (a zero-initialised weight) so identity at initialisation holds."""
        return None

    def extra_pair_similarity(self, text: TextFeatures, video: VideoFeatures) -> Tensor | None:
        """The same term for aligned pairs [P] (text p with video p), which is how multiple choice and
        re-ranking score. The default takes the diagonal of extra_similarity; override it to skip the
        off-diagonal work."""
        extra = self.extra_similarity(text, video)
        return None if extra is None else extra.diagonal()

    def bind(self, adapters: Sequence[Adapter]) -> None:
        """Composition hook: called once by the model with every adapter it runs (this one included, in
        order), before they move to the device. An adapter that works on another's modules finds its
        partner here (fine_grained_alignment contrasts the inputs trajectory_word fuses); it may rebuild
        its own submodules, but must keep the partner out of its submodules (the partner saves its own
        weights). The default does nothing."""
        return None

    def refine_guidance(self, video: VideoFeatures, guidance: TextFeatures, ctx: AdapterContext) -> TextFeatures:
        """"cross" adapters that refine a text from its own video (Tem-Adapter's semantic aligner) may refine
        the training guidance too: VideoLanguageModel.adapt calls this on (video b, guidance b) pairs before
        the video/text/dual adapters read ctx.guidance, with gradients, so a guided adapter reads the
        refined text and its loss trains the refiner as well. Default: the guidance unchanged."""
        return guidance

    def parts(self) -> list[Adapter]:
        """The adapters the model actually runs for this one; a composite (tem_adapter) returns its parts,
        each run at its own stage (vla.wrap expands them, and save_adapters records the parts)."""
        return [self]

    def format_candidates(self, question: str, answers: list[str]) -> list[str] | None:
        """Multiple choice: the text to encode for each answer, or None for the task's default."""
        return None

    @property
    def changes_text_tower(self) -> bool:
        """Whether the text tower's output differs once this adapter is attached. A backbone adapter is assumed
        to change it unless it says otherwise; while none does, texts keep the frozen tower's cached features."""
        return self.stage == "backbone"

    # "backbone" adapters change the backbone's forward; they implement attach/detach (and merge if they can).
    def attach(self, backbone) -> None:
        """Change `backbone` in place (inject layers, register hooks) so its forward runs this adapter.
        Called once by VideoLanguageModel.__init__, after the adapter is moved to the backbone's device.
        The adapter's trainable tensors must be submodules of the adapter (so they are saved with it)."""
        if self.stage == "backbone":
            raise NotImplementedError(f"{type(self).__name__} is a backbone adapter and must implement attach()")

    def detach(self) -> None:
        """Undo attach: the backbone's forward is the original one again."""

    def merge(self) -> bool:
        """Fold this backbone adapter into the backbone's weights (called on a deep copy by
        VideoLanguageModel.merge). Return True when folded, so the merged model can drop the adapter;
        False (the default) keeps it running as a hook."""
        return False


@runtime_checkable
class FusionInputs(Protocol):
    """A fusion adapter that shows the projected words and patches its encoder reads, so that an alignment
    loss can act on exactly those (align before fuse)."""

    fusion_width: int

    def fusion_words(self, text: TextFeatures) -> Tensor:
        """[B,L,W] the projected token states (mask: text.token_mask)."""
        ...

    def fusion_patches(self, video: VideoFeatures) -> Tensor:
        """[B,T,N,W] the projected patch tokens (mask: video.frame_mask)."""
        ...


_FORWARD_PARAMS = ["self", "video", "text", "ctx"]


def register_adapter(name: str):
    """Class decorator: register an Adapter subclass under `name` after checking it is well formed."""

    def decorate(cls):
        where = f"{cls.__module__}.{cls.__qualname__}"
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise TypeError(f"@register_adapter({name!r}) decorates {where}, which is not a vl_adapters.Adapter subclass")
        if cls.stage not in STAGES:
            raise TypeError(f"{where}.stage is {cls.stage!r}; it must be one of {STAGES}")
        if cls.config_class is AdapterConfig or not dataclasses.is_dataclass(cls.config_class):
            raise TypeError(
                f"{where}.config_class must be a @dataclass subclass of vl_adapters.AdapterConfig "
                "(an empty one is fine: `@dataclass class MyConfig(AdapterConfig): pass`)"
            )
        # Only what is registered so far: looking plugins up here would import them while vl_adapters
        # itself is still being imported (a plugin imports vl_adapters), a circular import.
        taken = ADAPTERS.registered(name)
        if taken is not None and taken is not cls:
            raise RegistryError(
                f"adapter name {name!r} is already taken by {taken.__module__}; "
                f"register {where} under another name"
            )
        params = list(inspect.signature(cls.forward).parameters)
        if params != _FORWARD_PARAMS:
            raise TypeError(
                f"{where}.forward takes ({', '.join(params)}); it must be "
                "forward(self, video, text, ctx) -> AdapterOutput"
            )
        try:
            cls.config_class.type_name = name
            cls.config_class().to_dict()
        except ConfigError as error:
            raise TypeError(f"{where}: {error}") from None
        except TypeError as error:
            raise TypeError(f"{where}.config_class must be constructible with defaults only: {error}") from None
        cls.name = name
        ADAPTERS.register(name, cls)
        return cls

    return decorate


def list_adapters() -> list[str]:
    return ADAPTERS.names()


def build_adapter(spec: str | AdapterConfig | dict, dims: BackboneDims) -> Adapter:
    """Build from a registered name, a config object, or a {"type": name, ...} dict."""
    if isinstance(spec, str):
        cls = ADAPTERS.get(spec)
        config = cls.config_class()
    elif isinstance(spec, AdapterConfig):
        cls = ADAPTERS.get(spec.type_name)
        config = spec
    elif isinstance(spec, dict):
        if "type" not in spec:
            raise ConfigError(f"adapter dict needs a 'type' key naming a registered adapter, got keys {sorted(spec)}")
        cls = ADAPTERS.get(spec["type"])
        config = cls.config_class.from_dict(spec)
    else:
        raise TypeError(f"an adapter is given by name, config or {{'type': ...}} dict, got {type(spec).__name__}")
    return cls(config, dims)
