"""`vl-adapters train | eval | extract`: help texts, config errors, and an end-to-end run on real video files."""

from __future__ import annotations

import pytest

from vl_adapters.cli import main


@pytest.mark.parametrize("command, needle", [("train", "--resume"), ("eval", "--rerank-k"), ("extract", "--out"),
                                             ("search", "--videos"), ("answer", "--candidates")])
def test_each_subcommand_has_help_with_examples(command, needle, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert needle in text and "examples:" in text and f"vl-adapters {command}" in text


def test_unknown_config_key_exits_before_any_work(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"run_dir: {tmp_path / 'run'}\ndata:\n  datset: msrvtt\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "data.datset" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


def _msrvtt_fixture(root, num_videos=6):
    """A tiny MSR-VTT layout with real H.264 files (one of them corrupt)."""
    import json

    from videos import write_corrupt, write_video

    ids = [f"video{i}" for i in range(num_videos)]
    for i, vid in enumerate(ids):
        if i == 3:
            write_corrupt(root / "videos" / f"{vid}.mp4")
        else:
            write_video(root / "videos" / f"{vid}.mp4", num_frames=6 + i, height=40, width=48)
    sentences = [{"video_id": v, "caption": f"clip {i} shows colour {c}"}
                 for i, v in enumerate(ids) for c in ("red", "blue")]
    (root / "MSRVTT_data.json").write_text(json.dumps({"sentences": sentences}))
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(ids) + "\n")
    rows = [f"ret{i},{v},{v},clip {i} shows colour red" for i, v in enumerate(ids)]
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\n" + "\n".join(rows) + "\n")


@pytest.mark.determinism
def test_extract_train_resume_and_eval_end_to_end(tmp_path, capsys):
    import json

    pytest.importorskip("av")
    root, cache, run = tmp_path / "msrvtt", tmp_path / "cache", tmp_path / "run"
    _msrvtt_fixture(root)
    for split in ("train", "test"):
        assert main(["extract", "--dataset", "msrvtt", "--root", str(root), "--split", split, "--backbone", "tiny",
                     "--num-frames", "4", "--batch-size", "4", "--out", str(cache / split), "--device", "cpu"]) == 0
    index = json.loads((cache / "train" / "index.json").read_text())
    assert index["complete"] and list(index["bad_videos"]) == ["video3"]
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"run_dir: {run}\nepochs: 2\ndevice: cpu\nprogress: false\n"
        f"data: {{dataset: msrvtt, root: {root}, num_frames: 4, batch_size: 4, num_workers: 0, cache: {cache}}}\n"
        "model: {backbone: tiny, adapters: [{type: temporal_transformer, layers: 1, heads: 2}]}\n")
    assert main(["train", "--config", str(config), "--max-steps", "2", "--lr", "1e-3"]) == 0
    assert main(["train", "--config", str(config), "--lr", "1e-3", "--resume"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["finished"] and report["step"] == 6 and report["feature_cache"].startswith("used")
    assert {v["video_id"] for v in report["skipped_videos"]["videos"]} == {"video3"}
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--checkpoint", "last", "--device", "cpu",
                 "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) >= {"t2v_R@1", "t2v_MdR", "v2t_R@5", "v2t_MnR"}
    # From raw videos instead of the cache: the same checkpoint gives metrics too.
    assert main(["eval", "--adapters", str(run / "checkpoints" / "last"), "--dataset", "msrvtt", "--root", str(root),
                 "--num-frames", "4", "--num-workers", "0", "--device", "cpu"]) == 0


def test_stale_cache_stops_train_with_a_clear_message(tmp_path, capsys):
    import json

    pytest.importorskip("av")
    root, cache = tmp_path / "msrvtt", tmp_path / "cache"
    _msrvtt_fixture(root, num_videos=3)
    assert main(["extract", "--dataset", "msrvtt", "--root", str(root), "--backbone", "tiny", "--num-frames", "4",
                 "--out", str(cache / "train"), "--device", "cpu"]) == 0
    assert json.loads((cache / "train" / "index.json").read_text())["complete"]
    code = main(["train", "--dataset", "msrvtt", "--root", str(root), "--cache", str(cache), "--num-frames", "6",
                 "--backbone", "tiny", "--adapters", "temporal_transformer", "--device", "cpu", "--num-workers", "0",
                 "--set", "eval.every_epoch=false", "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert "num_frames: cache has 4, run expects 6" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def _jsonl_fixture(root, splits=("train", "test")):
    """A JSONL dataset of real video files: 4 videos, one caption each, the same rows in every split."""
    import json

    from videos import write_video

    rows = []
    for i, colour in enumerate(("red", "blue", "green", "yellow")):
        write_video(root / "videos" / f"v{i}.mp4", num_frames=4 + i, height=32, width=32)
        rows.append(json.dumps({"video": f"v{i}.mp4", "text": f"a {colour} clip number {i}"}))
    for split in splits:
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return root


JSONL_TRAIN = ["--dataset", "jsonl", "--backbone", "tiny", "--adapters", "temporal_transformer", "--device", "cpu",
               "--num-workers", "0", "--num-frames", "2", "--epochs", "1", "--batch-size", "2", "--no-progress"]


def test_a_second_train_into_a_run_directory_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    pytest.importorskip("av")
    root, run = _jsonl_fixture(tmp_path / "data"), tmp_path / "run"
    train = ["train", "--root", str(root), "--run-dir", str(run), *JSONL_TRAIN]
    assert main(train) == 0
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(train) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds a run" in err and "--overwrite" in err and "--resume" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files  # untouched
    (run / "checkpoints" / "best" / "stray.txt").write_text("from the first run")
    assert main([*train, "--overwrite"]) == 0
    metrics = (run / "metrics.jsonl").read_text().splitlines()
    assert metrics and len(metrics) == len(files[run / "metrics.jsonl"].decode().splitlines())  # not appended
    assert not (run / "checkpoints" / "best" / "stray.txt").exists()
    with pytest.raises(SystemExit):
        main([*train, "--overwrite", "--resume"])


def test_the_best_checkpoint_is_chosen_on_val_when_there_is_one_and_test_is_reported_apart(tmp_path, capsys):
    import json

    pytest.importorskip("av")
    with_val = _jsonl_fixture(tmp_path / "with_val", splits=("train", "val", "test"))
    (with_val / "test.jsonl").write_text((with_val / "test.jsonl").read_text().replace("number", "test"))
    assert main(["train", "--root", str(with_val), "--run-dir", str(tmp_path / "a"), *JSONL_TRAIN]) == 0
    out, err = capsys.readouterr()
    summary, report = json.loads(out.splitlines()[-1]), json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["model_selection"] == {"split": "val", "note": None} and summary["selected_on"] == "val"
    assert report["test"]["split"] == "test" and "t2v_R@1" in report["test"]["metrics"]
    assert summary["test"] == {"test": report["test"]["metrics"]} and "note" not in err
    logged = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in logged if r["kind"] in ("eval", "test")] == ["eval", "test"]

    without = _jsonl_fixture(tmp_path / "without_val")
    assert main(["train", "--root", str(without), "--run-dir", str(tmp_path / "b"), *JSONL_TRAIN]) == 0
    out, err = capsys.readouterr()
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["model_selection"]["split"] == "test" and report["test"] is None
    assert "chosen on the test split 'test'" in report["model_selection"]["note"] and "no validation split" in err
    assert json.loads(out.splitlines()[-1])["selected_on"] == "test"
    # an explicit eval_split: test keeps working, and says that a val split was there
    assert main(["train", "--root", str(with_val), "--run-dir", str(tmp_path / "c"), *JSONL_TRAIN,
                 "--set", "data.eval_split=test"]) == 0
    assert "although the dataset has a 'val' split" in capsys.readouterr().err


def test_list_verbose_gives_each_adapter_its_whole_first_sentence(capsys):
    from vl_adapters.core.registry import ADAPTERS

    assert main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    entries = {}
    for line in out.splitlines():
        if line.startswith("  ") and "stage=" in line:
            name, rest = line.split(maxsplit=1)
            entries[name] = rest.split(maxsplit=1)[1]
        elif line.startswith(" " * 10) and entries:
            entries[name] += " " + line.strip()
    assert sorted(entries) == ADAPTERS.names()
    for name, text in entries.items():
        doc = " ".join(ADAPTERS.get(name).__doc__.split())
        assert text.endswith(".") and doc.startswith(text), (name, text)
    assert entries["st_adapter"].startswith("ST-Adapter (Pan et al., 2022) in the frozen ViT through forward")


def test_the_default_backbone_is_the_pretrained_tiny_one_and_train_help_says_so(capsys):
    import torch

    import vl_adapters as vla
    from vl_adapters.train.config import TrainConfig

    default = TrainConfig().model.backbone
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert f"{default} (default" in " ".join(capsys.readouterr().out.split())
    trained = vla.load_backbone(default, device="cpu").model.state_dict()
    untrained = vla.load_backbone("tiny", device="cpu", pretrained="").model.state_dict()
    assert not torch.equal(trained["text_projection"], untrained["text_projection"])  # pretrained weights
