"""The flow's side of EVerest's questions (receive with reply): which are still to be answered, and
which have waited too long. Pure: time comes in as numbers, nothing is sent from here.

EVerest asks on ``e2m/<name>`` with a ``replyTo`` topic and waits for one answer there, up to its
``cfg_request_reply_to_s``; then it goes on with a default answer of its own. The flow answers through
an answer node. A question is *claimed* by the answer that is being sent, *settled* once it went out,
or *released* when it could not go out (it may be answered again, or expire). A second answer is not
sent; neither is an answer after the policy answered with a default.
"""

from __future__ import annotations

import collections
import enum
import itertools
from typing import Any

import attrs

__all__ = ["AnswerLedger", "AnswerOutcome", "Question", "QuestionState"]


class QuestionState(enum.Enum):
    OPEN = "open"
    ANSWERING = "answering"  # claimed: an answer is on its way out
    ANSWERED = "answered"
    EXPIRED = "expired"  # its time passed; the policy acted


class AnswerOutcome(enum.StrEnum):
    FIRST = "first"  # send it
    LATE = "late"  # after the timeout, but nothing went to EVerest yet: send it (EVerest may still wait)
    DUPLICATE = "duplicate"  # answered (or being answered) already: do not send
    DEFAULTED = "defaulted"  # the policy sent a default reply already: do not send


@attrs.define(eq=False)
class Question:
    """One question from EVerest, carried on the message to the answer node (``msg.meta``)."""

    ticket: int
    operation: str
    reply_to: str  # as EVerest wrote it (without the external prefix)
    asked_at: float
    deadline: float
    ledger: AnswerLedger = attrs.field(repr=False)
    # Who asked (opaque here): the answer node answers only questions of its own API connection.
    owner: Any = attrs.field(default=None, repr=False)
    state: QuestionState = QuestionState.OPEN
    # The unanswered policy sent a default reply to it.
    defaulted: bool = False
    _state_before_claim: QuestionState = attrs.field(default=QuestionState.OPEN, repr=False)


class AnswerLedger:
    """Open questions in deadline order (one timeout per ledger, so arrival order is deadline order)."""

    def __init__(self, operation: str, timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.operation = operation
        self.timeout = timeout
        self._open: collections.OrderedDict[int, Question] = collections.OrderedDict()
        self._tickets = itertools.count(1)
        self.asked = self.answered = self.late = self.duplicates = self.expired = 0

    def ask(self, reply_to: str, now: float, owner: Any = None) -> Question:
        question = Question(next(self._tickets), self.operation, reply_to, now, now + self.timeout, self, owner)
        self._open[question.ticket] = question
        self.asked += 1
        return question

    def claim(self, question: Question) -> AnswerOutcome:
        """An answer wants to go out: FIRST or LATE (then it is the one, until settled or released),
        or DUPLICATE / DEFAULTED (then it must not)."""
        state = question.state
        if state is QuestionState.OPEN or (state is QuestionState.EXPIRED and not question.defaulted):
            self._open.pop(question.ticket, None)
            question._state_before_claim = state
            question.state = QuestionState.ANSWERING
            return AnswerOutcome.FIRST if state is QuestionState.OPEN else AnswerOutcome.LATE
        if state is QuestionState.EXPIRED:
            self.duplicates += 1
            return AnswerOutcome.DEFAULTED
        self.duplicates += 1
        return AnswerOutcome.DUPLICATE

    def settle(self, question: Question) -> None:
        """The claimed answer went out."""
        assert question.state is QuestionState.ANSWERING
        if question._state_before_claim is QuestionState.EXPIRED:
            self.late += 1
        else:
            self.answered += 1
        question.state = QuestionState.ANSWERED

    def release(self, question: Question) -> None:
        """The claimed answer did not go out: the question is as it was (an open one waits for its
        deadline again, in its place)."""
        assert question.state is QuestionState.ANSWERING
        question.state = question._state_before_claim
        if question.state is QuestionState.OPEN:
            self._open[question.ticket] = question
            self._reorder()  # rare (a publish that failed): a sort keeps the deadline order simple

    def _reorder(self) -> None:
        ordered = sorted(self._open.values(), key=lambda q: q.deadline)
        self._open = collections.OrderedDict((q.ticket, q) for q in ordered)

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def next_deadline(self) -> float | None:
        for question in self._open.values():
            return question.deadline
        return None

    def expire(self, now: float) -> list[Question]:
        """The open questions whose deadline has passed, oldest first, each once."""
        due = []
        while self._open:
            question = next(iter(self._open.values()))
            if question.deadline > now:
                break
            del self._open[question.ticket]
            question.state = QuestionState.EXPIRED
            self.expired += 1
            due.append(question)
        return due

