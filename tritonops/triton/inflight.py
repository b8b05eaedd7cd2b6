"""Loads in flight, shared by every Triton client in this process (``LOADS``).

Triton loads a model twice when two load calls for it overlap; :class:`LoadsInFlight` joins a load of
the same model already in flight on the same server instead of issuing a second one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from tritonops.errors import TritonError

# The client's logger: these lines were always the client's, and operators filter on it.
log = logging.getLogger("tritonops.triton.client")

T = TypeVar("T")


@dataclass
class _Flight:
    future: Future[Any]
    args: tuple[Any, ...]
    owner: int  # thread id: a load may call into a load of the same key it runs itself


class LoadsInFlight:
    """The one registry of model loads in flight per (server key, model), for this process.

    ``run`` runs ``fn`` unless a load of the same key is already running: then it waits, and returns
    that load's result (``joined=True``) when its ``args`` match and ``accept(result)`` holds, else
    runs its own after it. A thread that already runs a key runs nested calls for it directly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], _Flight] = {}

    def run(
        self,
        key: tuple[str, str],
        args: tuple[Any, ...],
        fn: Callable[[], T],
        accept: Callable[[Any], bool] = lambda _r: True,
    ) -> tuple[T, bool]:
        me = threading.get_ident()
        while True:
            with self._lock:
                cur = self._running.get(key)
                if cur is None:
                    mine = _Flight(Future(), args, me)
                    self._running[key] = mine
                    break
                nested = cur.owner == me
            if nested:  # outside the registry's lock: holding it here would serialise every load
                return fn(), False
            log.info("server %s: load of model %r already in flight; waiting for it", *key)
            try:
                result = cur.future.result()
            except TritonError:
                if cur.args == args:
                    raise  # the first caller's error is this call's error too
                continue
            if cur.args == args and accept(result):
                return result, True
        try:
            out = fn()
        except BaseException as e:
            mine.future.set_exception(e)
            raise
        else:
            mine.future.set_result(out)
            return out, False
        finally:
            with self._lock:
                self._running.pop(key, None)


LOADS = LoadsInFlight()
