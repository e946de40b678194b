"""``python -m labelflip``: the command line."""

from labelflip.cli import main

main()
