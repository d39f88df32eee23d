"""``python -m mongoengine_async.testing -- CMD ARGS...`` runs ``CMD`` with
``MONGODB_URI`` pointing at a throwaway replica set (or at the existing
``$MONGODB_URI``) and exits with ``CMD``'s exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from mongoengine_async.testing.replica_set import mongodb_uri


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``CMD ARGS...`` with ``MONGODB_URI`` set; return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(
            "usage: python -m mongoengine_async.testing -- CMD [ARGS...]\n"
            "Runs CMD with MONGODB_URI set to a throwaway one-node replica set\n"
            "(or to the existing $MONGODB_URI) and exits with CMD's code.",
            file=sys.stderr,
        )
        return 0 if args else 2

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with mongodb_uri() as uri:
            return _run(args, uri)
    except RuntimeError as error:  # no mongod, or it would not start
        print(f"python -m mongoengine_async.testing: {error}", file=sys.stderr)
        return 1


# How long CMD has to exit after the launcher's SIGTERM before it is killed.
TERMINATE_GRACE = 10.0


def _run(args: list[str], uri: str) -> int:
    """Run ``args`` with ``MONGODB_URI`` set to ``uri``; return its exit code
    (``128 + signum`` if a signal killed it, never 0 once interrupted)."""
    env = {**os.environ, "MONGODB_URI": uri}
    children: list[subprocess.Popen[bytes]] = []
    interrupted = False
    early = False  # a SIGINT to forward came before CMD was noted

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted, early
        interrupted = True
        if _terminal_sent_it():
            return
        if children:
            children[0].send_signal(signal.SIGINT)
        else:  # (CMD starting: Popen() has not returned)
            early = True

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        children.append(subprocess.Popen(args, env=env))
        if early:
            children[0].send_signal(signal.SIGINT)
        code = children[0].wait()
    except OSError as exc:
        print(f"cannot run {args[0]!r}: {exc}", file=sys.stderr)
        return 127
    finally:
        signal.signal(signal.SIGINT, previous)
        if children:
            _stop(children[0])
    if code < 0:  # killed by a signal
        return 128 - code
    return 128 + signal.SIGINT if interrupted and code == 0 else code


def _terminal_sent_it() -> bool:
    """Whether a SIGINT came from our terminal (Ctrl-C), which sent it to CMD
    too (same foreground process group): it then gets no second one."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY)
    except OSError:  # no controlling terminal: someone ran kill -INT
        return False
    try:
        return os.tcgetpgrp(tty) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(tty)


def _stop(child: subprocess.Popen[bytes]) -> None:
    """Terminate ``child`` if it still runs (the launcher got SIGTERM); kill it
    if it has not exited ``TERMINATE_GRACE`` seconds later."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(TERMINATE_GRACE)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


if __name__ == "__main__":
    sys.exit(main())
