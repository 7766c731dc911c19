"""Side-by-side benchmarks of ratekeeper and its peers (limits, throttled-py, pyrate-limiter).

Run everything with ``python -m benchmarks`` from the repository root (``--smoke`` for a quick
check, ``--help`` for the options). Results go to ``docs/benchmarks.md`` and
``docs/benchmarks.png``.
"""
