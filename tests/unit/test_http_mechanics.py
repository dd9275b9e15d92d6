from __future__ import annotations

import pytest

from app.http.etag import etag_for, if_none_match_hits, parse_if_match
from app.http.exceptions import ProblemException
from app.http.pagination import CursorCodec


def test_if_match_parsing() -> None:
    assert parse_if_match('"3"').allows(3)
    assert not parse_if_match('"3"').allows(4)
    assert parse_if_match('"1", "4"').allows(4)
    assert parse_if_match("*").allows(99)
    assert not parse_if_match('W/"3"').allows(3)  # strong comparison
    assert not parse_if_match("garbage").allows(0)
    assert etag_for(7) == '"7"'


def test_if_none_match_uses_weak_comparison() -> None:
    assert if_none_match_hits('W/"3"', 3)
    assert if_none_match_hits('"1", "3"', 3)
    assert if_none_match_hits("*", 1)
    assert not if_none_match_hits('"2"', 3)
    assert not if_none_match_hits(None, 3)


def test_cursor_round_trip_and_binding() -> None:
    codec = CursorCodec(b"secret")
    cursor = codec.encode("benches", {"type": "hil"}, "rig-9")
    assert codec.decode(cursor, "benches", {"type": "hil"}) == "rig-9"
    with pytest.raises(ProblemException) as other_query:
        codec.decode(cursor, "benches", {"type": "scope"})
    assert other_query.value.status == 400
    with pytest.raises(ProblemException):
        CursorCodec(b"other secret").decode(cursor, "benches", {"type": "hil"})
    with pytest.raises(ProblemException):
        codec.decode(cursor.replace(".", ".x"), "benches", {"type": "hil"})
