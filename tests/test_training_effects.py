"""Training effects over the whole registry: every trainable parameter of every adapter learns in every task
(or is listed, with the reason, as unused there), every adapter is the identity at initialisation; and two
properties of the task heads: the temperature learns from CLIP's bound, and the matching loss of cross
adapters without a head is on the scale of the retrieval loss.

The registry tests are parametrised from `vla.list_adapters()` at collection time, so an adapter
registered later is covered without editing this file.
"""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch

import vl_adapters as vla
from vl_adapters.backbones.open_clip_backbone import OpenClipBackbone
from vl_adapters.core.pooling import cosine_matrix
from vl_adapters.core.registry import ADAPTERS
from vl_adapters.data import synthetic

TASKS = {"retrieval": "retrieval", "multiple_choice": "multiple_choice",
         "open_qa": {"type": "open_qa", "num_answers": 4}}
STEPS = 3  # a zero-initialised gate moves at step 1 and lets gradient through to what is behind it at step 2

# Parameters that by design receive no gradient in a task: (adapter name, or "stage:<stage>", or "*"; task)
# -> {regex over "<adapter name>.<parameter>" or "task.<parameter>" ("{adapter}": the adapter's name): reason}.
# The test also fails when a listed parameter does receive a gradient, so the list stays true.
# The criterion is the literal one (some non-zero gradient): an offset that a softmax cancels (a bias added to
# every candidate's score) still gets rounding-level gradients (~1e-8) and passes it.
UNUSED: dict[tuple[str, str], dict[str, str]] = {
    ("*", "open_qa"): {
        r"task\.log_scale": "open_qa scores answers with its classifier; the contrastive temperature is not used",
    },
    ("stage:cross", "open_qa"): {
        r"{adapter}\..*": "the open_qa head classifies the dual-encoder embeddings and never scores (video, text) "
                      "pairs, so cross adapters do not run in it",
    },
    ("tem_temporal_aligner", "open_qa"): {
        r"{adapter}\.aligner\.(decoder|guidance_).*": "open QA has no event description to guide the "
        "predictor (a question is not one), so the prediction branch does not run; the encoder still pools",
    },
    ("fine_grained_alignment", "open_qa"): {
        r"fine_grained_alignment\..*": "its word-patch term enters the dual similarity, which open_qa never "
        "computes, and its loss needs the paired text (guidance), which open_qa does not pass",
    },
    ("xclip", "open_qa"): {
        r"xclip\..*": "its word/frame terms enter the dual similarity, which open_qa never computes",
    },
    ("multi_level_alignment", "open_qa"): {
        r"multi_level_alignment\.log_inv_temperature": "the temperature of its segment contrast, which needs "
        "the paired caption (guidance) that open_qa does not pass",
    },
    **{(name, "open_qa"): {
        r"salient_frame_scorer\..*": "frames are kept by a hard top-k of its scores, which learn only from the "
        "saliency loss against the paired caption (guidance); open_qa passes none",
    } for name in ("salient_frame_scorer", "salient_frames")},
    ("finsta", "open_qa"): {
        r"finsta\.(?!(video_student|text_student|video_gate|text_gate)\.).*": "the scene graphs are built from "
        "the paired caption (guidance), which open_qa does not pass: only the students and gates run",
    },
    ("trajectory_word", "multiple_choice"): {
        r"task\.log_scale": "trajectory_word's matching head gives the candidates' scores; the task temperature "
                            "only scales the cosine used when no head does",
    },
}

# Failures left to the owners of these adapters; strict, so a fix makes the marker fail and it is removed.
KNOWN_FAILING: dict[tuple[str, str], str] = {}


def unused_patterns(model, task: str) -> dict[str, str]:
    """The UNUSED entries that apply to this model and task, "{adapter}" filled in with each adapter's name."""
    patterns = dict(UNUSED.get(("*", task), {}))
    for adapter in model.adapters:
        for key in (adapter.name, f"stage:{adapter.stage}"):
            for pattern, reason in UNUSED.get((key, task), {}).items():
                patterns[pattern.replace("{adapter}", re.escape(adapter.name))] = reason
    return patterns


def trainable(model) -> dict[str, torch.nn.Parameter]:
    named = {f"{adapter.name}.{n}": p for adapter in model.adapters for n, p in adapter.named_parameters()}
    named.update({f"task.{n}": p for n, p in model.task.named_parameters()})
    return {n: p for n, p in named.items() if p.requires_grad}


def batch_for(task: str, frames, texts) -> dict:
    video, mask = frames
    if task == "retrieval":
        return {"video": video, "frame_mask": mask, "text": texts}
    questions = ["what moves?", "what appears?", "what changes colour?"]
    if task == "open_qa":
        return {"video": video, "frame_mask": mask, "question": questions, "answer": torch.tensor([0, 2, 1])}
    return {"video": video, "frame_mask": mask, "question": questions,
            "candidates": [["a circle", "a square"], ["a star", "a square", "nothing"],
                           ["the triangle", "the circle", "the square", "the star"]],
            "candidate_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool),
            "answer": torch.tensor([0, 2, 3])}


def registry_cases():
    for name in sorted(ADAPTERS.names()):
        for task in TASKS:
            reason = KNOWN_FAILING.get((name, task))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(name, task, marks=marks, id=f"{name}-{task}")


@pytest.mark.parametrize(("name", "task"), list(registry_cases()))
def test_every_trainable_parameter_learns_or_is_listed(name, task, frames, texts):
    # a fresh backbone each time: backbone adapters (LoRA, ST-Adapter) change the one they attach to
    torch.manual_seed(0)
    model = vla.wrap(vla.load_backbone("tiny", device="cpu"), [name], task=TASKS[task]).train()
    params = trainable(model)
    assert params, f"{name} in {task}: nothing to train"
    optimiser = torch.optim.AdamW(list(params.values()), lr=1e-2)
    batch = batch_for(task, frames, texts)
    learned: set[str] = set()
    for _ in range(STEPS):
        out = model(batch)
        optimiser.zero_grad()
        out.loss.backward()
        learned |= {n for n, p in params.items() if p.grad is not None and p.grad.abs().max() > 0}
        optimiser.step()
    patterns = unused_patterns(model, task)
    listed = {n for n in params if any(re.fullmatch(p, n) for p in patterns)}
    dead = sorted(set(params) - learned - listed)
    assert not dead, f"{name} in {task}: no gradient in {STEPS} steps for {dead}"
    stale = sorted(listed & learned)
    assert not stale, f"{name} in {task}: listed as unused but they learn (update UNUSED): {stale}"


# Adapters that are not the identity at initialisation by what they are, with the reason.
NOT_IDENTITY = {
    "single_frame": "it scores one frame (or an ensemble of single frames) instead of the mean over frames: "
                    "its baseline is what it measures (tests/test_single_frame.py checks it is the identity on "
                    "one-frame videos)",
}


@pytest.mark.parametrize("name", sorted(set(ADAPTERS.names()) - set(NOT_IDENTITY)))
def test_identity_at_initialisation(name, frames, texts):
    """A freshly wrapped model reproduces the backbone: the dual encoder's similarities exactly, and the
    cross adapters' pair scores up to a positive scale (the temperature), so every ranking is the same."""
    backbone = vla.load_backbone("tiny", device="cpu")
    video, mask = frames
    zero_shot = cosine_matrix(backbone.encode_text(texts), backbone.encode_video(video, mask))
    torch.manual_seed(0)
    model = vla.wrap(backbone, [name]).eval()
    with torch.no_grad():
        v, t = model.encode_video(video, mask), model.encode_text(texts)
        torch.testing.assert_close(model.dual_similarity(t, v), zero_shot, rtol=0, atol=1e-5)
        if model.cross_adapters:
            rows, cols = torch.arange(3).repeat_interleave(3), torch.arange(3).repeat(3)
            scores = model.score_pairs(t.index(rows), v.index(cols))
            cosine = zero_shot.flatten()
            scale = (scores @ cosine) / (cosine @ cosine)
            assert scale > 0
            torch.testing.assert_close(scores, scale * cosine, rtol=0, atol=1e-4 * float(scale))


# ---- the task temperature ------------------------------------------------------------------------------
def clip_scaled_tiny() -> OpenClipBackbone:
    """The tiny backbone with CLIP's trained logit scale, log(100) stored in fp32 (as open_clip and HF CLIP)."""
    tiny = vla.load_backbone("tiny", device="cpu")
    model = copy.deepcopy(tiny.model)
    model.logit_scale.data.fill_(math.log(100.0))
    return OpenClipBackbone(spec="tiny:tiny-clip", model=model, tokenizer=tiny.tokenizer, device="cpu")


def test_task_temperature_learns_from_clips_bound(frames, texts):
    backbone = clip_scaled_tiny()
    assert backbone.logit_scale == pytest.approx(100.0)
    model = vla.wrap(backbone, ["temporal_transformer"]).train()
    start = model.task.scale.item()
    assert start == pytest.approx(100.0)
    # plain Adam: AdamW's weight decay would pull a stuck log_scale under the bound by accident
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=1e-2)
    batch = batch_for("retrieval", frames, texts)
    for _ in range(3):
        loss = model(batch).loss
        optimiser.zero_grad()
        loss.backward()
        assert model.task.log_scale.grad.abs() > 0
        optimiser.step()
    assert model.task.scale.item() < start - 1.0

    # The bound holds: pushed up, the temperature stays at 100; pushed down again, it moves at once.
    head = model.task
    sgd = torch.optim.SGD([head.log_scale], lr=0.1)
    for direction in (-1.0, -1.0, -1.0):
        sgd.zero_grad()
        (direction * head.scale).backward()
        sgd.step()
        assert head.scale.item() <= 100.0 + 1e-3
    assert head.scale.item() == pytest.approx(100.0, abs=1e-3)
    sgd.zero_grad()
    head.scale.backward()
    sgd.step()
    assert head.scale.item() < 99.0


# ---- the matching loss of cross adapters without a head ----------------------------------------------
def synthetic_batch(count: int = 8, frames: int = 8):
    rng = np.random.default_rng(0)
    scenes = [synthetic.sample_scene(rng, num_frames=frames) for _ in range(count)]
    video = torch.stack([torch.from_numpy(synthetic.render_scene(s)).permute(0, 3, 1, 2) for s in scenes])
    return {"video": video, "text": [synthetic.temporal_caption(s) for s in scenes]}


def test_headless_matching_loss_is_on_the_scale_of_the_retrieval_loss():
    """On the synthetic-trained backbone, positives and hard negatives both have high cosine: the old binary
    cross-entropy on scale * cosine cost 7.6 nats against a retrieval loss of 1.0. The ranking form stays
    within the retrieval loss at initialisation, and still trains the cross adapter."""
    backbone = vla.load_backbone("tiny:synthetic", device="cpu")
    batch = synthetic_batch()
    torch.manual_seed(0)
    model = vla.wrap(backbone, ["tem_semantic_aligner"]).train()
    out = model(batch)
    retrieval, matching = out.losses["retrieval"].item(), out.losses["matching"].item()
    assert 0 < matching <= 3 * retrieval, (matching, retrieval)
    semantic = model.adapters[0]
    before = {n: p.detach().clone() for n, p in semantic.named_parameters()}
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    for _ in range(3):
        out = model(batch)
        optimiser.zero_grad()
        out.losses["matching"].backward()  # the matching loss alone trains the cross adapter
        optimiser.step()
    frozen = [n for n, p in semantic.named_parameters() if torch.equal(p, before[n])]
    assert not frozen
