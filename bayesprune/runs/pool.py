"""A small process pool for sweeps: one task per worker, workers that die with their parent.

:class:`WorkerPool` is a :class:`concurrent.futures.Executor`, so ``sweep()`` uses it like
any other.  It differs from :class:`~concurrent.futures.ProcessPoolExecutor` where a
long sweep needs it to:

* **Each worker holds one task at a time**, and the pool remembers which.  When a
  worker dies (SIGKILL, the out-of-memory killer, a crash in native code) only the
  task it held fails, with :class:`WorkerDied` naming the worker and the signal; a
  new worker takes its place and the other tasks go on.  (A ProcessPoolExecutor
  marks the whole pool broken and fails every task.)
* **Workers die with the pool.**  On Linux each worker asks the kernel for SIGKILL
  when the thread that started it ends (``prctl(PR_SET_PDEATHSIG)``); everywhere, a
  thread in the worker watches a "lifeline" pipe whose other end only the parent
  holds, and exits the moment it closes (the parent exited, was killed, or
  :meth:`WorkerPool.terminate` closed it).  No worker outlives its sweep.
* **Workers ignore SIGINT.**  A Ctrl-C in a terminal reaches every process of the
  group; the parent decides what happens (``terminate``), so workers neither print
  tracebacks nor half-finish.
* :meth:`WorkerPool.terminate` cancels the queued tasks and ends the workers within
  a few seconds: close the lifelines, SIGTERM, and SIGKILL whatever is left after
  ``grace`` seconds.

Workers are started with the ``spawn`` method (a fresh interpreter: safe with torch
threads) by one manager thread, which also hands out tasks and collects results.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import traceback
from collections import deque
from concurrent.futures import Executor, Future
from multiprocessing import get_context
from multiprocessing.connection import wait
from typing import Any, Callable, Optional

#: Seconds ``terminate`` waits after SIGTERM before it sends SIGKILL.
STOP_GRACE = 3.0
#: Workers in a row that may die before they are ready before the pool gives up.
MAX_STARTUP_FAILURES = 3


class WorkerDied(RuntimeError):
    """The worker process that held this task died before it answered."""


class PoolStopped(RuntimeError):
    """The pool was terminated (or broke) before this task finished."""


# ------------------------------------------------------------------ the worker process
def _die_with_parent(parent_pid: int, lifeline) -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
            libc.prctl(15, b"bayesprune-wrk", 0, 0, 0)  # PR_SET_NAME: how ps/top show the worker
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before we could ask
        os._exit(1)

    def watch() -> None:
        try:
            lifeline.recv_bytes()  # the parent never sends: this returns or raises only when it closes
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _worker_main(conn, lifeline, parent_pid: int) -> None:
    """Run tasks one at a time until told to stop (``None``) or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid, lifeline)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            blob = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            task = pickle.loads(blob)
            if task is None:
                return
            fn, args, kwargs = task
            reply: tuple = ("ok", fn(*args, **kwargs))
        except BaseException as exc:  # noqa: B036 - every failure of the task goes back to the parent
            reply = ("error", exc, traceback.format_exc())
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result or exception
            conn.send(("error", RuntimeError(f"the task's outcome could not be sent back: {exc!r}"),
                       traceback.format_exc()))


# ------------------------------------------------------------------ the parent side
class _Worker:
    def __init__(self, process, conn, lifeline):
        self.process, self.conn, self.lifeline = process, conn, lifeline
        self.ready = False
        self.task: Optional[Future] = None

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid

    def close(self) -> None:
        for c in (self.conn, self.lifeline):
            try:
                c.close()
            except OSError:
                pass


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerPool(Executor):
    """``max_workers`` worker processes, each running one task at a time.

    ``submit``/``shutdown`` behave as in :class:`concurrent.futures.ProcessPoolExecutor`;
    :meth:`terminate` stops everything now.  A task whose worker dies fails with
    :class:`WorkerDied`; the pool starts a replacement and goes on.
    """

    def __init__(self, max_workers: int, mp_context=None, grace: float = STOP_GRACE):
        if max_workers < 1:
            raise ValueError(f"max_workers={max_workers} is invalid: allowed an integer >= 1")
        self._ctx = mp_context or get_context("spawn")
        self._n = max_workers
        self._grace = grace
        self._lock = threading.Lock()
        self._pending: deque[tuple[Future, bytes]] = deque()
        self._workers: list[_Worker] = []
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._shutdown = False  # no new tasks; finish the queued ones
        self._stopping = False  # terminate(): end everything now
        self._broken: Optional[str] = None
        self._startup_failures = 0
        self._thread = threading.Thread(target=self._manage, name="bayesprune-pool", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- public
    @property
    def worker_pids(self) -> list[int]:
        """The pids of the current worker processes."""
        return [w.pid for w in list(self._workers) if w.pid is not None]

    @property
    def busy_pids(self) -> list[int]:
        """The pids of the workers that hold a task now."""
        return [w.pid for w in list(self._workers) if w.task is not None and w.pid is not None]

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        fut: Future = Future()
        try:
            blob = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - reported through the future, as other executors do
            fut.set_exception(exc)
            return fut
        with self._lock:
            if self._shutdown or self._stopping:
                raise RuntimeError("cannot submit tasks after shutdown")
            if self._broken:
                raise PoolStopped(self._broken)
            self._pending.append((fut, blob))
        self._wake()
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Finish the queued tasks (or cancel them), then stop the workers."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_pending()
        self._wake()
        if wait:
            self._thread.join()

    def terminate(self, grace: Optional[float] = None) -> None:
        """Cancel the queued tasks and end every worker now: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if grace is not None:
            self._grace = grace
        with self._lock:
            self._shutdown = self._stopping = True
            self._cancel_pending()
        self._wake()
        self._thread.join(self._grace + 10.0)
        for w in list(self._workers):  # the manager thread is stuck: do its job from here
            if w.process.is_alive():
                w.process.kill()

    # ---------------------------------------------------------------- manager thread
    def _wake(self) -> None:
        try:
            with self._lock:
                self._wake_w.send_bytes(b"")
        except OSError:
            pass

    def _cancel_pending(self) -> None:
        while self._pending:
            fut, _ = self._pending.popleft()
            fut.cancel()

    def _start_worker(self) -> _Worker:
        conn, child_conn = self._ctx.Pipe(duplex=True)
        lifeline_r, lifeline_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=_worker_main, args=(child_conn, lifeline_r, os.getpid()),
                                    name="bayesprune-worker", daemon=True)
        process.start()
        child_conn.close()
        lifeline_r.close()
        return _Worker(process, conn, lifeline_w)

    def _dispatch(self) -> None:
        """Start missing workers; give each ready, idle worker the next queued task."""
        busy = sum(w.task is not None for w in self._workers)
        wanted = self._n if not self._shutdown else min(self._n, busy + len(self._pending))
        while len(self._workers) < wanted and not self._broken:
            self._workers.append(self._start_worker())
        for w in self._workers:
            while w.ready and w.task is None and self._pending:
                fut, blob = self._pending.popleft()
                if not fut.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                w.task = fut
                try:
                    w.conn.send_bytes(blob)
                except OSError:
                    pass  # the worker is dying; its sentinel fails the task with WorkerDied

    def _on_message(self, w: _Worker) -> None:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            self._on_death(w)
            return
        if msg[0] == "ready":
            w.ready = True
            self._startup_failures = 0
            return
        fut, w.task = w.task, None
        if fut is None:
            return
        if msg[0] == "ok":
            fut.set_result(msg[1])
        else:
            exc, remote_tb = msg[1], msg[2]
            if hasattr(exc, "add_note") and remote_tb:
                exc.add_note(f"in worker process {w.pid}:\n{remote_tb}")
            fut.set_exception(exc)

    def _on_death(self, w: _Worker) -> None:
        if w not in self._workers:
            return
        self._workers.remove(w)
        w.process.join(1.0)
        w.close()
        how = _describe_exit(w.process.exitcode)
        if w.task is not None and not w.task.done():
            w.task.set_exception(WorkerDied(
                f"worker process {w.pid} died ({how}) while it held this task; the other tasks go on"))
        if not w.ready and not self._stopping:
            self._startup_failures += 1
            if self._startup_failures >= MAX_STARTUP_FAILURES:
                with self._lock:
                    self._broken = (f"{self._startup_failures} worker processes in a row died while starting "
                                    f"(last: {how}); the pool stopped")
                    for fut, _ in self._pending:
                        if fut.set_running_or_notify_cancel():
                            fut.set_exception(PoolStopped(self._broken))
                    self._pending.clear()

    def _manage(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    self._dispatch()
                    idle = not self._pending and all(w.task is None for w in self._workers)
                    if (self._shutdown or self._broken) and idle:
                        break
                    workers = list(self._workers)
                by_conn = {w.conn: w for w in workers}
                by_sentinel = {w.process.sentinel: w for w in workers}
                for ready in wait([self._wake_r, *by_conn, *by_sentinel]):
                    if ready is self._wake_r:
                        while self._wake_r.poll():
                            self._wake_r.recv_bytes()
                    elif ready in by_conn:
                        self._on_message(by_conn[ready])
                    elif by_sentinel[ready] in self._workers:
                        w = by_sentinel[ready]
                        try:
                            if w.conn.poll():  # its last words (a result) come first
                                self._on_message(w)
                        except OSError:
                            pass
                        self._on_death(w)
        finally:
            self._stop_workers(now=self._stopping)

    def _stop_workers(self, now: bool) -> None:
        workers, self._workers = self._workers, []
        if now:
            for w in workers:
                w.lifeline.close()  # the worker's watch thread exits at once
                if w.process.is_alive():
                    w.process.terminate()
        else:
            for w in workers:
                try:
                    w.conn.send_bytes(pickle.dumps(None))
                except OSError:
                    pass
        for w in workers:
            w.process.join(self._grace)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(self._grace)
            w.close()
            if w.task is not None and not w.task.done():
                w.task.set_exception(PoolStopped(f"the pool was stopped while worker {w.pid} ran this task"))
        with self._lock:
            for fut, _ in self._pending:
                fut.cancel()
            self._pending.clear()
        for c in (self._wake_r, self._wake_w):
            c.close()
