"""The daemon's configuration: one TOML file, validated in full before anything starts.

``load_config(path)`` reads the file with :mod:`tomllib` and validates it against the
pydantic models below. Every table refuses unknown keys, so a typo is an error rather than a
silently ignored setting. All problems are reported **at once**, each with its key path
(``api.tokens[0].hash``), in a :class:`ConfigError`.

Every setting has a default that suits a demo on one machine: files under ``var/`` relative
to the working directory, the API on a Unix socket only, the robot and printer on loopback
where ``dispenser-sim`` listens, the demo formulary shipped with the package. A relative
path written in a configuration file is relative to that file's folder (wherever the
daemon is started); the defaults of keys the file leaves out stay relative to the working
directory. Production installs use absolute paths (``config/dispenser.toml`` is the
documented example).

Sections: ``journal``, ``api`` (with ``[[api.tokens]]`` and ``[api.peer_uids]``), ``robot``,
``printer``, ``formulary``, ``stock``, ``policy`` (:class:`dispenser.core.policy.Policy`),
``log``, ``simulate``, ``metrics``, ``wwks2`` (:class:`dispenser.wwks2.config.Wwks2Config`) and
``[[institutions]]`` (the programme's designated institutions).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dispenser.core.policy import Policy
from dispenser.wwks2.config import Wwks2Config

__all__ = [
    "ROLES",
    "ApiConfig",
    "Config",
    "ConfigError",
    "FormularyConfig",
    "InstitutionConfig",
    "JournalConfig",
    "LogConfig",
    "MetricsConfig",
    "PrinterConfig",
    "RobotConfig",
    "Role",
    "SimulateConfig",
    "StockConfig",
    "TokenConfig",
    "Wwks2Config",
    "load_config",
    "missing_file",
    "parse_config",
]

Role = Literal["order_system", "staff", "technician", "records"]
# "records": the feeds of other channels (hospital dispensing records, e-prescriptions).
ROLES: tuple[Role, ...] = ("order_system", "staff", "technician", "records")

_TOKEN_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


class ConfigError(Exception):
    """The configuration is unusable. ``errors`` lists every ``(key path, message)``."""

    def __init__(self, errors: Sequence[tuple[str, str]], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.source or "configuration"
        count = len(self.errors)
        head = f"{where}: {count} problem{'s' if count != 1 else ''}, fix and start again:"
        return "\n".join([head, *(f"  {path}: {message}" for path, message in self.errors)])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JournalConfig(_Section):
    # The append-only journal (orders, shipments, stock, audit).
    path: Path = Path("var/journal")
    # The key of the audit chain (64 hex digits, mode 0600, `dispenserctl audit init-key`).
    # Under systemd the credential "audit.key" (LoadCredential=) is used instead. Unset: a
    # key beside the journal (<journal dir>/audit.key), made at the first start: for demos
    # and tests, since whoever can write the journal's directory can then read the key.
    audit_key: Path | None = None


class TokenConfig(_Section):
    role: Role
    # "sha256:<64 hex digits>", from `dispenserctl hash-token`; never the token itself.
    hash: str
    # Who holds the token ("order-system-prod", "ward-3 workstation"): shown in the audit
    # trail instead of a bare role, so a call can be traced to a holder.
    label: str | None = Field(default=None, min_length=1, max_length=64)

    @field_validator("hash")
    @classmethod
    def _hash_form(cls, value: str) -> str:
        if not _TOKEN_HASH.match(value):
            raise ValueError(
                "must be 'sha256:' followed by 64 lowercase hex digits "
                "(produce it with `dispenserctl hash-token`), never the token itself"
            )
        return value


class ApiConfig(_Section):
    socket: Path = Path("var/dispenser.sock")
    # File mode of the Unix socket: an octal TOML integer (0o660) or a string ("0660").
    socket_mode: int = Field(default=0o660, ge=0, le=0o777)
    tcp_enabled: bool = False
    tcp_host: str = "127.0.0.1"
    # 0 picks any free port (tests); the server reports the bound address.
    tcp_port: int = Field(default=7460, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = Field(default=None, validate_default=True)
    # Longest accepted request line, newline excluded.
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Connections served at once (all transports); one more is told so (-32020) and
    # closed. Staff terminals, the order system and monitors need a few dozen.
    max_connections: int = Field(default=256, ge=1, le=10000)
    tokens: tuple[TokenConfig, ...] = ()
    # Unix peer uid -> role: such connections are authenticated when they connect.
    peer_uids: dict[int, Role] = Field(default_factory=dict)

    @field_validator("socket_mode", mode="before")
    @classmethod
    def _octal_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return int(value, 8)
            except ValueError:
                raise ValueError('must be an octal file mode such as "0660"') from None
        return value

    # A field validator, not a model validator, so that this is reported together with
    # every other error (pydantic skips model validators once a field has failed).
    @field_validator("tls_key")
    @classmethod
    def _tls_pair(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        cert = info.data.get("tls_cert")
        if (cert is None) != (value is None):
            raise ValueError("tls_cert and tls_key must be given together")
        return value

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None


class RobotConfig(_Section):
    transport: Literal["tcp", "rtu"] = "tcp"
    host: str = "127.0.0.1"
    port: int = Field(default=1502, ge=1, le=65535)
    device: str = "/dev/ttyUSB0"
    baudrate: int = Field(default=115200, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    device_id: int = Field(default=1, ge=1, le=247)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    # The robot stops on its own when the controller is silent this long.
    watchdog_ms: int = Field(default=2000, ge=100, le=60000)
    # Number of output points (totes) the machine has, numbered 1..outputs.
    outputs: int = Field(default=4, ge=1, le=64)
    retry_backoff_s: float = Field(default=0.5, gt=0, le=60)
    # A link down this long becomes a machine fault a person must look at.
    link_fault_after_s: float = Field(default=10.0, gt=0, le=3600)


class PrinterConfig(_Section):
    # A device path (/dev/ttyUSB1) or any pyserial URL (socket://127.0.0.1:9100, loop://).
    url: str = "socket://127.0.0.1:9100"
    baudrate: int = Field(default=9600, gt=0)
    timeout_s: float = Field(default=2.0, gt=0, le=60)


class FormularyConfig(_Section):
    # The formulary CSV; unset: the demo formulary shipped with the package
    # (dispenser/data/formulary.csv).
    path: Path | None = None


class StockConfig(_Section):
    # Storage geometry: sides x levels x columns slots of slot_capacity packs each. The
    # defaults are the standard machine of docs/robot-protocol.md (10,000 slots of 10
    # packs); the daemon refuses to move a robot that reports another geometry.
    sides: int = Field(default=2, ge=1, le=16)
    levels: int = Field(default=25, ge=1, le=1000)
    columns: int = Field(default=200, ge=1, le=10000)
    slot_capacity: int = Field(default=10, ge=1, le=10000)
    # A drug with this many packs or fewer is reported as low stock.
    low_stock_packs: int = Field(default=5, ge=0)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: JSON when stdout is not a terminal, console otherwise.
    format: Literal["auto", "json", "console"] = "auto"


class SimulateConfig(_Section):
    # Run robot and printer simulators inside the daemon (demos only).
    enabled: bool = False
    # Simulated motion runs this many times faster than the real machine.
    speed: float = Field(default=1.0, gt=0, le=1000)
    # Every motion completes immediately (tests).
    instant: bool = False
    # The simulator's control socket (``dispenser-sim put`` / ``take`` use it).
    control: Path = Path("var/sim.sock")


class MetricsConfig(_Section):
    # "host:port" to serve Prometheus metrics at http://host:port/metrics; unset: off.
    listen: str | None = None
    # Packs in stock that expire within this many days count as near expiry.
    near_expiry_days: int = Field(default=30, ge=0, le=3650)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError('must be "host:port", e.g. "127.0.0.1:9468"')
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, brackets of an IPv6 host removed; None when off."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class InstitutionConfig(_Section):
    # A hospital or diagnosis centre of the programme, designated to issue its
    # prescriptions: its code as the prescription feed sends it, and its name.
    code: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)


class Config(_Section):
    journal: JournalConfig = JournalConfig()
    api: ApiConfig = ApiConfig()
    robot: RobotConfig = RobotConfig()
    printer: PrinterConfig = PrinterConfig()
    formulary: FormularyConfig = FormularyConfig()
    stock: StockConfig = StockConfig()
    policy: Policy = Policy()
    log: LogConfig = LogConfig()
    simulate: SimulateConfig = SimulateConfig()
    metrics: MetricsConfig = MetricsConfig()
    wwks2: Wwks2Config = Wwks2Config()
    institutions: tuple[InstitutionConfig, ...] = ()

    @field_validator("institutions")
    @classmethod
    def _distinct_codes(cls, value: tuple[InstitutionConfig, ...]
                        ) -> tuple[InstitutionConfig, ...]:
        codes = [i.code for i in value]
        twice = sorted({c for c in codes if codes.count(c) > 1})
        if twice:
            raise ValueError(f"institution code(s) given more than once: {', '.join(twice)}")
        return value


def _key_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad dict key, e.g. a non-numeric uid
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + part
    return path or "(top level)"


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see config/dispenser.toml)"
    message = str(error["msg"]).removeprefix("Value error, ")
    if "[key]" in error["loc"]:
        return f"this key is invalid: {message}"
    return message


def parse_config(data: Mapping[str, Any], source: str | None = None) -> Config:
    """Validate already-parsed TOML data; raises :class:`ConfigError` listing every problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = []
        for error in exc.errors():
            loc = [p for p in error["loc"] if isinstance(p, int | str)]
            errors.append((_key_path(loc), _message(error)))
        raise ConfigError(errors, source) from None


def _relative_to(model: BaseModel, base: Path) -> BaseModel:
    """The model with each relative path the file set (not the defaults) joined to
    ``base``, in nested tables too."""
    update: dict[str, Any] = {}
    for name in model.model_fields_set:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            update[name] = base / value
        elif isinstance(value, BaseModel):
            update[name] = _relative_to(value, base)
        elif isinstance(value, tuple) and any(isinstance(v, BaseModel) for v in value):
            update[name] = tuple(_relative_to(v, base) if isinstance(v, BaseModel) else v
                                 for v in value)
    if not update:
        return model
    # model_copy keeps the fields set, so what the file set stays known as such.
    return model.model_copy(update=update)


def missing_file(key: str, path: Path) -> str:
    """The message for a file a key names that is not there: the key, the file's name and
    the folder it was looked up in (a relative path from a configuration file has been
    joined to that file's folder already)."""
    folder = Path(os.path.abspath(path)).parent
    return f"{key}: no file {path.name!r} in {folder}"


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a TOML file; ``None`` gives the demo defaults. Relative paths in
    the file are made relative to the file's folder."""
    if path is None:
        return Config()
    source = str(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError([("(file)", "no such file")], source) from None
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot be read: {exc.strerror}")], source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("(syntax)", f"not valid TOML: {exc}")], source) from None
    config = parse_config(data, source)
    base = Path(os.path.abspath(path)).parent
    resolved = _relative_to(config, base)
    assert isinstance(resolved, Config)
    return resolved
