"""One vocabulary across `clearrec` commands: --version, -v anywhere, one --device list, one
spelling of --no-track, --out always a folder, help text without reStructuredText's double
backticks."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import build_parser, main

# Every command with --out, as far as its arguments go; "FOLDER" is replaced by the --out value.
OUT_COMMANDS = {
    "extract": ["extract", "META", "--no-progress", "--out", "FOLDER"],
    "train": ["train", "DATA", "--model", "mf", "--no-progress", "--out", "FOLDER"],
    "analyze": ["analyze", "DATA", "--out", "FOLDER"],
    "evaluate": ["evaluate", "CKPT", "--dataset", "DATA", "--model", "mf", "--no-track", "--out", "FOLDER"],
    "repro": ["repro", "--no-track", "--out", "FOLDER"],
    "table": ["table", "no-such-experiment", "--out", "FOLDER"],
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if a.choices and "sweep" in a.choices).choices


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("clearrec ")


@pytest.mark.parametrize("argv", [["-v", "data", "stats", "/no/such/dataset"],
                                  ["data", "stats", "/no/such/dataset", "-v"],
                                  ["data", "-v", "stats", "/no/such/dataset"]])
def test_verbose_is_accepted_before_or_after_the_command(argv, capsys):
    # The dataset is missing: a user error (2), not an argparse refusal of -v (also 2, but with usage).
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err and "/no/such/dataset" in err


@pytest.mark.parametrize("command", [["train", "DIR", "--model", "clear"], ["evaluate", "CKPT"],
                                     ["extract", "META", "--out", "x"],
                                     ["repro"]])
def test_every_device_option_takes_the_same_list(command, capsys):
    for good in ("auto", "cpu", "cuda", "cuda:1"):
        assert build_parser().parse_args([*command, "--device", good]).device == good
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--device", "gpu"])
    assert exit_.value.code == 2
    assert "auto | cpu | cuda | cuda:N" in capsys.readouterr().err


def test_no_track_is_one_spelling_and_the_old_one_still_works():
    assert build_parser().parse_args(["repro", "--no-track"]).no_track
    assert build_parser().parse_args(["repro", "--no-tracking"]).no_track
    assert build_parser().parse_args(["evaluate", "CKPT", "--no-track"]).no_track


def test_help_shows_no_double_backticks():
    for command in _commands().values():
        assert "``" not in command.format_help()


def test_every_out_option_is_documented_as_a_folder():
    outs = {name: action for name, command in _commands().items() for action in command._actions
            if "--out" in action.option_strings}
    assert set(outs) == set(OUT_COMMANDS)  # a new command with --out joins the checks below
    for name, action in outs.items():
        assert action.help.startswith("output folder"), (name, action.help)
        assert action.metavar != "FILE", name


@pytest.mark.parametrize("name", OUT_COMMANDS)
def test_every_out_refuses_an_existing_file_naming_it(name, tmp_path, capsys):
    # The file stands where the folder should go; the dataset, checkpoint and metadata do not
    # exist, so a command that looked at them before --out would name them instead.
    notes = tmp_path / "notes"
    notes.write_text("a file")
    argv = [str(notes) if a == "FOLDER" else a for a in OUT_COMMANDS[name]]
    assert main([str(tmp_path / a) if a in ("META", "DATA", "CKPT") else a for a in argv]) == 2
    assert f"--out {notes}: is an existing file; expected a folder" in capsys.readouterr().err
    assert notes.read_text() == "a file"


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_an_old_style_json_out_is_refused_with_the_new_form(name, tmp_path, capsys):
    old = tmp_path / "result.json"
    argv = [str(old) if a == "FOLDER" else a for a in OUT_COMMANDS[name]]
    assert main([str(tmp_path / a) if a in ("META", "DATA", "CKPT") else a for a in argv]) == 2
    assert f"--out {old}: --out now names a folder" in capsys.readouterr().err
    assert not old.exists()
