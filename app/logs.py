"""Structured logs: JSON lines when stderr is not a terminal, short text when it is; quiet at INFO."""

from __future__ import annotations

import json
import logging
import sys
import time

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# Chatty libraries log every rebalance and connection at INFO; they speak at WARNING and above.
_QUIET_LIBRARIES = ("aiokafka", "kafka", "httpx", "httpx2", "alembic", "aiohttp.access", "sqlalchemy")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                "msg": record.getMessage()}
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        text = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {record.levelname:7} " \
               f"{record.name}: {record.getMessage()} {fields}".rstrip()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


# A message (same logger, same format string) logged more often than this within the window is dropped
# until the window ends; the next one that passes carries `suppressed=<count>`. Bounds what a flood of
# poison messages or store retries writes, while the first lines of any burst still show.
BURST_LINES_MAX = 20
BURST_WINDOW_S = 10.0
# Distinct messages tracked at once; more are forgotten (and may pass) rather than grow without bound.
BURST_KEYS_MAX = 1000


class BurstLimit(logging.Filter):
    """Drop repeats of one message beyond BURST_LINES_MAX per BURST_WINDOW_S; count what was dropped."""

    def __init__(self, lines_max: int = BURST_LINES_MAX, window_s: float = BURST_WINDOW_S,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.lines_max = lines_max
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[tuple[str, str], list[float | int]] = {}  # key -> [window start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True  # faults are never dropped
        key = (record.name, str(record.msg))
        now = self.clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.window_s:
            dropped = window[2] if window is not None else 0
            if len(self._windows) >= BURST_KEYS_MAX:
                self._windows.clear()
            self._windows[key] = [now, 1, 0]
            if dropped:
                record.suppressed = dropped
            return True
        if window[1] < self.lines_max:
            window[1] += 1
            return True
        window[2] += 1
        return False


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TextFormatter() if sys.stderr.isatty() else JsonFormatter())
    handler.addFilter(BurstLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
