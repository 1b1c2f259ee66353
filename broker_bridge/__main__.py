"""``python -m broker_bridge``: run one bridge replica."""

from broker_bridge.server import main

main()
