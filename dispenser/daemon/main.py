"""``dispenserd``: the dispensing machine's controller daemon.

::

    dispenserd [--config FILE] [--simulate [--fresh]] [--demo-orders N]
               [--speed N | --instant] [--wwks2] [--new-audit-key]

Without ``--config`` the demo defaults apply (``dispenser.config``). ``--simulate`` runs the
robot and printer simulator inside the daemon (an ephemeral TCP port, a pty printer, the
control socket ``var/sim.sock``) with demo stock; without ``--config`` its journal, audit
key and simulator state are kept in ``var/demo/`` (a restart continues where it stopped;
``--fresh`` removes them first) and merge windows are short, so shipments show within
seconds. ``--demo-orders N`` submits N generated orders, and one that waits for a pack
loaded by hand (``dispenser.daemon.demo``). ``--wwks2`` serves WWKS2 for pharmacy software
as ``[wwks2] enabled = true`` would (on its host and port, 127.0.0.1:6050 by default;
docs/wwks2.md).

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
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from dispenser.api.server import ApiStartError
from dispenser.config import Config, ConfigError, load_config
from dispenser.core.formulary import FormularyError
from dispenser.journal import JournalError
from dispenser.journal.health import open_problem
from dispenser.logs import configure_logging, get_logger

log = get_logger(__name__)

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dispenserd", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--simulate", action="store_true",
                   help="run the robot and printer simulator in-process, with demo stock")
    p.add_argument("--fresh", action="store_true",
                   help="with --simulate and without --config: start the demo over (its "
                   "journal, audit key and simulator state in var/demo/ are removed)")
    p.add_argument("--demo-orders", type=int, default=0, metavar="N",
                   help="with --simulate: submit N generated demo orders (and one that "
                   "waits for a pack loaded by hand)")
    speed = p.add_mutually_exclusive_group()
    speed.add_argument("--speed", type=float, metavar="N",
                       help="with --simulate: motions run N times faster than the real robot")
    speed.add_argument("--instant", action="store_true",
                       help="with --simulate: every motion completes at once")
    p.add_argument("--wwks2", action="store_true",
                   help="serve WWKS2 for pharmacy software (as [wwks2] enabled = true; "
                   "127.0.0.1:6050 unless the configuration says otherwise)")
    p.add_argument("--new-audit-key", action="store_true",
                   help="the journal's audit key is lost for good: key the audit trail with "
                   "the configured key from now on (recorded in the trail; rows of the old "
                   "key can no longer be authenticated)")
    args = p.parse_args(argv)
    if args.demo_orders < 0:
        p.error("--demo-orders must be 0 or more")
    if args.speed is not None and not 0 < args.speed <= 1000:
        p.error("--speed must be in (0, 1000]")
    if args.fresh and args.config is not None:
        p.error("--fresh starts the demo (without --config) over; it never removes a "
                "configured journal")
    return args


async def run(config: Config, args: argparse.Namespace, simulate: bool) -> int:
    from dispenser.daemon.app import Daemon
    from dispenser.daemon.metrics import MetricsStartError

    demo = None
    if simulate:
        from dispenser.daemon.demo import DemoError, SimulatedMachine

        demo = SimulatedMachine(config, configured=args.config is not None,
                                speed=args.speed, instant=args.instant,
                                orders=args.demo_orders, fresh=args.fresh)
        try:
            config = await demo.start()
        except DemoError as exc:
            log.error("cannot start the demo", error=str(exc))
            demo.cleanup()
            return 2
    try:
        try:
            daemon = Daemon(config, simulator=demo.simulator if demo else None,
                            extra_tasks=demo.tasks if demo else [], clock=clock_from_env(),
                            new_audit_key=args.new_audit_key)
        except (OSError, FormularyError, JournalError, sqlite3.Error) as exc:
            problem = (open_problem(str(config.journal.path), exc)
                       if isinstance(exc, sqlite3.Error) else str(exc))
            log.error("cannot start", error=problem)
            if demo is not None:
                await demo.stop()
            return 2
        try:
            return await daemon.run()
        except MetricsStartError as exc:
            log.error("cannot serve the metrics", error=str(exc))
            daemon.journal.close()
            if demo is not None:
                await demo.stop()
            return 2
        except ApiStartError as exc:
            log.error("cannot serve the API", error=str(exc))
            daemon.journal.close()
            if demo is not None:
                await demo.stop()
            return 2
    finally:
        if demo is not None:
            demo.cleanup()


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
    if args.wwks2:
        config = config.model_copy(update={
            "wwks2": config.wwks2.model_copy(update={"enabled": True})})
    simulate = args.simulate or config.simulate.enabled
    if args.fresh and not simulate:
        print("dispenserd: --fresh goes with --simulate", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    try:
        return asyncio.run(run(config, args, simulate))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
