"""``python -m optivgi`` runs the command line."""

from optivgi.cli import main

main(prog_name="optivgi")
