"""Every dataset read from a tiny fixture in its public layout, with real encoded videos."""

import csv
import json
import pickle

import pytest
import torch
from torch.utils.data import DataLoader
from videos import frame_indices_of, write_corrupt, write_empty, write_video

import vl_adapters as vla
from vl_adapters.data import AnnotationError, BadVideoError, build_dataset, collate
from vl_adapters.data.base import VideoTextDataset

KW = {"num_frames": 4, "size": 32}


def _csv(path, header, rows, delimiter=","):
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrvtt")
    for i, n in enumerate([12, 12, 3]):  # video2 is shorter than num_frames
        write_video(root / "videos" / f"video{i}.mp4", n)
    write_empty(root / "videos" / "video3.mp4")
    sentences = [{"video_id": f"video{i}", "caption": f"caption {c} of video {i}", "sen_id": 10 * i + c}
                 for i in range(4) for c in range(2)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"videos": [], "sentences": sentences}))
    _csv(root / "MSRVTT_train.9k.csv", ["video_id"], [["video0"], ["video1"], ["video2"]])
    _csv(root / "MSRVTT_train.7k.csv", ["video_id"], [["video1"]])
    _csv(root / "MSRVTT_JSFUSION_test.csv", ["key", "vid_key", "video_id", "sentence"],
         [[f"ret{i}", f"msr{i}", f"video{i}", f"test sentence {i}"] for i in (1, 2, 3)])
    return root


def test_msrvtt_train_and_test_splits(msrvtt):
    train = build_dataset("msrvtt", msrvtt, "train", train=True, **KW)
    assert train.task == "retrieval" and train.video_ids == ["video0", "video1", "video2"]
    assert len(train) == 6 and train.samples[0] == {"video_index": 0, "text": "caption 0 of video 0"}
    assert [s["video_index"] for s in train.samples] == [0, 0, 1, 1, 2, 2]
    assert len(build_dataset("msrvtt", msrvtt, "train_7k", **KW)) == 2
    test = build_dataset("msrvtt", msrvtt, "test", **KW)
    assert test.video_ids == ["video1", "video2", "video3"] and [s["text"] for s in test.samples] == [
        "test sentence 1", "test sentence 2", "test sentence 3"]
    assert test.video_path(0) == msrvtt / "videos" / "video1.mp4"


def test_items_decode_the_sampled_frames_and_pad_short_videos(msrvtt):
    ds = build_dataset("msrvtt", msrvtt, "test", num_frames=4, size=32, sampler="uniform")
    item = ds[0]
    assert item["frames"].shape == (4, 3, 32, 32) and item["frames"].dtype == torch.uint8
    assert frame_indices_of(item["frames"]) == [0, 4, 7, 11] and item["frame_mask"].tolist() == [True] * 4
    assert item["video_id"] == "video1" and item["reader"] in ("decord", "pyav")
    short = ds[1]  # 3 frames for 4 requested
    assert short["frame_mask"].tolist() == [True, True, True, False]
    assert frame_indices_of(short["frames"][:3]) == [0, 1, 2] and short["frames"][3].sum() == 0
    loaded = ds.load_video(0)
    assert loaded["video_id"] == "video1" and loaded["frames"].equal(item["frames"])


def test_training_sampling_is_random_and_eval_deterministic(msrvtt):
    train = build_dataset("msrvtt", msrvtt, "train", num_frames=3, size=16, sampler="segment_random", train=True)
    draws = {tuple(frame_indices_of(train[0]["frames"])) for _ in range(8)}
    assert len(draws) > 1
    ev = build_dataset("msrvtt", msrvtt, "train", num_frames=3, size=16, sampler="segment_random", train=False)
    assert {tuple(frame_indices_of(ev[0]["frames"])) for _ in range(3)} == {(2, 6, 10)}


def test_bad_video_is_skipped_and_listed_by_collate(msrvtt):
    ds = build_dataset("msrvtt", msrvtt, "test", **KW)
    bad = ds[2]
    assert bad["frames"] is None and "empty file" in bad["bad_video"] and "video3" in bad["bad_video"]
    batch = collate([ds[0], bad, ds[1]], task="retrieval")
    assert batch["video"].shape == (2, 4, 3, 32, 32) and batch["frame_mask"].shape == (2, 4)
    assert batch["text"] == ["test sentence 1", "test sentence 2"] and batch["video_id"] == ["video1", "video2"]
    assert batch["video_index"].tolist() == [0, 1] and batch["sample_index"].tolist() == [0, 1]
    assert len(batch["skipped"]) == 1 and batch["skipped"][0][0] == "video3"
    only_bad = collate([bad], task="retrieval")
    assert "video" not in only_bad and only_bad["skipped"][0][0] == "video3"


def test_bad_video_raises_naming_the_file(msrvtt):
    ds = build_dataset("msrvtt", msrvtt, "test", on_bad_video="raise", **KW)
    with pytest.raises(BadVideoError, match=r"video3\.mp4.*empty file"):
        ds[2]


def test_missing_and_corrupt_videos(tmp_path):
    write_video(tmp_path / "videos" / "ok.mp4", 8)
    write_corrupt(tmp_path / "videos" / "noise.mp4")
    rows = [{"video": f"{v}.mp4", "text": f"about {v}"} for v in ("ok", "noise", "gone")]
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = build_dataset("jsonl", tmp_path, "test", **KW)
    reasons = [ds[i].get("bad_video") for i in range(3)]
    assert reasons[0] is None and "noise.mp4" in reasons[1] and "file not found" in reasons[2]
    batch = collate([ds[i] for i in range(3)], task="retrieval")
    assert batch["video_id"] == ["ok"] and [s[0] for s in batch["skipped"]] == ["noise", "gone"]


def test_dataloader_workers_decode_in_parallel(msrvtt):
    ds = build_dataset("msrvtt", msrvtt, "train", train=True, **KW)
    assert isinstance(pickle.loads(pickle.dumps(ds)), VideoTextDataset)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=ds.collate)
    batches = list(loader)
    assert sum(len(b["video_id"]) for b in batches) == 6
    assert batches[0]["video"].shape == (3, 4, 3, 32, 32)


def test_malformed_rows_name_file_and_line(tmp_path):
    write_video(tmp_path / "videos" / "a.mp4", 6)
    lines = [json.dumps({"video": "a.mp4", "text": "fine"}), "{not json", json.dumps({"video": "a.mp4"})]
    (tmp_path / "test.jsonl").write_text("\n".join(lines))
    with pytest.raises(AnnotationError, match=r"test\.jsonl:2: not valid JSON"):
        build_dataset("jsonl", tmp_path, "test", **KW)
    lenient = build_dataset("jsonl", tmp_path, "test", strict_annotations=False, **KW)
    assert len(lenient) == 1 and len(lenient.annotation_errors) == 2
    assert "test.jsonl:3:" in lenient.annotation_errors[1] and "text" in lenient.annotation_errors[1]


def test_unknown_dataset_and_bad_options(msrvtt):
    with pytest.raises(KeyError, match="msrvtt_qa"):
        build_dataset("msrvtt_qaa", msrvtt, "test")
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset("msrvtt", msrvtt, "dev")
    with pytest.raises(KeyError, match="frame sampler"):
        build_dataset("msrvtt", msrvtt, "test", sampler="uniformm")
    with pytest.raises(TypeError):
        build_dataset("msrvtt", msrvtt, "test", num_frame=4)


@pytest.fixture(scope="module")
def msvd(tmp_path_factory):
    root = tmp_path_factory.mktemp("msvd")
    clips = ["-4wsuPCjDBc_5_15", "abc_1_9", "xyz_0_4"]
    for clip in clips:
        write_video(root / "YouTubeClips" / f"{clip}.avi", 10, codec="mpeg4")
    (root / "youtube_mapping.txt").write_text("".join(f"{c} vid{k + 1}\n" for k, c in enumerate(clips)))
    (root / "AllVideoDescriptions.txt").write_text(
        "# comment lines start with a hash\n" + "".join(f"{c} a person does thing {j}\n" for c in clips for j in range(2)))
    (root / "train_list.txt").write_text(f"{clips[0]}\n{clips[1]}\n")
    (root / "test_list.txt").write_text(f"{clips[2]}\n")
    return root


def test_msvd_lists_and_description_file(msvd):
    train = build_dataset("msvd", msvd, "train", **KW)
    assert train.video_ids == ["-4wsuPCjDBc_5_15", "abc_1_9"] and len(train) == 4
    assert train.samples[1] == {"video_index": 0, "text": "a person does thing 1"}
    assert train[3]["frames"].shape == (4, 3, 32, 32) and train.video_path(1).suffix == ".avi"
    (msvd / "captions.json").write_text(json.dumps({"xyz_0_4": ["only one"]}))
    try:
        test = build_dataset("msvd", msvd, "test", **KW)
        assert [s["text"] for s in test.samples] == ["only one"]
    finally:
        (msvd / "captions.json").unlink()


def test_msvd_standard_split_from_the_mapping(tmp_path):
    (tmp_path / "youtube_mapping.txt").write_text("".join(f"clip{k} vid{k}\n" for k in (1, 1200, 1201, 1301)))
    (tmp_path / "AllVideoDescriptions.txt").write_text("".join(f"clip{k} words\n" for k in (1, 1200, 1201, 1301)))
    assert build_dataset("msvd", tmp_path, "train", **KW).video_ids == ["clip1", "clip1200"]
    assert build_dataset("msvd", tmp_path, "val", **KW).video_ids == ["clip1201"]
    assert build_dataset("msvd", tmp_path, "test", **KW).video_ids == ["clip1301"]


@pytest.fixture(scope="module")
def msrvtt_qa(tmp_path_factory):
    root = tmp_path_factory.mktemp("msrvtt_qa")
    for i in (0, 1, 2):
        write_video(root / "videos" / f"video{i}.mp4", 8)
    train = [{"question": "what is a man doing", "answer": "cooking", "video_id": 0, "id": 0, "category_id": 0},
             {"question": "who is cooking", "answer": "man", "video_id": 0, "id": 1, "category_id": 1},
             {"question": "what is shown", "answer": "cooking", "video_id": 1, "id": 2, "category_id": 0}]
    test = [{"question": "who sings", "answer": "woman", "video_id": 2, "id": 3},
            {"question": "what does a man do", "answer": "cooking", "video": "video1.mp4", "id": 4}]
    (root / "train_qa.json").write_text(json.dumps(train))
    (root / "val_qa.json").write_text(json.dumps(train[:1]))
    (root / "test_qa.json").write_text(json.dumps(test))
    return root


def test_msrvtt_qa_vocabulary_from_training_split(msrvtt_qa):
    train = build_dataset("msrvtt_qa", msrvtt_qa, "train", **KW)
    assert train.task == "open_qa" and train.answer_vocab == ["cooking", "man"]
    test = build_dataset("msrvtt_qa", msrvtt_qa, "test", **KW)
    assert test.answer_vocab == ["cooking", "man"] and test.video_ids == ["video2", "video1"]
    assert [s["answer"] for s in test.samples] == [-1, 0]
    assert [s["question_type"] for s in test.samples] == ["who", "what"]
    batch = collate([test[0], test[1]], task="open_qa")
    assert batch["answer"].tolist() == [-1, 0] and batch["answer_text"] == ["woman", "cooking"]
    assert batch["question"] == ["who sings", "what does a man do"] and batch["video"].shape == (2, 4, 3, 32, 32)
    assert build_dataset("msrvtt_qa", msrvtt_qa, "train", answer_vocab_size=1, **KW).answer_vocab == ["cooking"]


def test_msvd_qa_maps_vid_numbers_to_youtube_clips(tmp_path):
    write_video(tmp_path / "videos" / "abc_1_9.avi", 6, codec="mpeg4")
    (tmp_path / "youtube_mapping.txt").write_text("abc_1_9 vid1\n")
    rows = [{"question": "what is it", "answer": "dog", "video_id": 1}]
    for split in ("train", "test"):
        (tmp_path / f"{split}_qa.json").write_text(json.dumps(rows))
    ds = build_dataset("msvd_qa", tmp_path, "test", **KW)
    assert ds.video_ids == ["vid1"] and ds.video_path(0).name == "abc_1_9.avi"
    assert ds[0]["frames"].shape == (4, 3, 32, 32) and ds.samples[0]["answer"] == 0


SUTD_HEADER = ["record_id", "vid_id", "vid_filename", "perspective", "q_body", "q_type", "option0", "option1",
               "option2", "option3", "answer"]


@pytest.fixture(scope="module")
def sutd(tmp_path_factory):
    root = tmp_path_factory.mktemp("sutd")
    write_video(root / "raw_videos" / "b_1a.mp4", 12)
    write_video(root / "raw_videos" / "b_2b.mp4", 9)
    rows = [SUTD_HEADER,
            [1, 7, "b_1a.mp4", 1, "Why did the car stop?", "A", "red light", "", "a dog", "", 2],
            [2, 8, "b_2b.mp4", 2, "Is the road wet?", "U", "yes", "no", "", "", 0],
            [3, 7, "b_1a.mp4", 1, "What happens next?", "F", "a", "b", "c", "d", 3]]
    (root / "annotations").mkdir()
    (root / "annotations" / "R2_train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "annotations" / "R2_test.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [SUTD_HEADER, rows[1], [4, 9, "b_2b.mp4", 1, "q", "U", "x", "", "", "", 1]]))
    return root


def test_sutd_trafficqa_drops_empty_options_and_keeps_question_types(sutd):
    ds = build_dataset("sutd_trafficqa", sutd, "train", **KW)
    assert ds.task == "multiple_choice" and ds.video_ids == ["b_1a.mp4", "b_2b.mp4"]
    first = ds.samples[0]
    assert first["candidates"] == ["red light", "a dog"] and first["answer"] == 1 and first["question_type"] == "A"
    assert [len(s["candidates"]) for s in ds.samples] == [2, 2, 4]
    batch = collate([ds[0], ds[1], ds[2]], task="multiple_choice")
    assert batch["candidate_mask"].tolist() == [[True, True, False, False], [True, True, False, False], [True] * 4]
    assert batch["answer"].tolist() == [1, 0, 3] and batch["question_type"] == ["A", "U", "F"]
    assert batch["candidates"][0] == ["red light", "a dog"] and batch["question"][1] == "Is the road wet?"


def test_sutd_trafficqa_bad_row_names_its_line(sutd):
    with pytest.raises(AnnotationError, match=r"R2_test\.jsonl:3: answer 1 does not point"):
        build_dataset("sutd_trafficqa", sutd, "test", **KW)
    lenient = build_dataset("sutd_trafficqa", sutd, "test", strict_annotations=False, **KW)
    assert len(lenient) == 1 and "R2_test.jsonl:3" in lenient.annotation_errors[0]


def test_msrvtt_mc_tab_separated_release(tmp_path):
    write_video(tmp_path / "videos" / "video7010.mp4", 8)
    _csv(tmp_path / "MSR_MC_test.csv", ["key", "vid_key", "video_id", "a1", "a2", "a3", "a4", "a5", "answer"],
         [["mc0", "msr7010", "video7010", "a dog runs", "a cat", "cars", "a man sings", "food", 3]], delimiter="\t")
    ds = build_dataset("msrvtt_mc", tmp_path, "test", **KW)
    assert ds.task == "multiple_choice" and ds.samples[0]["answer"] == 3 and len(ds.samples[0]["candidates"]) == 5
    batch = collate([ds[0]], task="multiple_choice")
    assert batch["candidate_mask"].shape == (1, 5) and batch["candidates"][0][3] == "a man sings"


def test_jsonl_all_three_tasks(tmp_path):
    write_video(tmp_path / "videos" / "x" / "one.mp4", 6)
    mc = [{"video": "x/one.mp4", "question": "q?", "candidates": ["a", "b", "c"], "answer": 2, "question_type": "t"}]
    (tmp_path / "mc.jsonl").write_text(json.dumps(mc[0]))
    ds = build_dataset("jsonl", tmp_path, "test", file="mc.jsonl", **KW)
    assert ds.task == "multiple_choice" and ds.video_ids == ["x/one"] and ds[0]["frames"] is not None
    qa = [{"video": "x/one.mp4", "question": "colour?", "answer": "red"},
          {"video": "x/one.mp4", "question": "shape?", "answer": "round", "video_id": "one"}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in qa))
    (tmp_path / "test.jsonl").write_text(json.dumps({"video": "x/one.mp4", "question": "c?", "answer": "blue"}))
    train = build_dataset("jsonl", tmp_path, "train", **KW)
    assert train.task == "open_qa" and train.answer_vocab == ["red", "round"] and len(train.video_ids) == 2
    test = build_dataset("jsonl", tmp_path, "test", **KW)
    assert test.answer_vocab == ["red", "round"] and test.samples[0]["answer"] == -1
    bad = {"video": "x/one.mp4", "question": "q", "candidates": ["a", "b"], "answer": 5}
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match=r"bad\.jsonl:1: answer must be an integer index"):
        build_dataset("jsonl", tmp_path, "test", file="bad.jsonl", **KW)


@pytest.mark.parametrize("name", ["clips", "sparse"])
def test_clip_samplers_through_the_dataset(msrvtt, name):
    ds = build_dataset("msrvtt", msrvtt, "test", num_frames=4, size=16, sampler=name,
                       sampler_options={"clip_len": 2})
    idx = frame_indices_of(ds[0]["frames"])
    assert len(idx) == 4 and idx[1] == idx[0] + 1 and idx[3] == idx[2] + 1


def test_batches_feed_the_task_heads(msrvtt, sutd, tiny_backbone):
    size = tiny_backbone.dims.image_size
    ret = build_dataset("msrvtt", msrvtt, "train", num_frames=4, size=size, train=True)
    model = vla.wrap(tiny_backbone, ["temporal_transformer"], task="retrieval")
    out = model(ret.collate([ret[i] for i in range(4)]))
    assert torch.isfinite(out.loss)
    mc = build_dataset("sutd_trafficqa", sutd, "train", num_frames=4, size=size)
    model = vla.wrap(tiny_backbone, ["temporal_transformer"], task="multiple_choice")
    out = model(mc.collate([mc[i] for i in range(3)]))
    assert torch.isfinite(out.loss)


def test_eval_decodes_a_video_once_for_its_consecutive_captions(msrvtt, monkeypatch):
    ds = build_dataset("msrvtt", msrvtt, "train", **KW)  # two captions per video, train=False
    calls = []
    original = ds.load_video
    monkeypatch.setattr(ds, "load_video", lambda i, **kw: calls.append(i) or original(i, **kw))
    items = [ds[i] for i in range(len(ds))]
    assert calls == [0, 1, 2] and items[1]["frames"].equal(items[0]["frames"])
    monkeypatch.undo()
    assert ds._last is not None and pickle.loads(pickle.dumps(ds))._last is None


def test_set_epoch_makes_training_frames_a_function_of_epoch_and_index(msrvtt):
    def frames_of(epoch, order):
        ds = build_dataset("msrvtt", msrvtt, "train", num_frames=3, size=16, sampler="segment_random", train=True)
        ds.set_epoch(epoch)
        return {i: tuple(frame_indices_of(ds[i]["frames"])) for i in order}

    first = frames_of(0, [0, 2, 4])
    assert frames_of(0, [4, 2, 0]) == first  # order (or worker) does not matter
    assert any(frames_of(e, [0, 2, 4]) != first for e in (1, 2, 3))


@pytest.mark.parametrize("name, files", [
    ("jsonl", ["val.jsonl"]), ("didemo", ["val_data.json"]), ("lsmdc", ["LSMDC16_annos_val.csv"]),
    ("msvd", ["youtube_mapping.txt"]), ("msrvtt_qa", ["val_qa.json"]), ("nextqa", ["nextqa/val.csv"]),
    ("msrvtt", []), ("activitynet", []), ("sutd_trafficqa", []),  # their "val" reads the test files
])
def test_a_validation_split_is_found_where_the_release_has_one_apart_from_test(tmp_path, name, files):
    from vl_adapters.data import dataset_class

    cls = dataset_class(name)
    assert cls.validation_split(tmp_path) is None
    for file in files or ["val.jsonl", "val_1.json", "R2_test.jsonl", "MSRVTT_JSFUSION_test.csv", "val_qa.json"]:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text("")
    assert cls.validation_split(tmp_path) == ("val" if files else None)
