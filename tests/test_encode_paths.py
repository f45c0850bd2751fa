"""Backbone.encode_video's fast paths give the features of the plain one: padded frames skipped and
scattered back, chunks without a per-video loop, fixed-size padded chunks for compiled towers, and (on a
GPU) bf16 without autocast, compiled, with no host sync."""

from __future__ import annotations

import pytest
import torch

import vl_adapters as vla


def _clips(b=4, t=5, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(b, t, 3, size, size, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 3:] = False
    mask[3, 1:] = False
    return frames, mask


def _per_video(backbone, frames, mask):
    """The reference: each video's real frames through the image tower on their own."""
    return [backbone.encode_images(frames[i][mask[i]]) for i in range(len(frames))]


def test_padded_frames_are_skipped_and_real_frames_match_per_video_encoding(tiny_backbone):
    frames, mask = _clips()
    out = tiny_backbone.encode_video(frames, mask)
    for i, (emb, tokens) in enumerate(_per_video(tiny_backbone, frames, mask)):
        torch.testing.assert_close(out.frame_emb[i][mask[i]], emb, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.patch_tokens[i][mask[i]], tokens, atol=1e-5, rtol=1e-5)
        assert not out.frame_emb[i][~mask[i]].any() and not out.patch_tokens[i][~mask[i]].any()
    assert torch.equal(out.frame_mask, mask)
    with pytest.raises(vla.FeatureShapeError, match="frame_mask"):
        tiny_backbone.encode_video(frames, mask[:, :3])


def test_a_tower_with_adapters_inside_gets_whole_videos_and_the_same_features(tiny_backbone):
    frames, mask = _clips(b=6)
    plain = tiny_backbone.encode_video(frames, mask)
    seen = []
    block = tiny_backbone.vision_tower().transformer.resblocks[0]
    handle = block.register_forward_pre_hook(lambda m, args: seen.append(tiny_backbone.video_layout))
    chunk = tiny_backbone.chunk_size
    try:
        tiny_backbone.chunk_size = 8  # several groups, each of whole videos
        grouped = tiny_backbone.encode_video(frames, mask)
    finally:
        handle.remove()
        tiny_backbone.chunk_size = chunk
    assert len(seen) > 1 and all(layout is not None for layout in seen)
    assert torch.equal(torch.cat([layout.frame_mask for layout in seen]), mask)
    torch.testing.assert_close(grouped.frame_emb, plain.frame_emb, atol=1e-5, rtol=1e-5)
    assert not tiny_backbone._is_adapted()  # without adapters inside: chunks of frames, no loop over videos


def test_fixed_size_chunks_of_a_compiled_tower_keep_the_features(tiny_backbone):
    frames, mask = _clips(b=5, t=3)
    plain = tiny_backbone.encode_video(frames, mask)
    chunk = tiny_backbone.chunk_size
    try:  # the padding a compiled tower gets, without compiling (inductor needs a compiler and minutes)
        tiny_backbone.compiled, tiny_backbone.chunk_size = True, 8
        padded = tiny_backbone.encode_video(frames, mask)
    finally:
        tiny_backbone.compiled, tiny_backbone.chunk_size = False, chunk
    torch.testing.assert_close(padded.frame_emb, plain.frame_emb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded.patch_tokens, plain.patch_tokens, atol=1e-5, rtol=1e-5)


def test_uint8_frames_are_transformed_on_the_device(tiny_backbone):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 3, 3, 40, 48), dtype=torch.uint8, generator=g)
    out = tiny_backbone.encode_video(frames)
    reference = tiny_backbone.encode_video(tiny_backbone.transform(frames))
    torch.testing.assert_close(out.frame_emb, reference.frame_emb)


@pytest.mark.gpu
def test_bf16_compiled_encoding_matches_fp32_without_host_syncs():
    frames, mask = _clips(b=8, t=4)
    reference = vla.load_backbone("tiny", device="cpu", precision="fp32").encode_video(frames, mask)
    fast = vla.load_backbone("tiny", device="cuda", precision="bf16", compile=True)
    fast.encode_video(frames.pin_memory(), mask)  # compile
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fast.encode_video(frames.pin_memory(), mask)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(out.frame_emb.cpu(), reference.frame_emb, atol=5e-2, rtol=5e-2)
