"""``python -m node``: run one node agent."""

from node.main import main

main()
