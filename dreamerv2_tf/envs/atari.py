"""Atari 2600 through `ale_py.ALEInterface` with the preprocessing of spec section 3.3.

Built on the emulator directly rather than gymnasium's wrappers so that every step of the
preprocessing is visible here: sticky actions (0.25), 1..30 no-ops after a reset, the action
repeated `action_repeat` frames with rewards summed, the pixel-wise max of the last two frames
(objects that flicker between frames stay visible), grayscale, resize with area interpolation,
the minimal action set, and no episode end on life loss. The 27,000-step time limit is the
`TimeLimit` wrapper's job.
"""

import threading

import numpy as np

from dreamerv2_tf.envs.space import Space
from dreamerv2_tf.envs.wrappers import base_obs_space, flags


class Atari:

    # Loading ROMs from several threads at once is not something ALE promises to support.
    _LOAD_LOCK = threading.Lock()

    def __init__(self, rom, action_repeat=4, size=(64, 64), grayscale=True, noops=30,
                 sticky=0.25, seed=None):
        import ale_py
        from ale_py import roms

        path = roms.get_rom_path(rom)
        if path is None:
            raise ValueError(f"ALE has no bundled ROM named '{rom}'")
        self._repeat = int(action_repeat)
        if self._repeat < 1:
            raise ValueError(f'action_repeat must be at least 1, got {action_repeat}')
        self._size = tuple(int(x) for x in size)
        self._grayscale = bool(grayscale)
        self._noops = int(noops)
        if seed is None:
            seed = np.random.SeedSequence().generate_state(1)[0]
        seed = int(seed) % 2 ** 32
        # Separate streams for the emulator's sticky actions and our no-op counts.
        self._rng = np.random.default_rng([seed, 1])
        with self._LOAD_LOCK:
            ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner per env
            self._ale = ale_py.ALEInterface()
            self._ale.setInt('random_seed', seed % 2 ** 31)
            self._ale.setFloat('repeat_action_probability', float(sticky))
            self._ale.setInt('frame_skip', 1)  # we repeat and pool frames ourselves
            self._ale.setInt('max_num_frames_per_episode', 0)  # time limits belong to TimeLimit
            self._ale.loadROM(str(path))
        self._actions = list(self._ale.getMinimalActionSet())
        height, width = self._ale.getScreenDims()
        channels = 1 if self._grayscale else 3
        # The two most recent raw frames, written in turn, for the max-pool.
        self._frames = np.zeros((2, height, width) + (() if self._grayscale else (3,)), np.uint8)
        self._latest = 0
        self.noops_done = 0  # no-ops of the latest reset (lets tests replay the emulator)
        self._image_shape = self._size + (channels,)

    @property
    def obs_space(self):
        return {
            'image': Space(np.uint8, self._image_shape, 0, 255),
            'ram': Space(np.uint8, (128,), 0, 255),
            **base_obs_space(),
        }

    @property
    def act_space(self):
        return {'action': Space(np.int32, (), 0, len(self._actions) - 1)}

    def reset(self):
        self._ale.reset_game()
        self._grab()
        self._grab()  # both pooled frames from this episode, also when no no-op follows
        self.noops_done = int(self._rng.integers(1, self._noops + 1)) if self._noops > 0 else 0
        for _ in range(self.noops_done):
            self._ale.act(self._actions[0])  # the minimal action set starts with NOOP
            if self._ale.game_over():
                self._ale.reset_game()
            self._grab()
        return self._obs(flags(is_first=True))

    def step(self, action):
        index = int(action['action'])
        if not 0 <= index < len(self._actions):
            raise ValueError(f'Atari action {index} outside 0..{len(self._actions) - 1}')
        reward = 0.0
        over = False
        for repeat in range(self._repeat):
            reward += self._ale.act(self._actions[index])
            over = self._ale.game_over()
            # Only the frames that get pooled are read: the last two, or the final one when the
            # game ends early (pooled with the latest frame read before it).
            if over or repeat >= self._repeat - 2:
                self._grab()
            if over:
                break
        return self._obs(flags(reward, is_last=over, is_terminal=over))

    def close(self):
        self._ale = None

    def _grab(self):
        self._latest = 1 - self._latest
        if self._grayscale:
            self._ale.getScreenGrayscale(self._frames[self._latest])
        else:
            self._ale.getScreenRGB(self._frames[self._latest])

    def _obs(self, obs):
        import cv2
        if self._repeat > 1:
            pooled = np.maximum(self._frames[0], self._frames[1])
        else:  # without a frame skip there is no pair of frames within one step to pool
            pooled = self._frames[self._latest]
        image = cv2.resize(pooled, self._size[::-1], interpolation=cv2.INTER_AREA)
        obs['image'] = image.reshape(self._image_shape)
        obs['ram'] = self._ale.getRAM()
        return obs
