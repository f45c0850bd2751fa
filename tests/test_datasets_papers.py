"""DiDeMo, ActivityNet Captions, LSMDC and NExT-QA read from fixtures in their public layouts, with real videos."""

import csv
import json

import pytest
import torch
from videos import frame_indices_of, write_video

import vl_adapters as vla
from vl_adapters.data import AnnotationError, build_dataset, collate
from vl_adapters.tasks.metrics import accuracy_metrics

KW = {"num_frames": 4, "size": 32}


def decodes(ds, index, length):
    """Item `index` decodes the video of `length` frames that the fixture wrote for it."""
    item = ds[index]
    assert item.get("bad_video") is None, item.get("bad_video")
    expected = ds.frame_indices(length)
    return frame_indices_of(item["frames"][: len(expected)]) == expected


# ---- DiDeMo -------------------------------------------------------------------------------------------

DIDEMO_VIDEOS = {"111@N00_1_aa.m4v": 6, "222@N01_2_bb.mov": 9, "333@N02_3_cc.mp4": 12}


def _moment(k, video, description, times):
    return {"annotation_id": k, "description": description, "video": video, "times": times,
            "dl_link": f"https://www.flickr.com/video_download.gne?id={k}", "num_segments": 6}


@pytest.fixture(scope="module")
def didemo(tmp_path_factory):
    root = tmp_path_factory.mktemp("didemo")
    (a, n_a), (b, n_b), (c, _) = DIDEMO_VIDEOS.items()
    write_video(root / "videos" / a, n_a, codec="mpeg4")  # a Flickr download keeps the name
    write_video(root / "videos" / f"{b}.mp4", n_b)  # an AWS copy adds .mp4; c was never downloaded
    moments = [_moment(1, a, "a man opens the door. ", [[0, 0], [0, 1], [0, 0], [0, 0]]),
               _moment(2, b, "the dog runs", [[2, 3], [2, 3], [2, 3], [2, 2]]),
               _moment(3, a, "he walks in", [[1, 1], [1, 2], [1, 1], [1, 1]]),
               _moment(4, c, "nothing happens", [[5, 5], [5, 5], [5, 5], [5, 5]])]
    (root / "test_data.json").write_text(json.dumps(moments, indent=1))
    (root / "train_data.json").write_text(json.dumps(moments))
    (root / "train_list.txt").write_text(f"{a}\n{b}\n")
    return root


def test_didemo_joins_a_videos_descriptions_into_one_paragraph(didemo):
    (a, n_a), (b, n_b), (c, _) = DIDEMO_VIDEOS.items()
    ds = build_dataset("didemo", didemo, "test", **KW)
    assert ds.task == "retrieval" and ds.video_ids == [a, b, c] and len(ds) == 3
    first = ds.samples[0]
    assert first["text"] == "a man opens the door. he walks in"  # file order, one space
    assert first["sentences"] == ["a man opens the door.", "he walks in"]
    assert first["timestamps"] == [[0.0, 6.25], [5.0, 11.25]]  # annotators' mean chunk x 5 s, end chunk + 1
    assert decodes(ds, 0, n_a) and decodes(ds, 1, n_b)  # both naming styles of the release's videos
    assert "file not found" in ds[2]["bad_video"]
    batch = collate([ds[i] for i in range(3)], task="retrieval")
    assert batch["text"] == [first["text"], "the dog runs"] and batch["skipped"][0][0] == c
    # the CLIP4Clip list restricts a split to the videos it names
    assert build_dataset("didemo", didemo, "train", **KW).video_ids == [a, b]


def test_didemo_malformed_moment_names_file_and_line(tmp_path):
    good = _moment(1, "x.mp4", "fine", [[0, 0]])
    bad = {**_moment(2, "y.mp4", "", [[1, 1]])}
    (tmp_path / "val_data.json").write_text(json.dumps([good, bad], indent=2))
    line = json.dumps([good, bad], indent=2).splitlines().index("  {", 2) + 1  # where the second entry starts
    with pytest.raises(AnnotationError, match=rf"val_data\.json:{line}: entry 1 \(video 'y\.mp4'\): expected a non-empty"):
        build_dataset("didemo", tmp_path, "val", **KW)
    times = {**_moment(3, "z.mp4", "z", [[1]])}
    (tmp_path / "val_data.json").write_text(json.dumps([good, times]))
    lenient = build_dataset("didemo", tmp_path, "val", strict_annotations=False, **KW)
    assert lenient.video_ids == ["x.mp4"] and "val_data.json:1: entry 1" in lenient.annotation_errors[0]
    assert "[start chunk, end chunk]" in lenient.annotation_errors[0]
    (tmp_path / "val_data.json").write_text('[{"video": "x.mp4",\n "description": "a", "times": [[0, 0]]}\n{"video": 1}]')
    with pytest.raises(AnnotationError, match=r"val_data\.json:3: not valid JSON"):
        build_dataset("didemo", tmp_path, "val", **KW)


# ---- ActivityNet Captions -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def activitynet(tmp_path_factory):
    root = tmp_path_factory.mktemp("activitynet")
    write_video(root / "videos" / "v_aaa.mp4", 12)  # the official download keeps "v_"
    write_video(root / "videos" / "bbb.mp4", 7)  # CLIP4Clip's copies drop it
    val = {"v_aaa": {"duration": 20.5, "timestamps": [[0, 8.2], [8.2, 20.5]],
                     "sentences": [" A woman ties her shoes.", " Then she runs off. "]},
           "v_bbb": {"duration": 9.0, "timestamps": [[0.5, 9]], "sentences": ["A boy jumps."]}}
    (root / "val_1.json").write_text(json.dumps(val))
    (root / "val_2.json").write_text(json.dumps({"v_bbb": val["v_bbb"]}))
    (root / "train.json").write_text(json.dumps({"v_aaa": val["v_aaa"]}))
    return root


def test_activitynet_paragraphs_and_video_names(activitynet):
    ds = build_dataset("activitynet", activitynet, "test", **KW)
    assert ds.video_ids == ["v_aaa", "v_bbb"] and [s["text"] for s in ds.samples] == [
        "A woman ties her shoes. Then she runs off.", "A boy jumps."]
    assert ds.samples[0]["timestamps"] == [[0.0, 8.2], [8.2, 20.5]] and ds.samples[0]["duration"] == 20.5
    assert decodes(ds, 0, 12) and decodes(ds, 1, 7)
    assert build_dataset("activitynet", activitynet, "val_2", **KW).video_ids == ["v_bbb"]
    assert len(build_dataset("activitynet", activitynet, "train", **KW)) == 1
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset("activitynet", activitynet, "val_3", **KW)


def test_activitynet_malformed_video_names_file_line_and_video(tmp_path):
    data = {"v_ok": {"duration": 3.0, "timestamps": [[0, 3]], "sentences": ["fine"]},
            "v_bad": {"duration": 3.0, "timestamps": [[0, 1]], "sentences": ["one", "two"]}}
    text = json.dumps(data, indent=2)
    (tmp_path / "val_1.json").write_text(text)
    line = text.splitlines().index('  "v_bad": {') + 1
    with pytest.raises(AnnotationError, match=rf"val_1\.json:{line}: video 'v_bad': expected 'timestamps' as 2"):
        build_dataset("activitynet", tmp_path, "test", **KW)
    lenient = build_dataset("activitynet", tmp_path, "test", strict_annotations=False, **KW)
    assert lenient.video_ids == ["v_ok"] and len(lenient.annotation_errors) == 1


# ---- LSMDC --------------------------------------------------------------------------------------------

CLIPS = {"1004_Juno_00.00.32.849-00.00.35.458": 8, "1004_Juno_00.01.02.100-00.01.04.000": 12,
         "3001_21_JUMP_STREET_00.00.01.000-00.00.03.000": 6}


@pytest.fixture(scope="module")
def lsmdc(tmp_path_factory):
    root = tmp_path_factory.mktemp("lsmdc")
    (first, n1), (second, n2), (third, n3) = CLIPS.items()
    write_video(root / "avi" / "1004_Juno" / f"{first}.avi", n1, codec="mpeg4")  # the release: avi/<movie>/
    write_video(root / "avi" / "1004_Juno" / f"{second}.avi", n2, codec="mpeg4")
    write_video(root / "avi" / f"{third}.avi", n3, codec="mpeg4")  # a flattened copy
    rows = [[first, "00.00.32.849", "00.00.35.458", "00.00.32.000", "00.00.36.000", "SOMEONE smiles."],
            [second, "00.01.02.100", "00.01.04.000", "00.01.02.000", "00.01.05.000", "She turns away."],
            [third, "00.00.01.000", "00.00.03.000", "00.00.01.000", "00.00.03.000", "Cars pass by."]]
    with (root / "LSMDC16_challenge_1000_publictect.csv").open("w", newline="") as f:
        csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\").writerows(rows)
    training = rows + [[first, *rows[0][1:5], 'SOMEONE says "hello".']]  # a clip with two sentences
    (root / "LSMDC16_annos_training.csv").write_text("".join("\t".join(r) + "\n" for r in training))
    return root


def test_lsmdc_clips_in_movie_folders(lsmdc):
    (first, n1), (second, n2), (third, n3) = CLIPS.items()
    ds = build_dataset("lsmdc", lsmdc, "test", **KW)
    assert ds.video_ids == [first, second, third] and [s["text"] for s in ds.samples] == [
        "SOMEONE smiles.", "She turns away.", "Cars pass by."]
    assert ds.video_path(0) == lsmdc / "avi" / "1004_Juno" / f"{first}.avi"
    assert decodes(ds, 0, n1) and decodes(ds, 1, n2) and decodes(ds, 2, n3)
    train = build_dataset("lsmdc", lsmdc, "train", **KW)
    assert len(train.video_ids) == 3 and [s["video_index"] for s in train.samples] == [0, 1, 2, 0]
    assert train.samples[3]["text"] == 'SOMEONE says "hello".'  # quotes are text, not CSV quoting


def test_lsmdc_malformed_line_names_file_and_line(tmp_path):
    (tmp_path / "LSMDC16_annos_val.csv").write_text("a_00.00.01.000-00.00.02.000\t1\t2\t1\t2\tfine\nbroken\tline\n")
    with pytest.raises(AnnotationError, match=r"LSMDC16_annos_val\.csv:2: expected 6 tab-separated fields .* got 2"):
        build_dataset("lsmdc", tmp_path, "val", **KW)
    with pytest.raises(FileNotFoundError, match="LSMDC16_annos_training.csv"):
        build_dataset("lsmdc", tmp_path, "train", **KW)


# ---- NExT-QA ------------------------------------------------------------------------------------------

HEADER = ["video", "frame_count", "width", "height", "question", "answer", "qid", "type", "a0", "a1", "a2", "a3", "a4"]
NEXT_ROWS = [
    ["4010069381", 369, 640, 480, "how do the two man play the instrument", 2, 6, "CH",
     "roll the handle", "tap their feet", "strum the string", "hit with sticks", "pat with hand"],
    ["4010069381", 369, 640, 480, "what does the man do after playing", 0, 7, "TN",
     "bow, then leave", "sit", "jump", "sing", "cry"],
    ["2435100235", 1906, 640, 480, "where is this video taken", 4, 4, "DL",
     "pool", "outdoor", "field", "desert", "bed room"],
]


@pytest.fixture(scope="module")
def nextqa(tmp_path_factory):
    root = tmp_path_factory.mktemp("nextqa")
    write_video(root / "NExTVideo" / "0004" / "4010069381.mp4", 12)
    write_video(root / "NExTVideo" / "1101" / "2435100235.mp4", 9)
    (root / "nextqa").mkdir()
    with (root / "nextqa" / "val.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(NEXT_ROWS)
    (root / "nextqa" / "map_vid_vidorID.json").write_text(json.dumps({"4010069381": "0004/4010069381",
                                                                      "2435100235": "1101/2435100235"}))
    return root


def test_nextqa_questions_types_and_video_map(nextqa, tiny_backbone):
    ds = build_dataset("nextqa", nextqa, "val", **KW)
    assert ds.task == "multiple_choice" and ds.video_ids == ["4010069381", "2435100235"]
    first = ds.samples[0]
    assert first["candidates"][2] == "strum the string" and first["answer"] == 2
    assert first["question_type"] == "CH" and first["qid"] == "4010069381_6"
    assert ds.samples[1]["candidates"][0] == "bow, then leave"  # a quoted comma stays in the option
    assert ds.video_path(1) == nextqa / "NExTVideo" / "1101" / "2435100235.mp4"
    assert decodes(ds, 0, 12) and decodes(ds, 2, 9)
    # the batch feeds the multiple-choice head, and accuracy is reported per question type
    size = tiny_backbone.dims.image_size
    ds = build_dataset("nextqa", nextqa, "val", num_frames=4, size=size)
    batch = collate([ds[i] for i in range(3)], task="multiple_choice")
    assert batch["question_type"] == ["CH", "TN", "DL"] and batch["candidate_mask"].shape == (3, 5)
    model = vla.wrap(tiny_backbone, ["temporal_transformer"], task="multiple_choice").eval()
    with torch.no_grad():
        out = model(batch)
    assert torch.isfinite(out.loss) and out.scores.shape == (3, 5)
    predicted = torch.tensor([2, 1, 4])  # right, wrong, right
    metrics = accuracy_metrics(predicted, batch["answer"], batch["question_type"])
    assert metrics == {"accuracy": pytest.approx(200 / 3), "accuracy/CH": 100.0, "accuracy/TN": 0.0,
                       "accuracy/DL": 100.0}


def test_nextqa_without_the_map_and_malformed_rows(tmp_path):
    write_video(tmp_path / "NExTVideo" / "4010069381.mp4", 6)
    _write_csv(tmp_path / "test.csv", HEADER, [NEXT_ROWS[0]])
    ds = build_dataset("nextqa", tmp_path, "test", **KW)
    assert decodes(ds, 0, 6)
    _write_csv(tmp_path / "train.csv", HEADER, [NEXT_ROWS[0], [*NEXT_ROWS[1][:5], 7, *NEXT_ROWS[1][6:]]])
    with pytest.raises(AnnotationError, match=r"train\.csv:3: answer 7 is outside 0\.\.4"):
        build_dataset("nextqa", tmp_path, "train", **KW)
    _write_csv(tmp_path / "val.csv", [c for c in HEADER if c != "type"], [NEXT_ROWS[0][:7] + NEXT_ROWS[0][8:]])
    with pytest.raises(AnnotationError, match=r"val\.csv:1: header lacks the column\(s\) \['type'\]"):
        build_dataset("nextqa", tmp_path, "val", **KW)


def _write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
