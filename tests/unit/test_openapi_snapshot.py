from tests.support.openapi_snapshot import SNAPSHOT, render


def test_committed_openapi_matches_the_app() -> None:
    assert SNAPSHOT.read_text() == render(), "openapi/openapi.json is stale: run `make openapi`"
