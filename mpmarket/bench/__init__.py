"""mpmarket bench: the benchmarks and their statistics, one module per benchmark.

What a proxy call costs here, and how close the market gets to it. Each
benchmark is a function returning a ``BenchResult`` (no printing;
``mpmarket.cli.bench`` renders and writes it):

- ``floor.run_floor``: a no-op call to the stock manager, from 1 and from 8
  client processes; the floor every ratio is measured against.
- ``churn.run_churn``: producers and consumers at full load: products
  bought/s against the floor; mpmarket's own API and the course's
  (``apichurn``), against the classic design of the same round.
- ``latency.run_latency``: publish-to-obtained latency to waiting consumers
  against the 1-client round trip, the wake floor (``wake``) and the
  classic design.
- ``scale.run_scale``: start-up time and memory of a run of many agents, and
  the server's RSS over a long churn.
- ``course.run_course``: course cases on mpmarket and on the classic design
  (as processes and as threads) against the simulated ideal.
- ``wide.run_wide``: generated wide, fast workloads on each design
  (``classic``: the designs and one run on each) against the ideal.

They share ``results`` (figures over rounds, cases, the JSON format) and
``workers`` (the benchmark processes, run in the run's own ``AgentFleet``, and
the bench's market server). This package's ``__init__`` imports nothing, so
that loading ``mpmarket`` does not load the benchmarks.
"""
