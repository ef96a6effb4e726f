"""Where cnnkit talks to people: a rich console on stderr (stdout stays for results and JSON)."""

from __future__ import annotations

import sys

from rich.console import Console

console = Console(stderr=True, highlight=False)
_warned: set[str] = set()


def warn(message: str, once_key: str | None = None) -> None:
    """Print ``cnnkit: warning: …`` on stderr; with once_key, only the first time in this process."""
    if once_key is not None:
        if once_key in _warned:
            return
        _warned.add(once_key)
    # plain print: this may run inside a DataLoader worker where rich's live display is not ours
    print(f"cnnkit: warning: {message}", file=sys.stderr, flush=True)
