"""The ``greedy`` console script: the usual Greedy command line, run by ``picsl_greedy`` in-process.

``picsl-greedy`` (PyPI) ships the Greedy library (Yushkevich et al., 2016) as Python bindings but no
executable; our workflow runs Greedy as a subprocess, so this thin wrapper provides one:

    greedy -d 3 -i fixed.nii.gz moving.nii.gz -o warp.nii.gz -m WNCC 2x2x2 -n 100x100x40 -s 1.5mm 0.5mm

It exits 0 on success and 1 on error, with Greedy's own message on stderr.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run Greedy with ``argv`` (default: ``sys.argv[1:]``); ``-d 2`` selects Greedy2D, else Greedy3D."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"}:
        print(__doc__.strip())
        return 0
    dim = "3"
    if "-d" in args:
        i = args.index("-d")
        dim = args[i + 1] if i + 1 < len(args) else ""
    if dim not in {"2", "3"}:
        print(f"greedy: error: -d must be 2 or 3, got {dim!r}", file=sys.stderr)
        return 1
    from picsl_greedy import Greedy2D, Greedy3D

    engine = Greedy2D() if dim == "2" else Greedy3D()
    try:
        engine.execute(shlex.join(args))
    except Exception as err:  # Greedy raises RuntimeError / ValueError with its own message
        print(f"greedy: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
