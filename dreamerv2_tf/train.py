"""The training program (spec 6): collect with the policy, store episodes, train from replay,
evaluate, log and checkpoint.

    python -m dreamerv2_tf.train --configs defaults atari [--task atari_pong] [--logdir runs/pong]

Re-running the same command resumes from `<logdir>`: the latest checkpoint (networks, optimizer
state, counters, RNG) and every stored episode. SIGTERM and Ctrl-C save a checkpoint before exit.
"""

import json
import pathlib
import re
import signal
import sys
import time
import types

import numpy as np

from dreamerv2_tf import config as configlib

# Policy videos are capped so that one long episode (Atari allows 27,000 steps) cannot put
# megabytes of GIF into the event file at every evaluation.
MAX_VIDEO_FRAMES = 1000


class Every:
    """True on the first call, then whenever `step` is at least `every` past the last trigger."""

    def __init__(self, every):
        self.every = every
        self.last = None

    def __call__(self, step):
        if not self.every:
            return False
        if self.last is None:
            self.last = step
            return True
        if step >= self.last + self.every:
            self.last += self.every * ((step - self.last) // self.every)
            return True
        return False


def episode_scalars(episode, mode, config):
    """`sum_/mean_/max_<mode>_<key>` of the episode keys matching `log_keys_sum/mean/max`
    (max: over time, then the mean of the remaining dimensions)."""
    reductions = {'sum': np.sum, 'mean': np.mean, 'max': lambda v: v.max(0).mean()}
    scalars = {}
    for key, value in episode.items():
        for kind, reduce in reductions.items():
            if re.search(config[f'log_keys_{kind}'], key):  # converted only when matched
                scalars[f'{kind}_{mode}_{key}'] = float(reduce(value.astype(np.float64)))
    return scalars


class StopRequested(Exception):
    """Raised between env steps after SIGTERM or SIGINT so that the run can save and exit."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    """`logdir` defaults to runs/<task> (the original's /dev/null threw all output away)."""
    logdir = config.logdir or f'runs/{config.task}'
    return config.update(logdir=str(pathlib.Path(logdir).expanduser()))


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


def make_outputs(logdir, pattern='.*'):
    from dreamerv2_tf.run import logger
    return [logger.TerminalOutput(pattern), logger.JSONLOutput(logdir),
            logger.TensorBoardOutput(logdir)]


# The loop ----------------------------------------------------------------------------------------

def train(env=None, config=None, outputs=None, eval_env=None):
    """Trains an agent; the package entry point `dreamerv2_tf.train(env, config)`.

    `env` is None (make `config.task`'s environments), or your own environment: a gymnasium env,
    an env in this package's protocol, or a function that makes one. `eval_env` likewise (by
    default evaluation uses a second env from `env` if it is a function, else none). `config` is a
    `Config` (default: the defaults block) or a dict of overrides. Returns a summary dict."""
    if config is None:
        config = configlib.defaults()
    elif not isinstance(config, configlib.Config):
        config = configlib.defaults().update(config)
    config = resolve_logdir(config)
    logdir = pathlib.Path(config.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    record_config(config, logdir)
    train_envs, eval_envs = make_envs(config, env, eval_env)
    try:
        with SignalGuard() as guard:
            setup_tensorflow(config)
            return Trainer(config, logdir, train_envs, eval_envs, outputs, guard).run()
    finally:
        train_envs.close()
        if eval_envs is not None:
            eval_envs.close()


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


class Trainer:
    """One training run: replay, agent, checkpoint, drivers and logging wired together."""

    def __init__(self, config, logdir, train_envs, eval_envs, outputs, guard):
        import tensorflow as tf
        from dreamerv2_tf.run import logger as loglib
        from dreamerv2_tf.agent import Agent
        from dreamerv2_tf.run.checkpoint import Checkpoint
        from dreamerv2_tf.run.driver import Driver
        from dreamerv2_tf.run.replay import Replay

        self.config, self.logdir, self.guard = config, logdir, guard
        capacity = int(config.replay.capacity)
        replay = config.replay
        self.train_replay = Replay(logdir / 'train_episodes', capacity, replay.minlen,
                                   replay.maxlen, replay.prioritize_ends, replay.ongoing,
                                   replay.delete_evicted, seed=config.seed)
        self.eval_replay = Replay(logdir / 'eval_episodes', capacity // 10, config.dataset.length,
                                  config.dataset.length, seed=config.seed + 1)
        self.logger = loglib.Logger(outputs or make_outputs(logdir),
                                    multiplier=config.action_repeat)
        self.progress = loglib.ProgressLine(multiplier=config.action_repeat)
        if config.precision == 16 and not tf.config.list_physical_devices('GPU'):
            print('Warning: no GPU found, and mixed_float16 is very slow on CPUs (minutes per '
                  'full-size update); add --precision 32 to train in float32.', flush=True)

        self.agent = Agent(config, train_envs.obs_space, train_envs.act_space)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name='updates')
        self.checkpoint = Checkpoint(logdir / 'checkpoints', self.agent,
                                     {'updates': self.updates})
        try:
            self.restored = self.checkpoint.restore()
        except (tf.errors.OpError, ValueError) as e:
            raise SystemExit(f'error: cannot resume from {logdir / "checkpoints"}: '
                             f'{str(e).splitlines()[0]}') from None
        self.step = int(self.agent.step.numpy())  # agent steps; logged x action_repeat
        if self.restored:
            print(f'Resumed from {self.restored} at step {self.step} '
                  f'({int(self.updates.numpy())} updates).')
        encoder = self.agent.wm.encoder
        print(f'Logdir {logdir}; task {config.task}; {len(train_envs)} train env(s); '
              f'observations {sorted(train_envs.obs_space)}; encoder CNN {encoder.cnn_keys}, '
              f'MLP {encoder.mlp_keys}.', flush=True)

        self.last_return = None
        self.metrics = {}  # name -> values since the last log write
        self.should_log = Every(config.log_every)
        self.should_train = Every(config.train_every)
        self.should_video = Every(config.eval_every)
        self.should_export = Every(config.export_every)
        self.eval_video_due = True
        self.last_save = time.monotonic()

        self.train_driver = Driver(train_envs)
        self.train_driver.on_reset(self.train_replay.add_step)
        self.train_driver.on_step(self._on_train_step)
        self.train_driver.on_episode(lambda episode, worker: self.per_episode(episode, 'train'))
        self.eval_driver = None
        if eval_envs is not None:
            self.eval_driver = Driver(eval_envs)
            self.eval_driver.on_step(lambda transition, worker: guard.check())
            self.eval_driver.on_episode(self._on_eval_episode)

    # Callbacks ----------------------------------------------------------------------------------

    def _on_train_step(self, transition, worker):
        self.step += 1
        self.train_replay.add_step(transition, worker)
        self.guard.check()

    def _on_eval_episode(self, episode, worker):
        self.eval_replay.add_episode(episode)  # first, so that the logged stats include it
        self.per_episode(episode, 'eval')

    def per_episode(self, episode, mode):
        from dreamerv2_tf.run import logger as loglib
        config, logger = self.config, self.logger
        length = len(episode['reward']) - 1
        score = float(episode['reward'].astype(np.float64).sum())
        loglib.break_progress_line()
        print(f'{mode.title()} episode has {length} steps and return {score:.1f}.', flush=True)
        if mode == 'train':
            self.last_return = score
        logger.scalar(f'{mode}_return', score)
        logger.scalar(f'{mode}_length', length)
        logger.add(episode_scalars(episode, mode, config))
        if mode == 'train':
            video = self.should_video(self.step)
        else:
            video, self.eval_video_due = self.eval_video_due, False  # one per evaluation
        if video:
            for key in config.log_keys_video:
                if key in episode:
                    logger.video(f'{mode}_policy_{key}', episode[key][:MAX_VIDEO_FRAMES])
        replay = self.train_replay if mode == 'train' else self.eval_replay
        logger.add(replay.stats, prefix=mode)
        logger.write(self.step)

    def _train_step(self, transition, worker):
        """Runs after every train env step: updates, logging, periodic saves and exports."""
        config, step = self.config, self.step
        if self.should_train(step):
            for _ in range(config.train_steps):
                self.update()
        if self.should_log(step):
            for name, values in self.metrics.items():
                self.logger.scalar(name, float(np.mean(np.asarray(values, np.float64))))
            self.metrics.clear()
            self.logger.add(self.agent.report(next(self.report_dataset)), prefix='train')
            self.logger.rate('updates_per_sec', int(self.updates.numpy()))
            self.logger.write(step, fps=True)
        if config.save_every and time.monotonic() - self.last_save > 60 * config.save_every:
            self.save('periodic')
        if self.should_export(step):
            from dreamerv2_tf.serving.policy_module import export_from_training
            export_from_training(self.agent, config, self.logdir, step)
        self.progress.update(step, config.steps, ret=self.last_return,
                             updates=int(self.updates.numpy()))

    # Policies and updates -----------------------------------------------------------------------

    def train_policy(self, obs, state):
        if state is None:
            state = self.agent.initial_policy_state(len(obs['is_first']))
        # expl_until counts frames; 0 means the exploration behaviour always collects.
        until = self.config.expl_until // self.config.action_repeat
        explore = not self.config.expl_until or self.step < until
        return self.agent.policy(obs, state, 'explore' if explore else 'train')

    def eval_policy(self, obs, state):
        if state is None:
            state = self.agent.initial_policy_state(len(obs['is_first']))
        return self.agent.policy(obs, state, 'eval')

    def update(self):
        self.agent.step.assign(self.step)
        self.train_state, metrics = self.agent.train(next(self.train_dataset), self.train_state)
        self.updates.assign_add(1)
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append(float(value))

    def save(self, reason):
        self.agent.step.assign(self.step)
        path = self.checkpoint.save()
        self.last_save = time.monotonic()
        print(f'Saved checkpoint {path} ({reason}, step {self.step}).', flush=True)

    # Phases -------------------------------------------------------------------------------------

    def run(self):
        try:
            self.prefill()
            self.make_datasets()
            if not self.restored:
                for _ in range(self.config.pretrain):
                    self.update()
                    self.guard.check()
            self.train_driver.on_step(self._train_step)
            self.should_export(self.step)  # the first export comes `export_every` steps later
            while self.step < self.config.steps:
                self.evaluate()
                remaining = int(self.config.steps - self.step)
                self.train_driver(self.train_policy, steps=min(int(self.config.eval_every),
                                                               remaining))
                self.save('end of training phase')
            if self.last_eval_step != self.step:
                self.evaluate()  # the final policy is scored too (the original stopped before)
        except StopRequested as stop:
            self.save(f'on {stop}')
            self.logger.write(self.step)
            raise SystemExit(128 + stop.signum) from None
        finally:
            self.progress.close()
            self.logger.close()
            # Release the tf.data generators now: left to interpreter shutdown they fail noisily.
            self.train_dataset = self.report_dataset = self.eval_dataset = None
        print(f'Training finished at step {self.step}.', flush=True)
        return {'step': self.step, 'updates': int(self.updates.numpy()),
                'logdir': str(self.logdir)}

    def prefill(self):
        """Random-policy steps up to `prefill` (at least one episode). The partial episode it
        leaves behind is dropped, not glued onto the next one (spec 17.8)."""
        from dreamerv2_tf.run.driver import RandomPolicy
        policy = RandomPolicy(self.train_driver.env.act_space, seed=self.config.seed)
        steps = max(0, self.config.prefill - self.step)
        if steps or not self.train_replay.stats['loaded_episodes']:
            print(f'Prefill: {steps} random steps (at least one episode).', flush=True)
            self.train_driver(policy, steps=steps, episodes=1)
            self.train_driver.reset()
            self.train_replay.clear_ongoing()

    train_dataset = report_dataset = eval_dataset = None
    last_eval_step = None

    def dataset(self, replay):
        # Deterministic runs sample each batch on request: prefetching samples at moments that
        # depend on thread timing while episodes are being added.
        prefetch = 0 if self.config.deterministic else 5
        return iter(replay.dataset(self.config.dataset.batch, self.config.dataset.length,
                                   prefetch))

    def make_datasets(self):
        self.train_dataset = self.dataset(self.train_replay)
        self.report_dataset = self.dataset(self.train_replay)
        self.train_state = self.agent.initial_train_state(self.config.dataset.batch)

    def evaluate(self):
        """Eval episodes with the current weights, then the open-loop report on eval data. The
        eval dataset starts once an eval episode long enough to sample is stored (the original
        ran a random eval episode for it, and crashed without one, spec 17.18)."""
        self.logger.write(self.step)
        self.last_eval_step = self.step
        if self.eval_driver is None:
            return
        self.eval_driver.reset()  # fresh episodes with the current weights
        self.eval_video_due = True
        self.eval_driver(self.eval_policy, episodes=self.config.eval_eps)
        if self.eval_dataset is None and self.eval_replay.stats['loaded_episodes']:
            self.eval_dataset = self.dataset(self.eval_replay)
        if self.eval_dataset is not None:
            self.logger.add(self.agent.report(next(self.eval_dataset)), prefix='eval')
            self.logger.write(self.step)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
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
    except KeyboardInterrupt:
        print('\nInterrupted.', file=sys.stderr)
        return 130
    return 0


class _CallableModule(types.ModuleType):
    """Importing this submodule makes it the package attribute `dreamerv2_tf.train`, shadowing
    the function of that name; a callable module keeps `dreamerv2_tf.train(env, config)` working
    either way."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == '__main__':
    sys.exit(main())
