import logging
import pickle

import pytest
import torch
from videos import frame_indices_of, write_corrupt, write_empty, write_video

from vl_adapters.data import VideoReadError, read_video
from vl_adapters.data.video import decode_shape, decord_available

READERS = ["pyav"] + (["decord"] if decord_available() else [])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {"h264": write_video(root / "a.mp4", 20, codec="h264"),
            "mpeg4": write_video(root / "b.avi", 20, codec="mpeg4"),
            "tall": write_video(root / "tall.mp4", 6, height=64, width=48)}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_reads_exactly_the_chosen_frames(clips, reader, codec):
    seen = []

    def choose(n):
        seen.append(n)
        return [0, 2, 2, 9, 19]

    clip = read_video(clips[codec], choose, size=None, reader=reader)
    assert seen == [20] and clip.num_video_frames == 20 and clip.reader == reader
    assert clip.frames.dtype == torch.uint8 and clip.frames.shape == (5, 3, 48, 64)
    assert frame_indices_of(clip.frames) == [0, 2, 2, 9, 19]


@pytest.mark.parametrize("reader", READERS)
def test_decodes_at_target_size_with_centre_crop(clips, reader):
    clip = read_video(clips["h264"], lambda n: [3, 4], size=32, reader=reader)
    assert clip.frames.shape == (2, 3, 32, 32)
    assert frame_indices_of(clip.frames) == [3, 4]
    exact = read_video(clips["tall"], lambda n: [5], size=(20, 30), reader=reader)
    assert exact.frames.shape == (1, 3, 20, 30) and frame_indices_of(exact.frames) == [5]


def test_decode_shape_keeps_aspect_then_crops():
    assert decode_shape(48, 64, 32) == (32, 43, (32, 32))
    assert decode_shape(64, 48, 24) == (32, 24, (24, 24))
    assert decode_shape(48, 64, (10, 20)) == (10, 20, None)
    assert decode_shape(48, 64, None) == (48, 64, None)


@pytest.mark.parametrize("reader", ["auto", *READERS])
def test_bad_files_raise_with_a_reason(tmp_path, reader):
    with pytest.raises(VideoReadError, match="file not found"):
        read_video(tmp_path / "missing.mp4", lambda n: [0], reader=reader)
    with pytest.raises(VideoReadError, match="empty file"):
        read_video(write_empty(tmp_path / "empty.mp4"), lambda n: [0], reader=reader)
    with pytest.raises(VideoReadError) as info:
        read_video(write_corrupt(tmp_path / "noise.mp4"), lambda n: [0], reader=reader)
    assert "noise.mp4" in str(info.value)


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
@pytest.mark.parametrize("reader", ["auto", *READERS])
def test_an_unreadable_file_gets_our_reason_and_no_native_decoder_lines(tmp_path, reader, capfd):
    bad = write_corrupt(tmp_path / "bad.mp4")
    capfd.readouterr()
    with pytest.raises(VideoReadError, match="bad.mp4"):
        read_video(bad, lambda n: [0], size=32, reader=reader)
    print("after the read", file=__import__("sys").stderr)  # stderr works again afterwards
    assert capfd.readouterr().err == "after the read\n"


def test_auto_falls_back_to_pyav_when_decord_fails(clips, monkeypatch, caplog):
    import vl_adapters.data.video as video

    def broken(path, choose, size):
        raise RuntimeError("decord cannot open this file")

    monkeypatch.setattr(video, "_read_decord", broken)
    with caplog.at_level(logging.INFO, logger="vl_adapters.data.video"):
        clip = read_video(clips["h264"], lambda n: [1, 5], size=32)
    assert clip.reader == "pyav" and frame_indices_of(clip.frames) == [1, 5]
    assert "trying PyAV" in caplog.text


def test_auto_uses_pyav_when_decord_is_missing(clips, monkeypatch):
    import vl_adapters.data.video as video

    monkeypatch.setattr(video, "decord_available", lambda: False)
    clip = read_video(clips["mpeg4"], lambda n: [7], size=None)
    assert clip.reader == "pyav" and frame_indices_of(clip.frames) == [7]
    with pytest.raises(VideoReadError, match="decord is not installed"):
        read_video(clips["mpeg4"], lambda n: [7], reader="decord")


@pytest.mark.skipif(not decord_available(), reason="decord is not installed")
def test_decord_and_pyav_agree(clips):
    a = read_video(clips["h264"], lambda n: list(range(0, n, 3)), size=32, reader="decord").frames.float()
    b = read_video(clips["h264"], lambda n: list(range(0, n, 3)), size=32, reader="pyav").frames.float()
    assert a.shape == b.shape and (a - b).abs().mean() < 6


def test_clip_result_pickles(clips):
    clip = read_video(clips["h264"], lambda n: [0], size=16)
    assert pickle.loads(pickle.dumps(clip)).frames.equal(clip.frames)
