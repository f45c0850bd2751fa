"""What a run shows while it trains: one line per epoch on stdout (a file, not a terminal), curves.png,
TensorBoard when asked; a missing matplotlib or tensorboard said once, in one line."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _toy_data import ToyRetrievalDataset

import vl_adapters as vla
from vl_adapters.core.optional import MissingPackageError
from vl_adapters.train import run_log
from vl_adapters.train.config import load_config
from vl_adapters.train.trainer import Trainer, read_metrics_log

ADAPTER = {"type": "temporal_transformer", "layers": 1, "heads": 2}
REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^epoch (\d+)/3  step (\d+)  loss (\d+\.\d{4})  t2v_R@1 [\d.]+  .*v2t_MnR [\d.]+  "
                        r"time \d+\.\ds$")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def _jsonl_dataset(root: Path, count: int = 6) -> None:
    from videos import write_video

    rows = []
    for i in range(count):
        write_video(root / "videos" / f"clip{i}.mp4", num_frames=6, height=32, width=40)
        rows.append(json.dumps({"video": f"clip{i}.mp4", "text": f"clip number {i} in colour {i % 3}"}))
    for split in ("train", "test"):
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
@pytest.mark.video
def test_train_piped_to_a_file_prints_one_line_per_epoch_and_draws_curves(tmp_path):
    _jsonl_dataset(tmp_path / "data")
    run = tmp_path / "run"
    out = tmp_path / "train.out"
    with open(out, "w") as stdout:  # a file: not a terminal, nothing line-buffered by default
        result = subprocess.run(
            [sys.executable, "-m", "vl_adapters.cli", "train", "--dataset", "jsonl", "--root", str(tmp_path / "data"),
             "--backbone", "tiny", "--adapters", "temporal_transformer", "--epochs", "3", "--batch-size", "3",
             "--num-frames", "4", "--num-workers", "0", "--device", "cpu", "--run-dir", str(run), "--tensorboard",
             "--set", "log_every=1"],
            stdout=stdout, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    epochs = [EPOCH_LINE.match(line) for line in lines[:-1]]
    assert all(epochs) and [int(m.group(1)) for m in epochs] == [1, 2, 3], lines
    assert [int(m.group(2)) for m in epochs] == [2, 4, 6]  # 6 pairs in batches of 3
    assert json.loads(lines[-1])["step"] == 6
    width, height = _png_size(run / "curves.png")
    assert width > 3 * height  # three panels side by side: loss, recalls, ranks
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("eval/t2v_R@1")] == [2, 4, 6]


def _trainer(tiny_backbone, run_dir, **overrides) -> Trainer:
    config = load_config(overrides={"run_dir": str(run_dir), "epochs": 2, "progress": False, "log_every": 1,
                                    "data.batch_size": 4, "data.num_workers": 0, "model.adapters": [ADAPTER],
                                    **overrides})
    torch.manual_seed(0)
    return Trainer(config, model=vla.wrap(tiny_backbone, [ADAPTER], task="retrieval"),
                   train_dataset=ToyRetrievalDataset(8), eval_dataset=ToyRetrievalDataset(6, seed=1))


def test_the_epoch_loss_is_the_mean_of_its_steps_and_curves_are_drawn_at_the_end(tiny_backbone, tmp_path, capsys):
    trainer = _trainer(tiny_backbone, tmp_path / "run")
    trainer.fit()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    losses = [r["loss"] for r in read_metrics_log(tmp_path / "run") if r["kind"] == "train"]
    assert [float(re.search(r"loss (\S+)", line).group(1)) for line in printed] == \
        [round(sum(losses[:2]) / 2, 4), round(sum(losses[2:]) / 2, 4)]  # 8 pairs in batches of 4 per epoch
    assert _png_size(tmp_path / "run" / "curves.png")[0] > 0


def test_without_matplotlib_the_run_notes_it_once_and_goes_on(tiny_backbone, tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.ticker"):  # as if never installed
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(run_log, "_matplotlib_noted", False)
    monkeypatch.setattr(run_log, "CURVES_EVERY_S", 0.0)  # would draw after every epoch
    trainer = _trainer(tiny_backbone, tmp_path / "run")
    with pytest.warns(RuntimeWarning, match=r"matplotlib is not installed, so curves\.png is not drawn") as notes:
        trainer.fit()
    assert len([n for n in notes if "matplotlib" in str(n.message)]) == 1
    assert trainer.state["step"] == 4 and not (tmp_path / "run" / "curves.png").exists()


def test_tensorboard_without_the_package_stops_before_training(tiny_backbone, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingPackageError, match=r"tensorboard: true \(--tensorboard\) needs the tensorboard "
                                                  r"package.*pip install 'vl-adapters\[tensorboard\]'"):
        _trainer(tiny_backbone, tmp_path / "run", tensorboard=True)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
