"""TLS: ``serve --tls-cert/--tls-key`` with ``run --connect`` and ``status --tls-ca``.

Real serve processes on loopback, real clients, certificates made on the fly
with trustme. Every TLS mistake is one line and exit 4 on the client's side.
"""

from __future__ import annotations

import datetime
from collections import Counter
from pathlib import Path

import pytest

from mpmarket.core.market import Marketplace
from mpmarket.errors import MarketUnavailableError
from mpmarket.net.client import connect
from mpmarket.net.server import ServedMarket, new_authkey
from mpmarket.net.tls import TLSFileError, forget, load_server_tls, trust
from mpmarket.products import Tea
from tests.helpers import bought_lines
from tests.net.remote_helpers import (
    clean_env,
    free_port,
    mpmarket,
    run_command,
    wait_for_start_line,
)

trustme = pytest.importorskip("trustme")

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(180)

KEY = "a-test-key-0123456789abcdef"


def _write_leaf(folder: Path, name: str, leaf: trustme.LeafCert) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    for blob in leaf.cert_chain_pems:
        with cert.open("ab") as file:
            file.write(blob.bytes())
    key.write_bytes(leaf.private_key_pem.bytes())
    key.chmod(0o600)
    return cert, key


@pytest.fixture
def pki(tmp_path):
    """A CA, a good certificate, an expired one, one for another host, another CA."""
    folder = tmp_path / "pki"
    folder.mkdir()
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    other_ca.cert_pem.write_to_path(str(folder / "other-ca.pem"))
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    return {
        "ca": folder / "ca.pem",
        "other_ca": folder / "other-ca.pem",
        "good": _write_leaf(folder, "good", ca.issue_cert("127.0.0.1", "localhost")),
        "expired": _write_leaf(
            folder,
            "expired",
            ca.issue_cert(
                "127.0.0.1", not_before=past - datetime.timedelta(days=30), not_after=past
            ),
        ),
        "other_host": _write_leaf(folder, "other-host", ca.issue_cert("market.example.org")),
    }


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "authkey"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def env(tmp_path):
    return clean_env(tmp_path)


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _serve(tmp_path, address, key_file, env, cert_key=None, label="serve"):
    tls = () if cert_key is None else ("--tls-cert", cert_key[0], "--tls-key", cert_key[1])
    return mpmarket(
        tmp_path,
        label,
        "serve",
        "--listen",
        address,
        "--authkey-file",
        key_file,
        "--quiet",
        *tls,
        env=env,
    )


def _status(address, key_file, env, *extra):
    return run_command(
        "status",
        "--connect",
        address,
        "--authkey-file",
        key_file,
        "--connect-timeout",
        "3",
        "--json",
        *extra,
        env=env,
    )


# -- the workflow ------------------------------------------------------------------


def test_a_course_case_split_across_two_tls_runs(tmp_path, pki, key_file, env, conformance_dir):
    """serve TLS + producers-only + consumers-only runs (--tls-ca): the expected lines."""
    case = conformance_dir / "01.in"
    if not case.exists():
        pytest.skip(f"{case} not found")
    expected = Counter(case.with_suffix(".ref.out").read_text().splitlines())
    address = f"127.0.0.1:{free_port()}"
    with _serve(tmp_path, address, key_file, env, pki["good"]) as server:
        start_line = wait_for_start_line(server)
        assert "TLS only" in start_line and "--tls-ca" in start_line
        assert str(pki["good"][1]) not in start_line  # the key file is never shown
        common = ("run", case, "--connect", address, "--authkey-file", key_file, "--quiet")
        common += ("--tls-ca", pki["ca"])
        with (
            mpmarket(
                tmp_path, "consumers", *common, "--only", "consumers", "--close-market", env=env
            ) as consumers,
            mpmarket(tmp_path, "producers", *common, "--only", "producers", env=env) as producers,
        ):
            assert consumers.wait() == 0, consumers.stderr
            assert producers.wait() == 0, producers.stderr
        bought = bought_lines(consumers.stdout) + bought_lines(producers.stdout)
        assert bought == expected
        assert server.stop() == 0, server.stderr
    assert "plaintext" not in server.stderr and "handshake" not in server.stderr


def test_status_through_tls_from_the_environment(tmp_path, pki, key_file, env):
    """$MPMARKET_TLS_CA stands for --tls-ca; a host name verified as well as an IP."""
    port = free_port()
    with _serve(tmp_path, f"127.0.0.1:{port}", key_file, env, pki["good"]) as server:
        wait_for_start_line(server)
        tls_env = {**env, "MPMARKET_TLS_CA": str(pki["ca"])}
        for host in ("127.0.0.1", "localhost"):
            result = _status(f"{host}:{port}", key_file, tls_env)
            assert result.returncode == 0, result.stderr


# -- every mistake: one line, exit 4 -----------------------------------------------


@pytest.mark.parametrize(
    ("served_with", "ca", "expected"),
    [
        ("good", "other_ca", "TLS: cannot verify the market at 127.0.0.1:PORT: unable to get"),
        (
            "expired",
            "ca",
            "TLS: cannot verify the market at 127.0.0.1:PORT: certificate has expired",
        ),
        (
            "other_host",
            "ca",
            "TLS: cannot verify the market at 127.0.0.1:PORT: IP address mismatch",
        ),
        ("good", None, "the market at 127.0.0.1:PORT speaks TLS only: give --tls-ca FILE"),
        (None, "ca", "TLS: the market at 127.0.0.1:PORT does not speak TLS"),
    ],
    ids=["wrong-ca", "expired", "host-mismatch", "plaintext-client", "plaintext-server"],
)
def test_each_tls_mistake_is_one_line_and_exit_4(
    tmp_path, pki, key_file, env, served_with, ca, expected
):
    port = free_port()
    address = f"127.0.0.1:{port}"
    cert_key = None if served_with is None else pki[served_with]
    with _serve(tmp_path, address, key_file, env, cert_key) as server:
        wait_for_start_line(server)
        extra = () if ca is None else ("--tls-ca", pki[ca])
        result = _status(address, key_file, env, *extra)
        assert result.returncode == 4, result.stderr
        line = _one_error_line(result.stderr)
        assert line.startswith("mpmarket: error: " + expected.replace("PORT", str(port))), line
        # The same through run --connect: one line, exit 4, nothing left running.
        run = run_command(
            "run", "-p", "1", "-c", "1", "--connect", address, "--authkey-file", key_file,
            "--connect-timeout", "3", "--quiet", *extra, env=env,
        )  # fmt: skip
        assert run.returncode == 4, run.stderr
        assert expected.replace("PORT", str(port)) in _one_error_line(run.stderr)
        assert server.stop() == 0, server.stderr
    if served_with is not None and ca is None:  # the server's one line per refusal
        refusals = [line for line in server.stderr.splitlines() if "plaintext" in line]
        assert refusals and all("speaks TLS only" in line for line in refusals)
    assert "PRIVATE KEY" not in server.stderr


# -- the server's files --------------------------------------------------------------


def test_serve_refuses_a_key_file_readable_by_others(tmp_path, pki, key_file, env):
    cert, key = pki["good"]
    key.chmod(0o644)
    result = run_command(
        "serve", "--listen", f"127.0.0.1:{free_port()}", "--authkey-file", key_file,
        "--tls-cert", cert, "--tls-key", key, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    line = _one_error_line(result.stderr)
    assert f"TLS key file {key} is accessible by others (mode 0644)" in line
    assert "PRIVATE KEY" not in result.stderr + result.stdout


@pytest.mark.parametrize("missing", ["--tls-cert", "--tls-key"])
def test_serve_needs_both_tls_files(tmp_path, pki, key_file, env, missing):
    cert, key = pki["good"]
    files = {"--tls-cert": cert, "--tls-key": key}
    del files[missing]
    args = [item for pair in files.items() for item in pair]
    result = run_command(
        "serve", "--listen", f"127.0.0.1:{free_port()}", "--authkey-file", key_file, *args, env=env
    )
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in _one_error_line(result.stderr)


def test_a_key_that_is_not_the_certificates_is_one_line(tmp_path, pki):
    cert, _ = pki["good"]
    _, other_key = pki["other_host"]
    with pytest.raises(TLSFileError, match="cannot use TLS certificate") as error:
        load_server_tls(cert, other_key)
    assert "PRIVATE KEY" not in str(error.value)


def test_a_missing_ca_file_is_a_usage_error(tmp_path, key_file, env):
    result = _status(f"127.0.0.1:{free_port()}", key_file, env, "--tls-ca", tmp_path / "nope.pem")
    assert result.returncode == 2
    assert "TLS CA file" in _one_error_line(result.stderr)


def test_tls_ca_without_connect_is_a_usage_error(tmp_path, pki, env):
    result = run_command("run", "-p", "1", "-c", "1", "--tls-ca", pki["ca"], env=env)
    assert result.returncode == 2
    assert "--tls-ca needs --connect" in result.stderr


# -- the library, in one process: large requests and waits through TLS ---------------


def test_large_requests_and_parked_calls_through_tls(pki):
    """Requests longer than a TLS record, a call that waits, many round trips."""
    key = new_authkey()
    served = ServedMarket(Marketplace(2), ("127.0.0.1", 0), key, tls=load_server_tls(*pki["good"]))
    served.start()
    trust(served.address, pki["ca"])
    try:
        market = connect(served.address, key, timeout=10)
        producer = market.register_producer()
        big = Tea("x" * 200_000, 1, "Green")  # a dozen TLS records each way
        assert market.publish(producer, big)
        cart = market.new_cart()
        assert market.add_to_cart(cart, big)
        assert market.place_order(cart) == [big]
        assert not market.add_to_cart(cart, Tea("none", 1, "Green"), 0.2)  # parked, expires
        for _ in range(200):
            market.books()
        market.disconnect()
    finally:
        served.stop(grace=0)
        forget(served.address)
    with pytest.raises(MarketUnavailableError):  # forgotten: plaintext to a TLS server
        connect(served.address, key, timeout=1)


def test_the_pytest_fixture_serves_tls(pytester, pki):
    pytester.makeconftest(
        f"""
import pytest
from mpmarket.pytest_plugin import MarketTLS

@pytest.fixture
def market_tls():
    return MarketTLS({str(pki["good"][0])!r}, {str(pki["good"][1])!r}, {str(pki["ca"])!r})
"""
    )
    pytester.makepyfile(
        """
from mpmarket.products import Tea

def test_it(market):
    assert market.tls_ca is not None
    pid = market.proxy.register_producer()
    assert market.proxy.publish(pid, Tea("L", 1, "Herbal"))
    other = market.connect()
    assert other.new_cart() >= 0
    other.disconnect()
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
