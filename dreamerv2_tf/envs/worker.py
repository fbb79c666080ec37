"""Environments running in a thread or in a process of their own, and `ProcessEnv`.

Process workers are fresh interpreters (`python -c ...`, the same isolation as multiprocessing's
`spawn`) talking over a socket pair with `multiprocessing.connection`. Two reasons not to use
`multiprocessing.Process` itself: its spawn start re-imports the parent's `__main__` module in the
child, and a training script's top-level `import tensorflow` would then load TF into every worker
(slow, and fatal for MuJoCo rendering; stack-notes section 7); and this way the worker starts in a
session of its own, so a Ctrl-C in the terminal reaches only the parent, which then shuts the
workers down in order instead of every process printing its own KeyboardInterrupt.

A worker that raises sends its traceback text, which the parent raises as `EnvWorkerError`; a
worker that dies is noticed from its closed socket or its exit status within a second, never a
hang. A worker whose parent dies sees its socket close and exits, so none is left behind.
"""

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import traceback
import weakref
from multiprocessing import connection

# Set in a worker process's environment (where env constructors run); a variable of the process,
# not of this module, so that nothing here is mutable module state.
WORKER_VARIABLE = 'DREAMERV2_TF_ENV_WORKER'

_POLL_SECONDS = 0.2  # how often a waiting parent checks that the worker process still lives
_CLOSE_SECONDS = 3.0  # how long close() waits for a worker to exit before it is terminated


def in_env_worker():
    return os.environ.get(WORKER_VARIABLE) == '1'


class EnvWorkerError(RuntimeError):
    """An environment worker raised an exception or died."""


# Parent side --------------------------------------------------------------------------------------

class LocalWorker:
    """Runs the env in the calling thread; same interface as the parallel workers. Exceptions
    keep their own type here, as with a plain env."""

    def __init__(self, constructor, name):
        self.name = name
        self._pending = None
        self.env = constructor()
        self.spaces = (self.env.obs_space, self.env.act_space)

    def wait_ready(self):
        return self.spaces

    def send(self, method, arg=None):
        try:
            self._pending = ('ok', _call(self.env, method, arg))
        except Exception as e:
            self._pending = ('exception', e)

    def receive(self):
        kind, value = self._pending
        self._pending = None
        if kind == 'exception':
            raise value
        return value

    def close(self):
        env, self.env = getattr(self, 'env', None), None
        if env is not None:
            env.close()


class ThreadWorker:
    """Constructs and steps the env in a thread of its own (envs that keep thread-bound state,
    such as GL contexts, see only that thread)."""

    def __init__(self, constructor, name):
        self.name = name
        self._method = 'start'
        self._requests = queue.Queue()
        self._results = queue.Queue()
        self._thread = threading.Thread(target=self._loop, args=(constructor,), name=name,
                                        daemon=True)
        self._thread.start()
        self._spaces = None

    def _loop(self, constructor):
        # BaseException too: a SystemExit in env code must not leave the parent waiting.
        try:
            env = constructor()
            self._results.put(('ok', (env.obs_space, env.act_space)))
        except BaseException as e:
            self._results.put(('exception', e))
            return
        try:
            while True:
                method, arg = self._requests.get()
                if method == 'close':
                    break
                try:
                    self._results.put(('ok', _call(env, method, arg)))
                except BaseException as e:
                    self._results.put(('exception', e))
        finally:
            env.close()

    def wait_ready(self):
        if self._spaces is None:
            self._spaces = self.receive()
        return self._spaces

    def send(self, method, arg=None):
        self._method = method
        self._requests.put((method, arg))

    def receive(self):
        what = self._method
        while True:
            try:
                kind, value = self._results.get(timeout=_POLL_SECONDS)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._results.empty():
                    raise EnvWorkerError(f'{self.name} thread ended during {what}') from None
        if kind == 'exception':
            details = ''.join(traceback.format_exception(value))
            raise EnvWorkerError(f'{self.name} raised during {what}:\n{details}') from value
        return value

    def begin_close(self):
        self._requests.put(('close', None))

    def close(self):
        if self._thread.is_alive():
            self._requests.put(('close', None))
            self._thread.join(_CLOSE_SECONDS)


class ProcessWorker:
    """Runs the env in a separate Python process; `constructor` must be picklable (a
    `functools.partial` of a module-level function; cloudpickle, when installed, also takes
    lambdas and closures)."""

    def __init__(self, constructor, name):
        self.name = name
        self._method = 'start'
        payload = _dumps(constructor, name)
        parent_end, child_end = connection.Pipe(duplex=True)
        fd = child_end.fileno()
        code = f'from dreamerv2_tf.envs.worker import _worker_main; _worker_main({fd})'
        try:
            self._process = subprocess.Popen(
                [sys.executable, '-c', code], pass_fds=[fd], stdin=subprocess.DEVNULL,
                start_new_session=True)
        finally:
            child_end.close()  # only the child holds it now, so its death reads as EOF here
        self.pid = self._process.pid
        self._conn = parent_end
        self._spaces = None
        # The child must find the modules the parent found (tests, scripts next to the caller).
        self._conn.send(('init', (list(sys.path), payload)))

    def wait_ready(self):
        if self._spaces is None:
            self._spaces = self.receive()
        return self._spaces

    def send(self, method, arg=None):
        self._method = method
        try:
            self._conn.send((method, arg))
        except (OSError, ValueError):
            pass  # a dead worker is reported by receive(), with its exit status

    def receive(self):
        what = self._method
        try:
            while not self._conn.poll(_POLL_SECONDS):
                if self._process.poll() is not None:
                    break
            message = self._conn.recv()
        except (EOFError, OSError):
            raise EnvWorkerError(self._death_message(what)) from None
        kind, value = message
        if kind == 'error':
            raise EnvWorkerError(f'{self.name} (pid {self.pid}) raised during {what}:\n{value}')
        return value

    def _death_message(self, what):
        try:
            code = self._process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            status = 'closed its connection'
        elif code < 0:
            try:
                status = f'was killed by {signal.Signals(-code).name}'
            except ValueError:
                status = f'was killed by signal {-code}'
        else:
            status = f'exited with code {code}'
        return f'{self.name} (pid {self.pid}) {status} during {what}'

    def begin_close(self):
        self.send('close')

    def close(self):
        _stop_process(self._process, self._conn)


def _stop_process(process, conn):
    """Asks the worker to exit, then terminates and finally kills it; safe to call twice."""
    if process.poll() is None:
        try:
            conn.send(('close', None))
        except (OSError, ValueError):
            pass
        for stop in (None, process.terminate, process.kill):
            if stop is not None:
                stop()
            try:
                process.wait(timeout=_CLOSE_SECONDS if stop is None else 1.0)
                break
            except subprocess.TimeoutExpired:
                continue
    conn.close()


def _dumps(constructor, name):
    try:
        return pickle.dumps(constructor)
    except Exception as error:
        try:
            import cloudpickle
        except ImportError:
            cloudpickle = None
        if cloudpickle is not None:
            try:
                return cloudpickle.dumps(constructor)
            except Exception:
                pass
        raise TypeError(
            f'the constructor of {name} cannot be sent to a worker process ({error}); use a '
            'functools.partial of a module-level function, or envs_parallel thread') from error


def _call(env, method, arg):
    if method == 'step':
        return env.step(arg)
    if method == 'reset':
        return env.reset()
    raise ValueError(f'unknown env method {method!r}')


WORKERS = {'none': LocalWorker, 'thread': ThreadWorker, 'process': ProcessWorker}


class ProcessEnv:
    """One env in a worker process, used like a local env (obs_space, act_space, reset, step,
    close). `make_env` uses it for DMC so that MuJoCo never renders next to TensorFlow."""

    def __init__(self, constructor, name='env worker'):
        self._worker = ProcessWorker(constructor, name)
        self._finalizer = weakref.finalize(self, _stop_process, self._worker._process,
                                           self._worker._conn)
        try:
            self.obs_space, self.act_space = self._worker.wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def pid(self):
        return self._worker.pid

    def reset(self):
        self._worker.send('reset')
        return self._worker.receive()

    def step(self, action):
        self._worker.send('step', action)
        return self._worker.receive()

    def close(self):
        self._finalizer()


# Child side -------------------------------------------------------------------------------------

def _worker_main(fd):
    os.environ[WORKER_VARIABLE] = '1'
    # The parent handles Ctrl-C and closes us; the new session already keeps the terminal's
    # SIGINT away, this also covers a SIGINT sent to us directly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = connection.Connection(fd)
    env = None
    try:
        _, (path, payload) = conn.recv()
        sys.path[:0] = [p for p in path if p not in sys.path]
        try:
            env = pickle.loads(payload)()
            conn.send(('ok', (env.obs_space, env.act_space)))
        except Exception:
            conn.send(('error', traceback.format_exc()))
            return
        while True:
            method, arg = conn.recv()
            if method == 'close':
                break
            try:
                result = ('ok', _call(env, method, arg))
            except Exception:
                result = ('error', traceback.format_exc())
            try:
                conn.send(result)
            except (EOFError, OSError):
                raise
            except Exception:  # the result could not be pickled; nothing was sent yet
                conn.send(('error', traceback.format_exc()))
    except (EOFError, OSError):
        pass  # the parent is gone or closed us: nothing left to report to
    finally:
        try:
            if env is not None:
                env.close()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            # Skip atexit hooks: dm_control's complain about its already stopped render thread.
            os._exit(0)
