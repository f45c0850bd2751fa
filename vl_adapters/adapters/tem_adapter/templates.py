"""Templates that fuse a question and one answer into the event description the text tower encodes.

Tem-Adapter scores each candidate as a sentence describing an event (the paper calls this the
semantic prompt); the official code did the fusion offline. Here it happens at batch time through
`format_candidates`, so any dataset's (question, answers) pairs work.
"""

from __future__ import annotations

TEMPLATES: dict[str, str] = {
    # Default: question and answer side by side, labelled so a short answer ("Yes") keeps its context.
    "question_answer": "question: {question} answer: {answer}",
    # The multiple-choice head's own default, without labels.
    "plain": "{question} {answer}",
    # Answer alone (options that are already full event descriptions, as in SUTD-TrafficQA's files).
    "answer": "{answer}",
}
DEFAULT_TEMPLATE = "question_answer"


def resolve_template(template: str) -> str:
    """A template name from TEMPLATES, or a literal format string with {answer} (and optionally {question})."""
    pattern = TEMPLATES.get(template, template)
    if "{answer}" not in pattern:
        raise ValueError(
            f"Tem-Adapter template {template!r}: expected one of {sorted(TEMPLATES)} or a format string "
            "containing '{answer}'"
        )
    return pattern


def format_candidates(template: str, question: str, answers: list[str]) -> list[str]:
    """One event description per answer; empty answers (missing options) stay '' so they are recognisable."""
    pattern = resolve_template(template)
    question = " ".join(question.split())
    return [pattern.format(question=question, answer=" ".join(a.split())).strip() if a.strip() else ""
            for a in answers]
