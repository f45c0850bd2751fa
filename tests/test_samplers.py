import random

import pytest

from vl_adapters.core.registry import SAMPLERS
from vl_adapters.data.samplers import sample_indices


def test_all_samplers_registered():
    for name in ("uniform", "segment_random", "clips", "sparse"):
        assert name in SAMPLERS


def test_uniform_spans_first_to_last():
    assert sample_indices("uniform", 100, 5, train=True, rng=random.Random(1)) == [0, 25, 50, 74, 99]
    assert sample_indices("uniform", 12, 12, train=False, rng=random.Random(0)) == list(range(12))


@pytest.mark.parametrize("name", ["uniform", "segment_random", "sparse"])
def test_short_video_gives_all_its_frames(name):
    assert sample_indices(name, 5, 8, train=True, rng=random.Random(0)) == [0, 1, 2, 3, 4]


def test_segment_random_one_frame_per_segment_random_in_training_centre_in_eval():
    n, t = 100, 4
    centre = sample_indices("segment_random", n, t, train=False, rng=random.Random(0))
    assert centre == [12, 37, 62, 87]
    draws = {tuple(sample_indices("segment_random", n, t, train=True, rng=random.Random(s))) for s in range(20)}
    assert len(draws) > 1
    for draw in draws:
        for k, i in enumerate(draw):
            assert 25 * k <= i < 25 * (k + 1)
    # evaluation ignores the rng
    assert sample_indices("segment_random", n, t, train=False, rng=random.Random(5)) == centre


def test_clips_tem_adapter_centres_and_consecutive_frames():
    n, count, m = 300, 8, 16
    idx = sample_indices("clips", n, count * m, train=False, rng=random.Random(0), clip_len=m)
    assert len(idx) == count * m
    step = n / (count + 1)  # linspace(0, n, N + 2)[1 : N + 1]
    for c in range(count):
        clip = idx[c * m:(c + 1) * m]
        assert clip == list(range(clip[0], clip[0] + m))  # consecutive
        centre = int(step * (c + 1))
        assert clip[0] <= centre <= clip[-1]


def test_clips_short_video_keeps_the_layout_with_edge_repeats():
    idx = sample_indices("clips", 10, 8, train=False, rng=random.Random(0), clip_len=4)
    assert len(idx) == 8 and max(idx) <= 9 and idx == sorted(idx)


def test_clips_rejects_a_frame_count_that_is_not_a_multiple():
    with pytest.raises(ValueError, match="multiple of clip_len"):
        sample_indices("clips", 100, 10, train=False, rng=random.Random(0), clip_len=4)


def test_sparse_short_clips_per_segment():
    idx = sample_indices("sparse", 80, 8, train=False, rng=random.Random(0), clip_len=2)
    assert len(idx) == 8
    for c in range(4):
        a, b = idx[2 * c], idx[2 * c + 1]
        assert b == a + 1 and 20 * c - 1 <= a < 20 * (c + 1)
    train = {tuple(sample_indices("sparse", 80, 8, train=True, rng=random.Random(s))) for s in range(10)}
    assert len(train) > 1


@pytest.mark.parametrize("name", ["uniform", "segment_random", "clips", "sparse"])
@pytest.mark.parametrize("n", [1, 3, 7, 16, 33, 1000])
def test_indices_sorted_in_range_and_at_most_requested(name, n):
    options = {"clip_len": 2} if name in ("clips", "sparse") else {}
    for train in (False, True):
        idx = sample_indices(name, n, 8, train=train, rng=random.Random(n), **options)
        assert 0 < len(idx) <= 8 and idx == sorted(idx) and all(0 <= i < n for i in idx)
