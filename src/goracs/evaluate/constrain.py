"""Decoding constrained to the item catalogue: generation may only spell one of the titles.

A small model fine-tuned for a few dozen updates learns the shape of an answer (``"..., The
(1999)"``) long before it learns which title a user wants; free greedy decoding then writes the
same malformed string for most prompts and the grounding step has nothing user-specific to rank
by. Restricting every step to the tokens that continue some catalogue answer makes every
answer a real title; whether the answers then depend on the user is still up to the model (at
the cpu-small size greedy catalogue decoding also settles on one title: docs/runs/README.md).

Everything here works on token ids; the tokenizer and the model stay at the edges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from goracs.errors import GoracsError


class TokenTrie:
    """A prefix tree over token-id sequences, each one ending at a known value (a title).

    ``allowed(prefix)`` lists the ids that continue ``prefix`` towards some sequence; a prefix
    that is a whole sequence also allows ``end_id``. After a whole sequence and its ``end_id``,
    or off the tree, only ``end_id`` is allowed, so a finished or padded row never leaves the
    decoder with no admissible token.
    """

    def __init__(self, sequences: Mapping[str, Sequence[int]], end_id: int) -> None:
        self.end_id = int(end_id)
        self._root: dict[int, Any] = {}
        self._values: dict[tuple[int, ...], str] = {}
        for value, seq in sequences.items():
            seq = tuple(int(t) for t in seq)
            if not seq:
                raise GoracsError(f"the answer for {value!r} has no tokens")
            if seq in self._values and self._values[seq] != value:
                raise GoracsError(f"{self._values[seq]!r} and {value!r} have the same tokens")
            self._values[seq] = value
            node = self._root
            for t in seq:
                node = node.setdefault(t, {})
            node[-1] = value          # the key -1 marks the end of a sequence

    def __len__(self) -> int:
        return len(self._values)

    def sequences(self) -> list[tuple[int, ...]]:
        """Every sequence in the tree (without ``end_id``)."""
        return list(self._values)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self._root
        for t in prefix:
            t = int(t)
            if t == self.end_id and -1 in node:
                return [self.end_id]
            if t not in node:
                return [self.end_id]
            node = node[t]
        out = sorted(k for k in node if k != -1)
        if -1 in node:
            out.append(self.end_id)
        return out or [self.end_id]

    def value(self, tokens: Sequence[int]) -> str | None:
        """The value spelt by ``tokens`` (up to the first ``end_id``), or None."""
        seq = []
        for t in tokens:
            t = int(t)
            if t == self.end_id:
                break
            seq.append(t)
        return self._values.get(tuple(seq))


def answer_frame(records: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The text around the target title in the records' answers: ``(before, after)`` with
    ``output == before + target + after`` for every record (``('"', '"')`` for the quoted
    titles of the SeqRec builders).

    Raises :class:`GoracsError` when a record lacks a target, or when the records frame their
    targets differently (catalogue decoding then cannot know what to spell).
    """
    frame: tuple[str, str] | None = None
    for i, rec in enumerate(records):
        target, output = rec.get("target"), rec.get("output")
        if not isinstance(target, str) or not target or not isinstance(output, str):
            raise GoracsError(f"test record {i} has no target title; catalogue decoding needs "
                              "one per record")
        at = output.find(target)
        if at < 0:
            raise GoracsError(f"test record {i}: the output {output!r} does not contain its "
                              f"target {target!r}")
        this = (output[:at], output[at + len(target):])
        if frame is None:
            frame = this
        elif this != frame:
            raise GoracsError(f"test record {i} frames its target as {this!r}, earlier records "
                              f"as {frame!r}; catalogue decoding needs one answer format")
    if frame is None:
        raise GoracsError("no test records")
    return frame


def answer_tokens(tokenizer: Any, prompt: str, answers: Sequence[str]) -> list[list[int]]:
    """Token ids of each answer as the model produces it after ``prompt``: the tokenization of
    ``prompt + answer`` past the prompt's own tokens (what fine-tuning put the loss on).

    Raises :class:`GoracsError` when the tokenizer merges the prompt's last token with an
    answer, since generation then cannot continue the prompt into that answer.
    """
    base = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    full = tokenizer([prompt + a for a in answers], add_special_tokens=True)["input_ids"]
    out = []
    for answer, ids in zip(answers, full, strict=True):
        if list(ids[:len(base)]) != list(base):
            raise GoracsError(f"the tokenizer merges the end of the prompt with the answer "
                              f"{answer!r}; catalogue decoding is not possible with it")
        out.append([int(t) for t in ids[len(base):]])
    return out


def catalogue_trie(tokenizer: Any, prompt: str, titles: Sequence[str],
                   frame: tuple[str, str]) -> TokenTrie:
    """A :class:`TokenTrie` of every distinct title framed as the answers are, ending with the
    tokenizer's end-of-sequence id."""
    if tokenizer.eos_token_id is None:
        raise GoracsError("the tokenizer has no end-of-sequence token; catalogue decoding "
                          "needs one to end an answer")
    distinct = sorted(set(titles))
    tokens = answer_tokens(tokenizer, prompt, [frame[0] + t + frame[1] for t in distinct])
    return TokenTrie(dict(zip(distinct, tokens, strict=True)), int(tokenizer.eos_token_id))
