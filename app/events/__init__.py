"""Domain events: what changed, raised by committed changes, streamed and delivered."""
