"""One vocabulary across `clearrec` commands: --version, -v anywhere, one --device list, one
spelling of --no-track, help text without reStructuredText's double backticks."""

from __future__ import annotations

import pytest

from pipeline.cli import build_parser, main


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
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "sweep" in a.choices)
    for command in sub.choices.values():
        assert "``" not in command.format_help()
