"""The setup hook of the local Ray (``train/ray_logging.py``): beside a second local Ray on the same machine, the
State API of a job's processes (Ray Train's PlacementGroupCleaner asks it every second) still finds its own
cluster instead of raising "Found multiple active Ray instances"."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager

import ray

SECOND_RAY = ("import sys, ray\n"
              "ray.init(address='local', num_cpus=0, include_dashboard=False)\n"
              "print('up', flush=True)\n"
              "sys.stdin.read()\n"  # until the test closes the pipe (or dies): then shut down cleanly
              "ray.shutdown()\n")


@contextmanager
def second_local_ray():
    """Another local Ray instance on this machine, started by another driver, for the ``with`` block."""
    driver = subprocess.Popen([sys.executable, "-c", SECOND_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert driver.stdout.readline().strip() == "up", "the second local Ray did not start"
        yield
    finally:
        driver.stdin.close()
        driver.wait(timeout=120)


@ray.remote(num_cpus=0)
def state_api_outcome() -> tuple[str, str | None]:
    """What the cleaner's liveness query meets in a job process: the exception's type, and ``RAY_ADDRESS``."""
    import os

    from ray.util.state import get_actor

    try:
        get_actor("0" * 32, timeout=5)
        outcome = "answered"
    except Exception as error:  # noqa: BLE001  (the type is the result)
        outcome = type(error).__name__
    return outcome, os.environ.get("RAY_ADDRESS")


def test_the_state_api_of_a_job_process_queries_its_own_cluster_beside_another_local_ray(ray_local):
    own = ray.get_runtime_context().gcs_address
    with second_local_ray():
        outcome, address = ray.get(state_api_outcome.remote())
    # Our local Ray has no dashboard, so the query reaches our cluster and fails as "unavailable", which the cleaner
    # catches (a RayStateApiException); without the hook it is a ConnectionError naming both instances.
    assert outcome == "ServerUnavailable"
    assert address == own
