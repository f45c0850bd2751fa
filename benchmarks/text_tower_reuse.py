"""Multiple-choice training steps with a vision-only backbone adapter (st_adapter) on open_clip ViT-B/32
(random weights: nothing is downloaded), one thread. The adapter leaves the text tower frozen, so the
candidates' features come from the model's text store, each distinct text through the tower once.
`--fresh-text` runs the path taken before (and still taken by LoRA on the text tower): every candidate
through the text tower at every step.

    python benchmarks/text_tower_reuse.py [--fresh-text] [--steps 4] [--questions 4] [--frames 4]

It prints the mean seconds of the steps after the first (the first fills the store in both modes).
"""

import argparse
import time

import torch

import vl_adapters as vla


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh-text", action="store_true", help="encode every candidate at every step")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--candidates", type=int, default=5)
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = vla.load_backbone("open_clip:ViT-B-32", device="cpu", pretrained=None)
    model = vla.wrap(backbone, ["st_adapter"], task="multiple_choice")
    if args.fresh_text:
        type(model.backbone_adapters[0]).changes_text_tower = True
    size = backbone.dims.image_size
    frames = torch.randn(args.questions, args.frames, 3, size, size)
    texts = [f"question {q}: the shape moves to place {k}" for q in range(args.questions) for k in range(args.candidates)]
    batch = {"video": frames, "text": texts, "answer": torch.zeros(args.questions, dtype=torch.long),
             "candidate_mask": torch.ones(args.questions, args.candidates, dtype=torch.bool)}
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    model.train()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = model(batch).loss
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        seconds.append(time.perf_counter() - start)
    mode = "fresh text every step" if args.fresh_text else "text store"
    print(f"{mode}: {sum(seconds[1:]) / (len(seconds) - 1):.2f} s per step after the first "
          f"({args.questions} questions x {args.candidates} candidates, {args.frames} frames)")


if __name__ == "__main__":
    main()
