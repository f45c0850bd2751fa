"""`vl-adapters bench`: the grid from the registry, the shuffle test, reports, and a miniature end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

from vl_adapters.bench.grid import NAMED_COMBINATION, build_grid, registered_adapters
from vl_adapters.bench.run import shuffled
from vl_adapters.core.features import VideoFeatures
from vl_adapters.core.pooling import video_embedding


def test_grid_is_built_from_the_registry():
    registry = registered_adapters()
    rows, notes = build_grid()
    names = [r.name for r in rows]
    assert names[:2] == ["mean (zero-shot)", "mean + temperature"] and not rows[0].train
    for name, stage in registry.items():
        assert (name in names) == (stage != "backbone")
    if all(n in registry for n in NAMED_COMBINATION):
        assert "+".join(NAMED_COMBINATION) in names
    assert all("left out" in n for n in notes)
    rows, _ = build_grid(["temporal_transformer"])
    assert [r.name for r in rows] == ["mean (zero-shot)", "mean + temperature", "temporal_transformer"]
    with pytest.raises(ValueError, match="not registered"):
        build_grid(["no_such_adapter"])


def test_shuffle_permutes_frames_and_leaves_mean_pooling_unchanged():
    gen = torch.Generator().manual_seed(0)
    video = VideoFeatures(frame_emb=torch.randn(3, 6, 8, generator=gen), frame_mask=torch.ones(3, 6, dtype=torch.bool),
                          patch_tokens=torch.randn(3, 6, 4, 5, generator=gen), grid=(2, 2))
    mixed = shuffled(video, seed=1)
    assert not torch.equal(mixed.frame_emb, video.frame_emb)
    assert torch.allclose(video_embedding(mixed), video_embedding(video), atol=1e-6)
    # each frame keeps its own patch tokens
    for b in range(3):
        for t in range(6):
            src = (video.frame_emb[b] == mixed.frame_emb[b, t]).all(-1).nonzero().item()
            assert torch.equal(mixed.patch_tokens[b, t], video.patch_tokens[b, src])


def test_bench_runs_end_to_end_on_a_miniature_grid(tmp_path, capsys):
    from vl_adapters.cli import main

    out = tmp_path / "results"
    assert main(["bench", "--tiny", "--adapters", "temporal_transformer", "--out", str(out),
                 "--data-dir", str(tmp_path / "data")]) == 0
    table = capsys.readouterr().out
    assert "| temporal_transformer |" in table and "| mean (zero-shot) |" in table
    data = json.loads((out / "results.json").read_text())
    rows = {r["name"]: r["runs"][0] for r in data["results"]}
    assert set(rows) == {"mean (zero-shot)", "mean + temperature", "temporal_transformer"}
    for metrics in rows.values():
        for key in ("static/t2v_R1", "temporal/t2v_R1", "temporal/v2t_R5", "mc/static", "mc/temporal"):
            assert 0.0 <= metrics[key] <= 1.0
    # mean pooling is order-blind: shuffling frames changes nothing
    assert rows["mean (zero-shot)"]["shuffle_drop/temporal_t2v_R1"] == pytest.approx(0.0, abs=1e-9)
    assert rows["mean (zero-shot)"]["trainable_params"] == 0 < rows["mean + temperature"]["trainable_params"]
    assert rows["temporal_transformer"]["trainable_params"] > rows["mean + temperature"]["trainable_params"]
    assert rows["temporal_transformer"]["train_seconds"] > 0
    assert (out / "results.csv").read_text().startswith("model,seed,")
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_perf_suite_writes_a_table_and_json(tmp_path):
    from vl_adapters.bench.perf import run_perf

    result = run_perf(tmp_path, adapters=["temporal_transformer"], tiny=True, log=lambda *_: None)
    assert result["backbone_clips_per_s"] > 0
    names = [r["name"] for r in result["rows"]]
    assert names == ["mean + temperature", "temporal_transformer"]
    for row in result["rows"]:
        assert row["cached_step_ms"] > 0 and row["uncached_step_ms"] > 0 and row["cached_peak_mem_mb"] > 0
    assert json.loads((tmp_path / "perf.json").read_text())["rows"] == result["rows"]
    assert "| temporal_transformer |" in (tmp_path / "perf.md").read_text()
