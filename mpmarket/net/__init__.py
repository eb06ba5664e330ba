"""The served market: wire, serving loop, client proxy, manager server, keys, the operation log."""
