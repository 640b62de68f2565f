"""Label and field selectors (``?labelSelector=`` / ``?fieldSelector=``), parsed into predicates.

Owned by the Kubernetes stand-in; used by list and watch in ``simcloud.kube.server``. Pure functions.
Label selectors support ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` and ``!k``;
field selectors support ``metadata.name`` and ``metadata.namespace`` with ``=``, ``==`` and ``!=``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from simcloud.kube.errors import bad_request

Predicate = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_SUPPORTED_FIELDS = ("metadata.name", "metadata.namespace")


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    terms: list[str] = []
    depth = 0
    current = ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _equality(term: str) -> tuple[str, str, str] | None:
    for operator in ("!=", "==", "="):
        if operator in term:
            key, _, value = term.partition(operator)
            return key.strip(), operator, value.strip()
    return None


def _label_requirement(term: str) -> tuple[str, str, frozenset[str]]:
    """``(key, operator, values)`` with operator one of ``in``, ``notin``, ``exists``, ``!exists``."""
    set_match = _SET_RE.match(term)
    if set_match:
        key, operator, raw = set_match.groups()
        return key, operator, frozenset(v.strip() for v in raw.split(",") if v.strip())
    equality = _equality(term)
    if equality is not None:
        key, operator, value = equality
        return key, "notin" if operator == "!=" else "in", frozenset({value})
    if term.startswith("!") and re.fullmatch(r"[A-Za-z0-9_./-]+", term[1:].strip()):
        return term[1:].strip(), "!exists", frozenset()
    if re.fullmatch(r"[A-Za-z0-9_./-]+", term):
        return term, "exists", frozenset()
    raise bad_request(f"unable to parse requirement: found '{term}', expected: identifier")


def _label_matches(labels: dict[str, str], requirement: tuple[str, str, frozenset[str]]) -> bool:
    key, operator, values = requirement
    if operator == "in":
        return labels.get(key) in values
    if operator == "notin":
        return labels.get(key) not in values
    if operator == "exists":
        return key in labels
    return key not in labels


def parse_label_selector(selector: str) -> Predicate:
    requirements = [_label_requirement(term) for term in _split_terms(selector)]

    def matches(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(_label_matches(labels, r) for r in requirements)

    return matches


def parse_field_selector(selector: str) -> Predicate:
    requirements: list[tuple[str, bool, str]] = []  # (metadata attribute, equal?, value)
    for term in _split_terms(selector):
        equality = _equality(term)
        if equality is None:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        field, operator, value = equality
        if field not in _SUPPORTED_FIELDS:
            raise bad_request(f"field label not supported: {field}")
        requirements.append((field.split(".", 1)[1], operator != "!=", value))

    def matches(obj: dict[str, Any]) -> bool:
        metadata = obj.get("metadata", {})
        return all((metadata.get(attr, "") == value) is equal for attr, equal, value in requirements)

    return matches


def combine(label_selector: str | None, field_selector: str | None) -> Predicate:
    predicates: list[Predicate] = []
    if label_selector:
        predicates.append(parse_label_selector(label_selector))
    if field_selector:
        predicates.append(parse_field_selector(field_selector))
    return lambda obj: all(p(obj) for p in predicates)
