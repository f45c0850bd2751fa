"""Finsta graph encoders and scores: messages flow only along edges, the frame memory is causal and its update
depends on the memory it carries (MART), STGD vanishes on a static video, the HSG encoder mixes modalities
only along cross edges, and the temporal contrast sees the order of events."""

import pytest
import torch

pytest.importorskip("torch_geometric")

from _finsta_reference import reference_holistic_encoder  # noqa: E402

from vl_adapters.adapters.finsta.alignment import node_to_video_scores, ordered_interval_scores  # noqa: E402
from vl_adapters.adapters.finsta.holistic import HolisticEncoder, build_holistic  # noqa: E402
from vl_adapters.adapters.finsta.layers import (  # noqa: E402
    FrameMemory,
    GraphTransformer,
    GraphTransformerLayer,
    RecurrentGraphTransformer,
    STGDLayer,
    gaussian_differential,
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


def test_last_layer_without_edge_outputs_has_no_edge_parameters():
    stack = GraphTransformer(dim=DIM, layers=2, heads=4, last_edges=False)
    assert stack.layers[0].edge_branch is not None and stack.layers[1].edge_branch is None
    edge_index = torch.tensor([[0, 1], [1, 2]])
    h, e = features(3), features(2, seed=1)
    _, e_out = stack.layers[1](h, edge_index, e)
    assert e_out is e


def test_memory_update_depends_on_the_memory_it_carries():
    """MART: c_t and z_t are functions of M_{t-1} as well as of the frame (before: of the frame only)."""
    torch.manual_seed(0)
    memory = FrameMemory(dim=DIM)
    nodes = torch.randn(2, 3, DIM)
    keys, values = memory.key_value(nodes).chunk(2, dim=-1)
    m1, m2 = torch.randn(2, DIM), torch.randn(2, DIM)
    c1, z1, _ = memory.step(m1, keys, values)
    c2, z2, _ = memory.step(m2, keys, values)
    assert not torch.allclose(c1, c2) and not torch.allclose(z1, z2)
    # the attention read of the frame is queried by the memory too
    summary = lambda m: torch.einsum("bk,bkd->bd", torch.einsum(  # noqa: E731
        "bd,bkd->bk", memory.query(m), keys).softmax(-1), values)
    assert not torch.allclose(summary(m1), summary(m2))


def test_recurrence_is_not_a_fixed_linear_carry():
    """Black-box: perturb frame 0 of a graph with no temporal edges. With gates that ignore the memory (the
    old linear scan), the memory change at t=2 is the change at t=1 times a gate that does not depend on the
    perturbation, so the ratio is the same for any perturbation; here it is not."""
    torch.manual_seed(0)
    b, t, k = 1, 3, 2
    block = RecurrentGraphTransformer(dim=DIM, layers=1, heads=4).eval()
    edge_index = torch.tensor([[f * k + 1 for f in range(t)] + [f * k for f in range(t)],
                               [f * k for f in range(t)] + [f * k + 1 for f in range(t)]])  # spatial only
    h, e = features(b * t * k), features(edge_index.shape[1], seed=1)
    mask = torch.ones(b, t, dtype=torch.bool)
    _, _, base = block(h, edge_index, e, frames=(b, t, k), frame_mask=mask)
    ratios = []
    for scale in (1.0, 4.0):
        moved = h.clone()
        moved[:k] += scale * features(k, seed=2)
        _, _, memory = block(moved, edge_index, e, frames=(b, t, k), frame_mask=mask)
        delta = memory - base
        assert delta[:, 1].abs().min() > 1e-6
        ratios.append(delta[:, 2] / delta[:, 1])
    assert not torch.allclose(ratios[0], ratios[1], rtol=1e-2, atol=1e-3)


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
    """Caption 0 = one object node; video 0 = 1 frame of 4 slots, slot 1 looking like the object: the object
    reads slot 1 only, and slot 1 is the only video node that reads the object."""
    torch.manual_seed(0)
    encoder = HolisticEncoder(dim=DIM, layers=1, heads=4).eval()
    text_x, video_x = features(1), features(4, seed=1)
    video_x[1] = text_x[0] * 3

    def encode(video):
        none = torch.zeros(2, 0, dtype=torch.long)
        graph = build_holistic(text_x, torch.tensor([0]), none, torch.zeros(0, DIM), torch.tensor([True]),
                               video.view(1, 1, 4, DIM), none, torch.zeros(0, DIM), torch.ones(1, 1, dtype=torch.bool),
                               text_x, video.view(1, 1, 4, DIM), torch.tensor([[0, 0]]), 0.9, num_texts=1)
        return graph, *encoder(graph)

    graph, text_out, video_out = encode(video_x)
    assert graph.cross_edge_index.tolist() == [[0], [1 + 1]]
    changed = video_x.clone()
    changed[1] += 1.0
    _, text_moved, _ = encode(changed)
    assert not torch.allclose(text_out[0], text_moved[0])  # the object reads slot 1
    changed = video_x.clone()
    changed[2] += 1.0
    _, text_other, video_other = encode(changed)
    assert torch.equal(text_out, text_other)  # slot 2 has no cross edge
    assert torch.equal(video_out[[0, 3]], video_other[[0, 3]])


def test_ptc_sees_the_order_of_events():
    """Two events, A then B, against a video whose first intervals look like A and last ones like B: the
    caption in the right order scores higher than the same predicates in the other order (a max over windows
    per predicate scored both alike)."""
    a, b = torch.eye(DIM)[0], torch.eye(DIM)[1]
    intervals = torch.stack([a, a, 0.5 * (a + b), b, b])[None]  # [1, W=5, d]
    mask = torch.ones(1, 5, dtype=torch.bool)
    nodes, graph = torch.stack([a, b]), torch.tensor([0, 0])
    right, _ = ordered_interval_scores(nodes, graph, torch.tensor([0, 1]), 1, intervals, mask)
    wrong, _ = ordered_interval_scores(nodes, graph, torch.tensor([1, 0]), 1, intervals, mask)
    assert right.item() == pytest.approx(1.0) and wrong.item() < right.item() - 0.2
    # simultaneous events (one time) fall back to the best interval of each, averaged
    same, _ = ordered_interval_scores(nodes, graph, torch.tensor([0, 0]), 1, intervals, mask)
    order_free, _ = node_to_video_scores(nodes, graph, 1, intervals, mask)
    assert same.item() == pytest.approx(0.5 ** 0.5, abs=1e-4) and order_free.item() == pytest.approx(1.0)
    # padded intervals are never used, and a caption with no predicates is marked as such
    padded = mask.clone()
    padded[0, 3:] = False
    cut, has = ordered_interval_scores(nodes, graph, torch.tensor([0, 1]), 2, intervals, padded)
    assert cut[0].item() == pytest.approx((1 + 0.5 ** 0.5) / 2, abs=1e-4) and has.tolist() == [True, False]


def test_ptc_scores_a_batch_of_captions_and_videos():
    g = torch.Generator().manual_seed(0)
    nodes, intervals = torch.randn(5, DIM, generator=g), torch.randn(3, 4, DIM, generator=g)
    graph, time = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 0, 0, 1])
    mask = torch.ones(3, 4, dtype=torch.bool)
    scores, has = ordered_interval_scores(nodes, graph, time, 3, intervals, mask)
    unit = torch.nn.functional.normalize
    sims = unit(nodes, dim=-1) @ unit(intervals, dim=-1).transpose(1, 2)
    for caption, (first, second) in ((0, (0, 1)), (2, (3, 4))):  # brute force over ordered window pairs
        for video in range(3):
            best = max(sims[video, first, i] + sims[video, second, j] for i in range(4) for j in range(i, 4)) / 2
            assert scores[caption, video].item() == pytest.approx(best.item(), abs=1e-5)
    assert torch.allclose(scores[1], sims[:, 2].amax(-1)) and has.all()


@pytest.mark.parametrize("layers", [1, 2])
def test_factored_holistic_encoder_matches_the_union_graph_of_copies(layers):
    """Each video's DSG and each caption's TSG are projected once and the pairs' copies indexed: the same
    node states, and the same gradients, as the encoder on the union of every pair's copies."""
    torch.manual_seed(0)
    b, t, k = 3, 4, 3
    encoder = HolisticEncoder(dim=DIM, layers=layers, heads=4)
    text_graph = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    objects = torch.tensor([True, False, True, True, False, True, False, False, True])
    text_x, video_x = features(9).requires_grad_(), features(b * t * k, seed=1).view(b, t, k, DIM).requires_grad_()
    text_edges = torch.tensor([[0, 1, 3, 5, 6, 7], [1, 2, 4, 6, 7, 8]])
    frame_ids = torch.arange(b * t * k).view(b, t, k)
    spatial = torch.stack([frame_ids[..., 0].flatten(), frame_ids[..., 1].flatten()])
    temporal = torch.stack([frame_ids[:, :-1].flatten(), frame_ids[:, 1:].flatten()])
    video_edges = torch.cat([spatial, spatial.flip(0), temporal], dim=1)
    frame_mask = torch.ones(b, t, dtype=torch.bool)
    frame_mask[2, 3:] = False
    pairs = torch.tensor([[0, 0], [1, 1], [2, 2], [0, 1], [1, 0], [2, 0], [0, 2]])  # videos and captions repeat
    keys = features(9, seed=2), features(b * t * k, seed=3).view(b, t, k, DIM)
    graph = build_holistic(text_x, text_graph, text_edges, features(6, seed=4), objects, video_x, video_edges,
                           features(video_edges.shape[1], seed=5), frame_mask, *keys, pairs, 0.0, num_texts=3)
    assert graph.cross_edge_index.shape[1] > 0 and graph.node_source.shape[0] > graph.x.shape[0]
    got = encoder(graph)
    expected = reference_holistic_encoder(encoder, graph)
    probe = [torch.randn_like(h) for h in expected]
    for a, r in zip(got, expected, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(sum((h * p).sum() for h, p in zip(got, probe, strict=True)), [text_x, video_x])
    reference = torch.autograd.grad(sum((h * p).sum() for h, p in zip(expected, probe, strict=True)), [text_x, video_x])
    for a, r in zip(grads, reference, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_video_student_pools_as_the_mean_of_its_slots():
    """VideoStudent pools each frame once with the mean of its K attention rows; the reference pools K slots
    and averages them."""
    import math

    from vl_adapters.adapters.finsta.students import VideoStudent
    from vl_adapters.adapters.finsta.video_graph import grid_coordinates
    from vl_adapters.adapters.tem_adapter.modules import sinusoid_positions
    from vl_adapters.core.pooling import masked_mean

    torch.manual_seed(0)
    student = VideoStudent(vision_width=12, dim=16, slots=3, heads=2)
    with torch.no_grad():
        student.queries.normal_()  # away from the near-uniform attention of the 0.02 init
    patches, mask = torch.randn(2, 5, 4, 12, requires_grad=True), torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()
    feature, ordered = student(patches, (2, 2), mask)
    tokens = student.token_proj(patches) + student.position_proj(grid_coordinates((2, 2)))
    attn = (torch.einsum("btnd,kd->btkn", tokens, student.queries) / math.sqrt(16)).softmax(-1)
    frame = student.frame_norm(torch.einsum("btkn,btnd->btkd", attn, tokens).mean(2))
    ref_ordered = student.temporal(frame + sinusoid_positions(5, 16), src_key_padding_mask=~mask)
    ref = student.mlp(torch.cat([masked_mean(frame, mask, dim=1), masked_mean(ref_ordered, mask, dim=1)], dim=-1))
    torch.testing.assert_close(feature, ref)
    torch.testing.assert_close(ordered, ref_ordered)
    grads = torch.autograd.grad(feature.sum() + ordered.sum(), [patches, student.queries])
    ref_grads = torch.autograd.grad(ref.sum() + ref_ordered.sum(), [patches, student.queries])
    for a, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, r)
