"""The stages of the flow. Each has a pure core and a thin FastStream handler; they meet only
through events."""
