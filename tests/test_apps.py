"""`vl-adapters search` and `vl-adapters answer` on real mp4 files the tests write, with tiny models trained
here on distinct captions (a coloured shape crossing the frame): the right video and the right answer
come first, the index is reused without decoding, unreadable videos are skipped and listed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from videos import write_corrupt

import vl_adapters as vla
from vl_adapters.apps import answer as answer_app
from vl_adapters.apps import search as search_app
from vl_adapters.cli import main
from vl_adapters.data import base as data_base
from vl_adapters.data.folder import video_folder
from vl_adapters.data.synthetic import ShapeObject, render_objects, write_video

pytestmark = pytest.mark.video

SCENES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "circle"), ("purple", "square"),
          ("white", "triangle")]
CAPTIONS = [f"a {colour} {shape}" for colour, shape in SCENES]
FRAMES = 8
ADAPTER = {"type": "temporal_transformer", "layers": 1, "heads": 2}
QUESTION = "what is in the video?"


def _file(root: Path, i: int) -> Path:
    colour, shape = SCENES[i]
    return root / ("more" if i % 2 else "") / f"{colour}_{shape}.mp4"  # half of them in a subfolder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for i, (colour, shape) in enumerate(SCENES):
        frames = np.stack([render_objects([ShapeObject(shape, colour, x=12.0 + 5 * t, y=32.0)], 64, radius=10)
                           for t in range(FRAMES)])
        _file(root, i).parent.mkdir(exist_ok=True)
        write_video(_file(root, i), frames)
    write_corrupt(root / "broken.mp4")
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def backbone():
    return vla.load_backbone("tiny:synthetic", device="cpu")


@pytest.fixture(scope="module")
def features(folder, backbone):
    """The six clips' backbone features, decoded as search and answer decode them."""
    videos = video_folder(folder, num_frames=FRAMES, size=backbone.dims.image_size)
    loaded = [videos.load_video(videos.video_ids.index(_file(folder, i).relative_to(folder).as_posix()))
              for i in range(len(SCENES))]
    return backbone.encode_video(torch.stack([c["frames"] for c in loaded]), torch.stack([c["frame_mask"] for c in loaded]))


def _train(model, batch: dict, steps: int, lr: float):
    """The README's training step, `steps` times, on one batch; then eval mode."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def retrieval_dir(backbone, features, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = _train(vla.wrap(backbone, [ADAPTER], task="retrieval"), {"video": features, "text": CAPTIONS},
                   steps=30, lr=1e-3)
    return model.save_pretrained(tmp_path_factory.mktemp("retrieval") / "model")


def _candidates(i: int) -> tuple[list[str], int]:
    """Three candidates for clip i: its caption and two others, the right one at position i % 3."""
    others = [CAPTIONS[(i + 2) % 6], CAPTIONS[(i + 4) % 6]]
    right = i % 3
    return others[:right] + [CAPTIONS[i]] + others[right:], right


@pytest.fixture(scope="module")
def multiple_choice_dir(backbone, features, tmp_path_factory) -> Path:
    rows = [_candidates(i) for i in range(len(SCENES))]
    batch = {"video": features, "question": [QUESTION] * len(SCENES), "candidates": [c for c, _ in rows],
             "candidate_mask": torch.ones(len(SCENES), 3, dtype=torch.bool), "answer": torch.tensor([a for _, a in rows])}
    torch.manual_seed(0)
    model = _train(vla.wrap(backbone, [ADAPTER], task="multiple_choice"), batch, steps=30, lr=1e-3)
    return model.save_pretrained(tmp_path_factory.mktemp("mc") / "model")


def _search(capsys, model, folder, index, *queries, extra=()):
    code = main(["search", "--model", str(model), "--videos", str(folder), "--index", str(index), "--num-frames",
                 str(FRAMES), "--num-workers", "0", "--device", "cpu", *extra, *queries])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out


def test_search_ranks_the_right_video_first_and_lists_the_unreadable_one(retrieval_dir, folder, tmp_path, capsys):
    out = _search(capsys, retrieval_dir, folder, tmp_path / "index", *CAPTIONS, extra=["--json", "--top-k", "3"])
    found = json.loads(out.out)
    assert found["indexed"] == len(SCENES) and not found["index_reused"]
    assert [s["video"] for s in found["skipped"]] == [str(folder / "broken.mp4")]
    assert [r["query"] for r in found["results"]] == CAPTIONS
    assert [r["top"][0]["video"] for r in found["results"]] == [str(_file(folder, i)) for i in range(len(SCENES))]
    for result in found["results"]:
        scores = [hit["score"] for hit in result["top"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert "skipped 1 unreadable video(s): broken.mp4" in out.err


def test_search_reuses_its_index_without_decoding_and_indexes_a_changed_folder_again(
        retrieval_dir, folder, tmp_path, capsys, monkeypatch):
    decoded = []
    read_video = data_base.read_video
    monkeypatch.setattr(data_base, "read_video", lambda path, *a, **k: decoded.append(Path(path).name) or
                        read_video(path, *a, **k))
    first = json.loads(_search(capsys, retrieval_dir, folder, tmp_path / "index", *CAPTIONS[:2], extra=["--json"]).out)
    assert len(decoded) == len(SCENES) + 1  # every file once, the broken one too
    decoded.clear()
    again = _search(capsys, retrieval_dir, folder, tmp_path / "index", *CAPTIONS[:2], extra=["--json"])
    second = json.loads(again.out)
    assert decoded == [] and second["index_reused"] and "index reused, no video decoded" in again.err
    assert second["results"] == first["results"] and second["index"] == first["index"]
    text = _search(capsys, retrieval_dir, folder, tmp_path / "index", CAPTIONS[1]).out.splitlines()
    assert text[0] == json.dumps(CAPTIONS[1]) and text[1].split()[:1] == ["1"] and text[1].endswith(
        str(_file(folder, 1))) and len(text) == 6
    assert decoded == []
    # A new file changes the folder: it is indexed again, and the index of its old contents removed.
    changed = tmp_path / "changed"
    changed.mkdir()
    for i in range(2):
        _file(changed, i).parent.mkdir(exist_ok=True)
        _file(changed, i).write_bytes(_file(folder, i).read_bytes())
    old = json.loads(_search(capsys, retrieval_dir, changed, tmp_path / "index", CAPTIONS[0], extra=["--json"]).out)
    (changed / "copy.mp4").write_bytes(_file(folder, 2).read_bytes())
    decoded.clear()
    new = json.loads(_search(capsys, retrieval_dir, changed, tmp_path / "index", CAPTIONS[0], extra=["--json"]).out)
    assert len(decoded) == 3 and new["indexed"] == 3 and not Path(old["index"]).exists()


def test_search_scores_through_the_cross_adapters_re_ranking(backbone, folder, tmp_path):
    torch.manual_seed(0)
    model = vla.wrap(backbone, [ADAPTER, {"type": "trajectory_word", "heads": 2, "depth": 1, "select_before": [0]}], task="retrieval")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the initialisation, where the matching head gives the scaled cosine
        for p in model.trainable_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    model.eval()
    index = search_app.build_index(model, folder, index_root=tmp_path, num_frames=FRAMES)
    hits = search_app.search(model, index, CAPTIONS[:2], top_k=4, rerank_k=2)
    from vl_adapters.data.cache import FeatureCache

    cache = FeatureCache(index.directory)
    cached = cache.features([cache.row(v) for v in index.video_ids])
    expected = model.similarity(CAPTIONS[:2], cached, rerank_k=4)  # rerank_k is raised to top_k
    columns = {index.folder / v: j for j, v in enumerate(index.video_ids)}
    for row, query_hits in enumerate(hits):
        got = torch.tensor([h.score for h in query_hits])
        torch.testing.assert_close(got, expected[row, [columns[h.video] for h in query_hits]])
        torch.testing.assert_close(got, expected[row].topk(4).values)
    dual = model.dual_similarity(model.encode_text(CAPTIONS[:2]), model.encode_video(cached))
    assert not torch.allclose(expected.topk(4).values, dual.topk(4).values, atol=1e-3)  # the head re-scored them


def test_search_with_a_backbone_adapter_indexes_the_adapted_backbone(backbone, folder, tmp_path):
    torch.manual_seed(0)
    model = vla.wrap(backbone, [{"type": "st_adapter"}, ADAPTER], task="retrieval")
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():  # away from the identity initialisation
        for p in model.trainable_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    index = search_app.build_index(model, folder, index_root=tmp_path, num_frames=FRAMES)
    plain = search_app.build_index(vla.wrap(backbone, [ADAPTER]), folder, index_root=tmp_path, num_frames=FRAMES)
    assert index.directory != plain.directory  # the adapted backbone's output is another index
    hits = search_app.search(model, index, CAPTIONS[:2], top_k=len(SCENES))
    videos = video_folder(folder, num_frames=FRAMES, size=backbone.dims.image_size)
    clips = [videos.load_video(videos.video_ids.index(v)) for v in index.video_ids]
    expected = model.similarity(CAPTIONS[:2], torch.stack([c["frames"] for c in clips]),
                                frame_mask=torch.stack([c["frame_mask"] for c in clips]))
    columns = {index.folder / v: j for j, v in enumerate(index.video_ids)}
    for row, query_hits in enumerate(hits):  # the index keeps fp16 features: equal within their rounding
        torch.testing.assert_close(torch.tensor([h.score for h in query_hits]),
                                   expected[row, [columns[h.video] for h in query_hits]], atol=5e-3, rtol=0)


def test_answer_puts_the_right_candidate_first_on_a_trained_multiple_choice_model(
        multiple_choice_dir, folder, features, capsys):
    model = vla.from_pretrained(multiple_choice_dir)
    for i in range(len(SCENES)):
        candidates, right = _candidates(i)
        frames, mask = answer_app.read_clip(model, _file(folder, i), num_frames=FRAMES)
        ranked = answer_app.answer(model, frames, mask, QUESTION, candidates)
        assert ranked[0].text == CAPTIONS[i] and len(ranked) == 3, (i, ranked)
        assert abs(sum(a.probability for a in ranked) - 1) < 1e-5
    candidates, right = _candidates(4)
    assert right != 0
    code = main(["answer", "--model", str(multiple_choice_dir), str(_file(folder, 4)), "--question", QUESTION,
                 "--candidates", *candidates, "--num-frames", str(FRAMES), "--device", "cpu"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and out[0] == json.dumps(QUESTION) and len(out) == 4
    assert out[1].split()[0] == "1" and out[1].endswith(f"  {CAPTIONS[4]}")


def test_answer_names_an_open_qa_models_answers_from_its_vocabulary(backbone, features, folder, tmp_path, capsys):
    colours = [colour for colour, _ in SCENES]
    task = {"type": "open_qa", "num_answers": len(colours), "answers": colours, "hidden": 32, "dropout": 0.0}
    batch = {"video": features, "question": ["what colour is the shape?"] * len(SCENES),
             "answer": torch.arange(len(SCENES))}
    torch.manual_seed(0)
    model = _train(vla.wrap(backbone, [ADAPTER], task=task), batch, steps=60, lr=3e-3)
    model.save_pretrained(tmp_path / "qa")
    code = main(["answer", "--model", str(tmp_path / "qa"), str(_file(folder, 3)), "--question",
                 "what colour is the shape?", "--num-frames", str(FRAMES), "--device", "cpu", "--json"])
    found = json.loads(capsys.readouterr().out)
    assert code == 0 and found["answers"][0]["answer"] == "yellow" and len(found["answers"]) == 5  # top 5 of 6
    loaded = vla.from_pretrained(tmp_path / "qa")
    frames, mask = answer_app.read_clip(loaded, _file(folder, 1), num_frames=FRAMES)
    assert [a.text for a in answer_app.answer(loaded, frames, mask, "what colour is the shape?", ["red", "blue"])] \
        == ["blue", "red"]
    with pytest.raises(vla.ConfigError, match=r"\['pink'\] are not in the model's answer vocabulary"):
        answer_app.answer(loaded, frames, mask, "what colour is the shape?", ["pink", "red"])


def test_answer_refuses_a_retrieval_model_and_an_unreadable_video_in_one_line(retrieval_dir, folder, capsys):
    code = main(["answer", "--model", str(retrieval_dir), str(_file(folder, 0)), "--question", QUESTION,
                 "--candidates", "a", "b", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "this one is a 'retrieval' model" in err
    code = main(["answer", "--model", str(retrieval_dir), str(folder / "broken.mp4"), "--question", QUESTION,
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "broken.mp4" in err
