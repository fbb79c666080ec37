"""The driver (dreamerv2_tf/run/driver.py) against a deterministic fake `BatchEnv`: transition
alignment, resets of ended envs, episode callbacks, counting and the policy state."""

import numpy as np
import pytest

from dreamerv2_tf.envs.space import Space
from dreamerv2_tf.run.driver import Driver, RandomPolicy

ACTIONS = 3


class CounterBatchEnv:
    """N envs; env i has episodes of `lengths[i]` steps. Observation 'count' is the number of
    steps since the reset, 'got' the action index the env received for this step (-1 after a
    reset), reward = 10 * count + got. Logs every (env, 'reset' | action index) call."""

    def __init__(self, lengths):
        self.lengths = list(lengths)
        self.act_space = {'action': Space(np.float32, (ACTIONS,), 0, 1, discrete=True)}
        self.count = [None] * len(lengths)
        self.calls = []

    def __len__(self):
        return len(self.lengths)

    def step(self, actions, reset):
        assert len(reset) == len(self)
        rows = []
        for i in range(len(self)):
            if reset[i]:
                self.count[i] = 0
                got = -1
                self.calls.append((i, 'reset'))
            else:
                assert self.count[i] is not None and self.count[i] < self.lengths[i], \
                    'stepped an env that ended or never reset'
                action = np.asarray(actions['action'][i])
                assert action.shape == (ACTIONS,) and action.sum() == 1
                got = int(action.argmax())
                self.count[i] += 1
                self.calls.append((i, got))
            count = self.count[i]
            last = count == self.lengths[i]
            rows.append({'count': np.int64(count), 'got': np.int64(got),
                         'reward': np.float64(10 * count + max(got, 0)),
                         'is_first': reset[i], 'is_last': last, 'is_terminal': last})
        return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


class CountingPolicy:
    """Action index = (count + calls so far in this state) % ACTIONS; the state counts calls.
    Records the states it was given."""

    def __init__(self):
        self.seen_states = []

    def __call__(self, obs, state):
        self.seen_states.append(state)
        calls = 0 if state is None else state
        index = (np.asarray(obs['count']) + calls) % ACTIONS
        return {'action': np.eye(ACTIONS, dtype=np.float32)[index]}, calls + 1


def attach(driver):
    log = {'steps': [], 'resets': [], 'episodes': []}
    driver.on_step(lambda t, w: log['steps'].append((w, t)))
    driver.on_reset(lambda t, w: log['resets'].append((w, t)))
    driver.on_episode(lambda e, w: log['episodes'].append((w, e)))
    return log


def test_action_stored_with_an_observation_is_the_one_that_led_to_it():
    env = CounterBatchEnv([4, 6])
    driver = Driver(env)
    log = attach(driver)
    driver(CountingPolicy(), steps=7)
    for worker, transition in log['resets']:
        # The reset observation carries a zero action of the action space's dtype and shape.
        assert transition['count'] == 0 and transition['is_first']
        assert transition['action'].dtype == np.float32
        np.testing.assert_array_equal(transition['action'], np.zeros(ACTIONS, np.float32))
    assert sorted(w for w, _ in log['resets']) == [0, 1]
    assert log['steps']
    for worker, transition in log['steps']:
        # 'got' is what the env actually received to produce this observation.
        expected = np.eye(ACTIONS, dtype=np.float32)[transition['got']]
        np.testing.assert_array_equal(transition['action'], expected)
        assert transition['reward'] == 10 * transition['count'] + transition['got']
        assert not transition['is_first']
    # Replay storage dtypes: int64 -> int32, float64 -> float32, bool kept.
    _, transition = log['steps'][0]
    assert transition['count'].dtype == np.int32 and transition['reward'].dtype == np.float32
    assert transition['is_last'].dtype == bool


def test_ended_envs_are_reset_on_the_next_call_and_others_keep_stepping():
    env = CounterBatchEnv([2, 5])
    driver = Driver(env)
    driver(CountingPolicy(), steps=4)  # reset call, then 2 batch steps: env 0 ends at step 2
    assert env.count == [2, 2]
    env.calls.clear()
    driver(CountingPolicy(), steps=2)  # env 0 is reset (no step counted), env 1 steps
    assert (0, 'reset') == env.calls[0] and env.calls[1][0] == 1 and env.calls[1][1] != 'reset'
    assert env.count[0] >= 1 and env.count[1] >= 3
    # A reset is never issued for an env that did not end (besides the first call).
    resets = [i for i, what in env.calls if what == 'reset']
    assert resets == [0]


def test_episode_callbacks_get_whole_episodes_as_stacked_arrays():
    lengths = [3, 5]
    env = CounterBatchEnv(lengths)
    driver = Driver(env)
    log = attach(driver)
    driver(CountingPolicy(), episodes=5)
    assert len(log['episodes']) >= 5
    for worker, episode in log['episodes']:
        length = lengths[worker]
        assert set(episode) == {'count', 'got', 'reward', 'is_first', 'is_last', 'is_terminal',
                                'action'}
        for key, value in episode.items():
            assert len(value) == length + 1, key  # reset observation + one per step
        np.testing.assert_array_equal(episode['count'], np.arange(length + 1))
        np.testing.assert_array_equal(episode['is_first'], [True] + [False] * length)
        np.testing.assert_array_equal(episode['is_last'], [False] * length + [True])
        assert episode['action'].shape == (length + 1, ACTIONS)
        np.testing.assert_array_equal(episode['action'][0], 0)
        np.testing.assert_array_equal(episode['action'][1:].argmax(-1), episode['got'][1:])
        np.testing.assert_array_equal(episode['action'][1:].sum(-1), 1)
    # Episodes of one worker are consecutive and every step appears in exactly one episode.
    step_counts = {0: 0, 1: 0}
    for worker, _ in log['steps']:
        step_counts[worker] += 1
    for worker in (0, 1):
        finished = sum(1 for w, _ in log['episodes'] if w == worker)
        assert finished == step_counts[worker] // lengths[worker]


def test_steps_and_episodes_are_counted_over_envs_and_calls_stop_when_reached():
    env = CounterBatchEnv([4, 4])
    driver = Driver(env)
    log = attach(driver)
    driver(CountingPolicy(), steps=5)
    # Each batch step adds one step per env: 5 steps need 3 batch steps = 6 transitions.
    assert len(log['steps']) == 6 and not log['episodes']
    driver(CountingPolicy(), episodes=1)
    # Steps 4 of both envs happen in the same batch step: both episodes end together.
    assert len(log['episodes']) == 2 and len(log['steps']) == 8
    env2 = CounterBatchEnv([3])
    driver2 = Driver(env2)
    log2 = attach(driver2)
    driver2(CountingPolicy(), steps=7, episodes=1)
    # 7 steps with episodes of 3 (each reset costs a call but no step): 2 full episodes + 1 step.
    assert len(log2['steps']) == 7 and len(log2['episodes']) == 2
    assert [w for w, _ in log2['resets']] == [0, 0, 0]


def test_policy_state_is_kept_across_calls_until_reset():
    env = CounterBatchEnv([50])
    driver = Driver(env)
    policy = CountingPolicy()
    driver(policy, steps=3)
    driver(policy, steps=2)
    # The first call only resets (no policy call); then the state counts on across driver calls.
    assert policy.seen_states == [None, 1, 2, 3, 4]
    driver.reset()
    env.calls.clear()
    driver(policy, steps=2)
    assert policy.seen_states[5:] == [None, 1]
    assert env.calls[0] == (0, 'reset')  # reset() also resets every env on the next call
    # The state shaped the actions: action index = (count + calls) % ACTIONS.
    assert [what for _, what in env.calls[1:]] == [(0 + 0) % ACTIONS, (1 + 1) % ACTIONS]


def test_unfinished_episode_is_dropped_by_reset():
    env = CounterBatchEnv([4])
    driver = Driver(env)
    log = attach(driver)
    driver(CountingPolicy(), steps=2)
    driver.reset()
    driver(CountingPolicy(), steps=4)
    assert len(log['episodes']) == 1
    np.testing.assert_array_equal(log['episodes'][0][1]['count'], np.arange(5))


def test_random_policy_gives_one_hot_uniform_actions():
    space = {'action': Space(np.float32, (4,), 0, 1, discrete=True)}
    policy = RandomPolicy(space, seed=0)
    obs = {'is_first': np.zeros(5000, bool)}
    out, state = policy(obs)
    action = out['action']
    assert state is None and action.shape == (5000, 4)
    np.testing.assert_array_equal(action.sum(-1), 1)
    np.testing.assert_allclose(action.mean(0), 0.25, atol=0.03)
    box = {'action': Space(np.float32, (2,), -1, 1)}
    out, _ = RandomPolicy(box, seed=0)(obs)
    assert out['action'].min() >= -1 and out['action'].max() <= 1
    assert out['action'].std() == pytest.approx(2 / np.sqrt(12), rel=0.05)


def test_policy_is_not_asked_for_actions_when_every_env_ended():
    class Recording:
        def __init__(self):
            self.seen = []

        def __call__(self, obs, state):
            self.seen.append((obs['count'].tolist(), obs['is_last'].tolist()))
            return {'action': np.eye(ACTIONS, dtype=np.float32)[np.zeros(len(obs['count']),
                                                                          int)]}, state

    # One env with episodes of 3 steps, over two calls that stop where an episode ended.
    policy = Recording()
    driver = Driver(CounterBatchEnv([3]))
    driver(policy, steps=3)
    driver(policy, steps=3)
    # Counts 0, 1, 2 of each episode; never the last observation (count 3).
    assert policy.seen == [([0], [False]), ([1], [False]), ([2], [False])] * 2
    # Two envs: when one has ended and the other goes on, the call is made (the other needs an
    # action); when both have ended together, none is.
    policy = Recording()
    driver = Driver(CounterBatchEnv([2, 3]))
    driver(policy, steps=6)
    assert policy.seen == [([0, 0], [False, False]), ([1, 1], [False, False]),
                           ([2, 2], [True, False]), ([0, 3], [False, True])]
    policy = Recording()
    driver = Driver(CounterBatchEnv([2, 2]))
    driver(policy, steps=8)
    assert policy.seen == [([0, 0], [False, False]), ([1, 1], [False, False])] * 2
