"""Config files in layers: the fragments a config names under ``defaults:``, and the run name.

A config file may start with ``defaults: defaults/control.yaml`` (or a list of such paths,
relative to the file). :class:`ConfigLayers` puts each fragment before the file as a
``--config`` flag of its own, the same as typing

    python cli.py fit --config configs/defaults/control.yaml --config configs/td3bc_hopper.yaml

so the file's own values override the fragment's (nested keys merge; lists such as
``trainer.callbacks`` are replaced, as with several ``--config`` flags). Fragments may name
fragments of their own. Once parsed, the fragments' values are part of the config: printed and
saved configs (``--print_config``, the run's ``config.yaml``) record ``defaults: null`` and
stand alone.

:func:`run_name` is the logger's default name: the stem of the first ``--config`` file, so that
``--config configs/td3bc_hopper.yaml`` logs to ``runs/td3bc_hopper/version_N``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

CONFIG_FLAGS = ("-c", "--config")


def config_values(argv: list[str]) -> list[str]:
    """The values of the ``--config`` flags in ``argv``, in order."""
    values = []
    for i, arg in enumerate(argv):
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith("--config="):
            values.append(arg.split("=", 1)[1])
    return values


def _config_file(value: str) -> Path | None:
    """``value`` as an existing file, or None (jsonargparse also takes YAML text for ``--config``)."""
    try:
        path = Path(value)
        return path if path.is_file() else None
    except (OSError, ValueError):
        return None


def run_name(args: Any = None, default: str = "policylab") -> str:
    """The stem of the first ``--config`` file in ``args`` (``sys.argv`` when None), else ``default``."""
    if isinstance(args, (dict, Namespace)):
        return default
    argv = list(sys.argv[1:] if args is None else args)
    files = [path for value in config_values(argv) if (path := _config_file(value)) is not None]
    return files[0].stem if files else default


def config_layers(path: Path, _within: tuple[Path, ...] = ()) -> list[Path]:
    """``path`` preceded by the fragments its ``defaults:`` names (recursively, each fragment
    before the file naming it)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return [path]  # jsonargparse reports the file's own error
    names = data.get("defaults") if isinstance(data, dict) else None
    if names is None:
        return [path]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"{path}: defaults: expected a fragment path or a list of them, got {names!r}")
    layers: list[Path] = []
    for name in names:
        fragment = path.parent / name
        if not fragment.is_file():
            raise FileNotFoundError(f"{path}: defaults: {name} not found (looked for {fragment})")
        if fragment.resolve() in (*_within, path.resolve()):
            raise ValueError(f"{path}: defaults: {name} includes itself")
        layers += config_layers(fragment, (*_within, path.resolve()))
    return [*layers, path]


def with_config_layers(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config FILE`` preceded by ``--config FRAGMENT`` for the fragments
    that FILE names under ``defaults:``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        path = _config_file(value)
        for layer in config_layers(path) if path is not None else [value]:
            out += ["--config", str(layer)]
    return out


def _merged(value: Any) -> None:
    """The parsed value of ``defaults:``: None, as :func:`with_config_layers` has already read the
    fragments in, so printed and saved configs (``--print_config``, ``config.yaml``) stand alone."""
    return None


class ConfigLayers:
    """A ``LightningCLI`` mixin (``class MyCLI(ConfigLayers, LightningCLI)``): accepts the
    ``defaults:`` key and reads the fragments it names before the file naming them."""

    def add_core_arguments_to_parser(self, parser) -> None:
        super().add_core_arguments_to_parser(parser)
        parser.add_argument(
            "--defaults",
            type=_merged,
            default=None,
            help="Config fragments read before this config file (paths relative to it), e.g. defaults/control.yaml.",
        )

    def parse_arguments(self, parser, args) -> None:
        if isinstance(args, (dict, Namespace)):
            return super().parse_arguments(parser, args)
        self.config = parser.parse_args(with_config_layers(list(sys.argv[1:] if args is None else args)))
