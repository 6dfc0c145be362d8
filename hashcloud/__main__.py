"""`python -m hashcloud` runs the command line."""

from hashcloud.cli.main import main

main()
