"""Finsta graph encoders: messages flow only along edges, the frame memory is causal, STGD vanishes on a
static video."""

import pytest
import torch

pytest.importorskip("torch_geometric")

from vl_adapters.adapters.finsta.holistic import HolisticEncoder, build_holistic  # noqa: E402
from vl_adapters.adapters.finsta.layers import (  # noqa: E402
    GraphTransformer,
    GraphTransformerLayer,
    RecurrentGraphTransformer,
    STGDLayer,
    gaussian_differential,
    linear_scan,
)

pytestmark = pytest.mark.graph


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscribing a shared CI runner (30x faster here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
DIM = 16


def features(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g)


def perturb(h, node):
    h = h.clone()
    h[node] += 5.0
    return h


def test_graph_transformer_layer_respects_edges():
    torch.manual_seed(0)
    layer = GraphTransformerLayer(dim=DIM, heads=4).eval()
    edge_index = torch.tensor([[0, 1], [1, 2]])  # 0 -> 1 -> 2; node 3 isolated
    h, e = features(4), features(2, seed=1)
    out, _ = layer(h, edge_index, e)
    moved, _ = layer(perturb(h, 0), edge_index, e)
    assert not torch.allclose(out[1], moved[1])  # one hop
    assert torch.equal(out[2], moved[2]) and torch.equal(out[3], moved[3])  # two hops / isolated
    # the isolated node's update depends on itself alone: same as running it with no graph at all
    alone, _ = layer(h[3:], torch.zeros(2, 0, dtype=torch.long), e[:0])
    assert torch.allclose(out[3], alone[0], atol=1e-6)
    # edge features weight the messages: with two edges into node 1, changing one's features changes node 1
    two_in = torch.tensor([[0, 4, 1], [1, 1, 2]])
    h5, e3 = features(5), features(3, seed=1)
    out, edges_out = layer(h5, two_in, e3)
    other, other_edges = layer(h5, two_in, e3 + torch.tensor([[3.0] * DIM, [0.0] * DIM, [0.0] * DIM]))
    assert not torch.allclose(out[1], other[1]) and torch.equal(out[3], other[3])
    assert not torch.allclose(edges_out[0], other_edges[0]) and torch.equal(edges_out[2], other_edges[2])


def test_graph_transformer_stack_reaches_two_hops():
    torch.manual_seed(0)
    encoder = GraphTransformer(dim=DIM, layers=2, heads=4).eval()
    edge_index = torch.tensor([[0, 1], [1, 2]])
    h, e = features(4), features(2, seed=1)
    out, _ = encoder(h, edge_index, e)
    moved, _ = encoder(perturb(h, 0), edge_index, e)
    assert not torch.allclose(out[2], moved[2]) and torch.equal(out[3], moved[3])
    moved_back, _ = encoder(perturb(h, 2), edge_index, e)
    assert torch.equal(out[0], moved_back[0])  # nothing flows against the edges


def test_linear_scan_matches_the_recurrence():
    g = torch.Generator().manual_seed(0)
    gate, value = torch.rand(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    memory, expected = torch.zeros(2, 3), []
    for t in range(5):
        memory = (1 - gate[:, t]) * value[:, t] + gate[:, t] * memory
        expected.append(memory)
    assert torch.allclose(linear_scan(gate, value), torch.stack(expected, 1), atol=1e-6)


def test_recurrent_graph_transformer_is_causal_and_follows_edges():
    torch.manual_seed(0)
    b, t, k = 1, 4, 2
    block = RecurrentGraphTransformer(dim=DIM, layers=1, heads=4).eval()
    # spatial edges within each frame, and a temporal edge from slot 0 of frame t to slot 0 of frame t+1
    spatial = [[f * k + 1, f * k] for f in range(t)] + [[f * k, f * k + 1] for f in range(t)]
    temporal = [[f * k, (f + 1) * k] for f in range(t - 1)]
    edge_index = torch.tensor(spatial + temporal).t()
    h, e = features(b * t * k), features(edge_index.shape[1], seed=1)
    mask = torch.ones(b, t, dtype=torch.bool)
    out, _, memory = block(h, edge_index, e, frames=(b, t, k), frame_mask=mask)
    moved, _, moved_memory = block(perturb(h, 2 * k), edge_index, e, frames=(b, t, k), frame_mask=mask)
    assert torch.equal(out[: 2 * k], moved[: 2 * k])  # frames before t=2 do not see it
    assert torch.equal(memory[:, :2], moved_memory[:, :2]) and not torch.allclose(memory[:, 2], moved_memory[:, 2])
    assert not torch.allclose(out[3 * k:], moved[3 * k:])  # later frames read it through the memory
    # a padded frame keeps the memory unchanged
    padded = torch.tensor([[True, True, False, True]])
    _, _, memory = block(h, edge_index, e, frames=(b, t, k), frame_mask=padded)
    assert torch.allclose(memory[:, 2], memory[:, 1])


def static_and_moving_positions(t=4, k=3):
    pos = torch.rand(1, 1, k, 2, generator=torch.Generator().manual_seed(0)).expand(1, t, k, 2).clone()
    moving = pos.clone()
    moving[0, :, 1, 1] += 0.1 * torch.arange(t)  # slot 1 moves right
    return pos, moving


def test_gaussian_differential_is_zero_for_a_static_video():
    t, k = 4, 3
    static, moving = static_and_moving_positions(t, k)
    predecessor = torch.arange(k).expand(1, t, k)
    mask = torch.ones(1, t, dtype=torch.bool)
    pair, motion = gaussian_differential(static, predecessor, mask, sigma=0.15)
    assert torch.equal(pair, torch.zeros_like(pair)) and torch.equal(motion, torch.zeros_like(motion))
    pair, motion = gaussian_differential(moving, predecessor, mask, sigma=0.15)
    assert (motion[0, 1:, 1] > motion[0, 1:, 0]).all() and motion[0, 1:, 1].min() > 0.1
    assert torch.equal(motion[:, 0], torch.zeros(1, k))  # no previous frame
    # the layer is the identity on a static video, and not on a moving one
    torch.manual_seed(0)
    layer = STGDLayer(dim=DIM, heads=4, sigma=0.15)
    h = torch.randn(1, t, k, DIM)
    out, _ = layer(h, static, predecessor, mask)
    assert torch.equal(out, h)
    # when slot 1 moves, frames after the first change; the first frame has no predecessor and stays
    out, _ = layer(h, moving, predecessor, mask)
    assert not torch.allclose(out[0, 1:], h[0, 1:]) and torch.equal(out[:, 0], h[:, 0])


def test_holistic_encoder_only_mixes_along_cross_edges():
    torch.manual_seed(0)
    encoder = HolisticEncoder(dim=DIM, layers=1, heads=4).eval()
    text_x, video_x = features(2), features(4, seed=1)
    video_x[1] = text_x[0] * 3  # slot 1 matches text object 0
    graph = build_holistic(text_x, torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 1]), torch.tensor([0, 0]),
                           video_x, torch.zeros(2, 0, dtype=torch.long), 4, torch.tensor([0]), 0.9)
    assert graph.cross_edge_index.tolist() == [[0], [2 + 1]]
    text_out, video_out = encoder(graph)
    changed = video_x.clone()
    changed[1] += 1.0
    graph2 = build_holistic(text_x, torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 1]), torch.tensor([0, 0]),
                            changed, torch.zeros(2, 0, dtype=torch.long), 4, torch.tensor([0]), 0.9)
    text_out2, _ = encoder(graph2)
    assert not torch.allclose(text_out[0], text_out2[0]) and torch.equal(text_out[1], text_out2[1])
