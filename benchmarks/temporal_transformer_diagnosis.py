"""Why did temporal_transformer not learn frame order? Its input variants on the temporal_fit protocol.

    .venv/bin/python benchmarks/temporal_transformer_diagnosis.py [--data DIR --seeds 0 1 2 --steps 300]

Each variant changes one thing in how frames and positions enter the Transformer (patched into the adapter for
the run; everything else, the data and the optimiser are benchmarks/temporal_fit.py's):
- content: "raw" frame embeddings (the old adapter), "unit" (L2-normalised, CLIP4Clip), or "unit*sqrt(D)"
  (unit frames with unit mean-square components: the adapter as shipped);
- positions: a learned table initialised N(0, 0.01) (the old adapter), N(0, D^-1/2), or the sinusoid table
  (as shipped), optionally scaled to unit norm;
- dropout and learning rate at the old adapter's inputs.
With raw content the residual is the old one (frames + out_proj(hidden)); with unit content the change is
made at unit scale (frames + |frame| * out_proj(hidden), as shipped).
Reported: training / held-out / held-out-shuffled accuracy on the temporal multiple-choice questions.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from temporal_fit import accuracy, fit_config, load_parts, train  # noqa: I001  (benchmarks/ is the script's dir)

import vl_adapters as vla
from vl_adapters.adapters.tem_adapter.modules import sinusoid_positions
from vl_adapters.adapters.temporal_transformer.adapter import TemporalTransformer
from vl_adapters.core.adapter import AdapterOutput

# name -> (content, positions, config overrides, lr)
VARIANTS = {
    "old adapter (raw frames, N(0, 0.01) positions)": ("raw", "normal:0.01", {}, 1e-3),
    "old adapter, dropout 0": ("raw", "normal:0.01", {"dropout": 0.0}, 1e-3),
    "old adapter, lr 1e-2": ("raw", "normal:0.01", {}, 1e-2),
    "unit frames, N(0, 0.01) positions": ("unit", "normal:0.01", {}, 1e-3),
    "raw frames, N(0, D^-1/2) positions": ("raw", "normal:d", {}, 1e-3),
    "unit frames, N(0, D^-1/2) positions": ("unit", "normal:d", {}, 1e-3),
    "raw frames, sinusoid positions": ("raw", "sinusoid", {}, 1e-3),
    "unit frames, unit-norm sinusoid positions": ("unit", "sinusoid:unit", {}, 1e-3),
    "unit*sqrt(D) frames, sinusoid positions (shipped)": ("unit*sqrt(D)", "sinusoid", {}, 1e-3),
}


def patch(content: str, positions: str) -> None:
    """Give TemporalTransformer the variant's position initialisation and input, keeping the rest as shipped."""

    def init_positions(table: torch.Tensor) -> None:
        rows, width = table.shape
        with torch.no_grad():
            if positions.startswith("normal"):
                std = positions.split(":")[1]
                table.normal_(std=width ** -0.5 if std == "d" else float(std))
            else:
                scale = (2 / width) ** 0.5 if positions.endswith(":unit") else 1.0
                table.copy_(sinusoid_positions(rows, width) * scale)

    def forward(self, video, text, ctx):
        frames = video.frame_emb
        if not getattr(self, "_variant_initialised", False):
            init_positions(self.position.weight)
            self._variant_initialised = True
        x = {"raw": frames, "unit": F.normalize(frames, dim=-1),
             "unit*sqrt(D)": F.normalize(frames, dim=-1) * frames.shape[-1] ** 0.5}[content]
        hidden = self.encoder(x + self.position(torch.arange(frames.shape[1])), src_key_padding_mask=~video.frame_mask)
        # raw content: the old residual frames + out_proj(hidden); unit content: the change made at unit scale
        scale = 1.0 if content == "raw" else frames.norm(dim=-1, keepdim=True) * video.frame_mask[..., None]
        return AdapterOutput(video=video.replace(frame_emb=frames + self.out_proj(hidden) * scale), text=text)

    TemporalTransformer.forward = forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="bench-results/temporal-fit-data",
                        help="made by benchmarks/temporal_fit.py with the same --pairs/--test-pairs/--frames")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--test-pairs", type=int, default=32)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone, train_part, test_part = load_parts(args.data, fit_config(args))
    frames = train_part.features.frame_emb
    print(f"tiny:synthetic frame embeddings: norm {frames.norm(dim=-1).mean():.2f}, component std {frames.std():.2f}")
    print("| variant | train acc | held-out acc | held-out, frames shuffled |")
    print("|---|---:|---:|---:|")
    for name, (content, positions, overrides, lr) in VARIANTS.items():
        patch(content, positions)
        results = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = vla.wrap(backbone, [{"type": "temporal_transformer", **overrides}], task="multiple_choice")
            train(model, train_part, steps=args.steps, batch=args.batch, lr=lr, seed=seed)
            results.append((accuracy(model, train_part), accuracy(model, test_part),
                            accuracy(model, test_part, "shuffled")))
        mean = [100 * sum(r[i] for r in results) / len(results) for i in range(3)]
        print(f"| {name} | {mean[0]:.1f} | {mean[1]:.1f} | {mean[2]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
