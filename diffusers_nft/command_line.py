"""How a command line becomes settings: a YAML or JSON config file (the first argument, or `--config`, as TRL's
parser takes it) gives values, flags override them, and two spellings of one setting that disagree are refused."""

import difflib
import json
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
# TRL's names for NFT's settings (and how their values read in ours): given both, they must agree.
TWIN_FIELDS = {"num_generations": ("group_size", {}), "scale_rewards": ("advantage_std", {"batch": "global"})}


def split_config_file(argv: Sequence[str]) -> Tuple[Optional[str], List[str]]:
    """`(config file, the other arguments)`: the file is the first argument when it ends in .yaml/.yml/.json, or
    the value of `--config`; None when there is none."""
    argv = list(argv)
    if argv and not argv[0].startswith("-") and argv[0].endswith(CONFIG_SUFFIXES):
        return argv[0], argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ValueError("--config needs a file: --config my_run.yaml")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def read_config_file(path: str) -> Dict[str, object]:
    """The settings of a YAML or JSON file: a mapping of setting names (as the flags, without `--`) to values."""
    if not os.path.isfile(path):
        raise ValueError(f"Config file {path!r} does not exist.")
    with open(path) as f:
        try:
            if path.endswith(".json"):
                values = json.load(f)
            else:
                import yaml

                values = yaml.safe_load(f)
        except Exception as error:  # a syntax error of either format
            raise ValueError(f"Config file {path!r} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
                             f"{error}") from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path!r} must hold a mapping of settings (name: value), got a "
                         f"{type(values).__name__}.")
    return values


def config_defaults(parser, values: Dict[str, object], path: str) -> Dict[str, object]:
    """A config file's values keyed by the parser's destinations (a flag's aliases are accepted as keys too).

    Raises:
        ValueError: For a key that is no setting, with the closest names.
    """
    dests = {}
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                dests[option[2:].replace("-", "_")] = action
    defaults = {}
    for key, value in values.items():
        action = dests.get(str(key).replace("-", "_"))
        if action is None or action.dest == "help":
            close = difflib.get_close_matches(str(key), list(dests), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"Config file {path!r}: {key!r} is not a setting.{hint} `--help` lists them all.")
        if action.dest in defaults:
            raise ValueError(f"Config file {path!r} sets {action.dest} twice ({key!r} is another name for it).")
        if action.nargs in ("+", "*") and not isinstance(value, list):
            value = [value]
        if action.const is not None and action.nargs == 0 and value is not None:  # --no_x flags store False
            value = bool(value) if action.const else not bool(value)
        defaults[action.dest] = value
    return defaults


def given_flags(parser, argv: Sequence[str]) -> Dict[str, List[Tuple[str, Tuple[str, ...]]]]:
    """Each destination given on the command line -> `[(flag, its values), ...]`, in order."""
    by_option = {o: a for a in parser._actions for o in a.option_strings}
    given, i = {}, 0
    while i < len(argv):
        flag, _, inline = argv[i].partition("=")
        action = by_option.get(flag)
        i += 1
        if action is None:
            continue
        values = [inline] if inline else []
        if action.nargs != 0 and not inline:
            while i < len(argv) and not (argv[i].startswith("--") and argv[i].partition("=")[0] in by_option):
                values.append(argv[i])
                i += 1
                if action.nargs in (None, "?"):
                    break
        if not values and action.const is not None:  # --flag alone (a bool, or a --no_ flag)
            values = [action.const]
        given.setdefault(action.dest, []).append((flag, tuple(_typed(action, v) for v in values)))
    return given


def _typed(action, value):
    """A flag's value as its setting reads it (`true` and `True` are one value), or the text when it does not parse."""
    try:
        return action.type(value) if action.type and isinstance(value, str) else value
    except (TypeError, ValueError):
        return value


def check_twins(parser, argv: Sequence[str]) -> None:
    """Refuse a setting given under two names with different values (`--max_steps 3 --max_train_steps 5`,
    `--allow_tf32 --no_allow_tf32`), and TRL's name beside ours with another value (`--num_generations 3
    --group_size 2`). One flag given twice is argparse's as ever (the last wins); repeatable flags (`--reward`)
    add up."""
    given = given_flags(parser, argv)
    for dest, uses in given.items():
        spellings = {flag.lstrip("-").replace("-", "_") for flag, _ in uses}  # one flag repeated: the last wins
        if dest not in repeatable_settings(parser) and len(spellings) > 1 and len({v for _, v in uses}) > 1:
            raise ValueError(f"{dest} is given twice with different values ({_shown(uses)}); keep one.")
    for trl, (ours, spelled) in TWIN_FIELDS.items():
        if trl in given and ours in given:
            trl_value = tuple(spelled.get(v, v) for v in given[trl][-1][1])
            if trl_value != given[ours][-1][1]:
                raise ValueError(f"{_shown(given[trl][-1:] + given[ours][-1:])} set the same thing ({trl} is TRL's "
                                 f"name for {ours}); give one of them.")


def repeatable_settings(parser) -> set:
    """The settings a flag adds to each time it is given (`--reward a --reward b`)."""
    return {a.dest for a in parser._actions if type(a).__name__ in ("_ExtendAction", "_AppendAction")}


def _shown(uses) -> str:
    return " and ".join(f"{flag} {' '.join(str(v) for v in values)}".strip() for flag, values in uses)


def exit_on_setup_error(setup: Callable[[], T]) -> T:
    """`setup()`; a mistake it finds before any compute (`ValueError`, `OSError`, a missing extra's `ImportError`) is
    one ERROR line on stderr and exit status 2, not a traceback."""
    try:
        return setup()
    except (ValueError, OSError, ImportError) as error:
        # Printed, not logged: every command's error line has this shape, whatever its logging format.
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR diffusers_nft: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
