"""``dispenser-sim``: the robot and label printer simulator as a process."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from firmware_sim.errors import SimulatorError
from firmware_sim.simulator import Simulator, SimulatorOptions


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: list[str] | None = None) -> SimulatorOptions:
    parser = argparse.ArgumentParser(
        prog="dispenser-sim",
        description="Simulated picking robot (Modbus TCP/RTU) and label printer (ZPL on a pty).",
        epilog="At a running simulator's input point: `dispenser-sim put SCAN...` puts "
        "scanned packs there, `dispenser-sim take [--all]` takes one off again (see "
        "`dispenser-sim put --help`).",
    )
    parser.add_argument(
        "--tcp",
        type=_host_port,
        default=("127.0.0.1", 1502),
        metavar="HOST:PORT",
        help="Modbus TCP listener (port 0 = any free port)",
    )
    parser.add_argument("--no-tcp", action="store_true", help="serve no Modbus TCP")
    parser.add_argument(
        "--rtu-link", metavar="PATH", help="serve Modbus RTU on a pty; PATH becomes a symlink to it"
    )
    parser.add_argument(
        "--printer-link",
        metavar="PATH",
        help="label printer on a pty; PATH becomes a symlink to it",
    )
    parser.add_argument("--control", metavar="PATH", help="JSON-RPC control socket (Unix)")
    timing = parser.add_mutually_exclusive_group()
    timing.add_argument(
        "--speed",
        type=_positive,
        default=1.0,
        metavar="N",
        help="run motions N times faster than the standard machine",
    )
    timing.add_argument("--instant", action="store_true", help="motions take no time")
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="load at start if present; save on exit and after command batches",
    )
    parser.add_argument(
        "--outputs",
        type=int,
        default=4,
        choices=range(1, 17),
        metavar="N",
        help="number of output points (1..16, default 4)",
    )
    parser.add_argument(
        "--device-id",
        type=int,
        default=1,
        choices=range(1, 248),
        metavar="ID",
        help="Modbus device id (default 1)",
    )
    args = parser.parse_args(argv)
    host, port = args.tcp
    return SimulatorOptions(
        tcp_host=host,
        tcp_port=None if args.no_tcp else port,
        rtu_link=args.rtu_link,
        printer_link=args.printer_link,
        control_path=args.control,
        speed=args.speed,
        instant=args.instant,
        state_file=args.state,
        outputs=args.outputs,
        device_id=args.device_id,
    )


async def run(options: SimulatorOptions) -> None:
    sim = Simulator(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await sim.start()
    try:
        for line in sim.listeners():
            print(f"dispenser-sim: {line}", flush=True)
        print("dispenser-sim: ready", flush=True)
        await stop.wait()
    finally:
        await sim.stop()
    print("dispenser-sim: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["put"], ["take"]):
        from firmware_sim import staff

        return staff.main(args)
    options = parse_args(argv)
    try:
        asyncio.run(run(options))
    except (SimulatorError, OSError) as exc:
        print(f"dispenser-sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
