"""`python -m freezeframe.cli`: the same as the `freezeframe` console script."""

from freezeframe.cli import main

main()
