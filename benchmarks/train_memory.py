"""Peak training memory of adapters on a frozen backbone against a full fine-tune at the same batch
(docs/performance.md target 4: one temporal adapter at most 0.12x, the three named adapters at most 0.25x).

Each configuration runs two AdamW steps from raw frames (the frozen backbone in the loop, no feature
cache) in a fresh process, so no peak leaks from one into the next:

  full fine-tune     open_clip's CLIP with every weight trainable, CLIP4Clip-style mean pooling and a
                     symmetric InfoNCE (fp32 master weights, bf16 autocast on a GPU)
  temporal adapter   vla.wrap(frozen backbone, temporal_transformer with 4 layers), retrieval head
  three named        vla.wrap(frozen backbone, tem_adapter + finsta + trajectory_word)

Memory: on a GPU the peak of torch.cuda.max_memory_allocated (weights, optimiser state, activations); on
a CPU the process's peak resident memory above what it held once torch and vl_adapters were imported.

    python benchmarks/train_memory.py                      # GPU: 64 clips x 12 frames, ViT-B/32
    python benchmarks/train_memory.py --batch 8            # what perf-cpu holds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

NAMED = ["tem_adapter", "finsta", "trajectory_word"]
CONFIGS = {"full fine-tune": None, "temporal adapter (temporal_transformer, 4 layers)":
           [{"type": "temporal_transformer", "layers": 4}], "three named adapters": NAMED}


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(label: str, backbone_name: str, batch: int, frames: int, steps: int) -> dict:
    import torch
    import torch.nn.functional as F

    import vl_adapters as vla
    from vl_adapters.bench.perf import peak_rss_mb

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    before = _rss_mb()
    torch.manual_seed(0)
    texts = [f"a clip number {i} where the red car turns left" for i in range(batch)]
    cast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    adapters = CONFIGS[label]
    if adapters is None:
        import open_clip

        model = open_clip.create_model(backbone_name, pretrained=None, device=device).train()
        tokens = open_clip.get_tokenizer(backbone_name)(texts).to(device)
        params = list(model.parameters())
        size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size

        def loss_of(video):
            with cast:
                v = model.encode_image(video.flatten(0, 1)).unflatten(0, (batch, frames)).mean(1)
                t = model.encode_text(tokens)
                logits = model.logit_scale.exp() * F.normalize(t, dim=-1) @ F.normalize(v, dim=-1).T
                target = torch.arange(batch, device=device)
                return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    else:
        backbone = vla.load_backbone(f"open_clip:{backbone_name}", pretrained=None, device=device)
        model = vla.wrap(backbone, adapters, task="retrieval").train()
        params = model.trainable_parameters()
        size = backbone.dims.image_size

        def loss_of(video):
            with cast:
                return model({"video": video, "text": texts}).loss
    optimiser = torch.optim.AdamW(params, lr=1e-5)
    video = torch.randn(batch, frames, 3, size, size, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(steps):
        loss = loss_of(video)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
    peak = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb() - before)
    return {"config": label, "peak_mb": peak, "trainable_params": sum(p.numel() for p in params),
            "loss": float(loss.detach())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-32", help="an open_clip model name (random weights)")
    parser.add_argument("--batch", type=int, default=None, help="clips per step (default 64 on a GPU, 8 on a CPU)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    from vl_adapters.bench.perf import default_results_dir, device_name, write_results

    gpu = torch.cuda.is_available()
    batch = args.batch or (64 if gpu else 8)
    if args.child:
        print(json.dumps(child(args.child, args.backbone, batch, args.frames, args.steps)))
        return 0
    rows = []
    for label in CONFIGS:
        command = [sys.executable, __file__, "--child", label, "--backbone", args.backbone, "--batch", str(batch),
                   "--frames", str(args.frames), "--steps", str(args.steps)]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    full = rows[0]["peak_mb"]
    targets = {"temporal adapter (temporal_transformer, 4 layers)": 0.12, "three named adapters": 0.25}
    kind = "peak CUDA memory allocated" if gpu else "peak resident memory above the imports"
    table = [f"device: {device_name(torch.device('cuda' if gpu else 'cpu'))}; open_clip {args.backbone} (random "
             f"weights); {batch} clips x {args.frames} frames; {args.steps} AdamW steps from raw frames; {kind}", "",
             "| configuration | trainable | peak MiB | x full fine-tune | target |", "|---|---|---|---|---|"]
    for r in rows:
        r["ratio"] = r["peak_mb"] / full
        target = targets.get(r["config"])
        table.append(f"| {r['config']} | {r['trainable_params']:,} | {r['peak_mb']:,.0f} | {r['ratio']:.3f} | "
                     f"{'<= ' + str(target) if target else ''} |")
    write_results(args.out or default_results_dir(), "train_memory",
                  {"device": "cuda" if gpu else "cpu", "backbone": args.backbone, "batch": batch,
                   "frames": args.frames, "steps": args.steps, "memory": kind, "rows": rows}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
