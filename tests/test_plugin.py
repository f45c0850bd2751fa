"""The example plugin package (examples/plugin) installs and registers its aligner through the
`vl_adapters.adapters` entry-point group, with no import by hand."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    pytest.importorskip("setuptools")
    target = tmp_path_factory.mktemp("plugin_site")
    build = tmp_path_factory.mktemp("plugin_src")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    subprocess.run(["cp", "-r", str(PLUGIN), str(build / "plugin")], check=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--target", str(target), str(build / "plugin")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def run(code: str, env) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_plugin_is_listed_without_import(plugin_env):
    out = run("from vl_adapters.cli import main; raise SystemExit(main(['list', '-v']))", plugin_env)
    line = next(line for line in out.splitlines() if line.strip().startswith("gated_mean"))
    assert "stage=video" in line
    datasets = next(line for line in out.splitlines() if line.startswith("dataset: "))
    assert {"didemo", "activitynet", "lsmdc", "nextqa", "jsonl"} <= set(datasets[len("dataset: "):].split(", "))
    # Without the plugin on the path it is not there: the listing above came from the entry point.
    clean = {k: v for k, v in plugin_env.items() if k != "PYTHONPATH"}
    assert "gated_mean" not in run("from vl_adapters.cli import main; main(['list'])", clean)


def test_plugin_aligner_is_trainable(plugin_env):
    out = run(
        """
        import torch
        import vl_adapters as vla

        backbone = vla.load_backbone("tiny", device="cpu", pretrained="")
        model = vla.wrap(backbone, [{"type": "gated_mean", "hidden": 8}])
        video = torch.randn(4, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        texts = ["one", "two red", "three blue", "four green"]
        plain = vla.wrap(backbone, []).similarity(texts, video)
        assert torch.allclose(model.similarity(texts, video), plain, atol=1e-6)
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
        model.train()
        for _ in range(3):
            loss = model({"video": video, "text": texts}).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        gate = model.adapters[0].gate.item()
        print("module", type(model.adapters[0]).__module__, "gate", gate)
        assert gate != 0.0
        """,
        plugin_env,
    )
    assert "module vla_plugin_example.aligner" in out
