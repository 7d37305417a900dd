"""Every script in examples/ runs, on a tiny setting (``--quick``), as a user would run it."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.py"))
RULE_OF = {"biohsic_exact": "biohsic", "biohsic_paper": "biohsic", "reservoir_closed_loop": "biohsic",
           "backprop": "bp", "hsic_bottleneck": "hsic", "phsic": "phsic", "feedback_alignment": "fa",
           "readout_only": "readout"}

pytestmark = pytest.mark.slow


def test_there_is_an_example_for_every_rule():
    from biohsic.rules import RULES

    assert {p.stem for p in EXAMPLES} == set(RULE_OF)
    covered = set(RULE_OF.values()) | {"dfa", "phsic-stream"}  # in feedback_alignment.py and phsic.py
    assert covered == set(RULES)


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_and_reports_accuracies(script, tmp_path):
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    accuracies = [float(v) for v in re.findall(r"accuracy (\d\.\d+)", result.stdout)]
    assert accuracies and all(0.0 <= a <= 1.0 for a in accuracies), result.stdout
    assert list(tmp_path.iterdir()) == []  # an example writes no run folder where it is started
