"""The shared contrastive pieces: the multi-positive two-way InfoNCE, and the bounded temperature every
adapter's contrast uses (a temperature past the bound still learns back inside)."""

import math

import pytest
import torch
import torch.nn.functional as F

import vl_adapters as vla
from vl_adapters.core.adapter import AdapterContext
from vl_adapters.core.contrastive import infonce, two_way_infonce

DIMS = vla.BackboneDims(embed_dim=12, vision_width=10, text_width=8, grid=(2, 2), context_length=16, image_size=32)


def test_infonce_with_one_positive_is_the_cross_entropy_and_with_several_pools_them():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 3, 1, 4])
    one = F.one_hot(target, 5).bool()
    torch.testing.assert_close(infonce(logits, one), F.cross_entropy(logits, target))
    several = one.clone()
    several[0, 2] = True
    expected = -(logits[0].softmax(0)[[0, 2]].sum().log())
    rows = torch.stack([expected, *[F.cross_entropy(logits[i:i + 1], target[i:i + 1]) for i in (1, 2, 3)]])
    torch.testing.assert_close(infonce(logits, several), rows.mean())
    # a row without a positive takes no part; the two-way form adds the columns' side
    several[3] = False
    torch.testing.assert_close(infonce(logits, several), rows[:3].mean())
    torch.testing.assert_close(two_way_infonce(logits, one), 0.5 * (infonce(logits, one) + infonce(logits.T, one.T)))


def features(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = vla.TextFeatures(text_emb=torch.randn(b, 12, generator=g), token_states=torch.randn(b, 5, 8, generator=g),
                            token_mask=torch.ones(b, 5, dtype=torch.bool),
                            texts=[f"first the {c} circle moves left, then the square appears" for c in "abcd"[:b]])
    video = vla.VideoFeatures(frame_emb=torch.randn(b, 4, 12, generator=g), frame_mask=torch.ones(b, 4, dtype=torch.bool),
                              patch_tokens=torch.randn(b, 4, 4, 10, generator=g), grid=(2, 2))
    return text, video


def phrase_tower(texts):
    g = torch.Generator().manual_seed(len(texts))
    return vla.TextFeatures(text_emb=torch.randn(len(texts), 12, generator=g),
                            token_states=torch.randn(len(texts), 5, 8, generator=g),
                            token_mask=torch.ones(len(texts), 5, dtype=torch.bool))


def temperature_losses(name):
    """(the learnable log inverse temperature, a function giving the contrast's loss) of each adapter."""
    torch.manual_seed(0)
    text, video = features()
    if name == "finsta_osc":
        pytest.importorskip("torch_geometric")
        from vl_adapters.adapters.finsta.alignment import StructuralContrast

        contrast = StructuralContrast(dim=6)
        scores = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
        return contrast.log_inv_temperature, lambda: contrast.loss(scores, torch.ones(4, dtype=torch.bool),
                                                                   torch.arange(4))
    adapter = vla.build_adapter({"type": name, **({"dim": 6} if name == "fine_grained_alignment" else
                                                  {"layers": 1, "text_layers": 0})}, DIMS).train()
    ctx = AdapterContext(task="retrieval", text_to_video=torch.arange(4), guidance=text, encode_text=phrase_tower)
    return adapter.log_inv_temperature, lambda: sum(adapter(video, text, ctx).losses.values())


@pytest.mark.parametrize("name", ["fine_grained_alignment", "multi_level_alignment", "finsta_osc"])
def test_a_temperature_past_the_bound_learns_back_inside(name):
    log_inv_temperature, loss = temperature_losses(name)
    with torch.no_grad():  # an optimiser step took it past the bound: the scale reads 100
        log_inv_temperature.fill_(math.log(100.0) + 0.5)
    gradients = [torch.autograd.grad(sign * loss(), log_inv_temperature)[0] for sign in (1.0, -1.0)]
    # whichever sign of the loss wants a smaller scale gets its gradient through; a plain clamp blocks both
    assert sum(g.abs() > 0 for g in gradients) == 1
