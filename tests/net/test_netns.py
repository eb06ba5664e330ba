"""The attach across a real network interface: two network namespaces, one veth pair.

The server runs in one namespace, the workers in another; the only link
between them is a veth pair with private addresses that exist only inside
the two namespaces this test creates (and deletes, always). Needs root and
``ip netns``; skipped with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter

import pytest

from mpmarket.core.load import load_workload
from mpmarket.core.workload import expected_purchases
from tests.net.remote_helpers import clean_env, mpmarket, wait_for_start_line
from tests.net.test_remote import KEY, WORKLOAD

pytestmark = pytest.mark.timeout(120)

# Addresses of the veth ends: inside the test's own namespaces only.
SERVER_IP = "10.231.47.1"
WORKER_IP = "10.231.47.2"
PORT = 7151  # a fresh namespace: the default port is free


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def namespaces():
    """Two namespaces joined by a veth pair; deleted whatever happens."""
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = f"mpm{os.getpid()}"
    server_ns, worker_ns = f"{tag}s", f"{tag}w"
    created = []
    try:
        for name in (server_ns, worker_ns):
            try:
                _ip("netns", "add", name)
            except (subprocess.CalledProcessError, OSError) as error:
                reason = getattr(error, "stderr", b"") or b""
                pytest.skip(f"ip netns add failed: {reason.decode().strip() or error}")
            created.append(name)
        _ip("link", "add", "mpmv0", "netns", server_ns, "type", "veth", "peer", "name", "mpmv1")
        _ip("link", "set", "mpmv1", "netns", worker_ns)
        for name, device, address in (
            (server_ns, "mpmv0", SERVER_IP),
            (worker_ns, "mpmv1", WORKER_IP),
        ):
            _ip("-n", name, "addr", "add", f"{address}/30", "dev", device)
            _ip("-n", name, "link", "set", device, "up")
            _ip("-n", name, "link", "set", "lo", "up")
        yield server_ns, worker_ns
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", "mpmv1")  # if it never left this namespace
        for name in created:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


def test_workers_attach_across_a_veth_pair(tmp_path, namespaces):
    server_ns, worker_ns = namespaces
    config = tmp_path / "market.toml"
    config.write_text(WORKLOAD)
    key_file = tmp_path / "authkey"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    env = clean_env(tmp_path)
    address = f"{SERVER_IP}:{PORT}"
    with mpmarket(
        tmp_path,
        "serve",
        *("serve", "--listen", address, "--authkey-file", key_file),
        env=env,
        prefix=("ip", "netns", "exec", server_ns),
    ) as server:
        wait_for_start_line(server)
        with mpmarket(
            tmp_path,
            "run",
            *("run", config, "--connect", address, "--authkey-file", key_file, "--quiet"),
            *("--close-market", "--connect-timeout", "20"),
            env=env,
            prefix=("ip", "netns", "exec", worker_ns),
        ) as run:
            assert run.wait() == 0, run.stderr
        assert Counter(run.stdout.splitlines()) == expected_purchases(load_workload(config))
        status = subprocess.run(
            [
                *("ip", "netns", "exec", worker_ns, sys.executable, "-m", "mpmarket", "status"),
                *("--connect", address, "--authkey-file", str(key_file), "--json"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        # The server saw the worker's address: the attach crossed the veth pair.
        assert [agent["host"] for agent in json.loads(status.stdout)["agents"]] == [WORKER_IP]
        assert server.stop(signal.SIGINT) == 0, server.stderr
    assert "products bought" in server.stderr
