"""``worker_process_setup_hook`` of the local Ray the CLIs start; imports nothing heavy, because every Ray
process of the job (Ray Train's helper actors too) runs it.

Ray Train's PlacementGroupCleaner asks the State API every second whether the Train controller is alive. A
local Ray without the dashboard (ours: ``include_dashboard=False``; ``ray[default]`` is not installed) has no
State API, so the cleaner logs "Failed to query Ray Train Controller actor state" once a second for the whole
run. The run removes its own placement group (and the Tune CLI aborts the runs of stopped trials), so the
warning only buries the progress lines.

The State API finds its cluster from ``RAY_ADDRESS`` or, unset, by scanning the machine for GCS servers. With a
second local Ray on the machine (two runs, or a benchmark beside a sweep) the scan finds both and raises
``ConnectionError: Found multiple active Ray instances``, which the cleaner does not catch: its monitor thread
dies with a traceback in the run's log. The hook therefore points ``RAY_ADDRESS`` at the process's own cluster.
"""

from __future__ import annotations

import logging
import os

import ray

SETUP_HOOK = "raytrain_vireid.train.ray_logging.setup_worker_process"
_STATE_API_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def setup_worker_process() -> None:
    """Silence the cleaner's State-API warnings in this process and, unless the user set ``RAY_ADDRESS``, make
    the State API look up this process's own cluster."""
    for name in _STATE_API_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
