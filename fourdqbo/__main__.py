"""`python -m fourdqbo` runs the command-line tool."""

from fourdqbo.cli.app import main

main()
