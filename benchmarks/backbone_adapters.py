"""Backbone-stage adapters: trainable parameters on ViT-B/32 and LoRA merge tolerance (fp32, bf16).

    python benchmarks/backbone_adapters.py

ViT-B/32 is open_clip's with random weights (pretrained=None: nothing is downloaded). The merge check
trains LoRA a few steps on the tiny backbone and compares model.similarity with model.merge().similarity.
"""

import torch

import vl_adapters as vla


def trainable_on_vit_b32() -> None:
    specs = [{"type": "lora", "rank": 8, "towers": "both"}, {"type": "lora", "rank": 8, "towers": "vision"},
             "st_adapter"]
    for spec in specs:
        backbone = vla.load_backbone("open_clip:ViT-B-32", device="cpu", pretrained=None)
        model = vla.wrap(backbone, [spec])
        count = sum(p.numel() for a in model.adapters for p in a.parameters() if p.requires_grad)
        print(f"ViT-B/32 {spec}: {count:,} trainable")


def merge_tolerance() -> None:
    generator = torch.Generator().manual_seed(1)
    video = torch.randn(3, 4, 3, 32, 32, generator=generator)
    texts = ["a red circle moves left", "a blue square appears", "green turns yellow"]
    for precision in ("fp32", "bf16"):
        backbone = vla.load_backbone("tiny", device="cpu", pretrained="", precision=precision)
        model = vla.wrap(backbone, [{"type": "lora", "rank": 4}])
        optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
        model.train()
        for _ in range(5):
            loss = model({"video": video, "text": texts}).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        unmerged = model.similarity(texts, video)
        merged = model.merge().similarity(texts, video)
        print(f"{precision}: max |merged - unmerged| = {(merged - unmerged).abs().max():.2e} "
              f"(max |cosine| {unmerged.abs().max():.2f})")


if __name__ == "__main__":
    trainable_on_vit_b32()
    merge_tolerance()
