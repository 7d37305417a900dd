"""The `biohsic reservoir` sub-commands, run through a parser built like the lead's
`biohsic` entry point (BiohsicError → one line on stderr, exit code 2)."""
from __future__ import annotations

import argparse
import re
import sys

import pytest
import torch

from biohsic.cli.reservoir import add_reservoir_commands
from biohsic.errors import BiohsicError
from biohsic.reservoir import Reservoir

pytestmark = pytest.mark.slow  # end-to-end runs of the command line / trainer

FAST = ["--input-dim", "4", "--classes", "3", "--steps-per-sample", "2", "--streams", "4", "--washout", "2"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="biohsic")
    subparsers = parser.add_subparsers(dest="command")
    add_reservoir_commands(subparsers)
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except BiohsicError as exc:
        print(f"biohsic: error: {exc}", file=sys.stderr)
        code = 2
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("res") / "res.pt"
    parser = argparse.ArgumentParser(prog="biohsic")
    add_reservoir_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["reservoir", "train", "--window", "3", "--units", "30", "--layer-dim", "5",
                              "--samples", "48", "--out", str(path), *FAST])
    assert args.func(args) == 0
    return path


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("biohsic: error: ")
    return lines[0]


def test_train_prints_one_line_and_writes_a_weights_only_file(tmp_path, capsys):
    path = tmp_path / "r.pt"
    code, out, _ = run(["reservoir", "train", "--window", "2", "--units", "20", "--layer-dim", "5", "--samples", "32",
                        "--learner", "delta", "--out", str(path), *FAST], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 1
    assert out.startswith(f"saved {path}: units=20 window=2 dims=4/3/5 learner=delta")
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["window"] == 2 and payload["info"]["learner"] == "delta"


def test_eval_reports_key_values_and_leaves_the_file_unchanged(saved, capsys):
    before = saved.read_bytes()
    code, out, _ = run(["reservoir", "eval", str(saved), "--samples", "16", "--streams", "4", "--washout", "2",
                        "--window", "3", "--layer-dim", "5"], capsys)
    assert code == 0
    values = dict(item.split("=") for item in out.split())
    assert set(values) == {"r2", "cosine", "update_r2", "update_cosine", "update_cosine_100", "samples"}
    assert int(values["samples"]) == 16 and -1 <= float(values["cosine"]) <= 1
    assert saved.read_bytes() == before
    again = run(["reservoir", "eval", str(saved), "--samples", "16", "--streams", "4", "--washout", "2"], capsys)[1]
    assert again == out  # same unseen stream, frozen readout: same numbers


@pytest.mark.parametrize("extra,pattern", [(["--window", "8"], r"window N=3, this run needs N=8"),
                                           (["--layer-dim", "64"], r"4/3/5, this run needs 4/3/64")])
def test_eval_of_a_reservoir_for_another_window_or_layer_exits_2(saved, capsys, extra, pattern):
    code, out, err = run(["reservoir", "eval", str(saved), *extra], capsys)
    assert code == 2 and out == ""
    assert re.search(pattern, one_error_line(err))


def test_eval_of_a_missing_or_corrupt_file_exits_2(tmp_path, capsys):
    code, _, err = run(["reservoir", "eval", str(tmp_path / "none.pt")], capsys)
    assert code == 2 and "not found" in one_error_line(err)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    code, _, err = run(["reservoir", "eval", str(bad)], capsys)
    assert code == 2 and "not a readable" in one_error_line(err)


@pytest.mark.parametrize("units", ["0", "-3"])
def test_non_positive_units_exit_2(tmp_path, capsys, units):
    code, _, err = run(["reservoir", "train", "--window", "2", "--units", units, "--layer-dim", "5",
                        "--out", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "--units must be positive" in one_error_line(err)
    assert not (tmp_path / "x.pt").exists()
    code, _, err = run(["reservoir", "capacity", "--units", f"10,{units}", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--units must be positive" in one_error_line(err)


def test_several_alphas_need_ridge(tmp_path, capsys):
    code, _, err = run(["reservoir", "train", "--window", "2", "--units", "10", "--layer-dim", "5",
                        "--learner", "force", "--alpha", "1,10", "--out", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "--learner ridge" in one_error_line(err)


def test_capacity_writes_files_and_prints_the_table(tmp_path, capsys):
    out_dir = tmp_path / "cap"
    code, out, err = run(["reservoir", "capacity", "--windows", "2,3", "--units", "10,20", "--layer-dim", "5",
                          "--samples", "32", "--eval-samples", "16", "--alpha", "1,100", "--out", str(out_dir), *FAST],
                         capsys)
    assert code == 0
    assert {p.name for p in out_dir.iterdir()} == {"capacity.csv", "capacity.md", "capacity.png"}
    assert "| N \\ M | 10 | 20 |" in out and (out_dir / "capacity.md").read_text() in out
    assert len(re.findall(r"^N=\d+ M=\d+: r2=", err, flags=re.M)) == 4


def test_memory_capacity_prints_one_row_per_size(saved, capsys):
    code, out, _ = run(["reservoir", "memory-capacity", "--units", "10,20", "--samples-per-unit", "20",
                        "--max-delay", "3", "--streams", "4", "--steps-per-sample", "2"], capsys)
    assert code == 0
    rows = [line for line in out.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["10", "20"]
    code, out, _ = run(["reservoir", "memory-capacity", "--reservoir", str(saved), "--samples-per-unit", "20",
                        "--max-delay", "3", "--streams", "4", "--driven"], capsys)
    assert code == 0 and "| 30 |" in out
    assert Reservoir.load(saved).config.units == 30


def test_ridge_with_feedback_exits_2(tmp_path, capsys):
    code, _, err = run(["reservoir", "train", "--window", "2", "--units", "10", "--layer-dim", "5",
                        "--feedback-scale", "1", "--out", str(tmp_path / "x.pt")], capsys)
    assert code == 2 and "--learner force" in one_error_line(err)


def test_unwritable_output_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(["reservoir", "train", "--window", "2", "--units", "10", "--layer-dim", "5",
                        "--samples", "8", "--out", str(blocker / "x.pt"), *FAST], capsys)
    assert code == 2 and "is a file, not a folder" in one_error_line(err)


def test_eval_with_the_ceiling_reports_it_on_a_second_line(saved, capsys):
    code, out, _ = run(["reservoir", "eval", str(saved), "--samples", "16", "--streams", "4", "--washout", "2",
                        "--ceiling"], capsys)
    assert code == 0
    first, second = out.strip().splitlines()
    assert second.startswith("ceiling E[g_N | current sample]: r2=")
    values = dict(item.split("=") for item in second.split(": ", 1)[1].split())
    assert set(values) == {"r2", "cosine", "update_r2", "update_cosine", "update_cosine_100"}
    assert -1 <= float(values["update_cosine"]) <= 1
