from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devkit.harness import Cluster, Receiver

pytestmark = pytest.mark.integration


@contextmanager
def running_cluster(path: Path, extra_config: str = "") -> Iterator[Cluster]:
    """Three nodes started and ready; every process stopped by its PID afterwards, even on failure."""
    c = Cluster(path, extra_config=extra_config)
    try:
        c.start()
        c.wait_ready()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    rec = Receiver(tmp_path_factory.mktemp("receiver"))
    try:
        yield rec
    finally:
        rec.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A three-node cluster shared by the tests of one module."""
    with running_cluster(Path(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh three-node cluster for a test that kills or restarts nodes."""
    with running_cluster(tmp_path) as c:
        yield c
