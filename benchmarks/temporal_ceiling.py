"""What limits temporal multiple choice on the bench: the frozen text tower, or the video side?

    .venv/bin/python benchmarks/temporal_ceiling.py --data DIR [--steps 3000 --seed 0]

Two probes on the default preset's data, each scored exactly like the bench's multiple-choice head (cosine
with the frozen text tower's candidate embeddings, a learned temperature, cross-entropy), trained on the
training part's temporal questions and read on the test part's:

- `oracle`: the video vector is an MLP of the true event list (colour, shape, kind and direction of each
  event, in order: what a perfect video model would know). If this is low, the text tower cannot tell the
  candidates apart and no video adapter could.
- `frames` / `patches`: an MLP of the frozen backbone's frame embeddings [T, D] (or patch tokens
  [T, N, D]) flattened, so order is visible to it. This bounds what the frozen features carry about the
  events, with no temporal architecture at all.

Mean pooling scores chance on these questions by construction (every video comes with its backward twin).
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from temporal_fit import load_parts  # noqa: I001  (benchmarks/ is the script's dir)

from vl_adapters.bench.evaluate import questions
from vl_adapters.bench.protocol import BenchConfig
from vl_adapters.data.synthetic import COLOURS as COLOUR_RGB
from vl_adapters.data.synthetic import DIRECTIONS as DIRECTION_STEP
from vl_adapters.data.synthetic import SHAPES

COLOURS, DIRECTIONS = list(COLOUR_RGB), list(DIRECTION_STEP)

VERBS = ("moves", "appears", "disappears", "turns")
SLOT = len(COLOURS) + len(SHAPES) + len(VERBS) + len(DIRECTIONS) + len(COLOURS)
MAX_EVENTS = 3


def events_code(caption: str) -> torch.Tensor:
    """One-hot code of 'first the <colour> <shape> <verb> [<argument>], then ...', event by event."""
    code = torch.zeros(MAX_EVENTS, SLOT)
    for i, phrase in enumerate(caption.removeprefix("first ").split(", then ")):
        _, colour, shape, verb, *arg = phrase.split()
        code[i, COLOURS.index(colour)] = 1
        code[i, len(COLOURS) + SHAPES.index(shape)] = 1
        code[i, len(COLOURS) + len(SHAPES) + VERBS.index(verb)] = 1
        offset = len(COLOURS) + len(SHAPES) + len(VERBS)
        if verb == "moves":
            code[i, offset + DIRECTIONS.index(arg[0])] = 1
        elif verb == "turns":
            code[i, offset + len(DIRECTIONS) + COLOURS.index(arg[0])] = 1
    return code.flatten()


def probe_inputs(part, kind: str) -> dict:
    rows = questions(part, "temporal")
    q = part.questions
    k = q.mask.shape[1]
    video = q.video[rows]
    if kind == "oracle":
        x = torch.stack([events_code(q.strings[int(r) * k + int(q.answer[r])]) for r in rows])
    elif kind == "frames":
        x = part.features.frame_emb[video].flatten(1)
    else:
        x = part.features.patch_tokens[video].flatten(1)
    text = F.normalize(q.text.text_emb.view(len(q), k, -1)[rows].float(), dim=-1)
    return {"x": x.float(), "text": text, "mask": q.mask[rows], "answer": q.answer[rows]}


def run_probe(train: dict, test: dict, *, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    dim, embed = train["x"].shape[1], train["text"].shape[-1]
    net = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, 512), torch.nn.GELU(),
                              torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, embed))
    log_scale = torch.nn.Parameter(torch.tensor(math.log(20.0)))
    optimiser = torch.optim.AdamW([*net.parameters(), log_scale], lr=1e-3, weight_decay=0.01)

    def scores(part: dict, index=slice(None)) -> torch.Tensor:
        video = F.normalize(net(part["x"][index]), dim=-1)
        logits = log_scale.exp().clamp(max=100) * torch.einsum("b k d, b d -> b k", part["text"][index], video)
        return logits.masked_fill(~part["mask"][index], float("-inf"))

    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(len(train["answer"]), (32,), generator=gen)
        loss = F.cross_entropy(scores(train, index), train["answer"][index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return {name: 100.0 * (scores(part).argmax(1) == part["answer"]).float().mean().item()
                for name, part in (("train", train), ("test", test))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probes", nargs="+", default=["oracle", "frames", "patches"])
    args = p.parse_args()
    cfg = BenchConfig()
    _, train, test = load_parts(args.data, cfg, workers=2)
    parts = {"train": train, "test": test}
    print(f"| probe | training accuracy | test accuracy | ({args.steps} steps, seed {args.seed}, temporal MC) |")
    print("|---|---:|---:|---|")
    for kind in args.probes:
        result = run_probe(probe_inputs(parts["train"], kind), probe_inputs(parts["test"], kind),
                           steps=args.steps, seed=args.seed)
        print(f"| {kind} | {result['train']:.1f} | {result['test']:.1f} | |", flush=True)


if __name__ == "__main__":
    main()
