"""What a newcomer types first: bad overrides give one or two readable lines (exit 2), and every example in the
help texts and the README resolves to a valid config."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from robot_rl import cli
from robot_rl.config import load_config
from robot_rl.config_errors import UsageError
from robot_rl.hardware.mcu.cli import EXPORT_MCU_ARGS
from robot_rl.policies.cli import PRETRAIN_ARGS
from support import run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("override, expected", [
    ("learner.utd=abc", "learner.utd must be a number, got 'abc'"),
    ("nonexistent.key=1", "unknown config key 'nonexistent.key'"),
    ("learner.utdd=2", "did you mean 'learner.utd'?"),
    ("algo.utd=4", "did you mean 'learner.utd'?"),
    ("+foo=1", "unknown config key 'foo'"),
    ("env=does_not_exist", "valid choices: gym, panda_pick_cube, panda_pick_cube_random"),
    ("algo=rlpd_cpuu", "did you mean algo=rlpd_cpu?"),
    ("learner.utd", "expected key=value"),
    # renaming the group's component keeps the default preset's settings: the preset was meant
    ("env.name=panda_pick_place_cube", "keeps the settings of the 'panda_pick_cube' preset; to use the "
                                       "'panda_pick_place_cube' preset write env=panda_pick_place_cube"),
    ("algo.name=sac", "write algo=sac"),
])
def test_bad_override_is_one_or_two_lines_and_exit_2(override, expected, capsys):
    assert cli.main(["config", override]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("robot-rl: error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err and "+nonexistent" not in err and "To append" not in err
    assert "_schema" not in err  # internal structured-config nodes are not choices


def test_naming_the_selected_preset_or_an_unregistered_name_is_not_refused():
    cfg = load_config(["env=panda_pick_place_cube", "env.name=panda_pick_place_cube"])
    assert type(cfg.env).__name__ == "PandaPickPlaceCubeConfig" and cfg.env.place_tolerance > 0
    assert load_config(["env.name=panda_pick_cube"]).env.name == "panda_pick_cube"  # the default's own name
    assert load_config(["algo.name=my_own_sac"]).algo.name == "my_own_sac"  # no such preset: the registry decides


def test_real_process_exit_status_and_debug_traceback(tmp_path):
    bad = run_cli("config", "env=does_not_exist")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 2, bad.stderr
    debug = run_cli("--debug", "config", "env=does_not_exist")
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    missing = run_cli("eval", f"checkpoint={tmp_path / 'no_such_run'}")
    assert missing.returncode == 2 and "no such directory" in missing.stderr and "Traceback" not in missing.stderr
    assert not (tmp_path / "no_such_run").exists()  # looking for a checkpoint creates nothing


def test_missing_checkpoint_and_config_file(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert cli.main(["eval", f"checkpoint={tmp_path / 'run'}"]) == 2
    assert "no checkpoint under" in capsys.readouterr().err
    assert cli.main(["config", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(UsageError):
        cli.main(["--debug", "config", "learner.utd=abc"])


def test_summary_lists_every_subcommand():
    parser_help = cli.build_parser().format_help()
    summary = cli.__doc__
    for sub in ("train", "learner", "actor", "keys", "demos", "eval", "config", "reward", "pretrain", "export-mcu"):
        assert f"robot-rl {sub}" in summary, sub
        assert sub in parser_help, sub


# key=value arguments of a subcommand that are not config overrides (split off before composing).
EXTRAS = {"demos": cli.DEMOS_ARGS, "eval": cli.EVAL_ARGS, "pretrain": PRETRAIN_ARGS, "export-mcu": EXPORT_MCU_ARGS}


def _resolve(command: str, args: list[str]) -> None:
    # A value in capitals (seed=S, transport.host=LEARNER_IP) is a placeholder the reader fills in.
    args = [re.sub(r"=[A-Z][A-Z_]*$", "=0", a) for a in args if "=" in a]
    overrides, _ = cli.split_extra(args, EXTRAS.get(command, ()))
    load_config(overrides)


def test_help_examples_resolve():
    for name in cli.OVERRIDE_EXAMPLES:
        sub = cli.build_parser()._subparsers._group_actions[0].choices[name]
        help_text = " ".join(sub.format_help().split())  # as `robot-rl NAME --help` prints it, unwrapped
        example = re.search(r"hydra overrides, e\.g\. (.*?) --config", help_text).group(1)
        _resolve(name, example.split())


def _readme_commands() -> list[tuple[str, list[str]]]:
    """``robot-rl <sub> ...`` lines of the README (code blocks and inline code) that hold concrete overrides."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    candidates = re.findall(r"^(?:\.venv/bin/)?robot-rl [^\n#]*", text, re.M)
    candidates += re.findall(r"`(?:\.venv/bin/)?(robot-rl [^`]*)`", text)
    candidates += [f"robot-rl train {args}" for args in re.findall(r'make train ARGS="([^"]*)"', text)]
    out = []
    for line in candidates:
        if any(mark in line for mark in ("[", "...", "|", "<")):
            continue  # a synopsis with placeholders, not an example
        words = shlex.split(line.split("robot-rl", 1)[1])
        if words and words[0] in ("train", "learner", "actor", "config", "demos", "eval", "pretrain", "export-mcu"):
            out.append((words[0], words[1:]))
    return out


def test_readme_examples_resolve():
    commands = _readme_commands()
    assert len(commands) >= 15, commands  # the parser still finds the README's examples
    for command, args in commands:
        try:
            _resolve(command, args)
        except UsageError as exc:
            raise AssertionError(f"README example `robot-rl {command} {' '.join(args)}`: {exc}") from None
