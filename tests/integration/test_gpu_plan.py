"""integration/gpu_plan.sh's step log records each step's real exit status (the GPU sessions' record)."""

import json
import re
import shlex
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


def test_each_ab_job_runs_its_engines_checks_then_its_own_plan():
    script = (f'source {SCRIPT} --functions; step() {{ echo "$1 $*"; }}; vllm_checks() {{ echo vllm-checks; }}; '
              'sglang_checks() { echo sglang-checks; }; for j in $AB_JOBS; do ${j}_job; done')
    lines = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout.splitlines()
    jobs = ["vllm_small", "sglang_small", "vllm_gemma", "sglang_eagle", "vllm_gptoss", "vllm_small_det",
            "sglang_gemma", "sglang_dense", "vllm_small_nocompile"]
    assert lines[::2] == [f"{j.split('_')[0]}-checks" for j in jobs]
    for job, line in zip(jobs, lines[1::2]):
        name = job.replace("_", "-")
        assert line.startswith(f"{name} {name} python3 -m integration.serve_ab run --engine {job.split('_')[0]} ")
        assert line.endswith(f"--out /tmp/plan/{name}")


def test_a_job_on_a_second_gpu_serves_on_its_own_port():
    """Two jobs of one engine side by side on one host must not both bind the engine's default port."""
    script = f'source {SCRIPT} --functions; step() {{ echo "$*"; }}; vllm_checks() {{ :; }}; sglang_checks() {{ :; }}; '
    lines = [subprocess.run(["bash", "-c", script + job], check=True, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": gpu}).stdout.strip()
             for gpu, job in (("0", "vllm_gptoss_job"), ("1", "vllm_small_nocompile_job"), ("1", "sglang_gemma_job"))]
    assert "--port" not in lines[0]
    assert lines[1].endswith("--out /tmp/plan/vllm-small-nocompile --port 8010")
    assert lines[2].endswith("--out /tmp/plan/sglang-gemma --port 30010")


def test_tag_names_a_new_plan_beside_a_carried_one_and_repeats_grows_it():
    script = f'source {SCRIPT} --functions; step() {{ echo "$*"; }}; vllm_checks() {{ :; }}; vllm_gemma_job'
    env = {"PATH": "/usr/bin:/bin", "TAG": "h100", "REPEATS": "7"}
    line = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True, env=env).stdout
    assert " --repeats 7 " in line and line.strip().endswith("--out /tmp/plan/vllm-gemma-h100")


def test_estimate_refuses_an_unknown_job_naming_the_accepted_ones():
    done = subprocess.run(["bash", str(SCRIPT), "estimate", "vllm_nope"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == ("gpu_plan.sh estimate: unknown job 'vllm_nope'; accepted: vllm_small, "
                                   "sglang_small, vllm_gemma, sglang_eagle, vllm_gptoss, vllm_small_det, "
                                   "sglang_gemma, sglang_dense, vllm_small_nocompile")


def test_the_nocompile_job_hands_vllm_one_compilation_config_beside_the_common_flags():
    """The server flags reach the runner as one string; split as the runner splits them, the JSON stays whole."""
    script = f'source {SCRIPT} --functions; printf "%s\\n" "${{VLLM_SMALL_NOCOMPILE[@]}}"'
    args = subprocess.run(["bash", "-c", script], check=True, capture_output=True, text=True).stdout.splitlines()
    assert args.count("--extra-server-args") == 1
    flags = shlex.split(args[args.index("--extra-server-args") + 1])
    assert flags == ["--max-cudagraph-capture-size", "16", "--max-num-seqs", "16", "--compilation-config",
                     json.dumps({"mode": "NONE", "cudagraph_mode": "FULL_DECODE_ONLY"})]


def test_jobs_named_for_one_gpu_run_one_after_another_and_other_gpus_do_not_wait(tmp_path):
    """Two A/B plans side by side on one card would each time the other; a job on another card starts at once."""
    fake = tmp_path / "repo" / "integration" / "gpu_plan.sh"
    fake.parent.mkdir(parents=True)
    log = tmp_path / "order.log"
    fake.write_text("".join(f'{j}_job() {{ echo "{j} start $CUDA_VISIBLE_DEVICES" >> {log}; sleep {s}; '
                            f'echo "{j} end" >> {log}; }}\n' for j, s in (("a", 1), ("b", 0), ("c", 0.3))))
    script = (f'source {SCRIPT} --functions; PLAN={tmp_path}; REPO={tmp_path}/repo; start_jobs a:0 b:0 c:1; '
              f'until [ -f {tmp_path}/b.done ] && [ -f {tmp_path}/c.done ]; do sleep 0.1; done')
    subprocess.run(["bash", "-c", script], check=True, capture_output=True, timeout=30)
    order = log.read_text().splitlines()
    assert order.index("a end") < order.index("b start 0")
    assert order.index("c start 1") < order.index("a end")
