"""The JSON-RPC control socket, and the state that survives a power cycle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from dispenser.testing.modbus_client import TcpClient, command, pack
from dispenser.testing.simulator import homed, options
from firmware_sim import Simulator


class Rpc:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.id = reader, writer, 0

    @classmethod
    async def open(cls, path: str) -> Rpc:
        return cls(*await asyncio.open_unix_connection(path))

    async def line(self, raw: bytes) -> dict[str, Any]:
        self.writer.write(raw + b"\n")
        return json.loads(await asyncio.wait_for(self.reader.readline(), 2))

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        self.id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": self.id, "method": method}
        if params is not None:
            request["params"] = params
        reply = await self.line(json.dumps(request).encode())
        assert reply["id"] == self.id and reply["jsonrpc"] == "2.0"
        return reply

    async def close(self) -> None:
        self.writer.close()


async def test_methods_and_errors(sim: Simulator) -> None:
    assert sim.control_path is not None
    rpc = await Rpc.open(sim.control_path)
    try:
        reply = await rpc.call("sim.put_input", {"packs": [pack(1), pack(2)]})
        assert reply["result"] == {"input_count": 2}
        reply = await rpc.call("sim.put_slot", {"slot": 3, "packs": [pack(3)]})
        assert reply["result"] == {"slot_count": 1}
        ledger = (await rpc.call("sim.ledger"))["result"]
        assert [p["serial"] for p in ledger["input"]] == ["S1", "S2"]
        assert set(ledger) >= {"slots", "input", "outputs", "totes", "dropped", "removed",
                               "labels", "robot", "printer"}  # fmt: skip
        assert ledger["robot"]["state"] == "NOT_HOMED"
        status = (await rpc.call("sim.status"))["result"]
        assert status["robot"]["input_count"] == 2
        assert any(line.startswith("modbus-tcp") for line in status["listeners"])
        assert (await rpc.call("sim.inject", {"fault": "door_open"}))["result"]
        assert sim.robot.door_open
        assert (await rpc.call("sim.clear", {"fault": "door_open"}))["result"]
        assert not sim.robot.door_open
        await rpc.call("sim.inject", {"fault": "paper_out"})
        await rpc.call("sim.inject", {"fault": "estop"})
        await rpc.call("sim.clear")
        assert not sim.robot.estop_pressed and sim.printer.ready
        assert sim.robot.fault != 0  # a RESET from the controller is still needed

        assert (await rpc.line(b"{nope"))["error"]["code"] == -32700
        assert (await rpc.line(b"[1]"))["error"]["code"] == -32600
        assert (await rpc.line(b'{"id": 5, "method": "sim.status"}'))["error"]["code"] == -32600
        assert (await rpc.call("sim.nothing"))["error"]["code"] == -32601
        assert (await rpc.call("sim.inject", {"fault": "meteor"}))["error"]["code"] == -32602
        assert (await rpc.call("sim.inject", {"fault": "jam", "after": 1}))["error"]["code"] == (
            -32602
        )
        assert (await rpc.call("sim.put_input", {"packs": [{"gtin": "1"}]}))["error"][
            "code"
        ] == -32602
        assert (await rpc.call("sim.put_input", {}))["error"]["code"] == -32602
        # A notification gets no answer: the next reply is for the next request.
        rpc.writer.write(b'{"jsonrpc": "2.0", "method": "sim.clear"}\n')
        assert "result" in await rpc.call("sim.status")
    finally:
        await rpc.close()


async def test_save_and_load_over_the_socket(sim: Simulator, short_dir: Path) -> None:
    assert sim.control_path is not None and sim.tcp_port is not None
    client = await TcpClient().connect(sim.tcp_port)
    rpc = await Rpc.open(sim.control_path)
    try:
        seq = await homed(client)
        sim.put_slot(40, [pack(1), pack(2)])
        await client.queue(command(seq, 3, 40, 1, 1))
        await client.wait_completed(seq)
        path = str(short_dir / "saved.json")
        assert (await rpc.call("sim.save", {"path": path}))["result"] == {"saved": path}
        before = sim.ledger()
        sim.put_input([pack(9)])
        await client.queue(command(seq + 1, 3, 40, 1, 1))
        await client.wait_completed(seq + 1)
        assert (await rpc.call("sim.load", {"path": path}))["result"] == {"loaded": path}
        after = sim.ledger()
        for key in ("slots", "input", "outputs", "totes"):
            assert after[key] == before[key]
        s = await client.status()
        assert (s["last_accepted_seq"], s["last_completed_seq"]) == (seq, seq)
        assert s["machine_state"] == 6  # a power cycle: HOME again
        assert (await rpc.call("sim.load", {"path": "/nonexistent"}))["error"]["code"] == -32602
        broken = json.loads(Path(path).read_text())
        broken["robot"]["ring"] = [0] * 5
        Path(path).write_text(json.dumps(broken))
        robot = sim.robot
        sim.put_input([pack(7)])
        assert (await rpc.call("sim.load", {"path": path}))["error"]["code"] == -32602
        assert sim.robot is robot and len(sim.ledger()["input"]) == 1  # nothing changed
        assert sim.robot.running
    finally:
        await rpc.close()
        await client.close()


async def test_state_file_survives_restart_and_aborts_what_was_queued(short_dir: Path) -> None:
    state = short_dir / "state.json"
    first = Simulator(options(short_dir, instant=False, speed=10.0, state_file=str(state)))
    await first.start()
    client = await TcpClient().connect(first.tcp_port or 0)
    seq = await homed(client)  # 0.5 s
    assert state.exists()  # saved after the completed batch
    first.put_slot(5, [pack(1)])
    first.printer.feed(b"^XA^FDkept^FS^XZ")
    await client.queue(command(seq, 1), command(seq + 1, 5, 5))  # a HOME still moving at stop
    await client.close()
    await first.stop()

    second = Simulator(options(short_dir, state_file=str(state)))
    await second.start()
    client = await TcpClient().connect(second.tcp_port or 0)
    try:
        s = await client.status()
        assert s["last_accepted_seq"] == seq + 1
        assert s["last_completed_seq"] == seq + 1 and s["completion_count"] == 3
        assert s["machine_state"] == 6 and s["queue_depth"] == 0
        assert [e["result"] for e in await client.completions(2, 3)] == [7, 7]
        ledger = second.ledger()
        assert ledger["slots"]["5"][0]["serial"] == "S1"
        assert ledger["labels"][0]["zpl"] == "^XA^FDkept^FS^XZ"
    finally:
        await client.close()
        await second.stop()
    assert json.loads(state.read_text())["robot"]["completion_count"] == 3
    assert [p.name for p in short_dir.iterdir() if p.name.startswith(".sim-state")] == []


async def test_take_input_as_a_person_would(sim: Simulator) -> None:
    assert sim.control_path is not None
    rpc = await Rpc.open(sim.control_path)
    try:
        sim.put_input([pack(1), pack(2), pack(3)])
        reply = await rpc.call("sim.take_input")
        assert [p["serial"] for p in reply["result"]["packs"]] == ["S1"]
        assert reply["result"]["input_count"] == 2
        reply = await rpc.call("sim.take_input", {"count": 5})
        assert [p["serial"] for p in reply["result"]["packs"]] == ["S2", "S3"]
        ledger = sim.ledger()
        assert ledger["input"] == []
        assert [p["serial"] for p in ledger["taken_off"]] == ["S1", "S2", "S3"]
        assert (await rpc.call("sim.take_input", {"count": 0}))["error"]["code"] == -32602
        assert (await rpc.call("sim.take_input", {"n": 1}))["error"]["code"] == -32602
    finally:
        await rpc.close()


async def test_a_replaced_board_keeps_the_packs_and_forgets_the_sequences(
        sim: Simulator, client: TcpClient) -> None:
    """A new controller board: what lies in the machine stays, the protocol memory is
    empty, and nothing of what was queued completes."""
    assert sim.control_path is not None
    rpc = await Rpc.open(sim.control_path)
    try:
        seq = await homed(client)
        sim.put_slot(40, [pack(1), pack(2)])
        await client.queue(command(seq, 3, 40, 1, 1))
        await client.wait_completed(seq)
        sim.put_input([pack(5)])
        before = sim.ledger()
        assert before["robot"]["completion_count"] > 0
        reply = await rpc.call("sim.replace_board")
        assert reply["result"] == {"last_accepted_seq": 0, "completion_count": 0}
        after = sim.ledger()
        for key in ("slots", "input", "outputs", "totes"):
            assert after[key] == before[key]
        s = await client.status()
        assert (s["last_accepted_seq"], s["last_completed_seq"], s["completion_count"]) == (
            0, 0, 0)
        assert s["machine_state"] == 6  # not homed
        await client.queue(command(1, 1))  # the new board takes seq 1 again
        await client.wait_completed(1)
    finally:
        await rpc.close()
