"""How the default bench's budget was chosen, without reading a number of the bench's own data.

    python benchmarks/protocol_check.py --out /tmp/protocol --epochs 2 3 --frames 8 6

For each (frames, epochs) this writes the default preset's synthetic data with data seed 1 (the bench
uses seed 0 and this script refuses it) and runs `vl-adapters bench --config` on it with the reference
temporal row (`temporal_transformer`) and the baselines, multiple choice only, 3 seeds, everything else
as the default preset. The rule, fixed before any run: the default protocol is the cheapest one at which
the reference row's temporal multiple-choice accuracy is at least 20 points above trained mean pooling's
and its shuffle drop at least 15 points. Every row of the bench then trains under that protocol.

Prints one line per setting and writes `protocol_check.json` to `--out`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

MARGIN, DROP = 20.0, 15.0


def setting(out: Path, frames: int, epochs: int, data_seed: int) -> dict:
    from vl_adapters.bench.presets import PRESETS, synthetic_config
    from vl_adapters.bench.run import run_bench
    from vl_adapters.data.synthetic import generate

    spec = {**PRESETS["default"]["data"], "seed": data_seed, "num_frames": frames}
    root = out / f"data-seed{data_seed}-frames{frames}"
    if not (root / "meta.json").exists():
        generate(root, workers=2, **spec)
    config = synthetic_config(root, "default")
    config["epochs"] = epochs
    config["data"]["num_frames"] = frames
    bench = config["bench"]
    bench.update(adapters=["temporal_transformer"], controls=False, workers=2,
                 tasks={"multiple_choice": bench["tasks"]["multiple_choice"]},
                 report=[key for key in bench["report"] if key.startswith("multiple_choice/")])
    run = out / f"frames{frames}-epochs{epochs}"
    path = out / f"frames{frames}-epochs{epochs}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run_bench(run, config=path, changes={"cache": str(out / f"cache-frames{frames}")}, yes=True, log=lambda *_: None)
    rows = json.loads((run / "results.json").read_text())["rows"]
    return {row["name"]: {key: sum(r["metrics"][key] for r in row["runs"]) / len(row["runs"])
                          for key in row["runs"][0]["metrics"]} for row in rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--frames", type=int, nargs="+", default=[8])
    parser.add_argument("--data-seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.data_seed == 0:
        raise SystemExit("--data-seed 0 is the bench's own data: choose the protocol on another seed")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = []
    for frames in args.frames:
        for epochs in args.epochs:
            rows = setting(out, frames, epochs, args.data_seed)
            metric = "multiple_choice/accuracy/temporal"
            mean = rows["mean + temperature"][metric]
            ref = rows["temporal_transformer"][metric]
            drop = rows["temporal_transformer"]["multiple_choice/shuffle_drop/accuracy/temporal"]
            passes = ref - mean >= MARGIN and drop >= DROP
            found.append({"frames": frames, "epochs": epochs, "mean_pooling": mean, "temporal_transformer": ref,
                          "margin": ref - mean, "shuffle_drop": drop, "passes": passes})
            print(f"{frames} frames, {epochs} epochs: temporal_transformer {ref:.1f} against mean pooling {mean:.1f} "
                  f"(+{ref - mean:.1f}), shuffle drop {drop:.1f}: {'passes' if passes else 'fails'}", flush=True)
    (out / "protocol_check.json").write_text(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
