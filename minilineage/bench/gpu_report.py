"""`minilineage bench --gpu-report OUT`: everything GPU-side in one command that stops at its budget.

A lent GPU comes for minutes, one call at a time, so the command is prepared ahead: the stages of
`gpu_stages` (environment, the CUDA-only tests, throughput eager / bf16 / compiled, ours against
diffusers, a time-to-quality run) run in one worker process, in order of how much each figure is wanted.
This process watches it: it writes OUT/gpu-report.json and OUT/gpu-report.md after every result, and
at the budget it stops the worker, so what was measured is kept and what was not is listed as such.

    minilineage bench --gpu-report OUT [--budget 480] [--device cuda]

On CUDA it runs `gpu_stages.GPU_PLAN` (about 8 minutes on one H100); elsewhere the same stages on a
tiny subset (`CPU_PLAN`: `--device cpu --budget 60` ends in well under a minute), which the tests run.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from minilineage.bench.gpu_stages import CPU_PLAN, GPU_PLAN, RESULT_PREFIX, ROOT, Plan, plan_json
from minilineage.train import pick_device

GRACE_S = 5.0  # the worker plans to finish this long before the budget; the watchdog stops it at the budget
WORKER_CODE = "import sys; from minilineage.bench.gpu_stages import worker_main; worker_main(sys.argv[1:])"


def plan_for(device: str) -> Plan:
    """GPU_PLAN on CUDA; the tiny CPU_PLAN on any other device (the same stages, so the command cannot rot)."""
    picked = pick_device(device)
    if picked.type == "cuda":
        return GPU_PLAN
    return CPU_PLAN if picked.type == "cpu" else Plan(**{**asdict(CPU_PLAN), "device": picked.type})


def run_gpu_report(out: str | Path, budget_s: float = 480.0, device: str = "auto") -> dict:
    """Run every stage for `device` within `budget_s` seconds; write OUT/gpu-report.json and .md; return the report."""
    out, plan, started = Path(out), plan_for(device), time.time()
    out.mkdir(parents=True, exist_ok=True)
    report = {"command": f"minilineage bench --gpu-report {out} --budget {budget_s:g} --device {device}",
              "budget_s": budget_s, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "plan": json.loads(plan_json(plan)),
              "environment": None, "tests": None, "throughput": [], "quality": [], "not_run": [], "errors": [], "stage_seconds": {},
              "stopped_at_budget": False, "complete": False}
    save(report, out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    worker = subprocess.Popen([sys.executable, "-c", WORKER_CODE, plan_json(plan), str(started + budget_s - GRACE_S)],
                              stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_forward, args=(worker.stdout, lines), daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=max(0.1, started + budget_s - time.time()))
        except queue.Empty:  # the budget is spent: stop the worker and everything it started
            os.killpg(worker.pid, signal.SIGKILL)
            report["stopped_at_budget"] = True
            break
        if line is None:
            break
        if line.startswith(RESULT_PREFIX):
            add(report, json.loads(line.removeprefix(RESULT_PREFIX)))
            save(report, out)
        else:
            print(line, end="", flush=True)
    worker.wait()
    report |= {"elapsed_s": round(time.time() - started, 1), "worker_returncode": worker.returncode,
               "complete": worker.returncode == 0 and not report["stopped_at_budget"] and not report["not_run"]}
    save(report, out)
    print("\n" + markdown(report))
    print(f"\nwrote {out / 'gpu-report.json'} and {out / 'gpu-report.md'}")
    return report


def _forward(stream, lines: queue.Queue) -> None:
    """Each line the worker prints, then None at its end (a thread: the watchdog waits with a timeout)."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def add(report: dict, result: dict) -> None:
    """File one worker result under its stage: rows of throughput and quality, the tests, the environment."""
    stage = result.pop("stage")
    if "done_s" in result:
        report["stage_seconds"][stage] = result["done_s"]
        return
    if "not_run" in result or "error" in result:
        report["not_run" if "not_run" in result else "errors"].append({"stage": stage, **result})
    elif stage in ("environment", "tests"):
        report[stage] = result
    else:
        report[stage.split()[0]].append(result)


def save(report: dict, out: Path) -> None:
    """OUT/gpu-report.json and OUT/gpu-report.md, each replaced in one step (a stop never leaves half a file)."""
    for name, text in (("gpu-report.json", json.dumps(report, indent=2) + "\n"), ("gpu-report.md", markdown(report) + "\n")):
        part = out / f".{name}.part"
        part.write_text(text)
        part.replace(out / name)


def _number(value, spec: str = ",.1f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    """The report as Markdown for docs/RESULTS.md: the machine, the tests, throughput, ours / diffusers, quality."""
    env = report["environment"] or {}
    state = ("complete" if report["complete"] else "stopped at the budget" if report["stopped_at_budget"]
             else "incomplete (see below)" if "elapsed_s" in report else "running")
    lines = [f"#### {env.get('gpu') or env.get('device', 'device not reached')}, {report['started']}", "",
             f"torch {env.get('torch', '?')}, CUDA {env.get('cuda', '-')}, diffusers {env.get('diffusers') or 'not installed'}; "
             f"bf16 peak {_number(env.get('bf16_peak_tflop_s'), ',.0f')} TFLOP/s; CPU {env.get('cpu', '?')}; budget "
             f"{report['budget_s']:g} s, {_number(report.get('elapsed_s'), '.0f')} s used: {state}. "
             f"`{report['command']}`", ""]
    tests = report["tests"]
    if tests:
        failed = [f"{c['name']} ({c.get('message', '')[:120]})" for c in tests["tests"] if c["outcome"] == "failed"]
        lines += [f"CUDA-only tests: {tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped"
                  + (f"; failed: {'; '.join(failed)}" if failed else "") + ".", ""]
    if report["throughput"]:
        lines += ["| model | size | batch | who | mode | train img/s | ms/step | TFLOP/s | % of bf16 peak "
                  "| sample img/s | peak MB |", "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in report["throughput"]:
            share = None if r["share_of_bf16_peak"] is None else 100 * r["share_of_bf16_peak"]
            lines.append(f"| {r['recipe']} | {r['size']} | {r['batch_size']} | {r['who']} | {r['mode']} "
                         f"| {_number(r['train_img_s'], ',.0f')} | {_number(r['ms_per_step'], ',.2f')} "
                         f"| {_number(r['train_tflop_s'], ',.2f')} | {_number(share)} "
                         f"| {_number(r.get('sample_img_s'), ',.0f')} | {_number(r['peak_MB'], ',.0f')} |")
        lines += ["", *ratio_lines(report["throughput"])]
    if report["quality"]:
        lines += ["| recipe (model size) | batch | params | trained | steps | train img/s | FID-LeNet (real digits) "
                  "| classified as asked | guidance, n |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for q in report["quality"]:
            lines.append(f"| {q['recipe']} ({q['size']} preset) | {q['batch_size']} | {q['params'] / 1e6:.2f} M "
                         f"| {q['wall_time_s']:.0f} s on mnist-5k | {q['steps_done']:,} | {q['train_img_s']:,.0f} "
                         f"| {q['fid_lenet']:,.1f} ({q['real_floor']:.1f}) | {q['accuracy']:.1%} "
                         f"| {q['guidance']:g}, {q['samples']} |")
        lines.append("")
    lines += [f"Not run: {r['stage']}: {r['not_run']}." for r in report["not_run"]]
    lines += [f"Error: {r['stage']}: {r['error']}" for r in report["errors"]]
    return "\n".join(lines).rstrip()


def ratio_lines(rows: list[dict]) -> list[str]:
    """Ours / the diffusers reference per image, for each model, size and mode measured for both."""
    theirs = {(r["recipe"], r["size"], r["mode"]): r for r in rows if r["who"] == "diffusers"}
    pairs = [(r, theirs[r["recipe"], r["size"], r["mode"]]) for r in rows
             if r["who"] == "ours" and (r["recipe"], r["size"], r["mode"]) in theirs]
    if not pairs:
        return []
    lines = ["Ours / diffusers, the same job (images/s ratio):", "",
             "| model | size | mode | training | sampling |", "|---|---|---|---:|---:|"]
    for ours, ref in pairs:
        sampling = (f"{ours['sample_img_s'] / ref['sample_img_s']:.2f}x"
                    if ours.get("sample_img_s") and ref.get("sample_img_s") else "-")
        lines.append(f"| {ours['recipe']} | {ours['size']} | {ours['mode']} "
                     f"| {ours['train_img_s'] / ref['train_img_s']:.2f}x | {sampling} |")
    return [*lines, ""]
