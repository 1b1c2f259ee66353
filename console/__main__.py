"""``python -m console``: run the operators' web console."""

from console.server import main

main()
