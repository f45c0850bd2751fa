"""Textual scene graphs (TSG): caption -> objects, attributes, predicates, predicate attributes.

Parsing (parser.py) and graph conversion run in Python once per unique string (cached); the forward pass
only sees the batched tensors (collate). A node's word is an index into the builder's vocabulary,
whose strings the adapter encodes with the frozen text tower. There is no sentence node and no sentence
embedding on the nodes: whatever the graph encoder knows of a caption comes through its words and its
structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import networkx as nx
import torch
from torch import Tensor
from torch_geometric.data import Data

from .parser import ParsedCaption, RuleBasedParser, get_parser  # noqa: F401 (re-exported)

NODE_TYPES = ("object", "attribute", "predicate", "predicate_attribute")
# Edge types; each comes with a reverse type (index + len(EDGE_TYPES)) in the batched graph.
EDGE_TYPES = ("attribute_of", "subject_of", "object_of", "modifies", "before")


def to_networkx(parsed: ParsedCaption) -> nx.DiGraph:
    """Nodes carry `kind` (NODE_TYPES), `word` and, on predicates, the event `time`; edges carry `kind`
    (EDGE_TYPES). "before" links every predicate of one event time to every predicate of the next."""
    graph = nx.DiGraph()
    object_node = {}
    for k, (noun, attributes) in enumerate(parsed.objects):
        node = object_node[k] = graph.number_of_nodes()
        graph.add_node(node, kind="object", word=noun)
        for attribute in attributes:
            a = graph.number_of_nodes()
            graph.add_node(a, kind="attribute", word=attribute)
            graph.add_edge(a, node, kind="attribute_of")
    predicates_by_time: dict[int, list[int]] = {}
    for subject, predicate, obj, modifiers, time in parsed.relations:
        p = graph.number_of_nodes()
        graph.add_node(p, kind="predicate", word=predicate, time=time)
        graph.add_edge(object_node[subject], p, kind="subject_of")
        if obj is not None:
            graph.add_edge(p, object_node[obj], kind="object_of")
        for modifier in modifiers:
            m = graph.number_of_nodes()
            graph.add_node(m, kind="predicate_attribute", word=modifier)
            graph.add_edge(m, p, kind="modifies")
        predicates_by_time.setdefault(time, []).append(p)
    times = sorted(predicates_by_time)
    for earlier, later in zip(times, times[1:], strict=False):
        for a in predicates_by_time[earlier]:
            for b in predicates_by_time[later]:
                graph.add_edge(a, b, kind="before")
    return graph


class TextGraph(NamedTuple):
    """One caption's TSG (to_tensors), held as plain tensors so that a batch is a few concatenations."""

    word: Tensor
    node_type: Tensor
    time: Tensor
    edge_index: Tensor
    edge_type: Tensor


def to_tensors(graph: nx.DiGraph, word_id) -> TextGraph:
    """networkx -> TextGraph: word [n] (word_id(str) -> int), node_type [n], time [n] (event rank of a
    predicate, -1 elsewhere), edge_index [2, 2e] with both directions, edge_type [2e] (reverse edges typed
    index + len(EDGE_TYPES))."""
    # two tensor constructions from Python lists: a caption's graph is a few nodes, so per-call overhead is
    # what a new caption costs (every caption is new in a run's first epoch)
    nodes = [graph.nodes[n] for n in sorted(graph.nodes)]
    word, node_type, time = torch.tensor([[word_id(n["word"]) for n in nodes], [NODE_TYPES.index(n["kind"]) for n in nodes],
                                          [n.get("time", -1) for n in nodes]], dtype=torch.long)
    edges = list(graph.edges(data="kind"))
    src, dst = [u for u, _, _ in edges], [v for _, v, _ in edges]
    kind = [EDGE_TYPES.index(k) for _, _, k in edges]
    both = torch.tensor([src + dst, dst + src, kind + [k + len(EDGE_TYPES) for k in kind]], dtype=torch.long)
    edge_index, edge_type = both[:2], both[2]
    return TextGraph(word, node_type, time, edge_index, edge_type)


def to_data(graph: nx.DiGraph, word_id) -> Data:
    """The same graph as a torch-geometric Data (fields as in to_tensors)."""
    tensors = to_tensors(graph, word_id)
    return Data(**tensors._asdict(), num_nodes=tensors.word.shape[0])


@dataclass
class TextGraphBatch:
    """The fields of torch-geometric's Batch.from_data_list over TextGraphs that the TSG encoder reads: node
    tensors concatenated, edge_index offset to batch node ids, batch [n] the caption of each node."""

    word: Tensor
    node_type: Tensor
    time: Tensor
    edge_index: Tensor
    edge_type: Tensor
    batch: Tensor
    num_graphs: int

    @property
    def num_nodes(self) -> int:
        return self.word.shape[0]

    def to(self, device) -> TextGraphBatch:
        return TextGraphBatch(*(getattr(self, f).to(device) for f in
                                ("word", "node_type", "time", "edge_index", "edge_type", "batch")), self.num_graphs)


def collate(graphs: list[TextGraph]) -> TextGraphBatch:
    """Batch.from_data_list's result for these fields, without its per-graph Python bookkeeping (1.3 ms for
    32 captions, against 0.3 ms here)."""
    nodes = torch.tensor([g.word.shape[0] for g in graphs], dtype=torch.long)
    edges = torch.tensor([g.edge_type.shape[0] for g in graphs], dtype=torch.long)
    offset = (torch.cumsum(nodes, 0) - nodes).repeat_interleave(edges)
    word, node_type, time, edge_index, edge_type = (torch.cat(field, dim=-1) for field in zip(*graphs, strict=True))
    return TextGraphBatch(word, node_type, time, edge_index + offset, edge_type,
                          torch.arange(len(graphs)).repeat_interleave(nodes), len(graphs))


class TextGraphBuilder:
    """Captions -> a TextGraphBatch of TSGs; parse and conversion cached per unique string. Node words index
    `self.words`, a vocabulary that grows as captions arrive (ids never change)."""

    def __init__(self, parser="auto", cache_size: int = 65536) -> None:
        self.parser = get_parser(parser)
        self.words: list[str] = []
        self._ids: dict[str, int] = {}
        self._data = lru_cache(maxsize=cache_size)(self._build)

    def parse(self, text: str) -> ParsedCaption:
        return self.parser(text)

    def word_id(self, word: str) -> int:
        if word not in self._ids:
            self._ids[word] = len(self.words)
            self.words.append(word)
        return self._ids[word]

    def _build(self, text: str) -> TextGraph:
        return to_tensors(to_networkx(self.parser(text)), self.word_id)

    def __call__(self, texts: list[str]) -> TextGraphBatch:
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError("finsta TextGraphBuilder expects a list of caption strings")
        return collate([self._data(t) for t in texts])
