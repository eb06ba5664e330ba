"""The market itself: no processes, no sockets (Marketplace, workloads, simulation, agent loops)."""
