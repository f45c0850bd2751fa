"""The wrapped model: identity at initialisation, a frozen backbone, and save/load."""

import pytest
import torch

import vl_adapters as vla
from vl_adapters.core.pooling import cosine_matrix


def zero_shot(backbone, texts, video, mask):
    return cosine_matrix(backbone.encode_text(texts), backbone.encode_video(video, mask))


def test_identity_at_init(tiny_backbone, frames, texts):
    video, mask = frames
    model = vla.wrap(tiny_backbone, ["temporal_transformer"])
    assert (model.similarity(texts, video, frame_mask=mask) - zero_shot(tiny_backbone, texts, video, mask)).abs().max() <= 1e-5


def test_wrap_accepts_names_configs_and_dicts(tiny_backbone):
    cls = vla.build_adapter("temporal_transformer", tiny_backbone.dims).config_class
    for spec in ("temporal_transformer", cls(layers=1), {"type": "temporal_transformer", "layers": 1}):
        assert len(vla.wrap(tiny_backbone, [spec]).adapters) == 1


def train_steps(model, video, mask, texts, steps=3):
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        out = model({"video": video, "frame_mask": mask, "text": texts})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return out


def test_training_leaves_backbone_bit_identical(frames, texts):
    backbone = vla.load_backbone("tiny", device="cpu")
    model = vla.wrap(backbone, ["temporal_transformer"])
    before_backbone = {k: v.clone() for k, v in backbone.state_dict().items()}
    before_adapters = {k: v.clone() for k, v in model.adapters.state_dict().items()}
    out = train_steps(model, *frames, texts)
    assert torch.isfinite(out.loss) and set(out.losses) == {"retrieval"}
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before_backbone[name]), name
    changed = [k for k, v in model.adapters.state_dict().items() if not torch.equal(v, before_adapters[k])]
    assert any("out_proj" in k for k in changed) and any("encoder" in k for k in changed)


def test_save_load_round_trip(tmp_path, frames, texts):
    backbone = vla.load_backbone("tiny", device="cpu")
    model = vla.wrap(backbone, [{"type": "temporal_transformer", "layers": 1}])
    train_steps(model, *frames, texts)
    model.eval()
    model.save_adapters(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters.json", "adapters.safetensors"]
    loaded = vla.load_adapters(tmp_path, backbone=backbone)
    loaded.eval()
    assert torch.equal(model.similarity(texts, frames[0]), loaded.similarity(texts, frames[0]))
    assert loaded.adapters[0].config.layers == 1
    # with no backbone given, the saved spec is loaded
    assert torch.equal(vla.load_adapters(tmp_path, device="cpu").eval().similarity(texts, frames[0]),
                       model.similarity(texts, frames[0]))


def test_load_onto_other_backbone_fails(tmp_path):
    backbone = vla.load_backbone("tiny", device="cpu")
    vla.wrap(backbone, ["temporal_transformer"]).save_adapters(tmp_path)

    class Other:
        spec = "open_clip:ViT-B-32"
        dims = vla.BackboneDims(512, 768, 512, (7, 7), 77, 224)
        device = torch.device("cpu")

    with pytest.raises(ValueError, match="trained on backbone 'tiny:tiny-clip'.*given backbone is 'open_clip:ViT-B-32'"):
        vla.load_adapters(tmp_path, backbone=Other())


def test_multiple_choice_with_variable_candidates(tiny_backbone, frames):
    video, mask = frames
    model = vla.wrap(tiny_backbone, ["temporal_transformer"], task="multiple_choice")
    batch = {
        "video": video, "frame_mask": mask,
        "question": ["what happens?", "what moves?", "which colour?"],
        "candidates": [["a", "b"], ["c", "d", "e", "f"], ["g", "h", "i"]],
        "candidate_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool),
        "answer": torch.tensor([1, 3, 0]),
    }
    out = model(batch)
    assert out.scores.shape == (3, 4)
    assert torch.isinf(out.scores[0, 2:]).all() and torch.isfinite(out.scores[1]).all()
    assert torch.isfinite(out.loss)
    bad = {**batch, "candidate_mask": batch["candidate_mask"].clone()}
    bad["candidate_mask"][0] = False
    with pytest.raises(ValueError, match="no candidate for rows \\[0\\]"):
        model(bad)


def test_frozen_text_encodes_each_string_once_and_trims_tokens(tiny_backbone):
    model = vla.wrap(tiny_backbone, [])
    reference = tiny_backbone.encode_text(["a red circle", "a blue square moves left"])
    first = model.frozen_text(["a red circle", "a blue square moves left", "a red circle"])
    assert torch.allclose(first.text_emb[0], reference.text_emb[0], atol=1e-5)
    assert torch.allclose(first.text_emb[2], reference.text_emb[0], atol=1e-5)
    assert torch.allclose(first.text_emb[1], reference.text_emb[1], atol=1e-5)
    # trimmed to the longest real length of the batch, not the context length
    longest = int(reference.token_mask.sum(1).max())
    assert first.token_states.shape[1] == longest < reference.token_states.shape[1]
    assert torch.equal(first.token_mask.sum(1), reference.token_mask.sum(1)[[0, 1, 0]])
    # a second call never runs the text tower for strings already seen
    calls = []
    original = tiny_backbone.encode_text
    tiny_backbone.encode_text = lambda texts, *a, **k: calls.append(list(texts)) or original(texts, *a, **k)
    try:
        again = model.frozen_text(["a blue square moves left", "a green triangle"])
    finally:
        del tiny_backbone.encode_text
    assert [[t for t in call if t] for call in calls] == [["a green triangle"]]  # "" pads a fixed-size call
    assert torch.allclose(again.text_emb[0], reference.text_emb[1], atol=1e-5)


def test_adapters_receive_the_frozen_text_encoder(tiny_backbone, frames, texts):
    seen = {}

    class Probe(vla.Adapter):
        stage = "video"

        def forward(self, video, text, ctx):
            seen["phrases"] = ctx.encode_text(["first phrase", "second phrase"])
            return vla.AdapterOutput(video=video, text=text)

    model = vla.VideoLanguageModel(tiny_backbone, [Probe(vla.AdapterConfig(), tiny_backbone.dims)],
                                   vla.wrap(tiny_backbone, []).task)
    model.encode_video(*frames)
    assert seen["phrases"].text_emb.shape == (2, tiny_backbone.dims.embed_dim)


@pytest.mark.parametrize("cast", ["to_bfloat16", "double", "half"])
@pytest.mark.parametrize("adapters", [["temporal_transformer"], ["lora"]])
def test_casting_one_model_never_changes_another_on_the_same_backbone(frames, texts, cast, adapters):
    backbone = vla.load_backbone("tiny", device="cpu", pretrained="")
    video, mask = frames
    kept = vla.wrap(backbone, ["temporal_transformer"])
    before = kept.similarity(texts, video, frame_mask=mask)
    weights = {name: (p.dtype, p.detach().clone()) for name, p in backbone.named_parameters()}
    cast_model = vla.wrap(backbone, adapters)
    optimiser = torch.optim.AdamW(cast_model.trainable_parameters())
    cast_model = cast_model.to(torch.bfloat16) if cast == "to_bfloat16" else getattr(cast_model, cast)()
    assert {p.dtype for p in cast_model.backbone.parameters() if not p.requires_grad} == {
        {"to_bfloat16": torch.bfloat16, "double": torch.float64, "half": torch.float16}[cast]}
    assert torch.equal(kept.similarity(texts, video, frame_mask=mask), before)
    assert {name: p.dtype for name, p in backbone.named_parameters()} == {n: d for n, (d, _) in weights.items()}
    assert all(torch.equal(p, weights[name][1]) for name, p in backbone.named_parameters())
    # the trainable tensors are converted in place: an optimiser made before the cast still holds them
    held = {id(p) for group in optimiser.param_groups for p in group["params"]}
    assert held == {id(p) for p in cast_model.trainable_parameters()}


@pytest.mark.gpu
def test_moving_one_model_to_the_gpu_leaves_another_on_the_same_backbone_where_it_was(frames, texts):
    backbone = vla.load_backbone("tiny", device="cpu", pretrained="")
    video, mask = frames
    kept, moved = vla.wrap(backbone, ["temporal_transformer"]), vla.wrap(backbone, ["lora"])
    before = kept.similarity(texts, video, frame_mask=mask)
    moved.to("cuda")
    assert moved.backbone.device.type == "cuda" and backbone.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in backbone.parameters())
    assert torch.equal(kept.similarity(texts, video, frame_mask=mask), before)
    assert moved.similarity(texts, video, frame_mask=mask).device.type == "cuda"
