"""The finsta adapter: identity at init through vla.wrap, graph-free inference, every parameter trains in
retrieval and multiple choice, wrong candidates never enter the alignment, the HSG trains and shapes the
students' targets without reaching an embedding, node words come from the frozen text tower with no sentence
shortcut, the losses learn, the backbone stays frozen, and bad inputs fail clearly."""

import zlib

import pytest
import torch

pytest.importorskip("torch_geometric")

import vl_adapters as vla  # noqa: E402
from vl_adapters.adapters.finsta import Finsta, FinstaConfig  # noqa: E402
from vl_adapters.core.adapter import AdapterContext, BackboneDims  # noqa: E402
from vl_adapters.core.features import FeatureShapeError, TextFeatures, VideoFeatures  # noqa: E402
from vl_adapters.core.pooling import cosine_matrix  # noqa: E402

pytestmark = pytest.mark.graph


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing a shared CI runner (30x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CAPTIONS = [
    "a red circle moves left, then a blue square appears",
    "the green triangle turns yellow after the red square disappears",
    "a man is driving a car down the road",
    "a woman slices a tomato quickly",
]
DIMS = BackboneDims(embed_dim=32, vision_width=24, text_width=24, grid=(4, 4), context_length=16, image_size=32)


def word_tower(embed_dim=32):
    """A stand-in for the frozen text tower outside vla.wrap: a fixed random vector per string."""
    def encode(words):
        rows = [torch.randn(embed_dim, generator=torch.Generator().manual_seed(zlib.crc32(w.encode())))
                for w in words]
        return TextFeatures(text_emb=torch.stack(rows))
    return encode


def context(**kwargs):
    return AdapterContext(encode_text=word_tower(), **kwargs)


def zero_shot(backbone, texts, video, mask):
    return cosine_matrix(backbone.encode_text(texts), backbone.encode_video(video, mask))


@pytest.mark.parametrize("graphs", [False, True])
def test_identity_at_init_through_wrap(tiny_backbone, frames, texts, graphs):
    video, mask = frames
    model = vla.wrap(tiny_backbone, [{"type": "finsta", "use_graphs_at_inference": graphs, "dim": 32}]).eval()
    sims = model.similarity(texts, video, frame_mask=mask)
    assert (sims - zero_shot(tiny_backbone, texts, video, mask)).abs().max() <= 1e-6


def test_inference_without_graphs_never_builds_one(tiny_backbone, frames, texts, monkeypatch):
    video, mask = frames
    model = vla.wrap(tiny_backbone, [{"type": "finsta", "dim": 32}]).eval()
    adapter = model.adapters[0]
    for name in ("encode_video_graph", "encode_text_graph", "holistic"):
        monkeypatch.setattr(adapter, name, lambda *a, **k: pytest.fail("a graph was built at inference"))
    encoded = model.encode_video(video, mask)
    assert torch.equal(encoded.frame_emb, tiny_backbone.encode_video(video, mask).frame_emb)
    assert torch.equal(model.encode_text(texts).text_emb, model.frozen_text(texts).text_emb)
    with torch.no_grad():  # once the gates are non-zero the student changes the embeddings, still without graphs
        adapter.video_gate.weight.normal_()
        adapter.text_gate.weight.normal_()
    assert not torch.allclose(model.encode_video(video, mask).frame_emb, encoded.frame_emb)
    model.similarity(texts, video, frame_mask=mask)


def mc_batch(video, mask, wrong=("a dog sleeps on a sofa", "a cat jumps onto the table", "two men play tennis")):
    """Three videos, 2-3 candidates each; the right ones are fixed, the wrong ones given."""
    return {"video": video, "frame_mask": mask, "question": ["what happens"] * 3,
            "candidates": [["a man drives a car", wrong[0]], [wrong[1], "a woman cuts a tomato", wrong[2]],
                           ["a circle moves left, then a square appears", wrong[0]]],
            "candidate_mask": torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool),
            "answer": torch.tensor([0, 1, 0])}


@pytest.mark.parametrize("task", ["retrieval", "multiple_choice"])
def test_every_parameter_trains_and_the_backbone_stays_frozen(frames, texts, task):
    backbone = vla.load_backbone("tiny", device="cpu")
    torch.manual_seed(0)
    model = vla.wrap(backbone, [{"type": "finsta", "dim": 32, "slots": 3}], task=task)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    model.train()
    video, mask = frames
    batch = {"video": video, "frame_mask": mask, "text": texts} if task == "retrieval" else mc_batch(video, mask)
    out = model(batch)
    names = {f"finsta/{k}" for k in ("osc", "ptc", "hsg", "distill_video", "distill_text")}
    assert names <= set(out.losses) and all(torch.isfinite(out.losses[n]) for n in names)
    out.loss.backward()
    silent = [n for n, p in model.adapters[0].named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not silent, silent
    optimizer.step()
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_wrong_candidates_never_enter_the_alignment(frames, monkeypatch):
    """Multiple choice: the alignment, matching and distillation losses see only the right candidate of each
    video (the guidance), so changing the wrong candidates' texts changes none of them. Before, every
    candidate of a video was its positive."""
    backbone = vla.load_backbone("tiny", device="cpu")
    video, mask = frames
    torch.manual_seed(0)
    model = vla.wrap(backbone, [{"type": "finsta", "dim": 32, "slots": 3}], task="multiple_choice").train()
    adapter = model.adapters[0]
    seen = []
    encode = adapter.encode_text_graph
    monkeypatch.setattr(adapter, "encode_text_graph",
                        lambda text, *a: seen.append(list(text.texts)) or encode(text, *a))
    first = model(mc_batch(video, mask)).losses
    second = model(mc_batch(video, mask, wrong=("people are dancing at a party", "a bird sings",
                                                "the car suddenly stops"))).losses
    for name in ("osc", "ptc", "hsg", "distill_video", "distill_text"):
        assert torch.equal(first[f"finsta/{name}"], second[f"finsta/{name}"]), name
    right = ["what happens a man drives a car", "what happens a woman cuts a tomato",
             "what happens a circle moves left, then a square appears"]
    assert seen == [right, right]
    # the task loss does see the wrong candidates (through the students), as it should
    assert not torch.equal(first["multiple_choice"], second["multiple_choice"])


def paired_set(dims=DIMS, videos=4, frames=4, seed=0):
    """Features of 4 videos whose patch tokens hold distinct objects, 1 object moving, and 4 captions."""
    g = torch.Generator().manual_seed(seed)
    gh, gw = dims.grid
    tokens = torch.randn(videos, 1, gh * gw, dims.vision_width, generator=g).expand(-1, frames, -1, -1).clone()
    objects = torch.randn(videos, 2, dims.vision_width, generator=g) * 3
    for t in range(frames):
        tokens[:, t, 0] = objects[:, 0]
        tokens[:, t, 4 + t % gw] = objects[:, 1]  # moves right along the second row
    video = VideoFeatures(frame_emb=torch.randn(videos, frames, dims.embed_dim, generator=g),
                          frame_mask=torch.ones(videos, frames, dtype=torch.bool), patch_tokens=tokens, grid=dims.grid)
    mask = torch.ones(videos, 6, dtype=torch.bool)
    text = TextFeatures(text_emb=torch.randn(videos, dims.embed_dim, generator=g),
                        token_states=torch.randn(videos, 6, dims.text_width, generator=g), token_mask=mask,
                        texts=CAPTIONS[:videos])
    return video, text


def test_the_hsg_trains_and_shapes_the_students_targets():
    torch.manual_seed(0)
    adapter = Finsta(FinstaConfig(dim=32, heads=4, slots=3), DIMS).train()
    video, text = paired_set()
    ctx = context(text_to_video=torch.arange(4), guidance=text)
    out = adapter(video, text, ctx)
    out.losses["hsg"].backward()
    for module in (adapter.holistic_encoder, adapter.match_head, adapter.video_node_score, adapter.text_node_score):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), module
    # the students' targets come from the HSG: without its cross-modal edges they change
    with torch.no_grad():
        vg = adapter.encode_video_graph(video, None, ctx.encode_text)
        tg = adapter.encode_text_graph(text, ctx.encode_text)
        scores = adapter.structural_scores(vg, tg)
        total = scores["osc"][0] + scores["ptc"][0]
        _, with_edges = adapter.holistic_losses(vg, tg, torch.arange(4), total)
        graph, _, _ = adapter.holistic(vg, tg, torch.stack([torch.arange(4)] * 2, 1))
        assert graph.cross_edge_index.shape[1] > 0
        adapter.config.hsg_threshold = 2.0  # above any cosine: no cross-modal edge
        _, without = adapter.holistic_losses(vg, tg, torch.arange(4), total)
    assert not torch.allclose(with_edges.video, without.video) and not torch.allclose(with_edges.text, without.text)
    assert with_edges.has_video.all() and with_edges.has_text.all()


def test_the_factored_hsg_gives_the_losses_of_the_union_graph_of_copies(monkeypatch):
    """The HSG encoder projects each video's and caption's graph once and indexes the pairs' copies: every loss
    (and its gradient) is the one the encoder gives on the materialised union of copies, as before."""
    from _finsta_reference import reference_holistic_encoder

    from vl_adapters.adapters.finsta.holistic import HolisticEncoder

    torch.manual_seed(0)
    adapter = Finsta(FinstaConfig(dim=32, heads=4, slots=3), DIMS).train()
    video, text = paired_set()
    ctx = context(text_to_video=torch.arange(4), guidance=text)
    parameters = [p for p in adapter.parameters() if p.requires_grad]

    def losses_and_grads():
        losses = adapter(video, text, ctx).losses
        grads = torch.autograd.grad(sum(losses.values()), parameters, allow_unused=True)
        return losses, grads

    factored, factored_grads = losses_and_grads()
    monkeypatch.setattr(HolisticEncoder, "forward", reference_holistic_encoder)
    union, union_grads = losses_and_grads()
    assert set(factored) == set(union) and "hsg" in factored
    for name in factored:
        torch.testing.assert_close(factored[name], union[name], rtol=1e-5, atol=1e-5, msg=name)
    for a, b in zip(factored_grads, union_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_caption_never_reaches_its_videos_embedding():
    """Training sees pairs, but the video's embedding (student feature through the gate) depends on the video
    alone: another caption gives the same video embedding."""
    torch.manual_seed(0)
    adapter = Finsta(FinstaConfig(dim=32, heads=4, slots=3), DIMS).train()
    with torch.no_grad():
        adapter.video_gate.weight.normal_()
    video, text = paired_set()
    other = text.replace(texts=list(reversed(CAPTIONS)))
    outputs = [adapter(video, t, context(text_to_video=torch.arange(4), guidance=t)) for t in (text, other)]
    assert torch.equal(outputs[0].video.frame_emb, outputs[1].video.frame_emb)
    assert not torch.equal(outputs[0].losses["distill_video"], outputs[1].losses["distill_video"])


def test_node_words_come_from_the_frozen_text_tower(tiny_backbone, monkeypatch):
    model = vla.wrap(tiny_backbone, [{"type": "finsta", "dim": 32}])
    adapter = model.adapters[0]
    asked = []
    frozen = model.frozen_text
    monkeypatch.setattr(model, "frozen_text", lambda words: asked.append(list(words)) or frozen(words))
    text = tiny_backbone.encode_text(["a cartoon character is talking"])
    encoded = adapter.encode_text_graph(text, model._context().encode_text)
    assert sorted(asked[0]) == ["cartoon", "character", "talking"]
    expected = adapter.word_proj(tiny_backbone.encode_text(["cartoon", "character", "talking"]).text_emb)
    words = adapter.word_features(["cartoon", "character", "talking"], frozen, "cpu")
    assert torch.allclose(words, expected, atol=1e-6)
    # other word vectors give other node states: the words' meaning enters through the tower
    other = adapter.encode_text_graph(text, lambda words: TextFeatures(text_emb=frozen(words).text_emb.flip(0)))
    assert not torch.allclose(encoded.nodes, other.nodes)


def test_graph_nodes_carry_no_sentence_embedding():
    """The TSG sees words and structure only: changing the caption's sentence embedding or token states
    changes no node state (before, a projection of the sentence embedding was added to every node)."""
    adapter = Finsta(FinstaConfig(dim=32, heads=4), DIMS)
    _, text = paired_set()
    scrambled = text.replace(text_emb=torch.randn_like(text.text_emb), token_states=torch.randn_like(text.token_states))
    a, b = adapter.encode_text_graph(text, word_tower()), adapter.encode_text_graph(scrambled, word_tower())
    assert torch.equal(a.nodes, b.nodes) and torch.equal(a.pooled, b.pooled)


def test_same_words_in_other_roles_score_differently():
    torch.manual_seed(0)
    adapter = Finsta(FinstaConfig(dim=32, heads=4, slots=3), DIMS).eval()
    video, _ = paired_set()
    captions = ["the dog chases the cat", "the cat chases the dog"]
    text = TextFeatures(text_emb=torch.zeros(2, 32), texts=captions)
    tg = adapter.encode_text_graph(text, word_tower())
    vg = adapter.encode_video_graph(video)
    assert not torch.allclose(tg.pooled[0], tg.pooled[1])
    scores = adapter.structural_scores(vg, tg)
    assert not torch.allclose(scores["osc"][0][0], scores["osc"][0][1])
    assert not torch.allclose(scores["ptc"][0][0], scores["ptc"][0][1])


def train(adapter, video, text, parameters, steps):
    ctx = context(text_to_video=torch.arange(4), guidance=text)
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    history = []
    for _ in range(steps):
        losses = adapter(video, text, ctx).losses
        history.append({k: v.item() for k, v in losses.items()})
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    return history


@pytest.mark.slow
def test_alignment_and_matching_losses_fall_on_a_tiny_paired_set():
    torch.manual_seed(0)
    adapter = Finsta(FinstaConfig(dim=32, heads=4, slots=3), DIMS).train()
    video, text = paired_set()
    history = train(adapter, video, text, adapter.parameters(), steps=25)
    for name in ("osc", "ptc", "hsg"):
        assert history[-1][name] < 0.5 * history[0][name], (name, history[0][name], history[-1][name])


@pytest.mark.slow
def test_students_learn_the_graph_branchs_targets():
    """With the graph branch held still, the graph-free students fit its (HSG-refined) targets."""
    torch.manual_seed(0)
    adapter = Finsta(FinstaConfig(dim=32, heads=4, slots=3), DIMS).train()
    video, text = paired_set()
    students = [*adapter.video_student.parameters(), *adapter.text_student.parameters()]
    history = train(adapter, video, text, students, steps=25)
    for name in ("distill_video", "distill_text"):
        assert history[-1][name] < 0.5 * history[0][name], (name, history[0][name], history[-1][name])


def test_weights_scale_the_losses():
    video, text = paired_set()
    results = []
    for weight in (1.0, 2.0):
        torch.manual_seed(0)
        adapter = Finsta(FinstaConfig(dim=32, osc_weight=weight, ptc_weight=0.0, hsg_weight=weight), DIMS).train()
        results.append(adapter(video, text, context(text_to_video=torch.arange(4), guidance=text)).losses)
    assert torch.allclose(results[1]["osc"], 2 * results[0]["osc"]) and results[0]["ptc"] == 0
    assert torch.allclose(results[1]["hsg"], 2 * results[0]["hsg"])


def test_no_pairs_no_alignment():
    """Candidates at evaluation, or a task without descriptions: no graph losses (and no graph built)."""
    adapter = Finsta(FinstaConfig(dim=32, slots=3), DIMS).train()
    video, text = paired_set()
    out = adapter(video, text, context(task="multiple_choice", text_to_video=torch.arange(4)))
    assert out.losses == {}


def test_detections_through_the_context():
    adapter = Finsta(FinstaConfig(dim=32, slots=3, use_graphs_at_inference=True), DIMS).eval()
    video, _ = paired_set()
    boxes = torch.tensor([0.0, 0.0, 0.5, 0.5]).expand(4, 4, 2, 4)
    labels = torch.tensor([0, -1]).expand(4, 4, 2)
    detections = {"boxes": boxes, "labels": labels, "label_names": ["person", "dog"]}
    dsg = adapter.build_video_graph(video, detections)
    assert dsg.x.shape[:3] == (4, 4, 2) and dsg.labels is not None
    out = adapter(video, None, context(extras={"detections": detections}))
    assert out.video.frame_emb.shape == video.frame_emb.shape
    with pytest.raises(FeatureShapeError, match="label_names"):
        adapter(video, None, context(extras={"detections": {"boxes": boxes, "labels": labels}}))


def test_clear_errors_on_missing_inputs():
    adapter = Finsta(FinstaConfig(dim=32, slots=3), DIMS).train()
    video, text = paired_set()
    ctx = context(text_to_video=torch.arange(4))
    with pytest.raises(FeatureShapeError, match="TextFeatures.texts"):
        adapter(video, text.replace(texts=None), ctx)
    with pytest.raises(FeatureShapeError, match="patch_tokens"):
        adapter(video.replace(patch_tokens=None, grid=None), text, ctx)
    with pytest.raises(FeatureShapeError, match="frozen text tower"):
        adapter(video, text, AdapterContext(text_to_video=torch.arange(4)))
    with pytest.raises(ValueError, match="divisible"):
        Finsta(FinstaConfig(dim=30, heads=4), DIMS)


def test_save_load_round_trip(tmp_path, frames, texts):
    backbone = vla.load_backbone("tiny", device="cpu")
    model = vla.wrap(backbone, [{"type": "finsta", "dim": 32}])
    with torch.no_grad():
        model.adapters[0].video_gate.weight.normal_()
    model.eval().save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, backbone=backbone).eval()
    assert loaded.adapters[0].config.dim == 32
    assert torch.equal(model.similarity(texts, frames[0]), loaded.similarity(texts, frames[0]))


COLOURS = ["red", "green", "blue", "yellow", "purple", "white"]


def twins(dims, count=6, frames=6, seed=0):
    """`count` videos in which object A crosses row 1 left to right and object B appears halfway, then the
    same videos reversed (the same frames in the other order), with captions that say which: only the order
    of the frames tells a video from its twin. Frame embeddings: the mean patch token (embed_dim = vision_width)."""
    g = torch.Generator().manual_seed(seed)
    gh, gw = dims.grid
    objects = torch.randn(count, 2, dims.vision_width, generator=g) * 2
    tokens = torch.randn(count, 1, 1, dims.vision_width, generator=g) + 0.1 * torch.randn(
        count, frames, gh * gw, dims.vision_width, generator=g)
    for t in range(frames):
        tokens[:, t, gw + t * (gw - 1) // (frames - 1)] = objects[:, 0]
        if t >= frames // 2:
            tokens[:, t, (gh - 1) * gw] = objects[:, 1]
    both = torch.cat([tokens, tokens.flip(1)])
    video = VideoFeatures(frame_emb=both.mean(2), frame_mask=torch.ones(2 * count, frames, dtype=torch.bool),
                          patch_tokens=both, grid=dims.grid)
    a, b = [f"the {c} circle" for c in COLOURS[:count]], [f"the {c} square" for c in COLOURS[1:] + COLOURS[:1]]
    forward = [f"first {x} moves right, then {y} appears" for x, y in zip(a, b, strict=False)]
    backward = [f"first {y} disappears, then {x} moves left" for x, y in zip(a, b, strict=False)]
    return video, forward + backward


def test_the_graph_free_video_embedding_and_its_targets_see_order():
    """A video and its reversal (the same frames in the other order) get different embeddings by default
    (students only, no graphs), and the students' targets from the graph branch differ too."""
    dims = BackboneDims(embed_dim=24, vision_width=24, text_width=24, grid=(4, 4), context_length=16, image_size=32)
    torch.manual_seed(0)
    adapter = Finsta(FinstaConfig(dim=32, heads=4, slots=3), dims).train()
    with torch.no_grad():
        adapter.video_gate.weight.normal_()  # open the zero-initialised gate
    video, text = twins(dims, count=2)[0], paired_set(dims, videos=4)[1]
    ctx = AdapterContext(encode_text=word_tower(24), text_to_video=torch.arange(4), guidance=text)
    out = adapter(video, text, ctx)
    embedding = out.video.frame_emb.mean(1)
    # rows 0-1: the forward videos, rows 2-3: the same frames reversed (before: equal to 1e-7)
    assert (embedding[:2] - embedding[2:]).norm(dim=-1).min() > 1e-3
    feature, _ = adapter.video_student(video.patch_tokens, video.grid, video.frame_mask)
    assert ((feature[:2] - feature[2:]).norm(dim=-1) / feature[:2].norm(dim=-1)).min() > 1e-3
    assert {"distill_video", "distill_intervals"} <= set(out.losses)
    with torch.no_grad():
        vg = adapter.encode_video_graph(video, None, ctx.encode_text)
        tg = adapter.encode_text_graph(text, ctx.encode_text)
        scores = adapter.structural_scores(vg, tg)
        _, teacher = adapter.holistic_losses(vg, tg, torch.arange(4), scores["osc"][0] + scores["ptc"][0])
    assert (teacher.video[:2] - teacher.video[2:]).norm(dim=-1).min() > 1e-3
    assert (vg.intervals[:2] - vg.intervals[2:].flip(1)).norm(dim=-1).min() > 1e-3  # not the same windows reversed


def test_after_a_few_steps_on_order_only_captions_the_student_ranks_the_right_order_higher(tiny_backbone):
    """Twins whose frames differ only in order, with captions that narrate them: after 40 retrieval steps the
    default (graph-free) embedding scores each caption higher with its own video than with the reversal.
    Before, the student read only order-free statistics and the two scores were equal (to 1e-7)."""
    video, texts = twins(tiny_backbone.dims)
    count = video.batch_size // 2
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, ["finsta"], task="retrieval").train()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=5e-3)
    for _ in range(40):
        out = model({"video": video, "text": texts})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    assert not model.adapters[0].config.use_graphs_at_inference
    with torch.no_grad():
        scores = model.similarity(texts, video)
    own = torch.arange(2 * count)
    twin = (own + count) % (2 * count)
    right = scores[own, own] > scores[own, twin]
    assert right.float().mean() >= 0.8, scores[own, own] - scores[own, twin]


@pytest.mark.parametrize("task", ["retrieval", "multiple_choice"])
def test_a_training_step_builds_each_video_graph_once(tiny_backbone, frames, texts, monkeypatch, task):
    """The DSG depends on the frozen features alone: a step builds it once for its videos, beside the other
    named adapters too (their cross stage re-scores pairs, never re-runs finsta)."""
    calls = []
    build = Finsta.build_video_graph
    monkeypatch.setattr(Finsta, "build_video_graph", lambda self, video, *a: calls.append(video.batch_size)
                        or build(self, video, *a))
    model = vla.wrap(tiny_backbone, ["tem_adapter", "finsta", "trajectory_word"], task=task).train()
    video, mask = frames
    batch = {"video": video, "frame_mask": mask, "text": texts} if task == "retrieval" else mc_batch(video, mask)
    model(batch).loss.backward()
    assert calls == [3]
