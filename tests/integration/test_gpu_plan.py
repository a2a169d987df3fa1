"""integration/gpu_plan.sh's step log records each step's real exit status (the GPU sessions' record)."""

import re
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "integration" / "gpu_plan.sh"


def test_step_records_the_exit_status_of_its_command(tmp_path):
    (tmp_path / "repo").mkdir()
    script = (f'source {SCRIPT} --functions; PLAN={tmp_path}; REPO={tmp_path}/repo; '
              'step fails sh -c "exit 3"; step works true')
    subprocess.run(["bash", "-c", script], check=True)
    ends = re.findall(r"^== \S+ (\w+): exit (\d+)$", (tmp_path / "steps.log").read_text(), re.MULTILINE)
    assert ends == [("fails", "3"), ("works", "0")]
