"""``dispenserd``: the dispensing machine's controller daemon.

::

    dispenserd [--config FILE] [--simulate] [--demo-orders N] [--speed N | --instant]
               [--new-audit-key]

Without ``--config`` the demo defaults apply (``dispenser.config``). ``--simulate`` runs the
robot and printer simulator inside the daemon (an ephemeral TCP port and a pty printer)
with demo stock; without ``--config`` its journal is a fresh temporary one and merge windows
are short, so a demo starts clean and shows shipments within seconds. ``--demo-orders N``
submits N generated orders once the stock is loaded.

``DISPENSERD_CLOCK_OFFSET_DAYS`` (tests and demos only) shifts the daemon's clock by that many
days, e.g. to load a batch that has expired by the time the daemon runs again without it.
``DISPENSERD_JOURNAL_MAX_PAGES`` (tests only) caps the journal's size in pages.

Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 when a working loop failed, 2 for a
configuration or start-up problem (one line naming the key or file and the cause: a
journal that cannot be opened, is in use by another dispenserd, or whose audit key does not
match; systemd does not restart it, see RestartPreventExitStatus in dispenserd.service).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dispenser.api.server import ApiStartError
from dispenser.config import Config, ConfigError, load_config
from dispenser.formulary import FormularyError
from dispenser.journal import JournalError
from dispenser.journal.health import open_problem
from dispenser.logs import configure_logging, get_logger

log = get_logger(__name__)

# The simulated machine (docs/robot-protocol.md §2.1): 2 x 25 x 200 slots of 10 packs.
SIM_GEOMETRY = {"sides": 2, "levels": 25, "columns": 200, "slot_capacity": 10}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dispenserd", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--simulate", action="store_true",
                   help="run the robot and printer simulator in-process, with demo stock")
    p.add_argument("--demo-orders", type=int, default=0, metavar="N",
                   help="with --simulate: submit N generated demo orders")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, metavar="N",
                       help="with --simulate: motions run N times faster than the real robot")
    speed.add_argument("--instant", action="store_true",
                       help="with --simulate: every motion completes at once")
    p.add_argument("--new-audit-key", action="store_true",
                   help="the journal's audit key is lost for good: key the audit trail with "
                   "the configured key from now on (recorded in the trail; rows of the old "
                   "key can no longer be authenticated)")
    args = p.parse_args(argv)
    if args.demo_orders < 0:
        p.error("--demo-orders must be 0 or more")
    if args.speed is not None and not 0 < args.speed <= 1000:
        p.error("--speed must be in (0, 1000]")
    return args


def _with(model: Any, **update: Any) -> Any:
    return model.model_copy(update=update)


async def run(config: Config, args: argparse.Namespace, simulate: bool) -> int:
    from dispenser.daemon.app import Daemon

    sim = None
    workdir: str | None = None
    extra = []
    if simulate:
        import tempfile

        from dispenser.daemon.demo import demo_task
        from firmware_sim import Simulator, SimulatorOptions

        workdir = tempfile.mkdtemp(prefix="dispenserd-sim-")
        state_file = None
        if args.config is None:
            # A demo without a configuration: the account that started it may use
            # dispenserctl on the demo socket as a technician (SO_PEERCRED), no token needed.
            peer_uids = {**config.api.peer_uids, os.getuid(): "technician"}
            config = _with(config, journal=_with(config.journal,
                                                 path=Path(workdir) / "journal.sqlite"),
                           policy=_with(config.policy, merge_window_s=2.0),
                           api=_with(config.api, peer_uids=peer_uids))
        else:
            state_file = str(Path(config.journal.path).with_suffix(".sim-state.json"))
        opts = SimulatorOptions(
            tcp_port=0, printer_link=str(Path(workdir) / "printer"),
            speed=args.speed or config.simulate.speed,
            instant=args.instant or config.simulate.instant, state_file=state_file,
            outputs=config.robot.outputs)
        sim = Simulator(opts)
        await sim.start()
        config = _with(
            config,
            robot=_with(config.robot, transport="tcp", host="127.0.0.1", port=sim.tcp_port),
            printer=_with(config.printer, url=sim.printer_device, timeout_s=1.0),
            stock=_with(config.stock, **SIM_GEOMETRY))
        log.info("simulator running", listeners=sim.listeners(), speed=opts.speed,
                 instant=opts.instant)
        extra.append(demo_task(args.demo_orders))
    try:
        try:
            daemon = Daemon(config, simulator=sim, extra_tasks=extra, clock=clock_from_env(),
                            new_audit_key=args.new_audit_key)
        except (OSError, FormularyError, JournalError, sqlite3.Error) as exc:
            problem = (open_problem(str(config.journal.path), exc)
                       if isinstance(exc, sqlite3.Error) else str(exc))
            log.error("cannot start", error=problem)
            if sim is not None:
                await sim.stop()
            return 2
        try:
            return await daemon.run()
        except ApiStartError as exc:
            log.error("cannot serve the API", error=str(exc))
            daemon.journal.close()
            if sim is not None:
                await sim.stop()
            return 2
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def clock_from_env() -> Callable[[], datetime]:
    from dispenser.daemon.app import utc_now

    raw = os.environ.get("DISPENSERD_CLOCK_OFFSET_DAYS")
    if not raw:
        return utc_now
    offset = timedelta(days=float(raw))
    log.warning("clock shifted for a test", offset_days=float(raw))
    return lambda: utc_now() + offset


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    simulate = args.simulate or config.simulate.enabled
    configure_logging(config.log.level, config.log.format)
    try:
        return asyncio.run(run(config, args, simulate))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
