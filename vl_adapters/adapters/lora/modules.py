from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LoraMultiheadAttention(nn.Module):
    """LoRA on an nn.MultiheadAttention's in_proj and out_proj (open_clip 3.x attention).

    peft's own MultiheadAttention layer merges the update into the base weight for each forward and
    subtracts it afterwards, which leaves rounding drift in the frozen weights; here the updated
    weights are built as new tensors for each call, so the base weights are never written.
    """

    def __init__(self, *, base: nn.MultiheadAttention, rank: int, alpha: float) -> None:
        super().__init__()
        if not base._qkv_same_embed_dim or base.bias_k is not None:
            raise ValueError("lora: only self-attention with a packed in_proj and no bias_k/bias_v is supported")
        width = base.embed_dim
        self.base_layer = base
        self.scaling = alpha / rank
        self.lora_in_A = nn.Linear(width, rank, bias=False)
        self.lora_in_B = nn.Linear(rank, 3 * width, bias=False)
        self.lora_out_A = nn.Linear(width, rank, bias=False)
        self.lora_out_B = nn.Linear(rank, width, bias=False)
        for down in (self.lora_in_A, self.lora_out_A):
            nn.init.kaiming_uniform_(down.weight, a=5**0.5)
        for up in (self.lora_in_B, self.lora_out_B):  # zero: the layer starts as the frozen one
            nn.init.zeros_(up.weight)

    def delta_weights(self) -> tuple[Tensor, Tensor]:
        delta_in = self.lora_in_B.weight @ self.lora_in_A.weight
        delta_out = self.lora_out_B.weight @ self.lora_out_A.weight
        return delta_in * self.scaling, delta_out * self.scaling

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        base = self.base_layer
        delta_in, delta_out = self.delta_weights()
        dtype = base.in_proj_weight.dtype
        in_weight = base.in_proj_weight + delta_in.to(dtype)
        out_weight = base.out_proj.weight + delta_out.to(dtype)
        if base.batch_first:  # [N, L, E] -> [L, N, E], as the functional form expects
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, base.embed_dim, base.num_heads, in_weight, base.in_proj_bias, None, None,
            base.add_zero_attn, base.dropout, out_weight, base.out_proj.bias, training=self.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal,
        )
        return (out.transpose(0, 1) if base.batch_first else out), weights

    def merged(self) -> nn.MultiheadAttention:
        """The base layer with the update folded into its weights (call on a copy: it writes them)."""
        delta_in, delta_out = self.delta_weights()
        base = self.base_layer
        base.in_proj_weight.data += delta_in.detach().to(base.in_proj_weight.dtype)
        base.out_proj.weight.data += delta_out.detach().to(base.out_proj.weight.dtype)
        return base
