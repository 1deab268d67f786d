"""A Dask client for the work of a run: an existing cluster, or a local one.

Extraction (``extract run --backend dask``) and sweeps (``distill sweep --backend dask``) both
take one: a ``--scheduler`` address, else a LocalCluster of one-thread worker processes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

#: What dask's nannies set in a worker's environment before it starts, read from dask's config.
PRE_SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int) -> Iterator:
    """A client of the cluster at ``scheduler``, or of a LocalCluster of ``workers`` one-thread processes."""
    import dask
    from dask.distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if scheduler:
            client = stack.enter_context(Client(scheduler, timeout="30s"))
        else:
            # dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in their workers, which also switches off
            # glibc's adaptive mmap threshold: every large tensor is then a fresh mmap, page-faulted in.
            # A training run took 1.5x the time (5x the system time) that way; the workers here keep
            # glibc's defaults (docs/cluster.md says how to do the same on a cluster of your own).
            environ = {k: v for k, v in dask.config.get(PRE_SPAWN_ENVIRON, {}).items() if not k.startswith("MALLOC_")}
            # The scheduler serves HTTP whatever the dashboard setting, by default on 8787: a second run on
            # the machine (two sweeps, or a sweep and an extraction) then warns that it is taken. ":0"
            # lets each cluster take a free port.
            with dask.config.set({PRE_SPAWN_ENVIRON: environ}):
                cluster = stack.enter_context(
                    LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
                )
            client = stack.enter_context(Client(cluster))
        yield client
