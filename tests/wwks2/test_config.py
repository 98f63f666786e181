"""The [wwks2] table: defaults, validation with key paths, address and destination rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispenser.config import ConfigError, load_config, parse_config
from dispenser.wwks2.config import Wwks2Config

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "dispenser.toml"


def test_defaults_and_the_shipped_example() -> None:
    config = Wwks2Config()
    assert (config.enabled, config.host, config.port, config.subscriber_id) == (
        False, "127.0.0.1", 6050, 999)
    assert config.input_mode == "local" and config.task_retention_days == 7
    example = load_config(EXAMPLE).wwks2
    assert example.output_destinations == {1: 1, 2: 2}
    assert example.allowed_clients == ("127.0.0.1", "::1")


def test_every_problem_is_listed_with_its_key_path() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"wwks2": {"allowed_clients": ["10.0.0.1", "pharmacy-pc"], "port": -1,
                                "subscriber_id": 0, "input_mode": "ask",
                                "output_destinations": {"1": 0}, "colour": "x"}})
    paths = [p for p, _ in caught.value.errors]
    assert set(paths) == {"wwks2.allowed_clients", "wwks2.port", "wwks2.subscriber_id",
                          "wwks2.input_mode", "wwks2.output_destinations", "wwks2.colour"}
    assert "not an IP address or network: 'pharmacy-pc'" in str(caught.value)


def test_allowed_clients_addresses_and_networks() -> None:
    config = Wwks2Config(allowed_clients=("192.168.7.20", "10.1.2.0/24", "::1"))
    assert config.allows("192.168.7.20")
    assert config.allows("::ffff:192.168.7.20")  # an IPv4 peer on a dual-stack socket
    assert config.allows("10.1.2.77")
    assert not config.allows("10.1.3.1")
    assert not config.allows("192.168.7.21")
    assert not config.allows("not-an-address")


def test_output_destinations() -> None:
    identity = Wwks2Config()
    assert (identity.output_point(3), identity.output_point(0), identity.destination_of(3)) \
        == (3, None, 3)
    mapped = Wwks2Config(output_destinations={10: 1, 11: 1, 20: 2})
    assert (mapped.output_point(10), mapped.output_point(1)) == (1, None)
    assert (mapped.destination_of(1), mapped.destination_of(2), mapped.destination_of(4)) \
        == (10, 20, 4)
