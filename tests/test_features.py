import pytest
import torch

from vl_adapters import FeatureShapeError, TextFeatures, VideoFeatures


def video(b=2, t=3, d=8, n=4, c=6):
    return dict(
        frame_emb=torch.zeros(b, t, d), frame_mask=torch.ones(b, t, dtype=torch.bool),
        patch_tokens=torch.zeros(b, t, n, c), grid=(2, 2),
    )


def test_valid_features_build():
    features = VideoFeatures(**video())
    assert features.batch_size == 2 and features.num_frames == 3


def test_wrong_rank_names_field_and_shapes():
    with pytest.raises(FeatureShapeError, match=r"VideoFeatures.frame_emb: expected shape \[B, T, D\], got \[2, 8\]"):
        VideoFeatures(**{**video(), "frame_emb": torch.zeros(2, 8)})


def test_inconsistent_batch_names_bound_sizes():
    with pytest.raises(FeatureShapeError, match=r"VideoFeatures.frame_mask: .*B=2, T=3.*got \[3, 3\]"):
        VideoFeatures(**{**video(), "frame_mask": torch.ones(3, 3, dtype=torch.bool)})


def test_grid_must_match_patches():
    with pytest.raises(FeatureShapeError, match="VideoFeatures.grid"):
        VideoFeatures(**{**video(), "grid": (3, 3)})


def test_mask_dtype_checked():
    with pytest.raises(FeatureShapeError, match="frame_mask: expected dtype torch.bool"):
        VideoFeatures(**{**video(), "frame_mask": torch.ones(2, 3)})


def test_text_token_shapes_checked():
    with pytest.raises(FeatureShapeError, match=r"TextFeatures.token_mask: .*got \[2, 5\]"):
        TextFeatures(text_emb=torch.zeros(2, 8), token_states=torch.zeros(2, 4, 6),
                     token_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(FeatureShapeError, match="TextFeatures.texts: expected 2 strings, got 1"):
        TextFeatures(text_emb=torch.zeros(2, 8), texts=["one"])


def test_index_repeats_and_keeps_strings():
    text = TextFeatures(text_emb=torch.arange(6.0).view(3, 2), texts=["a", "b", "c"])
    picked = text.index(torch.tensor([2, 2, 0]))
    assert picked.texts == ["c", "c", "a"]
    assert torch.equal(picked.text_emb[:, 0], torch.tensor([4.0, 4.0, 0.0]))
