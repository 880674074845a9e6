"""Meaning checks of config values: the ``rules { ... }`` block of a schema (``conf/schema/*.conf``).

The schema says which keys exist and their types; its ``rules`` block says which values make sense::

    rules {
      "train.epochs" = ">= 1"
      "train.max_steps" = "-1 or >= 1"                  # -1 is the documented "unset"
      "train.scale_min" = ">= 1 and <= train.scale_max"  # another key of the same config
      "data.crop_ratio" = "> 0 and <= 1"
      "train.lr_floor" = "in [0, 1]"                     # closed interval
      "eval.scales" = "each >= 1"                        # every element of a list
      "data.lr_camera.psf_sigma" = "range in [0, 3]"     # a [low, high] pair, low <= high, each in [0, 3]
      "train.degradation" = "one of nearest, area, bicubic, camera"   # a string key's allowed values
    }

Grammar: ``rule := ["each " | "range "] alt (" or " alt)*`` or ``"one of " name (", " name)*``, ``alt := clause (" and " clause)*``,
``clause := OP operand | "in [" lo ", " hi "]" | number`` with ``OP`` one of ``>= > <= < == !=`` and an
operand that is a number or the full path of another numeric key. A bare number means ``== number``.
``range`` asks for a two-element list ``[low, high]`` with ``low <= high`` whose elements satisfy the rest
(a sampling interval such as a blur or noise range); ``one of`` lists the values a string key may take.
``disc.conf`` includes ``giif.conf``, and HOCON merges the two ``rules`` blocks.

``load_config`` checks the rules after the types, before any work starts, and reports each broken rule
as ``<key> = <value> in <file>: must be <rule>`` (the file, ``--set``, or the schema default the value
came from). Keys whose value has the wrong type are reported by the type check and skipped here.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*")
_CLAUSE = re.compile(r"(>=|<=|==|!=|>|<)\s*(\S+)")
_INTERVAL = re.compile(r"in\s*\[\s*(\S+?)\s*,\s*(\S+?)\s*\]")


class RuleSyntaxError(ValueError):
    """A schema's rule cannot be parsed or refers to a key the schema does not have (a schema bug)."""


@dataclass(frozen=True)
class Clause:
    """``value <op> operand``; ``operand`` is a number or the path of another key."""

    op: str
    operand: float | str

    def bound(self, lookup: Callable[[str], Any]) -> float | None:
        """The operand's number (another key's value through ``lookup``); None when that is not a number."""
        if isinstance(self.operand, str):
            value = lookup(self.operand)
            return float(value) if is_number(value) else None
        return self.operand

    def holds(self, value: float, lookup: Callable[[str], Any]) -> bool:
        bound = self.bound(lookup)
        return True if bound is None else _OPS[self.op](value, bound)


@dataclass(frozen=True)
class Rule:
    """One key's rule: holds when any alternative holds, an alternative when all its clauses hold."""

    key: str
    text: str
    alternatives: tuple[tuple[Clause, ...], ...]
    each: bool = False  # applied to every element of a list value
    pair: bool = False  # a "range" rule: the value is a [low, high] list, low <= high, each element checked
    choices: tuple[str, ...] = ()  # a "one of" rule: the allowed values of a string key

    def references(self) -> list[str]:
        """The other keys this rule compares with."""
        return sorted({c.operand for alt in self.alternatives for c in alt if isinstance(c.operand, str)})

    def bounds(self) -> list[float]:
        """The numeric constants of the rule (for tests that look for values just outside it)."""
        return sorted({c.operand for alt in self.alternatives for c in alt if not isinstance(c.operand, str)})

    def holds_for(self, value: float, lookup: Callable[[str], Any]) -> bool:
        if not math.isfinite(value):
            return False
        return any(all(c.holds(value, lookup) for c in alt) for alt in self.alternatives)

    def violations(self, value: Any, lookup: Callable[[str], Any]) -> list[Any]:
        """The values (the value itself, or the list elements with ``each`` / ``range``) that break the rule;
        for a ``range`` rule a list that is not an ascending number pair is itself the violation, for a
        ``one of`` rule a string outside the choices."""
        if self.choices:
            return [value] if isinstance(value, str) and value not in self.choices else []
        if self.pair and isinstance(value, list):
            numbers = [v for v in value if is_number(v)]
            if len(value) != 2 or len(numbers) != 2 or numbers[0] > numbers[1]:
                return [value]
        values = value if (self.each or self.pair) and isinstance(value, list) else [value]
        return [v for v in values if is_number(v) and not self.holds_for(float(v), lookup)]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _operand(text: str, key: str, rule_text: str) -> float | str:
    if _NUMBER.fullmatch(text):
        return float(text)
    if _KEY.fullmatch(text):
        return text
    raise RuleSyntaxError(f"rule for {key!r}: cannot read operand {text!r} in {rule_text!r}")


def parse_rule(key: str, text: str) -> Rule:
    """Parse one rule string (grammar in the module docstring)."""
    body = text.strip()
    if body.startswith("one of "):
        choices = tuple(c.strip() for c in body[len("one of ") :].split(","))
        if not all(choices):
            raise RuleSyntaxError(f"rule for {key!r}: empty choice in {text!r} (expected 'one of a, b, c')")
        return Rule(key=key, text=body, alternatives=(), choices=choices)
    each = body.startswith("each ")
    pair = body.startswith("range ")
    if each or pair:
        body = body.split(" ", 1)[1].strip()
    alternatives = []
    for alt_text in re.split(r"\s+or\s+", body):
        clauses = []
        for clause_text in re.split(r"\s+and\s+", alt_text.strip()):
            clause_text = clause_text.strip()
            if match := _INTERVAL.fullmatch(clause_text):
                clauses += [
                    Clause(">=", _operand(match.group(1), key, text)),
                    Clause("<=", _operand(match.group(2), key, text)),
                ]
            elif match := _CLAUSE.fullmatch(clause_text):
                clauses.append(Clause(match.group(1), _operand(match.group(2), key, text)))
            elif _NUMBER.fullmatch(clause_text):
                clauses.append(Clause("==", float(clause_text)))
            else:
                raise RuleSyntaxError(
                    f"rule for {key!r}: cannot read {clause_text!r} in {text!r} "
                    "(expected e.g. '>= 1', 'in [0, 1]', '< data.hr_size', '-1 or >= 1')"
                )
        alternatives.append(tuple(clauses))
    return Rule(key=key, text=text.strip(), alternatives=tuple(alternatives), each=each, pair=pair)


def parse_rules(block: Any, known_keys: Iterable[str] = ()) -> list[Rule]:
    """The rules of a schema's ``rules`` block (a mapping key path -> rule string or list of rule strings).

    Args:
        block: the block as parsed by pyhocon (quoted keys keep their quotes there; they are removed).
        known_keys: the schema's key paths; when given, every rule key and referenced key must be one or lie
            below one (a free-form group such as ``model.args``: the rule applies when the key is given).

    Raises:
        RuleSyntaxError: an unreadable rule, or a rule about (or referring to) a key the schema lacks.
    """
    known = set(known_keys)
    rules = []
    for raw_key, texts in (block or {}).items():
        key = str(raw_key).strip('"')
        for text in texts if isinstance(texts, list) else [texts]:
            rule = parse_rule(key, str(text))
            for name in [key, *rule.references()]:
                # a key below a free-form group ({} in the schema, e.g. model.args) may have a rule too
                if known and name not in known and not any(name.startswith(k + ".") for k in known):
                    raise RuleSyntaxError(
                        f"rule {key!r} = {text!r} refers to {name!r}, which is not a key of the schema"
                    )
            rules.append(rule)
    return rules


def format_value(value: Any) -> str:
    """A config value as it would be written in HOCON (strings quoted)."""
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def check_rules(
    rules: Iterable[Rule], lookup: Callable[[str], Any], origin: Callable[[str], str]
) -> list[str]:
    """Every broken rule, one message each: ``<key> = <value> in <origin>: must be <rule>``.

    Args:
        rules: from ``parse_rules``.
        lookup: key path -> the merged config's value (``KeyError`` when absent).
        origin: key path -> where its value came from (a file, ``--set key=value``, the schema default).
    """
    errors = []

    def get(key: str) -> Any:
        try:
            return lookup(key)
        except (KeyError, TypeError):
            return None

    for rule in rules:
        value = get(rule.key)
        if rule.choices:
            if not isinstance(value, str):
                continue
        elif rule.each or rule.pair:
            if not isinstance(value, list):
                continue
        elif not is_number(value):
            continue  # wrong type or unset: the type check reports it
        bad = rule.violations(value, get)
        if not bad:
            continue
        refs = [f"{ref} = {format_value(get(ref))} in {origin(ref)}" for ref in rule.references()]
        what = (
            f" (element {format_value(bad[0])})" if (rule.each or rule.pair) and bad[0] is not value else ""
        )
        if rule.pair and bad[0] is value:
            what = " (a [low, high] pair of numbers with low <= high)"
        if rule.choices:
            close = difflib.get_close_matches(value, rule.choices, n=1)
            what = f" (did you mean {close[0]!r}?)" if close else ""
        errors.append(
            f"{rule.key} = {format_value(value)} in {origin(rule.key)}: must be {rule.text}{what}"
            + (f" (where {'; '.join(refs)})" if refs else "")
        )
    return errors
