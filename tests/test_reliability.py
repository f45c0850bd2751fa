"""Issue 13: nothing silently wrong. One regression test (or more) per defect; each fails on cb7efde.

Kill-at-every-instant tests of the checkpoint swap and of extract are in test_faults.py; the bad-input
table (defect 8) is in test_bad_inputs.py.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _toy_data import ToyRetrievalDataset

import vl_adapters as vla
from vl_adapters.core.io import load_tensors
from vl_adapters.tasks.metrics import retrieval_metrics
from vl_adapters.train.config import load_config
from vl_adapters.train.trainer import Trainer, read_metrics_log

ROOT = Path(__file__).resolve().parents[1]
ADAPTER = {"type": "temporal_transformer", "layers": 1, "heads": 2, "dropout": 0.1}


def _config(run_dir, **overrides):
    base = {"run_dir": str(run_dir), "epochs": 2, "seed": 3, "progress": False, "log_every": 1,
            "data.batch_size": 4, "data.eval_batch_size": 8, "data.num_workers": 0, "optim.lr": 1e-3,
            "model.adapters": [ADAPTER], "model.backbone": "tiny", "device": "cpu"}
    return load_config(overrides={**base, **overrides})


def _trainer(backbone, run_dir, dataset=None, eval_dataset=None, **overrides):
    config = _config(run_dir, **overrides)
    torch.manual_seed(config.seed)
    model = vla.wrap(backbone, config.model.adapters, task="retrieval")
    return Trainer(config, model=model, train_dataset=dataset or ToyRetrievalDataset(10),
                   eval_dataset=eval_dataset or ToyRetrievalDataset(6, seed=1))


def _randomise(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))


# ---- 1. NaN is never a perfect score --------------------------------------------------------------
def test_nan_scores_rank_last():
    with pytest.warns(RuntimeWarning, match="NaN"):
        all_nan = retrieval_metrics(torch.full((3, 3), float("nan")))
    assert all_nan["t2v_R@1"] == 0.0 and all_nan["v2t_R@1"] == 0.0  # was 100.0
    assert all_nan["t2v_MdR"] == 3.0  # last of 3
    sims = torch.eye(4)
    sims[1, 1] = float("nan")  # a NaN target ranks last
    sims[2, 0] = float("nan")  # a NaN candidate counts as -inf: it does not push video 2 down
    with pytest.warns(RuntimeWarning):
        metrics = retrieval_metrics(sims)
    assert metrics["t2v_R@1"] == 75.0 and metrics["t2v_MnR"] == pytest.approx((1 + 4 + 1 + 1) / 4)


def test_nonfinite_loss_stops_the_run_naming_the_step(tiny_backbone, tmp_path):
    trainer = _trainer(tiny_backbone, tmp_path / "run", **{"optim.lr": 1e30, "optim.grad_clip": 0.0})
    with pytest.raises(RuntimeError, match=r"non-finite") as error:
        trainer.fit()
    assert "step" in str(error.value)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert not report["finished"] and "step" in report["error"]
    for which in ("best", "last"):  # never written from non-finite weights
        path = tmp_path / "run" / "checkpoints" / which / "adapters.safetensors"
        if path.exists():
            assert all(torch.isfinite(v).all() for v in load_tensors(path).values()), which


class _NaNFrames(ToyRetrievalDataset):
    """Float (normalised) frames; the videos in `poisoned` are all NaN."""

    def __init__(self, *args, poisoned=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.poisoned = set(poisoned)

    def load_video(self, video_index):
        out = super().load_video(video_index)
        frames = (out["frames"].float() / 255 - 0.45) / 0.27
        if video_index in self.poisoned:
            frames = torch.full_like(frames, float("nan"))
        return {**out, "frames": frames}


def test_nonfinite_skip_counts_the_batches_and_best_stays_finite(tiny_backbone, tmp_path):
    trainer = _trainer(tiny_backbone, tmp_path / "run", dataset=_NaNFrames(10, poisoned=(4,)),
                       eval_dataset=_NaNFrames(6, seed=1), nonfinite_loss="skip")
    with pytest.warns(RuntimeWarning, match="NaN"):
        trainer.fit()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["finished"] and report["nonfinite_skipped"]["count"] == 2  # one batch per epoch
    assert {s["what"] for s in report["nonfinite_skipped"]["steps"]} == {"loss"}
    best = load_tensors(tmp_path / "run" / "checkpoints" / "best" / "adapters.safetensors")
    assert all(torch.isfinite(v).all() for v in best.values())
    assert report["step"] == 4  # 3 batches x 2 epochs, one of each epoch skipped


# ---- 2. a saved model keeps its backbone ----------------------------------------------------------
@pytest.fixture
def weights_file(tmp_path):
    """Weights for tiny:tiny-clip other than its seeded initialisation (as a user's fine-tuned CLIP)."""
    from safetensors.torch import save_file

    state = vla.load_backbone("tiny", device="cpu").model.state_dict()
    generator = torch.Generator().manual_seed(7)
    changed = {k: (v + 0.05 * torch.randn(v.shape, generator=generator)) if v.is_floating_point() else v
               for k, v in state.items()}
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in changed.items()}, str(path))
    return path


def test_saved_adapters_reload_the_weights_they_were_trained_on(weights_file, tmp_path, frames, texts):
    backbone = vla.load_backbone("tiny", pretrained=str(weights_file), device="cpu")
    model = vla.wrap(backbone, ["temporal_transformer"])
    _randomise(model)
    model.save_adapters(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "adapters.json").read_text())["backbone"]
    assert saved["pretrained"] == str(weights_file.resolve()) and saved["fingerprint"] == backbone.fingerprint()
    loaded = vla.load_adapters(tmp_path / "saved", device="cpu")  # no backbone given: the recorded source
    assert loaded.backbone.fingerprint() == backbone.fingerprint()
    video, mask = frames
    assert torch.equal(loaded.similarity(texts, video, frame_mask=mask),
                       model.eval().similarity(texts, video, frame_mask=mask))


def test_other_backbone_weights_are_refused_naming_both(weights_file, tmp_path):
    trained_on = vla.load_backbone("tiny", pretrained=str(weights_file), device="cpu")
    vla.wrap(trained_on, ["temporal_transformer"]).save_adapters(tmp_path / "saved")
    plain = vla.load_backbone("tiny", device="cpu")
    with pytest.raises(ValueError, match="fingerprint") as error:  # BackboneMismatchError
        vla.load_adapters(tmp_path / "saved", backbone=plain)
    assert trained_on.fingerprint() in str(error.value) and plain.fingerprint() in str(error.value)
    assert "allow_backbone_mismatch" in str(error.value)
    assert vla.load_adapters(tmp_path / "saved", backbone=plain, allow_backbone_mismatch=True) is not None


def test_files_without_a_recorded_source_load_from_the_spec(tmp_path, recwarn):
    vla.wrap(vla.load_backbone("tiny", device="cpu"), ["temporal_transformer"]).save_adapters(tmp_path)
    described = json.loads((tmp_path / "adapters.json").read_text())
    for key in ("pretrained", "fingerprint"):  # as files written before they were recorded
        del described["backbone"][key]
    (tmp_path / "adapters.json").write_text(json.dumps(described))
    loaded = vla.load_adapters(tmp_path, device="cpu")
    assert loaded.backbone.spec == "tiny:tiny-clip" and not recwarn.list


# ---- 5. models come back in eval mode ---------------------------------------------------------------
def test_loaded_model_is_in_eval_mode_and_scores_the_same_twice(tiny_backbone, tmp_path, frames, texts):
    model = vla.wrap(tiny_backbone, [{"type": "temporal_transformer", "layers": 1, "heads": 2, "dropout": 0.5}])
    _randomise(model)
    model.save_adapters(tmp_path)
    loaded = vla.load_adapters(tmp_path, backbone=tiny_backbone)
    assert not loaded.training
    video, mask = frames
    assert torch.equal(loaded.similarity(texts, video, frame_mask=mask), loaded.similarity(texts, video, frame_mask=mask))


def test_readme_three_lines_give_the_same_scores_twice(tiny_backbone, frames):
    video, _ = frames
    model = vla.wrap(tiny_backbone, ["temporal_transformer"], task="retrieval")
    assert torch.equal(model.similarity(["a man is driving a car"], video),
                       model.similarity(["a man is driving a car"], video))


# ---- 6. one wrapped model never leaks into the next ---------------------------------------------------
@pytest.mark.parametrize("inside", ["lora", "st_adapter"])
def test_backbone_adapters_stay_in_their_own_model(inside, frames, texts):
    pytest.importorskip("peft")
    backbone = vla.load_backbone("tiny", device="cpu", pretrained="")
    video, mask = frames
    frozen_video = backbone.encode_video(video, mask).frame_emb.clone()
    frozen_text = backbone.encode_text(texts).text_emb.clone()
    first = vla.wrap(backbone, [inside])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the first model trains: its up-projections (zero at init) move
        for name, p in first.adapters.named_parameters():
            if "lora_B" in name or "_B." in name or ".up." in name:
                p.add_(0.5 * torch.randn(p.shape, generator=generator))
    assert (first.encode_video(video, mask).frame_emb - frozen_video).abs().max() > 1e-3  # it does change features
    for adapters in (["temporal_transformer"], []):
        later = vla.wrap(backbone, adapters)
        names = [n for n, p in later.named_parameters() if p.requires_grad]
        assert not any("lora" in n or "blocks" in n for n in names), names
        assert torch.equal(later.backbone.encode_video(video, mask).frame_emb, frozen_video)
        assert torch.equal(later.backbone.encode_text(texts).text_emb, frozen_text)
    assert torch.equal(backbone.encode_video(video, mask).frame_emb, frozen_video)
    shared = {id(p) for p in backbone.parameters()}  # no weight was copied
    assert all(id(p) in shared for n, p in first.backbone.named_parameters() if "lora" not in n)


# ---- 7. loading a backbone leaves the global RNG alone ----------------------------------------------
def test_loading_a_tiny_backbone_does_not_touch_the_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    vla.load_backbone("tiny", device="cpu")
    assert torch.equal(torch.rand(4), expected)


def test_trainer_seed_changes_the_adapter_initialisation(tmp_path):
    inits = []
    for seed in (1, 2):
        config = _config(tmp_path / f"run{seed}", seed=seed, **{"eval.every_epoch": False})
        trainer = Trainer(config, train_dataset=ToyRetrievalDataset(4), eval_dataset=None)
        inits.append(trainer.model.adapter_state_dict())
    assert any(not torch.equal(inits[0][k], inits[1][k]) for k in inits[0] if "position" in k or "encoder" in k)


# ---- 3/4. crashes mid-swap (in-process; the SIGKILL versions are in test_faults.py) -------------------
class _Crash(BaseException):
    pass


def _crash_on_replace(monkeypatch, number):
    """os.replace raises _Crash on its `number`-th call from now (after doing nothing)."""
    real, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        calls.append((src, dst))
        if len(calls) == number:
            raise _Crash(f"crash before renaming {src} -> {dst}")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.determinism
def test_extract_interrupted_during_its_final_renames_resumes_to_the_same_arrays(tiny_backbone, tmp_path,
                                                                                  monkeypatch):
    from vl_adapters.data.cache import FeatureCache, extract_features

    def extract(out):
        return extract_features(ToyRetrievalDataset(5), tiny_backbone, out, sampler="uniform", num_frames=4,
                                batch_size=5, progress=False)

    recorded = _crash_on_replace(monkeypatch, 0)  # never crashes: lists every rename of a whole extraction
    extract(tmp_path / "whole")
    monkeypatch.undo()
    whole = FeatureCache(tmp_path / "whole")
    finals = [i + 1 for i, (_, dst) in enumerate(recorded) if str(dst).endswith(".npy")]
    assert len(finals) == 3, recorded  # frame_emb, frame_mask, patch_tokens
    for crash_at in finals[:2]:  # before the first and between two of the renames that finish it
        out = tmp_path / f"crash{crash_at}"
        calls = _crash_on_replace(monkeypatch, crash_at)
        with pytest.raises(_Crash):
            extract(out)
        assert ".npy" in str(calls[-1][1]), calls
        monkeypatch.undo()
        extract(out)
        resumed = FeatureCache(out)
        for name in ("frame_emb", "frame_mask", "patch_tokens"):
            assert np.array_equal(getattr(resumed, name), getattr(whole, name)), (crash_at, name)


@pytest.mark.determinism
def test_checkpoint_survives_a_crash_between_any_two_renames(tiny_backbone, tmp_path, monkeypatch):
    from vl_adapters.train.checkpoint import save_checkpoint

    trainer = _trainer(tiny_backbone, tmp_path / "run", epochs=1)
    target = tmp_path / "run" / "checkpoints" / "last"
    save = lambda: save_checkpoint(target, model=trainer.model, optimizer=trainer.optimizer,  # noqa: E731
                                   scheduler=trainer.scheduler, state={"step": 0})
    save()
    crash_at, kept = 1, 0
    while True:
        _crash_on_replace(monkeypatch, crash_at)
        try:
            save()
            finished = True
        except _Crash:
            finished = False
        monkeypatch.undo()
        loaded = vla.load_adapters(target, backbone=tiny_backbone)  # whatever instant the crash came at
        assert loaded.adapter_state_dict().keys() == trainer.model.adapter_state_dict().keys()
        kept += 1
        if finished:
            break
        crash_at += 1
    assert kept >= 10  # every file write and each directory rename was a crash point


@pytest.mark.determinism
def test_resumed_run_does_not_repeat_metrics_lines(tiny_backbone, tmp_path, monkeypatch):
    whole = _trainer(tiny_backbone, tmp_path / "whole", epochs=3)
    whole.fit()
    parts = _trainer(tiny_backbone, tmp_path / "parts", epochs=3)
    real_save, saves = Trainer._save, []

    def save(self, which):  # crash at the end of epoch 2, after its eval line, before its checkpoint
        saves.append(which)
        if which == "last" and saves.count("last") == 2:
            raise _Crash("killed")
        return real_save(self, which)

    monkeypatch.setattr(Trainer, "_save", save)
    with pytest.raises(_Crash):
        parts.fit()
    monkeypatch.undo()
    resumed = _trainer(tiny_backbone, tmp_path / "parts", epochs=3)
    resumed.resume()
    resumed.fit()
    strip = lambda records: [{k: v for k, v in r.items() if k != "time"} for r in records]  # noqa: E731
    assert strip(read_metrics_log(tmp_path / "parts")) == strip(read_metrics_log(tmp_path / "whole"))


# ---- 9. atomic files follow the umask --------------------------------------------------------------
def test_atomic_files_and_checkpoints_follow_the_umask(tiny_backbone, tmp_path):
    from vl_adapters.core.io import save_json
    from vl_adapters.train.checkpoint import save_checkpoint

    trainer = _trainer(tiny_backbone, tmp_path / "run", epochs=1)
    old = os.umask(0o022)
    try:
        save_json(tmp_path / "a.json", {"x": 1})
        save_checkpoint(tmp_path / "ckpt", model=trainer.model, optimizer=trainer.optimizer,
                        scheduler=trainer.scheduler, state={})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # mkstemp gave 0o600
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755  # mkdtemp gave 0o700
    assert (tmp_path / "ckpt" / "state.json").stat().st_mode & 0o777 == 0o644
    written = sorted((tmp_path / "ckpt").iterdir())
    assert {p.suffix for p in written} == {".json", ".safetensors"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: "0o644" for p in written}


# ---- 9. the command line: one clear line, exit 2; skipped videos and dropped rows reported -----------
def _jsonl_root(root, rows, *, bad=()):
    from videos import write_corrupt, write_video

    (root / "videos").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        name = f"v{i}.mp4"
        if i in bad:
            write_corrupt(root / "videos" / name)
        else:
            write_video(root / "videos" / name, num_frames=4, height=32, width=32)
    for split in ("train", "test"):
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")


GOOD_ROWS = [json.dumps({"video": f"v{i}.mp4", "text": f"clip number {i}"}) for i in range(4)]


def test_cli_data_and_config_errors_are_one_line_with_status_2(tmp_path, capsys):
    from vl_adapters.cli import main

    pytest.importorskip("av")
    root = tmp_path / "data"
    _jsonl_root(root, [*GOOD_ROWS[:2], '{"video": "v2.mp4", "text": ', GOOD_ROWS[3]])
    common = ["--backbone", "tiny", "--adapters", "temporal_transformer", "--device", "cpu", "--num-workers", "0",
              "--run-dir", str(tmp_path / "run")]
    config = tmp_path / "cfg.yaml"
    config.write_text("model:\n  adapters:\n    - type: temporal_transformer\n      layerz: 2\n")
    cases = [
        (["train", "--dataset", "jsonl", "--root", str(root), *common], rf"{root / 'train.jsonl'}:3: not valid JSON"),
        (["train", "--dataset", "jsonl", *common], r"data.root \(--root\) is not set"),
        (["train", "--config", str(config), "--root", str(root)], rf"{config}:4: .*unknown key\(s\) \['layerz'\]"),
        (["extract", "--dataset", "jsonl", "--root", str(tmp_path / "nowhere"), "--backbone", "tiny", "--out",
          str(tmp_path / "c")], "no such directory"),
    ]
    for argv, pattern in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert __import__("re").search(pattern, err), (pattern, err)
    from vl_adapters.data import AnnotationError

    for argv in (["--debug", *cases[0][0]], [*cases[0][0], "--debug"]):  # --debug: the exception itself
        with pytest.raises(AnnotationError, match="not valid JSON"):
            main(argv)


def test_cli_reports_skipped_videos_and_dropped_rows(tmp_path, capsys):
    from vl_adapters.cli import main

    pytest.importorskip("av")
    root = tmp_path / "data"
    _jsonl_root(root, [*GOOD_ROWS, '{"video": "v9.mp4"}'], bad=(1,))
    lenient = ["--set", "data.options={strict_annotations: false}"]
    assert main(["extract", "--dataset", "jsonl", "--root", str(root), "--backbone", "tiny", "--num-frames", "2",
                 "--out", str(tmp_path / "cache" / "train"), "--device", "cpu", "--option",
                 "strict_annotations=false"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 video(s) (1 corrupt)" in err and "dropped 1 malformed annotation row" in err
    skipped = json.loads((tmp_path / "cache" / "train" / "skipped.json").read_text())
    assert skipped["skipped_videos"]["by_reason"] == {"corrupt": ["v1"]}
    run = tmp_path / "run"
    assert main(["train", "--dataset", "jsonl", "--root", str(root), "--backbone", "tiny", "--adapters",
                 "temporal_transformer", "--device", "cpu", "--num-workers", "0", "--num-frames", "2", "--epochs",
                 "1", "--batch-size", "2", "--run-dir", str(run), "--no-progress", *lenient]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["skipped_videos"]["by_reason"] == {"corrupt": ["v1"]}
    assert report["dropped_annotation_rows"]["train"]["count"] == 1
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--checkpoint", "last", "--device", "cpu",
                 "--output", str(tmp_path / "m.json")]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 video(s) (1 corrupt)" in err
    beside = json.loads((tmp_path / "m.skipped.json").read_text())
    assert beside["skipped_videos"]["by_reason"] == {"corrupt": ["v1"]}
    assert beside["dropped_annotation_rows"]["count"] == 1


# ---- 9/10. imports: lazy, silent, and model code never imports the command line ---------------------
def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": ""}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_is_lazy_silent_and_model_code_does_not_import_the_cli():
    heavy = ["open_clip", "transformers", "torch_geometric", "networkx", "decord", "av", "peft", "matplotlib"]
    done = _python(
        "import sys, json\n"
        "import vl_adapters as vla\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "import vl_adapters.adapters.tem_adapter.convert, vl_adapters.backbones.pretrain, vl_adapters.bench.run\n"
        "import vl_adapters.train.cli\n"
        "print(json.dumps({'heavy': loaded, 'cli': 'vl_adapters.cli' in sys.modules,\n"
        "                  'adapters': vla.list_adapters()}))\n")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no FutureWarning from an eager torch_geometric import
    found = json.loads(done.stdout)
    assert found["heavy"] == [] and not found["cli"]
    assert {"finsta", "lora", "tem_adapter", "temporal_transformer"} <= set(found["adapters"])


def test_commands_print_no_warnings(tmp_path):
    done = _python("import sys\nfrom vl_adapters.cli import main\n"
                   "sys.exit(main(['list', '-v']) or main(['train', '--help']))")
    assert done.returncode == 0, done.stderr
    assert "finsta" in done.stdout and "stage=dual" in done.stdout
    assert done.stderr == ""


def test_every_subcommand_module_registers_itself():
    from vl_adapters.cli import SUBCOMMAND_MODULES, build_parser

    choices = build_parser()._subparsers._group_actions[0].choices
    assert {"list", "train", "eval", "extract", "bench", "pretrain-backbone", "convert-tem-adapter"} <= set(choices)
    for name in SUBCOMMAND_MODULES:  # model code does not know the command line
        module = __import__(name, fromlist=["register"])
        assert callable(module.register), name
        imported = [node for node in ast.walk(ast.parse(Path(module.__file__).read_text()))
                    if isinstance(node, ast.ImportFrom) and node.module in ("cli", "vl_adapters.cli")
                    and (node.level > 1 or node.module == "vl_adapters.cli")]
        assert not imported, name


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # finsta's torch_geometric, imported here directly
def test_every_built_in_adapter_module_is_in_the_lazy_table():
    """A new adapter folder must be listed in vl_adapters/adapters/__init__.py BUILTIN (name -> module),
    or `import vl_adapters` would never register it."""
    import importlib
    import pkgutil

    import vl_adapters.adapters as package
    from vl_adapters.core.registry import ADAPTERS

    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            importlib.import_module(f"{package.__name__}.{info.name}")
    built_in = {name for name in ADAPTERS._items if ADAPTERS._items[name].__module__.startswith(package.__name__)}
    assert built_in == set(package.BUILTIN)
    for name, (module, _) in package.BUILTIN.items():
        assert ADAPTERS.get(name).__module__.startswith(f"{package.__name__}.{module}"), name
