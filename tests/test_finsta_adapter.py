"""The finsta adapter: identity at init through vla.wrap, graph-free inference, both alignment losses
learn, the backbone stays frozen, and bad inputs fail clearly."""

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
    for name in ("encode_video_graph", "encode_text_graph"):
        monkeypatch.setattr(adapter, name, lambda *a, **k: pytest.fail("a graph was built at inference"))
    encoded = model.encode_video(video, mask)
    assert torch.equal(encoded.frame_emb, tiny_backbone.encode_video(video, mask).frame_emb)
    assert torch.equal(model.encode_text(texts).text_emb, model.frozen_text(texts).text_emb)
    # once the gates are non-zero the student changes the embeddings, still without graphs
    with torch.no_grad():
        adapter.video_gate.weight.normal_()
        adapter.text_gate.weight.normal_()
    assert not torch.allclose(model.encode_video(video, mask).frame_emb, encoded.frame_emb)
    model.similarity(texts, video, frame_mask=mask)


def test_training_through_the_model(frames, texts):
    backbone = vla.load_backbone("tiny", device="cpu")
    model = vla.wrap(backbone, [{"type": "finsta", "dim": 32, "slots": 3}])
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    model.train()
    video, mask = frames
    out = model({"video": video, "frame_mask": mask, "text": texts})
    assert {"finsta/osc", "finsta/ptc", "finsta/distill_video", "finsta/distill_text"} <= set(out.losses)
    out.loss.backward()
    adapter = model.adapters[0]
    for module in (adapter.video_gate, adapter.text_gate, adapter.tsg_encoder, adapter.recurrent, adapter.stgd,
                   adapter.video_student, adapter.text_student):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), module
    optimizer.step()
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_weights_scale_the_losses(frames, texts, tiny_backbone):
    video, mask = frames
    v, t = tiny_backbone.encode_video(video, mask), tiny_backbone.encode_text(texts)
    ctx = AdapterContext(text_to_video=torch.arange(3))
    results = []
    for weight in (1.0, 2.0):
        torch.manual_seed(0)
        adapter = vla.build_adapter({"type": "finsta", "dim": 32, "osc_weight": weight, "ptc_weight": 0.0},
                                    tiny_backbone.dims).train()
        results.append(adapter(v, t, ctx).losses)
    assert torch.allclose(results[1]["osc"], 2 * results[0]["osc"]) and results[0]["ptc"] == 0


def paired_set(dims, videos=4, frames=4, seed=0):
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


def test_both_alignment_losses_fall_on_a_tiny_paired_set():
    dims = BackboneDims(embed_dim=32, vision_width=24, text_width=24, grid=(4, 4), context_length=16, image_size=32)
    torch.manual_seed(0)
    adapter = Finsta(FinstaConfig(dim=32, heads=4, slots=3, word_buckets=256), dims).train()
    video, text = paired_set(dims)
    ctx = AdapterContext(text_to_video=torch.arange(4))
    optimizer = torch.optim.Adam(adapter.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        losses = adapter(video, text, ctx).losses
        history.append({k: v.item() for k, v in losses.items()})
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    for name in ("osc", "ptc", "distill_video", "distill_text"):
        assert history[-1][name] < 0.5 * history[0][name], (name, history[0][name], history[-1][name])


def test_detections_through_the_context():
    dims = BackboneDims(embed_dim=32, vision_width=24, text_width=24, grid=(4, 4), context_length=16, image_size=32)
    adapter = Finsta(FinstaConfig(dim=32, slots=3, word_buckets=256, use_graphs_at_inference=True), dims).eval()
    video, text = paired_set(dims)
    boxes = torch.tensor([0.0, 0.0, 0.5, 0.5]).expand(4, 4, 2, 4)
    dsg = adapter.build_video_graph(video, {"boxes": boxes, "labels": torch.ones(4, 4, 2, dtype=torch.long)})
    assert dsg.x.shape[:3] == (4, 4, 2) and dsg.labels is not None
    out = adapter(video, None, AdapterContext(extras={"detections": {"boxes": boxes}}))
    assert out.video.frame_emb.shape == video.frame_emb.shape


def test_clear_errors_on_missing_inputs():
    dims = BackboneDims(embed_dim=32, vision_width=24, text_width=24, grid=(4, 4), context_length=16, image_size=32)
    adapter = Finsta(FinstaConfig(dim=32, slots=3, word_buckets=256), dims).train()
    video, text = paired_set(dims)
    ctx = AdapterContext(text_to_video=torch.arange(4))
    with pytest.raises(FeatureShapeError, match="TextFeatures.texts"):
        adapter(video, text.replace(texts=None), ctx)
    with pytest.raises(FeatureShapeError, match="patch_tokens"):
        adapter(video.replace(patch_tokens=None, grid=None), text, ctx)
    with pytest.raises(ValueError, match="divisible"):
        Finsta(FinstaConfig(dim=30, heads=4), dims)


def test_save_load_round_trip(tmp_path, frames, texts):
    backbone = vla.load_backbone("tiny", device="cpu")
    model = vla.wrap(backbone, [{"type": "finsta", "dim": 32}])
    with torch.no_grad():
        model.adapters[0].video_gate.weight.normal_()
    model.eval().save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, backbone=backbone).eval()
    assert loaded.adapters[0].config.dim == 32
    assert torch.equal(model.similarity(texts, frames[0]), loaded.similarity(texts, frames[0]))
