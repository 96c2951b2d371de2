from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schedb.harness import Cluster, Receiver

pytestmark = pytest.mark.integration


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
    c = Cluster(Path(tmp_path_factory.mktemp("cluster")))
    try:
        c.start()
        c.wait_ready()
        yield c
    finally:
        c.stop()


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A fresh three-node cluster for a test that kills or restarts nodes."""
    c = Cluster(tmp_path)
    try:
        c.start()
        c.wait_ready()
        yield c
    finally:
        c.stop()
