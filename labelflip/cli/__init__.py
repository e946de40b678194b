"""The ``labelflip`` command line: commands parse their options, call the library and print.

One module per command group: :mod:`~labelflip.cli.attack`, :mod:`~labelflip.cli.analysis`,
:mod:`~labelflip.cli.study`, :mod:`~labelflip.cli.demo` and :mod:`~labelflip.cli.info`; :mod:`~labelflip.cli.common`
holds the app.
"""

from labelflip.cli import analysis, attack, demo, evaluate, info, robust, study  # noqa: F401  (register the commands)
from labelflip.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    import sys

    app(sys.argv[1:])
