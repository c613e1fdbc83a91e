"""Progress bars for long loops, readable both in a terminal and in a pipeline pod's log.

tqdm keeps printing updates when its output is a pipe (as in a KFP pod or kfp.local), where
a live-refreshing display would only show its final state.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm


@contextmanager
def progress_bar(desc: str, total: int | None, unit: str = "item", leave: bool = True) -> Iterator[tqdm]:
    """A bar with count, rate and ETA (when ``total`` is known); call ``.update(n)`` as work completes."""
    with tqdm(total=total, desc=desc, unit=unit, mininterval=2.0, dynamic_ncols=True, leave=leave) as bar:
        yield bar
