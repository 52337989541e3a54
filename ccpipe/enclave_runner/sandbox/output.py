"""The workload's output as kept: a log bounded in size that says how much it dropped."""

from __future__ import annotations


class BoundedLog:
    """Keeps the first ``cap`` bytes fed to it and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap, self.buf, self.dropped = cap, bytearray(), 0

    def feed(self, data: bytes) -> None:
        """Keep what still fits; count the rest as dropped (it was read, so the writer never blocks)."""
        room = self.cap - len(self.buf)
        self.buf += data[: max(room, 0)]
        self.dropped += max(len(data) - max(room, 0), 0)

    def finish(self, note: str | None) -> bytes:
        """The log as kept, ending with a line on what was dropped and with ``note``, if any."""
        if self.dropped:
            msg = f"output truncated at {self.cap} bytes; {self.dropped} more bytes dropped"
            self.buf += f"\n[ccpipe: {msg}]\n".encode()
        if note:
            self.buf += f"\n[ccpipe: {note}]\n".encode()
        return bytes(self.buf)
