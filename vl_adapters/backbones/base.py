"""The frozen Backbone: frames and texts in, VideoFeatures and TextFeatures out."""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ..core.adapter import BackboneDims
from ..core.features import FeatureShapeError, TextFeatures, VideoFeatures

PRECISIONS = ("auto", "fp32", "bf16")


class BackboneWeightsError(ValueError):
    """Backbone weights that cannot be loaded: a file of another architecture or format, an unknown tag,
    or a download the machine cannot make."""


def check_state_dict(spec: str, path, state: dict, expected: dict) -> None:
    """Raise BackboneWeightsError naming how the tensors of `path` differ from the model's (`expected`)."""
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if not (wrong or missing or unexpected):
        return
    parts = []
    if wrong:
        first = wrong[0]
        parts.append(f"{len(wrong)} tensor(s) of another shape (the first: {first} is {list(state[first].shape)} "
                     f"in the file, {list(expected[first].shape)} in the model)")
    if missing:
        parts.append(f"{len(missing)} missing (the first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (the first: {unexpected[0]})")
    raise BackboneWeightsError(f"{spec}: {path} holds weights of another architecture: {'; '.join(parts)}")


@dataclass(frozen=True)
class VideoLayout:
    """Set on the backbone while encode_video runs the vision tower on one group of whole videos:
    the images it receives are the real frames (frame_mask True) of these videos, in (video, time)
    order. Adapters inside the tower that mix frames over time (st_adapter) read it through
    `Backbone.video_layout`; it is None when images are encoded on their own."""

    frame_mask: Tensor  # [b, T] bool


class Backbone(nn.Module):
    """Base class of the frozen image-text backbones.

    Subclasses implement `_encode_images`, `_encode_tokens` and `tokenize`; this class folds videos
    into frame batches, chunks them to bound memory, keeps the weights frozen and in eval mode, and
    runs under no_grad unless a backbone-stage adapter (LoRA, ST-Adapter) needs gradients through it.
    """

    family = ""

    def __init__(
        self,
        *,
        spec: str,
        model: nn.Module,
        dims: BackboneDims,
        mean: Sequence[float],
        std: Sequence[float],
        logit_scale: float,
        precision: str = "auto",
        device: str | torch.device | None = None,
        chunk_size: int = 256,
        compile: bool | str | None = None,
    ) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        self.spec = spec
        self.model = model
        self.dims = dims
        self.precision = precision
        self.chunk_size = chunk_size
        self.register_buffer("pixel_mean", torch.tensor(mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(3, 1, 1), persistent=False)
        self.logit_scale = float(logit_scale)
        self.needs_grad = False  # set by backbone-stage adapters
        # Where the weights came from, recorded with saved adapters: set by the loaders. `pretrained` is
        # what load_backbone was given (a tag or a file; None for the family's default) and
        # `random_weights` says the weights are a random initialisation no later load can reproduce.
        self.pretrained: str | None = None
        self.random_weights = False
        self._fingerprint: tuple | None = None  # (hash, the hashed tensors, their versions)
        self.video_layout: VideoLayout | None = None  # set by encode_video around each group of videos
        self.model.requires_grad_(False)
        self.model.to(device=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        self.pixel_mean, self.pixel_std = self.pixel_mean.to(device), self.pixel_std.to(device)
        self.eval()
        self.compiled = False
        if compile:
            self.compile_vision(None if compile in (True, "default") else compile)

    # ---- to implement --------------------------------------------------------------------
    def _encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [N,3,S,S] normalised -> (embedding [N,D], patch tokens [N,gh*gw,C])."""
        raise NotImplementedError

    def _encode_tokens(self, input_ids: Tensor, token_mask: Tensor) -> tuple[Tensor, Tensor]:
        """-> (sentence embedding [B,D], last hidden states [B,L,C'])."""
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """-> (input_ids [B,L], token_mask [B,L] bool)."""
        raise NotImplementedError

    def token_mask_from_ids(self, input_ids: Tensor) -> Tensor:
        raise NotImplementedError

    def vision_tower(self) -> nn.Module:
        """The module `_encode_images` runs (what compile_vision compiles and adapters hook into)."""
        raise NotImplementedError

    # ---- speed ----------------------------------------------------------------------------
    def compile_vision(self, mode: str | None = None) -> None:
        """torch.compile the vision tower in place (its state dict, hence the fingerprint, is unchanged).
        Chunks are then padded to a few fixed sizes (powers of two up to chunk_size) so that a batch of
        any size reuses the compiled graphs instead of recompiling."""
        self.vision_tower().compile(mode=mode, dynamic=False)
        self.compiled = True

    def _is_adapted(self) -> bool:
        """Whether adapters run inside the towers (hooks, injected fp32 layers, trainable parts): they may
        read `video_layout`, and their fp32 weights need autocast. Without them a tower runs in its own
        dtype without autocast, and frames are chunked without a per-video loop."""
        if self.needs_grad or any(m._forward_pre_hooks or m._forward_hooks for m in self.model.modules()):
            return True
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        return any(p.dtype != dtype for p in self.model.parameters())

    def _to_device(self, tensor: Tensor) -> Tensor:
        """Host -> device without stalling the host: through pinned memory, non_blocking."""
        if tensor.device == self.device:
            return tensor
        if self.device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    # ---- frozen behaviour ---------------------------------------------------------------
    def train(self, mode: bool = True) -> Backbone:
        # Dropout and norm statistics of a frozen model never change, whatever the wrapper does.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def _context(self, autocast: bool = True):
        grad = torch.enable_grad() if self.needs_grad and torch.is_grad_enabled() else torch.no_grad()
        stack = contextlib.ExitStack()
        stack.enter_context(grad)
        if self.precision == "bf16" and autocast:
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        return stack

    def fingerprint(self) -> str:
        """A hash of the spec and every weight: the feature cache, the text store and saved adapters are
        valid only for the same one. The weights hashed are the ones present at the first call; the hash is
        remembered until one of them is written in place (its version counter moves), so modules an
        adapter adds later (LoRA in a private copy) do not change it, and asking per batch costs no hash."""
        memo = self._fingerprint
        if memo is None or memo[2] != _versions(memo[1]):
            named = memo[1] if memo is not None else sorted(self.model.state_dict(keep_vars=True).items())
            digest = hashlib.sha256(self.spec.encode())
            for name, tensor in named:
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
            self._fingerprint = memo = (digest.hexdigest()[:16], named, _versions(named))
        return memo[0]

    # ---- frames ---------------------------------------------------------------------------
    def transform(self, frames: Tensor) -> Tensor:
        """uint8 frames [..., 3, H, W] -> normalised float frames [..., 3, S, S]: resize the short
        side (bicubic, as CLIP), centre crop, normalise; on tensors, so it runs batched on any device."""
        if frames.dtype != torch.uint8:
            raise FeatureShapeError(f"transform: expected uint8 frames [..., 3, H, W], got dtype {frames.dtype}")
        lead = frames.shape[:-3]
        x = self._to_device(frames.reshape(-1, *frames.shape[-3:])).float() / 255.0  # uint8 crosses the bus
        size = self.dims.image_size
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        if (h, w) != (size, size):
            new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
            x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            x = x[..., top : top + size, left : left + size].clamp(0, 1)
        x = (x - self.pixel_mean) / self.pixel_std
        return x.reshape(*lead, 3, size, size)

    def encode_video(self, frames: Tensor, frame_mask: Tensor | None = None) -> VideoFeatures:
        """frames [B,T,3,S,S] (normalised float, or uint8 of any size, transformed here) -> VideoFeatures.

        Padded frames (frame_mask False) are not encoded; their features are zero. The bookkeeping runs
        on a host copy of the mask, so the device never waits for the host inside the loop (a mask given
        on the device costs one copy to the host, here).
        """
        if not isinstance(frames, Tensor):
            raise TypeError(f"encode_video: frames must be one torch.Tensor [B, T, 3, H, W] (uint8 pixels, or float "
                            f"frames normalised as backbone.transform does), got {_kind(frames)}")
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise FeatureShapeError(f"encode_video: frames: expected shape [B, T, 3, H, W], got {list(frames.shape)}")
        self._check_frames(frames)
        b, t = frames.shape[:2]
        if frame_mask is None:
            frame_mask = torch.ones(b, t, dtype=torch.bool)
        if tuple(frame_mask.shape) != (b, t):
            raise FeatureShapeError(f"encode_video: frame_mask: expected shape [{b}, {t}], got {list(frame_mask.shape)}")
        mask = frame_mask.detach().to("cpu", torch.bool)
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        if empty:
            raise FeatureShapeError(f"encode_video: frame_mask: video(s) {empty[:5]} have no real frame (an all-False "
                                    "row); every video needs at least one")
        flat = rearrange(self.transform(frames) if frames.dtype == torch.uint8 else self._to_device(frames),
                         "b t c h w -> (b t) c h w")
        every = bool(mask.all())
        real_index = None if every else self._to_device(mask.flatten().nonzero().flatten())
        real = flat if every else flat.index_select(0, real_index)
        if self._is_adapted():
            emb, patches = self._encode_videos_grouped(real, mask)
        else:
            emb, patches = self.encode_images(real)
        if not every:  # scatter the real frames back; padded frames stay zero
            emb = emb.new_zeros(b * t, emb.shape[-1]).index_copy_(0, real_index, emb)
            patches = patches.new_zeros(b * t, *patches.shape[1:]).index_copy_(0, real_index, patches)
        return VideoFeatures(
            frame_emb=rearrange(emb, "(b t) d -> b t d", b=b),
            patch_tokens=rearrange(patches, "(b t) n c -> b t n c", b=b),
            frame_mask=self._to_device(mask),
            grid=tuple(self.dims.grid),
        )

    def _check_frames(self, frames: Tensor) -> None:
        """Refuse frames that would silently be misread (0-255 or 0-1 pixel values given as float frames:
        only uint8 pixels are normalised here); warn about NaN."""
        if frames.shape[0] == 0 or frames.shape[1] == 0:
            raise FeatureShapeError(f"encode_video: frames: expected at least one video of at least one frame, got "
                                    f"shape {list(frames.shape)}")
        if frames.dtype == torch.uint8:
            return
        if not frames.is_floating_point():
            raise FeatureShapeError(f"encode_video: frames of dtype {frames.dtype}: expected uint8 pixels in [0, 255] "
                                    "(transformed here) or float frames normalised as backbone.transform does")
        size = self.dims.image_size
        if tuple(frames.shape[-2:]) != (size, size):
            raise FeatureShapeError(f"encode_video: float frames must already be {size}x{size} (this backbone's image "
                                    f"size), got {frames.shape[-2]}x{frames.shape[-1]}; pass uint8 frames to have "
                                    "them resized and normalised here, or use backbone.transform")
        low, high = torch.stack([frames.amin(), frames.amax()]).float().tolist()
        mean, std = self.pixel_mean.flatten().cpu(), self.pixel_std.flatten().cpu()
        reach = float(torch.cat([(1 - mean) / std, mean / std]).max())  # |normalised value| of a [0, 1] pixel
        if low != low or high != high:  # NaN
            videos = frames.isnan().flatten(1).any(1).nonzero().flatten().tolist()
            warnings.warn(f"encode_video: the frames of video(s) {videos[:8]}{' ...' if len(videos) > 8 else ''} of "
                          f"the {len(frames)} given hold NaN values; their features and scores will be NaN",
                          RuntimeWarning, stacklevel=3)
        elif max(-low, high) > 10 * reach:  # 0-255 pixels reach far beyond; noise in tests does not
            raise FeatureShapeError(f"encode_video: float frames span [{low:.4g}, {high:.4g}], far outside the "
                                    f"normalised range (about +-{reach:.1f}): 0-255 pixel values? Pass uint8 frames "
                                    "(transformed here) or normalise them with backbone.transform")
        elif 0 <= low < high <= 1:
            # Normalised frames go negative wherever a pixel is darker than the channel's mean (about 0.45):
            # frames without one negative value are pixels scaled to [0, 1] that were never normalised.
            raise FeatureShapeError(f"encode_video: float frames span [{low:.4g}, {high:.4g}] with no negative value: "
                                    "pixels scaled to [0, 1] but not normalised? Pass uint8 frames (transformed "
                                    "here) or normalise them with backbone.transform")

    def _encode_videos_grouped(self, real: Tensor, frame_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Encode the real frames in chunks of whole videos (at most chunk_size frames, or one video),
        with `video_layout` set, so adapters inside the tower see every frame of a video together.
        `frame_mask` is on the host: the loop over videos never waits for the device."""
        counts = frame_mask.sum(1).tolist()
        groups, start, size = [], 0, 0
        for index, count in enumerate(counts):  # a loop over videos, to cut chunks at video boundaries
            if size and size + count > self.chunk_size:
                groups.append((start, index))
                start, size = index, 0
            size += count
        groups.append((start, len(counts)))
        embs, patches, offset = [], [], 0
        for first, last in groups:
            n = sum(counts[first:last])
            self.video_layout = VideoLayout(frame_mask=self._to_device(frame_mask[first:last]))
            try:
                emb, tokens = self.encode_images(real[offset : offset + n])
            finally:
                self.video_layout = None
            embs.append(emb)
            patches.append(tokens)
            offset += n
        return torch.cat(embs), torch.cat(patches)

    def encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images [N,3,S,S] -> (embedding [N,D], patch tokens [N,N_patch,C]) in fp32, chunked
        (in one piece while encode_video has set `video_layout`: it already chunks by whole videos)."""
        embs, patches = [], []
        chunk_size = self.chunk_size if self.video_layout is None else max(len(images), 1)
        with self._context(autocast=self._is_adapted()):
            for chunk in images.split(chunk_size):
                n = len(chunk)
                chunk = self._to_device(chunk)
                if self.compiled and self.video_layout is None:  # a few fixed shapes for the compiled graphs
                    size = min(self.chunk_size, 1 << (n - 1).bit_length())
                    chunk = torch.cat([chunk, chunk.new_zeros(size - n, *chunk.shape[1:])]) if size > n else chunk
                emb, tokens = self._encode_images(chunk)
                embs.append(emb[:n].float())
                patches.append(tokens[:n].float())
        if not embs:
            d, c = self.dims.embed_dim, self.dims.vision_width
            n = self.dims.grid[0] * self.dims.grid[1]
            return images.new_zeros(0, d, device=self.device), images.new_zeros(0, n, c, device=self.device)
        return torch.cat(embs), torch.cat(patches)

    # ---- text -----------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str] | Tensor, token_mask: Tensor | None = None) -> TextFeatures:
        """texts as strings or token ids [B,L] -> TextFeatures."""
        strings = None
        if not isinstance(texts, str) and len(texts) == 0:
            raise FeatureShapeError("encode_text: expected at least one text, got none")
        if isinstance(texts, Tensor):
            if texts.ndim != 2:
                raise FeatureShapeError(f"encode_text: input_ids: expected shape [B, L], got {list(texts.shape)}")
            if texts.shape[1] > self.dims.context_length:
                raise FeatureShapeError(f"encode_text: input_ids: expected at most {self.dims.context_length} tokens "
                                        f"per text (the context length), got {texts.shape[1]}")
            input_ids = texts.to(self.device)
            token_mask = self.token_mask_from_ids(input_ids) if token_mask is None else token_mask.to(self.device)
        else:
            if isinstance(texts, str) or not all(isinstance(s, str) for s in texts):
                raise TypeError("encode_text: texts must be a list of strings or a [B, L] tensor of token ids")
            strings = list(texts)
            input_ids, token_mask = self.tokenize(strings)
            self._warn_if_cut(strings, token_mask)
            input_ids, token_mask = input_ids.to(self.device), token_mask.to(self.device)
        with self._context(autocast=self._is_adapted()):
            emb, states = self._encode_tokens(input_ids, token_mask)
        return TextFeatures(
            text_emb=emb.float(),
            token_states=states.float(),
            token_mask=token_mask.bool(),
            input_ids=input_ids,
            texts=strings,
        )

    def token_count(self, text: str) -> int | None:
        """Tokens of `text` before any truncation (with the special tokens), or None if unknown."""
        return None

    def _warn_if_cut(self, texts: list[str], token_mask: Tensor) -> None:
        """Texts that fill the whole context were cut if they had more tokens: say so."""
        full = token_mask.all(1).nonzero().flatten().tolist()
        context = token_mask.shape[1]
        counts = {i: self.token_count(texts[i]) for i in full}
        cut = [i for i, n in counts.items() if n is None or n > context]
        if cut:
            first = texts[cut[0]]
            warnings.warn(f"encode_text: {len(cut)} text(s) reach the context length of {context} tokens and were "
                          f"cut to it (the first: {first[:60]!r}{'...' if len(first) > 60 else ''}, "
                          f"{counts[cut[0]] or 'over ' + str(context)} tokens)", RuntimeWarning, stacklevel=3)


def _kind(frames) -> str:
    """What was given instead of a frames tensor, with the conversion that makes one."""
    if isinstance(frames, (list, tuple)):
        return (f"a {type(frames).__name__} of {len(frames)} item(s); stack videos of one length with torch.stack "
                "(pad shorter ones and pass frame_mask)")
    name = f"{type(frames).__module__}.{type(frames).__name__}".removeprefix("builtins.")
    return f"{name}; convert a numpy array with torch.from_numpy" if name == "numpy.ndarray" else name


def _versions(named) -> tuple[int, ...]:
    return tuple(tensor._version for _, tensor in named)
