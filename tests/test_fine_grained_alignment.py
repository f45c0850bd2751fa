"""fine_grained_alignment: the similarity against a loop reference, the loss, identity at init, DDP gathering."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import vl_adapters as vla
from vl_adapters.core.adapter import AdapterContext
from vl_adapters.core.pooling import cosine_matrix, pair_cosine

DIMS = vla.BackboneDims(embed_dim=12, vision_width=10, text_width=8, grid=(2, 2), context_length=16, image_size=32)


def features(b=4, length=6, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    token_mask = torch.ones(b, length, dtype=torch.bool)
    token_mask[0, 3:] = False
    frame_mask = torch.ones(b, t, dtype=torch.bool)
    frame_mask[1, 2:] = False
    text = vla.TextFeatures(text_emb=torch.randn(b, 12, generator=g),
                            token_states=torch.randn(b, length, 8, generator=g), token_mask=token_mask)
    video = vla.VideoFeatures(frame_emb=torch.randn(b, t, 12, generator=g), frame_mask=frame_mask,
                              patch_tokens=torch.randn(b, t, 4, 10, generator=g), grid=(2, 2))
    return text, video


def adapter(seed=0, **config):
    torch.manual_seed(seed)
    return vla.build_adapter({"type": "fine_grained_alignment", "dim": 5, **config}, DIMS)


def reference_similarity(module, text, video):
    words, word_mask = module.project_words(text)
    patches, frame_mask = module.project_patches(video)
    out = torch.zeros(text.batch_size, video.batch_size)
    for i in range(text.batch_size):
        for j in range(video.batch_size):
            total = 0.0
            for word in torch.nonzero(word_mask[i]).flatten():
                per_frame = [(patches[j, t] @ words[i, word]).max() for t in torch.nonzero(frame_mask[j]).flatten()]
                total += sum(per_frame) / len(per_frame)
            out[i, j] = total / int(word_mask[i].sum())
    return out


@pytest.mark.parametrize("chunk", [1 << 25, 7])
def test_similarity_matches_a_loop_reference(chunk):
    module = adapter(chunk_elements=chunk)
    text, video = features()
    sims = module.fine_similarity(*module.project_words(text), *module.project_patches(video))
    torch.testing.assert_close(sims, reference_similarity(module, text, video), rtol=1e-5, atol=1e-5)
    assert sims.abs().max() <= 1.0 + 1e-6


def test_loss_is_the_two_way_infonce():
    module = adapter()
    text, video = features()
    text_to_video = torch.tensor([0, 1, 2, 3, 1, 2])  # six texts, two videos described twice
    text = vla.TextFeatures(text_emb=torch.cat([text.text_emb, text.text_emb[:2]]),
                            token_states=torch.cat([text.token_states, text.token_states[:2] * -1]),
                            token_mask=torch.cat([text.token_mask, text.token_mask[:2]]))
    out = module(video, text, AdapterContext(task="retrieval", text_to_video=text_to_video))
    logits = module.log_inv_temperature.exp() * reference_similarity(module, text, video)
    text_loss = F.cross_entropy(logits, text_to_video)
    positive = text_to_video[None, :] == torch.arange(4)[:, None]
    log_prob = logits.T.log_softmax(1)
    video_loss = -torch.stack([log_prob[j][positive[j]].logsumexp(0) for j in range(4)]).mean()
    torch.testing.assert_close(out.losses["fine_grained"], 0.5 * (text_loss + video_loss), rtol=1e-5, atol=1e-5)
    # the features pass through unchanged; one side alone gives no loss
    assert out.video is video and out.text is text
    assert module(video, None, AdapterContext()).losses == {}
    # multiple-choice candidates without guidance are not treated as positives
    assert module(video, text, AdapterContext(task="multiple_choice", text_to_video=text_to_video)).losses == {}


def test_identity_at_init_and_influence_after_training(tiny_backbone, frames, texts):
    video_frames, mask = frames
    model = vla.wrap(tiny_backbone, ["fine_grained_alignment"]).eval()
    # the backbone's features as the model holds them (its text store encodes in fixed-size calls)
    zero_shot = cosine_matrix(model.frozen_text(texts), tiny_backbone.encode_video(video_frames, mask))
    assert torch.equal(model.similarity(texts, video_frames, frame_mask=mask), zero_shot)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model.train()
    for step in range(2):
        optimizer.zero_grad()
        out = model({"video": video_frames, "frame_mask": mask, "text": texts})
        out.loss.backward()
        if step == 1:  # after one step the zero-initialised weight has moved and lets gradient through
            dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().max() == 0)]
            assert not dead
        optimizer.step()
    assert set(out.losses) == {"retrieval", "fine_grained_alignment/fine_grained"}
    model.eval()
    trained = model.similarity(texts, video_frames, frame_mask=mask)
    assert (trained - zero_shot).abs().max() > 1e-4
    # still a dual encoder: one text scored alone gets the same row as in the batch
    alone = model.similarity(texts[1:2], video_frames, frame_mask=mask)
    torch.testing.assert_close(alone[0], trained[1], rtol=0, atol=1e-6)


def test_bad_inputs_are_named():
    module = adapter()
    text, video = features()
    with pytest.raises(vla.FeatureShapeError, match="patch_tokens"):
        module.extra_similarity(text, video.replace(patch_tokens=None, grid=None))
    with pytest.raises(vla.ConfigError, match="temperature"):
        adapter(temperature=0.0)


SPLITS = ((2, 2), (3, 1))  # texts/videos per rank: equal shards, then unequal ones


def _ddp_worker(rank, world, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for case, splits in enumerate(SPLITS):
            module = adapter()
            text, video = features(b=4)
            length = 6 if rank == 0 else 4  # ranks with texts of different lengths
            start = sum(splits[:rank])
            rows = torch.arange(start, start + splits[rank])
            text_part = text.index(rows)
            text_part = text_part.replace(token_states=text_part.token_states[:, :length],
                                          token_mask=text_part.token_mask[:, :length])
            loss = module.contrastive_loss(text_part, video.index(rows), torch.arange(len(rows)))
            loss.backward()
            results[case, rank] = (loss.item(), module.word_proj.weight.grad.clone())
    finally:
        dist.destroy_process_group()


def test_negatives_are_gathered_across_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, port, results), nprocs=2, join=True)
    for case, splits in enumerate(SPLITS):
        text, video = features(b=4)
        # the single-process reference sees the same texts (rank 1's cut to 4 tokens: positions 4-5 dropped)
        mask = text.token_mask.clone()
        mask[splits[0]:, 4:] = False
        text = text.replace(token_mask=mask)
        module = adapter()
        full = module.contrastive_loss(text, video, torch.arange(4))
        full.backward()
        with torch.no_grad():
            logits = module.log_inv_temperature.exp() * module.fine_similarity(
                *module.project_words(text), *module.project_patches(video))
        # each rank: its own texts against every video and its own videos against every text
        for rank, rows in enumerate(torch.arange(4).split(list(splits))):
            expected = 0.5 * (F.cross_entropy(logits[rows], rows) + F.cross_entropy(logits.T[rows], rows))
            assert abs(results[case, rank][0] - expected.item()) < 1e-5
        if splits[0] == splits[1]:
            # equal shards: the mean of the rank losses and gradients (what DDP averages) is the full batch's
            assert abs((results[case, 0][0] + results[case, 1][0]) / 2 - full.item()) < 1e-5
            torch.testing.assert_close((results[case, 0][1] + results[case, 1][1]) / 2,
                                       module.word_proj.weight.grad, rtol=1e-4, atol=1e-6)


# ---- multiple choice and align-before-fuse with trajectory_word ------------------------------------

def test_pair_similarity_is_the_diagonal_of_the_matrix():
    text, video = features()
    for module in (adapter(chunk_elements=7), _bound_to_trajectory_word(chunk_elements=7)[0]):
        with torch.no_grad():
            module.similarity_weight.fill_(0.5)
        matrix = module.extra_similarity(text, video)
        torch.testing.assert_close(module.extra_pair_similarity(text, video), matrix.diagonal(), rtol=1e-5, atol=1e-6)


def _bound_to_trajectory_word(**config):
    fine = adapter(**config)
    fusion = vla.build_adapter({"type": "trajectory_word", "width": 8, "heads": 2}, DIMS)
    fine.bind([fine, fusion])
    return fine, fusion


def _mc_batch(frames, answer=True):
    video_frames, mask = frames
    batch = {"video": video_frames, "frame_mask": mask, "question": ["what happens", "which shape", "what colour"],
             "candidates": [["a red circle moves left", "a blue square appears", "nothing"],
                            ["a blue square appears", "the green triangle turns yellow", "a red circle moves left"],
                            ["the green triangle turns yellow", "a red circle moves left", "nothing"]],
             "candidate_mask": torch.ones(3, 3, dtype=torch.bool)}
    if answer:
        batch["answer"] = torch.tensor([0, 0, 0])
    return batch


def _train(model, batch, steps, lr=1e-2):
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(batch)
        out.loss.backward()
        optimizer.step()
    return out


def test_fine_grained_term_changes_multiple_choice_scores_once_trained(tiny_backbone, frames):
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, ["fine_grained_alignment"], task="multiple_choice")
    fine = model.adapters[0]
    batch, unlabelled = _mc_batch(frames), _mc_batch(frames, answer=False)
    video, text = model.encode_inputs(batch["video"], model.task.candidate_texts(model, batch["question"], batch["candidates"]),
                                      batch["frame_mask"])
    owner = torch.arange(3).repeat_interleave(3)
    plain = model.task.scale * pair_cosine(text, video.index(owner))
    # identity at initialisation: the candidates score exactly as the backbone's cosine
    assert torch.equal(model.eval()(unlabelled).scores.flatten(), plain.detach())
    _train(model, batch, steps=3)
    assert fine.similarity_weight.abs() > 1e-3  # the multiple-choice loss reaches the weight
    model.eval()
    with torch.no_grad():
        trained = model(unlabelled).scores
        weight = fine.similarity_weight.clone()
        fine.similarity_weight.zero_()
        without = model(unlabelled).scores
        fine.similarity_weight.copy_(weight)
        term = model.task.scale * fine.extra_pair_similarity(text, video.index(owner)).view(3, 3)
    assert (trained - without).abs().max() > 1e-3
    torch.testing.assert_close(trained - without, term, rtol=1e-4, atol=1e-5)


def test_align_before_fuse_trains_the_projections_the_fusion_encoder_reads(tiny_backbone, frames, texts):
    video_frames, mask = frames
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, ["fine_grained_alignment", {"type": "trajectory_word", "heads": 4}])
    fine, fusion = model.adapters
    video, text = model.encode_inputs(video_frames, texts, mask)
    model.train()
    _, _, losses = model.adapt(video, text, text_to_video=torch.arange(3), guidance=text)
    read = {"words_in": fusion.encoder.words_in, "patches_in": fusion.encoder.patches_in}
    before = {name: [p.detach().clone() for p in module.parameters()] for name, module in read.items()}
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1.0)
    optimizer.zero_grad()
    losses["fine_grained_alignment/fine_grained"].backward()  # the fine-grained loss alone
    for name, module in read.items():
        assert all(p.grad is not None and p.grad.abs().max() > 0 for p in module.parameters()), name
    optimizer.step()
    for name, module in read.items():
        assert all((p - q).abs().max() > 0 for p, q in zip(module.parameters(), before[name], strict=True)), name
    # the contrast runs on exactly the inputs the encoder fuses, under its own heads
    assert fine.fusion is fusion and fine.word_proj.in_features == fine.patch_proj.in_features == fusion.width
    words, _ = fine.project_words(text)
    torch.testing.assert_close(words, torch.nn.functional.normalize(fine.word_proj(fusion.fusion_words(text)), dim=-1))


def test_identity_at_init_of_both_together_and_save_load(tmp_path, tiny_backbone, frames, texts):
    video_frames, mask = frames
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, ["fine_grained_alignment", {"type": "trajectory_word", "heads": 4}]).eval()
    zero_shot = cosine_matrix(tiny_backbone.encode_text(texts), tiny_backbone.encode_video(video_frames, mask))
    scale = model.adapters[1].config.residual_scale
    torch.testing.assert_close(model.similarity(texts, video_frames, frame_mask=mask, rerank_k=0), scale * zero_shot,
                               rtol=1e-5, atol=1e-5)
    mc = vla.wrap(tiny_backbone, ["fine_grained_alignment", {"type": "trajectory_word", "heads": 4}],
                  task="multiple_choice").eval()
    batch = _mc_batch(frames, answer=False)
    video, text = mc.encode_inputs(video_frames, mc.task.candidate_texts(mc, batch["question"], batch["candidates"]), mask)
    plain = pair_cosine(text, video.index(torch.arange(3).repeat_interleave(3)))
    torch.testing.assert_close(mc(batch).scores.flatten(), scale * plain, rtol=1e-5, atol=1e-5)
    # trained-looking weights survive a save/load (the heads are sized at bind time, on load too)
    _train(model, {"video": video_frames, "frame_mask": mask, "text": texts}, steps=2)
    model.eval()
    model.save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, backbone=tiny_backbone).eval()
    assert loaded.adapters[0].fusion is loaded.adapters[1]
    assert torch.equal(model.similarity(texts, video_frames, frame_mask=mask, rerank_k=0),
                       loaded.similarity(texts, video_frames, frame_mask=mask, rerank_k=0))


@pytest.mark.parametrize("task", ["retrieval", "multiple_choice"])
def test_both_train_every_parameter(tiny_backbone, frames, texts, task):
    video_frames, mask = frames
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, ["fine_grained_alignment", {"type": "trajectory_word", "heads": 4}], task=task)
    batch = _mc_batch(frames) if task == "multiple_choice" else {"video": video_frames, "frame_mask": mask, "text": texts}
    # In multiple choice the matching head's logits are the scores: the task temperature is not used.
    unused = {"task.log_scale"} if task == "multiple_choice" else set()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad and n not in unused}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    out = _train(model, batch, steps=3)
    assert "fine_grained_alignment/fine_grained" in out.losses
    assert not [n for n, p in trainable.items() if p.grad is None or p.grad.abs().max() == 0]
    assert not [n for n, p in trainable.items() if torch.equal(p, before[n])]


def test_reranking_carries_the_fine_grained_term(tiny_backbone, frames, texts):
    video_frames, mask = frames
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, ["fine_grained_alignment", {"type": "trajectory_word", "heads": 4}]).eval()
    with torch.no_grad():
        model.adapters[0].similarity_weight.fill_(0.7)
    dual = model.dual_similarity(model.encode_text(texts), model.encode_video(video_frames, mask))
    reranked = model.similarity(texts, video_frames, frame_mask=mask, rerank_k=0)
    # the matching head is still zero: the re-ranked score is the residual on the full dual score
    torch.testing.assert_close(reranked, model.adapters[1].config.residual_scale * dual, rtol=1e-5, atol=1e-5)


def test_two_fusion_partners_are_refused():
    fine = adapter()
    first, second = (vla.build_adapter({"type": "trajectory_word", "width": 8, "heads": 2}, DIMS) for _ in range(2))
    with pytest.raises(vla.CompositionError, match="one fusion encoder"):
        fine.bind([fine, first, second])


@pytest.mark.parametrize("task", ["retrieval", "multiple_choice"])
def test_a_step_computes_the_similarity_once_with_the_losses_of_separate_passes(tiny_backbone, frames, texts,
                                                                                monkeypatch, task):
    """A retrieval step's contrast (texts against videos and videos against texts) and its dual score read one
    [texts, videos] similarity, a multiple-choice step's contrast one too; losses and gradients are those of
    the separate passes written plainly (before: three passes in retrieval, two in multiple choice)."""
    video_frames, mask = frames
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, ["fine_grained_alignment"], task=task).train()
    fine = model.adapters[0]
    with torch.no_grad():
        fine.similarity_weight.fill_(0.5)  # off zero, so the dual score's term has a gradient
    if task == "retrieval":
        batch = {"video": video_frames, "frame_mask": mask, "text": texts}
    else:
        batch = {"video": video_frames, "frame_mask": mask, "question": ["what?"] * 3,
                 "candidates": [texts, texts[::-1], texts[1:] + texts[:1]], "answer": torch.tensor([0, 2, 1]),
                 "candidate_mask": torch.ones(3, 3, dtype=torch.bool)}
    calls = []
    similarity = type(fine).fine_similarity
    monkeypatch.setattr(type(fine), "fine_similarity", lambda *a: calls.append(1) or similarity(*a))
    out = model(batch)
    assert len(calls) == 1
    parameters = model.trainable_parameters()
    grads = torch.autograd.grad(out.loss, parameters, allow_unused=True)
    monkeypatch.setattr(type(fine), "fine_similarity", similarity)

    # reference: every similarity computed on its own
    video = tiny_backbone.encode_video(video_frames, mask)
    scale = fine.log_inv_temperature.exp()
    if task == "retrieval":
        text = model.frozen_text(texts)
    else:
        text = model.frozen_text([f"what? {a}" for a in batch["candidates"][0][:1]]
                                 + [f"what? {batch['candidates'][1][2]}", f"what? {batch['candidates'][2][1]}"])
    words, word_mask = fine.project_words(text)
    patches, frame_mask = fine.project_patches(video)
    to_videos = scale * fine.fine_similarity(words, word_mask, patches, frame_mask)
    to_texts = scale * fine.fine_similarity(words, word_mask, patches, frame_mask).T
    target = torch.arange(3)
    contrast = 0.5 * (F.cross_entropy(to_videos, target) + F.cross_entropy(to_texts, target))
    torch.testing.assert_close(out.losses["fine_grained_alignment/fine_grained"], contrast, rtol=1e-5, atol=1e-5)
    if task == "retrieval":
        dual = cosine_matrix(text, video) + fine.similarity_weight * fine.fine_similarity(words, word_mask, patches,
                                                                                          frame_mask)
        logits = model.task.scale * dual
        retrieval = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        torch.testing.assert_close(out.losses["retrieval"], retrieval, rtol=1e-5, atol=1e-5)
        reference_loss = contrast + retrieval
    else:
        candidates = model.frozen_text([f"what? {a}" for options in batch["candidates"] for a in options])
        owner = torch.arange(3).repeat_interleave(3)
        scores = model.task.scale * (pair_cosine(candidates, video.index(owner))
                                     + fine.extra_pair_similarity(candidates, video.index(owner))).view(3, 3)
        choice = F.cross_entropy(scores, batch["answer"])
        torch.testing.assert_close(out.losses["multiple_choice"], choice, rtol=1e-5, atol=1e-5)
        reference_loss = contrast + choice
    reference = torch.autograd.grad(reference_loss, parameters, allow_unused=True)
    for name, a, b in zip([n for n, p in model.named_parameters() if p.requires_grad], grads, reference, strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_a_copy_of_the_model_after_a_step_carries_no_kept_similarity():
    import copy

    module = adapter().train()
    text, video = features()
    module.contrastive_loss(text, video, torch.arange(4), keep=True)
    assert module._paired is not None  # held for the retrieval head's dual score
    copied = copy.deepcopy(module)  # a kept similarity with its graph could not be copied
    assert copied._paired is None and module._paired is not None
