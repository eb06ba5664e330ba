"""The operation log: every market operation, one line each, UTC timestamps.

Off unless a path is given. It rotates with ``RotatingFileHandler`` so a long
stress run cannot fill the disk. Operations are logged at INFO; what only
faults cause (a cart given back, a lease expired) at WARNING, so
``level="WARNING"`` keeps just those.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from logging.handlers import RotatingFileHandler
from pathlib import Path

__all__ = ["DEFAULT_BACKUPS", "DEFAULT_MAX_BYTES", "LEVELS", "LogSettings", "operation_logger"]

LEVELS = ("INFO", "WARNING")

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 3


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


@dataclass(frozen=True)
class LogSettings:
    """Where and how to log operations; picklable, so it travels to the server."""

    path: str
    level: str = "INFO"
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS

    def open(self) -> logging.Logger:
        return operation_logger(
            self.path, max_bytes=self.max_bytes, backups=self.backups, level=self.level
        )


def operation_logger(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backups: int = DEFAULT_BACKUPS,
    level: str = "INFO",
) -> logging.Logger:
    """A logger writing to ``path``, rotated at ``max_bytes`` with ``backups`` kept."""
    logger = logging.getLogger(f"mpmarket.operations.{Path(path).resolve()}")
    logger.setLevel(level)
    logger.propagate = False
    if not logger.handlers:
        handler = RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        handler.setFormatter(_UTCFormatter("%(asctime)s %(threadName)s %(message)s"))
        logger.addHandler(handler)
    return logger
