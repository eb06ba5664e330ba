"""Start-up of many remote agents: one ``serve``, N hosts, each running its shard.

Issue 16's remote target: 1,024 agents (256 producers, 768 consumers) attached
from four hosts to one ``mpmarket serve``. The hosts are network namespaces,
each joined to the server's namespace by a veth pair of its own, with a /30 of
10.231.48.0/24: private addresses that exist only inside the namespaces this
script creates (and always deletes, Ctrl-C or SIGTERM included; the root
namespace is never touched). Host K runs two commands at once::

    mpmarket run WORKLOAD --connect SERVER --only producers --shard K/N
    mpmarket run WORKLOAD --connect SERVER --only consumers --shard K/N --json OUT

When every consumer run is done, serve is stopped with SIGINT: it closes the
market, which ends the producer runs (exit 0). Reported: each run's
``timings.startup_s`` (from its start until all its agents were attached and
ready), market and wall times; the books are exact when the union of the
consumer runs' orders is the workload's expected purchases and serve's summary
agrees.

Run (root, iproute2): ``python docs/remote_bench.py [--agents-per-process 8]``.
Exit 0 when every run exited 0, was ready and the books are exact; else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from mpmarket.core.load import load_workload
from mpmarket.core.workload import expected_purchases

NET = "10.231.48"  # a /24 cut in /30s, host K's pair: .4K-3 (server end), .4K-2 (host end)
PORT = 7151  # a fresh namespace: nothing else listens there
SERVE_START_TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 300  # hosts start at once: generous, the server may be busy
RUN_TIMEOUT_S = 1200  # a whole consumer run, start-up included, on a loaded machine
STOP_TIMEOUT_S = 120  # serve's summary and the producer runs' ends after SIGINT
MAKE_TIME_S, WAIT_TIME_S = 0.004, 0.01  # gen's own defaults: a short market phase
CPU_SAMPLE_S = 0.1  # how often serve's CPU time is read while the runs go


@dataclass
class Command:
    """One command in a namespace, in a session of its own; output in files."""

    label: str
    process: subprocess.Popen[bytes]
    folder: Path
    report: Path | None = None
    exit_code: int | None = None
    ended: float = 0.0  # seconds from the launch of the runs to its exit (seen)

    def err(self) -> str:
        return (self.folder / f"{self.label}.err").read_text(errors="replace")

    def figures(self) -> dict[str, Any]:
        if self.report is None or not self.report.exists():
            return {}
        data: dict[str, Any] = json.loads(self.report.read_text())
        return data


@dataclass
class Lab:
    """The namespaces and processes of one measurement; ``close`` removes all."""

    tag: str
    folder: Path
    namespaces: list[str] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def build(self, hosts: int) -> tuple[str, list[str]]:
        """A server namespace and ``hosts`` host namespaces, each on its own veth pair.

        Host K reaches the server's address (pair 1's server end) through its
        own pair: its default route is its pair's server end.
        """
        server = self.add_namespace(f"{self.tag}s")
        names = []
        for k in range(1, hosts + 1):
            host = self.add_namespace(f"{self.tag}h{k}")
            server_end, host_end = f"{NET}.{4 * k - 3}", f"{NET}.{4 * k - 2}"
            # Both ends are made inside their namespaces: no device in the root one.
            self.ip(
                *("link", "add", f"v{k}", "netns", server, "type", "veth"),
                *("peer", "name", "eth0", "netns", host),
            )
            for name, device, address in ((server, f"v{k}", server_end), (host, "eth0", host_end)):
                self.ip("-n", name, "addr", "add", f"{address}/30", "dev", device)
                self.ip("-n", name, "link", "set", device, "up")
            self.ip("-n", host, "route", "add", "default", "via", server_end)
            names.append(host)
        return server, names

    def add_namespace(self, name: str) -> str:
        self.ip("netns", "add", name)
        self.namespaces.append(name)
        self.ip("-n", name, "link", "set", "lo", "up")
        return name

    def start(self, namespace: str, label: str, *args: str, report: Path | None = None) -> Command:
        err = self.folder / f"{label}.err"
        with (self.folder / f"{label}.out").open("wb") as out, err.open("wb") as errors:
            process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, sys.executable, "-m", "mpmarket", *args],
                stdout=out,
                stderr=errors,
                env=self.env(),
                start_new_session=True,
            )
        command = Command(label, process, self.folder, report)
        self.commands.append(command)
        return command

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MPMARKET_AUTHKEY"}
        env["XDG_RUNTIME_DIR"] = str(self.folder / "runtime")
        return env

    def close(self) -> None:
        """Kill every command's tree, then delete every namespace made."""
        for command in self.commands:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(command.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                command.process.wait(timeout=10)
        for name in self.namespaces:  # anything left inside (a child of another session)
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def wait_for_start_line(serve: Command) -> None:
    """serve's first line says it listens; fail if it exits or stays silent."""
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while "\n" not in serve.err():
        if serve.process.poll() is not None:
            raise RuntimeError(f"serve exited {serve.process.returncode}: {serve.err()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"serve printed nothing within {SERVE_START_TIMEOUT_S} s")
        time.sleep(0.05)


def make_workload(folder: Path, options: argparse.Namespace) -> tuple[Path, Path]:
    """The generated workload (course JSON) and a fresh random key file (0600)."""
    workload = folder / "workload.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "mpmarket", "gen", str(workload), "--format", "course"),
            *("--producers", str(options.producers), "--consumers", str(options.consumers)),
            *("--sessions", str(options.sessions), "--seed", str(options.seed)),
            *("--make-time", str(MAKE_TIME_S), "--wait-time", str(WAIT_TIME_S)),
        ],
        capture_output=True,  # its line ("wrote ...") is not the bench's
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mpmarket gen exited {done.returncode}: {done.stderr.strip()}")
    key = folder / "authkey"
    descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
    return workload, key


def serve_summary(text: str) -> dict[str, Any]:
    """products bought, orders and the books' state from serve's summary table."""
    figures: dict[str, Any] = {}
    for name in ("products bought", "orders"):
        found = re.search(rf"^\W*{name}\W+(\d+)", text, re.MULTILINE)
        figures[name.replace(" ", "_")] = int(found.group(1)) if found else None
    figures["balanced"] = bool(re.search(r"^\W*books\W+balanced", text, re.MULTILINE))
    return figures


def measure(options: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Build the hosts, run the workload from all of them at once, gather the figures."""
    workload, key = make_workload(folder, options)
    lab = Lab(f"mrb{os.getpid()}", folder)
    try:
        server_ns, hosts = lab.build(options.hosts)
        address = f"{NET}.1:{PORT}"
        # Not --quiet: its summary (one plain line every 10 s before it) has the books.
        serve = lab.start(
            server_ns, "serve", "serve", "--listen", address, "--authkey-file", str(key)
        )
        wait_for_start_line(serve)
        common = [
            *("--connect", address, "--authkey-file", str(key), "--quiet"),
            *("--connect-timeout", str(CONNECT_TIMEOUT_S)),
            *("--agents-per-process", str(options.agents_per_process)),
        ]
        n = options.hosts
        started = time.monotonic()
        producers: list[Command] = []
        consumers: list[Command] = []
        for k, host in enumerate(hosts, 1):
            for role, runs in (("producers", producers), ("consumers", consumers)):
                report = folder / f"{role}{k}.json"
                runs.append(
                    lab.start(
                        *(host, f"{role}{k}", "run", str(workload), *common),
                        *("--only", role, "--shard", f"{k}/{n}", "--json", str(report)),
                        report=report,
                    )
                )
        samples = follow(serve, consumers, started)
        serve.process.send_signal(signal.SIGINT)  # closes the market: producers end
        for command in [serve, *producers]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                command.exit_code = command.process.wait(timeout=STOP_TIMEOUT_S)
        return figures(options, workload, serve, producers, consumers, samples)
    finally:
        lab.close()


def follow(
    serve: Command, consumers: list[Command], started: float
) -> list[tuple[float, float, float]]:
    """Wait for the consumer runs; sample (time, serve's CPU s, machine's busy CPU s)."""
    server = psutil.Process(serve.process.pid)
    samples = []
    deadline = started + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        cpu, machine = server.cpu_times(), psutil.cpu_times()
        busy = sum(machine) - machine.idle - machine.iowait
        now = time.monotonic() - started
        samples.append((now, cpu.user + cpu.system, busy))
        for command in consumers:
            if command.exit_code is None and command.process.poll() is not None:
                command.exit_code = command.process.returncode
                command.ended = now
        if all(command.exit_code is not None for command in consumers):
            break
        time.sleep(CPU_SAMPLE_S)
    return samples


def run_figures(host: int, command: Command) -> dict[str, Any]:
    """One run's exit code, agents and timings; ``before_s``: launch to its clock's start."""
    report = command.figures()
    timings = report.get("timings", {})
    agents = sum(1 for _ in report.get("agents", []))
    figures = {"host": host, "exit_code": command.exit_code, "agents": agents}
    for name in ("startup_s", "market_s", "wall_s"):
        figures[name] = timings.get(name)
    if command.ended and timings.get("wall_s") is not None:
        figures["before_s"] = command.ended - timings["wall_s"]  # ip netns exec, imports
    figures["ready"] = command.exit_code == 0 and bool(timings.get("startup_s"))
    return figures


def spread(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    values = [run["startup_s"] for run in runs if run["startup_s"] is not None]
    if not values:
        return {"median": None, "max": None}
    return {"median": statistics.median(values), "max": max(values)}


def figures(
    options: argparse.Namespace,
    workload: Path,
    serve: Command,
    producers: list[Command],
    consumers: list[Command],
    samples: list[tuple[float, float, float]],
) -> dict[str, Any]:
    """Everything measured, as plain data (the --json file)."""
    bought: Counter[str] = Counter()
    orders = 0
    for command in consumers:
        for order in command.figures().get("orders", []):
            bought.update(f"{order['consumer']} bought {p}" for p in order["products"])
            orders += 1
    expected = expected_purchases(load_workload(workload))
    summary = serve_summary(serve.err())
    consumer_runs = [run_figures(k, c) for k, c in enumerate(consumers, 1)]
    producer_runs = [run_figures(k, c) for k, c in enumerate(producers, 1)]
    # Where the time goes: serve's CPU and the machine's until the last consumer run was ready.
    window = max(
        (run.get("before_s", 0.0) + (run["startup_s"] or 0.0) for run in consumer_runs),
        default=0.0,
    )
    at_window = [sample for sample in samples if sample[0] <= window] or samples[:1]
    busy = at_window[-1][2] - samples[0][2]
    serve_figures = {
        "exit_code": serve.exit_code,
        **summary,
        "cpu_s": samples[-1][1] if samples else None,
        "cpu_s_startup": at_window[-1][1] - samples[0][1] if samples else None,
    }
    return {
        "hosts": options.hosts,
        "producers": options.producers,
        "consumers": options.consumers,
        "sessions": options.sessions,
        "seed": options.seed,
        "agents_per_process": options.agents_per_process,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_before": options.load_before,
        "consumer_runs": consumer_runs,
        "producer_runs": producer_runs,
        "consumer_startup_s": spread(consumer_runs),
        "producer_startup_s": spread(producer_runs),
        "wall_s": max((c.ended for c in consumers), default=None),
        "startup_window_s": window,
        "machine_busy_startup": busy / (window * (os.cpu_count() or 1)) if window else None,
        "serve": serve_figures,
        "products_bought": sum(bought.values()),
        "orders": orders,
        "books_exact": bought == expected
        and summary["products_bought"] == sum(expected.values())
        and summary["orders"] == orders
        and summary["balanced"],
        "all_ready": all(run["ready"] for run in consumer_runs + producer_runs),
        "all_exit_0": all(c.exit_code == 0 for c in [serve, *producers, *consumers]),
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{result['hosts']} hosts, {result['producers']} producers x {result['consumers']}"
        f" consumers, {result['sessions']} session(s), agents per process"
        f" {result['agents_per_process']}; python {result['python']}, {result['cpus']} CPUs,"
        f" load before {result['load_before'][0]:.2f}"
    )
    print("| host | run | exit | agents | start-up s | market s | wall s | before its clock s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for role in ("consumer", "producer"):
        for run in result[f"{role}_runs"]:
            cells = [run[name] for name in ("startup_s", "market_s", "wall_s")]
            cells.append(run.get("before_s"))
            print(
                f"| {run['host']} | {role}s | {run['exit_code']} | {run['agents']} | "
                + " | ".join(map(_seconds, cells))
                + " |"
            )
    for role in ("consumer", "producer"):
        spread = result[f"{role}_startup_s"]
        print(
            f"{role} runs ready: median {_seconds(spread['median'])} s,"
            f" max {_seconds(spread['max'])} s"
        )
    serve = result["serve"]
    print(
        f"books exact: {'yes' if result['books_exact'] else 'NO'} ({result['products_bought']}"
        f" products in {result['orders']} orders; serve: {serve['products_bought']} bought,"
        f" {serve['orders']} orders, {'balanced' if serve['balanced'] else 'NOT balanced'})"
    )
    busy = result["machine_busy_startup"]
    print(
        f"until the last consumer run was ready ({_seconds(result['startup_window_s'])} s after"
        f" the launch): serve used {_seconds(serve['cpu_s_startup'])} s of CPU, the machine"
        f" {'-' if busy is None else f'{busy:.0%}'} of its CPUs"
    )
    print(f"wall, launch to the last consumer run's end: {_seconds(result['wall_s'])} s")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--hosts", type=int, default=4, help="host namespaces (default 4)")
    parser.add_argument("--producers", type=int, default=256, help="producers (default 256)")
    parser.add_argument("--consumers", type=int, default=768, help="consumers (default 768)")
    parser.add_argument(
        "--agents-per-process", type=int, default=1, help="agents per process (default 1)"
    )
    parser.add_argument("--sessions", type=int, default=1, help="sessions a consumer (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="the workload's seed (default 0)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here")
    options = parser.parse_args(argv)
    if not 1 <= options.hosts <= 63:  # 64 /30s in the /24
        parser.error("--hosts must be 1 to 63")
    return options


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("remote_bench: needs root and the ip command (iproute2)", file=sys.stderr)
        return 2
    # Ctrl-C and SIGTERM clean up; and the children get SIGINT's default even
    # where this script was started with it ignored (a shell's background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    options.load_before = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="mpmarket-remote-bench-"))
    try:
        result = measure(options, folder)
    except KeyboardInterrupt:
        print("remote_bench: interrupted; namespaces and processes removed", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(result)
    if options.json is not None:
        options.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["books_exact"] and result["all_ready"] and result["all_exit_0"] else 1


if __name__ == "__main__":
    sys.exit(main())
