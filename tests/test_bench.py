"""`vl-adapters bench`: the grid from the registry, frame views and the controls, tie-aware metrics, twin
readouts, jobs through the library's trainer, and a grid on real mp4 files with an open_clip backbone of
the test's own (random weights saved to a local file): every row and seed, the cache built once, a rerun
that trains nothing, and the same results.json with 1 or 2 workers and through submitit."""

from __future__ import annotations

import inspect
import json
import os
import re

import pytest
import torch

import vl_adapters as vla
from vl_adapters.bench import evaluate as bench_evaluate
from vl_adapters.bench import frozen, jobs, launch, run, twins
from vl_adapters.bench import report as report_module
from vl_adapters.bench.estimate import makespan
from vl_adapters.bench.grid import (
    MEAN,
    NAMED_COMBINATION,
    NAMED_ROWS,
    PARTS_ONLY,
    SHUFFLED_SUFFIX,
    SINGLE_FRAME,
    ZERO_SHOT,
    GridRow,
    build_grid,
    registered_adapters,
    shuffled_control,
)
from vl_adapters.core.features import VideoFeatures
from vl_adapters.core.pooling import video_embedding
from vl_adapters.data.synthetic import generate
from vl_adapters.data.views import apply_view, fixed_permutations
from vl_adapters.tasks.metrics import answer_credit, retrieval_metrics
from vl_adapters.train.evaluate import SplitScores


# ---------------------------------------------------------------- the grid and its controls
def test_default_rows_are_the_named_methods_and_all_adds_every_adapter():
    registry = registered_adapters()
    rows, _ = build_grid()
    names = [r.name for r in rows]
    assert names[:3] == [ZERO_SHOT, MEAN, SINGLE_FRAME] and not rows[0].train
    assert names[3:] == [n for n in NAMED_ROWS if n in registry] + ["+".join(NAMED_COMBINATION)]
    rows, notes = build_grid(all_adapters=True)
    names = [r.name for r in rows]
    for name in registry:  # every registered adapter is a row (backbone-stage ones included), or its composite
        if name in PARTS_ONLY:
            assert PARTS_ONLY[name] in names and name not in names and any(name in n for n in notes)
        else:
            assert name in names
    single = next(r for r in rows if r.name == SINGLE_FRAME)
    assert single.adapters == () and single.train_view == single.test_view == "middle" and single.control
    assert [r.name for r in build_grid(["temporal_transformer"], controls=False)[0]] == [
        ZERO_SHOT, MEAN, "temporal_transformer"]
    with pytest.raises(ValueError, match="no_such_adapter.*not registered"):
        build_grid(["no_such_adapter"])


def test_shuffled_control_is_the_best_validation_row_fixed_before_test():
    rows = [GridRow(MEAN, (), True, control=True), GridRow("a", ("a",), True), GridRow("b", ("b",), True),
            GridRow("c", ("c",), True)]
    # a control never qualifies, however well it scores; ties go to the earlier row
    control = shuffled_control(rows, {MEAN: 99.0, "a": 40.0, "b": 55.0, "c": 55.0})
    assert control.name == "b" + SHUFFLED_SUFFIX and control.adapters == ("b",)
    assert control.train_view == "shuffled" and control.test_view == "all" and control.control
    assert shuffled_control(rows[:1], {MEAN: 99.0}) is None


def test_frame_views_move_whole_frames_and_leave_mean_pooling_unchanged():
    gen = torch.Generator().manual_seed(0)
    video = VideoFeatures(frame_emb=torch.randn(3, 6, 8, generator=gen), frame_mask=torch.ones(3, 6, dtype=torch.bool),
                          patch_tokens=torch.randn(3, 6, 4, 5, generator=gen), grid=(2, 2))
    batch = {"video": video, "video_index": torch.tensor([2, 0, 1])}
    middle = apply_view(batch, "middle")["video"]
    assert middle.frame_emb.shape == (3, 1, 8) and torch.equal(middle.frame_emb[:, 0], video.frame_emb[:, 2])
    permutations = fixed_permutations(3, 6, seed=1)
    mixed = apply_view(batch, "shuffled", permutations=permutations)["video"]
    assert torch.equal(mixed.frame_emb[0], video.frame_emb[0, permutations[2]])  # by video index, not position
    assert torch.equal(apply_view(batch, "shuffled", permutations=permutations)["video"].frame_emb, mixed.frame_emb)
    assert torch.allclose(video_embedding(mixed), video_embedding(video), atol=1e-6)  # mean pooling is order-blind
    for b in range(3):  # each frame keeps its own patch tokens
        for t in range(6):
            src = (video.frame_emb[b] == mixed.frame_emb[b, t]).all(-1).nonzero().item()
            assert torch.equal(mixed.patch_tokens[b, t], video.patch_tokens[b, src])
    frames = torch.arange(2 * 4).view(2, 4, 1, 1, 1).expand(2, 4, 3, 2, 2)
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    picked = apply_view({"video": frames, "frame_mask": mask}, "middle")
    assert picked["video"][:, 0, 0, 0, 0].tolist() == [1, 5] and picked["frame_mask"].all()  # the middle REAL frame
    with pytest.raises(ValueError, match="frame view"):
        apply_view(batch, "reversed")


def test_tie_aware_metrics_give_a_tied_choice_half_credit():
    tied = torch.tensor([[1.0, 1.0 + 1e-7, 0.0], [0.2, 0.9, 0.1]])
    truth = torch.tensor([0, 1])
    strict = retrieval_metrics(tied, truth)
    expected = retrieval_metrics(tied, truth, ties="expected")
    assert strict["t2v_R@1"] == 50.0  # rounding decides the tie against the truth
    assert expected["t2v_R@1"] == 75.0 and expected["t2v_MdR"] == 1.25
    scores = torch.tensor([[2.0, 2.0, float("-inf")], [0.0, 3.0, 1.0]])
    assert answer_credit(scores, torch.tensor([0, 1]), "expected").tolist() == [0.5, 1.0]
    assert answer_credit(scores, torch.tensor([0, 1])).tolist() == [1.0, 1.0]


def test_twin_readouts_are_50_for_a_model_that_cannot_see_order(tmp_path):
    root = tmp_path / "data"
    generate(root, num_train_pairs=1, num_val_pairs=0, num_test_pairs=3, num_frames=4, seed=0)
    dataset = vla.data.build_dataset("jsonl", root, "test", file="mc_{split}.jsonl", num_frames=4)
    rows = twins.annotation_rows(dataset)
    assert len(rows) == len(dataset.samples) and all("twin" in r for r in rows)
    k = max(len(s["candidates"]) for s in dataset.samples)
    scores = torch.zeros(len(rows), k)  # an order-blind model: every candidate alike
    found = twins.twin_metrics(dataset, SplitScores(
        task="multiple_choice", scores=scores, truth=torch.tensor([s["answer"] for s in dataset.samples]),
        samples=torch.arange(len(rows)), kinds=[s["question_type"] for s in dataset.samples]))
    assert found == {"twin": 50.0}  # static questions are left out: the twins share their answer
    scores[torch.arange(len(rows)), torch.tensor([s["answer"] for s in dataset.samples])] = 1.0
    assert twins.twin_metrics(dataset, SplitScores(
        task="multiple_choice", scores=scores, truth=torch.tensor([s["answer"] for s in dataset.samples]),
        samples=torch.arange(len(rows)), kinds=[s["question_type"] for s in dataset.samples]))["twin"] == 100.0


def test_the_bench_names_no_adapter_in_its_protocol():
    """One code path for every row: no registered adapter is named in the modules that train and evaluate."""
    stages = registered_adapters()
    for module in (jobs, bench_evaluate, twins, launch, run, frozen):
        source = inspect.getsource(module)
        assert not [name for name in stages if f'"{name}"' in source or f"'{name}'" in source], module.__name__


def test_charts_keep_the_legend_off_the_bars_and_give_every_row_its_own_line(tmp_path):
    from vl_adapters.bench.report import bar_chart, loss_curves

    rows = [{"name": f"row {i}", "inputs": "features", "control": False,
             "runs": [{"seed": 0, "metrics": {"retrieval/t2v_R@1": float(i), "retrieval/accuracy": 1.0},
                       "loss_curve": {"retrieval": [[1, 2.0], [2, 1.0 + i / 100]]}}]} for i in range(25)]
    summary = {"meta": {"tasks": ["retrieval"], "report": [], "dataset": "d", "backbone": "b"}, "rows": rows}
    placed = bar_chart(tmp_path / "bars.png", summary)
    assert placed["legend_top"] < 0  # below the axes, not over them
    styles = loss_curves(tmp_path / "loss.png", summary, "retrieval")
    assert len(styles) == 25 and len(set(styles)) == 25


def test_grid_order_is_seed_by_seed_cheapest_first_and_the_last_seed_dearest_first():
    from vl_adapters.bench.config import BenchSettings

    grid = run.Grid.__new__(run.Grid)
    grid.settings = BenchSettings(seeds=[0, 1])
    heavy, light = GridRow("heavy", ("a",), True), GridRow("light", ("b",), True)
    todo = [jobs.Job(i, row, "retrieval", seed) for seed in (1, 0) for i, row in enumerate((heavy, light))]
    costs = {job: 100.0 if job.row is heavy else 1.0 for job in todo}
    assert [(j.seed, j.row.name) for j in grid.order(todo, costs)] == [
        (0, "light"), (0, "heavy"), (1, "heavy"), (1, "light")]


def test_a_long_grid_is_not_started_without_asking(monkeypatch):
    from vl_adapters.bench.config import BenchError

    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(BenchError, match="--yes"):
        run._confirm(2 * run.ASK_SECONDS, print)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _: "n")
    with pytest.raises(SystemExit):
        run._confirm(2 * run.ASK_SECONDS, print)
    monkeypatch.setattr("builtins.input", lambda _: "y")
    run._confirm(2 * run.ASK_SECONDS, print)


def test_makespan_hands_each_job_to_the_first_free_worker():
    assert makespan([3.0, 3.0, 2.0, 2.0, 2.0], workers=2) == 7.0  # 3+2+2 on one, 3+2 on the other
    assert makespan([3.0, 3.0, 2.0, 2.0, 2.0], workers=1) == 12.0
    assert makespan([], workers=2) == 0.0


def test_a_long_job_reports_its_step_at_most_once_per_interval(tmp_path, capsys):
    directory = tmp_path / "job"
    directory.mkdir()
    (directory / jobs.JOB_FILE).write_text(json.dumps({"row": {"name": "row"}, "task": "retrieval", "seed": 0}))
    now = [0.0]
    on_step = run.Progress(every=60.0, clock=lambda: now[0])(str(directory))
    for step in range(1, 101):
        now[0] = step * 1.5
        on_step(step, 100)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["[bench] row / retrieval / seed 0: step 40/100, about 90 s left",
                     "[bench] row / retrieval / seed 0: step 80/100, about 30 s left"]


def test_bench_settings_reject_unknown_keys_with_the_line(tmp_path):
    from vl_adapters.bench.config import load_bench
    from vl_adapters.core.config import ConfigError

    path = tmp_path / "base.yaml"
    path.write_text("data:\n  dataset: jsonl\nbench:\n  seeds: [0]\n  sedes: [1]\n")
    with pytest.raises(ConfigError, match=r"base.yaml:5: .*bench.sedes"):
        load_bench(path, {})
    path.write_text("bench:\n  launcher: pbs\n")
    with pytest.raises(ConfigError, match=r"base.yaml:2: bench.launcher: must be one of"):
        load_bench(path, {})
    base, settings = load_bench(path, {"launcher": "slurm", "seeds": [3]})
    assert settings.launcher == "slurm" and settings.seeds == [3] and "bench" not in base


# ---------------------------------------------------------------- a grid on real videos, open_clip backbone
NARROW_CLIP = {"embed_dim": 32,
               "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16,
                              "mlp_ratio": 2.0},
               "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1,
                            "mlp_ratio": 2.0}}
ROWS = ["temporal_transformer", "st_adapter"]  # a video-stage row and a backbone-stage row (fed frames)


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """Real mp4 files in the generic JSONL format (retrieval and multiple choice files per split), and an
    open_clip model config of our own with random weights in a local safetensors file."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("own")
    generate(root / "data", num_train_pairs=4, num_val_pairs=2, num_test_pairs=2, num_frames=4, seed=3)
    config = root / "narrow-clip.json"
    config.write_text(json.dumps(NARROW_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("narrow-clip")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "narrow.safetensors"))
    base = root / "base.yaml"
    base.write_text(f"""\
data: {{dataset: jsonl, root: {root / 'data'}, train_split: train, eval_split: val, num_frames: 4,
       batch_size: 4, eval_batch_size: 8, num_workers: 0}}
model: {{backbone: "open_clip:{config}", pretrained: {root / 'narrow.safetensors'}}}
optim: {{lr: 0.001}}
epochs: 1
eval: {{rerank_k: 2}}
bench:
  seeds: [0, 1]
  adapters: {json.dumps(ROWS)}
  tasks:
    retrieval: {{data: {{options: {{file: "retrieval_{{split}}.jsonl"}}}}}}
    multiple_choice: {{data: {{options: {{file: "mc_{{split}}.jsonl"}}}}}}
  control_metric: multiple_choice/accuracy/temporal
""")
    return base


@pytest.fixture(scope="module")
def own_grid(own_data, tmp_path_factory):
    """The grid run once with one worker, counting the feature extractions."""
    from vl_adapters.data import cache

    out = tmp_path_factory.mktemp("grid") / "w1"
    calls = []
    real = cache.extract_features
    patch = pytest.MonkeyPatch()
    patch.setattr(cache, "extract_features", lambda *a, **k: calls.append(k) or real(*a, **k))
    try:
        run.run_bench(out, config=own_data, changes={"workers": 1}, log=lambda *_: None)
    finally:
        patch.undo()
    return out, calls


@pytest.mark.slow
@pytest.mark.video
def test_a_grid_on_real_videos_has_every_row_and_seed_and_its_cache_once(own_grid):
    out, calls = own_grid
    data = json.loads((out / "results.json").read_text())
    names = [row["name"] for row in data["rows"]]
    assert names[:3] == [ZERO_SHOT, MEAN, SINGLE_FRAME] and names[3:5] == ROWS
    assert len(names) == 6 and names[5].endswith(SHUFFLED_SUFFIX)  # the control, chosen on validation
    for row in data["rows"]:
        seeds = [run["seed"] for run in row["runs"]]
        assert seeds == ([0, 1] if row["trained"] else [0]), row["name"]
        for run_ in row["runs"]:
            for task in ("retrieval", "multiple_choice"):
                assert f"{task}/shuffled/twin" in run_["metrics"] or row["test_view"] == "middle"
                assert (run_["trainable_params"][task] > 0) == row["trained"]
    assert next(r for r in data["rows"] if r["name"] == "st_adapter")["inputs"] == "frames"
    # one cache for both task heads (the same videos): train, val and test extracted once each
    assert sorted(c.get("sampler") for c in calls) == ["uniform"] * 3
    assert len(list((out / "cache").iterdir())) == 1
    for name in ("results.md", "results.csv", "timing.json", "results.png", "loss_retrieval.png"):
        assert (out / name).exists(), name
    report = (out / "results.md").read_text()
    assert "## Cost" in report and "CPU-hours" in report and "QB-Norm" in report
    assert "its beta is chosen on the validation split" in report
    data["meta"]["validation"] = False  # the sentence follows the run: without a validation split, the default
    without = report_module.markdown(data, json.loads((out / "timing.json").read_text()))
    assert "its beta is the default 20" in without and "chosen on the validation split" not in without
    job = out / "jobs" / "temporal_transformer" / "retrieval" / "seed1"
    assert (job / "config.yaml").exists() and (job / "metrics.jsonl").exists()
    zero = next(r for r in data["rows"] if r["name"] == ZERO_SHOT)["runs"][0]["metrics"]
    assert zero["multiple_choice/shuffle_drop/accuracy/temporal"] == 0.0  # order-blind: exactly 0
    assert zero["multiple_choice/twin"] == zero["retrieval/twin"] == 50.0


@pytest.mark.slow
@pytest.mark.video
def test_a_rerun_trains_nothing_and_two_workers_give_the_same_json(own_grid, own_data, monkeypatch):
    from vl_adapters.data import cache
    from vl_adapters.train.trainer import Trainer

    out, _ = own_grid
    first = (out / "results.json").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("a finished job was trained again")

    monkeypatch.setattr(Trainer, "fit", refuse)
    monkeypatch.setattr(cache, "extract_features", refuse)
    run.run_bench(out, config=own_data, changes={"workers": 1}, log=lambda *_: None)
    assert (out / "results.json").read_bytes() == first
    monkeypatch.undo()
    second = out.parent / "w2"
    run.run_bench(second, config=own_data, changes={"workers": 2, "cache": str(out / "cache")}, log=lambda *_: None)
    assert (second / "results.json").read_bytes() == first
    # one spawned process per device, the way jobs spread over GPUs (here two CPU "devices")
    third = out.parent / "devices"
    run.run_bench(third, config=own_data, changes={"devices": ["cpu", "cpu"], "cache": str(out / "cache")},
                  log=lambda *_: None)
    assert (third / "results.json").read_bytes() == first


@pytest.mark.slow
@pytest.mark.video
def test_submitit_gives_the_same_json_as_the_local_run(own_grid, own_data, tmp_path):
    """A smaller grid (one seed, one row, no controls: every job is a process of its own) through submitit's
    local executor, against the same grid read back from the local run's finished jobs."""
    import shutil

    pytest.importorskip("submitit", reason="the slurm launcher needs submitit (the slurm extra)")
    out, _ = own_grid
    smaller = {"seeds": [0], "adapters": ["temporal_transformer"], "controls": False, "cache": str(out / "cache")}
    local = tmp_path / "local"
    shutil.copytree(out / "jobs", local / "jobs")
    run.run_bench(local, config=own_data, changes=smaller, log=lambda *_: None)
    through = tmp_path / "submitit"
    run.run_bench(through, config=own_data, log=lambda *_: None,
                  changes={**smaller, "launcher": "slurm", "slurm": {"cluster": "local", "timeout_min": 30}})
    assert (through / "results.json").read_bytes() == (local / "results.json").read_bytes()
    assert len(json.loads((local / "results.json").read_text())["rows"]) == 3
    assert len(list((through / "submitit").glob("*_log.out"))) == 6  # each job a process of its own


@pytest.mark.slow
@pytest.mark.video
def test_a_job_runs_data_parallel_under_torchrun(own_grid, tmp_path):
    """One job of the grid again, on two gloo processes (the CPU stand-in for two GPUs)."""
    import shutil

    from vl_adapters.bench.config import BenchSettings

    out, _ = own_grid
    job = tmp_path / "job"
    shutil.copytree(out / "jobs" / "temporal_transformer" / "multiple_choice" / "seed0", job)
    (job / jobs.RESULT_FILE).unlink()
    shutil.rmtree(job / "checkpoints")
    (job / "metrics.jsonl").unlink()
    directory, result, error = launch._torchrun(str(job), BenchSettings(nproc_per_job=2))
    assert error is None and result is not None, error
    single = json.loads((out / "jobs" / "temporal_transformer" / "multiple_choice" / "seed0" / "result.json").read_text())
    assert set(result["metrics"]) == set(single["metrics"])
    assert 0 < result["steps"] < single["steps"]  # each step took a batch on each of the two ranks


def test_estimate_times_every_row_and_task_and_runs_no_job(tmp_path, capsys):
    from vl_adapters.cli import main

    out = tmp_path / "estimate"
    assert main(["bench", "--tiny", "--estimate", "--adapters", "temporal_transformer", "--out", str(out),
                 "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    for name in (MEAN, SINGLE_FRAME, "temporal_transformer"):
        assert re.search(rf"\[bench\]   {re.escape(name)}: retrieval [\d.]+ s, multiple_choice [\d.]+ s per step", printed)
    assert re.search(r"estimate: about \d+ s for 14 jobs on 1 worker", printed)  # zero-shot once, 3 rows x 2 x 2
    assert not list((out / "jobs").rglob("result.json")) and not (out / "results.json").exists()


def test_two_workers_time_the_probes_side_by_side(tmp_path, monkeypatch):
    """With workers > 1 the probes run in forked processes (as the jobs will): every (row, task) is timed
    and the main process keeps its thread count."""
    from vl_adapters.bench import estimate

    probes = {("a", "retrieval"): {"n": 1}, ("b", "retrieval"): {"n": 2}, ("c", "multiple_choice"): {"n": 3}}
    monkeypatch.setattr(estimate, "seconds_per_step",
                        lambda config, backbone: config["n"] / 10 + 1000 * (os.getpid() != backbone))
    threads = torch.get_num_threads()
    timed = estimate.measure(probes, os.getpid(), lambda *_: None, workers=2)
    assert {key: round(value - 1000, 6) for key, value in timed.items()} == {
        ("a", "retrieval"): 0.1, ("b", "retrieval"): 0.2, ("c", "multiple_choice"): 0.3}  # in other processes
    assert torch.get_num_threads() == threads and estimate._PROBE == {}


@pytest.mark.slow
@pytest.mark.video
def test_the_tiny_preset_prints_its_headline_not_its_tables(tmp_path, capsys):
    from vl_adapters.cli import main

    out = tmp_path / "tiny"
    assert main(["bench", "--tiny", "--adapters", "temporal_transformer", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "In this run the best row on temporal multiple choice is" in printed
    assert "| row |" not in printed and "| row |" in (out / "results.md").read_text()
    assert (out / "config.yaml").exists()  # the preset's config, to run again with --config
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["synthetic"] and [r["name"] for r in data["rows"]][3] == "temporal_transformer"


def test_perf_suite_writes_a_table_and_json(tmp_path):
    from vl_adapters.bench.perf import run_perf

    result = run_perf(tmp_path, adapters=["temporal_transformer"], tiny=True, log=lambda *_: None)
    assert result["backbone_clips_per_s"] > 0
    names = [r["name"] for r in result["rows"]]
    assert names == [MEAN, "temporal_transformer"]
    for row in result["rows"]:
        assert row["cached_step_ms"] > 0 and row["uncached_step_ms"] > 0 and row["cached_peak_mem_mb"] > 0
    assert json.loads((tmp_path / "perf.json").read_text())["rows"] == result["rows"]
    assert "| temporal_transformer |" in (tmp_path / "perf.md").read_text()


def test_the_headline_says_when_the_control_is_another_row_than_the_best_on_test():
    from vl_adapters.bench.grid import MEAN, SHUFFLED_SUFFIX
    from vl_adapters.bench.report import headline

    key = "multiple_choice/accuracy/temporal"

    def row(name, accuracy, control=False):
        return {"name": name, "control": control, "runs": [{"metrics": {key: accuracy}}]}

    rows = [row(MEAN, 22.0, True), row("a", 40.0), row("b", 30.0)]
    other = headline({"rows": rows + [row("b" + SHUFFLED_SUFFIX, 21.0, True)]})
    assert "best row on temporal multiple choice is a " in other
    assert "Trained on shuffled frames, b (the shuffled-training control's row: the best on validation)" in other
    same = headline({"rows": rows + [row("a" + SHUFFLED_SUFFIX, 21.0, True)]})
    assert "Trained on shuffled frames, a reaches 21.0%." in same
