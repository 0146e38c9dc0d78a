"""The ``ipnet`` command: train, evaluate, energy, card, serve, replay, bench.

Heavy imports (torch, the models) happen inside each subcommand so that ``ipnet --help`` is instant. A
subcommand that fails on its input or its environment prints one ``error:`` line: exit status 2 for a usage
error (a bad argument, a file that is not data), 1 for a failure (a server that does not answer); a
traceback means a bug.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from models.commands import add_commands as add_model_commands
from service.commands import add_commands as add_service_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_model_commands(sub)
    add_service_commands(sub)  # serve, and the clients' replay and bench
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> str:
    return f"warning: {message}\n"


#: modules of the optional extras, and the extra that brings each
_EXTRAS = {"pandas": "data", "pyarrow": "data", "zarr": "data", "numcodecs": "data", "matplotlib": "plot"}


def _exit_status(e: BaseException) -> int | None:
    """2 for a usage error, 1 for a failure of the environment, None for a bug (let it raise)."""
    from models.data import DataFormatError

    if isinstance(
        e, DataFormatError | FileNotFoundError | NotADirectoryError | IsADirectoryError | ValueError
    ):
        return 2
    if isinstance(e, ConnectionError | TimeoutError | OSError):
        return 1
    try:
        import httpx
    except ImportError:
        return None
    return 1 if isinstance(e, httpx.TransportError) else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = _one_line_warning  # a library's warning as one line, not its source line
    handler = args.handler
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        extra = _EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(
            f"error: this command needs the '{extra}' extra: pip install 'ipnet-traj[{extra}]'",
            file=sys.stderr,
        )
        return 1
    except Exception as e:
        status = _exit_status(e)
        if status is None:
            raise
        print(f"error: {e}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
