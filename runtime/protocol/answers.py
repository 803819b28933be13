"""The flow's side of EVerest's questions (receive with reply): which are still to be answered, and
which have waited too long. Pure: time comes in as numbers, nothing is sent from here.

EVerest asks on ``e2m/<name>`` with a ``replyTo`` topic and waits for one answer there, up to its
``cfg_request_reply_to_s``; then it goes on with a default answer of its own. The flow answers through
a reply node; an answer that comes twice, or after the policy already acted, must not go out.
"""

from __future__ import annotations

import collections
import enum
import itertools
from collections.abc import Iterator
from typing import Any

import attrs

__all__ = ["AnswerLedger", "AnswerOutcome", "Question"]


class AnswerOutcome(enum.StrEnum):
    FIRST = "first"  # goes out
    DUPLICATE = "duplicate"  # answered already
    LATE = "late"  # its deadline passed: the policy acted (answered with a default, or reported it)


@attrs.define(eq=False)
class Question:
    """One question from EVerest, carried on the message to the reply node (``msg.meta``)."""

    ticket: int
    operation: str
    reply_to: str  # as EVerest wrote it (without the external prefix)
    asked_at: float
    deadline: float
    ledger: AnswerLedger = attrs.field(repr=False)
    # Anything the node keeps with it (the default answer of its policy).
    extra: Any = None
    # None while open, else how it was closed (FIRST: answered; LATE: expired).
    closed: AnswerOutcome | None = None


class AnswerLedger:
    """Open questions in deadline order (one timeout per ledger, so arrival order is deadline order)."""

    def __init__(self, operation: str, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.operation = operation
        self.timeout = timeout
        self._open: collections.OrderedDict[int, Question] = collections.OrderedDict()
        self._tickets = itertools.count(1)
        self.asked = self.answered = self.duplicates = self.late = self.expired = 0

    def ask(self, reply_to: str, now: float, extra: Any = None) -> Question:
        question = Question(next(self._tickets), self.operation, reply_to, now, now + self.timeout, self, extra)
        self._open[question.ticket] = question
        self.asked += 1
        return question

    def answer(self, question: Question) -> AnswerOutcome:
        if question.closed is None:
            del self._open[question.ticket]
            question.closed = AnswerOutcome.FIRST
            self.answered += 1
            return AnswerOutcome.FIRST
        if question.closed is AnswerOutcome.LATE:
            self.late += 1
            return AnswerOutcome.LATE
        self.duplicates += 1
        return AnswerOutcome.DUPLICATE

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def next_deadline(self) -> float | None:
        for question in self._open.values():
            return question.deadline
        return None

    def expire(self, now: float) -> Iterator[Question]:
        """The questions whose deadline has passed, oldest first, each once; they are closed."""
        while self._open:
            ticket, question = next(iter(self._open.items()))
            if question.deadline > now:
                return
            del self._open[ticket]
            question.closed = AnswerOutcome.LATE
            self.expired += 1
            yield question
