"""
common.py - what the ecosystem tests share: the repository's paths, the integration
harness (tests/integration/harness.py: servers on free loopback ports, strict stops), the
contract's paths and metric names read from API.md, and a small PromQL reader that names
the metrics and labels an expression uses.

API.md is the contract in the repository (docs/API.md, the one extended since the
original lab's copy), or the file COUNTERD_API_MD names. Reading it, rather than copying its lists here, keeps these tests
honest when the contract grows.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))

import harness  # noqa: E402  (after the path above)

API_MD = os.environ.get("COUNTERD_API_MD") or os.path.join(REPO, "docs", "API.md")

# The counterd services of docker-compose.yml: name -> (role, port, region or None).
COUNTERD_SERVICES = {
    "lab34-counter-us-east": ("region", 8001, "us-east"),
    "lab34-counter-us-west": ("region", 8002, "us-west"),
    "lab34-counter-eu-west": ("region", 8003, "eu-west"),
    "lab34-coordinator": ("coordinator", 8000, None),
    "lab34-gateway": ("gateway", 8080, None),
    "lab34-counter-consistent": ("strong", 8004, None),
}

# API.md's section of each role.
API_SECTIONS = {"region": "Region node", "coordinator": "Coordinator", "gateway": "Gateway",
                "strong": "Strong counter"}


def api_text():
    if not os.path.exists(API_MD):
        raise AssertionError("the API contract is not at %s: set COUNTERD_API_MD to its path"
                             % API_MD)
    with open(API_MD, encoding="utf-8") as f:
        return f.read()


def api_sections():
    """{section title (before any parenthesis): its text} of API.md's "## " sections."""
    out = {}
    for block in re.split(r"^## ", api_text(), flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        out[title.split("(")[0].strip()] = body
    return out


def api_paths(role):
    """The paths API.md gives the role's service, as regular expressions of the path
    alone (no query): "{name}" matches one path segment."""
    body = api_sections()[API_SECTIONS[role]]
    paths = set()
    for m in re.finditer(r"`(?:(?:GET|POST|PUT|DELETE) )?(/[^`\s]*)`", body):
        p = m.group(1).split("?")[0]
        paths.add(p)
    if not paths:
        raise AssertionError("API.md section %r lists no paths" % API_SECTIONS[role])
    return {p: re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(p)) + "$")
            for p in paths}


def api_path_of(role, path):
    """The API.md path of the role that `path` (no query) matches, or None."""
    for p, rx in sorted(api_paths(role).items()):
        if rx.match(path):
            return p
    return None


def api_metric_names():
    """Metric names listed in API.md's "Metrics" section."""
    body = api_sections()["Metrics"]
    names = set()
    for span in re.findall(r"`([^`]*)`", body):
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?$", span)
        if m:
            names.add(m.group(1))
    if len(names) < 10:
        raise AssertionError("API.md's Metrics section lists only %r" % sorted(names))
    return names


# ---------------------------------------------------------------------------------------
# PromQL: which metrics and labels an expression uses
# ---------------------------------------------------------------------------------------

_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "atan2", "inf", "nan"}


def promql_uses(expr):
    """(metric names, label names) an expression uses: the names of its vector selectors,
    and the labels of their matchers and of its by/without/on/ignoring clauses."""
    labels = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string contents name nothing
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    for m in _GROUPING.finditer(text):
        labels.update(x.strip() for x in m.group(2).split(",") if x.strip())
    text = _GROUPING.sub(" ", text)
    for body in re.findall(r"\{([^}]*)\}", text):
        labels.update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    text = re.sub(r"\{[^}]*\}", " ", text)
    metrics = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name in _KEYWORDS:
            continue  # a function or aggregation, or an operator word
        metrics.add(name)
    return metrics, labels


def histogram_base(name, known):
    """The family name of a series name: x_bucket, x_sum and x_count belong to x when x is
    a known name; anything else is its own family."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[:-len(suffix)] in known:
            return name[:-len(suffix)]
    return name
