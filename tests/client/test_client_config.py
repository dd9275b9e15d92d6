"""Where a client's URL and token come from: arguments, environment, profiles."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_client import Client, ConfigError, resolve_config

CONFIG = """
default_profile = "lab"

[profiles.lab]
url = "https://lab.example/"
token_file = "lab.token"

[profiles.staging]
url = "https://staging.example"
token = "staging-token"
"""


@pytest.fixture
def xdg(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "bench-orchestrator"
    folder.mkdir()
    (folder / "config.toml").write_text(CONFIG)
    (folder / "lab.token").write_text("lab-token\n")
    return {"XDG_CONFIG_HOME": str(tmp_path)}


def test_the_default_profile(xdg: dict[str, str]) -> None:
    config = resolve_config(env=xdg)
    assert (config.url, config.token, config.profile) == ("https://lab.example", "lab-token", "lab")


def test_a_named_profile_by_argument_or_environment(xdg: dict[str, str]) -> None:
    assert resolve_config(profile="staging", env=xdg).token == "staging-token"
    named = resolve_config(env={**xdg, "BENCH_PROFILE": "staging"})
    assert (named.url, named.profile) == ("https://staging.example", "staging")
    with pytest.raises(ConfigError, match=r"no profile 'nope'.*lab, staging"):
        resolve_config(profile="nope", env=xdg)


def test_environment_over_profile_and_arguments_over_both(
    xdg: dict[str, str], tmp_path: Path
) -> None:
    env = {**xdg, "BENCH_URL": "http://env.example", "BENCH_TOKEN": "env-token"}
    assert resolve_config(env=env).url == "http://env.example"
    assert resolve_config(env=env).token == "env-token"
    assert resolve_config(env=env).profile is None  # neither came from a profile
    token_file = tmp_path / "t"
    token_file.write_text("file-token")
    from_file = resolve_config(env={**xdg, "BENCH_TOKEN_FILE": str(token_file)})
    assert (from_file.url, from_file.token) == ("https://lab.example", "file-token")
    both = resolve_config("http://arg.example", "arg-token", env=env)
    assert (both.url, both.token) == ("http://arg.example", "arg-token")
    mixed = resolve_config(token="arg-token", env=xdg)  # url from the profile
    assert (mixed.url, mixed.token) == ("https://lab.example", "arg-token")


def test_nothing_configured_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no service URL"):
        resolve_config(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert resolve_config("http://x.example", env={"XDG_CONFIG_HOME": str(tmp_path)}).token is None
    with pytest.raises(ConfigError, match="cannot read token file"):
        resolve_config(env={"BENCH_URL": "http://x", "BENCH_TOKEN_FILE": str(tmp_path / "no")})


def test_a_broken_config_file_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bench-orchestrator"
    bad.mkdir()
    (bad / "config.toml").write_text("default_profile = [unclosed")
    with pytest.raises(ConfigError):
        resolve_config(env={"XDG_CONFIG_HOME": str(tmp_path)})


def test_client_reads_the_environment(monkeypatch: pytest.MonkeyPatch, xdg: dict[str, str]) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", xdg["XDG_CONFIG_HOME"])
    monkeypatch.delenv("BENCH_URL", raising=False)
    monkeypatch.delenv("BENCH_TOKEN", raising=False)
    monkeypatch.delenv("BENCH_TOKEN_FILE", raising=False)
    monkeypatch.delenv("BENCH_PROFILE", raising=False)
    with Client() as client:
        assert client.url == "https://lab.example" and client.config.token == "lab-token"
        assert client._http.headers["Authorization"] == "Bearer lab-token"
    monkeypatch.setenv("BENCH_URL", "http://127.0.0.1:1")
    with Client(profile="staging") as client:
        assert (client.url, client.config.token) == ("http://127.0.0.1:1", "staging-token")
