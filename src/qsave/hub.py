"""Where a model name points, checked before anything loads: an embedded model, a local folder,
or a Hugging Face hub id that is in the local cache or can be downloaded now.

A misspelt folder is not sent to the hub (where it fails with "Repo id must use alphanumeric
chars"), and a hub id that is neither cached nor reachable fails at once with what to do,
instead of after the hub client's retries.

>>> looks_like_hub_id("Qwen/Qwen3-VL-8B-Instruct"), looks_like_hub_id("./no_such_dir")
(True, False)
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from qsave.errors import ModelError, UsageError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
PROBE_TIMEOUT_S = 3.0  # how long to try the hub's address before calling it unreachable


def looks_like_hub_id(name: str) -> bool:
    """``name`` or ``owner/name`` of letters, digits, ``-``, ``_``, ``.`` (no path syntax)."""
    return bool(HUB_ID.match(name)) and ".." not in name and not name.endswith(".")


def check_model(name: str, embedded: tuple[str, ...], revision: str | None = None) -> None:
    """Raise ``UsageError`` when ``name`` is neither an embedded model, a folder nor a hub id,
    and ``ModelError`` when it is a hub id that is not cached and cannot be downloaded now."""
    if name in embedded or Path(name).is_dir():
        return
    if not looks_like_hub_id(name):
        raise UsageError(f"--model {name}: no such folder, and not a hub id (owner/name)")
    if _cached(name, revision):
        return
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise ModelError(f"--model {name} is not in the local Hugging Face cache and {why}: "
                         "download it where there is a network (huggingface-cli download "
                         f"{name} --local-dir DIR) and pass that folder: --model DIR")


def _cached(name: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json", revision=revision)
    return isinstance(found, str)


def _reachable() -> bool:
    from huggingface_hub import constants

    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True
