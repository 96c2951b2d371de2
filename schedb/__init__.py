"""schedb: a Raft-replicated cron and webhook scheduler."""

__version__ = "0.1.0"
