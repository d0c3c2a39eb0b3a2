"""``python -m routecast.cli``."""

from routecast.cli import main

main()
