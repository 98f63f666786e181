"""Logging: JSON/console choice, context binding, and no patient data in any output."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator

import pytest
import structlog

from dispenser.logs import REDACTED, bind_context, configure_logging, get_logger


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


def _secret() -> str:
    # Built at run time so the value never appears in source lines a traceback may quote.
    return "Zq" + uuid.uuid4().hex


def test_json_when_not_a_terminal_with_context() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", out)
    with bind_context(order_id="ORD-1", shipment_id=7):
        get_logger("t").info("order accepted", lines=2)
    get_logger("t").debug("below level")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "order accepted"
    assert record["order_id"] == "ORD-1"
    assert record["shipment_id"] == 7
    assert record["level"] == "info"
    assert "timestamp" in record


def test_console_on_a_terminal() -> None:
    out = _Tty()
    configure_logging("info", "auto", out)
    get_logger().info("hello console")
    text = out.getvalue()
    assert "hello console" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_patient_keys_are_redacted_at_any_depth(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("debug", fmt, out)  # type: ignore[arg-type]
    secrets = [_secret() for _ in range(7)]
    get_logger().info(
        "order received",
        name=secrets[0],
        patient_name=secrets[1],
        phone=secrets[2],
        address=secrets[3],
        insurance_id=secrets[4],
        order={"patient": {"Phone": secrets[5]}, "lines": [{"name": secrets[6]}]},
        order_id="ORD-9",
    )
    text = out.getvalue()
    for secret in secrets:
        assert secret not in text
    assert REDACTED in text
    assert "ORD-9" in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_traceback_does_not_show_locals(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("info", fmt, out)  # type: ignore[arg-type]
    secret = _secret()

    def check(patient_name: str) -> None:
        raise ValueError("eligibility check failed")

    try:
        check(secret)
    except ValueError:
        get_logger().exception("order check crashed")
    text = out.getvalue()
    assert "eligibility check failed" in text
    assert "check" in text  # the frame is there...
    assert secret not in text  # ...its locals are not


def test_stdlib_logging_goes_through_redaction() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    secret = _secret()
    logging.getLogger("pymodbus").warning("link lost", extra={"phone": secret})
    record = json.loads(out.getvalue().splitlines()[-1])
    assert record["event"] == "link lost"
    assert record["logger"] == "pymodbus"
    assert record["phone"] == REDACTED
    assert secret not in out.getvalue()


def test_unknown_level_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("loud")


@pytest.mark.parametrize("columns", [80, 120])
def test_console_lines_fit_the_terminal(columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: at 80 columns every console line wrapped. A line keeps time, level and
    event; its values follow and wrap whole (an id is never cut) within the width."""
    monkeypatch.setenv("COLUMNS", str(columns))
    out = _Tty()
    configure_logging("info", "console", out)
    log = get_logger("dispenser.daemon.demo")
    log.info("order received", order_id="DEMO-20261203-0001", state="received", lines=2,
             packs=4)
    log.warning("printer not ready, shipment waits in labelling", shipment_id="SH-000123",
                document="label", reasons=["paper_out", "head_open"])
    log.info("stored", pack_id=1, slot=0)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())
    lines = plain.splitlines()
    assert all(len(line) <= columns for line in lines), lines
    text = " ".join(lines)
    for whole in ("order received", "order_id=DEMO-20261203-0001", "state=received",
                  "lines=2", "packs=4", "shipment_id=SH-000123",
                  "reasons=paper_out,head_open", "pack_id=1 slot=0"):
        assert whole in text, (whole, lines)
    assert re.match(r"\d\d:\d\d:\d\d info  order received ", lines[0]), lines[0]
    assert "stored" in lines[-1] and "pack_id=1 slot=0" in lines[-1]
    if columns == 120:  # these fit on one line each
        assert "packs=4" in lines[0] and len(lines) == 4
