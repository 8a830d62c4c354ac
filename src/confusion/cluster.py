"""A Dask cluster for scoring and training: `--dask ADDRESS` (a running scheduler) or `--dask local:N`.

Scoring (`score_run(RunStore, ..., client=)`) sends the split's opened Zarr arrays to the workers
once and one task per block of samples; each task reads its own rows and returns their
per-epoch entropies, so the client holds only the result (samples x epochs float64), as the
local scorer does. Training (`confusion.training.train_on_cluster`) submits one task per
member through the same client. This module holds only the client and the task helpers.

Needs the `dask` extra (dask and distributed).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator

from .errors import InputError, ParameterError, RunStoreError, install_extra

__all__ = [
    "ADDRESS",
    "CONNECT_SECONDS",
    "RETRIES",
    "check_spec",
    "dask_client",
    "task_result",
]

ADDRESS = re.compile(r"^(?:(?:tcp|tls|ucx|inproc|ws|wss)://)?[\w.\-\[\]:]+:\d+$")
CONNECT_SECONDS = 5
RETRIES = 3  # times a member's task is run again after its worker is lost or it fails


def check_spec(spec: str) -> tuple[str, int | str]:
    """("local", N) or ("address", ADDRESS), or one line saying what --dask takes."""
    if spec.startswith("local:"):
        count = spec.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise ParameterError(f"{{dask}} local:N needs a number of worker processes N >= 1, got {spec!r}", "dask")
        return "local", int(count)
    if not ADDRESS.match(spec):
        raise ParameterError(f"{{dask}} must be a scheduler address (tcp://HOST:PORT or HOST:PORT) or local:N, got {spec!r}", "dask")
    return "address", spec


@contextlib.contextmanager
def dask_client(spec: str) -> Iterator:
    """A dask.distributed Client on the cluster `spec` names; a LocalCluster of N worker
    processes for local:N (closed on exit)."""
    kind, value = check_spec(spec)
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ParameterError("{dask} needs dask and distributed: " + install_extra("dask"), "dask") from None
    if kind == "local":
        # The cores shared out: each worker's numba/torch threads, so N workers do not oversubscribe them.
        threads = str(max(1, (os.cpu_count() or 1) // int(value)))
        env = {"NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        with contextlib.ExitStack() as stack:
            try:
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=int(value),
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                        silence_logs=logging.ERROR,
                        memory_limit=0,
                        env=env,
                    )
                )
                client = stack.enter_context(Client(cluster))
            except Exception as error:
                raise ParameterError(
                    f"{{dask}} {spec}: the local Dask cluster did not start ({type(error).__name__}: {str(error)[:120]})", "dask"
                ) from None
            yield client
        return
    try:
        client = Client(str(value), timeout=f"{CONNECT_SECONDS}s")
    except (OSError, TimeoutError) as error:
        raise ParameterError(f"{{dask}}: no Dask scheduler answers at {value} within {CONNECT_SECONDS} s ({type(error).__name__})", "dask") from None
    with client:
        yield client


def task_result(future, failed: str):
    """The result of a task on the cluster: the toolkit's own one-line errors pass as they are;
    anything else becomes one line, `failed` and its cause."""
    try:
        return future.result()
    except (InputError, RunStoreError):
        raise
    except Exception as error:
        raise RunStoreError(f"{failed} ({type(error).__name__}: {str(error)[:160]})") from None
