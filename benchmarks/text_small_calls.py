"""A few new texts at a time through `model.encode_text` (the frozen-text store, which encodes each
distinct text once, in calls of a fixed size so that a text's features never depend on its company)
against `backbone.encode_text` on the same texts: what a user's small query costs on top of the tower.

    python benchmarks/text_small_calls.py --through model      # the store
    python benchmarks/text_small_calls.py --through backbone   # the tower alone

Each run builds the backbone (open_clip ViT-B-32 with random weights by default: nothing is downloaded)
and encodes `--calls` batches of `--texts` texts never seen before; it prints the seconds spent in those
calls. Time the two commands side by side (e.g. `/usr/bin/time -v`) to compare whole processes.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vl_adapters as vla


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--through", choices=("model", "backbone"), required=True)
    parser.add_argument("--backbone", default="open_clip:ViT-B-32")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--texts", type=int, default=2, help="new texts per call")
    args = parser.parse_args()
    backbone = vla.load_backbone(args.backbone, device="cpu")
    encode = vla.wrap(backbone, []).encode_text if args.through == "model" else backbone.encode_text
    encode(["a warm-up text"])
    start = time.perf_counter()
    with torch.no_grad():
        for call in range(args.calls):
            encode([f"query {call}.{i}: a person walks a dog along the beach" for i in range(args.texts)])
    seconds = time.perf_counter() - start
    print(json.dumps({"through": args.through, "backbone": args.backbone, "calls": args.calls,
                      "texts_per_call": args.texts, "seconds_in_calls": round(seconds, 3)}))


if __name__ == "__main__":
    main()
