"""JSON log lines stamped with the current request id."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from core.requestid import current_request_id


class RequestIdFilter(logging.Filter):
    """Stamp every record with the current request id ('-' outside a request or task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line."""

    EXTRA_FIELDS = ("method", "path", "status", "duration_ms", "user", "task")

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        for field in self.EXTRA_FIELDS:
            if hasattr(record, field):
                payload[field] = getattr(record, field)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
