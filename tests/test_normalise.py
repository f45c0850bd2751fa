"""DSL and QB-Norm as evaluation options: what each does to a hub, and that raw metrics always stay."""

import json

import pytest
import torch
from _toy_data import ToyRetrievalDataset

import vl_adapters as vla
from vl_adapters.core.config import ConfigError
from vl_adapters.tasks.metrics import ranks_of_truth, retrieval_metrics
from vl_adapters.tasks.normalise import (
    activation_set,
    choose_beta,
    dual_softmax,
    normalised_retrieval_metrics,
    parse_options,
    querybank_normalise,
    querybank_texts,
)
from vl_adapters.train.config import load_config
from vl_adapters.train.evaluate import evaluate

HUB = 3


def hub_matrix() -> torch.Tensor:
    """4 texts x 4 videos, text i belongs to video i; video 3 is a hub: every text likes it a bit more
    than its own video, so raw text->video R@1 is 25% (only text 3 finds its video)."""
    sims = torch.full((4, 4), 0.1)
    sims.fill_diagonal_(0.5)
    sims[:, HUB] = 0.55
    sims[HUB, HUB] = 0.6
    return sims


def test_dsl_lowers_the_hub_for_texts_that_are_not_its_own():
    sims = hub_matrix()
    truth = torch.arange(4)
    raw_ranks = ranks_of_truth(sims, truth)
    assert raw_ranks.tolist() == [1, 1, 1, 0]  # the hub beats texts 0-2's own videos
    dsl = dual_softmax(sims, dim=0, temperature=0.01)
    hub_rank = (dsl > dsl[:, HUB:HUB + 1]).sum(1)  # the hub's rank in each text's list
    assert hub_rank[:HUB].min() >= 1 and (sims > sims[:, HUB:HUB + 1]).sum(1)[:HUB].max() == 0
    assert dsl[HUB].argmax() == HUB  # its own text still finds it first
    assert ranks_of_truth(dsl, truth).tolist() == [0, 0, 0, 0]
    # The prior runs over the other side's queries: softmax over texts for t2v, over videos for v2t.
    assert torch.allclose(dsl, sims * torch.softmax(sims / 0.01, dim=0))
    assert torch.allclose(dual_softmax(sims, dim=1, temperature=0.01), sims * torch.softmax(sims / 0.01, dim=1))


def test_raw_and_normalised_metrics_are_both_present_and_labelled():
    sims = hub_matrix()
    out = normalised_retrieval_metrics(sims, None, "dsl")
    raw = retrieval_metrics(sims)
    assert set(out) == {f"dsl/{k}" for k in raw}  # every normalised key carries its method
    assert raw["t2v_R@1"] == 25.0 and out["dsl/t2v_R@1"] == 100.0
    assert normalised_retrieval_metrics(sims, None, "none") == {}


def test_qb_norm_is_the_dynamic_inverted_softmax():
    # Gallery of 4 videos; the bank's queries all land on the hub (video 3) -> activation set {3}.
    bank = torch.tensor([[0.1, 0.1, 0.2, 0.7], [0.1, 0.1, 0.2, 0.6], [0.1, 0.3, 0.1, 0.65]])
    assert activation_set(bank, k=1).tolist() == [False, False, False, True]
    assert activation_set(bank, k=2).tolist() == [False, True, True, True]  # the 2nd of each bank query
    sims = torch.tensor([
        [0.50, 0.10, 0.10, 0.55],  # top-1 is the hub: normalised
        [0.10, 0.60, 0.10, 0.58],  # top-1 is video 1, outside the activation set: raw, although the hub is 2nd
    ])
    out = querybank_normalise(sims, bank, beta=20.0, k=1)
    assert torch.equal(out[1], sims[1])  # untouched: the paper normalises only where the top-1 is a hub
    expected = torch.exp(20 * sims[0]) / torch.exp(20 * bank).sum(0)  # exp(beta s) / sum_bank exp(beta s)
    assert torch.allclose(out[0].exp(), expected, rtol=1e-5)
    assert out[0].argmax() == 0  # the hub was penalised by its popularity in the bank: the own video wins
    # With k=2 video 1 joins the activation set, so the second query is normalised too.
    assert not torch.equal(querybank_normalise(sims, bank, beta=20.0, k=2)[1], sims[1])


def test_qb_norm_metrics_need_the_bank_and_skip_v2t_without_a_video_bank():
    sims, bank = hub_matrix(), torch.tensor([[0.1, 0.1, 0.1, 0.9]] * 5)
    out = normalised_retrieval_metrics(sims, None, "qb_norm", {"beta": 20.0}, text_bank_sims=bank)
    assert set(out) == {f"qb_norm/t2v_{m}" for m in ("R@1", "R@5", "R@10", "MdR", "MnR")}
    assert out["qb_norm/t2v_R@1"] > retrieval_metrics(sims)["t2v_R@1"]
    with_videos = normalised_retrieval_metrics(sims, None, "qb_norm", {}, text_bank_sims=bank,
                                               video_bank_sims=torch.rand(6, 4))
    assert "qb_norm/v2t_R@1" in with_videos
    with pytest.raises(ValueError, match="text_bank_sims"):
        normalised_retrieval_metrics(sims, None, "qb_norm", {})
    with pytest.raises(ValueError, match=r"\[bank, 4\]"):
        querybank_normalise(sims, torch.rand(3, 5))


def test_beta_is_validated_and_chosen_on_validation_data_only():
    for bad in ({"beta": 0.0}, {"beta": -1.0}, {"k": 0}, {"betta": 2.0}):
        with pytest.raises(ConfigError, match="normalise_options"):
            parse_options("qb_norm", bad)
    with pytest.raises(ConfigError, match="temperature"):
        parse_options("dsl", {"temperature": 0.0})
    with pytest.raises(ConfigError, match="one of"):
        parse_options("softmax")
    # A validation split where only a sharp inverted softmax (normaliser ~ the bank's max, not its mean)
    # unmasks the hub (video 2: one bank query loves it, the others not at all).
    val = torch.tensor([[0.50, 0.10, 0.55], [0.10, 0.50, 0.45], [0.10, 0.10, 0.95]])
    bank = torch.tensor([[0.35, 0.1, 0.9], [0.35, 0.1, 0.0], [0.35, 0.1, 0.0]])
    beta, table = choose_beta(val, None, bank, candidates=(0.1, 20.0, 50.0))
    assert table[0.1] < table[20.0] and beta == 20.0  # 20 and 50 tie; the smaller wins
    assert table[beta] == max(table.values())
    with pytest.raises(ValueError, match="positive"):
        choose_beta(val, None, bank, candidates=(0.0,))


def test_evaluate_keeps_raw_metrics_unchanged_beside_the_normalised_ones(tiny_backbone):
    torch.manual_seed(0)
    model = vla.wrap(tiny_backbone, [{"type": "temporal_transformer", "layers": 1, "heads": 2}])
    dataset = ToyRetrievalDataset(8, captions_per_video=2)
    raw = evaluate(model, dataset, batch_size=4)
    dsl = evaluate(model, dataset, batch_size=4, normalise="dsl")
    assert {k: dsl[k] for k in raw} == raw  # the unprefixed metrics are the raw ones, whatever normalise says
    assert set(dsl) - set(raw) == {f"dsl/{k}" for k in raw}
    bank = [f"a clip of colour {c}" for c in ("red", "blue", "green", "white", "black")]
    qb = evaluate(model, dataset, batch_size=4, normalise="qb_norm", normalise_options={"beta": 20.0}, querybank=bank)
    assert {k: qb[k] for k in raw} == raw and "qb_norm/t2v_R@1" in qb and "qb_norm/v2t_R@1" not in qb
    with pytest.raises(ValueError, match="querybank"):
        evaluate(model, dataset, normalise="qb_norm")


def test_train_config_rejects_bad_normalise_settings():
    assert load_config(overrides=["eval.normalise=dsl", "eval.normalise_options={temperature: 0.05}"]).eval.normalise == "dsl"
    with pytest.raises(ConfigError, match="eval.normalise must be one of"):
        load_config(overrides=["eval.normalise=dual"])
    with pytest.raises(ConfigError, match="betta"):
        load_config(overrides=["eval.normalise=qb_norm", "eval.normalise_options={betta: 3}"])
    with pytest.raises(ConfigError, match="normalise is 'none'"):
        load_config(overrides=["eval.normalise_options={beta: 3}"])


def test_querybank_texts_from_the_training_split_or_a_file(tmp_path):
    train = ToyRetrievalDataset(6)
    assert querybank_texts("train", train_dataset=train) == [s["text"] for s in train.samples]
    picked = querybank_texts("train", train_dataset=train, size=3, seed=0)
    assert len(picked) == 3 and picked == querybank_texts("train", train_dataset=train, size=3, seed=0)
    (tmp_path / "q.txt").write_text("a dog runs\n\nthe cat sleeps\n")
    (tmp_path / "q.json").write_text(json.dumps(["a dog runs", "the cat sleeps"]))
    (tmp_path / "q.jsonl").write_text('{"text": "a dog runs"}\n{"text": "the cat sleeps"}\n')
    for name in ("q.txt", "q.json", "q.jsonl"):
        assert querybank_texts(str(tmp_path / name)) == ["a dog runs", "the cat sleeps"]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        querybank_texts(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="training split"):
        querybank_texts("train")


def test_eval_command_writes_raw_and_qb_norm_metrics(tmp_path, capsys):
    pytest.importorskip("av")
    from videos import write_video

    from vl_adapters.cli import main

    root = tmp_path / "data"
    for split, count in (("train", 3), ("test", 3)):
        rows = []
        for i in range(count):
            name = f"{split}{i}.mp4"
            write_video(root / "videos" / name, num_frames=4, height=32, width=32)
            rows.append(json.dumps({"video": name, "text": f"{split} clip number {i} is {'red blue green'.split()[i]}"}))
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    adapters = tmp_path / "adapters"
    vla.wrap(vla.load_backbone("tiny", device="cpu"), ["temporal_transformer"]).save_adapters(adapters)
    common = ["eval", "--adapters", str(adapters), "--dataset", "jsonl", "--root", str(root), "--num-frames", "4",
              "--num-workers", "0", "--device", "cpu"]
    assert main([*common, "--normalise", "qb_norm", "--querybank", "train", "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"t2v_R@1", "v2t_R@1", "qb_norm/t2v_R@1", "qb_norm/t2v_MnR"} <= set(metrics)
    assert main([*common, "--normalise", "qb_norm", "--querybank", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err
