"""One run of a workload: agents picked and packed, their fleet, the facade, stress, timeline."""
