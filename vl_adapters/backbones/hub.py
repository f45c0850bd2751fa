"""Whether weights named by a Hugging Face hub id can be had now: from the local cache, or by a download.

Without a network the hub client retries for about a minute before it fails; a loader asks here first
and says in one line what is wrong.
"""

from __future__ import annotations

import socket
import urllib.request
from urllib.parse import urlparse

PROBE_SECONDS = 3.0  # a reachable host answers a TCP connect well within this


def cached(repo: str, filenames: list[str]) -> bool:
    """Whether any of `filenames` of the hub repository `repo` is in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(repo, name), str) for name in filenames)
    except ValueError:  # not a valid repository id (a misspelt local path): nothing of it is cached
        return False


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached ("HF_HUB_OFFLINE is set", "cannot be reached: ..."), or None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "cannot be reached (HF_HUB_OFFLINE is set)"
    endpoint = urlparse(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    target = urlparse(proxy if "://" in proxy else f"http://{proxy}") if proxy else endpoint
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as error:
        return f"cannot be reached from here ({host}: {error.strerror or error})"
    return None
