"""``dispenser-sim put`` and ``dispenser-sim take``: a person at the input point.

Staff put a scanned pack at the robot's input point before loading it
(``dispenserctl load`` with the same scan), and take a refused pack off it again. Both talk
to a running simulator's control socket (``--control``; the demo's is ``var/sim.sock``)::

    dispenser-sim put SCAN [SCAN ...]     # one GS1 element string per pack ("-": stdin)
    dispenser-sim take [--all]            # the pack the input scanner reads (or all)

A scan is a GS1 element string as a barcode scanner types it: (01) GTIN, (17) expiry
YYMMDD, (10) batch, (21) serial; the group separator after a batch may be typed ``<GS>``.

Exit status: 0 done, 1 the simulator could not be reached or refused, 2 a bad scan or
usage.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from typing import Any

from firmware_sim.packs import Pack, PackError

__all__ = ["DEFAULT_CONTROL", "main"]

DEFAULT_CONTROL = "var/sim.sock"


class Unreachable(Exception):
    pass


def _call(path: str, method: str, params: dict[str, Any]) -> Any:
    request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise Unreachable(
            f"no simulator listens on {path}: is the demo (dispenserd --simulate) or "
            "dispenser-sim --control running? (choose another socket with --control or "
            "$DISPENSER_SIM_CONTROL)") from None
    except OSError as exc:
        raise Unreachable(f"cannot talk to the simulator at {path}: {exc}") from None
    try:
        reply = json.loads(data)
    except json.JSONDecodeError:
        raise Unreachable(f"the simulator at {path} gave no answer") from None
    if "error" in reply:
        raise Unreachable(f"the simulator refused: {reply['error'].get('message')}")
    return reply["result"]


def _describe(pack: Pack) -> str:
    parts = [pack.gtin]
    if pack.batch:
        parts.append(f"batch {pack.batch}")
    if pack.expiry:
        parts.append(f"expiry {pack.expiry}")
    if pack.serial:
        parts.append(f"serial {pack.serial}")
    return " ".join(parts)


def _there(count: int) -> str:
    return f"{count} pack{'' if count == 1 else 's'} there"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dispenser-sim", description="A person at the simulated robot's input point.")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control", metavar="PATH",
        default=os.environ.get("DISPENSER_SIM_CONTROL") or DEFAULT_CONTROL,
        help=f"the simulator's control socket (default $DISPENSER_SIM_CONTROL or "
        f"{DEFAULT_CONTROL}, the demo's)")
    put = sub.add_parser("put", parents=[common],
                         help="put scanned packs at the input point, in this order")
    put.add_argument("scans", nargs="+", metavar="SCAN",
                     help="a GS1 element string, e.g. '0104150123456782172705311" +
                     "0B1<GS>21S1'; - reads one per line from stdin")
    take = sub.add_parser("take", parents=[common],
                          help="take the pack the input scanner reads off the input point")
    take.add_argument("--all", action="store_true", help="take every pack lying there")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        if args.command == "put":
            return _put(args)
        return _take(args)
    except Unreachable as exc:
        print(f"dispenser-sim: {exc}", file=sys.stderr)
        return 1


def _put(args: argparse.Namespace) -> int:
    texts: list[str] = []
    for scan in args.scans:
        if scan == "-":
            texts += [line for line in sys.stdin.read().splitlines() if line.strip()]
        else:
            texts.append(scan)
    packs = []
    for text in texts:
        try:
            packs.append(Pack.from_scan(text))
        except PackError as exc:
            print(f"dispenser-sim: not a pack's scan: {text!r}: {exc}", file=sys.stderr)
            return 2
    result = _call(args.control, "sim.put_input", {"packs": [p.to_dict() for p in packs]})
    for pack in packs:
        print(f"put {_describe(pack)} at the input point")
    print(f"input point: {_there(int(result['input_count']))}")
    return 0


def _take(args: argparse.Namespace) -> int:
    result = _call(args.control, "sim.take_input", {"count": None if args.all else 1})
    taken = [Pack.from_dict(p) for p in result["packs"]]
    if not taken:
        print("dispenser-sim: no pack lies at the input point", file=sys.stderr)
        return 1
    for pack in taken:
        print(f"took {_describe(pack)} off the input point  (scan {pack.scan_text()})")
    print(f"input point: {_there(int(result['input_count']))}")
    return 0
