import pytest

from dreamerv2_tf import config as configlib
from dreamerv2_tf.config import Config, ConfigError


def test_defaults_have_the_spec_types():
    config = configlib.defaults()
    # YAML 1.2 numbers: 1e8 is a float, 10000 an int (spec 2.1); types are fixed by defaults.
    assert config.steps == 1e8 and isinstance(config.steps, float)
    assert config.prefill == 10000 and isinstance(config.prefill, int)
    assert config.replay.capacity == 2e6 and isinstance(config.replay.capacity, float)
    assert config.model_opt.clip == 100 and isinstance(config.model_opt.clip, int)
    assert config.render_size == (64, 64)
    assert config.grad_heads == ('decoder', 'reward', 'discount')
    assert config['rssm.deter'] == config.rssm.deter == 1024


def test_blocks_compose_left_to_right():
    atari = configlib.compose(['defaults', 'atari'])
    assert atari.rssm.deter == 600 and atari.rssm.hidden == 600 and atari.rssm.stoch == 32
    assert atari.encoder.cnn_keys == 'image' and atari.encoder.mlp_keys == '$^'
    assert atari.model_opt.lr == 2e-4 and atari.actor_opt.lr == 4e-5
    assert atari.loss_scales.kl == 0.1 and atari.loss_scales.discount == 5.0
    assert configlib.compose(['atari']) == atari  # defaults is always the base
    # Later blocks win: debug after atari overrides atari's values.
    both = configlib.compose(['atari', 'debug'])
    assert both.prefill == 100 and both.time_limit == 100 and both.rssm.deter == 600


def test_regex_block_key_sets_every_norm():
    crafter = configlib.compose(['crafter'])
    norms = {k: v for k, v in crafter.flat.items() if k.endswith('.norm')}
    assert len(norms) == 8 and set(norms.values()) == {'layer'}


def test_dmc_blocks_differ_only_in_key_regexes():
    vision = configlib.compose(['dmc_vision']).flat
    proprio = configlib.compose(['dmc_proprio']).flat
    differ = {k for k in vision if vision[k] != proprio[k]}
    assert differ == {'encoder.mlp_keys', 'encoder.cnn_keys', 'decoder.mlp_keys',
                      'decoder.cnn_keys'}


def test_flags_dotted_regex_tuples_and_typing():
    config = configlib.compose(['atari'])
    config = configlib.parse_flags(config, [
        '--model_opt.lr', '3e-4', r'--.*\.norm', 'layer', '--render_size', '96,96',
        '--log_keys_video', 'image', 'ram', '--prefill=1e5', '--jit', 'xla',
        '--atari_grayscale', 'False'])
    assert config.model_opt.lr == 3e-4
    assert config.rssm.norm == config.actor.norm == config.encoder.norm == 'layer'
    assert config.render_size == (96, 96)
    assert config.log_keys_video == ('image', 'ram')
    assert config.prefill == 100000 and isinstance(config.prefill, int)
    assert config.jit == 'xla' and config.atari_grayscale is False


@pytest.mark.parametrize('flags, message', [
    (['--model_opt.lrr', '1'], "unknown flag '--model_opt.lrr' (did you mean 'model_opt.lr'"),
    (['--precision', '17'], "'precision' must be one of 16, 32"),
    (['--envs_parallel', 'proces'], "did you mean 'process'"),
    (['--prefill', '1.5'], "'prefill' takes an integer"),
    (['--atari_grayscale', 'yes'], "'atari_grayscale' takes True or False"),
    (['--seed'], "flag '--seed' has no value"),
    (['--seed', '1', '2'], "flag '--seed' takes one value"),
    ([r'--.*\.nrm', 'layer'], 'matches no config key'),
    (['stray'], "value 'stray' is not preceded by a --flag"),
    (['--actor_ent', 'lin(1,2)'], "'lin(1,2)' is not a number or a schedule"),
])
def test_bad_flags_give_one_line_errors(flags, message):
    with pytest.raises(ConfigError) as error:
        configlib.parse_flags(configlib.defaults(), flags)
    assert message in str(error.value)
    assert '\n' not in str(error.value)


def test_schedule_strings_are_accepted_for_schedule_keys():
    config = configlib.parse_flags(configlib.defaults(), [
        '--actor_ent', 'linear(3e-3, 3e-4, 2.5e6)', '--actor_grad_mix', 'linear(0.1,0,2.5e6)'])
    assert config.actor_ent == 'linear(3e-3,3e-4,2.5e6)'
    assert config.actor_grad_mix == 'linear(0.1,0,2.5e6)'
    # Other float keys still reject strings.
    with pytest.raises(ConfigError, match="'discount' takes a number"):
        configlib.parse_flags(configlib.defaults(), ['--discount', 'linear(1,2,3)'])


def test_unknown_block_lists_blocks_and_user_yaml_block(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config block 'atary' \(did you mean 'atari'"):
        configlib.compose(['atary'])
    path = tmp_path / 'mine.yaml'
    path.write_text('task: atari_breakout\nrssm: {deter: 123}\n')
    config = configlib.compose(['atari', str(path)])
    assert config.task == 'atari_breakout' and config.rssm.deter == 123
    path.write_text('rssm: {detr: 1}\n')
    with pytest.raises(ConfigError, match="unknown config key 'rssm.detr'"):
        configlib.compose([str(path)])


def test_from_argv_and_help():
    config = configlib.from_argv(['--configs', 'defaults', 'atari', '--seed', '3'])
    assert config.seed == 3 and config.task == 'atari_pong'
    with pytest.raises(configlib.HelpRequested) as help_:
        configlib.from_argv(['--configs', 'atari', '--help'])
    text = str(help_.value)
    assert '--rssm.deter 600 (int)  size of the deterministic (GRU) state' in text
    # Every key of the defaults has a description.
    assert set(configlib.descriptions()) == set(configlib.defaults().flat)


def test_save_and_load_round_trip(tmp_path):
    config = configlib.compose(['atari', 'tiny'])
    config.save(tmp_path / 'config.yaml')
    assert Config.load(tmp_path / 'config.yaml') == config
    config.save(tmp_path / 'config.json')
    assert Config.load(tmp_path / 'config.json') == config


def test_config_is_immutable():
    config = configlib.defaults()
    with pytest.raises(AttributeError):
        config.seed = 1
    assert config.update(seed=1).seed == 1 and config.seed == 0
