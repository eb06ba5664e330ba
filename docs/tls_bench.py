"""Churn and latency of the served market with and without TLS, in the same run.

``mpmarket bench`` measures its own server setups; this script serves one
market plaintext and one TLS (a trustme certificate, made here) with the real
``ServedMarket`` and the real client, and times, alternating the two:

- latency: one round trip (``books()``) on an attached connection, median;
- churn: connect + authkey handshake + hello + ``new_cart`` + disconnect.

Run: ``python docs/tls_bench.py`` (needs trustme). Figures in docs/performance.md.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from mpmarket.core.market import Marketplace
from mpmarket.net.client import connect
from mpmarket.net.server import ServedMarket, new_authkey
from mpmarket.net.tls import load_server_tls, trust

ROUNDS = 5
CALLS = 2000
CHURN = 100


def _served(tls_files: tuple[Path, Path] | None, key: bytes) -> ServedMarket:
    tls = load_server_tls(*tls_files) if tls_files is not None else None
    served = ServedMarket(Marketplace(4), ("127.0.0.1", 0), key, tls=tls)
    served.start()
    return served


def _latency_us(served: ServedMarket, key: bytes) -> float:
    market = connect(served.address, key)
    samples = []
    for _ in range(CALLS):
        start = time.perf_counter()
        market.books()
        samples.append(time.perf_counter() - start)
    market.disconnect()
    return statistics.median(samples) * 1e6


def _churn_per_s(served: ServedMarket, key: bytes) -> float:
    start = time.perf_counter()
    for _ in range(CHURN):
        market = connect(served.address, key)
        market.new_cart()
        market.disconnect()
    return CHURN / (time.perf_counter() - start)


def main() -> None:
    import trustme

    folder = Path(tempfile.mkdtemp())
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key_file = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key_file.write_bytes(leaf.private_key_pem.bytes())
    key_file.chmod(0o600)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    key = new_authkey()
    plain = _served(None, key)
    tls = _served((cert, key_file), key)
    trust(tls.address, folder / "ca.pem")
    figures: dict[str, dict[str, list[float]]] = {
        "plaintext": {"latency": [], "churn": []},
        "TLS": {"latency": [], "churn": []},
    }
    for _ in range(ROUNDS):  # alternate, so that the machine's noise hits both
        for name, served in (("plaintext", plain), ("TLS", tls)):
            figures[name]["latency"].append(_latency_us(served, key))
            figures[name]["churn"].append(_churn_per_s(served, key))
    print(f"python {sys.version.split()[0]}, {ROUNDS} rounds alternating; medians of rounds")
    print("| server | round trip (books), median | churn (attach + call + leave) |")
    print("| --- | --- | --- |")
    for name, by in figures.items():
        latency = statistics.median(by["latency"])
        churn = statistics.median(by["churn"])
        print(f"| {name} | {latency:.1f} us | {churn:.0f} /s |")


if __name__ == "__main__":
    main()
