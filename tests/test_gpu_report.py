"""`minilineage bench --gpu-report`: on a CPU the same stages run on a tiny subset and write the JSON and the
Markdown; a stage starts only with its minimum of the budget left, a failing stage costs only itself, and a
worker still running at the budget is stopped with what it measured kept. No timing is asserted: the
end-to-end run gets a budget far above what it needs, and the stopping is shown with stand-in stages."""

from __future__ import annotations

import json
import time

import pytest
import torch

from minilineage import bench, cli
from minilineage.bench import gpu_report, gpu_stages
from minilineage.bench.measure import trainer
from minilineage.bench.runner import recipe_job


def test_the_cpu_report_runs_every_stage_on_a_tiny_subset_and_writes_json_and_markdown(tmp_path):
    cli.main(["bench", "--gpu-report", str(tmp_path), "--device", "cpu", "--budget", "600"])
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    assert report["complete"] and not report["stopped_at_budget"] and report["not_run"] == report["errors"] == []
    assert report["plan"]["device"] == "cpu" and report["environment"]["device"].startswith("cpu (")
    assert list(report["stage_seconds"]) == [stage.name for stage in gpu_stages.stages(gpu_stages.CPU_PLAN)]
    tests = report["tests"]  # every CUDA-only test was collected, and skipped for want of a GPU
    assert tests["skipped"] == len(tests["tests"]) >= 8 and tests["passed"] == tests["failed"] == 0
    assert "test_compile_trains_a_diffusion_pipeline_on_cuda_as_eager_mode_does" in {t["name"] for t in tests["tests"]}
    rows = report["throughput"]
    with_reference = bench.diffusers_version() is not None
    assert [(r["who"], r["mode"]) for r in rows] == [("ours", "fp32"), ("ours", "bf16")] + (
        [("diffusers", "fp32"), ("diffusers", "bf16")] if with_reference else [])
    ours = rows[0]
    assert ours["recipe"] == "ddpm-mnist" and ours["batch_size"] == 4 and ours["params"] == 571_332
    assert ours["train_flops"] == bench.count_flops(trainer(recipe_job("ddpm-mnist"), torch.device("cpu"), 4))
    assert all(r["train_img_s"] > 0 and r["sample_img_s"] > 0 and r["share_of_bf16_peak"] is None for r in rows)
    (quality,) = report["quality"]
    assert (quality["recipe"], quality["size"], quality["batch_size"], quality["samples"]) == ("dit-mnist", "cpu", 16, 20)
    assert 1 <= quality["steps_done"] <= quality["planned_steps"] and quality["fid_lenet"] > 0
    assert 0 <= quality["accuracy"] <= 1
    text = (tmp_path / "gpu-report.md").read_text()
    assert "CUDA-only tests: 0 passed, 0 failed" in text and "| ddpm-mnist | cpu | 4 | ours | fp32 |" in text
    assert "| dit-mnist (cpu preset) | 16 |" in text and text.strip() == gpu_report.markdown(report)


def stand_in(results, min_s=0.0, fail=False):
    def run(plan, deadline):
        yield from results
        if fail:
            raise RuntimeError("out of memory")
    return gpu_stages.Stage("stand-in", run, min_s)


def worker_lines(capsys) -> list[dict]:
    return [json.loads(line.removeprefix(gpu_stages.RESULT_PREFIX)) for line in capsys.readouterr().out.splitlines()]


def test_a_stage_starts_only_with_its_minimum_left_and_a_failing_one_costs_only_itself(monkeypatch, capsys):
    monkeypatch.setattr(gpu_stages, "stages", lambda plan: [
        stand_in([{"a": 1}], fail=True), stand_in([{"b": 2}], min_s=3600), stand_in([{"c": 3}, {"d": 4}])])
    gpu_stages.work(gpu_stages.CPU_PLAN, deadline=time.time() + 60)
    lines = [{k: v for k, v in line.items() if k != "stage"} for line in worker_lines(capsys)]
    assert lines[:2] == [{"a": 1}, {"error": "RuntimeError: out of memory"}]
    assert "done_s" in lines[2] and lines[3]["not_run"].startswith("budget: ") and "it needs 3600 s" in lines[3]["not_run"]
    assert lines[4:6] == [{"c": 3}, {"d": 4}] and "done_s" in lines[6] and len(lines) == 7


def test_a_worker_still_running_at_the_budget_is_stopped_and_what_it_sent_is_kept(monkeypatch, tmp_path):
    first = gpu_stages.RESULT_PREFIX + json.dumps({"stage": "environment", "device": "somewhere"})
    monkeypatch.setattr(gpu_report, "WORKER_CODE", f"import time; print({first!r}, flush=True); time.sleep(600)")
    report = gpu_report.run_gpu_report(tmp_path, budget_s=3, device="cpu")
    assert report["stopped_at_budget"] and not report["complete"] and report["worker_returncode"] != 0
    assert report["environment"] == {"device": "somewhere"}
    assert json.loads((tmp_path / "gpu-report.json").read_text()) == report
    assert "stopped at the budget" in (tmp_path / "gpu-report.md").read_text()


def test_the_markdown_reads_ours_against_diffusers_per_model_and_mode():
    def row(who, img_s, sample):
        return {"recipe": "ddpm-mnist", "size": "gpu", "batch_size": 256, "who": who, "mode": "bf16", "train_img_s": img_s,
                "ms_per_step": 1.0, "train_tflop_s": 10.0, "share_of_bf16_peak": 0.01, "sample_img_s": sample, "peak_MB": 100.0}
    report = {"environment": {"gpu": "NVIDIA H100 80GB HBM3", "bf16_peak_tflop_s": 989.4}, "started": "today",
              "budget_s": 480, "elapsed_s": 470, "command": "c", "complete": True, "stopped_at_budget": False,
              "tests": None, "throughput": [row("ours", 2000.0, 300.0), row("diffusers", 800.0, 200.0)], "quality": [],
              "not_run": [{"stage": "quality ddpm-mnist", "not_run": "budget: 10 s left, it needs 90 s"}], "errors": []}
    text = gpu_report.markdown(report)
    assert text.startswith("#### NVIDIA H100 80GB HBM3, today") and "989 TFLOP/s" in text
    assert "| ddpm-mnist | gpu | bf16 | 2.50x | 1.50x |" in text
    assert "| ddpm-mnist | gpu | 256 | ours | bf16 | 2,000 | 1.00 | 10.00 | 1.0 | 300 | 100 |" in text
    assert "Not run: quality ddpm-mnist: budget: 10 s left, it needs 90 s." in text


def test_the_plans_run_on_their_devices_and_the_cli_reaches_the_report(monkeypatch, capsys):
    assert gpu_report.plan_for("cpu") == gpu_stages.CPU_PLAN
    assert gpu_stages.GPU_PLAN.device == "cuda" and gpu_stages.GPU_PLAN.quality[0] == "dit-mnist"
    assert {m for m, _ in gpu_stages.GPU_PLAN.models} == {"ddpm-mnist", "dit-mnist", "ddpm-cifar10", "dit-cifar10",
                                                           "videodit-moving-mnist"}
    seen = {}
    monkeypatch.setattr(bench, "run_gpu_report", lambda out, **kwargs: seen.update(out=out, **kwargs))
    cli.main(["bench", "--gpu-report", "OUT"])
    assert seen == {"out": "OUT", "budget_s": 480.0, "device": "auto"}
    with pytest.raises(SystemExit):
        cli.main(["bench", "--gpu-report", "OUT", "--budget", "0"])
    assert "must be a positive number" in capsys.readouterr().err


def test_a_plan_passed_to_the_worker_comes_back_equal(monkeypatch):
    got = {}
    monkeypatch.setattr(gpu_stages, "work", lambda plan, deadline: got.update(plan=plan, deadline=deadline))
    gpu_stages.worker_main([gpu_stages.plan_json(gpu_stages.GPU_PLAN), "12.5"])
    assert got == {"plan": gpu_stages.GPU_PLAN, "deadline": 12.5}
