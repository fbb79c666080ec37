"""`BatchEnv`: N environments stepped together, in this thread, in threads or in processes."""

import weakref

import numpy as np

from dreamerv2_tf.envs.worker import WORKERS, LocalWorker, ProcessEnv


class BatchEnv:
    """`step(action, reset)` resets env i where `reset[i]` (its action is ignored) and steps the
    others with `action[key][i]`, and returns every observation key stacked to [N, ...].

    `parallel`: 'none' (one after another in this thread), 'thread' or 'process' (all envs work
    at once; processes are fresh interpreters, see `worker.py`). In thread and process mode, an
    env that raises or a worker that dies becomes an `EnvWorkerError` here with the worker's
    traceback text; in 'none' mode the env's own exception propagates. Either way the other envs'
    answers are read first, so the batch stays usable. `close()` may be called more than once and
    also runs at exit (and when the BatchEnv is garbage collected)."""

    def __init__(self, constructors, parallel='none'):
        constructors = list(constructors)
        if not constructors:
            raise ValueError('BatchEnv needs at least one environment constructor')
        if parallel not in WORKERS:
            raise ValueError(f"parallel must be one of {', '.join(WORKERS)}, got {parallel!r}")
        self.parallel = parallel
        self._workers = []
        # Registered before any worker starts so that a failed start still shuts down the others.
        self._finalizer = weakref.finalize(self, _close_all, self._workers)
        try:
            for index, constructor in enumerate(constructors):
                self._workers.append(WORKERS[parallel](constructor, f'env worker {index}'))
            # Processes and threads start concurrently; wait for all of them only now.
            spaces = [worker.wait_ready() for worker in self._workers]
        except BaseException:
            self.close()
            raise
        self.obs_space, self.act_space = spaces[0]
        for index, (obs_space, act_space) in enumerate(spaces[1:], 1):
            if obs_space != self.obs_space or act_space != self.act_space:
                self.close()
                raise ValueError(f'env {index} has other spaces than env 0: {obs_space}, '
                                 f'{act_space} vs {self.obs_space}, {self.act_space}')
        # A local env that itself runs in a process (DMC's ProcessEnv) is stepped through its
        # worker directly, so that those envs also work concurrently in 'none' mode.
        self._channels = [
            w.env._worker if isinstance(w, LocalWorker) and isinstance(w.env, ProcessEnv) else w
            for w in self._workers]

    def __len__(self):
        return len(self._workers)

    @property
    def pids(self):
        """Process ids of the env processes (empty when none run in processes)."""
        return [channel.pid for channel in self._channels if hasattr(channel, 'pid')]

    def step(self, action, reset):
        if not self._finalizer.alive:
            raise RuntimeError('BatchEnv is closed')
        reset = np.asarray(reset, bool).reshape(-1)
        if len(reset) != len(self):
            raise ValueError(f'reset needs {len(self)} entries, got {len(reset)}')
        if action is None:
            if not reset.all():
                raise ValueError('action may be None only when every env is reset')
            action = {}
        for key, value in action.items():
            if len(value) != len(self):
                raise ValueError(
                    f"action '{key}' needs leading dimension {len(self)}, got {len(value)}")
        for index, channel in enumerate(self._channels):
            if reset[index]:
                channel.send('reset')
            else:
                channel.send('step', {key: np.asarray(value[index])
                                      for key, value in action.items()})
        # Read every answer before raising, so that no stale answer is left in a worker's pipe.
        results, error = [], None
        for channel in self._channels:
            try:
                results.append(channel.receive())
            except Exception as e:
                error = error or e
        if error is not None:
            raise error
        return {key: np.stack([obs[key] for obs in results]) for key in results[0]}

    def close(self):
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _close_all(workers):
    # Ask every worker first so that they shut down in parallel, then wait for each.
    for worker in workers:
        begin = getattr(worker, 'begin_close', None)
        if begin is not None:
            begin()
    for worker in workers:
        try:
            worker.close()
        except Exception:
            pass  # closing is best effort: one broken env must not keep the others running
