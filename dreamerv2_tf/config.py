"""Configuration: YAML blocks composed left to right, typed by the `defaults` block, overridden by
command-line flags with dotted (`--model_opt.lr 3e-4`) or regex (`--.*\\.norm layer`) keys.

A `Config` is immutable: `update()` returns a new one. Every error is a `ConfigError` whose message
is one line naming the offending key and the closest valid names, so commands can print it and
exit with status 2.
"""

import difflib
import io
import json
import math
import pathlib
import re

from dreamerv2_tf import schedules

_KEY = re.compile(r'^[A-Za-z0-9_.\-]+$')  # anything else in a key makes it a regex pattern

# Float-typed keys that also accept a schedule string (spec 9.7; the original rejected these).
SCHEDULE_KEYS = ('actor_ent', 'actor_grad_mix')

# Allowed values of the run's own keys (matched as a full regex against the flat key). The agent's
# keys (activations, optimizers, distributions, ...) come from the agent's table, see `choices()`.
CHOICES = (
    (r'envs_parallel', ('none', 'thread', 'process')),
    (r'precision', (16, 32, 'auto')),  # auto: mixed_float16 on a GPU, float32 on a CPU
    (r'jit', (True, False, 'xla')),
    (r'distribute', ('none', 'mirrored', 'multiworker')),
)


def choices():
    """Every (key regex, allowed values) pair: the run's keys, then the agent's, whose names are
    owned by the modules that implement them (`dreamerv2_tf.agent.choices` is TF-free)."""
    from dreamerv2_tf.agent import choices as agent_choices
    return CHOICES + agent_choices.config_choices()


class ConfigError(ValueError):
    """A bad config key, value or block; the message is one line meant for the user."""


def _closest(word, candidates, n=3):
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=n, cutoff=0.5)
    return f" (did you mean {', '.join(repr(m) for m in matches)}?)" if matches else ''


def is_pattern(key):
    return not _KEY.match(key)


def _compile(pattern):
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"key pattern '{pattern}' is not a valid regex: {e}") from None


class Config:
    """Immutable nested mapping; `config.rssm.deter` and `config['rssm.deter']` both work."""

    def __init__(self, mapping=None, **kwargs):
        flat = {}
        for key, value in _flatten({**(mapping or {}), **kwargs}).items():
            if is_pattern(key):
                raise ConfigError(f"pattern key '{key}' cannot be stored in a config")
            flat[key] = _normalize(key, value)
        object.__setattr__(self, '_flat', flat)
        object.__setattr__(self, '_nested', _nest(flat))

    # Access -------------------------------------------------------------------------------------

    @property
    def flat(self):
        return dict(self._flat)

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'{_closest(name, self._nested)}") from None

    def __getitem__(self, key):
        if key in self._flat:
            return self._flat[key]
        prefix = key + '.'
        sub = {k[len(prefix):]: v for k, v in self._flat.items() if k.startswith(prefix)}
        if not sub:
            raise KeyError(key)
        return Config(_nest(sub))

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        return key in self._flat or any(k.startswith(key + '.') for k in self._flat)

    def __iter__(self):
        return iter(self._nested)

    def __len__(self):
        return len(self._nested)

    def keys(self):
        return self._nested.keys()

    def items(self):
        return ((k, self[k]) for k in self._nested)

    def __setattr__(self, name, value):
        raise AttributeError('Config is immutable; use config.update({...})')

    def __eq__(self, other):
        return isinstance(other, Config) and self._flat == other._flat

    def __repr__(self):
        return 'Config(' + ', '.join(f'{k}={v!r}' for k, v in self._flat.items()) + ')'

    def to_dict(self):
        """Nested plain dict with lists instead of tuples (for YAML and JSON)."""
        def plain(value):
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return list(value) if isinstance(value, tuple) else value
        return plain(self._nested)

    # Updates ------------------------------------------------------------------------------------

    def update(self, *mappings, **kwargs):
        """New config with the given values; keys may be dotted or regex patterns (prefix match).

        Each value is converted to the type of the value it replaces."""
        flat = dict(self._flat)
        for mapping in (*mappings, kwargs):
            for key, value in _flatten(mapping).items():
                if is_pattern(key):
                    regex = _compile(key)
                    targets = [k for k in flat if regex.match(k)]
                    if not targets:
                        raise ConfigError(f"pattern '{key}' matches no config key")
                else:
                    if key not in flat:
                        raise ConfigError(f"unknown config key '{key}'{_closest(key, flat)}")
                    targets = [key]
                for target in targets:
                    flat[target] = convert(target, flat[target], value)
        return Config(_nest(flat))

    def save(self, path):
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = dump_yaml(self.to_dict()) if path.suffix in ('.yaml', '.yml') else json.dumps(
            self.to_dict(), indent=2)
        tmp = path.with_name(path.name + '.tmp')
        tmp.write_text(text)
        tmp.replace(path)

    @classmethod
    def load(cls, path):
        path = pathlib.Path(path)
        text = path.read_text()
        return cls(json.loads(text) if path.suffix == '.json' else load_yaml(text, path))


# Typing -----------------------------------------------------------------------------------------

def _type_name(value):
    return {bool: 'bool', int: 'int', float: 'float', str: 'str', tuple: 'list'}.get(
        type(value), type(value).__name__)


def _parse_bool(key, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ('true', 'false'):
        return value.lower() == 'true'
    raise ConfigError(f"config key '{key}' takes True or False, got {value!r}")


def _parse_int(key, value):
    if isinstance(value, bool):
        raise ConfigError(f"config key '{key}' takes an integer, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key '{key}' takes an integer, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ConfigError(f"config key '{key}' takes an integer, got {str(value)[:40]!r}")
    return int(number)


def _parse_float(key, value):
    if isinstance(value, bool):
        raise ConfigError(f"config key '{key}' takes a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    if key in SCHEDULE_KEYS:
        try:
            schedules.parse(value)
        except ValueError as e:
            raise ConfigError(f"config key '{key}': {e}") from None
        return str(value).replace(' ', '')
    raise ConfigError(f"config key '{key}' takes a number, got {value!r}")


def _parse_scalar(key, old, value):
    if key == 'jit':  # True / False / xla
        if isinstance(value, str) and value.lower() == 'xla':
            return 'xla'
        return _parse_bool(key, value)
    if key == 'precision':  # 16 / 32 / auto
        if isinstance(value, str) and value.lower() == 'auto':
            return 'auto'
        return _parse_int(key, value)
    if isinstance(old, bool):
        return _parse_bool(key, value)
    if isinstance(old, int):
        return _parse_int(key, value)
    if isinstance(old, float) or (key in SCHEDULE_KEYS and isinstance(old, str)):
        return _parse_float(key, value)
    if isinstance(old, str):
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise ConfigError(f"config key '{key}' takes a string, got {value!r}")
        return str(value)
    return value


def convert(key, old, value):
    """Converts `value` to the type of `old` (the current value of `key`) and checks choices."""
    if isinstance(old, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        # `--render_size 96,96` and `--render_size 96 96` are the same.
        value = [part for v in value for part in (v.split(',') if isinstance(v, str) else [v])
                 if part != '']
        if not value:
            raise ConfigError(f"config key '{key}' takes a non-empty list")
        new = tuple(_parse_scalar(key, old[0], v) for v in value)
    else:
        if isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' takes one {_type_name(old)}, got a list {value!r}")
        new = _parse_scalar(key, old, value)
    if re.search(r'(^|\.)(\w+_)?keys(_\w+)?$', key) and isinstance(new, str):
        _compile(new)  # regexes of observation keys (encoder.mlp_keys, log_keys_sum, ...)
    _check_choice(key, new)
    return new


def _check_choice(key, value):
    for pattern, allowed in choices():
        if re.fullmatch(pattern, key):
            if value not in allowed:
                names = ', '.join(str(c) for c in allowed)
                raise ConfigError(
                    f"config key '{key}' must be one of {names}; got {value!r}{_closest(value, allowed)}")
            return


def _normalize(key, value):
    """Values are JSON-like: lists become tuples of one scalar type; no empty lists."""
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        if not value:
            raise ConfigError(f"config key '{key}' is an empty list")
        if any(isinstance(v, (dict, list, tuple)) for v in value):
            raise ConfigError(f"config key '{key}' holds a nested list")
        if len({type(v) for v in value}) > 1:
            raise ConfigError(f"config key '{key}' mixes types in {list(value)}")
    elif value is not None and not isinstance(value, (bool, int, float, str)):
        raise ConfigError(f"config key '{key}' has unsupported value {value!r}")
    return value


def _flatten(mapping, prefix=''):
    flat = {}
    for key, value in dict(mapping).items():
        key = str(key)
        if prefix:
            # A dot joining into or out of a pattern must itself be a regex dot.
            join = r'\.' if is_pattern(prefix) or is_pattern(key) else '.'
            key = prefix + join + key
        if isinstance(value, dict):
            flat.update(_flatten(value, key))
        elif isinstance(value, Config):
            flat.update(_flatten(value.to_dict(), key))
        else:
            flat[key] = value
    return flat


def _nest(flat):
    nested = {}
    for key, value in flat.items():
        node = nested
        *parents, leaf = key.split('.')
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


# YAML blocks ------------------------------------------------------------------------------------

def _yaml():
    from ruamel.yaml import YAML
    return YAML(typ='safe', pure=True)  # safe: plain data only, YAML 1.2 (1e8 is a float)


def load_yaml(text, source='<string>'):
    try:
        data = _yaml().load(text)
    except Exception as e:  # ruamel raises many error types; the user needs the file and line
        raise ConfigError(f"cannot parse YAML in {source}: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def dump_yaml(data):
    stream = io.StringIO()
    yaml = _yaml()
    yaml.default_flow_style = False
    yaml.dump(data, stream)
    return stream.getvalue()


def configs_dir():
    """Folder of the YAML blocks: `configs/` of a source checkout, or its installed copy."""
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here.parent / 'configs', here / 'configs'):
        if (candidate / 'defaults.yaml').exists():
            return candidate
    raise ConfigError(f'cannot find the configs folder next to {here}')


def block_names():
    return sorted(p.stem for p in configs_dir().glob('*.yaml'))


def load_block(name):
    """A named block from configs/, or a path to the user's own YAML file."""
    path = pathlib.Path(name).expanduser()
    if path.suffix in ('.yaml', '.yml') or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file '{name}' does not exist")
        try:
            text = path.read_text(encoding='utf-8')
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file '{name}': {e}") from None
        return load_yaml(text, path)
    path = configs_dir() / f'{name}.yaml'
    if not path.is_file():
        names = block_names()
        raise ConfigError(
            f"unknown config block '{name}'{_closest(name, names)}; blocks: {', '.join(names)}"
            ' (or a path to a .yaml file)')
    return load_yaml(path.read_text(), path)


def defaults():
    return Config(load_block('defaults'))


def compose(names):
    """defaults updated by each named block in order (later blocks win)."""
    config = defaults()
    for name in names:
        if name != 'defaults':
            config = config.update(load_block(name))
    return config


# Command line -----------------------------------------------------------------------------------

def parse_flags(config, argv):
    """Applies `--key value [value ...]` / `--key=value` flags; keys may be dotted or regex."""
    updates = []  # ordered (key, values) pairs
    for token in argv:
        if token.startswith('--') and len(token) > 2:
            key, eq, value = token[2:].partition('=')
            updates.append((key, [value] if eq else []))
        elif not updates:
            raise ConfigError(f"value '{token}' is not preceded by a --flag")
        else:
            updates[-1][1].append(token)
    for key, values in updates:
        if not values:
            raise ConfigError(f"flag '--{key}' has no value")
        targets = _flag_targets(config, key)
        # Tuple keys take several values; scalars exactly one.
        new = {}
        for target in targets:
            old = config[target]
            if not isinstance(old, tuple) and len(values) > 1:
                raise ConfigError(f"flag '--{key}' takes one value, got {' '.join(values)}")
            new[target] = values if isinstance(old, tuple) else values[0]
        config = config.update(new)
    return config


def _flag_targets(config, key):
    flat = config.flat
    if is_pattern(key):
        regex = _compile(key)
        targets = [k for k in flat if regex.match(k)]
        if not targets:
            raise ConfigError(f"flag pattern '--{key}' matches no config key")
        return targets
    if key not in flat:
        raise ConfigError(f"unknown flag '--{key}'{_closest(key, flat)}")
    return [key]


def descriptions():
    """{flat key: one-line help} from the comments in configs/defaults.yaml."""
    result, stack = {}, []
    for line in (configs_dir() / 'defaults.yaml').read_text().splitlines():
        match = re.match(r'^( *)([A-Za-z0-9_]+):(.*?)(?:\s+#\s*(.*))?$', line)
        if not match or line.lstrip().startswith('#'):
            continue
        indent = len(match.group(1)) // 2
        stack = stack[:indent] + [match.group(2)]
        if match.group(4):
            result['.'.join(stack)] = match.group(4)
    return result


def help_text(config, program='python -m dreamerv2_tf.train'):
    docs = descriptions()
    lines = [
        f'usage: {program} [--configs BLOCK [BLOCK ...]] [--KEY VALUE ...]',
        '',
        'Blocks compose left to right on top of defaults; a block may be a path to a YAML file.',
        f"Blocks: {', '.join(block_names())}.",
        r'Keys may be dotted (--model_opt.lr 3e-4) or regex patterns (--.*\.norm layer).',
        '',
        'Keys (current value, type):',
    ]
    for key, value in config.flat.items():
        shown = ' '.join(str(v) for v in value) if isinstance(value, tuple) else value
        lines.append(f'  --{key} {shown} ({_type_name(value)})  {docs.get(key, "")}'.rstrip())
    return '\n'.join(lines)


def check_distribute(config):
    """The `distribute` keys that only make sense together (raises ConfigError)."""
    for key in ('distribute_timeout', 'distribute_collective_timeout'):
        if config[key] <= 0:
            raise ConfigError(f"config key '{key}' must be positive seconds, got {config[key]}")
    if config.distribute_devices and config.distribute != 'mirrored':
        raise ConfigError(f"config key 'distribute_devices' needs --distribute mirrored "
                          f"(distribute is {config.distribute})")
    for device in config.distribute_devices.split(','):
        if device.strip() and not re.fullmatch(
                r'/?(job:\w+/(replica:\d+/)?(task:\d+/)?)?(device:)?(cpu|gpu|tpu):\d+',
                device.strip(), re.IGNORECASE):
            raise ConfigError(f"config key 'distribute_devices': '{device.strip()}' is not a "
                              f"device name such as /gpu:0 or /cpu:1")


class HelpRequested(Exception):
    """Raised by `from_argv` for -h/--help; its message is the help text."""


def from_argv(argv, program='python -m dreamerv2_tf.train'):
    """Parses `--configs a b c` then every other flag into a Config."""
    argv = list(argv)
    names = []
    if '--configs' in argv:
        start = argv.index('--configs')
        end = start + 1
        while end < len(argv) and not argv[end].startswith('--'):
            end += 1
        names = argv[start + 1:end]
        if not names:
            raise ConfigError("flag '--configs' needs at least one block name")
        argv = argv[:start] + argv[end:]
    config = compose(names)
    if '-h' in argv or '--help' in argv:
        raise HelpRequested(help_text(config, program))
    config = parse_flags(config, argv)
    check_distribute(config)
    return config
