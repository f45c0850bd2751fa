"""Textual scene graphs (TSG): caption -> objects, attributes, predicates, predicate attributes.

Parsers are pluggable (`get_parser`); the default is a dependency-free rule-based parser written for short
caption English and the synthetic benchmark's templates; a spaCy dependency parser is used when spaCy and
an English model are installed. Parsing runs in Python once per unique string (cached); the forward pass
only sees the batched torch-geometric tensors.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import networkx as nx
import torch
from torch_geometric.data import Batch, Data

from .parser import ParsedCaption, RuleBasedParser, get_parser  # noqa: F401 (re-exported)

NODE_TYPES = ("object", "attribute", "predicate", "predicate_attribute", "sentence")
# Edge types; each comes with a reverse type (index + len(EDGE_TYPES)) in the batched graph.
EDGE_TYPES = ("attribute_of", "subject_of", "object_of", "modifies", "before", "in_sentence")


# ---- graphs ------------------------------------------------------------------------------------------
def to_networkx(parsed: ParsedCaption) -> nx.DiGraph:
    """Nodes carry `kind` (NODE_TYPES) and `word`; edges carry `kind` (EDGE_TYPES). Node 0 is the
    sentence node, linked to every object and predicate so no graph is empty or disconnected."""
    graph = nx.DiGraph()
    graph.add_node(0, kind="sentence", word="[sentence]")
    object_node = {}
    for k, (noun, attributes) in enumerate(parsed.objects):
        node = object_node[k] = graph.number_of_nodes()
        graph.add_node(node, kind="object", word=noun)
        graph.add_edge(node, 0, kind="in_sentence")
        for attribute in attributes:
            a = graph.number_of_nodes()
            graph.add_node(a, kind="attribute", word=attribute)
            graph.add_edge(a, node, kind="attribute_of")
    predicates_by_time: dict[int, list[int]] = {}
    for subject, predicate, obj, modifiers, time in parsed.relations:
        p = graph.number_of_nodes()
        graph.add_node(p, kind="predicate", word=predicate, time=time)
        graph.add_edge(p, 0, kind="in_sentence")
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


def word_bucket(word: str, buckets: int) -> int:
    return zlib.crc32(word.encode()) % buckets  # stable across runs, unlike hash()


def to_data(graph: nx.DiGraph, buckets: int) -> Data:
    """networkx -> torch-geometric Data: word [n] (hashed), node_type [n], edge_index [2, 2e] with both
    directions, edge_type [2e] (reverse edges typed index + len(EDGE_TYPES)), time [n] (-1 off predicates)."""
    nodes = sorted(graph.nodes)
    word = torch.tensor([word_bucket(graph.nodes[n]["word"], buckets) for n in nodes], dtype=torch.long)
    node_type = torch.tensor([NODE_TYPES.index(graph.nodes[n]["kind"]) for n in nodes], dtype=torch.long)
    time = torch.tensor([graph.nodes[n].get("time", -1) for n in nodes], dtype=torch.long)
    edges = list(graph.edges(data="kind"))
    if edges:
        src = torch.tensor([u for u, _, _ in edges], dtype=torch.long)
        dst = torch.tensor([v for _, v, _ in edges], dtype=torch.long)
        kind = torch.tensor([EDGE_TYPES.index(k) for _, _, k in edges], dtype=torch.long)
        edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)
        edge_type = torch.cat([kind, kind + len(EDGE_TYPES)])
    else:
        edge_index, edge_type = torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return Data(word=word, node_type=node_type, time=time, edge_index=edge_index, edge_type=edge_type,
                num_nodes=len(nodes))


class TextGraphBuilder:
    """Captions -> a torch-geometric Batch of TSGs; parse and conversion cached per unique string."""

    def __init__(self, parser="auto", buckets: int = 8192, cache_size: int = 65536) -> None:
        self.parser = get_parser(parser)
        self.buckets = buckets
        self._data = lru_cache(maxsize=cache_size)(self._build)

    def parse(self, text: str) -> ParsedCaption:
        return self.parser(text)

    def _build(self, text: str) -> Data:
        return to_data(to_networkx(self.parser(text)), self.buckets)

    def __call__(self, texts: list[str]) -> Batch:
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError("finsta TextGraphBuilder expects a list of caption strings")
        return Batch.from_data_list([self._data(t) for t in texts])
