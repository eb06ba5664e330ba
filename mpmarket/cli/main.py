"""The ``mpmarket`` command: parse, call, print. No logic a test would want.

Each command's help ends with the exit codes of ``mpmarket.cli.exitcodes``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live

from mpmarket import __version__
from mpmarket.cli.bench import bench
from mpmarket.cli.exitcodes import EPILOG, ExitCode
from mpmarket.cli.exitcodes import fail as _fail
from mpmarket.cli.options import (
    ADDRESS,
    DEFAULT_ADDRESS,
    SHARD,
    agents_per_process_option,
    authkey_option,
    connect_timeout_option,
    html_option,
    json_option,
    log_options,
    quiet_option,
    start_method_option,
    workload_options,
)
from mpmarket.core.market import Marketplace
from mpmarket.core.simulate import simulate
from mpmarket.core.workload import (
    DEFAULT_QUEUE_SIZE,
    Workload,
    dump_course_json,
    dump_toml,
    generate,
    load_workload,
)
from mpmarket.errors import AuthkeyError, MarketUnavailableError, MpmarketError, WorkloadError
from mpmarket.net.authkey import ENV_VAR, Authkey, load_authkey
from mpmarket.net.client import connect as attach
from mpmarket.net.oplog import LogSettings
from mpmarket.net.server import CART_LEASE_S, ServedMarket
from mpmarket.net.wire import Address, format_address, is_loopback
from mpmarket.products import Product
from mpmarket.run.local import LocalRun, pick_agents
from mpmarket.run.report import AgentDeath, RunObserver, RunReport
from mpmarket.run.stress import plan_stress, run_stress
from mpmarket.run.timeline import Timeline
from mpmarket.view.html import render_html
from mpmarket.view.live import LiveView
from mpmarket.view.status import (
    format_serve_line,
    format_serve_summary,
    format_serve_view,
    format_status,
    status_to_json,
)
from mpmarket.view.summary import (
    format_agents,
    format_simulation,
    format_summary,
    report_to_json,
    result_lines,
)

__all__ = ["ExitCode", "main"]


# serve's live view samples the market this often on a terminal (one
# books() under the market lock each time: nothing next to the traffic)...
SERVE_VIEW_INTERVAL_S = 0.25
# ...and writes a plain line at most this often when stderr is not one (a
# log file or a CI job), and only when something changed.
SERVE_LOG_INTERVAL_S = 10.0

_WORKER_KEY_HELP = (
    f"File holding the market's authkey (else ${ENV_VAR}, else the default file that serve writes)."
)


def _write_reports(
    document: dict[str, Any], report: RunReport, json_path: Path | None, html_path: Path | None
) -> None:
    """The --json and --html files of a run."""
    if json_path is not None:
        json_path.write_text(json.dumps(document, indent=2) + "\n")
    if html_path is not None and report.timeline is not None:
        html_path.write_text(render_html(document, report.timeline))


def _log_settings(
    log_file: Path | None, log_level: str, log_max_bytes: int, log_backups: int
) -> LogSettings | None:
    if log_file is None:
        return None
    return LogSettings(str(log_file), log_level.upper(), log_max_bytes, log_backups)


class _PrintingObserver(RunObserver):
    """Prints result lines on stdout and the live view on stderr as a run goes."""

    def __init__(
        self,
        console: Console,
        *,
        quiet: bool,
        started_at: float,
        print_orders: bool = True,
        print_deaths: bool = True,
    ) -> None:
        self.console = console
        self.print_orders = print_orders
        self.print_deaths = print_deaths
        self.view = LiveView(console, quiet=quiet)
        self.started_at = started_at

    def on_started(self, producers: int, consumers: int) -> None:
        self.view.start()

    def on_sample(self, timeline: Timeline) -> None:
        self.view.update(timeline, time.perf_counter() - self.started_at)

    def on_order(self, consumer: str, products: list[Product]) -> None:
        if self.print_orders:
            sys.stdout.write(result_lines(consumer, products))
            sys.stdout.flush()

    def on_agent_died(self, death: AgentDeath) -> None:
        if self.print_deaths:
            self.console.print(f"[bold red]mpmarket:[/] {death.describe()}", highlight=False)

    def close(self) -> None:
        self.view.stop()


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM stops a run the way Ctrl-C does: orderly, with a summary."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _load_key(console: Console, key_file: Path | None, *, create: bool = False) -> Authkey:
    try:
        return load_authkey(key_file, create=create)[0]
    except AuthkeyError as error:
        _fail(console, str(error), ExitCode.USAGE)
        raise  # unreachable: _fail exits


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mpmarket")
def cli() -> None:
    """A producer-consumer marketplace of real processes."""


def _workload(
    config: Path | None,
    producers: int | None,
    consumers: int | None,
    sessions: int,
    seed: int,
    queue_size: int | None,
) -> Workload:
    """The workload the options describe; WorkloadError or UsageError if wrong."""
    if config is not None:
        if producers is not None or consumers is not None:
            raise click.UsageError("give either CONFIG or --producers/--consumers, not both")
        workload = load_workload(config)
    else:
        workload = generate(
            producers if producers is not None else 4,
            consumers if consumers is not None else 8,
            sessions=sessions,
            seed=seed,
        )
    if queue_size is not None:
        workload = replace(workload, queue_size_per_producer=queue_size)
    return workload


@cli.command(epilog=EPILOG)
@workload_options
@start_method_option
@agents_per_process_option
@log_options
@json_option
@html_option
@quiet_option
@click.option(
    "--connect",
    type=ADDRESS,
    help="Run the agents against the market served at HOST:PORT (mpmarket serve).",
)
@authkey_option(_WORKER_KEY_HELP)
@connect_timeout_option
@click.option(
    "--only",
    type=click.Choice(["producers", "consumers"]),
    help="With --connect: run only the workload's producers, or only its consumers.",
)
@click.option(
    "--agents",
    "agent_names",
    metavar="NAME,NAME,...",
    help="With --connect: run only the agents of these names.",
)
@click.option(
    "--shard",
    type=SHARD,
    help="With --connect: run the K-th of N equal parts of the (chosen) agents.",
)
@click.option(
    "--close-market",
    is_flag=True,
    help="With --connect: close the market once this run's consumers are done "
    "(ends the producers attached from anywhere).",
)
@click.option(
    "--fail-fast",
    is_flag=True,
    help="Stop the run when an agent dies (by default the others go on; a dead "
    "consumer's cart goes back on sale).",
)
@click.option(
    "--stall-timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop and explain when no consumer made progress for this long "
    "(default: from the workload's times, at least 10 s).",
)
def run(
    config: Path | None,
    producers: int | None,
    consumers: int | None,
    sessions: int,
    seed: int,
    queue_size: int | None,
    start_method: str,
    agents_per_process: int,
    log_file: Path | None,
    log_level: str,
    log_max_bytes: int,
    log_backups: int,
    json_path: Path | None,
    html_path: Path | None,
    quiet: bool,
    connect: Address | None,
    authkey_file: Path | None,
    connect_timeout: float,
    only: str | None,
    agent_names: str | None,
    shard: tuple[int, int] | None,
    close_market: bool,
    fail_fast: bool,
    stall_timeout: float | None,
) -> None:
    """Run a workload: a server process and one process per agent (or per N).

    CONFIG is a workload file: mpmarket's TOML (*.toml) or the course's JSON
    (anything else). Without CONFIG a workload is generated from --producers
    and --consumers (4 and 8 by default). One line per bought product goes to
    stdout as orders arrive; progress and the summary go to stderr.

    With --connect, no server is started: the agents attach to a market that
    `mpmarket serve` runs (on this machine or another), and --only, --agents
    and --shard pick the part of the workload this machine runs. When its
    consumers are done the run stops its own producers and leaves the market
    open (--close-market closes it, which ends every producer attached); a
    run of producers only ends when the market is closed.

    \b
    Examples:
      mpmarket run --producers 4 --consumers 8
      mpmarket run configs/tea-and-coffee.toml --json report.json
      mpmarket run course-case.in | sort > bought.txt
      mpmarket run market.toml --connect 10.0.0.5:7151 --authkey-file key --only producers
      mpmarket run market.toml --connect 10.0.0.5:7151 --authkey-file key --only consumers --close-market
    """
    started_at = time.perf_counter()
    console = Console(stderr=True)
    names = (
        tuple(name.strip() for name in agent_names.split(",") if name.strip())
        if agent_names
        else ()
    )
    remote_only = {
        "--only": only,
        "--agents": agent_names,
        "--shard": shard,
        "--close-market": close_market or None,
        "--authkey-file": authkey_file,
    }
    if connect is None:
        given = [option for option, value in remote_only.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} only go with --connect")
    else:
        server_side = {"--log-file": log_file, "--queue-size": queue_size}
        given = [option for option, value in server_side.items() if value is not None]
        if given:
            raise click.UsageError(
                f"{', '.join(given)}: the server decides this; give it to mpmarket serve"
            )
    try:
        workload = _workload(config, producers, consumers, sessions, seed, queue_size)
    except WorkloadError as error:
        _fail(console, str(error), ExitCode.USAGE)
    authkey = None
    if connect is not None:
        try:
            workload = pick_agents(workload, only=only, names=names, shard=shard)
        except ValueError as error:
            raise click.UsageError(str(error)) from None
        authkey = _load_key(console, authkey_file).secret

    observer = _PrintingObserver(console, quiet=quiet, started_at=started_at)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = LocalRun(
            workload,
            observer=observer,
            start_method=start_method,
            log=_log_settings(log_file, log_level, log_max_bytes, log_backups),
            started_at=started_at,
            connect=connect,
            authkey=authkey,
            connect_timeout=connect_timeout,
            close_market=close_market,
            fail_fast=fail_fast,
            stall_timeout=stall_timeout,
            agents_per_process=agents_per_process,
        ).run()
    finally:
        observer.close()

    code = ExitCode.of(report)
    # The ideal makespan, in milliseconds after the run (not in its timings);
    # meaningless for a part of a workload run against a shared market.
    ideal = simulate(workload).makespan if connect is None else None
    if not quiet and not report.attach_failed:
        for table in format_agents(report):
            console.print(table)
        console.print(format_summary(report, ideal))
    _write_reports(report_to_json(report, code, ideal), report, json_path, html_path)
    for failure in [*report.failures, *report.violations]:
        console.print(f"[bold red]mpmarket: error:[/] {failure}", highlight=False, soft_wrap=True)
    for line in report.stall:
        console.print(f"[bold red]mpmarket:[/] {line}", highlight=False, soft_wrap=True)
    if report.interrupted:
        console.print("[yellow]mpmarket: interrupted[/]")
    sys.exit(code)


@cli.command(name="simulate", epilog=EPILOG)
@workload_options
@click.option(
    "--poll", is_flag=True, help="Also simulate the classic design whose waits are sleeps."
)
def simulate_command(
    config: Path | None,
    producers: int | None,
    consumers: int | None,
    sessions: int,
    seed: int,
    queue_size: int | None,
    poll: bool,
) -> None:
    """Predict a workload's best possible makespan, or its deadlock.

    A discrete-event simulation with zero-cost calls and instant wake-ups: the
    time until the last order of an ideal run. With --poll, also the makespan
    of the classic design that sleeps the retry and republish times. A workload
    that can never finish is explained (who waits for what, what fills the
    producers' slots) and exits with code 3.

    \b
    Examples:
      mpmarket simulate configs/busy-market.toml --poll
      mpmarket simulate --producers 16 --consumers 32 --seed 3
    """
    console = Console(stderr=True)
    try:
        workload = _workload(config, producers, consumers, sessions, seed, queue_size)
    except WorkloadError as error:
        _fail(console, str(error), ExitCode.USAGE)
    ideal = simulate(workload)
    for line in format_simulation(ideal, "ideal"):
        click.echo(line)
    if poll:
        for line in format_simulation(simulate(workload, poll=True), "polling"):
            click.echo(line)
    sys.exit(ExitCode.DEADLOCK if ideal.deadlock else ExitCode.OK)


@cli.command(epilog=EPILOG)
@click.option(
    "--listen",
    type=ADDRESS,
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="Address to listen on; anything but loopback needs an explicit key.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=DEFAULT_QUEUE_SIZE,
    show_default=True,
    help="Products one producer may have on sale.",
)
@authkey_option(
    f"File holding the authkey, created with a random key (mode 0600) if missing. "
    f"Without it: ${ENV_VAR}, else the default file $XDG_RUNTIME_DIR/mpmarket/authkey "
    "(or ~/.config/mpmarket/authkey)."
)
@log_options
@click.option(
    "--cart-lease",
    type=click.FloatRange(min=0, min_open=True),
    default=CART_LEASE_S,
    show_default=True,
    metavar="SECONDS",
    help="Give back the cart of a consumer that holds products and made no call this long "
    "(a vanished or frozen worker).",
)
@quiet_option
def serve(
    listen: Address,
    queue_size: int,
    authkey_file: Path | None,
    log_file: Path | None,
    log_level: str,
    log_max_bytes: int,
    log_backups: int,
    cart_lease: float,
    quiet: bool,
) -> None:
    """Serve a market for workers of this and other machines, until Ctrl-C.

    Workers attach with `mpmarket run CONFIG --connect HOST:PORT` and the same
    authkey; `mpmarket status` shows the market. The key comes from
    --authkey-file or $MPMARKET_AUTHKEY; without either, a random key is
    written to the default file (mode 0600) and its path printed, never the
    key. Listening on anything but loopback needs an explicit key: whoever
    holds it can run code in this process (BaseManager speaks pickle).

    On Ctrl-C or SIGTERM the market is closed (attached producers end
    cleanly), a summary is printed, and serve exits 0.

    \b
    Examples:
      mpmarket serve
      mpmarket serve --listen 0.0.0.0:7151 --authkey-file ~/.mpmarket-key --queue-size 8
    """
    console = Console(stderr=True)
    host = listen[0]
    explicit = authkey_file is not None or bool(os.environ.get(ENV_VAR))
    if not explicit and not is_loopback(host):
        _fail(
            console,
            f"refusing to listen on {format_address(listen)} without an explicit authkey: "
            f"give --authkey-file PATH or set {ENV_VAR} (whoever holds the key can run code "
            "in the server)",
            ExitCode.USAGE,
        )
    try:
        key, created = load_authkey(authkey_file, create=True)
    except AuthkeyError as error:
        _fail(console, str(error), ExitCode.USAGE)
    log = _log_settings(log_file, log_level, log_max_bytes, log_backups)
    logger = log.open() if log is not None else None
    market = Marketplace(queue_size, logger=logger)
    try:
        served = ServedMarket(market, listen, key.secret, cart_lease_s=cart_lease)
    except OSError as error:
        reason = (error.strerror or str(error)).lower()
        _fail(console, f"cannot listen on {format_address(listen)}: {reason}", ExitCode.RUN_FAILED)
    address = format_address(served.address)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    try:
        served.start()
        console.print(
            _serve_start_line(served.address, key, created), highlight=False, soft_wrap=True
        )
        if not quiet:
            _watch(console, served, address, started)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # one stop is enough
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    served.stop()
    if not quiet:
        books = market.books()
        console.print(
            format_serve_summary(address, books, time.monotonic() - started, served.refused)
        )
    sys.exit(ExitCode.OK)


def _serve_start_line(address: Address, key: Authkey, created: bool) -> str:
    """Where serve listens and how workers attach: the key's place, never the key."""
    host, port = address
    shown = format_address(address)
    if host in ("", "0.0.0.0", "::"):
        shown = format_address((socket.gethostname(), port))
    where = (
        f"authkey in {key.path}{' (new)' if created else ''}"
        if key.path
        else f"authkey from ${ENV_VAR}"
    )
    attach = f"mpmarket run CONFIG --connect {shown}"
    if key.origin == "file":
        attach += f" --authkey-file {key.path}"
    return f"mpmarket: serving on {format_address(address)}, {where}; attach with: {attach}"


def _watch(console: Console, served: ServedMarket, address: str, started: float) -> None:
    """serve's live view until Ctrl-C: redrawn on a terminal, else plain lines."""
    if console.is_terminal:
        view = format_serve_view(address, served.market.books(), served.agents(), 0.0)
        with Live(view, console=console, auto_refresh=False, transient=True) as live:
            while True:
                time.sleep(SERVE_VIEW_INTERVAL_S)
                up = time.monotonic() - started
                live.update(
                    format_serve_view(address, served.market.books(), served.agents(), up),
                    refresh=True,
                )
    last = None
    while True:
        time.sleep(SERVE_LOG_INTERVAL_S)
        books, agents = served.market.books(), served.agents()
        state = (books, tuple((a.name, a.role, a.host) for a in agents))
        if state != last:
            last = state
            line = format_serve_line(books, agents, time.monotonic() - started)
            console.print(f"mpmarket: {line}", highlight=False, soft_wrap=True)


@cli.command(epilog=EPILOG)
@click.option(
    "--connect",
    type=ADDRESS,
    default=DEFAULT_ADDRESS,
    show_default=True,
    help="Address of the market (mpmarket serve).",
)
@authkey_option(_WORKER_KEY_HELP)
@connect_timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON.")
def status(
    connect: Address, authkey_file: Path | None, connect_timeout: float, as_json: bool
) -> None:
    """Show one snapshot of a served market, on stdout.

    Products on sale per producer and product, carts and what they hold,
    the agents attached, orders and products bought so far.

    \b
    Examples:
      mpmarket status
      mpmarket status --connect 10.0.0.5:7151 --authkey-file key --json
    """
    console = Console(stderr=True)
    key = _load_key(console, authkey_file)
    try:
        market = attach(
            connect, key.secret, timeout=connect_timeout, role="status", name="mpmarket status"
        )
        snapshot, agents, problems = market.snapshot(), market.agents(), market.audit()
        market.disconnect()
    except MarketUnavailableError as error:
        _fail(console, str(error), ExitCode.UNREACHABLE)
    address = format_address(connect)
    if as_json:
        click.echo(json.dumps(status_to_json(address, snapshot, agents, problems), indent=2))
    else:
        Console().print(format_status(address, snapshot, agents))


@cli.command(epilog=EPILOG)
@click.option(
    "--producers",
    "-p",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Producers (agents).",
)
@click.option(
    "--consumers",
    "-c",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Consumers (agents).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    envvar="MPMARKET_STRESS_SECONDS",
    help="Seconds of churn (env MPMARKET_STRESS_SECONDS).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the workload and of the kills."
)
@click.option(
    "--kill-consumers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Consumers to SIGKILL at random times.",
)
@click.option(
    "--kill-producers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Producers to SIGKILL at random times (never the last maker of a product).",
)
@start_method_option
@agents_per_process_option
@json_option
@html_option
@quiet_option
def stress(
    producers: int,
    consumers: int,
    duration: float,
    seed: int,
    kill_consumers: int,
    kill_producers: int,
    start_method: str,
    agents_per_process: int,
    json_path: Path | None,
    html_path: Path | None,
    quiet: bool,
) -> None:
    """Churn the market as fast as it goes, kill agents, and check the books.

    Producers with no make time publish as fast as the market lets them and
    consumers run session after session, for --duration seconds, while
    --kill-consumers and --kill-producers agents are killed with SIGKILL at
    random (seeded) times (with --agents-per-process, that many processes,
    each with all its agents). The books are audited from scratch four times
    a second and each consumer's orders are checked against its sessions.
    Exit 0 only when no invariant was ever violated; the verdict is one line
    on stdout.

    \b
    Examples:
      mpmarket stress --duration 10 --kill-consumers 2 --kill-producers 1
      mpmarket stress --producers 16 --consumers 32 --agents-per-process 4 --kill-consumers 2
      MPMARKET_STRESS_SECONDS=600 mpmarket stress --json stress.json --html stress.html
    """
    started_at = time.perf_counter()
    console = Console(stderr=True)
    try:
        plan = plan_stress(
            producers,
            consumers,
            duration_s=duration,
            seed=seed,
            kill_consumers=kill_consumers,
            kill_producers=kill_producers,
            agents_per_process=agents_per_process,
        )
    except WorkloadError as error:
        raise click.UsageError(str(error).removeprefix("<stress>: ")) from None
    # Planned kills are no news; --quiet keeps them out of stderr.
    observer = _PrintingObserver(
        console, quiet=quiet, started_at=started_at, print_orders=False, print_deaths=not quiet
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_stress(
            plan, observer=observer, start_method=start_method, started_at=started_at
        )
    finally:
        observer.close()
    report = result.report
    code = ExitCode.of(report)
    if code == ExitCode.RUN_FAILED and result.ok:
        code = ExitCode.OK  # the deaths were the planned kills
    if not result.ok and code == ExitCode.OK:
        code = ExitCode.RUN_FAILED
    if not quiet:
        console.print(format_summary(report))
    document = report_to_json(report, code) | {
        "stress": {
            "duration_s": duration,
            "seed": seed,
            "agents_per_process": agents_per_process,
            "kills": [
                {"at_s": at, "agent": name, "process": list(plan.casualties[name])}
                for at, name in plan.kills
            ],
            "problems": result.problems,
            "ok": result.ok,
        }
    }
    _write_reports(document, report, json_path, html_path)
    for problem in result.problems:
        console.print(
            f"[bold red]mpmarket: violation:[/] {problem}", highlight=False, soft_wrap=True
        )
    rate = report.products_bought / report.market_s if report.market_s else 0.0
    verdict = "OK" if result.ok and code == ExitCode.OK else "FAILED"
    click.echo(
        f"stress {verdict}: {report.products_bought} products bought in {report.market_s:.1f} s "
        f"({rate:,.0f}/s), {len(report.deaths)} agents killed, {len(result.problems)} violations"
    )
    sys.exit(code)


@cli.command(epilog=EPILOG)
@click.argument("output", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--producers",
    "-p",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Producers to generate.",
)
@click.option(
    "--consumers",
    "-c",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Consumers to generate.",
)
@click.option(
    "--sessions",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Shopping sessions per consumer.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generator.")
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="Products one producer may have on sale.",
)
@click.option(
    "--make-time",
    type=click.FloatRange(min=0),
    default=0.004,
    show_default=True,
    help="Typical seconds to make one product (each producer varies it by up to 50 %).",
)
@click.option(
    "--wait-time",
    type=click.FloatRange(min=0),
    default=0.01,
    show_default=True,
    help="Typical retry and republish wait (varied the same way).",
)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["toml", "course"]),
    default="toml",
    show_default=True,
    help="mpmarket's TOML, or the course's JSON.",
)
def gen(
    output: Path,
    producers: int,
    consumers: int,
    sessions: int,
    seed: int,
    queue_size: int,
    make_time: float,
    wait_time: float,
    file_format: str,
) -> None:
    """Write a generated workload to OUTPUT ("-" for stdout), to edit and run.

    The same generator as `mpmarket run --producers N --consumers M`: the same
    flags give the same workload, and it never deadlocks.

    \b
    Examples:
      mpmarket gen market.toml --producers 6 --consumers 12 --seed 3
      mpmarket gen case.json --format course && mpmarket run case.json
    """
    workload = generate(
        producers,
        consumers,
        sessions=sessions,
        seed=seed,
        queue_size=queue_size,
        make_time=make_time,
        wait_time=wait_time,
    )
    text = dump_toml(workload) if file_format == "toml" else dump_course_json(workload)
    if str(output) == "-":
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        _fail(Console(stderr=True), f"{output}: cannot write: {error.strerror}", ExitCode.USAGE)
    Console(stderr=True).print(
        f"wrote {output}: {producers} producers, {consumers} consumers, "
        f"{workload.products_to_buy} products to buy",
        highlight=False,
    )


@cli.command(epilog=EPILOG)
@click.argument("configs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(configs: tuple[Path, ...]) -> None:
    """Check workload files and say what each holds, or what is wrong.

    For each file: its agents, products, sessions and the products any correct
    run buys, and whether the simulation predicts a deadlock; or one line
    naming the file, the field and what was expected. Exit 2 if any file is
    wrong, 3 if any deadlocks, else 0.

    \b
    Examples:
      mpmarket validate configs/*.toml
    """
    worst = ExitCode.OK
    for config in configs:
        try:
            workload = load_workload(config)
        except WorkloadError as error:
            click.echo(f"mpmarket: error: {error}", err=True)
            worst = ExitCode.USAGE
            continue
        kinds = {step.product for spec in workload.producers for step in spec.steps}
        kinds |= {op.product for spec in workload.consumers for s in spec.sessions for op in s}
        outcome = simulate(workload)
        click.echo(
            f"{config}: {len(workload.producers)} producers, {len(workload.consumers)} consumers, "
            f"{len(kinds)} products, {workload.sessions} sessions, "
            f"{workload.products_to_buy} products to buy, queue size "
            f"{workload.queue_size_per_producer}"
        )
        if outcome.deadlock is not None:
            for line in outcome.deadlock.explain():
                click.echo(f"{config}: {line}")
            if worst == ExitCode.OK:
                worst = ExitCode.DEADLOCK
        else:
            click.echo(f"{config}: ideal makespan {outcome.makespan:.3f} s")
    sys.exit(worst)


cli.add_command(bench)


def main() -> None:
    """Entry point of the console script."""
    try:
        cli.main(prog_name="mpmarket", standalone_mode=True)
    except MarketUnavailableError as error:  # pragma: no cover - commands map their own
        _fail(Console(stderr=True), str(error), ExitCode.UNREACHABLE)
    except MpmarketError as error:  # pragma: no cover - commands map their own
        _fail(Console(stderr=True), str(error), ExitCode.RUN_FAILED)
