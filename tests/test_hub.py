"""save_pretrained / from_pretrained / push_to_hub: a folder, a Hub repo read from huggingface_hub's own
cache with HF_HUB_OFFLINE=1, the model card, pickles refused, the upload made by huggingface_hub."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
import torch
from _toy_data import ToyRetrievalDataset

import vl_adapters as vla
from vl_adapters.core.hub import CARD_FILE, PickleRefusedError
from vl_adapters.core.optional import MissingPackageError
from vl_adapters.train.config import load_config
from vl_adapters.train.trainer import Trainer

ADAPTER = {"type": "temporal_transformer", "layers": 1, "heads": 2}
FILES = {"adapters.safetensors", "adapters.json", CARD_FILE}


@pytest.fixture
def trained(tiny_backbone):
    """A retrieval model whose adapters are away from their identity initialisation (seeded)."""
    model = vla.wrap(tiny_backbone, [ADAPTER], task="retrieval")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    return model.eval()


def _scores(model, frames, texts):
    video, mask = frames
    return model.similarity(texts, video, frame_mask=mask)


def _fill_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Put `folder`'s files into a huggingface_hub cache as a download of `repo_id` leaves them: blobs by
    hash, snapshots/<commit>/ holding links to them, refs/main naming the commit."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for file in sorted(folder.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty hub cache, offline: huggingface_hub reads its settings at import, so they are patched too."""
    from huggingface_hub import constants

    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_round_trip_through_a_folder(trained, tiny_backbone, frames, texts, tmp_path):
    before = _scores(trained, frames, texts)
    trained.save_pretrained(tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == FILES
    loaded = vla.from_pretrained(tmp_path / "model")  # the backbone named in adapters.json, loaded again
    assert not loaded.training and not any(m.training for m in loaded.modules())
    assert loaded.backbone is not tiny_backbone and loaded.backbone.fingerprint() == tiny_backbone.fingerprint()
    assert torch.equal(_scores(loaded, frames, texts), before)
    fresh = vla.wrap(tiny_backbone, [ADAPTER], task="retrieval").eval()
    assert not torch.equal(_scores(fresh, frames, texts), before)  # the weights loaded are what makes them equal
    assert torch.equal(_scores(vla.load_adapters(tmp_path / "model"), frames, texts), before)  # still readable


def test_round_trip_through_a_repo_id_in_the_offline_hub_cache(trained, frames, texts, tmp_path, offline_hub):
    from huggingface_hub import scan_cache_dir

    trained.save_pretrained(tmp_path / "model")
    _fill_hub_cache(offline_hub, "someone/tiny-temporal", tmp_path / "model")
    seen = {repo.repo_id: {f.file_name for rev in repo.revisions for f in rev.files}
            for repo in scan_cache_dir(offline_hub).repos}
    assert seen == {"someone/tiny-temporal": FILES}  # huggingface_hub reads the cache as its own
    loaded = vla.from_pretrained("someone/tiny-temporal")
    assert not loaded.training
    assert torch.equal(_scores(loaded, frames, texts), _scores(trained, frames, texts))
    with pytest.raises(FileNotFoundError, match="someone/absent.*could not be read"):
        vla.from_pretrained("someone/absent")  # offline and not cached: one line, no download attempted


def test_a_pickle_in_the_folder_or_repo_is_refused(trained, tmp_path, offline_hub):
    trained.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # pickle protocol 4 of the int 1
    with pytest.raises(PickleRefusedError, match=r"pytorch_model\.bin.*never unpickles"):
        vla.from_pretrained(tmp_path / "model")
    _fill_hub_cache(offline_hub, "someone/with-pickle", tmp_path / "model")
    with pytest.raises(PickleRefusedError, match=r"someone/with-pickle: holds pickle file\(s\) \['pytorch_model\.bin'\]"):
        vla.from_pretrained("someone/with-pickle")


def test_the_model_card_names_backbone_adapters_dataset_config_and_metrics(tiny_backbone, tmp_path):
    config = load_config(overrides={"run_dir": str(tmp_path / "run"), "epochs": 1, "progress": False,
                                    "data.batch_size": 4, "data.num_workers": 0, "data.root": "/private/data",
                                    "model.adapters": [ADAPTER]})
    trainer = Trainer(config, model=vla.wrap(tiny_backbone, [ADAPTER], task="retrieval"),
                      train_dataset=ToyRetrievalDataset(8), eval_dataset=ToyRetrievalDataset(6, seed=1))
    metrics = trainer.fit()
    trainer.model.save_pretrained(tmp_path / "model", run=tmp_path / "run")
    card = (tmp_path / "model" / CARD_FILE).read_text()
    assert card.startswith("---\nlibrary_name: vl-adapters\n")
    assert "`tiny:tiny-clip`" in card and tiny_backbone.fingerprint() in card  # backbone spec and weight fingerprint
    assert "| temporal_transformer | video |" in card and '"layers": 1' in card  # adapter and its config
    assert f"| t2v_R@1 | {metrics['t2v_R@1']:.4g} |" in card and "| v2t_MnR |" in card
    assert "- name: jsonl" in card and "epochs: 1" in card  # dataset and the training config
    assert "/private/data" not in card and str(tmp_path) not in card.split("## Use")[0]  # no local paths
    # The record travels with the folder: loaded and saved again, the card keeps it.
    vla.from_pretrained(tmp_path / "model").save_pretrained(tmp_path / "again")
    assert f"| t2v_R@1 | {metrics['t2v_R@1']:.4g} |" in (tmp_path / "again" / CARD_FILE).read_text()
    # A run directory loads as its best checkpoint, with that evaluation's metrics.
    from_run = vla.from_pretrained(tmp_path / "run")
    assert from_run.training_record["metrics"]["t2v_R@1"] == metrics["t2v_R@1"]


def test_push_to_hub_uploads_the_saved_folder_with_huggingface_hub(trained, monkeypatch):
    from huggingface_hub import HfApi

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, commit_message, **kwargs):
        folder = Path(folder_path)
        calls.append(("upload_folder", repo_id, {p.name for p in folder.iterdir()},
                      (folder / CARD_FILE).read_text(), commit_message))
        return "commit-url"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert trained.push_to_hub("someone/tiny-temporal", private=True) == "commit-url"
    (_, repo, kwargs), (kind, uploaded_repo, files, card, message) = calls
    assert repo == "someone/tiny-temporal" and kwargs == {"private": True, "exist_ok": True}
    assert kind == "upload_folder" and uploaded_repo == repo and files == FILES
    assert "vla.from_pretrained('someone/tiny-temporal')" in card and message == "Upload vl-adapters adapters"


def test_the_hub_without_huggingface_hub_is_one_clear_error(trained, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingPackageError, match=r"huggingface_hub.*pip install 'vl-adapters\[hf\]'"):
        vla.from_pretrained("someone/tiny-temporal")
    with pytest.raises(MissingPackageError, match=r"push_to_hub needs the huggingface_hub package"):
        trained.push_to_hub("someone/tiny-temporal")
