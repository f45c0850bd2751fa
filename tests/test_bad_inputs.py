"""Every row of docs/bad_inputs.md is run here: a bad input, and exactly what the user sees.

The test fails when an outcome stops matching its row's expectation, or when the document is stale.
Regenerate the document with:  VLA_UPDATE_DOCS=1 python -m pytest tests/test_bad_inputs.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import vl_adapters as vla

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"


@dataclass
class Row:
    given: str  # the bad input, as a user would describe it
    run: Callable  # run(env) with env = the Env below
    expect: str  # a regex the outcome must match


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.backbone = vla.load_backbone("tiny", device="cpu")
        self.model = vla.wrap(self.backbone, ["temporal_transformer"])
        generator = torch.Generator().manual_seed(0)
        self.frames = torch.randn(2, 3, 3, 32, 32, generator=generator)  # normalised, 32x32: tiny's size

    def cli(self, *argv: str) -> str:
        from vl_adapters.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(list(argv))
        return f"exit {code}: {err.getvalue().strip()}"

    def jsonl(self, rows: list[str], *, corrupt: bool = False) -> Path:
        from videos import write_corrupt, write_video

        root = self.tmp / f"data{len(list(self.tmp.glob('data*')))}"
        (root / "videos").mkdir(parents=True)
        write_video(root / "videos" / "a.mp4", num_frames=4, height=32, width=32)
        write_video(root / "videos" / "b.mp4", num_frames=4, height=32, width=32)
        (write_corrupt if corrupt else write_video)(root / "videos" / "c.mp4")
        for split in ("train", "test"):
            (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
        return root


def _row(video: str, text: str) -> str:
    return json.dumps({"video": video, "text": text})


GOOD = [_row("a.mp4", "a red clip"), _row("b.mp4", "a blue clip"), _row("c.mp4", "a green clip")]
TRAIN = ["--backbone", "tiny", "--adapters", "temporal_transformer", "--device", "cpu", "--num-workers", "0",
         "--num-frames", "2", "--epochs", "1", "--batch-size", "3", "--no-progress"]


def _nan_frames(env):
    frames = env.frames.clone()
    frames[0, 0, 0, 0, 0] = float("nan")
    env.model.similarity(["a clip"], frames)


def _nan_features(env):
    video = env.backbone.encode_video(env.frames)
    env.model.similarity(["a clip"], video.replace(frame_emb=torch.full_like(video.frame_emb, float("nan"))))


def _mismatch(env):
    from safetensors.torch import save_file

    trained_on = env.tmp / "other.safetensors"
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in env.backbone.model.state_dict().items()},
              str(trained_on))
    model = vla.wrap(vla.load_backbone("tiny", pretrained=str(trained_on), device="cpu"), ["temporal_transformer"])
    model.save_adapters(env.tmp / "saved")
    vla.load_adapters(env.tmp / "saved", backbone=env.backbone)


def _pickled(env):
    env.model.save_pretrained(env.tmp / "shared")
    (env.tmp / "shared" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    vla.from_pretrained(env.tmp / "shared")


def _bf16(env):
    model = vla.wrap(vla.load_backbone("tiny", device="cpu"), ["temporal_transformer"]).to(torch.bfloat16)
    scores = model.similarity(["a clip"], env.frames)
    return f"works: scores {scores.dtype}, adapters {next(model.adapters.parameters()).dtype}"


def _weights_file(env, kind: str) -> str:
    """A weights file the tiny backbone cannot load: pickled (.pt) or of another architecture."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from safetensors.torch import save_file

    if kind == "pt":
        torch.save(env.backbone.model.state_dict(), env.tmp / "weights.pt")
        return str(env.tmp / "weights.pt")
    other = CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(image_size=32, patch_size=16, width=32, layers=1, head_width=16),
                 text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(env.tmp / "other_arch.safetensors"))
    return str(env.tmp / "other_arch.safetensors")


def _offline(env):
    """A tagged open_clip download on a machine without a network (no cached weights)."""
    import socket
    from unittest import mock

    from huggingface_hub import constants

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    with mock.patch.object(constants, "HF_HUB_OFFLINE", False), \
            mock.patch.object(constants, "HF_HUB_CACHE", str(env.tmp / "hub")), \
            mock.patch.object(socket, "create_connection", unreachable), mock.patch.dict(os.environ, {"https_proxy": ""}):
        return env.cli("extract", "--dataset", "jsonl", "--root", str(env.jsonl(GOOD)), "--out", str(env.tmp / "c2"),
                       "--backbone", "open_clip:ViT-B-32", "--pretrained", "openai")


def _test_videos_elsewhere(env):
    """Training rows that name their files right, test rows that name them under an extra "videos/"."""
    root = env.jsonl(GOOD)
    (root / "test.jsonl").write_text("\n".join(_row(f"videos/{v}.mp4", "a clip") for v in "abc") + "\n")
    return env.cli("train", "--dataset", "jsonl", "--root", str(root), "--run-dir", str(env.tmp / "r6"), *TRAIN)


def _nan_metrics(env):
    from vl_adapters.tasks.metrics import retrieval_metrics

    return f"R@1 = {retrieval_metrics(torch.full((3, 3), float('nan')))['t2v_R@1']}"


ROWS = [
    # frames and masks
    Row("float frames of another size than the backbone's (64x64 for a 32x32 model)",
        lambda e: e.model.similarity(["a clip"], torch.randn(1, 2, 3, 64, 64)), r"FeatureShapeError: .*must already be 32x32"),
    Row("int64 frames", lambda e: e.model.similarity(["a clip"], torch.randint(0, 255, (1, 2, 3, 32, 32))),
        r"FeatureShapeError: .*dtype torch.int64.*expected uint8"),
    Row("bool frames", lambda e: e.model.similarity(["a clip"], torch.ones(1, 2, 3, 32, 32, dtype=torch.bool)),
        r"FeatureShapeError: .*dtype torch.bool"),
    Row("float frames holding 0-255 pixel values (not normalised)",
        lambda e: e.model.similarity(["a clip"], torch.randint(0, 255, (1, 2, 3, 32, 32)).float()),
        r"FeatureShapeError: .*0-255 pixel values\?"),
    Row("float frames holding 0-1 pixel values (scaled, never normalised)",
        lambda e: e.model.similarity(["a clip"], torch.randint(0, 255, (1, 2, 3, 32, 32)).float() / 255),
        r"FeatureShapeError: .*scaled to \[0, 1\] but not normalised"),
    Row("frames as a numpy array", lambda e: e.model.similarity(["a clip"], e.frames.numpy()),
        r"TypeError: .*one torch.Tensor \[B, T, 3, H, W\].*numpy.ndarray; convert .*torch.from_numpy"),
    Row("frames as a list of tensors (one per video)", lambda e: e.model.similarity(["a clip"], list(e.frames)),
        r"TypeError: .*a list of 2 item\(s\); stack .*torch.stack"),
    Row("frames without the time axis ([B, 3, H, W])", lambda e: e.model.similarity(["a clip"], e.frames[:, 0]),
        r"FeatureShapeError: .*expected shape \[B, T, 3, H, W\]"),
    Row("frames holding NaN", _nan_frames, r"RuntimeWarning: .*video\(s\) \[0\] of the 2 given hold NaN"),
    Row("a frame mask whose row is all False (a video with no real frame)",
        lambda e: e.model.similarity(["a clip"], e.frames, frame_mask=torch.tensor([[True] * 3, [False] * 3])),
        r"FeatureShapeError: .*video\(s\) \[1\] have no real frame"),
    Row("zero videos", lambda e: e.model.similarity(["a clip"], e.frames[:0]),
        r"FeatureShapeError: .*at least one video"),
    # texts
    Row("an empty list of texts (with a cross adapter)",
        lambda e: vla.wrap(e.backbone, ["trajectory_word"]).similarity([], e.frames),
        r"FeatureShapeError: .*at least one text"),
    Row("token ids longer than the context length",
        lambda e: e.model.similarity(torch.ones(1, 200, dtype=torch.long), e.frames),
        r"FeatureShapeError: .*at most 32 tokens"),
    Row("a text longer than the context length", lambda e: e.model.similarity(["word " * 60], e.frames),
        r"RuntimeWarning: .*cut to it"),
    # cached features
    Row("cached features of another width (another backbone's)",
        lambda e: e.model.similarity(["a clip"], vla.VideoFeatures(frame_emb=torch.randn(1, 2, 32),
                                                                    frame_mask=torch.ones(1, 2, dtype=torch.bool))),
        r"FeatureShapeError: .*expected width 64"),
    Row("cached features holding NaN", _nan_features, r"RuntimeWarning: .*video\(s\) \[0, 1\] of the 2 given hold NaN"),
    # training and scoring
    Row("a retrieval batch of one pair", lambda e: e.model({"video": e.frames[:1], "text": ["a clip"]}),
        r"RuntimeWarning: .*no negatives"),
    Row("a score matrix of NaN given to retrieval_metrics", _nan_metrics, r"RuntimeWarning: .*rank last.*R@1 = 0"),
    Row("`model.to(torch.bfloat16)` then `similarity`", _bf16, r"works: scores torch.float32, adapters torch.float32"),
    # adapter configs and names
    Row("`heads=0`", lambda e: vla.wrap(e.backbone, [{"type": "temporal_transformer", "heads": 0}]),
        r"ConfigError: TemporalTransformerConfig.heads must be >= 1"),
    Row("`layers=0`", lambda e: vla.wrap(e.backbone, [{"type": "temporal_transformer", "layers": 0}]),
        r"ConfigError: .*layers must be >= 1"),
    Row("`max_frames=0`", lambda e: vla.wrap(e.backbone, [{"type": "temporal_transformer", "max_frames": 0}]),
        r"ConfigError: .*max_frames must be >= 1"),
    Row("an unknown adapter name", lambda e: vla.wrap(e.backbone, ["temporal_transformr"]),
        r"RegistryError: .*Did you mean 'temporal_transformer'"),
    Row("an unknown adapter key", lambda e: vla.wrap(e.backbone, [{"type": "temporal_transformer", "layerz": 2}]),
        r"ConfigError: unknown key\(s\) \['layerz'\]"),
    Row("saved adapters loaded onto other backbone weights", _mismatch,
        r"BackboneMismatchError: .*fingerprint .* allow_backbone_mismatch"),
    Row("a model folder (or Hub repo) holding a pickle file", _pickled,
        r"PickleRefusedError: .*\['pytorch_model.bin'\]; the library never unpickles"),
    # the command line
    Row("`train` on a JSONL file with a malformed line",
        lambda e: e.cli("train", "--dataset", "jsonl", "--root", str(e.jsonl([GOOD[0], '{"video": "b.mp4",', GOOD[2]])),
                        "--run-dir", str(e.tmp / "r1"), *TRAIN),
        r"exit 2: vl-adapters train: .*train.jsonl:2: not valid JSON"),
    Row("`train` without `--root`", lambda e: e.cli("train", "--dataset", "jsonl", "--run-dir", str(e.tmp / "r2"), *TRAIN),
        r"exit 2: .*data.root \(--root\) is not set"),
    Row("`train --config` whose adapter has an unknown key",
        lambda e: (e.tmp / "cfg.yaml").write_text("model:\n  adapters:\n    - type: temporal_transformer\n"
                                                  "      layerz: 2\n") and e.cli("train", "--config", str(e.tmp / "cfg.yaml")),
        r"exit 2: .*cfg.yaml:4: model.adapters.0.layerz: unknown key"),
    Row("`train` with an unknown dataset name",
        lambda e: e.cli("train", "--dataset", "msrvt", "--root", str(e.tmp), "--run-dir", str(e.tmp / "r3"), *TRAIN),
        r"exit 2: .*unknown dataset 'msrvt'. Did you mean 'msrvtt'"),
    Row("`extract --root` naming no directory",
        lambda e: e.cli("extract", "--dataset", "jsonl", "--root", str(e.tmp / "nowhere"), "--backbone", "tiny",
                        "--out", str(e.tmp / "c")), r"exit 2: .*no such directory"),
    Row("`search --videos` naming a folder without video files",
        lambda e: e.model.save_pretrained(e.tmp / "searcher") and e.cli(
            "search", "--model", str(e.tmp / "searcher"), "--videos", str(e.tmp / "searcher"), "--device", "cpu",
            "--index", str(e.tmp / "index"), "a clip"),
        r"exit 2: vl-adapters search: .*searcher: no video files \(expected names ending in .mp4"),
    Row("`extract --backbone` naming a tiny backbone that does not exist",
        lambda e: e.cli("extract", "--dataset", "jsonl", "--root", str(e.jsonl(GOOD)), "--out", str(e.tmp / "c1"),
                        "--backbone", "tiny:synthetik"),
        r"exit 2: .*unknown tiny backbone 'tiny:synthetik'. Did you mean 'tiny:synthetic'"),
    Row("`train --pretrained` a pickled .pt file for the tiny backbone",
        lambda e: e.cli("train", "--dataset", "jsonl", "--root", str(e.jsonl(GOOD)), "--run-dir", str(e.tmp / "r7"),
                        *TRAIN, "--pretrained", _weights_file(e, "pt")),
        r"exit 2: .*weights.pt is not a safetensors file"),
    Row("`train --pretrained` weights of another architecture",
        lambda e: e.cli("train", "--dataset", "jsonl", "--root", str(e.jsonl(GOOD)), "--run-dir", str(e.tmp / "r8"),
                        *TRAIN, "--pretrained", _weights_file(e, "arch")),
        r"exit 2: .*holds weights of another architecture: \d+ tensor\(s\) of another shape"),
    Row("`--pretrained openai` on a machine without a network", _offline,
        r"exit 2: .*pretrained='openai' downloads its weights from the Hugging Face hub .*cannot be reached"),
    Row("`train` on a test split whose rows name `videos/x.mp4` (they resolve under `root/videos/`)",
        _test_videos_elsewhere,
        r"exit 2: .*all 3 video\(s\) of the split to evaluate were skipped \(3 missing file\), so nothing was left "
        r"to evaluate .*resolve under .*/videos/"),
    Row("a second `train` into a run directory that already holds a run",
        lambda e: [e.cli("train", "--dataset", "jsonl", "--root", str(e.jsonl(GOOD)), "--run-dir", str(e.tmp / "r9"),
                         *TRAIN) for _ in range(2)][-1],
        r"exit 2: .*already holds a run \(checkpoints, metrics.jsonl, .*pass --resume to continue it, --overwrite"),
    Row("`train --lr 1e10 --set nonfinite_loss=skip` (most steps skipped: the run diverged)",
        lambda e: e.cli("train", "--dataset", "jsonl", "--root", str(e.jsonl(GOOD)), "--run-dir", str(e.tmp / "r10"),
                        *TRAIN, "--lr", "1e10", "--set", "nonfinite_loss=skip", "--epochs", "4", "--set", "eval.every_epoch=false"),
        r"exit 1: .*skipped \d+ of its \d+ optimiser steps .*it diverged"),
    Row("`train --lr 1e30` (the loss goes NaN)",
        lambda e: e.cli("train", "--dataset", "jsonl", "--root", str(e.jsonl(GOOD)), "--run-dir", str(e.tmp / "r4"),
                        *TRAIN, "--lr", "1e30", "--set", "optim.grad_clip=0", "--epochs", "2"),
        r"exit 1: .*non-finite\) at step"),
    Row("`train` on data with a corrupt video and a row missing its text (lenient annotations)",
        lambda e: e.cli("train", "--dataset", "jsonl", "--root", str(e.jsonl([*GOOD, '{"video": "a.mp4"}'], corrupt=True)),
                        "--run-dir", str(e.tmp / "r5"), "--set", "data.options={strict_annotations: false}", *TRAIN),
        r"exit 0: .*skipped 1 video\(s\) \(1 corrupt\).*dropped 2 malformed annotation row"),
]


def outcome(row: Row, env: Env) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = row.run(env)
        except Exception as error:  # what the user sees is the exception's type and message
            return f"{type(error).__name__}: {error}"
    shown = [f"{w.category.__name__}: {w.message}" for w in caught if w.category is not FutureWarning]
    return "; ".join([*shown, *([result] if isinstance(result, str) else [])]) or "works"


def render(results: list[tuple[Row, str]], tmp: Path) -> str:
    lines = ["# Bad inputs and what the user sees", "",
             "Generated by `tests/test_bad_inputs.py`, which runs every row (the test fails if this file is stale;",
             "regenerate it with `VLA_UPDATE_DOCS=1 python -m pytest tests/test_bad_inputs.py`). Python calls use the",
             "tiny backbone (32x32 frames, 32-token context); command lines use `vl-adapters`. A command that",
             "fails on its input prints one line and exits with status 2 (`--debug` shows the traceback).", "",
             "| input | what the user sees |", "|---|---|"]
    for row, seen in results:
        seen = re.sub(r"\s+", " ", seen.replace(str(tmp), "<tmp>")).strip()
        seen = re.sub(r"[0-9a-f]{16}", "<fingerprint>", seen)
        lines.append(f"| {row.given} | `{seen.replace('|', '/').replace('`', '')}` |")
    return "\n".join(lines) + "\n"


def test_every_bad_input_row_and_the_doc_is_current(tmp_path, monkeypatch):
    pytest.importorskip("av")
    monkeypatch.chdir(tmp_path)
    env = Env(tmp_path)
    results, wrong = [], []
    for row in ROWS:
        seen = outcome(row, env)
        results.append((row, seen))
        if not re.search(row.expect, seen, flags=re.S):
            wrong.append(f"{row.given}: expected /{row.expect}/, saw {seen!r}")
    assert not wrong, "\n".join(wrong)
    text = render(results, tmp_path)
    if os.environ.get("VLA_UPDATE_DOCS"):
        DOC.write_text(text)
    assert DOC.exists() and DOC.read_text() == text, (
        "docs/bad_inputs.md is stale: regenerate it with VLA_UPDATE_DOCS=1 python -m pytest tests/test_bad_inputs.py")
