"""temporal_transformer (CLIP4Clip's seqTransf): it learns frame order, starts as mean pooling, and is
independent of the backbone's embedding scale."""

import numpy as np
import pytest
import torch

import vl_adapters as vla
from vl_adapters.core.adapter import AdapterContext
from vl_adapters.core.features import FeatureShapeError, TextFeatures, VideoFeatures
from vl_adapters.core.pooling import video_embedding
from vl_adapters.data import synthetic


@pytest.fixture(scope="module")
def twins():
    """Six synthetic scenes and their backward twins (the same frames reversed) through the frozen
    tiny:synthetic backbone, each video with two candidates: its own event caption and its twin's."""
    backbone = vla.load_backbone("tiny:synthetic", device="cpu")
    rng = np.random.default_rng(3)
    scenes = [synthetic.sample_scene(rng, num_frames=8) for _ in range(6)]
    forward = [torch.from_numpy(synthetic.render_scene(s)).permute(0, 3, 1, 2) for s in scenes]
    frames = torch.stack(forward + [f.flip(0) for f in forward])
    captions = ([synthetic.temporal_caption(s) for s in scenes]
                + [synthetic.temporal_caption(synthetic.reversed_scene(s)) for s in scenes])
    with torch.no_grad():
        video = backbone.encode_video(frames)
        text = backbone.encode_text(captions)
    n = len(captions)
    twin = (torch.arange(n) + n // 2) % n
    answer = torch.arange(n) % 2  # the right caption first for half of the videos, second for the others
    order = torch.stack([torch.where(answer == 0, torch.arange(n), twin), torch.where(answer == 0, twin, torch.arange(n))], 1)
    batch = {"video": video, "text": text.index(order.flatten()), "candidate_mask": torch.ones(n, 2, dtype=torch.bool),
             "answer": answer}
    return backbone, batch, twin


def test_separates_a_video_from_its_reversed_twin(twins):
    """Twins share every frame, so mean pooling gives them one embedding and one answer (half right, by
    construction). After a few dozen steps the temporal Transformer tells every video from its twin. (Before
    the fix, positions drawn with std 0.01 beside raw frame embeddings of norm ~7 were invisible to it: 58%.)"""
    backbone, batch, twin = twins
    torch.manual_seed(0)
    model = vla.wrap(backbone, ["temporal_transformer"], task="multiple_choice")
    with torch.no_grad():
        start = model.eval()(batch).scores.argmax(1)
    assert (start == batch["answer"]).float().mean() == 0.5
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    model.train()
    for _ in range(50):
        loss = model(batch).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch).scores.argmax(1), batch["answer"])
        pooled = video_embedding(model.encode_video(batch["video"]))
    assert ((pooled - pooled[twin]).norm(dim=-1) > 1e-2).all()


def test_identity_at_init_and_independent_of_the_embedding_scale():
    torch.manual_seed(0)
    adapter = vla.build_adapter("temporal_transformer", vla.BackboneDims(
        embed_dim=32, vision_width=32, text_width=32, grid=(2, 2), context_length=8, image_size=16)).eval()
    frames = torch.randn(2, 6, 32)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    video = VideoFeatures(frame_emb=frames * mask[..., None], frame_mask=mask)
    with torch.no_grad():
        assert torch.equal(adapter(video, None, AdapterContext()).video.frame_emb, video.frame_emb)
        adapter.out_proj.weight.normal_(std=0.1)
        small = video_embedding(adapter(video, None, AdapterContext()).video)
        large = video_embedding(adapter(video.replace(frame_emb=10 * video.frame_emb), None, AdapterContext()).video)
    torch.testing.assert_close(small, large, rtol=0, atol=1e-5)
    # position rows are as loud as the frames entering the Transformer (mean-square component 1/2 against 1)
    mean_square = adapter.position.weight.pow(2).mean(-1)
    torch.testing.assert_close(mean_square, torch.full((adapter.config.max_frames,), 0.5))


def test_too_many_frames_is_refused():
    adapter = vla.build_adapter({"type": "temporal_transformer", "max_frames": 4}, vla.BackboneDims(
        embed_dim=16, vision_width=16, text_width=16, grid=(2, 2), context_length=8, image_size=16))
    video = VideoFeatures(frame_emb=torch.randn(1, 5, 16), frame_mask=torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(FeatureShapeError, match="5 frames exceed max_frames=4"):
        adapter(video, TextFeatures(text_emb=torch.randn(1, 16)), AdapterContext())
