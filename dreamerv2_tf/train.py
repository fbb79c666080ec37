"""The training program (spec 6): collect with the policy, store episodes, train from replay,
evaluate, log and checkpoint.

    python -m dreamerv2_tf.train --configs defaults atari [--task atari_pong] [--logdir runs/pong]

The logdir defaults to runs/<task>/seed<seed>, so that runs of different seeds never share one.
Re-running the same command resumes from `<logdir>`: the latest checkpoint (networks, optimizer
state, counters, RNG) and every stored episode; a logdir recorded with another task or seed is
refused (exit code 2). SIGTERM and Ctrl-C save a checkpoint before exit. A run outlives whatever
reads its output: once that reader is gone (a closed pipe), the output is dropped and training
goes on.

The loop itself is `dreamerv2_tf.run.loop.Trainer`; this module builds its parts (agent, replays,
logger, envs) and handles signals, the command line and the config record.
"""

import contextlib
import json
import logging
import os
import pathlib
import signal
import sys
import time
import types

from dreamerv2_tf import config as configlib
from dreamerv2_tf.run.loop import ResumeError, StopRequested, Trainer


class PipeSafeStream:
    """A text stream whose reader may go away (the parent that piped our output died): the first
    write or flush that finds the pipe closed points the stream's descriptor at /dev/null, so
    that neither later writes nor the interpreter's last flush fail. Without it the broken pipe
    ended a run mid-step, without the checkpoint a stop saves."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop_output()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._drop_output()

    def _drop_output(self):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class SignalGuard:
    """Turns SIGTERM and SIGINT into a flag checked between env steps. A second Ctrl-C stops at
    once (KeyboardInterrupt)."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f'\nReceived {signal.Signals(signum).name}: saving a checkpoint, then exiting.',
              flush=True)

    def check(self):
        if self.signum is not None:
            raise StopRequested(self.signum)


# Set-up ------------------------------------------------------------------------------------------

def resolve_logdir(config):
    """`logdir` defaults to runs/<task>/seed<seed> (the original's /dev/null threw all output
    away); naming the seed keeps a second seed from resuming the first one's run."""
    logdir = config.logdir or f'runs/{config.task}/seed{config.seed}'
    return config.update(logdir=str(pathlib.Path(logdir).expanduser()))


class RunMismatch(ValueError):
    """The logdir holds a run of another task or seed."""


def check_same_run(config, logdir):
    """Resuming continues one run: another task or seed would mix two runs' episodes and
    weights, so it is refused (an unreadable config.yaml is left to `record_config`)."""
    path = logdir / 'config.yaml'
    if not path.exists():
        return
    try:
        previous = configlib.Config.load(path).flat
    except (configlib.ConfigError, OSError):
        return
    current = config.flat
    differ = [k for k in ('task', 'seed') if k in previous and previous[k] != current[k]]
    if differ:
        was = ', '.join(f'{k} {previous[k]}' for k in differ)
        now = ', '.join(f'{k} {current[k]}' for k in differ)
        raise RunMismatch(f'logdir {logdir} holds a run with {was}, not {now}; pass another '
                          f'--logdir (or leave it out: the default names task and seed)')


def record_config(config, logdir):
    """Writes config.yaml; on resume also appends what changed to config_changes.jsonl."""
    path = logdir / 'config.yaml'
    if path.exists():
        try:
            previous = configlib.Config.load(path).flat
        except (configlib.ConfigError, OSError):
            previous = {}
        changes = {k: [previous.get(k), v] for k, v in config.flat.items() if previous.get(k) != v}
        if changes:
            print('Config changes on resume: ' + ', '.join(
                f'{k}: {old} -> {new}' for k, (old, new) in changes.items()))
            with open(logdir / 'config_changes.jsonl', 'a') as f:
                record = {'time': time.strftime('%Y-%m-%dT%H:%M:%S'),
                          'changes': {k: [_plain(a), _plain(b)] for k, (a, b) in changes.items()}}
                f.write(json.dumps(record) + '\n')
    config.save(path)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def setup_tensorflow(config):
    import keras
    import tensorflow as tf
    # Seeds Python, NumPy, TensorFlow and Keras (weight initialisers).
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.precision == 16 and not tf.config.list_physical_devices('GPU'):
        print('Warning: no GPU found, and mixed_float16 is very slow on CPUs (minutes per '
              'full-size update); add --precision 32 to train in float32.', flush=True)


def make_outputs(logdir, pattern='.*'):
    from dreamerv2_tf.run import logger
    return [logger.TerminalOutput(pattern), logger.JSONLOutput(logdir),
            logger.TensorBoardOutput(logdir)]


def make_factories(config, outputs=None, strategy=None, chief=True):
    """The real agent, replays, logger and policy export, as `Trainer` takes them. Under a
    `tf.distribute` strategy the agent is built in its scope; a non-chief worker exports nothing
    and writes no TensorBoard events (the chief's hold the shared model's metrics)."""

    def make_agent(obs_space, act_space):
        from dreamerv2_tf.agent import Agent
        return Agent(config, obs_space, act_space, strategy=strategy)

    def make_replay(directory, mode):
        from dreamerv2_tf.run.replay import Replay
        capacity, replay = int(config.replay.capacity), config.replay
        if mode == 'train':
            return Replay(directory, capacity, replay.minlen, replay.maxlen,
                          replay.prioritize_ends, replay.ongoing, replay.delete_evicted,
                          seed=config.seed, max_bytes=replay.max_bytes)
        return Replay(directory, capacity // 10, config.dataset.length, config.dataset.length,
                      seed=config.seed + 1, max_bytes=replay.max_bytes / 10)

    def make_logger(logdir):
        from dreamerv2_tf.run import logger as loglib
        if outputs is None and not chief:
            return loglib.Logger([loglib.TerminalOutput(), loglib.JSONLOutput(logdir)],
                                 multiplier=config.action_repeat)
        return loglib.Logger(outputs or make_outputs(logdir), multiplier=config.action_repeat)

    def export(agent, step):
        from dreamerv2_tf.serving.policy_module import export_from_training
        export_from_training(agent, config, config.logdir, step)

    return {'make_agent': make_agent, 'make_replay': make_replay, 'make_logger': make_logger,
            'export': export if chief else None}


@contextlib.contextmanager
def messages_on_stdout():
    """Library code reports through `logging`; while a run goes on, the package's messages
    (the loop, replay, exports) are plain stdout lines: what the command always printed, and
    what scripts and tests read."""
    logger = logging.getLogger('dreamerv2_tf')
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter('%(message)s'))
    level, propagate = logger.level, logger.propagate
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    # Not also to the root logger: a handler there (some libraries add one) would print each
    # message a second time.
    logger.propagate = False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


# The entry point ---------------------------------------------------------------------------------

def train(env=None, config=None, outputs=None, eval_env=None):
    """Trains an agent; the package entry point `dreamerv2_tf.train(env, config)`.

    `env` is None (make `config.task`'s environments), or your own environment: a gymnasium env,
    an env in this package's protocol, or a function that makes one. `eval_env` likewise (by
    default evaluation uses a second env from `env` if it is a function, else none). `config` is a
    `Config` (default: the defaults block) or a dict of overrides. Returns a summary dict.
    Raises `RunMismatch` if the logdir holds a run of another task or seed."""
    if config is None:
        config = configlib.defaults()
    elif not isinstance(config, configlib.Config):
        config = configlib.defaults().update(config)
    config = resolve_logdir(config)
    logdir = pathlib.Path(config.logdir)
    check_same_run(config, logdir)
    # Data-parallel training (issue 10): the strategy comes first, before TensorFlow sets up
    # its devices; each of several workers runs on <logdir>/worker<i>, the chief (worker 0)
    # also owns <logdir>/checkpoints, exports and the model's TensorBoard events.
    strategy, run_dir, cluster = make_distribution(config, logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    record_config(config, logdir if cluster['chief'] else run_dir)
    train_envs, eval_envs = make_envs(config, env, eval_env)
    try:
        with SignalGuard() as guard, messages_on_stdout():
            setup_tensorflow(config)
            try:
                trainer = Trainer(config, run_dir, train_envs, eval_envs,
                                  check_stop=guard.check,
                                  chief=cluster['chief'], checkpoint_dir=logdir / 'checkpoints',
                                  agree_step=cluster['agree_step'],
                                  **make_factories(config, outputs, strategy, cluster['chief']))
            except ResumeError as e:
                raise SystemExit(f'error: {e}') from None
            try:
                return trainer.run()
            except StopRequested as stop:  # the checkpoint is saved; exit as the signal asks
                raise SystemExit(128 + stop.signum) from None
            except Exception as e:  # a collective that lost a worker: say which, exit 1
                from dreamerv2_tf.run.distribute import describe_failure
                lost = describe_failure(e) if config.distribute == 'multiworker' else None
                if lost is None:
                    raise
                raise SystemExit(f'error: {lost}') from None
    finally:
        train_envs.close()
        if eval_envs is not None:
            eval_envs.close()


def make_distribution(config, logdir):
    """(strategy or None, this process's run directory, {'chief', 'agree_step'}) for
    `config.distribute`; a bad setting exits with a one-line error (code 2)."""
    from dreamerv2_tf.run import distribute
    try:
        configlib.check_distribute(config)
        strategy = distribute.make_strategy(config)
        worker, _ = (distribute.cluster_info() if config.distribute == 'multiworker'
                     else (0, 1))
    except (distribute.DistributeError, configlib.ConfigError) as e:
        print(f'error: {e}', file=sys.stderr)
        raise SystemExit(2) from None
    if strategy is not None:
        print(f'Distribute {config.distribute}: {strategy.num_replicas_in_sync} replica(s) x '
              f'batch {config.dataset.batch} = global batch '
              f'{strategy.num_replicas_in_sync * config.dataset.batch}.', flush=True)
    if config.distribute != 'multiworker':
        return strategy, logdir, {'chief': True, 'agree_step': None}
    return strategy, logdir / f'worker{worker}', {
        'chief': worker == 0, 'agree_step': lambda step: distribute.agree_max(strategy, step)}


def make_envs(config, env, eval_env):
    """Batched train and eval envs: the config's task, or the user's `env` and `eval_env`."""
    from dreamerv2_tf import envs
    if env is None:
        train_envs = envs.make_batch_env(config, 'train')
        count = min(config.envs, config.eval_eps)
        return train_envs, (envs.make_batch_env(config, 'eval', count) if count else None)
    train_envs = envs.BatchEnv([lambda: _user_env(env, config)], 'none')
    if eval_env is None and _is_factory(env):
        eval_env = env
    evaluation = envs.BatchEnv([lambda: _user_env(eval_env, config)], 'none') if eval_env else None
    return train_envs, evaluation


def _is_factory(env):
    """A class or function that makes envs, as opposed to an env instance."""
    return isinstance(env, type) or (callable(env) and not hasattr(env, 'step'))


def _user_env(env, config):
    """A user's env in the protocol: gymnasium envs are wrapped like spec 14's `api.train`."""
    from dreamerv2_tf import envs
    if _is_factory(env):
        env = env()
    if not hasattr(env, 'obs_space'):  # a gymnasium env
        env = envs.wrap_gym_env(env, tuple(config.render_size), config.action_repeat, config.seed)
        env = envs.TimeLimit(env, config.time_limit)
    return env


def main(argv=None):
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafeStream(sys.stdout), PipeSafeStream(sys.stderr)
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:
        sys.stdout, sys.stderr = streams


def _main(argv):
    try:
        config = configlib.from_argv(argv)
    except configlib.HelpRequested as help_:
        print(__doc__.strip() + '\n\n' + str(help_))
        return 0
    except configlib.ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    from dreamerv2_tf import envs
    try:
        envs.parse_task(config.task)
    except ValueError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    try:
        train(config=config)
    except RunMismatch as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except Exception as e:
        if not _disk_full(e):
            raise
        # Episode files and checkpoints are written atomically, so nothing half-written stays.
        print(f'error: {_disk_full(e)}; free some space and rerun the same command to resume '
              f'from the last checkpoint', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('\nInterrupted.', file=sys.stderr)
        return 130
    return 0


def _disk_full(error):
    """One line describing a full disk if `error` (or what caused it) is one, else ''."""
    from dreamerv2_tf.run.checkpoint import DiskFullError, is_disk_full
    while error is not None:
        if isinstance(error, DiskFullError):
            return error.strerror
        if is_disk_full(error):
            where = f' while writing {error.filename}' if getattr(error, 'filename', None) else ''
            return f'no space left on the device{where}'
        error = error.__cause__ or error.__context__
    return ''


class _CallableModule(types.ModuleType):
    """Importing this submodule makes it the package attribute `dreamerv2_tf.train`, shadowing
    the function of that name; a callable module keeps `dreamerv2_tf.train(env, config)` working
    either way."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == '__main__':
    sys.exit(main())
