"""docs/data-model.md's access-pattern table, read the one way its readers need it: the
round-trip test checks the code against it, and `make bench` quotes it."""

from __future__ import annotations

from pathlib import Path

DATA_MODEL = Path(__file__).resolve().parents[2] / "docs" / "data-model.md"


def documented(column: str) -> dict[str, str]:
    """The access-pattern table's cells of ``column``, by access pattern."""
    section = DATA_MODEL.read_text().split("\n## Access patterns\n", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|")
    ]
    header, _rule, *body = rows
    at = header.index(column)
    return {row[0]: row[at] for row in body}
