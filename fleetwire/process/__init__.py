"""What every fleetwire process runs on: typed settings, logging, owned background tasks,
the signal-driven lifecycle, the lifeline that takes children down with their parent, and
the call coalescer (group commit)."""
