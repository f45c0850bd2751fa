"""`extract` under torchrun: two gloo ranks on the CPU share the videos out and write one cache whose
arrays, index and text features are identical to a single process's, also when resumed."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

NUM_VIDEOS, BAD = 11, (4, 9)  # 4 batches of 3: rank 0 gets two, rank 1 two (the last one short)


def _dataset(log: str | None = None):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _toy_data import ToyRetrievalDataset

    class Logged(ToyRetrievalDataset):
        """Appends each decoded row to `log` (from whichever process decodes it)."""

        def load_video(self, video_index):
            if log is not None:
                with open(log, "a") as f:
                    f.write(f"{video_index}\n")
            return super().load_video(video_index)

    return Logged(NUM_VIDEOS, bad=BAD)


def _extract(out, log=None, **kwargs):
    import vl_adapters as vla
    from vl_adapters.data.cache import extract_features

    backbone = vla.load_backbone("tiny", device="cpu")
    return extract_features(_dataset(log), backbone, out, sampler="uniform", num_frames=4, batch_size=3,
                            progress=False, **kwargs)


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        # rank 1 decodes in a DataLoader worker process
        _extract(os.path.join(root, "whole"), log=os.path.join(root, f"decoded-{rank}.txt"), num_workers=rank)
        _extract(os.path.join(root, "resumed"), stop_after=6)  # interrupted after one round ...
        with open(os.path.join(root, f"resumed-partial-{rank}.json"), "w") as f:
            json.dump(json.load(open(os.path.join(root, "resumed", "index.json"))), f)
        _extract(os.path.join(root, "resumed"))  # ... and resumed
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    root = tmp_path_factory.mktemp("dextract")
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(2, _free_port(), str(root)), nprocs=2, join=True, start_method=method)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: kernels may pick other algorithms for other thread counts
    try:
        _extract(root / "single")
    finally:
        torch.set_num_threads(threads)
    return root


def _assert_same_cache(got, expected):
    from vl_adapters.data.cache import FeatureCache

    a, b = FeatureCache(got), FeatureCache(expected)
    assert a.index == b.index
    for name in ("frame_emb", "frame_mask", "patch_tokens"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("text_emb.npy", "token_states.npy", "input_ids.npy", "offsets.npy"):
        assert np.array_equal(np.load(got / "text" / name), np.load(expected / "text" / name)), name
    assert not list(got.glob("*.partial"))


def test_two_ranks_write_the_cache_of_one_process(two_ranks):
    _assert_same_cache(two_ranks / "whole", two_ranks / "single")
    shares = [sorted(int(r) for r in (two_ranks / f"decoded-{rank}.txt").read_text().split()) for rank in (0, 1)]
    assert shares == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10]]  # batches 0, 2 and 1, 3: each video decoded once
    index = json.loads((two_ranks / "whole" / "index.json").read_text())
    assert index["complete"] and sorted(index["bad_videos"]) == [f"video{i}" for i in BAD]
    emb = np.load(two_ranks / "whole" / "frame_emb.npy")
    good = [i for i in range(NUM_VIDEOS) if i not in BAD]
    assert np.abs(emb[good]).sum(axis=(1, 2)).min() > 0 and not emb[list(BAD)].any()


@pytest.mark.determinism
def test_two_ranks_resume_an_interrupted_extraction(two_ranks):
    partial = json.loads((two_ranks / "resumed-partial-0.json").read_text())
    assert not partial["complete"] and partial["done"] == [0, 1, 2, 3, 4, 5]
    _assert_same_cache(two_ranks / "resumed", two_ranks / "single")


def test_the_module_entry_point_torchrun_starts_knows_every_subcommand():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "vl_adapters.cli", "extract", "--help"], capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    assert result.returncode == 0, result.stderr
    assert "--num-workers" in result.stdout and "torchrun" in result.stdout
