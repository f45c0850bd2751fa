"""wrap orders a mixed list of adapters (backbone -> video/text/dual -> cross) and refuses, with the
reason, combinations that cannot run."""

from dataclasses import dataclass

import pytest
import torch
from _backbone_adapters import fresh_backbone, paired_batch

import vl_adapters as vla
from vl_adapters.core.adapter import Adapter, AdapterConfig, AdapterOutput
from vl_adapters.core.model import CompositionError, _ordered


@dataclass
class _PooledConfig(AdapterConfig):
    pass


class _Pooled(Adapter):
    """Sets video_emb (not registered: _ordered is tested on instances)."""

    config_class = _PooledConfig
    stage = "video"
    sets_video_emb = True

    def forward(self, video, text, ctx):
        return AdapterOutput(video=video.replace(video_emb=video.frame_emb.mean(1)), text=text)


def _pooled(name, dims):
    adapter = _Pooled(_PooledConfig(), dims)
    adapter.name = name
    return adapter


def test_mixed_list_is_ordered_by_stage():
    pytest.importorskip("peft")
    backbone = fresh_backbone("tiny")
    specs = ["fine_grained_alignment", "temporal_transformer", "st_adapter", {"type": "lora", "rank": 2}]
    model = vla.wrap(backbone, specs)
    stages = [a.stage for a in model.adapters]
    assert stages == sorted(stages, key=lambda s: {"backbone": 0, "video": 1, "text": 1, "dual": 1, "cross": 2}[s])
    assert [a.name for a in model.adapters][:2] == ["st_adapter", "lora"]  # given order kept within a stage
    # Both backbone adapters run inside the backbone at once and the wrapped model still starts as it.
    video, mask, texts = paired_batch()
    plain = vla.wrap(fresh_backbone("tiny"), []).similarity(texts, video, frame_mask=mask)
    assert (model.eval().similarity(texts, video, frame_mask=mask) - plain).abs().max() <= 1e-5


def test_duplicates_are_refused(tiny_backbone):
    with pytest.raises(CompositionError, match=r"\['temporal_transformer'\] listed twice"):
        vla.wrap(tiny_backbone, ["temporal_transformer", {"type": "temporal_transformer", "layers": 1}])


def test_two_pooled_embeddings_are_refused(tiny_backbone):
    dims = tiny_backbone.dims
    with pytest.raises(CompositionError, match=r"\['pool_a', 'pool_b'\] both set the pooled video embedding"):
        _ordered([_pooled("pool_a", dims), _pooled("pool_b", dims)])
    assert len(_ordered([_pooled("pool_a", dims), vla.build_adapter("temporal_transformer", dims)])) == 2


def test_backbone_adapter_of_another_family_is_refused(tiny_backbone):
    adapter = vla.build_adapter("st_adapter", tiny_backbone.dims)
    with pytest.raises(CompositionError, match="st_adapter.*supports backbone families.*not 'timm'"):
        _ordered([adapter], family="timm")
    assert _ordered([adapter], family="hf") == [adapter]


def test_backbone_adapters_make_the_backbone_need_grad():
    backbone = fresh_backbone("tiny")
    vla.wrap(backbone, ["temporal_transformer"])
    assert not backbone.needs_grad
    model = vla.wrap(backbone, ["st_adapter"])
    assert model.backbone.needs_grad and not backbone.needs_grad  # its own copy of the modules
    video, mask, texts = paired_batch()
    out = model({"video": video, "frame_mask": mask, "text": texts})
    out.loss.backward()
    grads = [p.grad for p in model.adapters[0].parameters()]
    assert all(g is not None for g in grads) and any(torch.count_nonzero(g) for g in grads)
