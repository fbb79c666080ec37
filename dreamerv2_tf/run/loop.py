"""The training loop (spec 6) as a library piece: collect with the policy, store episodes, train
from replay, evaluate, log, checkpoint and export.

`Trainer` builds none of its parts itself; it is given factories, so that the command
(`dreamerv2_tf.train`) wires in the real ones and tests wire in stubs:

    make_agent(obs_space, act_space) -> agent   # policy, train, report, initial_*_state, step
    make_replay(directory, mode) -> Replay      # mode 'train' or 'eval'
    make_logger(logdir) -> run.logger.Logger
    train_envs, eval_envs                       # BatchEnvs (eval_envs may be None)
    check_stop() -> None                        # raises StopRequested between env steps
    export(agent, step) -> None                 # every `export_every` steps (None: no exports)

Data-parallel runs (issue 10) give an agent built with a `tf.distribute` strategy: the loop feeds
it through `agent.distribute` (one input pipeline per worker). On several workers each worker
runs its own Trainer on `<logdir>/worker<i>`; `chief=False` workers restore from the chief's
`checkpoint_dir` but never write it, and `agree_step(step)` (the largest step over workers)
aligns the step counters after the prefill, so that every worker trains at the same steps and
calls the collective train step equally often.

Steps (agent steps; logged x `action_repeat`) and updates are counted in Python; the agent's
`step` variable and the `updates` variable, which the checkpoint stores, are written before
whatever reads them (an update's schedules, a checkpoint, an export, the end of `run`), not at
every env step: an eager assign and reads per step were a fixed cost of every step. Messages go
to this module's `logging` logger; the command shows them on stdout.
"""

import contextlib
import logging
import pathlib
import re
import signal
import time

import numpy as np

log = logging.getLogger(__name__)

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
    """Raised by `check_stop` between env steps (the command does so after SIGTERM or SIGINT);
    the loop saves a checkpoint and lets it propagate."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ResumeError(RuntimeError):
    """The logdir's checkpoint cannot be restored into this agent."""


class Trainer:
    """One training run on `logdir`, resumed from its latest checkpoint if there is one."""

    def __init__(self, config, logdir, train_envs, eval_envs, make_agent, make_replay,
                 make_logger, check_stop=None, export=None, chief=True, checkpoint_dir=None,
                 agree_step=None):
        import tensorflow as tf
        from dreamerv2_tf.run import logger as loglib
        from dreamerv2_tf.run.checkpoint import Checkpoint
        from dreamerv2_tf.run.driver import Driver

        self.config, self.logdir = config, pathlib.Path(logdir)
        self.check_stop = check_stop or (lambda: None)
        self.export = export  # given, not imported: serving sits above run/ in the layering
        self.chief, self.agree_step = chief, agree_step  # several workers (issue 10)
        self.train_replay = make_replay(self.logdir / 'train_episodes', 'train')
        self.eval_replay = make_replay(self.logdir / 'eval_episodes', 'eval')
        self.logger = make_logger(self.logdir)
        self.progress = loglib.ProgressLine(multiplier=config.action_repeat)
        self.agent = make_agent(train_envs.obs_space, train_envs.act_space)

        self.should_log = Every(config.log_every)
        self.should_train = Every(config.train_every)
        self.should_video = Every(config.eval_every)
        self.should_export = Every(config.export_every)
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name='updates')
        # The train schedule's last trigger (-1: none yet) is saved so that a resumed run trains
        # at the steps the uninterrupted run would have, with no extra or missing update.
        self.train_last = tf.Variable(-1, dtype=tf.int64, trainable=False, name='train_last')
        # Likewise the log schedule: each log write draws a report batch and random numbers.
        self.log_last = tf.Variable(-1, dtype=tf.int64, trainable=False, name='log_last')
        # Saved with the checkpoint: each replay's newest episode file (episodes written after it
        # are set aside on resume) and each dataset's sampler state. '?' marks "not in the
        # checkpoint" (an older version wrote it): then nothing is set aside or restored.
        self.replay_marks = {name: tf.Variable('?', dtype=tf.string, trainable=False)
                             for name in ('train_episodes', 'eval_episodes')}
        self.sampler_states = {name: tf.Variable('?', dtype=tf.string, trainable=False)
                               for name in ('train', 'report', 'eval')}
        self.samplers = {}
        # The RSSM state carried from one train batch to the next (spec 9.9) is saved too: it
        # reaches the next batch wherever a chunk starts in the middle of a sequence. The
        # original restarted it from zeros on resume. Any shape, so a changed batch size can
        # still resume (and then starts from the initial state). Under a tf.distribute strategy
        # the state lives on the replicas and restarts from the initial state on resume.
        self.saved_train_state = {}
        initial = None
        if not getattr(self.agent, 'strategy', None):
            initial = self.agent.initial_train_state(config.dataset.batch)
        if isinstance(initial, dict):
            self.saved_train_state = {
                k: tf.Variable(v, trainable=False, shape=tf.TensorShape(None))
                for k, v in initial.items()}
        directory = pathlib.Path(checkpoint_dir) if checkpoint_dir else self.logdir / 'checkpoints'
        self.checkpoint = Checkpoint(directory, self.agent, {
            'updates': self.updates, 'train_last': self.train_last, 'log_last': self.log_last,
            **{f'replay_{k}': v for k, v in self.replay_marks.items()},
            **{f'sampler_{k}': v for k, v in self.sampler_states.items()},
            **{f'train_state_{k}': v for k, v in self.saved_train_state.items()}})
        try:
            self.restored = self.checkpoint.restore()
        except (tf.errors.OpError, ValueError) as e:
            raise ResumeError(f'cannot resume from {directory}: {str(e).splitlines()[0]}') from None
        self._read_counters()
        if self.restored:
            for every, last in ((self.should_train, self.train_last),
                                (self.should_log, self.log_last)):
                if int(last.numpy()) >= 0:
                    every.last = int(last.numpy())
            log.info(f'Resumed from {self.restored} at step {self.step} '
                     f'({int(self.updates.numpy())} updates).')
        self._set_aside_newer_episodes()
        log.info(f'Logdir {self.logdir}; task {config.task}; {len(train_envs)} train env(s); '
                 f'observations {sorted(train_envs.obs_space)}{_encoder_keys(self.agent)}.')

        self.last_return = None
        self.metrics = {}  # name -> values since the last log write
        self.eval_video_due = True
        self.last_save = time.monotonic()

        self.train_driver = Driver(train_envs)
        self.train_driver.on_reset(self.train_replay.add_step)
        self.train_driver.on_step(self._on_train_step)
        self.train_driver.on_episode(lambda episode, worker: self.per_episode(episode, 'train'))
        self.eval_driver = None
        if eval_envs is not None:
            self.eval_driver = Driver(eval_envs)
            self.eval_driver.on_step(lambda transition, worker: self.check_stop())
            self.eval_driver.on_episode(self._on_eval_episode)

    def _set_aside_newer_episodes(self):
        """Episodes written after the checkpoint (between it and a crash; all of them when there
        is no checkpoint, as the run starts over) move to `after_checkpoint/<folder>/`: the
        replays then hold what they held at the checkpoint, so the resumed run samples the same
        data and never stores an episode it collects again twice. Nothing is deleted."""
        for name, replay in (('train_episodes', self.train_replay),
                             ('eval_episodes', self.eval_replay)):
            mark = self.replay_marks[name].numpy().decode() if self.restored else ''
            if mark != '?':
                replay.set_aside_after(mark or None, self.logdir / 'after_checkpoint' / name)

    @property
    def step(self):
        """Agent steps so far (the agent's step variable once `_write_counters` ran)."""
        return self._step

    def _read_counters(self):
        self._step = int(self.agent.step.numpy())
        self._updates = int(self.updates.numpy())

    def _write_counters(self):
        """Brings the step and update variables up to the loop's counts."""
        self.agent.step.assign(self._step)
        self.updates.assign(self._updates)

    # Callbacks ----------------------------------------------------------------------------------

    def _on_train_step(self, transition, worker):
        self._step += 1
        self.train_replay.add_step(transition, worker)
        self.check_stop()

    def _on_eval_episode(self, episode, worker):
        self.eval_replay.add_episode(episode)  # first, so that the logged stats include it
        self.per_episode(episode, 'eval')

    def per_episode(self, episode, mode):
        from dreamerv2_tf.run import logger as loglib
        config, logger, step = self.config, self.logger, self.step
        length = len(episode['reward']) - 1
        score = float(episode['reward'].astype(np.float64).sum())
        loglib.break_progress_line()
        log.info(f'{mode.title()} episode has {length} steps and return {score:.1f}.')
        if mode == 'train':
            self.last_return = score
        logger.scalar(f'{mode}_return', score)
        logger.scalar(f'{mode}_length', length)
        logger.add(episode_scalars(episode, mode, config))
        if mode == 'train':
            video = self.should_video(step)
        else:
            video, self.eval_video_due = self.eval_video_due, False  # one per evaluation
        if video:
            for key in config.log_keys_video:
                if key in episode:
                    logger.video(f'{mode}_policy_{key}', episode[key][:MAX_VIDEO_FRAMES])
        replay = self.train_replay if mode == 'train' else self.eval_replay
        logger.add(replay.stats, prefix=mode)
        logger.write(step)

    def _train_step(self, transition, worker):
        """Runs after every train env step: updates, logging, periodic saves and exports."""
        config, step = self.config, self.step
        if self.should_train(step):
            for _ in range(config.train_steps):
                self.update()
        if self.should_log(step):
            for name, values in self.metrics.items():
                self.logger.scalar(name, self._metric(name, values))
            self.metrics.clear()
            self.logger.add(self.agent.report(next(self.report_dataset)), prefix='train')
            self.logger.rate('updates_per_sec', self._updates)
            self.logger.scalar('updates', self._updates)  # running total
            self.logger.write(step, fps=True)
        if config.save_every and time.monotonic() - self.last_save > 60 * config.save_every:
            self.save('periodic')
        if self.should_export(step) and self.export is not None:
            self._write_counters()
            self.export(self.agent, step)
        self.progress.update(step, config.steps, ret=self.last_return, updates=self._updates)

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
        self._write_counters()  # the schedules read the step
        self.train_state, metrics = self.agent.train(next(self.train_dataset), self.train_state)
        self._updates += 1
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append(float(value))

    def _metric(self, name, values):
        # Skipped optimizer steps (non-finite gradients under mixed precision) are counted over
        # the log period; everything else is averaged.
        reduce = np.sum if name.endswith('_skipped_steps') else np.mean
        return float(reduce(np.asarray(values, np.float64)))

    def save(self, reason):
        if not self.chief:  # one writer: the chief's checkpoint holds the (identical) weights
            return
        for every, last in ((self.should_train, self.train_last),
                            (self.should_log, self.log_last)):
            last.assign(-1 if every.last is None else int(every.last))
        for name, replay in (('train_episodes', self.train_replay),
                             ('eval_episodes', self.eval_replay)):
            self.replay_marks[name].assign(replay.newest or '')
        for name, sampler in self.samplers.items():
            self.sampler_states[name].assign(sampler.state())
        if self.saved_train_state and isinstance(self.train_state, dict):
            for key, variable in self.saved_train_state.items():
                variable.assign(self.train_state[key])
        self._write_counters()
        path = self.checkpoint.save()
        self.last_save = time.monotonic()
        log.info(f'Saved checkpoint {path} ({reason}, step {self.step}).')

    # Phases -------------------------------------------------------------------------------------

    def run(self):
        """Prefill, pretrain, then training phases of `eval_every` steps each preceded by an
        evaluation, and a final evaluation. Returns a summary dict. A `StopRequested` from
        `check_stop` saves a checkpoint, then propagates."""
        try:
            self.prefill()
            if self.agree_step is not None:  # workers' prefills end at different episode ends
                self._step = self.agree_step(self.step)
            self.make_datasets()
            if not self.restored:
                for _ in range(self.config.pretrain):
                    self.update()
                    self.check_stop()
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
            raise
        finally:
            # Each step runs even if one before it fails (that error still propagates).
            with contextlib.ExitStack() as cleanup:
                cleanup.callback(self._release_datasets)
                cleanup.callback(self.logger.close)
                cleanup.callback(self.progress.close)
                self._write_counters()
        log.info(f'Training finished at step {self.step}.')
        if self.agree_step is not None:
            from dreamerv2_tf.run.distribute import weights_digest
            log.info(f'Weights digest {weights_digest(self.agent)} (the same on every worker).')
        return {'step': self.step, 'updates': self._updates,
                'logdir': str(self.logdir)}

    def _release_datasets(self):
        # Release the tf.data generators now: left to interpreter shutdown they fail noisily.
        self.train_dataset = self.report_dataset = self.eval_dataset = None

    def prefill(self):
        """Random-policy steps up to `prefill` (at least one episode). The partial episode it
        leaves behind is dropped, not glued onto the next one (spec 17.8)."""
        from dreamerv2_tf.run.driver import RandomPolicy
        policy = RandomPolicy(self.train_driver.env.act_space, seed=self.config.seed)
        steps = max(0, self.config.prefill - self.step)
        if steps or not self.train_replay.stats['loaded_episodes']:
            log.info(f'Prefill: {steps} random steps (at least one episode).')
            self.train_driver(policy, steps=steps, episodes=1)
            self.train_driver.reset()
            self.train_replay.clear_ongoing()

    train_dataset = report_dataset = eval_dataset = train_state = None
    last_eval_step = None

    def dataset(self, replay, name):
        # Deterministic runs sample each batch on request: prefetching samples at moments that
        # depend on thread timing while episodes are being added.
        prefetch = 0 if self.config.deterministic else 5
        state = self.sampler_states[name].numpy().decode()
        sampler = replay.sampler(self.config.dataset.length,
                                 state if self.restored and state not in ('?', '') else None)
        self.samplers[name] = sampler
        return iter(replay.dataset(self.config.dataset.batch, self.config.dataset.length,
                                   prefetch, sampler=sampler))

    def make_datasets(self):
        distribute = getattr(self.agent, 'distribute', None)
        if getattr(self.agent, 'strategy', None) and distribute:
            # Batches of `dataset.batch` per replica, dealt to this worker's replicas.
            prefetch = 0 if self.config.deterministic else 5
            self.train_dataset = iter(distribute(lambda: self.train_replay.dataset(
                self.config.dataset.batch, self.config.dataset.length, prefetch)))
        else:
            self.train_dataset = self.dataset(self.train_replay, 'train')
        self.report_dataset = self.dataset(self.train_replay, 'report')
        self.train_state = self.agent.initial_train_state(self.config.dataset.batch)
        if self.restored and self.saved_train_state:
            import tensorflow as tf
            saved = {k: tf.convert_to_tensor(v) for k, v in self.saved_train_state.items()}
            if all(saved[k].shape == v.shape for k, v in self.train_state.items()):
                self.train_state = saved  # the initial state unless the checkpoint had one

    def evaluate(self):
        """Eval episodes with the current weights, then the open-loop report on eval data. The
        eval dataset starts once an eval episode long enough to sample is stored (the original
        ran a random eval episode for it, and crashed without one, spec 17.18)."""
        step = self.step
        self.logger.write(step)
        self.last_eval_step = step
        if self.eval_driver is None:
            return
        self.eval_driver.reset()  # fresh episodes with the current weights
        self.eval_video_due = True
        self.eval_driver(self.eval_policy, episodes=self.config.eval_eps)
        if self.eval_dataset is None and self.eval_replay.stats['loaded_episodes']:
            self.eval_dataset = self.dataset(self.eval_replay, 'eval')
        if self.eval_dataset is not None:
            self.logger.add(self.agent.report(next(self.eval_dataset)), prefix='eval')
            self.logger.write(self.step)


def _encoder_keys(agent):
    """The encoder's CNN and MLP keys, for agents that have a world model."""
    encoder = getattr(getattr(agent, 'wm', None), 'encoder', None)
    if encoder is None:
        return ''
    return f'; encoder CNN {encoder.cnn_keys}, MLP {encoder.mlp_keys}'
