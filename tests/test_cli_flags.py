"""One spelling rule for every command line: ``_`` or ``-`` alike, no silent abbreviations, defaults shown."""

from __future__ import annotations

import pytest

from merak_integration.launch import build_parser
from perseus.cli.main import build_parser as perseus_parser


def test_launcher_takes_both_spellings_and_the_optimizer_name_for_chunks() -> None:
    args = build_parser().parse_args(["gpt3-tiny", "2", "8", "--max-steps", "5", "--chunks=3", "--out-dir", "o"])
    assert (args.max_steps, args.num_chunks, args.out_dir) == (5, 3, "o")


def test_an_abbreviated_flag_is_an_error_not_a_guess(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["gpt3-tiny", "2", "8", "--max_step", "5"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --max_step 5" in capsys.readouterr().err


def test_optimize_takes_the_launchers_names() -> None:
    args = perseus_parser("optimize").parse_args(
        ["optimize", "p.csv", "--stages", "4", "--microbatches", "8", "--out", "o", "--schedule", "interleaved",
         "--num_chunks", "2", "--time_resolution", "0.001"])
    assert (args.schedule, args.chunks, args.time_resolution) == ("interleaved-1f1b", 2, 0.001)


def test_help_shows_defaults_once(capsys: pytest.CaptureFixture[str]) -> None:
    text = build_parser().format_help()
    assert "training iterations (default: 10)" in " ".join(text.split())
    with pytest.raises(SystemExit):
        perseus_parser("optimize").parse_args(["optimize", "--help"])
    optimize = " ".join(capsys.readouterr().out.split())
    assert "(default 1f1b)" in optimize and "(default: 1f1b)" not in optimize
