"""Textual scene graphs (TSG): caption -> objects, attributes, predicates, predicate attributes.

Parsers are pluggable (`get_parser`); the default is a dependency-free rule-based parser written for short
caption English and the synthetic benchmark's templates; a spaCy dependency parser is used when spaCy and
an English model are installed. Parsing runs in Python once per unique string (cached); the forward pass
only sees the batched torch-geometric tensors.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import networkx as nx
import torch
from torch_geometric.data import Batch, Data

NODE_TYPES = ("object", "attribute", "predicate", "predicate_attribute", "sentence")
# Edge types; each comes with a reverse type (index + len(EDGE_TYPES)) in the batched graph.
EDGE_TYPES = ("attribute_of", "subject_of", "object_of", "modifies", "before", "in_sentence")


@dataclass
class ParsedCaption:
    """objects: (noun, [attributes]); relations: (subject index, predicate, object index | None,
    [predicate attributes], event time)."""

    objects: list[tuple[str, list[str]]] = field(default_factory=list)
    relations: list[tuple[int, str, int | None, list[str], int]] = field(default_factory=list)

    def triples(self) -> list[tuple[str, str, str | None]]:
        name = [o[0] for o in self.objects]
        return [(name[s], p, None if o is None else name[o]) for s, p, o, _, _ in self.relations]


# ---- the rule-based parser --------------------------------------------------------------------------
_DETERMINERS = set("a an the this that these those some his her their its one two three four another each".split())
_AUX = set("is are was were be been being am has have had does do did will can could would should may".split())
_WH = set("what who whom where how why which when whose".split())
_ORDER_WORDS = set("first second third next finally later afterwards meanwhile then also".split())
_ADJECTIVES = set(
    """red blue green yellow orange purple pink black white gray grey brown golden silver dark light bright
    small big large tiny little huge tall short long young old new wooden metal plastic empty full open closed
    shiny round square-shaped happy sad funny cute pretty beautiful top bottom middle upper lower""".split()
)
_PREPOSITIONS = set(
    """on in at under over above below behind near beside down up into onto from to across along through with
    toward towards around past inside outside by next of for against among between""".split()
)
_PARTICLES = set("left right up down away back out off around forward backward together again fast here there".split())
_CONNECTORS = {"then": 1, "and then": 1, "before": 1, "after": -1, "while": 0, "as": 0, "when": 0, "and": 1, ",": 1}
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*|,")


class RuleBasedParser:
    """Clause-by-clause: [det] adj* noun (prep NP)* aux* verb (adverb|adjective)* [NP] (prep NP)*.

    A clause boundary is a comma or a connector (then, after, before, while, as, when, "and" before a new
    noun phrase); "after" puts its clause's event before the previous one's. Known failures: see docs."""

    name = "rule"

    def __call__(self, text: str) -> ParsedCaption:
        words = _WORD.findall(text.lower())
        parsed = ParsedCaption()
        time, clause_times = 0, []
        for connector, clause in _split_clauses(words):
            time = time + _CONNECTORS.get(connector, 1) if clause_times else 0
            clause_times.append(time)
            _parse_clause(clause, time, parsed)
        # event times -> ranks 0, 1, 2, ... (after may have made them negative)
        ranks = {t: r for r, t in enumerate(sorted({r[4] for r in parsed.relations}))}
        parsed.relations = [(s, p, o, a, ranks[t]) for s, p, o, a, t in parsed.relations]
        return parsed


def _split_clauses(words: list[str]) -> list[tuple[str | None, list[str]]]:
    clauses, current, connector = [], [], None
    i = 0
    while i < len(words):
        word = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if word == "and" and nxt == "then":
            word, i = "and then", i + 1
        boundary = word in (",", "then", "and then", "after", "before", "while", "when") or (
            word == "as" and current) or (word == "and" and (nxt in _DETERMINERS) and _has_verb(current))
        if boundary and current:
            clauses.append((connector, current))
            current, connector = [], word
        elif boundary:
            connector = word if connector in (None, ",", "and") else connector
        else:
            current.append(word)
        i += 1
    if current:
        clauses.append((connector, current))
    return clauses


def _has_verb(words: list[str]) -> bool:
    # a clause that already has a subject and something after it
    return len(words) >= 2


def _parse_np(words: list[str], i: int) -> tuple[tuple[str, list[str]] | None, int]:
    start = i
    while i < len(words) and (words[i] in _DETERMINERS or words[i] in _WH):
        i += 1
    attributes = []
    while i < len(words) and words[i] in _ADJECTIVES:
        attributes.append(words[i])
        i += 1
    if i < len(words) and words[i] not in _AUX | _PREPOSITIONS | _DETERMINERS and not words[i].endswith("ly"):
        return (words[i], attributes), i + 1
    if attributes and i > start:
        # "the red one"-less phrase such as "turns the red": treat the last adjective as the noun
        return (attributes[-1], attributes[:-1]), i
    return None, start


def _add_object(parsed: ParsedCaption, np: tuple[str, list[str]]) -> int:
    parsed.objects.append(np)
    return len(parsed.objects) - 1


def _parse_clause(words: list[str], time: int, parsed: ParsedCaption) -> None:
    i = 0
    while i < len(words) and (words[i] in _WH or words[i] in _AUX or words[i] in _ORDER_WORDS):
        i += 1
    np, i = _parse_np(words, i)
    if np is None:
        return
    subject = _add_object(parsed, np)
    i = _prepositional_phrases(words, i, subject, time, parsed)
    while i < len(words) and (words[i] in _AUX or words[i] == "not"):
        i += 1
    if i >= len(words) or words[i] in _DETERMINERS | _PREPOSITIONS:
        return
    verb = words[i]
    i += 1
    modifiers, obj = [], None
    while i < len(words):
        word, nxt = words[i], (words[i + 1] if i + 1 < len(words) else "")
        if word in _PARTICLES and not (word in _PREPOSITIONS and (nxt in _DETERMINERS or nxt in _ADJECTIVES)):
            modifiers.append(word)
            i += 1
        elif word.endswith("ly") or (word in _ADJECTIVES and (nxt == "" or nxt not in _ADJECTIVES and
                                                              nxt in _PREPOSITIONS | _PARTICLES | {""})):
            modifiers.append(word)
            i += 1
        elif obj is None and word not in _PREPOSITIONS:
            np, j = _parse_np(words, i)
            if np is None:
                break
            obj, i = _add_object(parsed, np), j
        else:
            break
    parsed.relations.append((subject, verb, obj, modifiers, time))
    _prepositional_phrases(words, i, subject, time, parsed)


def _prepositional_phrases(words, i, anchor, time, parsed) -> int:
    while i < len(words) and words[i] in _PREPOSITIONS:
        np, j = _parse_np(words, i + 1)
        if np is None:
            break
        parsed.relations.append((anchor, words[i], _add_object(parsed, np), [], time))
        i = j
    return i


# ---- the spaCy parser ------------------------------------------------------------------------------
class SpacyParser:
    """Dependency rules over a spaCy parse: nouns are objects, amod/compound/nummod their attributes,
    verbs with an nsubj predicates (dobj / prep+pobj their objects), advmod/prt/acomp predicate attributes."""

    name = "spacy"

    def __init__(self, model: str = "en_core_web_sm") -> None:
        import spacy  # optional

        self.nlp = spacy.load(model)  # a locally installed package; never downloads

    def __call__(self, text: str) -> ParsedCaption:
        doc = self.nlp(text)
        parsed, index = ParsedCaption(), {}
        for token in doc:
            if token.pos_ in ("NOUN", "PROPN"):
                attrs = [c.lower_ for c in token.children if c.dep_ in ("amod", "compound", "nummod")]
                index[token.i] = _add_object(parsed, (token.lemma_.lower(), attrs))
        for time, token in enumerate(t for t in doc if t.pos_ in ("VERB", "AUX") and t.dep_ != "aux"):
            subjects = [c for c in token.children if c.dep_ in ("nsubj", "nsubjpass") and c.i in index]
            if not subjects and token.head.i in index:  # "a man riding a horse": acl to its noun
                subjects = [token.head]
            if not subjects:
                continue
            subject = index[subjects[0].i]
            mods = [c.lower_ for c in token.children if c.dep_ in ("advmod", "prt", "acomp")]
            objects = [c for c in token.children if c.dep_ in ("dobj", "attr") and c.i in index]
            parsed.relations.append((subject, token.lemma_.lower(), index[objects[0].i] if objects else None, mods, time))
            for prep in (c for c in token.children if c.dep_ == "prep"):
                for pobj in (c for c in prep.children if c.dep_ == "pobj" and c.i in index):
                    parsed.relations.append((subject, prep.lower_, index[pobj.i], [], time))
        for token in doc:  # noun-attached prepositions: "a man with a hat"
            if token.dep_ == "prep" and token.head.i in index:
                for pobj in (c for c in token.children if c.dep_ == "pobj" and c.i in index):
                    parsed.relations.append((index[token.head.i], token.lower_, index[pobj.i], [], 0))
        return parsed


def spacy_available(model: str = "en_core_web_sm") -> bool:
    try:
        import spacy

        return spacy.util.is_package(model)
    except ImportError:
        return False


def get_parser(name: str = "auto"):
    """"rule", "spacy", "auto" (spaCy when installed with en_core_web_sm, else rule), or any callable
    str -> ParsedCaption."""
    if callable(name):
        return name
    if name == "rule" or (name == "auto" and not spacy_available()):
        return RuleBasedParser()
    if name in ("spacy", "auto"):
        if not spacy_available():
            raise ImportError("finsta parser='spacy' needs spaCy and en_core_web_sm installed; use parser='rule'")
        return SpacyParser()
    raise ValueError(f"finsta parser must be 'auto', 'rule' or 'spacy', got {name!r}")


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
