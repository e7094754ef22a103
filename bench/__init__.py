"""popflow's benchmark: the engine end to end beside the physical limit of its PostgreSQL.

``python -m bench`` starts a private, durable PostgreSQL (or uses ``--dsn``), measures what
that server can commit with pgbench, runs popflow on it, repeats both interleaved, and
writes medians and same-run ratios to ``docs/benchmarks.md``. See that file for what is
measured and how to read it; ``python -m bench --help`` for the options.
"""
