"""The pieces of `make chaos` (scripts/chaos.py): the shared context, the faults, the
scenarios that inject them, and the reconciliation of deliveries with committed history."""
