"""The synthetic temporal benchmark: determinism, twins that only order can tell apart, JSONL rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vl_adapters.data import synthetic as syn


def _frames_multiset(frames: np.ndarray) -> list[bytes]:
    return sorted(f.tobytes() for f in frames)


def test_scenes_are_deterministic_by_seed():
    a = syn.generate_scenes(syn.SyntheticConfig(num_train_pairs=6, num_test_pairs=2, seed=3))
    b = syn.generate_scenes(syn.SyntheticConfig(num_train_pairs=6, num_test_pairs=2, seed=3))
    c = syn.generate_scenes(syn.SyntheticConfig(num_train_pairs=6, num_test_pairs=2, seed=4))
    assert [syn.temporal_caption(s) for s in a] == [syn.temporal_caption(s) for s in b]
    assert all(np.array_equal(syn.render_scene(x), syn.render_scene(y)) for x, y in zip(a, b, strict=True))
    assert [syn.temporal_caption(s) for s in a] != [syn.temporal_caption(s) for s in c]


def test_reversed_twin_has_the_same_frames_in_the_other_order():
    rng = np.random.default_rng(0)
    for _ in range(10):
        scene = syn.sample_scene(rng, num_frames=16, size=64)
        frames = syn.render_scene(scene)
        twin = syn.reversed_scene(scene)
        twin_frames = syn.render_scene(twin)
        # the twin's own events, rendered, are exactly the original played backwards
        assert np.array_equal(twin_frames, frames[::-1])
        # no single frame separates them: same multiset of frames, and so the same frame mean
        assert _frames_multiset(frames) == _frames_multiset(twin_frames)
        # ...but the videos differ, and so do their captions
        assert not np.array_equal(frames, twin_frames)
        assert syn.temporal_caption(scene) != syn.temporal_caption(twin)
        # static captions (what one frame shows) are shared by the twins
        assert syn.static_caption(syn.static_objects(scene)) == syn.static_caption(syn.static_objects(twin))


def test_hard_negatives_change_only_order_or_direction():
    rng = np.random.default_rng(1)
    for _ in range(20):
        scene = syn.sample_scene(rng)
        truth = syn.temporal_caption(scene)
        phrases = truth.removeprefix("first ").split(", then ")
        for kind, negative in syn.temporal_negatives(scene).items():
            assert negative != truth
            neg_phrases = negative.removeprefix("first ").split(", then ")
            if kind == "order_swapped":
                assert sorted(neg_phrases) == sorted(phrases)
            if kind == "direction_flipped":
                flip = {"left": "right", "right": "left", "up": "down", "down": "up"}
                assert [" ".join(flip.get(w, w) for w in p.split()) for p in neg_phrases] == phrases


def test_generate_writes_videos_and_generic_jsonl(tmp_path):
    out = syn.generate(tmp_path / "a", num_train_pairs=2, num_test_pairs=1, seed=5)
    again = syn.generate(tmp_path / "b", num_train_pairs=2, num_test_pairs=1, seed=5)
    for name in ("retrieval_train", "retrieval_test", "mc_train", "mc_test"):
        assert (out / f"{name}.jsonl").read_text() == (again / f"{name}.jsonl").read_text()
    rows = [json.loads(line) for line in (out / "retrieval_test.jsonl").read_text().splitlines()]
    assert {r["question_type"] for r in rows} == {"static", "temporal"}
    assert len({r["video"] for r in rows}) == 2  # a forward and a backward twin
    mc = [json.loads(line) for line in (out / "mc_test.jsonl").read_text().splitlines()]
    assert all(0 <= r["answer"] < len(r["candidates"]) for r in mc)
    videos = sorted((out / "videos").glob("*.mp4"))
    assert len(videos) == 6 and all(0 < v.stat().st_size < 50_000 for v in videos)


def test_generic_jsonl_reader_decodes_the_videos(tmp_path):
    pytest.importorskip("av")
    from vl_adapters.data import build_dataset

    out = syn.generate(tmp_path, num_train_pairs=1, num_test_pairs=1, seed=2)
    dataset = build_dataset("jsonl", out, "test", file="retrieval_test.jsonl", num_frames=16, size=64)
    item = dataset.load_video(0)
    frames = item["frames"]
    assert frames.shape[0] == 16 and frames.shape[1] == 3
    # decoded through a lossy codec, the first frame still matches the rendered one closely
    scene = syn.generate_scenes(syn.SyntheticConfig(num_train_pairs=1, num_test_pairs=1, seed=2))[1]
    rendered = syn.render_scene(scene)[0].astype(np.float32)
    decoded = frames[0].permute(1, 2, 0).numpy().astype(np.float32)
    assert decoded.shape == rendered.shape
    assert np.abs(decoded - rendered).mean() < 12


def test_bad_frames_are_refused(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        syn.write_video(tmp_path / "x.mp4", np.zeros((4, 8, 8), dtype=np.uint8))


def test_validation_pairs_never_change_the_test_set_and_workers_never_change_a_byte(tmp_path):
    plain = syn.generate(tmp_path / "plain", num_train_pairs=3, num_test_pairs=2, seed=7)
    with_val = syn.generate(tmp_path / "val", num_train_pairs=3, num_test_pairs=2, num_val_pairs=2, seed=7, workers=2)
    for name in ("retrieval_train", "retrieval_test", "mc_train", "mc_test"):
        assert (plain / f"{name}.jsonl").read_text() == (with_val / f"{name}.jsonl").read_text()
    assert not (plain / "mc_val.jsonl").exists()
    val = [json.loads(line) for line in (with_val / "retrieval_val.jsonl").read_text().splitlines()]
    assert len({r["video"] for r in val}) == 4 and {r["part"] for r in val} == {"val"}
    test_videos = {json.loads(line)["video"] for line in (with_val / "retrieval_test.jsonl").read_text().splitlines()}
    assert test_videos.isdisjoint(r["video"] for r in val)
    for video in sorted((plain / "videos").glob("*.mp4")):  # two processes wrote the same bytes as one
        assert (with_val / "videos" / video.name).read_bytes() == video.read_bytes()
    meta = json.loads((with_val / "meta.json").read_text())
    assert meta["counts"]["mc_val"] == 8 and meta["config"]["num_val_pairs"] == 2
    with pytest.raises(ValueError, match="workers"):
        syn.generate(tmp_path / "bad", num_train_pairs=1, num_test_pairs=1, workers=0)


def test_decoded_twins_show_exactly_the_same_frames(tmp_path):
    """Lossless coding: the backward twin decodes to the forward video's frames in reverse, bit for bit,
    so nothing but their order (no coding artefact) tells the twins apart."""
    av = pytest.importorskip("av")
    if "libx264" not in av.codecs_available:
        pytest.skip("libx264 is not in this PyAV build: the mpeg4 fallback is lossy")
    from vl_adapters.data.video import read_video

    out = syn.generate(tmp_path, num_train_pairs=0, num_test_pairs=3, num_frames=8, seed=4)
    for pair in range(3):
        forward, backward = (read_video(out / "videos" / f"s4_{pair:05d}_{d}.mp4", lambda n: list(range(n)), size=None,
                                        reader="pyav").frames for d in ("fwd", "bwd"))
        assert forward.shape[0] == 8 and torch.equal(forward, backward.flip(0))


def test_event_count_and_move_length_follow_the_config():
    cfg = syn.SyntheticConfig(num_train_pairs=40, num_test_pairs=0, seed=5, max_events=2, move_fraction=0.5)
    scenes = syn.generate_scenes(cfg)
    assert {len(s.events) for s in scenes} == {2}
    moves = [e.distance for s in scenes for e in s.events if e.kind == "move"]
    assert moves and set(moves) == {0.5 * cfg.size}
    default = syn.generate_scenes(syn.SyntheticConfig(num_train_pairs=40, num_test_pairs=0, seed=5))
    assert {len(s.events) for s in default} == {2, 3}
    assert {e.distance for s in default for e in s.events if e.kind == "move"} == {0.375 * cfg.size}
