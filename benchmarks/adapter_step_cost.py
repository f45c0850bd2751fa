"""Per-step cost of each named method: one training step (forward, backward, optimiser step) on cached
backbone features, for retrieval and for multiple choice, at one CPU thread by default.

A step: batch 32 clips x 8 frames; retrieval pairs each clip with its caption; multiple choice gives each
clip 4 candidates ("first A, then B" captions, the wrong ones in another order). The backbone runs once,
before timing (its features are what a cached run feeds the adapters); texts go through the model's
frozen text store, filled by the warm-up step, so only the adapters, the task head and the optimiser are
timed. Rows are measured in alternation (one step of every row, then again, `--rounds` times) and the
median is reported, so a machine whose load drifts slows every row alike.

To compare with another version of the code (say, the commit before a change, checked out with `git
worktree add /tmp/before <commit>`), `--baseline DIR` imports DIR's vl_adapters under another name and runs
its steps in alternation with these, in one process, so both see the same load; `--code DIR` runs DIR's
code alone:

    python benchmarks/adapter_step_cost.py --backbone tiny:synthetic --baseline /tmp/before
    python benchmarks/adapter_step_cost.py --backbone open_clip:ViT-B-32 --rounds 2 --baseline /tmp/before
    python benchmarks/adapter_step_cost.py --methods finsta --set finsta.dim=64   # an explicit width

open_clip ViT-B-32 gets random weights (pretrained=None): speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

METHODS = ["temporal_transformer", "tem_adapter", "finsta", "trajectory_word", "fine_grained_alignment",
           "multi_level_alignment", "tem_adapter+finsta+trajectory_word"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "white"]
SHAPES = ["circle", "square", "triangle"]
ACTIONS = ["moves left", "moves right", "moves up", "moves down", "appears", "disappears"]


def captions(count: int, seed: int = 0) -> list[list[str]]:
    """`count` scenes, each as its event phrases (2 or 3), in the synthetic data's words."""
    rng = random.Random(seed)
    scenes = []
    for _ in range(count):
        objects = rng.sample([(c, s) for c in COLOURS for s in SHAPES], 3)
        events = []
        for colour, shape in objects[: rng.choice([2, 3])]:
            action = rng.choice(ACTIONS + [f"turns {rng.choice([c for c in COLOURS if c != colour])}"])
            events.append(f"the {colour} {shape} {action}")
        scenes.append(events)
    return scenes


def narrate(events: list[str]) -> str:
    return "first " + ", then ".join(events)


def parse_overrides(items: list[str]) -> dict[str, dict]:
    """["finsta.dim=64", ...] -> {"finsta": {"dim": 64}} (values parsed as JSON when they parse)."""
    out: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        name, _, field = key.partition(".")
        if not field or not value:
            raise SystemExit(f"--set expects NAME.FIELD=VALUE, got {item!r}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(name, {})[field] = parsed
    return out


def load_version(directory: str, name: str = "vl_adapters_baseline"):
    """The vl_adapters package of another checkout, imported under another name, so that two versions of
    the code run side by side in one process (the same load on the machine for both)."""
    import importlib.util
    from pathlib import Path

    package = Path(directory) / "vl_adapters"
    spec = importlib.util.spec_from_file_location(name, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def batches_for(vla, backbone_spec: str, b: int, t: int, k: int) -> dict:
    """The retrieval and multiple-choice batches on `vla`'s own cached features of the same frames."""
    import torch

    backbone = vla.load_backbone(backbone_spec, pretrained=None if backbone_spec.startswith("open_clip") else "")
    size = backbone.dims.image_size
    frames = torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        video = backbone.encode_video(frames)
    scenes = captions(b + k)
    texts = [narrate(events) for events in scenes[:b]]
    candidates, answers = [], []
    for i, events in enumerate(scenes[:b]):
        wrong = [narrate(events[::-1]), narrate(events[1:] + events[:1]), narrate(scenes[b + i % k])]
        options = [texts[i], *wrong][:k]
        order = random.Random(i).sample(range(k), k)
        candidates.append([options[j] for j in order])
        answers.append(order.index(0))
    return backbone, {
        "retrieval": {"video": video, "text": texts},
        "multiple_choice": {"video": video, "question": ["what happens?"] * b, "candidates": candidates,
                            "candidate_mask": torch.ones(b, k, dtype=torch.bool), "answer": torch.tensor(answers)},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny:synthetic", help="tiny:synthetic or open_clip:ViT-B-32")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated rows; '+' joins adapters")
    parser.add_argument("--tasks", default="retrieval,multiple_choice")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps of each row, in alternation")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="NAME.FIELD=VALUE",
                        help="an explicit config value for adapter NAME (repeatable)")
    parser.add_argument("--code", default=None, help="import vl_adapters from this checkout instead")
    parser.add_argument("--baseline", default=None,
                        help="another checkout (e.g. the code before a change): its steps alternate with these, "
                             "in one process, and the table gives after/before ratios")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.code:
        sys.path.insert(0, args.code)

    import torch

    import vl_adapters

    torch.set_num_threads(args.threads)
    overrides = parse_overrides(args.set)
    versions = {"after": vl_adapters}
    if args.baseline:
        versions = {"before": load_version(args.baseline), **versions}
    b, t, k = args.batch, args.frames, args.candidates
    tasks = args.tasks.split(",")
    methods = args.methods.split(",")
    steps, rows = {}, {}
    for version, vla in versions.items():
        backbone, batches = batches_for(vla, args.backbone, b, t, k)
        for method in methods:
            specs = [{"type": name, **overrides.get(name, {})} for name in method.split("+")]
            for task in tasks:
                torch.manual_seed(0)
                model = vla.wrap(backbone, specs, task=task).train()
                params = model.trainable_parameters()
                optimiser = torch.optim.AdamW(params, lr=1e-4)

                def step(model=model, optimiser=optimiser, batch=batches[task]):
                    out = model(batch)
                    optimiser.zero_grad(set_to_none=True)
                    out.loss.backward()
                    optimiser.step()

                step()  # warm-up: fills the text store and the caches a run fills on its first step
                steps[(method, task, version)] = step
                rows.setdefault(method, {})[version] = {
                    "code": vla.__file__, "trainable_params": sum(p.numel() for p in params),
                    "configs": [a.config.to_dict() for a in model.adapters]}
    times: dict[tuple, list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
    for (method, task, version), values in times.items():
        rows[method][version][f"{task}_ms"] = 1e3 * statistics.median(values)
    print(f"backbone {args.backbone}; batch {b} x {t} frames, {k} candidates; {args.threads} thread(s); median of "
          f"{args.rounds} alternating steps; forward + backward + optimiser step, ms")
    for version, vla in versions.items():
        print(f"{version}: vl_adapters from {vla.__file__}")
    print()
    columns = [f"{task} {version}" for task in tasks for version in versions]
    if len(versions) > 1:
        columns += [f"{task} after/before" for task in tasks]
    print("| method | trainable (" + ", ".join(versions) + ") | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for method, row in rows.items():
        cells = [f"{row[version][f'{task}_ms']:.0f}" for task in tasks for version in versions]
        if len(versions) > 1:
            cells += [f"{row['after'][f'{task}_ms'] / row['before'][f'{task}_ms']:.2f}" for task in tasks]
        params = " / ".join(f"{row[version]['trainable_params']:,}" for version in versions)
        print(f"| {method} | {params} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"backbone": args.backbone, "batch": b, "frames": t, "candidates": k, "threads": args.threads,
                       "rounds": args.rounds, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
