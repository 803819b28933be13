"""``change``: Node-RED's change node — sets, changes, deletes and moves message and context properties.

Implements Node-RED 4's change (``15-change.js``): its rules apply in order to each message, which
then goes on. A rule acts on a msg property or a flow/global context key (``p``/``pt``):

* ``set`` it to a typed value (``to``/``tot``: str num bool json bin date env msg flow global),
  ``dc`` deep-copying it; setting a value that is undefined (a msg property that is not there)
  deletes the property;
* ``change`` it: in a text, every match of ``from``/``fromt`` (text, number or boolean as its
  text, a regular expression, or a msg/flow/global value) is replaced by the value's text, with
  JavaScript's ``$&``, ``$1``… patterns; a text equal to the whole search value, or a number or
  boolean equal to it, is replaced by the value itself (so ``"5"`` can become the number 10);
* ``delete`` it;
* ``move`` it to ``to`` (a msg property or context key of type ``tot``).

Node-RED's quirks are kept, as flows may rely on them: a ``from`` of type ``env`` is searched for
as written (Node-RED does not read the variable); a ``from`` taken from a msg/flow/global value
that is neither text, number, boolean nor regular expression is reported as an error and the rule
still runs without a search value (in a text it then replaces the first ``undefined``), and the
message goes on; a rule whose ``to`` or ``p`` cannot be read (a step into a missing msg
property) does nothing; a value that cannot be set (beneath a number) is logged as a warning.
The single rule of Node-RED 0.x flows (``action``, ``property``, ``from``, ``to``, ``reg``, used
when ``rules`` is not given) is read as Node-RED 4 reads it, and a ``move`` rule without ``tot``
moves to a msg property (as Node-RED's editor migrates it; its runtime would lose the message).

Not implemented: JSONata (``tot: "jsonata"``) and context stores other than ``memory``, refused
when the flow is loaded; so are rules Node-RED would silently skip or stall on (an unknown ``t``
or ``pt``, a property expression that does not parse, an invalid regular expression or JSON).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

from evflow.runtime.context import ContextStore
from evflow.runtime.message import Message, copy_value
from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseBool,
    Node,
    PropertyError,
    TypedValue,
    TypedValueError,
    delete_property,
    get_property,
    one_of,
    parse_property,
    set_property,
)
from evflow.runtime.typedinput import js_regex

from ._jsvalues import plain, replace, to_number, to_string, type_of

RULE_ACTIONS = ("set", "change", "delete", "move")
CONTEXT_TYPES = ("flow", "global")
# The `from` types whose value is read per message; the others are searched for as written.
_READ_FROM = ("msg", "flow", "global")


@attrs.frozen(kw_only=True)
class ChangeRule:
    # what to do with the property: set, change (search and replace), delete, move
    t: str = attrs.field(validator=one_of(*RULE_ACTIONS))
    # the property: a msg property expression (`payload.status`) or a flow/global context key
    p: str = ""
    # where `p` is: msg flow global
    pt: str = attrs.field(default="msg", validator=one_of("", "msg", *CONTEXT_TYPES))
    # set: the value; change: the replacement; move: where to move to; of type `tot`
    to: Any = ""
    # the type of `to`: str num bool json bin date env msg flow global (jsonata is not supported);
    # for move: msg flow global
    tot: str = ""
    # change: what to search for, of type `fromt` (written `from` in the flow file)
    from_: Any = attrs.field(default="", metadata={"evflow_key": "from"})
    # the type of `from`: str num bool re env msg flow global
    fromt: str = ""
    # set: deep-copy the value (a msg or context object), so that changing one does not change the other
    dc: LooseBool = False
    # change, in old flows: `from` is a regular expression (now `fromt: "re"`)
    re: LooseBool = False


@attrs.frozen(kw_only=True)
class ChangeConfig:
    # the rules, applied in order
    rules: tuple[ChangeRule, ...] | None = None
    # Node-RED 0.x's single rule, read when `rules` is not given: replace (set), change, delete, move;
    # Node-RED 4 writes it empty
    action: str = ""
    # its msg property
    property: str = ""
    # its search value (written `from` in the flow file)
    from_: Any = attrs.field(default="", metadata={"evflow_key": "from"})
    # its value (set), replacement (change) or destination (move)
    to: Any = ""
    # its search value is a regular expression (null too)
    reg: LooseBool | None = False




def _rules(config: ChangeConfig) -> tuple[tuple[ChangeRule, str], ...]:
    """The rules as Node-RED 4 runs them (old forms migrated), each with the JSON path of its config."""
    if config.rules is not None:
        rules = [(rule, f"$.rules[{index}]") for index, rule in enumerate(config.rules)]
    else:
        action = "set" if config.action == "replace" else config.action
        if action not in RULE_ACTIONS:
            raise ValueError("a change node needs `rules` (or, as in Node-RED 0.x, an `action`) @ $.action")
        legacy = ChangeRule(
            t=action,
            p=config.property,
            to=config.to or "",
            from_=config.from_ or "",
            re=action == "change" and (config.reg is None or config.reg),
        )
        rules = [(legacy, "$")]
    return tuple((_migrated(rule), path) for rule, path in rules)


def _migrated(rule: ChangeRule) -> ChangeRule:
    """Node-RED's migration of older rules: a `re` flag, a set rule's `msg.` value without a type."""
    changes: dict[str, Any] = {"pt": rule.pt or "msg"}
    if rule.t == "change" and rule.re:
        changes["fromt"] = "re"
    if not rule.tot:
        if rule.t == "set" and isinstance(rule.to, str) and rule.to.startswith("msg."):
            changes.update(to=rule.to[4:], tot="msg")
        else:
            changes["tot"] = "msg" if rule.t == "move" else "str"
    changes["fromt"] = changes.get("fromt", rule.fromt) or "str"
    return attrs.evolve(rule, **changes)


# ---- where a rule acts ---------------------------------------------------------------------------


def _context_key(key: str) -> str:
    """A context key without its store prefix (``#:(memory)::count``); only the memory store exists."""
    match = re.fullmatch(r"#:\((\S+?)\)::(.*)", key)
    if match is None:
        return key
    if match.group(1) not in ("memory", "default"):
        raise ValueError(f"context store {match.group(1)!r} is not available: evflow has only the memory store")
    return match.group(2)


class _MsgPlace:
    """A msg property."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.parts = parse_property(expression)

    def get(self, msg: Message) -> Any:
        """The value; :class:`PropertyError` for a step into a missing property."""
        return get_property(msg, self.parts)

    def set(self, msg: Message, value: Any) -> tuple[Message, bool]:
        """``msg`` with the value set (undefined: deleted), and whether it could be (Node-RED's
        ``setMessageProperty``: it does not create what is missing to delete beneath it)."""
        parts = self.parts
        if value is UNDEFINED:
            if len(parts) > 1:
                try:
                    parent = plain(get_property(msg, parts[:-1]))
                except PropertyError:
                    return msg, False
                if not isinstance(parent, dict | list | tuple):
                    return msg, False
            return delete_property(msg, parts), True
        changed = set_property(msg, parts, value)
        return changed, changed is not msg or parts[0] == "_msgid"

    def delete(self, msg: Message) -> Message:
        return delete_property(msg, self.parts)


class _ContextPlace:
    """A flow or global context key."""

    def __init__(self, store: ContextStore, key: str) -> None:
        self.expression = key
        self.store = store
        self.key = _context_key(key)

    def get(self, msg: Message) -> Any:
        return self.store.get(self.key)

    def set(self, msg: Message, value: Any) -> tuple[Message, bool]:
        self.store.set(self.key, value)
        return msg, True

    def delete(self, msg: Message) -> Message:
        self.store.set(self.key, UNDEFINED)
        return msg


Place = _MsgPlace | _ContextPlace


def _check_place(expression: Any, type_: str, path: str) -> None:
    if not isinstance(expression, str):
        raise ValueError(f"a property is written as text @ {path}")
    try:
        parse_property(_context_key(expression) if type_ in CONTEXT_TYPES else expression)
    except (PropertyError, ValueError) as exc:
        raise ValueError(f"{exc} @ {path}") from None


def _check(rule: ChangeRule, path: str) -> None:
    """Raise ValueError (with the JSON path) for a rule Node-RED would refuse, skip or stall on."""
    _check_place(rule.p, rule.pt, f"{path}.{'property' if path == '$' else 'p'}")
    to_path = f"{path}.to"
    if rule.t == "move":
        if rule.tot not in ("msg", *CONTEXT_TYPES):
            raise ValueError(f"a move goes to a msg, flow or global property, not {rule.tot!r} @ {path}.tot")
        _check_place(rule.to, rule.tot, to_path)
    elif rule.t in ("set", "change"):
        try:
            TypedValue.of(rule.to, rule.tot)
        except TypedValueError as exc:
            raise ValueError(f"{exc} @ {to_path}") from None
    if rule.t == "change":
        from_path = f"{path}.from"
        if rule.fromt in _READ_FROM:
            _check_place(rule.from_, rule.fromt, from_path)
        elif rule.fromt == "re":
            try:
                js_regex(to_string(rule.from_))
            except TypedValueError as exc:
                raise ValueError(f"{exc} @ {from_path}") from None


# ---- the rules -----------------------------------------------------------------------------------

Rule = Callable[[Message], Message]
# What String.prototype.replace searches for when Node-RED hands it `undefined`: its text, once.
_UNDEFINED_TEXT = re.compile("undefined")


class Change(Node[ChangeConfig]):
    """Sets, changes, deletes or moves message properties and flow/global context values, by rules.

    Each message goes through ``rules`` in order, then on to port 0. A rule is
    ``{"t": "set", "p": "payload.status", "pt": "msg", "to": "ok", "tot": "str"}``: ``t`` is set,
    change, delete or move; ``p``/``pt`` the msg property or flow/global key it acts on; ``to``/``tot``
    the value (set), the replacement (change, with ``from``/``fromt`` what to search for: text,
    number, boolean or ``re`` regular expression) or where to move to. Node-RED's semantics, quirks
    included (see the module's documentation).
    """

    type = "change"
    Config = ChangeConfig
    inline = True

    def __init__(self, context: Any, config: ChangeConfig) -> None:
        super().__init__(context, config)
        # Failures of `change` rules on this message (Node-RED reports them and goes on).
        self._failures: list[tuple[Exception, Message]] = []
        self._rules = tuple(self._compile(rule) for rule, _ in _rules(config))

    @classmethod
    def check(cls, config: ChangeConfig) -> list[ConfigWarning]:
        for rule, path in _rules(config):
            _check(rule, path)
        return []

    async def receive(self, msg: Message) -> None:
        if self._failures:
            self._failures.clear()  # left by a message whose rule raised (its failure was routed)
        for rule in self._rules:
            msg = rule(msg)
        if self._failures:
            failures, self._failures = self._failures, []
            for failure, failed in failures:
                await self.context.error(failure, failed)
        await self.send(msg)

    # ---- preparation ---------------------------------------------------------------------------

    def _place(self, expression: str, type_: str) -> Place:
        if type_ == "msg":
            return _MsgPlace(expression)
        return _ContextPlace(self.context.flow if type_ == "flow" else self.context.global_context, expression)

    def _value(self, rule: ChangeRule) -> Callable[[Message], Any]:
        """The rule's ``to`` for a message; :class:`PropertyError` when it is a msg property that
        cannot be read."""
        typed = TypedValue.of(rule.to, rule.tot)
        if rule.tot == "env":  # Node-RED reads the variable once, when the node starts
            constant = typed.evaluate(None, self.context)
            return lambda msg: constant
        if typed.is_constant and rule.tot != "json":  # JSON gives each message an object of its own
            constant = typed.evaluate(None, self.context)
            return lambda msg: constant
        context = self.context
        value = lambda msg: typed.evaluate(msg, context)  # noqa: E731
        if rule.dc:
            return lambda msg: copy_value(value(msg))
        return value

    def _warn_not_set(self, place: Place) -> None:
        self.context.log.warning("Cannot set property of non-object type: %s", place.expression)

    def _compile(self, rule: ChangeRule) -> Rule:
        place = self._place(rule.p, rule.pt)
        if rule.t == "delete":
            return place.delete
        if rule.t == "move":
            return self._move(
                place,
                self._place(rule.to, rule.tot),
                one_step=(rule.tot != rule.pt or (rule.to in rule.p and rule.p != rule.to)),
            )
        value = self._value(rule)
        if rule.t == "set":
            return self._set(place, value)
        return self._change(rule, place, value)

    def _set(self, place: Place, value: Callable[[Message], Any]) -> Rule:
        def set_rule(msg: Message) -> Message:
            try:
                new_value = value(msg)
            except PropertyError:
                return msg  # Node-RED: a `to` that cannot be read leaves the rule undone
            msg, done = place.set(msg, new_value)
            if not done:
                self._warn_not_set(place)
            return msg

        return set_rule

    def _move(self, source: Place, target: Place, one_step: bool) -> Rule:
        """Node-RED's move: set the target, then delete the source; or, when it goes to the same
        kind of place and the source's expression does not contain the target's, through a
        temporary property (take the value, delete the source, set the target)."""

        def move_rule(msg: Message) -> Message:
            try:
                value = source.get(msg)
            except PropertyError:
                value = UNDEFINED
                readable = False
            else:
                readable = True
            if one_step:
                if readable:
                    msg, done = target.set(msg, value)
                    if not done:
                        self._warn_not_set(target)
                return source.delete(msg)
            msg = source.delete(msg)
            msg, done = target.set(msg, value)
            if not done:
                self._warn_not_set(target)
            return msg

        return move_rule

    def _change(self, rule: ChangeRule, place: Place, value: Callable[[Message], Any]) -> Rule:
        search = self._search(rule)
        # Node-RED turns a replaced text back into a boolean only on msg properties.
        to_boolean = rule.tot == "bool" and isinstance(place, _MsgPlace)

        def change_rule(msg: Message) -> Message:
            try:
                replacement = value(msg)
                kind, wanted, pattern = search(msg)
                current = place.get(msg)
            except PropertyError:
                return msg  # Node-RED leaves the rule undone
            if isinstance(current, str):
                if kind in ("num", "bool", "str") and isinstance(wanted, str) and current == wanted:
                    return place.set(msg, replacement)[0]  # the whole text: replaced by the value itself
                text = to_string(replacement)
                if pattern is None:  # Node-RED's String.replace(undefined, …): the text "undefined", once
                    changed: Any = replace(current, _UNDEFINED_TEXT, text, count=1)
                else:
                    changed = replace(current, pattern, text)
                if to_boolean and changed == text:
                    changed = replacement
                return place.set(msg, changed)[0]
            if kind == "num" and type_of(current) == "number":
                if current == to_number(wanted):
                    return place.set(msg, replacement)[0]
            elif kind == "bool" and isinstance(current, bool):
                if isinstance(wanted, str) and to_string(current) == wanted:
                    return place.set(msg, replacement)[0]
            return msg

        return change_rule

    def _search(self, rule: ChangeRule) -> Callable[[Message], tuple[str, Any, re.Pattern[str] | None]]:
        """What a change rule searches for in a message: its kind (str num bool re, or "" when
        unusable), the value, and the regular expression that finds it in a text."""
        if rule.fromt not in _READ_FROM:
            written = to_string(rule.from_)
            pattern = js_regex(written) if rule.fromt == "re" else re.compile(re.escape(written))
            found = (rule.fromt, written, pattern)
            return lambda msg: found
        place = self._place(to_string(rule.from_), rule.fromt)

        def read(msg: Message) -> tuple[str, Any, re.Pattern[str] | None]:
            wanted = place.get(msg)
            kind = type_of(wanted)
            if kind == "number":
                return "num", wanted, None
            if kind == "boolean":
                return "bool", wanted, None
            if isinstance(wanted, re.Pattern):
                return "re", wanted, wanted
            if kind == "string":
                return "str", wanted, re.compile(re.escape(wanted))
            self._failures.append((ValueError(f"Invalid 'from' property: unsupported type: {kind}"), msg.copy()))
            return "", wanted, None

        return read
