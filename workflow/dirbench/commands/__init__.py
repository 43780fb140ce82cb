"""Subcommands of the ``dirbench`` CLI, one module each.

A command module defines:

- ``NAME``: the command words, e.g. ``"evaluate"`` or ``"data demo"`` (a group and its subcommand);
- ``HELP``: one line for ``--help``;
- ``add_arguments(parser)``: its argparse arguments (keep imports here light, so ``--help`` is fast);
- ``run(args) -> int``: the work; the exit status.

``dirbench.cli`` discovers the modules by itself, so adding a command means adding one file.
"""
