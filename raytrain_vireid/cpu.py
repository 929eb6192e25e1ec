"""What ``/proc/cpuinfo`` says about this machine's CPU (Linux; no torch, no Ray)."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpuinfo(path: Path = CPUINFO) -> dict[str, str]:
    """The first processor's fields (``model name``, ``flags``, ...) as text; OSError where the file cannot be read."""
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(path: Path = CPUINFO) -> str | None:
    """The CPU's model name, or None where ``path`` cannot be read or has none."""
    try:
        return cpuinfo(path).get("model name") or None
    except OSError:
        return None
