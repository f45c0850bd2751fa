"""Finsta's caption parser, measured on a table of MSR-VTT-style captions (tests/data/finsta_captions.jsonl).

The table: captions we wrote ourselves about people, animals, vehicles, cooking, sports, cartoons and games,
music, news and TV, with the objects, attributes, relations and predicate attributes a careful annotator
would write under the conventions in vl_adapters/adapters/finsta/parser.py. Rows carry a split: "dev" rows
were written first and the parser was developed while reading them; "heldout1" rows were written before
the parser was run on them (their first score is in docs/finsta.md); "heldout2" rows were written after the
parser was frozen and were never used to change it.

Per node type, a caption counts as right when the parser's multiset equals the table's exactly:
objects (nouns), attributes (noun, attribute), relations (subject, predicate, object, event time) and
predicate attributes (predicate, modifier).

    python tests/test_finsta_parser.py          # prints the per-type accuracy of each split and the misses
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from vl_adapters.adapters.finsta.parser import ParsedCaption, RuleBasedParser, tokenize

TABLE = Path(__file__).parent / "data" / "finsta_captions.jsonl"
NODE_KINDS = ("objects", "attributes", "relations", "predicate_attributes")


def load_table() -> list[dict]:
    return [json.loads(line) for line in TABLE.read_text().splitlines() if line.strip()]


def views(objects, relations) -> dict[str, Counter]:
    """objects [(noun, [attributes])], relations [(subject noun, predicate, object noun | None, [mods], time)]."""
    return {
        "objects": Counter(noun for noun, _ in objects),
        "attributes": Counter((noun, a) for noun, attributes in objects for a in attributes),
        "relations": Counter((s, p, o, t) for s, p, o, _, t in relations),
        "predicate_attributes": Counter((p, m) for _, p, _, mods, _ in relations for m in mods),
    }


def parsed_views(parsed: ParsedCaption) -> dict[str, Counter]:
    names = [noun for noun, _ in parsed.objects]
    relations = [(names[s], p, None if o is None else names[o], m, t) for s, p, o, m, t in parsed.relations]
    return views(parsed.objects, relations)


def score(rows: list[dict], parser=None) -> tuple[dict[str, float], dict[str, float], dict[str, list]]:
    """(exact-match accuracy per node type over all rows, the same over rows where the table has at least
    one node of that type, the misses per type)."""
    parser = parser or RuleBasedParser()
    hits, nonempty_hits, nonempty, misses = Counter(), Counter(), Counter(), {k: [] for k in NODE_KINDS}
    for row in rows:
        got, want = parsed_views(parser(row["caption"])), views(row["objects"], row["relations"])
        for kind in NODE_KINDS:
            right = got[kind] == want[kind]
            hits[kind] += right
            if want[kind]:
                nonempty[kind] += 1
                nonempty_hits[kind] += right
            if not right:
                misses[kind].append((row["caption"], sorted(got[kind].elements(), key=str),
                                     sorted(want[kind].elements(), key=str)))
    overall = {k: hits[k] / len(rows) for k in NODE_KINDS}
    among_nonempty = {k: nonempty_hits[k] / max(nonempty[k], 1) for k in NODE_KINDS}
    return overall, among_nonempty, misses


def test_the_table_is_large_and_well_formed():
    rows = load_table()
    assert len(rows) >= 150 and len({r["caption"] for r in rows}) == len(rows)
    assert {r["split"] for r in rows} == {"dev", "heldout1", "heldout2"}
    for row in rows:
        nouns = [noun for noun, _ in row["objects"]]
        for subject, predicate, obj, modifiers, time in row["relations"]:
            assert subject in nouns and (obj is None or obj in nouns), row["caption"]
            assert isinstance(predicate, str) and isinstance(modifiers, list) and time >= 0
    # each node type is exercised by many rows, not just present in a few
    counts = Counter(kind for row in rows for kind, view in views(row["objects"], row["relations"]).items() if view)
    assert counts["objects"] == len(rows) and counts["attributes"] >= 50 and counts["relations"] >= 150
    assert counts["predicate_attributes"] >= 25


@pytest.mark.parametrize("split", ["all", "heldout2"])
def test_parser_reaches_90_percent_exact_match_per_node_type(split):
    rows = [r for r in load_table() if split == "all" or r["split"] == split]
    overall, among_nonempty, misses = score(rows)
    for kind in NODE_KINDS:
        assert overall[kind] >= 0.9, (kind, overall[kind], misses[kind][:5])
        assert among_nonempty[kind] >= 0.85, (kind, among_nonempty[kind], misses[kind][:5])


def test_the_issues_examples():
    parser = RuleBasedParser()
    cartoon = parser("a cartoon character is talking")
    assert cartoon.objects == [("character", ["cartoon"])] and cartoon.triples() == [("character", "talking", None)]
    car = parser("the car suddenly stops")
    assert car.triples() == [("car", "stops", None)] and car.relations[0][3] == ["suddenly"]


# the synthetic benchmark's templates: caption -> objects, triples, predicate attributes, event times
SYNTHETIC = [
    ("a red circle moves left, then a blue square appears",
     [("circle", ["red"]), ("square", ["blue"])],
     [("circle", "moves", None), ("square", "appears", None)], [["left"], []], [0, 1]),
    ("the green triangle turns yellow after the red square disappears",
     [("triangle", ["green"]), ("square", ["red"])],
     [("triangle", "turns", None), ("square", "disappears", None)], [["yellow"], []], [1, 0]),
    ("first the white square moves down, then the purple circle moves right",
     [("square", ["white"]), ("circle", ["purple"])],
     [("square", "moves", None), ("circle", "moves", None)], [["down"], ["right"]], [0, 1]),
    ("first the red circle moves up, then the blue square turns green, then the yellow triangle disappears",
     [("circle", ["red"]), ("square", ["blue"]), ("triangle", ["yellow"])],
     [("circle", "moves", None), ("square", "turns", None), ("triangle", "disappears", None)],
     [["up"], ["green"], []], [0, 1, 2]),
    ("a red circle, a blue square and a green triangle",
     [("circle", ["red"]), ("square", ["blue"]), ("triangle", ["green"])], [], [], []),
    ("a red circle at the top left and a blue square in the centre",
     [("circle", ["red"]), ("left", ["top"]), ("square", ["blue"]), ("centre", [])],
     [("circle", "at", "left"), ("square", "in", "centre")], [[], []], [0, 0]),
]


@pytest.mark.parametrize(("caption", "objects", "triples", "modifiers", "times"), SYNTHETIC)
def test_synthetic_templates(caption, objects, triples, modifiers, times):
    parsed = RuleBasedParser()(caption)
    assert parsed.objects == objects
    assert parsed.triples() == triples
    assert [r[3] for r in parsed.relations] == modifiers
    assert [r[4] for r in parsed.relations] == times


def test_tokenizer_merges_multiword_prepositions_and_keeps_possessives():
    assert tokenize("A man, in front of a girl's car") == ["a", "man", ",", "in front of", "a", "girl's", "car"]


def test_parser_never_crashes_on_odd_input():
    parser = RuleBasedParser()
    for text in ("", ",,,", "the the the", "is is running", "and then", "a", "quickly", "to to to the"):
        parsed = parser(text)
        assert all(0 <= s < len(parsed.objects) for s, *_ in parsed.relations)


if __name__ == "__main__":
    table = load_table()
    for name in ("dev", "heldout1", "heldout2", "all"):
        rows = [r for r in table if name == "all" or r["split"] == name]
        overall, among_nonempty, misses = score(rows)
        print(f"{name} ({len(rows)} captions): " + ", ".join(
            f"{k} {overall[k]:.1%} ({among_nonempty[k]:.1%} of rows with some)" for k in NODE_KINDS))
        if "-v" in sys.argv:
            for kind in NODE_KINDS:
                for caption, got, want in misses[kind]:
                    print(f"  [{kind}] {caption}\n      got  {got}\n      want {want}")
