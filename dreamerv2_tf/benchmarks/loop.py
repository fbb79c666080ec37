"""`bench loop`: environment frames per second of the real training loop after prefill, against
the bound that the train step alone sets, and where the loop's wall time goes.

The loop is `run.loop.Trainer` with the parts `python -m dreamerv2_tf.train` gives it
(`train.make_factories`, `train.make_envs`); the only differences are timing wrappers around the
agent's `train`, `policy` and `report`, the envs' `step`, the replays' `add_step`, `add_episode`
and `dataset`, the logger's methods, and a `Trainer` subclass that times `update`, `save`,
`evaluate` and the per-episode logging, and ends the run `--steps` agent steps after the warm-up.
Nothing the agent computes changes.

Time is charged to the innermost timed call that is running (so nested calls are never counted
twice: an env step during an evaluation is an env step, the evaluation row holds the rest of
`evaluate()`), and only inside the measured phase: from the end of the `--warmup`-th agent step
after prefill (and pretrain) to the end of the training-phase call that reaches the last
measured step. What no timed call covers (the driver's and the loop's own Python work) is
`other`. The bound is train_every x train_steps^-1 x action_repeat / (median seconds of one
agent update on a batch the loop drew), timed in the same process after the loop.
"""

import collections
import pathlib
import statistics
import sys
import tempfile
import time

# Rows of the breakdown: (title, labels charged to it, label whose calls are counted).
ROWS = (
    ('updates', ('train',), 'train'),
    ('policy calls (train and eval)', ('policy',), 'policy'),
    ('env steps', ('env', 'env_eval'), 'env_steps'),
    ('replay episode writes', ('replay',), 'replay'),
    ('dataset/sampling', ('dataset',), 'dataset'),
    ('logging/metrics', ('logging', 'metrics', 'episode_log', 'report', 'progress'), 'write'),
    ('checkpoints', ('checkpoint',), 'checkpoint'),
    ('evaluation', ('evaluation',), 'evaluation'),
)
WHAT_IS_COUNTED = {
    'updates': 'agent.train calls', 'policy calls (train and eval)': 'agent.policy calls',
    'env steps': 'train env steps (no resets)', 'replay episode writes': 'add_step/add_episode',
    'dataset/sampling': 'batches drawn', 'logging/metrics': 'logger writes',
    'checkpoints': 'saves', 'evaluation': 'evaluations'}


class SectionTimer:
    """Exclusive wall time per label: while a timed call runs, time goes to it alone, not to the
    call it is nested in. Counts only between `start()` and `stop()`."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.on = False
        self.stack = []
        self.mark = None
        self.seconds = collections.defaultdict(float)
        self.calls = collections.defaultdict(int)
        self.started = self.wall = None

    def _charge(self, now):
        if self.on and self.stack:
            self.seconds[self.stack[-1]] += now - self.mark
        self.mark = now

    def enter(self, label, inherit=False):
        """Opens a section; with `inherit`, one nested in another section counts as that one."""
        self._charge(self.clock())
        if inherit and self.stack:
            label = self.stack[-1]
        elif self.on:
            self.calls[label] += 1
        self.stack.append(label)

    def exit(self):
        self._charge(self.clock())
        self.stack.pop()

    def count(self, label, number=1):
        if self.on:
            self.calls[label] += number

    def section(self, label, inherit=False):
        return _Section(self, label, inherit)

    def wrap(self, function, label, inherit=False):
        """`function` timed as `label`."""
        def timed(*args, **kwargs):
            self.enter(label, inherit)
            try:
                return function(*args, **kwargs)
            finally:
                self.exit()
        return timed

    def start(self):
        now = self.clock()
        self.seconds.clear()
        self.calls.clear()
        self.started, self.mark, self.on = now, now, True

    def stop(self):
        now = self.clock()
        self._charge(now)
        self.on = False
        self.wall = now - self.started

    def rows(self):
        """[(title, seconds, calls)] of `ROWS` plus ('other', remainder, None)."""
        rows = [(title, sum(self.seconds[label] for label in labels), self.calls[counted])
                for title, labels, counted in ROWS]
        rows.append(('other', self.wall - sum(seconds for _, seconds, _ in rows), None))
        return rows


class _Section:
    __slots__ = ('timer', 'label', 'inherit')

    def __init__(self, timer, label, inherit):
        self.timer, self.label, self.inherit = timer, label, inherit

    def __enter__(self):
        self.timer.enter(self.label, self.inherit)

    def __exit__(self, *exc):
        self.timer.exit()


class _TimedDataset:
    """A dataset whose iterators time each `next()` as 'dataset'."""

    def __init__(self, dataset, timer):
        self.dataset, self.timer = dataset, timer

    def __iter__(self):
        return _TimedIterator(iter(self.dataset), self.timer)


class _TimedIterator:
    def __init__(self, iterator, timer):
        self.iterator, self.timer = iterator, timer

    def __iter__(self):
        return self

    def __next__(self):
        with self.timer.section('dataset'):
            return next(self.iterator)


class LoopBench:
    """Timing state shared by the wrappers and the Trainer subclass."""

    def __init__(self, steps, warmup):
        self.steps, self.warmup = steps, warmup
        self.timer = SectionTimer()
        self.start_step = self.end_step = self.target = None
        self.prefill_end = None  # (step, seconds since the run started)
        self.train_times = []  # inclusive seconds of each agent.train call in the window
        self.last_batch = self.last_state = None
        self.original_train = None
        self.outside = collections.defaultdict(list)  # label -> [(step, seconds)] outside

    # Factories ----------------------------------------------------------------------------------

    def wrap_factories(self, factories):
        timer = self.timer
        make_agent, make_replay, make_logger = (
            factories['make_agent'], factories['make_replay'], factories['make_logger'])

        def timed_agent(obs_space, act_space):
            agent = make_agent(obs_space, act_space)
            self.original_train = train = agent.train

            def timed_train(data, state):
                self.last_batch, self.last_state = data, state
                begin = time.perf_counter()
                timer.enter('train')
                try:
                    return train(data, state)
                finally:
                    timer.exit()
                    if timer.on:
                        self.train_times.append(time.perf_counter() - begin)

            agent.train = timed_train
            agent.policy = timer.wrap(agent.policy, 'policy')
            agent.report = timer.wrap(agent.report, 'report', inherit=True)
            return agent

        def timed_replay(directory, mode):
            replay = make_replay(directory, mode)
            replay.add_step = timer.wrap(replay.add_step, 'replay')
            replay.add_episode = timer.wrap(replay.add_episode, 'replay')
            dataset = replay.dataset
            replay.dataset = lambda *a, **k: _TimedDataset(dataset(*a, **k), timer)
            return replay

        def timed_logger(logdir):
            logger = make_logger(logdir)
            write = logger.write

            def timed_write(*args, **kwargs):
                timer.count('write')
                with timer.section('logging'):
                    return write(*args, **kwargs)

            logger.write = timed_write
            for name in ('add', 'scalar', 'image', 'video', 'rate'):
                setattr(logger, name, timer.wrap(getattr(logger, name), 'logging'))
            return logger

        return {**factories, 'make_agent': timed_agent, 'make_replay': timed_replay,
                'make_logger': timed_logger}

    def wrap_envs(self, envs, label):
        import numpy as np
        step = envs.step
        timer = self.timer

        def timed_step(action, reset):
            with timer.section(label):
                obs = step(action, reset)
            stepped = int(len(envs) - np.count_nonzero(np.asarray(reset, bool)))
            if label == 'env':
                timer.count('env_steps', stepped)
                timer.count('env_resets', len(envs) - stepped)
            else:
                timer.count('eval_env_steps', stepped)
            return obs

        envs.step = timed_step
        return envs


def make_trainer_class():
    from dreamerv2_tf.run.loop import Trainer

    class TimedTrainer(Trainer):
        """The real loop, with its phases and own work timed (see the module docstring)."""

        def __init__(self, bench, *args, **kwargs):
            self.bench = bench
            self.run_started = time.perf_counter()
            super().__init__(*args, **kwargs)
            self.progress.update = bench.timer.wrap(self.progress.update, 'progress')

        def make_datasets(self):
            bench = self.bench
            super().make_datasets()
            step = self.step
            bench.prefill_end = (step, time.perf_counter() - self.run_started)
            bench.start_step = step + bench.warmup
            bench.target = bench.start_step + bench.steps
            # The run ends `steps` agent steps after the warm-up (the loop's progress line
            # shows the ETA to it).
            self.config = self.config.update(steps=bench.target)
            print(f'bench loop: prefill done at step {step:,} in {bench.prefill_end[1]:.1f} s; '
                  f'{self.config.pretrain if not self.restored else 0} pretrain update(s), '
                  f'{bench.warmup} warm-up steps, then {bench.steps:,} measured steps.',
                  flush=True)

        def _train_step(self, transition, worker):
            super()._train_step(transition, worker)
            bench = self.bench
            if not bench.timer.on and bench.end_step is None and self.step == bench.start_step:
                bench.timer.start()

        def _timed(self, label, method, *args):
            begin = time.perf_counter()
            with self.bench.timer.section(label):
                result = method(*args)
            if not self.bench.timer.on:
                self.bench.outside[label].append((self.step, time.perf_counter() - begin))
            return result

        def save(self, reason):
            bench = self.bench
            if bench.timer.on and self.step >= bench.target:
                bench.timer.stop()
                bench.end_step = self.step
            return self._timed('checkpoint', super().save, reason)

        def evaluate(self):
            return self._timed('evaluation', super().evaluate)

        def update(self):
            with self.bench.timer.section('metrics'):  # the rest of update(): metric floats
                super().update()

        def per_episode(self, episode, mode):
            with self.bench.timer.section('episode_log'):
                super().per_episode(episode, mode)

        def _metric(self, name, values):
            with self.bench.timer.section('metrics'):
                return super()._metric(name, values)

    return TimedTrainer


def time_updates(bench, count):
    """Median seconds of one agent update on the loop's last batch (one untimed call first)."""
    times = []
    state = bench.last_state
    for index in range(count + 1):
        begin = time.perf_counter()
        state, metrics = bench.original_train(bench.last_batch, state)
        float(metrics['model_loss'])  # wait for the result
        if index:
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def run(config, args):
    """Runs the loop benchmark for `config` (with its flags applied); returns the exit code."""
    from dreamerv2_tf import train as trainlib

    if config.distribute != 'none':
        print('error: bench loop measures one process without --distribute', file=sys.stderr)
        return 2
    warmup = int(config.train_every) if args.warmup is None else args.warmup
    if args.steps < 1 or warmup < 1 or args.bound_updates < 1:
        print('error: --steps, --warmup and --bound-updates must be at least 1', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix='bench_loop_') as scratch:
        logdir = pathlib.Path(config.logdir or scratch).expanduser()
        config = config.update(logdir=str(logdir))
        try:
            trainlib.check_same_run(config, logdir)
        except trainlib.RunMismatch as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
        logdir.mkdir(parents=True, exist_ok=True)
        trainlib.record_config(config, logdir)
        bench = LoopBench(args.steps, warmup)
        # Until prefill ends, the loop's progress line counts towards its estimated end.
        config = config.update(steps=int(config.prefill) + warmup + args.steps)
        train_envs, eval_envs = trainlib.make_envs(config, None, None)
        try:
            bench.wrap_envs(train_envs, 'env')
            if eval_envs is not None:
                bench.wrap_envs(eval_envs, 'env_eval')
            with trainlib.messages_on_stdout():
                trainlib.setup_tensorflow(config)
                factories = bench.wrap_factories(trainlib.make_factories(config))
                trainer = make_trainer_class()(bench, config, logdir, train_envs, eval_envs,
                                               **factories)
                print(f'bench loop: logdir {logdir}; prefill to step {int(config.prefill):,}.',
                      flush=True)
                trainer.run()
        finally:
            train_envs.close()
            if eval_envs is not None:
                eval_envs.close()
        if bench.end_step is None:
            print('error: the run ended before the measured phase did', file=sys.stderr)
            return 1
        print(f'bench loop: timing {args.bound_updates} updates for the bound.', flush=True)
        update_seconds = time_updates(bench, args.bound_updates)
    report(config, args, bench, update_seconds)
    return 0


def report(config, args, bench, update_seconds):
    timer = bench.timer
    steps = bench.end_step - bench.start_step
    repeat = int(config.action_repeat)
    frames = steps * repeat
    loop_fps = frames / timer.wall
    per_update = int(config.train_every) / int(config.train_steps)  # agent steps per update
    bound_fps = per_update * repeat / update_seconds
    updates = timer.calls['train']
    print()
    print(f"Training loop ({' '.join(args.configs)}, task {config.task}, batch "
          f'{config.dataset.batch} x {config.dataset.length}, train_every {config.train_every}, '
          f'action_repeat {repeat}): {steps:,} agent steps measured from step '
          f'{bench.start_step:,} (prefill ended at {bench.prefill_end[0]:,}).')
    print(f'loop: {frames:,} frames in {timer.wall:.3f} s = {loop_fps:.3f} frames/s '
          f'({updates} updates, {updates / timer.wall:.3f} updates/s)')
    in_loop = (f', {statistics.median(bench.train_times):.6f} s in the loop'
               if bench.train_times else '')
    print(f'bound: {per_update:g} agent steps x {repeat} frames per update / '
          f'{update_seconds:.6f} s (median of {args.bound_updates} updates{in_loop}) = '
          f'{bound_fps:.3f} frames/s')
    print(f'ratio loop / bound: {loop_fps / bound_fps:.4f}')
    print()
    print(f"{'where the measured time went':<32}{'seconds':>11}{'share':>9}{'calls':>9}  counted")
    for title, seconds, calls in timer.rows():
        counted = WHAT_IS_COUNTED.get(title, 'the loop\'s own work (remainder)')
        calls_text = '' if calls is None else str(calls)
        print(f'{title:<32}{seconds:>11.3f}{100 * seconds / timer.wall:>8.1f}%{calls_text:>9}'
              f'  {counted}')
    print(f"{'total (measured wall time)':<32}{timer.wall:>11.3f}{100.0:>8.1f}%")
    print(f"also in the measured phase: {timer.calls['env_resets']} train env resets, "
          f"{timer.calls['eval_env_steps']} eval env steps (no resets).")
    evaluations, saves = bench.outside['evaluation'], bench.outside['checkpoint']
    if evaluations and saves and config.eval_every:
        # The loop evaluates and saves once per `eval_every` steps; a short measurement may hold
        # none, so the last ones outside it are added at that rate.
        extra_seconds = evaluations[-1][1] + saves[-1][1]
        amortized = timer.wall + extra_seconds * steps / float(config.eval_every)
        print(f'with one evaluation and checkpoint ({extra_seconds:.2f} s, measured after the '
              f'phase) every eval_every {config.eval_every:g} steps: {frames / amortized:.3f} '
              f'frames/s')
