"""Development tooling shared by the tests and scripts/, kept out of the `schedb` package (and
its wheel): real node processes (devcluster), a cluster and webhook receiver on free ports for
tests, chaos and benchmarks (harness), and the receiver itself (receiver, run as a process).

Importable from a checkout only: pytest puts the repository root on sys.path (pyproject's
`pythonpath`), and the scripts insert it themselves.
"""
