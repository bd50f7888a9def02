"""What the alert rules and the dashboard may query: the series every service exports, and
the metric and label names a PromQL expression uses (enough PromQL for our own files).

Used by test_dashboard.py and test_alert_rules.py to catch a panel or a rule that names a
metric or a label nobody exports, which would otherwise stay silently empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from services.runtime.metrics import MetricFamilies

# Labels Prometheus itself attaches to every scraped series.
TARGET_LABELS = frozenset({"job", "instance"})

# Series Prometheus writes itself for each target (not exported by the services).
PROMETHEUS_SERIES: dict[str, frozenset[str]] = {"up": frozenset()}

KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(\s*\()?")
_VARIABLE = re.compile(r"\$\{?\w+\}?")


@dataclass(frozen=True)
class Selector:
    metric: str
    labels: frozenset[str]


def selectors(expr: str) -> list[Selector]:
    """Every metric an expression selects, with the label names its matchers use."""
    text = _STRING.sub('""', expr)
    text = _RANGE.sub("", text)
    text = _VARIABLE.sub("", text)
    text = _GROUPING.sub("", text)
    found = [
        Selector(name, frozenset(_MATCHER_LABEL.findall(matchers)))
        for name, matchers in _SELECTOR.findall(text)
    ]
    bare = _SELECTOR.sub("", text)
    for name, call in _IDENTIFIER.findall(bare):
        if call or name.lower() in KEYWORDS:
            continue  # a function call or an operator keyword
        found.append(Selector(name, frozenset()))
    return found


def exported_series() -> dict[str, frozenset[str]]:
    """Series name -> label names, for the standard families of services/runtime/metrics.py
    and the domain counters its `counter` docstring lists."""
    families = MetricFamilies("probe")
    series: dict[str, frozenset[str]] = {}
    for metric in vars(families).values():
        # prometheus_client keeps the family name and label names on these attributes.
        if isinstance(metric, Counter):
            series[f"{metric._name}_total"] = frozenset(metric._labelnames)
        elif isinstance(metric, Histogram):
            labels = frozenset(metric._labelnames)
            series[f"{metric._name}_bucket"] = labels | {"le"}
            series[f"{metric._name}_sum"] = labels
            series[f"{metric._name}_count"] = labels
        elif isinstance(metric, Gauge):
            series[metric._name] = frozenset(metric._labelnames)
    series.update(domain_counters())
    return series


def domain_counters() -> dict[str, frozenset[str]]:
    """The domain counters named in `MetricFamilies.counter`'s docstring, `name{labels}`."""
    doc = MetricFamilies.counter.__doc__ or ""
    listed = re.findall(r"(skillquest_\w+_total)\{([\w, ]*)\}", doc)
    return {name: frozenset(filter(None, re.split(r"[,\s]+", labels))) for name, labels in listed}


def grouping_labels(expr: str) -> set[str]:
    """Label names in the expression's by/without/on/ignoring/group_* clauses."""
    text = _STRING.sub('""', expr)
    labels: set[str] = set()
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text
    ):
        labels.update(filter(None, re.split(r"[,\s]+", clause)))
    return labels


def unknown_references(expr: str, known: dict[str, frozenset[str]]) -> list[str]:
    """What `expr` refers to that is not exported: unknown metrics, labels a metric lacks in
    its matchers, or grouping labels that none of the selected metrics carries."""
    problems = []
    carried: set[str] = set(TARGET_LABELS)
    for selector in selectors(expr):
        if selector.metric not in known:
            problems.append(f"unknown metric {selector.metric}")
            continue
        carried |= known[selector.metric]
        extra = selector.labels - known[selector.metric] - TARGET_LABELS
        if extra:
            problems.append(f"{selector.metric} has no label {', '.join(sorted(extra))}")
    for label in sorted(grouping_labels(expr) - carried):
        problems.append(f"no selected metric carries the grouping label {label}")
    return problems
