"""mpmarket bench: the benchmarks and their statistics."""
