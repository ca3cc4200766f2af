"""Child processes that stop when their parent says so, and only then.

A child started in the terminal's process group gets the terminal's Ctrl-C at the same
moment as its parent, so every part of a stack starts stopping at once and in no order:
Redis can be gone before beat releases its lock, and a gunicorn worker that is quitting
while its master is told to stop again can hang until it is killed. In a group of its
own, a child hears only its parent, which stops the parts in order. So that no part
outlives a parent that is killed outright, Linux also sends the child SIGTERM when its
parent dies (PR_SET_PDEATHSIG)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def own_group_ending_with_parent() -> None:
    """For `subprocess.Popen(preexec_fn=...)`: runs in the child before it executes."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        # No prctl in this libc: the own group still holds.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
