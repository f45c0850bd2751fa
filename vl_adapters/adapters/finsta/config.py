from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ...core.config import AdapterConfig, fit_heads, fit_width


@dataclass
class FinstaConfig(AdapterConfig):
    """Finsta (Fei et al., TPAMI 2024): scene-graph spatio-temporal alignment, transferred into graph-free
    students that refine a frozen dual encoder. See docs/finsta.md for what each choice is and why."""

    dim: int | None = None              # width of the graph encoders and students; None: 256 (our choice on
                                        # ViT-B), at most the backbone's width
    heads: int | None = None            # None: 4, fewer where heads would be under 32 channels
    tsg_layers: int = 2                 # graph Transformer layers over the textual scene graph
    dsg_layers: int = 1                 # recurrent graph Transformer blocks over the dynamic scene graph
    hsg_layers: int = 1                 # graph Transformer layers over the holistic scene graph
    slots: int = 6                      # K object slots per frame (DSG nodes), tracked across frames
    slot_iters: int = 3                 # soft-clustering refinements
    slot_temperature: float = 0.1       # softmax temperature of the slot assignment (cosine logits)
    coord_weight: float = 0.5           # weight of squared grid distance (vs cosine) in the slot assignment
    slot_smoothing: float = 2.0         # frames (Gaussian width) over which a slot's appearance is shared
    match_distance_weight: float = 1.0  # external detections: temporal matching by cosine - weight * distance
    sigma: float = 0.15                 # Gaussian width of the STGD kernel, in grid units normalised to [0, 1]
    hsg_threshold: float = 0.0          # cosine (OSC space) above which a text object links to its best slot
    interval: int = 3                   # frames per temporal interval contrasted with predicates (PTC)
    parser: str = "auto"                # "auto" (spaCy if installed with an English model, else rule), "rule", "spacy"
    temperature: float = 0.07           # initial temperature of both contrasts (learnable)
    osc_weight: float = 1.0
    ptc_weight: float = 1.0
    hsg_weight: float = 1.0             # HSG matching: the caption's video against the hardest other video/caption
    distill_weight: float = 1.0
    use_graphs_at_inference: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.require_at_least(1, "dim", "heads", "tsg_layers", "dsg_layers", "slots", "slot_iters", "interval")

    def resolve(self, dims) -> FinstaConfig:
        dim = fit_width(self.dim, paper=256, dims=dims)
        return dataclasses.replace(self, dim=dim, heads=fit_heads(self.heads, width=dim, paper=4))
