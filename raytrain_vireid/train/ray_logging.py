"""``worker_process_setup_hook`` of the local Ray the CLIs start; imports nothing heavy, because every Ray
process of the job (Ray Train's helper actors too) runs it.

Ray Train's PlacementGroupCleaner asks the State API every second whether the Train controller is alive. A
local Ray without the dashboard (ours: ``include_dashboard=False``; ``ray[default]`` is not installed) has no
State API, so the cleaner logs "Failed to query Ray Train Controller actor state" once a second for the whole
run. The run removes its own placement group (and the Tune CLI aborts the runs of stopped trials), so the
warning only buries the progress lines.
"""

from __future__ import annotations

import logging

SETUP_HOOK = "raytrain_vireid.train.ray_logging.quiet_state_api_warnings"
_STATE_API_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


def quiet_state_api_warnings() -> None:
    """Silence the cleaner's State-API warnings in this process."""
    for name in _STATE_API_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
