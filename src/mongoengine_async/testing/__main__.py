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


def _run(args: list[str], uri: str) -> int:
    """Run ``args`` with ``MONGODB_URI`` set to ``uri``; return its exit code."""
    env = {**os.environ, "MONGODB_URI": uri}
    try:
        child = subprocess.Popen(args, env=env)
    except OSError as exc:
        print(f"cannot run {args[0]!r}: {exc}", file=sys.stderr)
        return 127
    try:
        code = child.wait()
    except KeyboardInterrupt:
        code = child.wait()  # the child got the same SIGINT
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
    return 128 - code if code < 0 else code  # killed by a signal: 128 + signum


if __name__ == "__main__":
    sys.exit(main())
