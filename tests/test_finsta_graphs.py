"""Finsta scene graphs: the rule-based caption parser, TSG batching, the patch-slot DSG, detections, HSG."""

import pytest
import torch

pytest.importorskip("torch_geometric")

from vl_adapters.adapters.finsta.holistic import build_holistic, cross_modal_edges  # noqa: E402
from vl_adapters.adapters.finsta.text_graph import (  # noqa: E402
    EDGE_TYPES,
    NODE_TYPES,
    RuleBasedParser,
    TextGraphBuilder,
    get_parser,
    to_networkx,
)
from vl_adapters.adapters.finsta.video_graph import dsg_from_detections, dsg_from_patches  # noqa: E402

pytestmark = pytest.mark.graph

# caption -> (objects with attributes, (subject, predicate, object) triples, predicate attributes, event times)
CAPTIONS = [
    ("a red circle moves left, then a blue square appears",
     [("circle", ["red"]), ("square", ["blue"])],
     [("circle", "moves", None), ("square", "appears", None)], [["left"], []], [0, 1]),
    ("the green triangle turns yellow after the red square disappears",
     [("triangle", ["green"]), ("square", ["red"])],
     [("triangle", "turns", None), ("square", "disappears", None)], [["yellow"], []], [1, 0]),
    ("first the white square moves down, then the purple circle moves right",
     [("square", ["white"]), ("circle", ["purple"])],
     [("square", "moves", None), ("circle", "moves", None)], [["down"], ["right"]], [0, 1]),
    ("a red circle, a blue square and a green triangle",
     [("circle", ["red"]), ("square", ["blue"]), ("triangle", ["green"])], [], [], []),
    ("a red circle at the top left and a blue square in the centre",
     [("circle", ["red"]), ("left", ["top"]), ("square", ["blue"]), ("centre", [])],
     [("circle", "at", "left"), ("square", "in", "centre")], [[], []], [0, 1]),
    ("a man is driving a car down the road",
     [("man", []), ("car", []), ("road", [])],
     [("man", "driving", "car"), ("man", "down", "road")], [[], []], [0, 0]),
    ("a woman with a hat slices a tomato quickly",
     [("woman", []), ("hat", []), ("tomato", [])],
     [("woman", "with", "hat"), ("woman", "slices", "tomato")], [[], ["quickly"]], [0, 0]),
    ("two men play tennis in a court",
     [("men", []), ("tennis", []), ("court", [])],
     [("men", "play", "tennis"), ("men", "in", "court")], [[], []], [0, 0]),
]


@pytest.mark.parametrize(("caption", "objects", "triples", "modifiers", "times"), CAPTIONS)
def test_rule_parser_table(caption, objects, triples, modifiers, times):
    parsed = RuleBasedParser()(caption)
    assert parsed.objects == objects
    assert parsed.triples() == triples
    assert [r[3] for r in parsed.relations] == modifiers
    assert [r[4] for r in parsed.relations] == times


def test_graph_nodes_edges_and_cache():
    graph = to_networkx(RuleBasedParser()("the green triangle turns yellow after the red square disappears"))
    kinds = sorted(graph.nodes[n]["kind"] for n in graph.nodes)
    assert kinds.count("object") == 2 and kinds.count("attribute") == 2 and kinds.count("predicate") == 2
    assert kinds.count("predicate_attribute") == 1 and kinds.count("sentence") == 1
    words = {n: graph.nodes[n]["word"] for n in graph.nodes}
    before = [(words[u], words[v]) for u, v, k in graph.edges(data="kind") if k == "before"]
    assert before == [("disappears", "turns")]  # "after" puts the second clause first
    builder = TextGraphBuilder("rule", buckets=97)
    texts = ["a man is driving a car", "a red circle moves left", "a man is driving a car"]
    batch = builder(texts)
    assert batch.num_graphs == 3 and builder._data.cache_info().misses == 2
    assert int(batch.edge_index.max()) < batch.num_nodes
    assert batch.edge_type.max() < 2 * len(EDGE_TYPES) and batch.node_type.max() < len(NODE_TYPES)
    # an edge and its reverse come in pairs
    assert batch.edge_index.shape[1] % 2 == 0
    with pytest.raises(TypeError, match="list of caption strings"):
        builder("not a list")
    with pytest.raises(ValueError, match="parser must be"):
        get_parser("nltk")


def moving_object_tokens(frames=4, grid=(6, 6), channels=16, seed=0):
    """Background + a still object A at (1, 1) + an object B moving one column right per frame along row 4."""
    g = torch.Generator().manual_seed(seed)
    background, a, b = torch.randn(3, channels, generator=g) * 3
    gh, gw = grid
    tokens = background.expand(frames, gh, gw, channels).clone() + 0.05 * torch.randn(frames, gh, gw, channels, generator=g)
    b_cols = [1 + t for t in range(frames)]
    for t in range(frames):
        tokens[t, 1, 1] = a
        tokens[t, 4, b_cols[t]] = b
    return tokens.reshape(1, frames, gh * gw, channels), a, b, b_cols


def slot_of(dsg, vector):
    """[T] index of the slot whose mean token is closest to `vector` in each frame."""
    return torch.nn.functional.cosine_similarity(dsg.x[0], vector, dim=-1).argmax(-1)


def test_dsg_temporal_edges_follow_the_moving_object():
    tokens, a, b, b_cols = moving_object_tokens()
    frames, grid, k = tokens.shape[1], (6, 6), 3
    dsg = dsg_from_patches(tokens, grid, torch.ones(1, frames, dtype=torch.bool), slots=k)
    slot_a, slot_b = slot_of(dsg, a), slot_of(dsg, b)
    for t in range(frames):
        assert slot_a[t] != slot_b[t]
        # centroid of B's slot is at B's patch centre (y, x)
        expected = torch.tensor([(4 + 0.5) / 6, (b_cols[t] + 0.5) / 6])
        assert torch.allclose(dsg.pos[0, t, slot_b[t]], expected, atol=0.02)
    edges = {tuple(e) for e in dsg.temporal_edge_index.t().tolist()}
    node = lambda t, s: t * k + int(s)  # noqa: E731
    for t in range(frames - 1):
        assert (node(t, slot_b[t]), node(t + 1, slot_b[t + 1])) in edges
        assert (node(t, slot_a[t]), node(t + 1, slot_a[t + 1])) in edges
    # B's temporal edges move right (dx > 0), A's stay put; spatial edges stay within a frame
    attr = dict(zip(map(tuple, dsg.temporal_edge_index.t().tolist()), dsg.temporal_edge_attr, strict=True))
    assert attr[(node(0, slot_b[0]), node(1, slot_b[1]))][1] > 0.1
    assert attr[(node(0, slot_a[0]), node(1, slot_a[1]))][:3].abs().max() < 0.02
    assert torch.equal(dsg.spatial_edge_index[0] // k, dsg.spatial_edge_index[1] // k)
    assert dsg.spatial_edge_index.shape[1] == frames * k * (k - 1)
    # the predecessor of B's slot at t+1 is B's slot at t
    assert all(dsg.predecessor[0, t + 1, slot_b[t + 1]] == slot_b[t] for t in range(frames - 1))


def test_dsg_padded_frames_have_no_edges():
    tokens, *_ = moving_object_tokens()
    mask = torch.tensor([[True, True, False, False]])
    dsg = dsg_from_patches(tokens, (6, 6), mask, slots=3)
    assert int(dsg.spatial_edge_index.max()) < 2 * 3 and int(dsg.temporal_edge_index.max()) < 2 * 3
    assert dsg.temporal_edge_index.shape[1] == 3


def test_detection_hook():
    tokens, a, b, b_cols = moving_object_tokens()
    frames = tokens.shape[1]
    boxes = torch.zeros(1, frames, 2, 4)
    for t in range(frames):
        boxes[0, t, 0] = torch.tensor([1 / 6, 1 / 6, 2 / 6, 2 / 6])  # A, (x0, y0, x1, y1)
        boxes[0, t, 1] = torch.tensor([b_cols[t] / 6, 4 / 6, (b_cols[t] + 1) / 6, 5 / 6])  # B
    dsg = dsg_from_detections(tokens, (6, 6), torch.ones(1, frames, dtype=torch.bool), boxes,
                              labels=torch.tensor([[[3, 7]] * frames]))
    assert torch.allclose(dsg.x[0, :, 1], b.expand(frames, -1), atol=0.2)
    assert sorted(map(tuple, dsg.temporal_edge_index.t().tolist())) == [(t * 2 + s, (t + 1) * 2 + s)
                                                                      for t in range(frames - 1) for s in (0, 1)]
    with pytest.raises(ValueError, match="boxes must be"):
        dsg_from_detections(tokens, (6, 6), torch.ones(1, frames, dtype=torch.bool), boxes[..., :2])


def test_holistic_cross_edges_link_matching_nodes_of_the_paired_video():
    slots = torch.eye(4)[None].repeat(2, 1, 1)  # 2 videos x 4 slots, one-hot features
    slots[1] = torch.eye(4).roll(1, 0)
    objects = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])  # text 0's object, text 1's object
    obj, slot, sim = cross_modal_edges(objects, torch.tensor([0, 1]), slots, torch.tensor([0, 1]), 0.5)
    assert obj.tolist() == [0, 1] and slot.tolist() == [0, 4 + 3] and torch.allclose(sim, torch.ones(2))
    # video 1 also has a slot equal to text 0's object (flat 5), but text 0 is paired with video 0
    graph = build_holistic(objects, torch.zeros(2, 0, dtype=torch.long), torch.tensor([0, 1]), torch.tensor([0, 1]),
                           slots.reshape(8, 4), torch.zeros(2, 0, dtype=torch.long), 4, torch.tensor([0, 1]), 0.5)
    assert graph.cross_edge_index.tolist() == [[0, 1], [2, 2 + 7]] and graph.edge_index.shape[1] == 4
