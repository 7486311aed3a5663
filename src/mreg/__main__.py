"""`python -m mreg`."""

from mreg.cli import main

main()
