"""``python -m scheduler``: run one scheduler replica."""

from scheduler.server import main

main()
