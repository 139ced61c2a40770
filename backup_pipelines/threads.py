"""A thread whose result or exception the starting thread collects, for the pipelines' helper threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Worker(threading.Thread):
    """Runs `target` in a daemon thread; `result()` joins it and returns its value or re-raises its error."""

    def __init__(self, target: Callable[[], Any], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._function = target
        self._value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._value = self._function()
        except BaseException as error:
            self.error = error

    def result(self) -> Any:
        """Wait for the thread; return what `target` returned, or raise what it raised."""
        self.join()
        if self.error is not None:
            raise self.error
        return self._value
