"""The deterministic simulator: the whole cluster in one process, on a simulated clock and
network, driven by one seed (docs/simulation.md)."""
