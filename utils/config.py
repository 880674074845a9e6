"""HOCON configs: load, override, validate against a schema, record in the run folder.

    conf = load_config("conf/giif.conf", ["train.batch_size=4"], schema="giif")
    conf.get_int("train.batch_size"); conf_to_dict(conf, "model.giif")   # -> constructor kwargs

Loading
    The file is parsed by pyhocon, so ``include "other.conf"`` (relative to the including file) and
    ``${path}`` / ``${?ENV_VAR}`` substitutions work as in HOCON. ``${?X}`` leaves the key unset when
    ``X`` is undefined, so the schema default applies.

Overrides (``--set a.b.c=value``)
    Each override is appended to the config as the HOCON line ``a.b.c = value`` before substitutions
    are resolved, so it wins over the file and keys that refer to it (``b = ${a.b.c}``) follow it.
    ``value`` is read as a HOCON value when it looks like one (a number, ``true``/``false``, ``null``,
    a ``[list]``, an ``{object}`` or a ``"quoted string"``); anything else is taken verbatim as a
    string (so ``data_path=/data/ih//x`` or ``name=run#2`` keep their ``//`` and ``#``).

Validation (see ``conf/schema/README.md``)
    A schema is a HOCON file listing every key with its default. Every key of the user config must
    exist in the schema; a schema value ``null`` marks a required key; an empty object ``{}`` accepts
    any keys below it (free-form, e.g. extra model arguments); defaults fill in whatever the user
    config leaves out; a given value must have the type of the schema default (``int`` is accepted
    for ``float``, a number for ``str``). The schema's ``rules`` block then checks what the values mean
    (ranges, ``scale_min <= scale_max``; see ``utils/config_rules.py``), each broken rule reported as
    ``<key> = <value> in <file>: must be <rule>``. All problems are reported together in one ``ConfigError``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from utils.checkpoint import atomic_write_text
from utils.config_rules import Rule, RuleSyntaxError, check_rules, parse_rules
from utils.errors import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
RULES_KEY = "rules"  # the schema block of meaning checks (utils/config_rules.py); not a config key
SCHEMA_DIR = REPO_ROOT / "conf" / "schema"

_KEY_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*")
# Values that are parsed as HOCON; everything else is a verbatim string.
_HOCON_LITERAL = re.compile(
    r"""\s*(
        -?(\d+(\.\d+)?|\.\d+)([eE][-+]?\d+)?     # number
        | true | false | null
        | \[.*\] | \{.*\} | ".*"                 # list, object, quoted string
    )\s*""",
    re.VERBOSE | re.DOTALL,
)
_INCLUDE = re.compile(r"""^\s*include\s+(?:required\()?\s*(?:file\()?\s*"([^"]+)\"""", re.MULTILINE)
# ``${?NAME}`` / ``${NAME}`` with a name that can be an environment variable (no dots).
_ENV_REFERENCE = re.compile(r"\$\{\??\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_ENV_MARK = "@@srhand-env:{}@@"
_ENV_MARK_RE = re.compile(r"@@srhand-env:([A-Za-z_][A-Za-z0-9_]*)@@")
# A --set example for messages that are not about one key: a key of every stage's schema (tests/test_cli.py).
SET_EXAMPLE = "train.batch_size=4"


class ConfigError(InputError):
    """A config file cannot be read, or does not satisfy its schema."""


def schema_path(stage: str) -> Path:
    """``conf/schema/<stage>.conf`` of this repository."""
    return SCHEMA_DIR / f"{stage}.conf"


def _resolve_schema(schema: str | Path) -> Path:
    """A schema path, or a bare stage name such as ``"giif"`` meaning ``conf/schema/giif.conf``."""
    candidate = Path(schema)
    if isinstance(schema, str) and candidate.suffix == "" and "/" not in schema and "\\" not in schema:
        candidate = schema_path(schema)
    if not candidate.is_file():
        raise ConfigError(f"schema file not found: {candidate}")
    return candidate


def parse_override(text: str) -> tuple[str, str]:
    """Split ``"a.b.c=value"`` into the key path and a HOCON value text.

    Returns:
        ``(key, hocon_value_text)`` where the value text is the input itself when it looks like a HOCON
        value (number, bool, null, list, object, quoted string) and a JSON-quoted string otherwise.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _KEY_PATH.fullmatch(key):
        raise ConfigError(
            f"--set expects KEY=VALUE with a dotted key, e.g. --set {SET_EXAMPLE}; got {text!r}"
        )
    value = value.strip()
    if not _HOCON_LITERAL.fullmatch(value):
        value = json.dumps(value)
    return key, value


def _parse(text: str, basedir: Path, what: str):
    from pyhocon import ConfigFactory

    try:
        return ConfigFactory.parse_string(text, basedir=str(basedir), resolve=True)
    except Exception as err:  # pyparsing.ParseException, ConfigSubstitutionException, ...
        message = str(err)
        hint = ""
        if "substitution" in message.lower() or "Cannot resolve" in message:
            hint = (
                " (a ${VAR} reference to an undefined key or environment variable; use ${?VAR} for optional)"
            )
        raise ConfigError(f"cannot parse {what}: {message}{hint}") from err


def _is_tree(value: Any) -> bool:
    from pyhocon import ConfigTree

    return isinstance(value, ConfigTree)


def _included_files(path: Path, seen: set[Path] | None = None) -> list[Path]:
    """``path`` and the files it includes, recursively (for error messages only)."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen or not path.is_file():
        return []
    seen.add(path)
    found = [path]
    for name in _INCLUDE.findall(path.read_text(encoding="utf-8", errors="replace")):
        found += _included_files(path.parent / name, seen)
    return found


def _defining_file(key: str, files: list[Path]) -> Path | None:
    """The first file (the user's own file first) mentioning the key: its full path, else its last segment.

    A heuristic for error messages: HOCON does not record where a value came from.
    """
    texts = [(f, f.read_text(encoding="utf-8", errors="replace")) for f in files]
    for needle in (key, key.rsplit(".", 1)[-1]):
        pattern = re.compile(rf"(^|[\s{{.,\"]){re.escape(needle)}\"?\s*[=:{{.]", re.MULTILINE)
        for path, text in texts:
            if pattern.search(text):
                return path
    return None


def _env_sources(path: Path, override_lines: Sequence[str]) -> dict[str, str]:
    """``{key: NAME}`` for every string key whose value the files read from ``${?NAME}`` / ``${NAME}``.

    HOCON keeps no record of where a value came from, so the config is parsed a second time with each
    environment variable its files mention set to a marker; a key whose value holds a marker was fed by
    that variable (through includes, later definitions and ``${key}`` references, as HOCON resolves them;
    a ``--set`` of the key replaces it). The environment is restored afterwards. Only for messages: it
    costs one more parse.
    """
    names = set()
    for file in _included_files(path):
        names.update(_ENV_REFERENCE.findall(file.read_text(encoding="utf-8", errors="replace")))
    if not names:
        return {}
    saved = {name: os.environ.get(name) for name in names}
    wrapper = "\n".join([f"include file({json.dumps(str(path.resolve()))})", *override_lines]) + "\n"
    try:
        os.environ.update({name: _ENV_MARK.format(name) for name in names})
        marked = _parse(wrapper, path.resolve().parent, str(path))
    except ConfigError:
        return {}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    sources = {}
    for key in _leaf_paths(marked):
        value = _get_path(marked, key)
        found = _ENV_MARK_RE.search(value) if isinstance(value, str) else None
        if found:
            sources[key] = found.group(1)
    return sources


def env_source(conf, key: str) -> str | None:
    """The environment variable that feeds ``key`` in the config files ``conf`` was loaded from.

    ``NAME`` when the value of ``key`` comes from a ``${?NAME}`` (or ``${NAME}``) substitution of the loaded
    files, whether or not ``NAME`` is set now (an unset ``${?NAME}`` leaves the key to an earlier line or the
    schema default; the variable would still override it). None when the value is written in the files,
    comes from ``--set`` or the schema, or ``conf`` was not made by :func:`load_config`.

    Example: ``conf/synthetic/giif.conf`` takes ``data.data_path`` from ``$SRHAND_SYNTHETIC``
    (``env_source(conf, "data.data_path") == "SRHAND_SYNTHETIC"``), ``conf/ih_GIIF_16_256.conf`` from
    ``$SRHAND_DATA``, ``conf/goliath_GIIF_16_256.conf`` from ``$GOLIATH_CAPTURE``.
    """
    sources = getattr(conf, "_srhand_env_sources", None)
    return sources().get(key) if sources is not None else None


def describe_origin(conf, key: str) -> str:
    """Where ``key``'s value came from, for messages: :func:`config_origin` and the environment variable
    (:func:`env_source`) that feeds it, set or not."""
    origin = config_origin(conf, key)
    name = env_source(conf, key)
    if name is None:
        return origin
    if name in os.environ:
        return f"${name}, read by {origin}"
    return f"{origin}; ${name} is not set (it would override this value)"


def _type_name(value: Any) -> str:
    if _is_tree(value) or isinstance(value, dict):
        return "object"
    return {bool: "bool", int: "int", float: "float", str: "str", list: "list"}.get(
        type(value), type(value).__name__
    )


def _coerce(value: Any, default: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits the type of the schema ``default``, and the value to store."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool), value
    if isinstance(default, float):
        return isinstance(value, (int, float)), float(value) if isinstance(value, (int, float)) else value
    if isinstance(default, int):
        return isinstance(value, int), value
    if isinstance(default, str):
        if isinstance(value, (int, float)):  # `name = 2020` parses as a number; the schema says str
            return True, str(value)
        return isinstance(value, str), value
    if isinstance(default, list):
        return isinstance(value, list), value
    return True, value


class _Validator:
    """Walks user config and schema together, collecting every problem before raising."""

    def __init__(
        self,
        schema,
        source: str,
        files: list[Path],
        override_keys: list[str],
        user=None,
        schema_file: Path | None = None,
        override_values: dict[str, str] | None = None,
        env_sources=None,
    ):
        self.schema = schema
        self.source = source
        self.files = files
        self.override_keys = override_keys
        self.override_values = override_values or {}
        self.user = user
        self.schema_file = schema_file
        self.env_sources = env_sources or dict
        self.errors: list[str] = []
        self.all_paths = sorted(_leaf_paths(schema))

    def origin(self, key: str) -> str:
        for override in reversed(self.override_keys):  # the last --set of a key wins
            if key == override or key.startswith(override + ".") or override.startswith(key + "."):
                return f"--set {override}={self.override_values.get(override, '...')}"
        if self.user is not None and self.schema_file is not None and self.user.get(key, None) is None:
            return f"the default of {self.schema_file}"
        found = _defining_file(key, self.files)
        return str(found) if found else self.source

    def suggest(self, key: str, siblings: Iterable[str]) -> str:
        leaf = key.rsplit(".", 1)[-1]
        prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
        close = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
        if close:
            return prefix + close[0]
        close = difflib.get_close_matches(key, self.all_paths, n=1, cutoff=0.6)
        if not close:  # a misplaced key: the same leaf name elsewhere in the schema
            close = [p for p in self.all_paths if p.rsplit(".", 1)[-1] == leaf][:1]
        return close[0] if close else ""

    def merge(self, user, schema, prefix: str):
        """Return a new tree: schema defaults overlaid with the user's values, validated."""
        from pyhocon import ConfigTree

        merged = ConfigTree()
        for key, default in schema.items():
            merged[key] = copy.deepcopy(default)
        for key, value in user.items():
            path = f"{prefix}{key}"
            if key not in schema:
                suggestion = self.suggest(path, schema.keys())
                hint = f"; did you mean {suggestion!r}?" if suggestion else ""
                self.errors.append(f"unknown key {path!r} (in {self.origin(path)}){hint}")
                continue
            default = schema[key]
            if _is_tree(default):
                if not _is_tree(value):
                    self.errors.append(
                        f"key {path!r} (in {self.origin(path)}) must be an object {{...}}, got "
                        f"{_type_name(value)} {value!r}"
                    )
                elif len(default) == 0:  # free-form object
                    merged[key] = value
                else:
                    merged[key] = self.merge(value, default, path + ".")
                continue
            if _is_tree(value):
                self.errors.append(
                    f"key {path!r} (in {self.origin(path)}) is a {_type_name(default)} in the schema, "
                    f"got an object"
                )
                continue
            if value is None and default is None:  # a required key left unset: check_required says so once
                merged[key] = None
                continue
            if value is None:
                state = f"optional (default {default!r})"
                self.errors.append(
                    f"key {path!r} (in {self.origin(path)}) is null; it is {state}: give it a value "
                    "or remove the line"
                )
                continue
            if default is not None:
                fits, value = _coerce(value, default)
                if not fits:
                    self.errors.append(
                        f"key {path!r} (in {self.origin(path)}) must be {_type_name(default)} like the "
                        f"schema default {default!r}, got {_type_name(value)} {value!r}"
                    )
                    continue
            merged[key] = value
        return merged

    def check_required(self, tree, prefix: str = "") -> None:
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if _is_tree(value) and len(self.schema.get(path, {}) or {}) > 0:
                self.check_required(value, path + ".")
            elif value is None:
                message = f"required key {path!r} is not set in {self.source} (nor by --set)"
                name = self.env_sources().get(path)
                if name is not None:
                    message += (
                        f"; the config takes it from ${name}, which is not set: set {name} or pass "
                        f"--set {path}=VALUE"
                    )
                self.errors.append(message)


def _leaf_paths(tree, prefix: str = "") -> Iterable[str]:
    for key, value in tree.items():
        if _is_tree(value) and len(value) > 0:
            yield from _leaf_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def schema_rules(schema_tree, schema_file: Path | str = "<schema>") -> list[Rule]:
    """Remove the ``rules`` block from a parsed schema (in place) and return its parsed rules.

    Raises:
        ConfigError: a rule cannot be read or names a key the schema does not have.
    """
    block = schema_tree.pop(RULES_KEY, None)
    try:
        return parse_rules(block, _leaf_paths(schema_tree))
    except RuleSyntaxError as err:
        raise ConfigError(f"schema {schema_file}: {err}") from None


_SCHEMA_CACHE: dict[tuple, tuple] = {}


def load_schema(stage: str | Path):
    """``(schema_tree, rules)`` of a stage name or schema file (the tree without its ``rules`` block).

    Parsed schemas are cached per file and modification time (of the file and those it includes), as
    pyhocon is slow to parse one and the tests load the same schema many times; each call returns its
    own copy of the tree.
    """
    schema_file = _resolve_schema(stage)
    key = tuple((str(f), f.stat().st_mtime_ns) for f in _included_files(schema_file))
    if key not in _SCHEMA_CACHE:
        tree = _parse(schema_file.read_text(encoding="utf-8"), schema_file.parent, f"schema {schema_file}")
        _SCHEMA_CACHE[key] = (tree, schema_rules(tree, schema_file))
    tree, rules = _SCHEMA_CACHE[key]
    return copy.deepcopy(tree), list(rules)


def load_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    schema: str | Path | None = None,
):
    """Read a HOCON config, apply ``--set`` overrides and validate it against a schema.

    Args:
        path: the user's config file.
        overrides: ``"a.b.c=value"`` strings (see the module docstring for how values are read).
        schema: a schema file, a stage name (``"giif"`` -> ``conf/schema/giif.conf``), or None to skip
            validation (no defaults are merged then).

    Returns:
        a ``pyhocon.ConfigTree`` holding every schema key (defaults filled in), with typed getters
        (``get_int``, ``get_float``, ``get_string``, ``get_list``, ``get_config``).

    Raises:
        ConfigError: missing or unparsable file, bad override, unknown key (with the full key path,
            the file or ``--set`` it came from and the closest valid key), missing required key,
            wrong type, a value that breaks a rule of the schema (``<key> = <value> in <file>: must be
            <rule>``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    override_lines, override_keys, override_values = [], [], {}
    for text in overrides:
        key, value = parse_override(text)
        override_keys.append(key)
        override_values[key] = text.partition("=")[2].strip()
        override_lines.append(f"{key} = {value}")
    # Overrides are appended to the file (through an include) so HOCON's own rules apply: later
    # definitions win and ${...} substitutions are resolved after them.
    wrapper = "\n".join([f"include file({json.dumps(str(path.resolve()))})", *override_lines]) + "\n"
    user = _parse(wrapper, path.resolve().parent, f"{path}" + (" with --set overrides" if overrides else ""))
    if schema is None:
        return user
    schema_file = _resolve_schema(schema)
    schema_tree, rules = load_schema(schema_file)
    env_sources = functools.cache(lambda: _env_sources(path, override_lines))
    validator = _Validator(
        schema_tree,
        str(path),
        _included_files(path),
        override_keys,
        user,
        schema_file,
        override_values,
        env_sources,
    )
    merged = validator.merge(user, schema_tree, "")
    validator.check_required(merged)
    validator.errors += check_rules(rules, lambda key: _get_path(merged, key), validator.origin)
    merged._srhand_origin = validator.origin  # for checks made later, with the data (config_origin)
    merged._srhand_env_sources = env_sources  # env_source(), computed when a message first asks
    if validator.errors:
        count = len(validator.errors)
        raise ConfigError(
            f"{path}: {count} problem{'s' if count > 1 else ''} against schema {schema_file}:\n  "
            + "\n  ".join(validator.errors)
        )
    return merged


def config_origin(conf, key: str) -> str:
    """Where ``key``'s value came from (the user's file, ``--set key=value`` or the schema default), for
    messages of checks made after loading; ``"the config"`` for a tree not made by ``load_config``."""
    origin = getattr(conf, "_srhand_origin", None)
    return origin(key) if origin is not None else "the config"


def conf_to_dict(conf, key: str | None = None) -> dict:
    """Plain ``dict`` (recursively, lists included) of ``conf`` or of its sub-tree ``key``.

    Use it for constructor keyword arguments (``GIIF(**conf_to_dict(conf, "model.giif"))``) and to
    store the config in a checkpoint.
    """
    if key is not None:
        try:
            conf = _get_path(conf, key)
        except (KeyError, TypeError) as err:
            raise ConfigError(f"the config has no object at key {key!r}") from err
    return _plain(conf)


def _get_path(tree: dict, key: str) -> Any:
    for part in key.split("."):
        tree = tree[part]
    return tree


def _plain(value: Any) -> Any:
    if _is_tree(value) or isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_hocon(conf) -> str:
    """The config as HOCON text (re-reads to the same values)."""
    from pyhocon import ConfigFactory, HOCONConverter

    if not _is_tree(conf):
        conf = ConfigFactory.from_dict(_plain(conf))
    return HOCONConverter.to_hocon(conf) + "\n"


def git_revision(repo: str | Path = REPO_ROOT) -> str:
    """``"<commit>"`` or ``"<commit> (dirty)"`` for the repository; a note when git is unavailable."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=20
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"unknown (git unavailable or not a repository: {type(err).__name__})"
    return f"{commit} (dirty)" if status else commit


def save_resolved(conf, run_dir: str | Path, argv: Sequence[str]) -> dict[str, Path]:
    """Record how a run was started: ``config.conf``, ``command.txt`` and ``git_rev.txt`` in ``run_dir``.

    Each file is written atomically. ``command.txt`` is the shell-quoted ``argv`` (pass ``sys.argv``);
    ``git_rev.txt`` is ``git rev-parse HEAD`` plus ``(dirty)`` when tracked files have local changes.

    Returns:
        ``{"config": path, "command": path, "git_rev": path}``.
    """
    run_dir = Path(run_dir)
    return {
        "config": atomic_write_text(run_dir / "config.conf", to_hocon(conf)),
        "command": atomic_write_text(run_dir / "command.txt", shlex.join(map(str, argv)) + "\n"),
        "git_rev": atomic_write_text(run_dir / "git_rev.txt", git_revision() + "\n"),
    }


def read_section(cls: type, conf, key: str | None = None):
    """The frozen dataclass ``cls`` filled from the config section ``key`` (the whole config when None).

    Each field of ``cls`` is read from the key of the same name with the getter its annotation names:
    ``int``, ``float``, ``bool``, ``str``, ``tuple`` (from a list), ``dict`` (a plain dict of the
    sub-tree) or another dataclass (read recursively from the sub-tree). Keys of the section that
    ``cls`` does not declare are ignored: a dataclass lists what its reader uses, the schema what a
    config may hold.

    Raises:
        ConfigError: a field whose key is missing, naming the full key path.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        path = f"{key}.{field.name}" if key else field.name
        try:
            raw = _get_path(conf, path)
        except (KeyError, TypeError):
            raise ConfigError(
                f"the config has no key {path!r} (read into {cls.__name__}.{field.name})"
            ) from None
        kind = hints[field.name]
        origin = typing.get_origin(kind) or kind
        if dataclasses.is_dataclass(kind):
            values[field.name] = read_section(kind, conf, path)
        elif origin is tuple:
            values[field.name] = tuple(_plain(raw))
        elif origin is dict:
            values[field.name] = _plain(raw)
        elif kind is float:
            values[field.name] = float(raw)
        elif kind in (int, bool, str):
            values[field.name] = raw
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: read_section cannot read a field of type {kind!r}")
    return cls(**values)


def missing_data_path_error(conf, dataset: str = "interhand") -> InputError:
    """The error for a ``data.data_path`` that is not a folder: its value, where it came from (the file,
    ``--set`` or the schema, and the environment variable that feeds it, set or not) and how to fix it.

    Args:
        conf: the config of :func:`load_config`.
        dataset: ``interhand`` (InterHand2.6M layout, the synthetic captures included) or ``goliath``.
    """
    key = "data.data_path"
    value = conf.get_string(key)
    name = env_source(conf, key)
    where = f"${name} or --set {key}=PATH" if name else f"--set {key}=PATH (or the config)"
    if dataset == "goliath":
        fix = f'point {where} at the Goliath capture folder m--...--Hands--<side> (README "Run on Goliath")'
    else:
        fix = (
            "generate the synthetic captures with `python scripts/make_synthetic.py`, or point "
            f"{where} at an InterHand2.6M-layout folder (images/ and annotations/)"
        )
    return InputError(f"{key} = {value!r} (from {describe_origin(conf, key)}) is not a folder: {fix}")
