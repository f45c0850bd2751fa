"""Caption -> scene-graph parse: objects with attributes, relations (subject, predicate, object, predicate
attributes, event time). Parsers are pluggable (`get_parser`): a dependency-free rule-based parser (the
default; measured on tests/data/finsta_captions.jsonl, see docs/finsta.md) and a spaCy one when spaCy and an
English model are installed locally.

Annotation conventions the rule parser follows (and the caption table is written in):
- objects: the head noun of each noun phrase (plural kept), pronouns and names; "a group of X", "a video of
  X" name only X. Attributes: every word between the determiner and the head ("a red *sports* car"), and a
  predicative adjective ("the sky is *blue*"); numerals and possessive determiners are not attributes.
- relations: a verb with each subject (coordinated subjects each) and each direct object, or None; a
  preposition with the noun it attaches to: after a noun -> that noun ("a man *in* a suit"), after a verb ->
  the subject, except "of" (the preceding noun) and placement verbs ("pours milk *into* a bowl": the milk);
  passives with "by" give (agent, verb, patient); "tries to open", "starts screaming", "how to make" give a
  second relation with the same subject. Multiword prepositions ("in front of") are one predicate.
- predicate attributes: adverbs, particles of phrasal verbs ("picks *up*") and adjective complements
  ("turns *yellow*").
- event time: then / and then / a comma / before move to a later event, after to an earlier one, while /
  as / when keep the time; "and" keeps it when the next verb is progressive ("singing and dancing") and moves
  on otherwise ("opens the door and walks outside"). Times are ranks 0, 1, 2, ...
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .lexicon import (
    ADJECTIVES,
    AUXILIARIES,
    CATENATIVE,
    CONNECTORS,
    DETERMINERS,
    DIRECTIONAL_PREPOSITIONS,
    MOTION_VERBS,
    MULTIWORD,
    ORDER_WORDS,
    PARTICLES,
    PHRASAL,
    PLACEMENT_PREPOSITIONS,
    PLACEMENT_VERBS,
    PREPOSITIONS,
    PRONOUNS,
    QUANTITY_NOUNS,
    WH_WORDS,
    is_adverb,
    is_plural,
    verb_form,
)


@dataclass
class ParsedCaption:
    """objects: (noun, [attributes]); relations: (subject index, predicate, object index | None,
    [predicate attributes], event time)."""

    objects: list[tuple[str, list[str]]] = field(default_factory=list)
    relations: list[tuple[int, str, int | None, list[str], int]] = field(default_factory=list)

    def triples(self) -> list[tuple[str, str, str | None]]:
        name = [o[0] for o in self.objects]
        return [(name[s], p, None if o is None else name[o]) for s, p, o, _, _ in self.relations]


_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*|,")
_FUNCTION = AUXILIARIES | PREPOSITIONS | DETERMINERS | WH_WORDS | set(CONNECTORS) | {
    "and", "or", "but", "to", "not", "there", "then"} | set(MULTIWORD.values())
_TEMPORAL = frozenset({"after", "before", "until"})  # connectors of clauses, or prepositions
_PRONOUN_DETERMINERS = frozenset({"her", "this", "that"})  # "hugging her": a determiner with no noun after it


def tokenize(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    out, i = [], 0
    while i < len(words):
        for key, merged in MULTIWORD.items():
            if tuple(words[i:i + len(key)]) == key:
                out.append(merged)
                i += len(key)
                break
        else:
            out.append(words[i])
            i += 1
    return out


class RuleBasedParser:
    """Left to right over clauses: subjects (noun phrases joined by "and" / commas, each with its
    prepositional phrases), then verb phrases (auxiliaries, adverbs, verb, particle, objects, complements,
    prepositional phrases), joined by "and" or by temporal connectors. No tagger: nouns and verbs are told
    apart by position and by the verb lexicon (lexicon.py). Known failures: see docs/finsta.md."""

    name = "rule"

    def __call__(self, text: str) -> ParsedCaption:
        return _Clauses(tokenize(text)).parse()


class _Clauses:
    def __init__(self, words: list[str]) -> None:
        self.words, self.i = words, 0
        self.out = ParsedCaption()
        self.times: list[int | None] = []  # per relation; None until its clause's verb fixes the time
        self.time, self.connector = 0, None  # connector pending for the next verb
        self.started = False
        self.last_noun: int | None = None

    # ---- helpers ---------------------------------------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.words[j] if 0 <= j < len(self.words) else ""

    def relate(self, subject: int, predicate: str, obj: int | None, modifiers: list[str] | None = None) -> None:
        self.out.relations.append((subject, predicate, obj, list(modifiers or []), 0))
        self.times.append(None if self.connector is not None else self.time)

    def snapshot(self) -> tuple[int, int, int, int | None]:
        return self.i, len(self.out.objects), len(self.out.relations), self.last_noun

    def restore(self, state) -> None:
        self.i, objects, relations, self.last_noun = state
        del self.out.objects[objects:], self.out.relations[relations:], self.times[relations:]

    def fix_time(self, form: str | None) -> None:
        """The first verb after a connector fixes the time of its clause (and of what came before it)."""
        if self.connector is None:
            self.started = True
            return
        if self.started:
            step = (0 if form == "ing" else 1) if self.connector == "and" else CONNECTORS.get(self.connector, 1)
            self.time += step
        self.started, self.connector = True, None
        self.times = [self.time if t is None else t for t in self.times]

    def starts_verb_phrase(self, k: int = 0) -> bool:
        word = self.peek(k)
        if word in AUXILIARIES:
            return True
        if is_adverb(word) and word.endswith("ly"):
            return self.starts_verb_phrase(k + 1)
        return verb_form(word) is not None and word not in DETERMINERS

    # ---- noun phrases ------------------------------------------------------------------------------------
    def noun_phrase(self) -> int | None:
        """The object index of the noun phrase at i (its head), or None with i unchanged."""
        words, j = self.words, self.i
        while True:
            while j < len(words) and words[j] in DETERMINERS:
                j += 1
            if j + 1 < len(words) and words[j] in QUANTITY_NOUNS and words[j + 1] == "of":
                j += 2
                continue
            break
        if j < len(words) and words[j] in PRONOUNS:
            self.i = j + 1
            return self.add_object(words[j], [])
        content: list[str] = []
        while j < len(words):
            word, following = words[j], (words[j + 1] if j + 1 < len(words) else "")
            if word in _FUNCTION or (is_adverb(word) and (content or word.endswith("ly"))):
                break
            if content:
                form = verb_form(word)
                plural_noun = form is not None and form[1] == "s" and following in AUXILIARIES
                if form is not None and (form[1] != "base" or is_plural(content[-1])) and not plural_noun:
                    break  # "a man *walks*", "two men *play*" (agreement), but "card *tricks* are"
                if form is None and word.endswith("s") and (following in DETERMINERS or following in PRONOUNS):
                    break  # an unknown verb: "a man unboxes a phone"
            content.append(word)
            j += 1
        if not content:
            if j > self.i and words[j - 1] in _PRONOUN_DETERMINERS:
                self.i = j
                return self.add_object(words[j - 1], [])
            return None
        self.i = j
        *modifiers, head = content
        owner = next((k for k, w in enumerate(modifiers) if w.endswith("'s")), None)
        if owner is None:
            return self.add_object(head, modifiers)
        possessor = self.add_object(modifiers[owner][:-2], modifiers[:owner])  # "a girl's nails": nails of girl
        possessed = self.add_object(head, modifiers[owner + 1:])
        self.relate(possessed, "of", possessor)
        self.last_noun = possessed
        return possessed

    def add_object(self, noun: str, attributes: list[str]) -> int:
        self.out.objects.append((noun, list(attributes)))
        self.last_noun = len(self.out.objects) - 1
        return self.last_noun

    def prepositional_phrases(self, anchors: list[int], objects: list[int] | None = None, verb: str | None = None,
                              agent: list[int] | None = None) -> None:
        """Prepositional phrases at i, attached to `anchors` ("of": the preceding noun; placement verbs:
        their objects). For a passive, "by X" fills `agent` instead of making a relation."""
        while self.peek() in PREPOSITIONS or self.peek() in MULTIWORD.values() or self.peek() in _TEMPORAL:
            preposition = self.peek()
            if preposition == "and then" or (preposition == "to" and self.infinitive_follows(at_end=False)):
                return
            state = self.snapshot()
            previous = self.last_noun
            self.i += 1
            target = self.noun_phrase()
            if target is None or (preposition in _TEMPORAL and self.starts_verb_phrase()):
                self.restore(state)  # "after he takes off his shirt" is a clause, "after a goal" a phrase
                return
            if agent is not None and preposition == "by":
                agent.append(target)
                continue
            if preposition == "of" and previous is not None:
                owners = [previous]
            elif objects and ((verb in PLACEMENT_VERBS and preposition in PLACEMENT_PREPOSITIONS)
                              or (verb in MOTION_VERBS and preposition in DIRECTIONAL_PREPOSITIONS)):
                owners = objects
            else:
                owners = anchors
            for owner in owners:
                self.relate(owner, preposition, target)
            while is_adverb(self.peek()) and self.peek().endswith("ly"):
                self.i += 1

    def infinitive_follows(self, at_end: bool = True) -> bool:
        """"to" + a verb's base form; with at_end False, not when the verb ends the clause ("goes to work")."""
        form = verb_form(self.peek(1))
        return form is not None and form[1] == "base" and (at_end or self.peek(2) not in {"", ",", *CONNECTORS})

    # ---- clauses -----------------------------------------------------------------------------------------
    def parse(self) -> ParsedCaption:
        subjects: list[int] = []
        while self.i < len(self.words):
            word = self.peek()
            if word in CONNECTORS or word in ("and", "then", "and then"):
                merged = "then" if word == "and then" else word
                keep = self.connector not in (None, ",", "and")
                self.connector = self.connector if keep else merged
                self.i += 1
                continue
            if word in ORDER_WORDS or word in WH_WORDS or word in ("but", "or"):
                self.i += 1
                continue
            if word == "there" and self.peek(1) in AUXILIARIES:  # existential "there is a man singing"
                self.i += 2
                continue
            if self.connector is None and self.started:
                self.connector = ","  # clauses without a connector follow each other
            start = self.i
            found = self.subjects()
            if found:
                subjects = found
            elif not (subjects and self.starts_verb_phrase()):
                self.i += 1  # a word the grammar does not cover
                continue
            if not self.verb_phrases(subjects) and found:
                self.fix_time(None)  # a verbless clause ("a red circle and a blue square") keeps the time
            self.started = True
            self.i += self.i == start  # always move on
        self.fix_time(None)
        ranks = {t: r for r, t in enumerate(sorted(set(self.times)))}
        self.out.relations = [(s, p, o, m, ranks[t]) for (s, p, o, m, _), t in zip(self.out.relations, self.times,
                                                                                    strict=True)]
        return self.out

    def subjects(self) -> list[int]:
        """Noun phrases joined by "and" / commas, each with its own prepositional phrases."""
        found: list[int] = []
        while True:
            state = self.snapshot()
            if found:
                if self.peek() not in ("and", ",") or self.starts_verb_phrase(1):
                    return found
                self.i += 1
            head = self.noun_phrase()
            if head is None:
                self.restore(state)
                return found
            found.append(head)
            self.prepositional_phrases([head])

    def verb_phrases(self, subjects: list[int]) -> bool:
        """One or more verb phrases of `subjects`, joined by "and" or following each other ("a man wearing
        a hat is reading"). Returns whether one was found."""
        found = False
        while True:
            state = self.snapshot()
            connector = None
            if found and self.peek() in ("and", "and then", ",") and self.starts_verb_phrase(1):
                connector = "then" if self.peek() == "and then" else self.peek()
                self.i += 1
            elif found and not self.starts_verb_phrase():
                return True
            if connector is not None:
                self.connector = connector
            if not self.verb_phrase(subjects):
                self.restore(state)
                return found
            found = True

    def verb_phrase(self, subjects: list[int]) -> bool:
        auxiliary = passive = False
        modifiers: list[str] = []
        while self.peek() in AUXILIARIES or self.peek() == "not":
            auxiliary = True
            passive |= self.peek() in ("being", "been")
            self.i += 1
        while is_adverb(self.peek()) and self.peek().endswith("ly"):
            modifiers.append(self.peek())
            self.i += 1
        word = self.peek()
        if auxiliary and (word in PREPOSITIONS or word in MULTIWORD.values()):  # copula: "a woman is in the kitchen"
            self.fix_time(None)
            before = len(self.out.relations)
            self.prepositional_phrases(subjects)
            return len(self.out.relations) > before
        if auxiliary and word in ADJECTIVES and not self.noun_follows(1):  # "the sky is blue"
            for subject in subjects:
                self.out.objects[subject][1].append(word)
            self.i += 1
            return True
        form = verb_form(word)
        if form is None and not (auxiliary and word and word not in _FUNCTION and word not in ADJECTIVES):
            return False
        base, inflection = form if form is not None else (word, "ing" if word.endswith("ing") else "base")
        self.i += 1
        self.fix_time(inflection)
        passive |= auxiliary and inflection == "ed" and self.peek() == "by"
        self.particles_and_adverbs(base, modifiers)
        if self.peek() in ADJECTIVES and not self.noun_follows(1):  # "turns yellow", "looks happy"
            modifiers.append(self.peek())
            self.i += 1
        objects: list[int] = []
        if not passive and not self.complement_follows(base):
            objects = self.objects()
            self.particles_and_adverbs(base, modifiers)
        agent: list[int] = []
        relations_at = len(self.out.relations)
        self.complement(subjects, base)
        self.prepositional_phrases(subjects, objects, base, agent if passive else None)
        while is_adverb(self.peek()) and not (self.peek() in PREPOSITIONS and self.noun_follows(1)):
            modifiers.append(self.peek())
            self.i += 1
        verb_relations = []
        for subject in subjects:
            if passive:
                pairs = [(a, subject) for a in agent] or [(subject, None)]
            else:
                pairs = [(subject, o) for o in objects] or [(subject, None)]
            verb_relations += [(s, word, o, modifiers, self.time) for s, o in pairs]
        # the verb's own relations come before its complement's and its prepositional phrases'
        self.out.relations[relations_at:relations_at] = verb_relations
        self.times[relations_at:relations_at] = [self.time] * len(verb_relations)
        return True

    def particles_and_adverbs(self, base: str, modifiers: list[str]) -> None:
        while True:
            word = self.peek()
            if word in PARTICLES and (word in PHRASAL.get(base, ()) or not self.noun_follows(1)):
                modifiers.append(word)
            elif is_adverb(word) and not (word in PREPOSITIONS and self.noun_follows(1)):
                modifiers.append(word)
            else:
                return
            self.i += 1

    def noun_follows(self, k: int) -> bool:
        word = self.peek(k)
        return bool(word) and (word in DETERMINERS or word in PRONOUNS or (
            word not in _FUNCTION and not is_adverb(word) and word not in PARTICLES))

    def complement_follows(self, base: str) -> bool:
        word = self.peek()
        form = verb_form(word)
        return (base in CATENATIVE and form is not None and form[1] == "ing") or (
            word in ("how", "what") and self.peek(1) == "to") or (word == "to" and base in CATENATIVE
                                                                  and self.infinitive_follows())

    def objects(self) -> list[int]:
        """Direct objects: a noun phrase and those joined to it by "and" (unless a verb follows them, which
        makes them the subject of a new clause: "hits the ball and it rolls")."""
        if not self.noun_follows(0) or self.peek() in PARTICLES:
            return []
        first = self.noun_phrase()
        if first is None:
            return []
        objects = [first]
        while self.peek() in ("and", ","):
            form = verb_form(self.peek(1))
            if form is not None and form[1] != "base" and self.peek(1) not in DETERMINERS:
                break  # "opens the door and walks outside": a second verb phrase
            state = self.snapshot()
            self.i += 1
            head = self.noun_phrase()
            if head is None or self.starts_verb_phrase():
                self.restore(state)
                break
            objects.append(head)
        return objects

    def complement(self, subjects: list[int], base: str) -> bool:
        """"tries to open a jar", "shows how to make pasta", "starts screaming": a verb phrase of the same
        subjects at the same time."""
        if not self.complement_follows(base):
            return False
        state = self.snapshot()
        self.i += (self.peek() in ("how", "what")) + (self.peek(int(self.peek() in ("how", "what"))) == "to")
        if self.verb_phrase(subjects):
            return True
        self.restore(state)
        return False


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
                parsed.objects.append((token.lemma_.lower(), attrs))
                index[token.i] = len(parsed.objects) - 1
        for time, token in enumerate(t for t in doc if t.pos_ in ("VERB", "AUX") and t.dep_ != "aux"):
            subjects = [c for c in token.children if c.dep_ in ("nsubj", "nsubjpass") and c.i in index]
            if not subjects and token.head.i in index:  # "a man riding a horse": acl to its noun
                subjects = [token.head]
            if not subjects:
                continue
            subject = index[subjects[0].i]
            mods = [c.lower_ for c in token.children if c.dep_ in ("advmod", "prt", "acomp")]
            objects = [c for c in token.children if c.dep_ in ("dobj", "attr") and c.i in index]
            obj = index[objects[0].i] if objects else None
            parsed.relations.append((subject, token.lemma_.lower(), obj, mods, time))
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


def get_parser(name="auto"):
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
