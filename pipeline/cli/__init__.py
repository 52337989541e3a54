"""pipeline/cli."""
