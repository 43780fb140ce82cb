"""The ``dirbench`` command line: ``dirbench <command> [<subcommand>] [options]``.

Commands are discovered from :mod:`dirbench.commands` (one module per command, see its docstring).
Errors that users can fix (bad files, bad arguments) are raised as :class:`dirbench.errors.UserError`
and printed as one line on stderr with exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from dirbench import __version__, commands
from dirbench.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The full parser, with one subparser per discovered command (groups for multi-word names)."""
    parser = argparse.ArgumentParser(
        prog="dirbench",
        description="DIRBench: benchmark harness for unsupervised deformable registration of 3D brain MRI.",
    )
    parser.add_argument("--version", action="version", version=f"dirbench {__version__}")
    top = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    names = [m.name for m in pkgutil.iter_modules(commands.__path__)]
    modules = [importlib.import_module(f"{commands.__name__}.{name}") for name in names]
    for module in sorted(modules, key=lambda m: m.NAME):
        words = module.NAME.split()
        subs = top
        if len(words) == 2:
            if words[0] not in groups:
                group = top.add_parser(words[0], help=f"{words[0]} commands")
                groups[words[0]] = group.add_subparsers(dest="subcommand", metavar="<subcommand>", required=True)
            subs = groups[words[0]]
        # argparse %-formats help strings (for %(default)s), so a literal % in HELP ("%|J|<=0") is doubled.
        sub = subs.add_parser(words[-1], help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dirbench`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"dirbench: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dirbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
