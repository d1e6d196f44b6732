"""`nhr serve --workers N`: uvicorn's worker supervisor, replacing a killed worker at once.

uvicorn's supervisor checks its workers every 0.5 s by pinging each over a pipe and waiting up to
`timeout_worker_healthcheck` for the answer (`NHR_WORKER_HEALTHCHECK_SECONDS`, 60 s: a worker still
importing on a loaded machine must not be taken for hung). Two things made a killed worker wait
for that whole timeout before it was replaced:
- the parent kept its own copy of the child's end of the pipe, so a ping to a child killed with
  SIGKILL never saw end-of-file and waited the full timeout;
- all workers were pinged in one pass, so one slow answer delayed noticing a dead one.

Here the parent closes its copy of the child's end once the child has been spawned (the child got
its own), and each check first replaces every worker whose process has exited (no ping needed:
`Process.is_alive` reaps it), then pings the survivors for hangs as uvicorn does. A killed worker
is replaced within one check interval; how soon the new one serves is its start-up time.
"""

from __future__ import annotations

import logging

from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

logger = logging.getLogger("uvicorn.error")


class _Worker(Process):
    def start(self) -> None:
        super().start()
        # The spawned child holds its own end of the pipe (passed at spawn): with the parent's
        # copy closed, a dead child reads as end-of-file at once instead of a silent pipe.
        self.child_conn.close()


class Supervisor(Multiprocess):
    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self._spawn())

    def _spawn(self) -> _Worker:
        worker = _Worker(self.config, self.sockets)
        worker.start()
        return worker

    def keep_subprocess_alive(self) -> None:
        for hung_check in (False, True):
            for idx, worker in enumerate(self.processes):
                if self.should_exit.is_set():
                    return  # the supervisor is stopping: no replacements
                if hung_check:
                    if worker.is_alive(timeout=self.config.timeout_worker_healthcheck):
                        continue
                elif worker.process.is_alive():
                    continue
                if not self._replace(idx, worker):
                    return

    def _replace(self, idx: int, worker: Process) -> bool:
        worker.kill()  # hung or dead: make sure it is gone
        worker.join()
        if worker.exitcode == STARTUP_FAILURE:
            # It failed before serving (app, socket): every replacement would fail the same way.
            logger.error(f"Child process [{worker.pid}] failed to start, stopping the parent process.")
            self.should_exit.set()
            return False
        logger.info(f"Child process [{worker.pid}] died")
        self.processes[idx] = self._spawn()
        return True
