"""The ``dirbench`` command line as a user meets it: help for every command, one-line errors for user mistakes."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dirbench.cli import build_parser, main

Command = tuple[tuple[str, ...], argparse.ArgumentParser]


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Command]:
    """Every (sub)command's words and parser, found by walking the parser (nothing hard-coded)."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(build_parser())


def test_top_level_help_renders() -> None:
    """``dirbench --help``, the README's first command, exits 0 and lists every command."""
    proc = subprocess.run(
        [sys.executable, "-m", "dirbench.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: dirbench")
    top = {path[0] for path, _ in COMMANDS if path}
    assert len(top) >= 10 and {"evaluate", "train", "register", "table", "figure", "data"} <= top
    for name in top:
        assert f"    {name}" in proc.stdout


def test_a_percent_sign_in_a_command_help_line_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse %-formats help strings; the CLI escapes each command's HELP, so any text is safe."""
    import dirbench.commands.evaluate

    monkeypatch.setattr(dirbench.commands.evaluate, "HELP", "Dice, NDV, %|J|<=0 (in %)")
    text = build_parser().format_help()
    assert "Dice, NDV, %|J|<=0 (in %)" in " ".join(text.split())


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS if p], ids=" ".join)
def test_command_help_renders(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main([*path, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: dirbench {' '.join(path)}")


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(("dirbench", *p)))
def test_every_flag_has_help(path: tuple[str, ...]) -> None:
    """Every flag and positional argument, and every subcommand in a group's list, has a help text."""
    parser = dict(COMMANDS)[path]
    actions = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            actions += action._choices_actions  # the "<command>  help" lines of the group's listing
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            actions.append(action)
    missing = ["/".join(a.option_strings) or a.dest for a in actions if not (a.help or "").strip()]
    assert not missing, f"dirbench {' '.join(path)}: no help text for {', '.join(missing)}"


# ---------------------------------------------------------------------------------------------- user mistakes


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI; assert exit 1 with a single ``dirbench: error:`` line on stderr (no traceback)."""
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("dirbench: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_register_cuda_on_cpu_build_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(
        capsys,
        ["register", "--checkpoint", str(tmp_path / "best.pt"), "--device", "cuda", "--fixed", "f.nii.gz",
         "--moving", "m.nii.gz", "--out", str(tmp_path / "d.nii.gz")],
    )  # fmt: skip
    assert "device 'cuda'" in err and "CUDA is not available" in err and "cpu" in err


def test_register_bad_device_name_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(
        capsys,
        ["register", "--checkpoint", str(tmp_path / "best.pt"), "--device", "gpu0", "--pairs", "x.json:test",
         "--out-dir", str(tmp_path)],
    )  # fmt: skip
    assert "device 'gpu0'" in err


def test_register_text_file_as_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")  # unpickles into a KeyError on torch's legacy (non-zip) path
    err = _one_line_error(
        capsys,
        ["register", "--checkpoint", str(notes), "--device", "cpu", "--fixed", "f.nii.gz", "--moving", "m.nii.gz",
         "--out", str(tmp_path / "d.nii.gz")],
    )  # fmt: skip
    assert str(notes) in err and "not a PyTorch checkpoint" in err
    assert not (tmp_path / "d.nii.gz").exists()
