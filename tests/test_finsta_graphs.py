"""Finsta scene graphs: TSG structure and batching, tracked DSG slots (a moving object keeps its slot), padded
frames, detections, and the HSG's cross-modal edges."""

import numpy as np
import pytest
import torch

pytest.importorskip("torch_geometric")

import vl_adapters as vla  # noqa: E402
from vl_adapters.adapters.finsta.holistic import build_holistic, subgraphs  # noqa: E402
from vl_adapters.adapters.finsta.parser import RuleBasedParser, get_parser  # noqa: E402
from vl_adapters.adapters.finsta.text_graph import EDGE_TYPES, NODE_TYPES, TextGraphBuilder, to_data, to_networkx  # noqa: E402
from vl_adapters.adapters.finsta.video_graph import dsg_from_detections, dsg_from_patches  # noqa: E402
from vl_adapters.data.synthetic import ShapeObject, render_objects  # noqa: E402

pytestmark = pytest.mark.graph


def test_graph_nodes_edges_and_cache():
    graph = to_networkx(RuleBasedParser()("the green triangle turns yellow after the red square disappears"))
    kinds = sorted(graph.nodes[n]["kind"] for n in graph.nodes)
    assert kinds.count("object") == 2 and kinds.count("attribute") == 2 and kinds.count("predicate") == 2
    assert kinds.count("predicate_attribute") == 1 and set(kinds) <= set(NODE_TYPES)
    words = {n: graph.nodes[n]["word"] for n in graph.nodes}
    before = [(words[u], words[v]) for u, v, k in graph.edges(data="kind") if k == "before"]
    assert before == [("disappears", "turns")]  # "after" puts the second clause first
    builder = TextGraphBuilder("rule")
    texts = ["a man is driving a car", "a red circle moves left", "a man is driving a car"]
    batch = builder(texts)
    assert batch.num_graphs == 3 and builder._data.cache_info().misses == 2
    assert int(batch.edge_index.max()) < batch.num_nodes
    assert batch.edge_type.max() < 2 * len(EDGE_TYPES) and batch.node_type.max() < len(NODE_TYPES)
    assert batch.edge_index.shape[1] % 2 == 0  # an edge and its reverse come in pairs
    # node words index the builder's vocabulary; ids never change as it grows
    assert [builder.words[i] for i in batch.word[batch.batch == 0].tolist()] == ["man", "car", "driving"]
    builder(["a blue square appears"])
    assert [builder.words[i] for i in builder(texts).word[:3].tolist()] == ["man", "car", "driving"]
    with pytest.raises(TypeError, match="list of caption strings"):
        builder("not a list")
    with pytest.raises(ValueError, match="parser must be"):
        get_parser("nltk")


def test_collate_matches_torch_geometric_batching():
    from torch_geometric.data import Batch, Data

    builder = TextGraphBuilder("rule")
    texts = ["the green triangle turns yellow after the red square disappears", "a red circle moves left",
             "circle", "first a blue square appears, then it moves up", "a red circle moves left"]
    batch = builder(texts)
    def reference_data(text):  # one caption's Data, written out per node and edge
        graph = to_networkx(builder.parse(text))
        nodes = [graph.nodes[n] for n in sorted(graph.nodes)]
        edges = list(graph.edges(data="kind"))
        src, dst = [u for u, _, _ in edges], [v for _, v, _ in edges]
        kind = [EDGE_TYPES.index(k) for _, _, k in edges]
        return Data(word=torch.tensor([builder.word_id(n["word"]) for n in nodes]),
                    node_type=torch.tensor([NODE_TYPES.index(n["kind"]) for n in nodes]),
                    time=torch.tensor([n.get("time", -1) for n in nodes]),
                    edge_index=torch.tensor([src + dst, dst + src], dtype=torch.long).view(2, -1),
                    edge_type=torch.tensor(kind + [k + len(EDGE_TYPES) for k in kind], dtype=torch.long),
                    num_nodes=len(nodes))

    reference = Batch.from_data_list([reference_data(t) for t in texts])
    assert torch.equal(to_data(to_networkx(builder.parse(texts[0])), builder.word_id).edge_index,
                       reference_data(texts[0]).edge_index)
    assert batch.num_graphs == reference.num_graphs == len(texts) and batch.num_nodes == reference.num_nodes
    for field in ("word", "node_type", "time", "edge_index", "edge_type", "batch"):
        assert torch.equal(getattr(batch, field), getattr(reference, field)), field
    assert batch.edge_index[:, batch.batch[batch.edge_index[0]] == 3].min() > 0  # offsets applied


def test_same_words_in_other_roles_make_another_graph():
    parser = RuleBasedParser()
    chases = lambda text: {(graph.nodes[u]["word"], k, graph.nodes[v]["word"])  # noqa: E731
                           for graph in [to_networkx(parser(text))] for u, v, k in graph.edges(data="kind")}
    dog_first, cat_first = chases("the dog chases the cat"), chases("the cat chases the dog")
    assert ("dog", "subject_of", "chases") in dog_first and ("chases", "object_of", "cat") in dog_first
    assert dog_first != cat_first


def tokens_with_a_moving_object(frames=8, grid=(7, 7), channels=32, seed=0, noise=0.1):
    """Background, a still object A, an object B (2x2 patches) moving right along rows 4-5, and an object C
    that appears halfway: per-frame seeding gives C a slot only in the second half, which reshuffles slots."""
    g = torch.Generator().manual_seed(seed)
    background, a, b, c = torch.randn(4, channels, generator=g) * 2
    gh, gw = grid
    tokens = background + noise * torch.randn(frames, gh, gw, channels, generator=g)
    columns = []
    noisy = lambda v, *shape: v + noise * torch.randn(*shape, channels, generator=g)  # noqa: E731
    for t in range(frames):
        tokens[t, 1, 1] = noisy(a)
        column = 1 + t * (gw - 3) // (frames - 1)
        tokens[t, 4:6, column:column + 2] = noisy(b, 2, 2)
        if t >= frames // 2:
            tokens[t, 0, 5:7] = noisy(c, 2)
        columns.append((column + 1) / gw)  # centre of B's 2x2 block, in [0, 1]
    return tokens.reshape(1, frames, gh * gw, channels), b, torch.tensor(columns)


@pytest.mark.parametrize("seed", [0, 3, 5, 7])
def test_a_moving_object_keeps_its_slot(seed):
    tokens, b, columns = tokens_with_a_moving_object(seed=seed)
    frames, k = tokens.shape[1], 4
    dsg = dsg_from_patches(tokens, (7, 7), torch.ones(1, frames, dtype=torch.bool), slots=k)
    slot = torch.nn.functional.cosine_similarity(dsg.x[0], b, dim=-1).argmax(-1)  # [T]: B's slot in each frame
    assert (slot == slot[0]).all(), slot.tolist()
    x = dsg.pos[0, torch.arange(frames), slot, 1]
    assert (x[1:] >= x[:-1] - 0.02).all() and x[-1] - x[0] > 0.3  # its centroid follows B to the right
    assert (x - columns).abs().max() < 0.15
    # temporal edges and predecessors follow the slot; spatial edges stay within a frame
    edges = {tuple(e) for e in dsg.temporal_edge_index.t().tolist()}
    s = int(slot[0])
    assert all((t * k + s, (t + 1) * k + s) in edges for t in range(frames - 1))
    assert (dsg.predecessor[0, 1:, s] == s).all()
    assert torch.equal(dsg.spatial_edge_index[0] // k, dsg.spatial_edge_index[1] // k)
    assert dsg.spatial_edge_index.shape[1] == frames * k * (k - 1)


@pytest.mark.parametrize("seed", range(10))
def test_at_the_default_slot_count_the_mover_keeps_its_slots(seed):
    """At the default 6 slots (4 above), B's 2x2 block is split over two or three slots, each of which holds
    it in every frame (the single-slot test above then fails for 6 of 10 seeds, B's halves trading the best
    cosine); together their centroid follows B."""
    from vl_adapters.adapters.finsta import FinstaConfig

    tokens, b, columns = tokens_with_a_moving_object(seed=seed)
    frames, k = tokens.shape[1], FinstaConfig().slots
    dsg = dsg_from_patches(tokens, (7, 7), torch.ones(1, frames, dtype=torch.bool), slots=k)
    holds = torch.nn.functional.cosine_similarity(dsg.x[0], b, dim=-1) > 0.9  # [T, K]
    assert holds[0].any() and (holds == holds[0]).all(), holds.int().tolist()
    weight = dsg.mass[0] * holds
    x = (weight * dsg.pos[0, ..., 1]).sum(-1) / weight.sum(-1)
    assert (x - columns).abs().max() < 0.15


def rendered_scenes(size, frames=8, count=12, seed=0):
    """Rendered videos of one shape crossing the frame (left to right or back), a still white square, and in
    some videos a shape that appears halfway or a recolouring of the mover: frames [1,T,3,H,W], truth [T,2]."""
    rng = np.random.default_rng(seed)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    for s in range(count):
        shape, colour = ["circle", "square", "triangle"][s % 3], ["red", "green", "blue", "yellow"][s % 4]
        y = rng.uniform(0.2, 0.8) * size
        xs = np.linspace(0.2 * size, 0.8 * size, frames)[:: 1 if s % 2 else -1]
        still_y = (0.15 if y > size / 2 else 0.85) * size
        images, truth = [], []
        for t in range(frames):
            objects = [ShapeObject("square", "white", size * 0.5, still_y)]
            if s % 4 == 1 and t >= frames // 2:
                objects.append(ShapeObject("triangle", "purple", size * 0.2, still_y))
            mover = "purple" if s % 4 == 3 and t >= frames // 2 else colour
            objects.append(ShapeObject(shape, mover, float(xs[t]), y))
            images.append(render_objects(objects, size, radius=max(3, size // 10)))
            truth.append([y / size, xs[t] / size])
        video = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        yield ((video - mean) / std)[None], torch.tensor(truth, dtype=torch.float32)


def test_slots_track_rendered_shapes_through_a_real_backbone():
    """Rendered videos through the tiny backbone trained on the synthetic data: in each frame, the slot whose
    centroid is nearest the moving shape should be the same slot all along. Per-frame seeding (before this
    change) kept it in 55% of frames and never for a whole video; tracked slots keep it in 75% and for 6 of the
    12 whole videos on the shipped backbone (88% and 9 on the earlier 600-step one)."""
    backbone = vla.load_backbone("tiny:synthetic", device="cpu")
    videos, truths = zip(*rendered_scenes(backbone.dims.image_size), strict=True)
    with torch.no_grad():
        features = backbone.encode_video(torch.cat(videos))
    mask = torch.ones(features.batch_size, features.num_frames, dtype=torch.bool)
    dsg = dsg_from_patches(features.patch_tokens.float(), features.grid, mask, slots=4)
    nearest = (dsg.pos - torch.stack(truths)[:, :, None]).norm(dim=-1).argmin(-1)  # [videos, T]
    kept = (nearest == nearest.mode(-1).values[:, None]).float().mean(-1)
    assert kept.mean() >= 0.7 and (kept == 1).sum() >= 5, kept


def test_dsg_padded_frames_have_no_edges():
    tokens, *_ = tokens_with_a_moving_object(frames=4)
    mask = torch.tensor([[True, True, False, False]])
    dsg = dsg_from_patches(tokens, (7, 7), mask, slots=3)
    assert int(dsg.spatial_edge_index.max()) < 2 * 3 and int(dsg.temporal_edge_index.max()) < 2 * 3
    assert dsg.temporal_edge_index.shape[1] == 3
    # padded frames do not pull the slots: the real frames' graph is the same with any padding content
    noisy = tokens.clone()
    noisy[:, 2:] = torch.randn_like(noisy[:, 2:]) * 10
    assert torch.allclose(dsg_from_patches(noisy, (7, 7), mask, slots=3).x[:, :2], dsg.x[:, :2], atol=1e-5)


def test_detection_hook():
    tokens, *_ = tokens_with_a_moving_object(frames=4)
    frames = tokens.shape[1]
    boxes = torch.zeros(1, frames, 2, 4)
    for t in range(frames):
        boxes[0, t, 0] = torch.tensor([1 / 7, 1 / 7, 2 / 7, 2 / 7])  # A, (x0, y0, x1, y1)
        boxes[0, t, 1] = torch.tensor([0.5, 4 / 7, 0.7, 6 / 7])
    dsg = dsg_from_detections(tokens, (7, 7), torch.ones(1, frames, dtype=torch.bool), boxes,
                              labels=torch.tensor([[[3, 7]] * frames]))
    assert sorted(map(tuple, dsg.temporal_edge_index.t().tolist())) == [(t * 2 + s, (t + 1) * 2 + s)
                                                                      for t in range(frames - 1) for s in (0, 1)]
    with pytest.raises(ValueError, match="boxes must be"):
        dsg_from_detections(tokens, (7, 7), torch.ones(1, frames, dtype=torch.bool), boxes[..., :2])


def test_subgraph_copies_renumber_edges():
    node_graph = torch.tensor([0, 0, 1, 1, 1])
    edge_index = torch.tensor([[2, 0, 3], [3, 1, 4]])  # graph 1: 2->3, 3->4; graph 0: 0->1
    nodes, pick, edges, renumbered = subgraphs(node_graph, edge_index, 2, torch.tensor([1, 0, 1]))
    assert nodes.tolist() == [2, 3, 4, 0, 1, 2, 3, 4] and pick.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert renumbered.t().tolist() == [[0, 1], [1, 2], [3, 4], [5, 6], [6, 7]]
    assert torch.equal(nodes[renumbered], edge_index[:, edges])


def test_holistic_cross_edges_link_each_object_to_its_best_slot_in_the_paired_video():
    d, t, k = 4, 3, 2
    text_nodes = torch.eye(d)[:3]  # caption 0: object (e0) + predicate (e1); caption 1: object (e2)
    text_graph, objects = torch.tensor([0, 0, 1]), torch.tensor([True, False, True])
    video = torch.zeros(2, t, k, d)
    video[0, :, 1, 0] = 1.0  # video 0: slot 1 looks like caption 0's object in every frame
    video[1, :, 0, 2] = 1.0  # video 1: slot 0 looks like caption 1's object
    video[1, :, 1, 0] = 1.0  # ... and slot 1 like caption 0's object, but caption 0 is paired with video 0
    frame_mask = torch.tensor([[True, True, False], [True, True, True]])
    none = torch.zeros(2, 0, dtype=torch.long)
    graph = build_holistic(text_nodes, text_graph, none, torch.zeros(0, d), objects, video, none, torch.zeros(0, d),
                           frame_mask, text_nodes, video, torch.tensor([[0, 0], [1, 1]]), 0.5, num_texts=2)
    n_text = graph.num_text_nodes
    assert n_text == 3 and graph.text_pair.tolist() == [0, 0, 1]
    cross = sorted(map(tuple, graph.cross_edge_index.t().tolist()))
    # caption 0's object -> slot 1 of video 0 in its 2 real frames; caption 1's object -> slot 0 of video 1 x3
    expected = [(0, n_text + f * k + 1) for f in range(2)] + [(2, n_text + t * k + f * k) for f in range(3)]
    assert cross == sorted(expected)
    # a threshold above any cosine removes every cross edge (the ablation)
    ablated = build_holistic(text_nodes, text_graph, none, torch.zeros(0, d), objects, video, none, torch.zeros(0, d),
                             frame_mask, text_nodes, video, torch.tensor([[0, 0], [1, 1]]), 2.0, num_texts=2)
    assert ablated.cross_edge_index.shape[1] == 0 and ablated.edge_index.shape[1] == 0


def test_holistic_cross_similarities_match_the_per_object_reference():
    """build_holistic scores every caption object against every slot at once; each cross edge must carry the
    cosine (and gradient) of its own object and its pair's video, as the per-copy einsum gives them."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(7)
    b, t, k, d = 3, 4, 5, 8
    text_graph = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    objects = torch.tensor([True, False, True, True, False, False, True, True])
    object_key = torch.randn(8, d, generator=g, requires_grad=True)
    slot_key = torch.randn(b, t, k, d, generator=g, requires_grad=True)
    frame_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 1, 1]], dtype=torch.bool)
    pairs = torch.tensor([[0, 0], [1, 1], [2, 2], [0, 2], [2, 1], [1, 0]])
    none = torch.zeros(2, 0, dtype=torch.long)
    graph = build_holistic(torch.randn(8, d, generator=g), text_graph, none, torch.zeros(0, d), objects,
                           torch.randn(b, t, k, d, generator=g), none, torch.zeros(0, d), frame_mask, object_key,
                           slot_key, pairs, 0.5, num_texts=3)
    tnodes = graph.node_source[: graph.num_text_nodes]
    rows = objects[tnodes].nonzero(as_tuple=True)[0]
    pair = graph.text_pair[rows]
    sims = torch.einsum("od,otkd->otk", F.normalize(object_key, dim=-1)[tnodes[rows]],
                        F.normalize(slot_key, dim=-1)[pairs[pair, 1]])
    best, slot = sims.max(-1)
    obj, frame = (frame_mask[pairs[pair, 1]] & (best > 0.5)).nonzero(as_tuple=True)
    slot_node = graph.num_text_nodes + pair[obj] * t * k + frame * k + slot[obj, frame]
    assert 0 < obj.shape[0] < frame_mask[pairs[pair, 1]].sum()  # the threshold drops some, keeps others
    assert torch.equal(graph.cross_edge_index, torch.stack([rows[obj], slot_node]))
    torch.testing.assert_close(graph.cross_similarity, best[obj, frame])
    probe = torch.randn(obj.shape[0], generator=g)
    grads = torch.autograd.grad((graph.cross_similarity * probe).sum(), [object_key, slot_key])
    for a, r in zip(grads, torch.autograd.grad((best[obj, frame] * probe).sum(), [object_key, slot_key]), strict=True):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("tracked", [True, False])
def test_dsg_edge_features_match_a_per_edge_reference(tracked):
    """build_graph computes the cosines once per frame's slot pairs; each edge must read its own pair's."""
    from vl_adapters.adapters.finsta.video_graph import build_graph

    g = torch.Generator().manual_seed(3)
    x, pos, mass = torch.randn(3, 4, 5, 16, generator=g), torch.rand(3, 4, 5, 2, generator=g), torch.rand(3, 4, 5, generator=g)
    frame_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 1]], dtype=torch.bool)
    dsg = build_graph(x, pos, mass, frame_mask, tracked=tracked)
    x, pos, mass = x.reshape(-1, 16), pos.reshape(-1, 2), mass.reshape(-1)
    for index, attr, temporal in ((dsg.spatial_edge_index, dsg.spatial_edge_attr, 0.0),
                                  (dsg.temporal_edge_index, dsg.temporal_edge_attr, 1.0)):
        src, dst = index
        delta = pos[dst] - pos[src]
        reference = torch.cat([delta, delta.norm(dim=-1, keepdim=True), (mass[dst].log() - mass[src].log())[:, None],
                               torch.nn.functional.cosine_similarity(x[src], x[dst], dim=-1)[:, None],
                               torch.full_like(delta[:, :1], temporal)], dim=-1)
        assert index.shape[1] > 0 and torch.allclose(attr, reference, atol=1e-6)


def test_slot_tracking_matches_the_patches_last_reference():
    """track_slots runs its assignment with slots before patches; the reference below is the direct form
    (softmax over the last dim of [B,T,N,K])."""
    import torch.nn.functional as F

    from vl_adapters.adapters.finsta.video_graph import grid_coordinates, track_slots

    g = torch.Generator().manual_seed(5)
    tokens, frame_mask = torch.randn(2, 6, 9, 8, generator=g), torch.tensor([[1] * 6, [1] * 4 + [0] * 2]).bool()
    coords = grid_coordinates((3, 3))
    x, position, mass = track_slots(tokens, coords, frame_mask, slots=4, iters=3)
    b, t, n, _ = tokens.shape
    unit, k = F.normalize(tokens, dim=-1), 4
    # the same seeds, then the assignment written patches-last
    real = frame_mask[..., None].expand(b, t, n).reshape(b, t * n)
    flat = unit.reshape(b, t * n, -1)
    mean = F.normalize((flat * real[..., None]).sum(1), dim=-1)
    seeds = [torch.einsum("bmc,bc->bm", flat, mean).masked_fill(~real, float("inf")).argmin(1)]
    picked = lambda m: flat[torch.arange(b), m]  # noqa: E731
    closest = (1 - torch.einsum("bmc,bc->bm", flat, picked(seeds[0]))).masked_fill(~real, float("-inf"))
    for _ in range(k - 1):
        seeds.append(closest.argmax(1))
        closest = torch.minimum(closest, 1 - torch.einsum("bmc,bc->bm", flat, picked(seeds[-1])))
    centre = torch.stack([picked(m) for m in seeds], dim=1)[:, None].expand(b, t, k, -1)
    frames = torch.arange(t, dtype=torch.float32)
    kernel = torch.exp(-(frames[:, None] - frames[None]).square() / 8.0) * frame_mask[:, None, :].float()
    pos = None
    for _ in range(3):
        logits = torch.einsum("btnc,btkc->btnk", unit, F.normalize(centre, dim=-1)) / 0.1
        if pos is not None:
            logits = logits - 0.5 * (coords[None, None, :, None] - pos[:, :, None]).square().sum(-1) / 0.1
        assign = logits.softmax(-1)
        weight = assign / assign.sum(2, keepdim=True)
        pos, mass_ref = torch.einsum("btnk,nd->btkd", weight, coords), assign.mean(2)
        share = torch.einsum("bts,bsk->btsk", kernel, mass_ref)
        centre = torch.einsum("btsk,bskc->btkc", share, torch.einsum("btnk,btnc->btkc", weight, unit)) / share.sum(2)[..., None]
    assert torch.allclose(position, pos, atol=1e-5) and torch.allclose(mass, mass_ref, atol=1e-5)
    assert torch.allclose(x, torch.einsum("btnk,btnc->btkc", weight, tokens), atol=1e-5)
