"""TW-BERT's cross-modal layer on frozen patch tokens: trajectory step, T2W, W2P, matching head, frame selector.

Shapes: P pairs, L words (the first is the sentence token), T frames, N patches per frame, W width,
H heads of d = W / H channels. Every attention is one batched einsum over pairs, words, frames and heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import Tensor, nn


def masked_softmax(scores: Tensor, keep: Tensor) -> Tensor:
    """Softmax over the last axis where `keep` (broadcast) is True. Masked keys get exactly zero weight,
    so their values cannot leak in (padding words and padded frames change nothing)."""
    return scores.masked_fill(~keep, torch.finfo(scores.dtype).min).softmax(-1) * keep


class QKV(nn.Module):
    """Query, key and value projections split into heads; queries and keys/values separately, because
    the trajectory step needs queries of the words but only keys/values of the patches."""

    def __init__(self, *, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)

    def q(self, x: Tensor) -> Tensor:
        return rearrange(self.query(x), "... (h d) -> ... h d", h=self.heads)

    def kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # chunk, not unbinding a "two" axis: its backward is one cat into the projection's layout, where
        # unbind's would stack the two gradients and then copy them into that layout.
        k, v = self.key_value(x).chunk(2, dim=-1)
        return (rearrange(k, "... (h d) -> ... h d", h=self.heads),
                rearrange(v, "... (h d) -> ... h d", h=self.heads))

    def fold_key(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Queries [...,H,d] -> (W_k,h^T q_h [...,H,W], q_h . b_k,h [...,H]), so that the score against a
        token x is fold . x + bias = q . k(x): a few queries read many tokens without projecting them."""
        w_k, _ = rearrange(self.key_value.weight, "(two h d) w -> two h d w", two=2, h=self.heads)
        b_k, _ = rearrange(self.key_value.bias, "(two h d) -> two h d", two=2, h=self.heads)
        return einsum(q, w_k, "... h d, h d w -> ... h w"), einsum(q, b_k, "... h d, h d -> ... h")

    def project_values(self, mixed: Tensor, mass: Tensor) -> Tensor:
        """sum_j a_j x_j [...,H,W] and sum_j a_j [...,H] -> sum_j a_j v(x_j) [...,H,d] (v is affine)."""
        _, w_v = rearrange(self.key_value.weight, "(two h d) w -> two h d w", two=2, h=self.heads)
        _, b_v = rearrange(self.key_value.bias, "(two h d) -> two h d", two=2, h=self.heads)
        return einsum(mixed, w_v, "... h w, h d w -> ... h d") + mass[..., None] * b_v


class TrajectoryStep(nn.Module):
    """tau[l, t] = LN(W_tau . concat_h softmax_n(q_l k_{t,n} / sqrt d) v_{t,n}): each word's soft pick of one
    location per frame. The softmax runs over one frame's patches only, so tau[l, t] depends on frame t alone."""

    def __init__(self, *, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)  # W_tau, the layer's eighth linear
        self.norm = nn.LayerNorm(width)

    def forward(self, q_words: Tensor, k_patches: Tensor, v_patches: Tensor) -> Tensor:
        """q_words [P,L,H,d], k/v_patches [P,T,N,H,d] -> trajectories [P,L,T,W].

        (pairs, frames, heads) form the batch of one fused attention call: each frame is its own key set."""
        p, t = k_patches.shape[:2]
        q = repeat(q_words, "p l h d -> (p t) h l d", t=t)
        k = rearrange(k_patches, "p t n h d -> (p t) h n d")
        v = rearrange(v_patches, "p t n h d -> (p t) h n d")
        picked = F.scaled_dot_product_attention(q, k, v)  # [(P T), H, L, d]
        return self.output(rearrange(picked, "(p t) h l d -> p l t h d", p=p))

    def output(self, picked: Tensor) -> Tensor:
        """The picked values [P,L,T,H,d] -> trajectories [P,L,T,W]."""
        return self.norm(self.proj(rearrange(picked, "p l t h d -> p l t (h d)")))


def trajectory_to_word(q: Tensor, k_words: Tensor, v_words: Tensor, k_traj: Tensor, v_traj: Tensor,
                       word_mask: Tensor, frame_mask: Tensor) -> Tensor:
    """One softmax per word over all L words plus its OWN T trajectory points.

    q [P,L',H,d] (the first L' words: all of them, or the sentence token alone in a last layer); k/v_words
    [P,L,H,d]; k/v_traj [P,L',T,H,d] (word l's points); word_mask [P,L]; frame_mask [P,T] -> [P,L',H*d].
    Word l never sees word m's trajectory (the einsum pairs l with l)."""
    scale = q.shape[-1] ** -0.5
    to_words = einsum(q, k_words, "p l h d, p m h d -> p h l m") * scale
    to_points = einsum(q, k_traj, "p l h d, p l t h d -> p h l t") * scale
    keep = torch.cat([word_mask[:, None, None, :].expand(-1, 1, q.shape[1], -1),
                      frame_mask[:, None, None, :].expand(-1, 1, q.shape[1], -1)], dim=-1)
    attn = masked_softmax(torch.cat([to_words, to_points], dim=-1), keep)
    a_words, a_points = attn.split([k_words.shape[1], k_traj.shape[2]], dim=-1)
    out = einsum(a_words, v_words, "p h l m, p m h d -> p l h d") + einsum(a_points, v_traj, "p h l t, p l t h d -> p l h d")
    return rearrange(out, "p l h d -> p l (h d)")


def word_to_patch(q_video: Tensor, k_video: Tensor, v_video: Tensor, k_shared: Tensor, v_shared: Tensor,
                  shared_mask: Tensor) -> Tensor:
    """Per frame, the queries attend over the keys every frame sees (the words, then the video summary)
    plus that frame's own tokens.

    q_video [P,T,Q,H,d]: the queries of frame t (the summary and the frame's patches, or the summary alone
    in a last layer); k/v_video [P,T,M,H,d] the frame's own tokens; k/v_shared [P,S,H,d] and shared_mask
    [P,S] (True = real) -> [P,T,Q,H*d]. No attention crosses frames here.
    """
    # Scoring the shared keys once per pair and the frame's tokens per frame, instead of SDPA on keys/values
    # concatenated with the shared ones copied into every frame, saves the copies and their zero-filled gradients.
    scale = q_video.shape[-1] ** -0.5
    to_shared = einsum(q_video, k_shared, "p t i h d, p s h d -> p t h i s") * scale
    to_frame = einsum(q_video, k_video, "p t i h d, p t j h d -> p t h i j") * scale
    keep = torch.cat([shared_mask, shared_mask.new_ones(shared_mask.shape[0], k_video.shape[2])], dim=1)
    attn = masked_softmax(torch.cat([to_shared, to_frame], dim=-1), keep[:, None, None, None])
    a_shared, a_frame = attn.split([k_shared.shape[1], k_video.shape[2]], dim=-1)
    out = (einsum(a_shared, v_shared, "p t h i s, p s h d -> p t i h d")
           + einsum(a_frame, v_video, "p t h i j, p t j h d -> p t i h d"))
    return rearrange(out, "p t i h d -> p t i (h d)")


def last_layer_patch_reads(step_qkv: QKV, w2p_qkv: QKV, q_sentence: Tensor, q_summary: Tensor, patches: Tensor,
                           k_shared: Tensor, v_shared: Tensor, shared_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The last layer's two reads of the patches: the sentence's trajectory step and the summary's W2P.

    Two queries per pair, so the key projection is folded into them (q.(W_k x + b_k) = (W_k^T q).x + q.b_k)
    and the value projection applied after the weighted sum: the P*T*N patches are never projected. Both
    queries run in one score einsum and one weighted sum (so the patches' gradient is written once).
    q_sentence (step_qkv's) and q_summary (w2p_qkv's) [P,1,H,d], normalised patches [P,T,N,W], k/v_shared
    [P,S,H,d], shared_mask [P,S] -> (picked values of the trajectory step [P,1,T,H,d], W2P [P,T,1,H*d]).
    """
    t, n = patches.shape[1:3]
    scale = q_summary.shape[-1] ** -0.5
    fold_sentence, _ = step_qkv.fold_key(q_sentence)  # its q.b_k is constant over a frame: cancels in the softmax
    fold_summary, bias = w2p_qkv.fold_key(q_summary)
    scores = einsum(torch.cat([fold_sentence, fold_summary], dim=1), patches, "p l h w, p t n w -> p t h l n") * scale
    to_points, to_frame = scores.unbind(3)  # [P,T,H,N] each
    to_shared = repeat(einsum(q_summary[:, 0], k_shared, "p h d, p s h d -> p h s") * scale, "p h s -> p t h s", t=t)
    keep = torch.cat([shared_mask, shared_mask.new_ones(shared_mask.shape[0], n)], dim=1)
    attn = masked_softmax(torch.cat([to_shared, to_frame + bias[:, :, :, None] * scale], dim=-1), keep[:, None, None])
    a_shared, a_frame = attn.split([k_shared.shape[1], n], dim=-1)
    mixed = einsum(torch.stack([to_points.softmax(-1), a_frame], dim=3), patches, "p t h l n, p t n w -> p l t h w")
    picked = step_qkv.project_values(mixed[:, :1], mixed.new_ones(mixed[:, :1].shape[:-1]))
    frame_part = w2p_qkv.project_values(mixed[:, 1], a_frame.sum(-1))  # [P,T,H,d]
    out = einsum(a_shared, v_shared, "p t h s, p s h d -> p t h d") + frame_part
    return picked, rearrange(out, "p t h d -> p t 1 (h d)")


def feed_forward(*, width: int, mlp_ratio: float, dropout: float) -> nn.Sequential:
    hidden = int(width * mlp_ratio)
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, width), nn.Dropout(dropout))


class TrajectoryWordLayer(nn.Module):
    """One pre-LN layer of the asymmetric encoder: the text stream runs T2W, the video stream W2P.

    Tied (the original): trajectory step and W2P share one QKV; T2W has its own; one output projection
    and one feed-forward (with its norm) serve both streams. Untied: each has its own."""

    def __init__(self, *, width: int, heads: int, mlp_ratio: float, dropout: float, tie_weights: bool) -> None:
        super().__init__()
        self.tie_weights = tie_weights
        self.norm_text = nn.LayerNorm(width)
        self.norm_video = nn.LayerNorm(width)
        self.w2p_qkv = QKV(width=width, heads=heads)
        self.t2w_qkv = QKV(width=width, heads=heads)
        self.trajectory = TrajectoryStep(width=width)
        self.out_text = nn.Linear(width, width)
        self.ffn_text = feed_forward(width=width, mlp_ratio=mlp_ratio, dropout=dropout)
        if not tie_weights:
            self.step_qkv = QKV(width=width, heads=heads)
            self.out_video = nn.Linear(width, width)
            self.ffn_video = feed_forward(width=width, mlp_ratio=mlp_ratio, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    @property
    def out_video_proj(self) -> nn.Linear:
        return self.out_text if self.tie_weights else self.out_video

    @property
    def ffn_video_block(self) -> nn.Sequential:
        return self.ffn_text if self.tie_weights else self.ffn_video

    def trajectories(self, words: Tensor, patches: Tensor) -> Tensor:
        """Normalised words [P,L,W] and patches [P,T,N,W] -> trajectories [P,L,T,W] (for tests and reuse)."""
        qkv = self.w2p_qkv if self.tie_weights else self.step_qkv
        return self.trajectory(qkv.q(words), *qkv.kv(patches))

    def t2w(self, words: Tensor, tau: Tensor, word_mask: Tensor, frame_mask: Tensor,
            queries: Tensor | None = None) -> Tensor:
        """Normalised words [P,L,W], the trajectories [P,L',T,W] of the query words (default: all of them,
        L' = L; the first L' words otherwise) -> text-stream update [P,L',W]."""
        k_words, v_words = self.t2w_qkv.kv(words)
        k_traj, v_traj = self.t2w_qkv.kv(tau)
        q = self.t2w_qkv.q(words if queries is None else queries)
        return self.out_text(trajectory_to_word(q, k_words, v_words, k_traj, v_traj, word_mask, frame_mask))

    def forward(self, words: Tensor, summary: Tensor, patches: Tensor, word_mask: Tensor,
                frame_mask: Tensor, *, last: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        """words [P,L,W], video summary [P,W], patches [P,T,N,W] -> the three updated.

        last: the encoder reads only the sentence token and the summary after this layer, so only they are
        updated (words [P,1,W], patches None). Every other output of a layer is a per-token function of its
        attention output (projection, residual, feed-forward), so skipping those tokens' queries, outputs
        and feed-forward changes nothing that is read; it saves most of the last layer's video stream."""
        t = patches.shape[1]
        w = self.norm_text(words)
        # The summary is the same token in every frame (index 0 of each frame's 1+N tokens): it is normalised
        # and projected once per pair and joins the words among the keys every frame sees, in the same
        # order (words, summary, patches), instead of being copied into every frame.
        s = self.norm_video(summary)[:, None]  # [P,1,W]
        x = self.norm_video(patches)  # [P,T,N,W]
        k_shared, v_shared = self.w2p_qkv.kv(torch.cat([w, s], dim=1))  # [P,L+1,H,d]
        shared_mask = torch.cat([word_mask, word_mask.new_ones(word_mask.shape[0], 1)], dim=1)
        step_qkv = self.w2p_qkv if self.tie_weights else self.step_qkv
        if last:
            queries = w[:, :1]
            picked, video_mixed = last_layer_patch_reads(step_qkv, self.w2p_qkv, step_qkv.q(queries),
                                                         self.w2p_qkv.q(s), x, k_shared, v_shared, shared_mask)
            text_update = self.t2w(w, self.trajectory.output(picked), word_mask, frame_mask, queries=queries)
        else:
            k_patches, v_patches = self.w2p_qkv.kv(x)
            if self.tie_weights:  # the shared projection of the patches serves the trajectory step too
                tau = self.trajectory(self.w2p_qkv.q(w), k_patches, v_patches)
            else:
                tau = self.trajectories(w, x)
            text_update = self.t2w(w, tau, word_mask, frame_mask)
            q_summary = repeat(self.w2p_qkv.q(s), "p 1 h d -> p t 1 h d", t=t)
            q_video = torch.cat([q_summary, self.w2p_qkv.q(x)], dim=2)  # [P,T,1+N,H,d]
            video_mixed = word_to_patch(q_video, k_patches, v_patches, k_shared, v_shared, shared_mask)
        video_update = self.out_video_proj(video_mixed)
        # The summary's per-frame outputs are averaged over real frames only.
        weights = frame_mask.to(video_update.dtype)[..., None]
        summary_update = (video_update[:, :, 0] * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        words = (words[:, :1] if last else words) + self.drop(text_update)
        summary = summary + self.drop(summary_update)
        words = words + self.ffn_text(words)
        summary = summary + self.ffn_video_block(summary)
        if last:
            return words, summary, None
        patches = patches + self.drop(video_update[:, :, 1:])
        return words, summary, patches + self.ffn_video_block(patches)


class _PerturbedTopK(torch.autograd.Function):
    """Differentiable top-k by perturbation (Berthet et al. 2020; Cordonnier et al. 2021): the mean over
    noisy samples of the sorted-by-time one-hot selections; the gradient is E[selection * noise] / sigma."""

    @staticmethod
    def forward(ctx, scores: Tensor, keep: Tensor, k: int, samples: int, sigma: float) -> Tensor:
        noise = torch.randn(scores.shape[0], samples, scores.shape[1], device=scores.device, dtype=scores.dtype)
        perturbed = (scores[:, None] + sigma * noise).masked_fill(~keep[:, None], torch.finfo(scores.dtype).min)
        picked = perturbed.topk(k, dim=-1).indices.sort(dim=-1).values  # temporal order kept
        one_hot = F.one_hot(picked, scores.shape[1]).to(scores.dtype)  # [P,S,k,T]
        ctx.save_for_backward(one_hot, noise)
        ctx.sigma = sigma
        return one_hot.mean(1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        one_hot, noise = ctx.saved_tensors
        per_sample = einsum(grad, one_hot, "p k t, p s k t -> p s")
        grad_scores = einsum(per_sample, noise, "p s, p s t -> p t") / (ctx.sigma * noise.shape[1])
        return grad_scores, None, None, None, None


class FrameSelector(nn.Module):
    """The ICCV version's text-conditioned frame selector: score each frame from [frame ; sentence],
    softmax over real frames, keep the top k in temporal order (perturbed top-k in training, hard at eval)."""

    def __init__(self, *, width: int, samples: int, sigma: float) -> None:
        super().__init__()
        self.samples, self.sigma = samples, sigma
        self.frame_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        # No bias on the last layer: a constant added to every frame's score cancels in the softmax over frames.
        self.score = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, 1, bias=False))

    def forward(self, patches: Tensor, sentence: Tensor, frame_mask: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """patches [P,T,N,W], sentence [P,W], frame_mask [P,T] -> (selection [P,k,T], new frame mask [P,k])."""
        frames = self.frame_proj(patches.mean(2))
        joint = torch.cat([frames, sentence[:, None].expand_as(frames)], dim=-1)
        probs = masked_softmax(self.score(joint).squeeze(-1), frame_mask)
        if self.training and torch.is_grad_enabled():
            selection = _PerturbedTopK.apply(probs, frame_mask, k, self.samples, self.sigma)
        else:
            picked = probs.masked_fill(~frame_mask, -1.0).topk(k, dim=-1).indices.sort(dim=-1).values
            selection = F.one_hot(picked, probs.shape[1]).to(probs.dtype)
        new_mask = einsum(selection, frame_mask.to(selection.dtype), "p k t, p t -> p k") > 0.5
        return selection, new_mask


class TrajectoryWordEncoder(nn.Module):
    """Projects both sides to a common width and runs the layers; returns (sentence, video summary) [P,W]."""

    def __init__(self, *, text_width: int, vision_width: int, embed_dim: int, width: int, heads: int,
                 depth: int, mlp_ratio: float, dropout: float, tie_weights: bool, max_frames: int,
                 frame_selector: bool = False, select_before: tuple[int, ...] = (), select_ratio: float = 1.0,
                 selector_samples: int = 500, selector_sigma: float = 0.05) -> None:
        super().__init__()
        self.words_in = nn.Sequential(nn.LayerNorm(text_width), nn.Linear(text_width, width))
        self.patches_in = nn.Sequential(nn.LayerNorm(vision_width), nn.Linear(vision_width, width))
        self.sentence_in = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.video_in = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, width))
        self.frame_position = nn.Embedding(max_frames, width)
        nn.init.normal_(self.frame_position.weight, std=0.02)
        self.layers = nn.ModuleList([
            TrajectoryWordLayer(width=width, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout, tie_weights=tie_weights)
            for _ in range(depth)
        ])
        self.norm_text = nn.LayerNorm(width)
        self.norm_video = nn.LayerNorm(width)
        self.select_before = tuple(select_before) if frame_selector else ()
        self.select_ratio = select_ratio
        self.selectors = nn.ModuleDict({
            str(i): FrameSelector(width=width, samples=selector_samples, sigma=selector_sigma) for i in self.select_before
        })

    def project_words(self, token_states: Tensor) -> Tensor:
        """[...,L,C'] -> [...,L,W]: the word inputs of the fusion (what align-before-fuse contrasts)."""
        return self.words_in(token_states)

    def project_patches(self, patch_tokens: Tensor) -> Tensor:
        """[...,T,N,C] -> [...,T,N,W]: the patch inputs of the fusion, before the frame positions."""
        return self.patches_in(patch_tokens)

    def forward(self, *, token_states: Tensor, token_mask: Tensor, sentence: Tensor, patch_tokens: Tensor,
                frame_mask: Tensor, video: Tensor) -> tuple[Tensor, Tensor]:
        """token_states [P,L,C'], token_mask [P,L], sentence [P,D], patch_tokens [P,T,N,C], frame_mask [P,T],
        video [P,D] (the pooled dual embedding) -> (sentence state, video summary) [P,W] each."""
        t = patch_tokens.shape[1]
        words = torch.cat([self.sentence_in(sentence)[:, None], self.project_words(token_states)], dim=1)
        word_mask = torch.cat([torch.ones_like(token_mask[:, :1]), token_mask], dim=1)
        patches = self.project_patches(patch_tokens) + self.frame_position.weight[:t, None]
        summary = self.video_in(video)
        for i, layer in enumerate(self.layers):
            if str(i) in self.selectors:
                keep = min(t, max(1, math.ceil(self.select_ratio * patches.shape[1])))
                selection, frame_mask = self.selectors[str(i)](patches, words[:, 0], frame_mask, keep)
                patches = einsum(selection, patches, "p k t, p t n w -> p k n w")
            words, summary, patches = layer(words, summary, patches, word_mask, frame_mask,
                                            last=i == len(self.layers) - 1)
        return self.norm_text(words[:, 0]), self.norm_video(summary)


class MatchingHead(nn.Module):
    """MLP on [sentence ; video summary] -> one logit; the last layer starts at zero (identity at init)."""

    def __init__(self, *, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, sentence: Tensor, summary: Tensor) -> Tensor:
        return self.mlp(torch.cat([sentence, summary], dim=-1)).squeeze(-1)
