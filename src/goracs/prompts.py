"""Alpaca-style records for the two tasks, worded as BIGRec (SeqRec) and TALLRec (CTRPre)
word them, so the files move between those tools and this one.

SeqRec's output is the quoted title, ``"Toy Story (1995)"``, with no trailing newline (the
GORACS reference's choice; BIGRec appends one, and its readers strip it either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from goracs.errors import GoracsError


@dataclass(frozen=True)
class Domain:
    """How a domain's items are named in the prompts: "movies"/"movie"/"watched"."""

    plural: str
    singular: str
    verb: str


DOMAINS = {
    "movies": Domain("movies", "movie", "watched"),
    "books": Domain("books", "book", "read"),
    "video games": Domain("video games", "video game", "played"),
}


def parse_domain(text: str) -> Domain:
    """A known domain word (``movies``, ``books``, ``video games``), or a custom one written
    ``plural:singular:verb``, e.g. ``"toys:toy:bought"``."""
    key = " ".join(text.lower().split())
    if key in DOMAINS:
        return DOMAINS[key]
    parts = [p.strip() for p in text.split(":")]
    if len(parts) == 3 and all(parts):
        return Domain(*parts)
    raise GoracsError(f"unknown domain word {text!r}: use one of {', '.join(DOMAINS)} or "
                      "write plural:singular:verb (e.g. toys:toy:bought)")


def quote_list(titles: Sequence[str]) -> str:
    return ", ".join(f'"{t}"' for t in titles)


def seqrec_record(domain: Domain, history: Sequence[str], target: str, user: str,
                  timestamp: int) -> dict[str, Any]:
    """A BIGRec-style next-item record."""
    d = domain
    return {
        "instruction": (f"Given a list of {d.plural} the user has {d.verb} before, please "
                        f"recommend a new {d.singular} that the user likes to the user."),
        "input": f"The user has {d.verb} the following {d.plural} before: {quote_list(history)}",
        "output": f'"{target}"',
        "user": user,
        "target": target,
        "timestamp": int(timestamp),
    }


def ctr_record(domain: Domain, history: Sequence[str], history_liked: Sequence[bool],
               target: str, liked: bool, user: str, timestamp: int) -> dict[str, Any]:
    """A TALLRec-style Yes/No preference record."""
    d = domain
    pref = [t for t, ok in zip(history, history_liked, strict=True) if ok]
    unpref = [t for t, ok in zip(history, history_liked, strict=True) if not ok]
    return {
        "instruction": ("Given the user's preference and unpreference, identify whether the "
                        f'user will like the target {d.singular} by answering "Yes" or "No".'),
        "input": (f"User Preference: {quote_list(pref)}\n"
                  f"User Unpreference: {quote_list(unpref)}\n"
                  f'Whether the user will like the target {d.singular} "{target}"?'),
        "output": "Yes" if liked else "No",
        "user": user,
        "target": target,
        "timestamp": int(timestamp),
    }


def seqrec_history(record: dict[str, Any]) -> list[str]:
    """The history titles of a :func:`seqrec_record`, read back from its ``input`` (the
    inverse of the quoted list after the colon). A record in another wording fails."""
    text = str(record.get("input", ""))
    head, sep, body = text.partition(" before: ")
    if not sep or not head.startswith("The user has "):
        raise GoracsError("not a SeqRec record in goracs's wording (no 'The user has ... "
                          "before:' list)")
    if not body:
        return []
    if not (body.startswith('"') and body.endswith('"')):
        raise GoracsError(f"unquoted history list in a SeqRec record: {body[:60]!r}")
    return body[1:-1].split('", "')


def ctr_history(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The liked and disliked history titles of a :func:`ctr_record`, read back from its
    ``input`` (the inverse of the two quoted lists). A record in another wording fails."""
    lines = str(record.get("input", "")).split("\n")
    heads = ("User Preference: ", "User Unpreference: ")
    if len(lines) < 2 or not all(ln.startswith(h) for ln, h in zip(lines, heads, strict=False)):
        raise GoracsError("not a CTR record in goracs's wording (no 'User Preference:' and "
                          "'User Unpreference:' lines)")
    out = []
    for ln, h in zip(lines, heads, strict=False):
        body = ln[len(h):]
        if not body:
            out.append([])
            continue
        if not (body.startswith('"') and body.endswith('"')):
            raise GoracsError(f"unquoted history list in a CTR record: {body[:60]!r}")
        out.append(body[1:-1].split('", "'))
    return out[0], out[1]


def liked_share(record: dict[str, Any]) -> float:
    """The share of a CTR record's history the user liked (0.5 for an empty history): a
    one-line predictor of the answer that needs no model."""
    pref, unpref = ctr_history(record)
    total = len(pref) + len(unpref)
    return len(pref) / total if total else 0.5
