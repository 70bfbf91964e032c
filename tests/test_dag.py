"""The committed rule graph (docs/rulegraph.dot, drawn as docs/rulegraph.svg by `make dag`)
matches the rules; no graphviz needed to check it."""

import re

from testdata.workflow import ROOT, snakemake_reading

DOCS = ROOT / "docs"


def rule_edges(dot: str) -> set[tuple[str, str]]:
    """(producer, consumer) rule names of a `snakemake --rulegraph` dot text (node numbers and
    edge order vary between calls; the names and edges do not)."""
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.MULTILINE))
    edges = re.findall(r"^\s*(\d+) -> (\d+)", dot, re.MULTILINE)
    return {(names[source], names[target]) for source, target in edges}


def test_committed_rule_graph_matches_the_rules(tmp_path):
    """Drawn in a directory of its own: Snakemake holds the run lock there while it reads."""
    current = snakemake_reading("--rulegraph", tmp_path)
    assert current.returncode == 0, current.stderr
    committed = (DOCS / "rulegraph.dot").read_text()
    assert rule_edges(committed) == rule_edges(current.stdout), "run `make dag` and commit"
    assert ("train", "evaluate") in rule_edges(committed)


def test_svg_is_drawn_from_the_committed_graph():
    svg = (DOCS / "rulegraph.svg").read_text()
    assert svg.lstrip().startswith(("<?xml", "<svg"))
    names = {name for edge in rule_edges((DOCS / "rulegraph.dot").read_text()) for name in edge}
    drawn = set(re.findall(r"<title>([^<]+)</title>", svg))
    assert names <= {*drawn, *(re.findall(r">([a-z_]+)</text>", svg))}
    assert "docs/rulegraph.svg" in (ROOT / "README.md").read_text()
