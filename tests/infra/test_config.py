"""Configuration: the shipped example loads, defaults work, every error is listed at once."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dispenser.config import Config, ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "dispenser.toml"


def test_shipped_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.api.socket == Path("/run/dispenser/api.sock")
    assert config.api.socket_mode == 0o660
    assert [t.role for t in config.api.tokens] == ["order_system", "staff", "technician"]
    assert config.robot.transport == "tcp"
    assert config.policy.merge_window_s == 300.0
    assert config.api.max_connections == 256


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.api.tcp_enabled is False
    assert config.api.max_message_bytes == 1024 * 1024
    assert config.api.max_connections == 256
    assert config.log.format == "auto"


def test_every_error_listed_with_its_key_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        """
        colour = "blue"
        [api]
        tcp_port = 70000
        socket_mode = "rw-rw----"
        tls_cert = "/x.crt"
        [[api.tokens]]
        role = "janitor"
        hash = "plaintext-token"
        [api.peer_uids]
        abc = "staff"
        [robot]
        transport = "carrier-pigeon"
        baudrat = 9600
        [policy]
        merge_window_s = -1
        [log]
        format = "xml"
        """
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    paths = [p for p, _ in caught.value.errors]
    for expected in [
        "colour",
        "api.tcp_port",
        "api.socket_mode",
        "api.tls_key",  # tls_cert without tls_key
        "api.tokens[0].role",
        "api.tokens[0].hash",
        "api.peer_uids.abc",
        "robot.transport",
        "robot.baudrat",
        "policy.merge_window_s",
        "log.format",
    ]:
        assert expected in paths, (expected, paths)
    text = str(caught.value)
    assert str(path) in text
    assert f"{len(paths)} problems" in text
    assert "robot.baudrat: unknown key" in text
    assert "dispenserctl hash-token" in text
    assert "api.tls_key: tls_cert and tls_key must be given together" in text
    assert "api.peer_uids.abc: this key is invalid" in text


def test_socket_mode_octal_forms() -> None:
    assert parse_config({"api": {"socket_mode": "0600"}}).api.socket_mode == 0o600
    assert parse_config({"api": {"socket_mode": 0o640}}).api.socket_mode == 0o640


def test_peer_uids_keys_are_uids() -> None:
    config = parse_config({"api": {"peer_uids": {"1000": "staff"}}})
    assert config.api.peer_uids == {1000: "staff"}


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[api\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")


def test_tls_needs_both_files() -> None:
    assert parse_config({"api": {"tls_cert": "/a.crt", "tls_key": "/a.key"}}).api.tls_enabled
    assert not parse_config({}).api.tls_enabled
    with pytest.raises(ConfigError, match=r"api\.tls_key"):
        parse_config({"api": {"tls_key": "/a.key"}})


def test_relative_paths_are_relative_to_the_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    path = folder / "dispenserd.toml"
    path.write_text(
        """
        [journal]
        path = "state/journal"
        audit_key = "/abs/audit.key"
        [api]
        socket = "run/api.sock"
        [formulary]
        path = "drugs.csv"
        """
    )
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load_config(Path("../etc/dispenserd.toml"))
    assert config.journal.path == folder / "state" / "journal"
    assert config.api.socket == folder / "run" / "api.sock"
    assert config.formulary.path == folder / "drugs.csv"
    # Absolute paths stay as written; keys the file does not set keep their defaults.
    assert config.journal.audit_key == Path("/abs/audit.key")
    assert config.api.tls_cert is None
    assert load_config(None).journal.path == Path("var/journal")


def test_metrics_are_off_unless_an_address_is_given() -> None:
    assert Config().metrics.listen is None and Config().metrics.address is None
    config = parse_config({"metrics": {"listen": "[::1]:9468"}})
    assert config.metrics.address == ("::1", 9468)
    with pytest.raises(ConfigError) as caught:
        parse_config({"metrics": {"listen": "9468", "near_expiry_days": -1}})
    assert [p for p, _ in caught.value.errors] == ["metrics.listen", "metrics.near_expiry_days"]


def test_the_example_shows_how_to_turn_metrics_on() -> None:
    text = EXAMPLE.read_text()
    assert load_config(EXAMPLE).metrics.listen is None  # off as shipped
    on = text.replace('# listen = "127.0.0.1:9468"', 'listen = "127.0.0.1:9468"')
    assert on != text
    assert parse_config(tomllib.loads(on)).metrics.address == ("127.0.0.1", 9468)
