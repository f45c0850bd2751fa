"""Pretrain the tiny backbone `tiny:synthetic` the way CLIP is pretrained, on single frames only.

CLIP-style symmetric InfoNCE on still images of coloured shapes paired with static captions ("a red
circle at the top left and a blue square"). The model learns colours, shapes and positions; it never
sees two frames of one video, so it knows nothing about time. The benchmark then freezes it, as CLIP
is frozen in the real setting, and asks adapters to add time.

Storage (the tracked file stays well under 5 MB): the config keeps open_clip's 49,408-token BPE
vocabulary so the ordinary tokenizer and code path are used, but only the embedding rows of tokens
that occur in the pretraining captions can change (the embedding has no weight decay), so the
checkpoint stores just those rows ("token_embedding.rows" + "token_embedding.values"); every other row
is the seeded initialisation that `load_tiny` recreates exactly. Everything else is stored in fp32.

Reproduce the shipped weights with: `vl-adapters pretrain-backbone --out <file>` (defaults below).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .open_clip_backbone import CONFIG_DIR

WEIGHTS_DIR = Path(__file__).parent / "weights"
TRIMMED_FORMAT = "vl-adapters/trimmed-token-embedding/v1"


def shipped_weights(config: dict) -> Path | None:
    """The checkpoint a tiny config names in its "weights" entry (relative to backbones/weights/)."""
    name = config.get("weights")
    if not name:
        return None
    path = WEIGHTS_DIR / name
    if not path.exists():
        raise FileNotFoundError(
            f"tiny backbone weights {path} are missing; rebuild them with `vl-adapters pretrain-backbone --out {path}`"
        )
    return path


def load_weights(model: nn.Module, path: str | Path, *, spec: str) -> None:
    """Load a full or trimmed safetensors state dict into a freshly (seeded) initialised tiny CLIP."""
    from safetensors.torch import load_file

    from .base import BackboneWeightsError, check_state_dict

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{spec}: pretrained checkpoint {str(path)!r} does not exist")
    try:
        state = load_file(str(path))
    except Exception as error:  # safetensors raises its own error type for a file of another format
        raise BackboneWeightsError(f"{spec}: {path} is not a safetensors file ({error}); the tiny backbones read "
                                   "safetensors only (write one with safetensors.torch.save_file)") from None
    if "token_embedding.rows" in state:
        rows = state.pop("token_embedding.rows").long()
        values = state.pop("token_embedding.values")
        weight = model.token_embedding.weight.detach().clone()
        if values.shape != (rows.numel(), weight.shape[1]) or (rows.numel() and int(rows.max()) >= weight.shape[0]):
            raise BackboneWeightsError(f"{spec}: {path}: trimmed token embedding does not fit the model's {tuple(weight.shape)}")
        weight[rows] = values.to(weight.dtype)
        state["token_embedding.weight"] = weight
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    check_state_dict(spec, path, state, model.state_dict())
    model.load_state_dict(state, strict=True)


def _captions_batch(rng: np.random.Generator, batch_size: int, size: int) -> tuple[np.ndarray, list[str]]:
    from ..data.synthetic import sample_still

    frames, captions = zip(*(sample_still(rng, size=size) for _ in range(batch_size)), strict=True)
    return np.stack(frames), list(captions)


def pretrain(out: str | Path, *, config: str = "synthetic", steps: int = 3000, batch_size: int = 128,
             lr: float = 2e-3, seed: int = 0, frame_size: int = 64, log_every: int = 100,
             log=print) -> dict:
    """Train `tiny:<config>` from its seeded initialisation and write the trimmed safetensors to `out`."""
    from safetensors.torch import save_file

    from .open_clip_backbone import load_tiny

    cfg = json.loads((CONFIG_DIR / f"{config}.json").read_text())
    backbone = load_tiny(config, pretrained="")  # "" = the seeded initialisation, never the shipped weights
    model = backbone.model
    init_embedding = model.token_embedding.weight.detach().clone()
    model.requires_grad_(True)
    nn.Module.train(model, True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    embedding = [model.token_embedding.weight]
    others = [p for n, p in model.named_parameters() if n != "token_embedding.weight"]
    decay = [p for p in others if p.ndim >= 2]
    no_decay = [p for p in others if p.ndim < 2]
    optimiser = torch.optim.AdamW([
        {"params": decay, "weight_decay": 0.1},
        {"params": no_decay + embedding, "weight_decay": 0.0},
    ], lr=lr, betas=(0.9, 0.98))
    warmup = max(steps // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, 0.5 * (1 + np.cos(np.pi * min(s / steps, 1.0)))))
    seen = torch.zeros(init_embedding.shape[0], dtype=torch.bool)
    start, history = time.time(), []
    for step in range(steps):
        frames, captions = _captions_batch(rng, batch_size, frame_size)
        images = backbone.transform(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous())
        ids, _ = backbone.tokenize(captions)
        seen[ids.flatten()] = True
        image_emb = F.normalize(model.visual(images)[0], dim=-1)  # the backbone turned on output_tokens
        text_emb = F.normalize(model.encode_text(ids), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_emb @ text_emb.T
        # duplicate captions in a batch are not negatives of each other
        same = torch.tensor([[a == b for b in captions] for a in captions])
        target = same.float() / same.float().sum(1, keepdim=True)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target.T))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        if (step + 1) % log_every == 0 or step == steps - 1:
            acc = (logits.argmax(1) == torch.arange(batch_size)).float().mean().item()
            history.append({"step": step + 1, "loss": round(loss.item(), 4), "batch_i2t_acc": round(acc, 3)})
            log(f"step {step + 1}/{steps} loss {loss.item():.3f} batch i2t acc {acc:.2f} "
                f"({time.time() - start:.0f}s)")
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    weight = state.pop("token_embedding.weight")
    rows = seen.nonzero().flatten()
    untouched = ~seen
    if not torch.equal(weight[untouched], init_embedding[untouched]):
        raise RuntimeError("pretrain: token embedding rows outside the captions changed; cannot trim")
    state["token_embedding.rows"] = rows.to(torch.int64)
    state["token_embedding.values"] = weight[rows].contiguous()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": TRIMMED_FORMAT, "config": config, "steps": str(steps), "batch_size": str(batch_size),
            "lr": str(lr), "seed": str(seed), "frame_size": str(frame_size)}
    save_file(state, str(out), metadata=meta)
    report = {"out": str(out), "seconds": round(time.time() - start, 1), "history": history,
              "kept_token_rows": int(rows.numel()), "bytes": out.stat().st_size, "config": cfg}
    return report


@torch.no_grad()
def static_retrieval_accuracy(backbone, *, num: int = 64, seed: int = 123, frame_size: int = 64) -> dict:
    """Frame->caption and caption->frame R@1 on fresh stills (chance = 1/num)."""
    rng = np.random.default_rng(seed)
    frames, captions = _captions_batch(rng, num, frame_size)
    video = backbone.encode_video(torch.from_numpy(frames).permute(0, 3, 1, 2)[:, None].contiguous())
    image_emb = F.normalize(video.frame_emb[:, 0], dim=-1)
    text_emb = F.normalize(backbone.encode_text(captions).text_emb, dim=-1)
    sims = text_emb @ image_emb.T
    truth = torch.arange(num)
    return {"t2i_r1": (sims.argmax(1) == truth).float().mean().item(),
            "i2t_r1": (sims.argmax(0) == truth).float().mean().item(), "chance": 1.0 / num}


def register(subparsers) -> None:
    """`vl-adapters pretrain-backbone` (vl_adapters/cli.py lists this module)."""
    p = subparsers.add_parser("pretrain-backbone", help="pretrain the tiny image-text backbone on synthetic stills")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--config", default="synthetic", help="tiny config under vl_adapters/backbones/configs")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (use the default to reproduce the shipped weights bit for bit)")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    torch.set_num_threads(args.threads)  # tiny matrices: more threads mostly add contention
    report = pretrain(args.out, config=args.config, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed)
    from .open_clip_backbone import load_tiny

    backbone = load_tiny(args.config, pretrained=args.out)
    report["static_retrieval"] = static_retrieval_accuracy(backbone)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2))
    return 0
