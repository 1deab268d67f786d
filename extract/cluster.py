"""A Dask client for the work of a run: an existing cluster, or a local one.

Extraction (``extract run --backend dask``) and sweeps (``distill sweep --backend dask``) both
take one: a ``--scheduler`` address, else a LocalCluster of one-thread worker processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator:
    """A client of the cluster at ``scheduler``, or of a LocalCluster of ``workers`` one-thread processes."""
    from dask.distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler, timeout="30s"))
        else:
            cluster = stack.enter_context(
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        yield client
