"""Turns the evidence of a check into a verdict: what went wrong, and what to change.

A pass needs positive evidence for every claim (each reclaim happened, the next attempt resumed
from a checkpoint, the run finished, the outputs match), so a script that cannot be judged
fails with advice on how to make it measurable rather than passing by default.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.check.runner import AttemptResult, CheckConfig

RESUME_ADVICE = "load the newest checkpoint from $SPOTRUN_CHECKPOINT_DIR before training (spotrun.load_latest(), or Checkpointer.restore())"
PROGRESS_ADVICE = "call spotrun.report_progress(step) each step (or print 'step N') so the check can see where each attempt started and stopped"


@dataclass
class Finding:
    level: str  # fail | warn
    message: str
    advice: str = ""


@dataclass
class ReclaimEvidence:
    number: int
    attempt: int
    at_step: int | None  # the last step the reclaimed attempt reported
    saw_notice: bool  # it exited on the signal, before the agent had to SIGKILL it
    resumed_from: int | None  # steps already done when the next attempt started
    lost_steps: int | None
    lost_seconds: float | None


@dataclass
class Verdict:
    passed: bool
    findings: list[Finding]
    reclaims: list[ReclaimEvidence]
    finished: bool
    outputs_compared: bool
    baseline_seconds: float
    interrupted_seconds: float
    attempts: int
    progress_source: str
    workdir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "fail",
            "finished": self.finished,
            "attempts": self.attempts,
            "reclaims": [vars(r) for r in self.reclaims],
            "outputs_compared": self.outputs_compared,
            "baseline_seconds": round(self.baseline_seconds, 3),
            "interrupted_seconds": round(self.interrupted_seconds, 3),
            "progress_source": self.progress_source,
            "findings": [vars(f) for f in self.findings],
            "workdir": self.workdir,
        }


def judge(config: CheckConfig, baseline: AttemptResult, attempts: list[AttemptResult]) -> Verdict:
    findings: list[Finding] = []
    if baseline.exit_code != 0:
        status = "did not finish in time" if baseline.exit_code is None else f"exited {baseline.exit_code}"
        findings.append(Finding(
            "fail", f"the command fails without any reclaim: it {status}. Last lines:\n  " + "\n  ".join(baseline.log_tail()),
            "fix the command so it succeeds on its own first",
        ))
        return _verdict(findings, [], baseline, attempts, False, False)

    start = _first_step(baseline)
    rate = _seconds_per_step(baseline)
    reclaims = []
    for index, result in enumerate(attempts):
        if not result.reclaimed:  # no notice, or the script finished before the notice reached it
            continue
        number = len(reclaims) + 1
        nxt = attempts[index + 1] if index + 1 < len(attempts) else None
        evidence = _reclaim_evidence(number, result, nxt, start, rate)
        reclaims.append(evidence)
        findings += _reclaim_findings(evidence, result, nxt, config)

    last = attempts[-1] if attempts else None
    finished = last is not None and last.exit_code == 0
    if last is not None and not finished and last.exit_code != EXIT_RECLAIMED:
        if last.exit_code is None:
            findings.append(Finding("fail", f"attempt {last.attempt} hung: still running after {last.duration:.0f}s",
                                    "make sure the script exits when its work is done, and on the notice signal"))
        elif last.attempt > 1:
            findings.append(Finding(
                "fail", f"crashed when resuming: attempt {last.attempt} exited {last.exit_code}. Last lines:\n  "
                + "\n  ".join(last.log_tail()), "make loading a checkpoint work: run the script twice by hand and read the error",
            ))
        else:
            findings.append(Finding("fail", f"attempt 1 exited {last.exit_code} without a reclaim, unlike the baseline",
                                    "the script fails intermittently; fix that before judging its resume"))
    if len(reclaims) < config.reclaims and finished:
        findings.append(Finding("warn", f"only {len(reclaims)} of {config.reclaims} reclaims happened before the script finished",
                                "give the script more work (steps) or ask for fewer --reclaims"))
    if not reclaims:
        findings.append(Finding("fail", "no reclaim could be tested", "the script finished before any reclaim point; give it more work"))

    strays = sorted({s for r in [baseline, *attempts] for s in r.stray_checkpoints})
    if strays:
        findings.append(Finding(
            "warn", "wrote checkpoint-like files outside $SPOTRUN_CHECKPOINT_DIR, which are lost with the machine: " + ", ".join(strays[:5]),
            "write checkpoints under spotrun.checkpoint_dir() so the agent makes them durable",
        ))

    compared = False
    if finished and config.outputs:
        if config.compare_outputs:
            compared = True
            findings += _compare_outputs(config, baseline, last)
        else:
            findings.append(Finding("warn", "declared outputs were not compared (--no-compare-outputs): "
                                    "the check cannot tell whether the resumed run computed the same result", ""))
    return _verdict(findings, reclaims, baseline, attempts, finished, compared)


def _verdict(findings, reclaims, baseline, attempts, finished, compared) -> Verdict:
    source = baseline.progress.source
    return Verdict(
        passed=finished and not any(f.level == "fail" for f in findings),
        findings=findings, reclaims=reclaims, finished=finished, outputs_compared=compared,
        baseline_seconds=baseline.duration, interrupted_seconds=sum(a.duration for a in attempts),
        attempts=len(attempts), progress_source=source,
    )


def _first_step(baseline: AttemptResult) -> int:
    return baseline.progress.first if baseline.progress.first is not None else 0


def _seconds_per_step(baseline: AttemptResult) -> float | None:
    steps = set(baseline.progress.steps)
    return baseline.duration / len(steps) if steps else None


def _reclaim_evidence(number: int, result: AttemptResult, nxt: AttemptResult | None, start: int, rate: float | None) -> ReclaimEvidence:
    at_step = result.progress.last
    resumed_from = None
    if nxt is not None:
        if nxt.progress.restores:
            resumed_from = nxt.progress.restores[0] - start + 1
        elif nxt.progress.first is not None:
            resumed_from = nxt.progress.first - start
    lost = None
    if at_step is not None and resumed_from is not None:
        lost = max(0, (at_step - start + 1) - resumed_from)
    return ReclaimEvidence(
        number=number, attempt=result.attempt, at_step=at_step, saw_notice=not result.escalated,
        resumed_from=resumed_from, lost_steps=lost,
        lost_seconds=None if lost is None or rate is None else round(lost * rate, 3),
    )


def _reclaim_findings(ev: ReclaimEvidence, result: AttemptResult, nxt: AttemptResult | None, config: CheckConfig) -> list[Finding]:
    found = []
    if result.escalated:
        found.append(Finding(
            "warn", f"reclaim {ev.number}: the script ignored {config.signal} and was killed at the deadline",
            "handle the notice: stop and save when spotrun.should_stop() is true, or use spotrun.on_notice(...)",
        ))
    if nxt is None or nxt.exit_code not in (0, EXIT_RECLAIMED):
        return found  # the next attempt's own failure is reported on its own
    if ev.at_step is None or ev.resumed_from is None:
        found.append(Finding("fail", f"reclaim {ev.number}: cannot tell where attempt {nxt.attempt} resumed", PROGRESS_ADVICE))
    elif ev.resumed_from <= 0 and (ev.lost_steps or 0) > 0:
        found.append(Finding(
            "fail", f"restarted from step 0 after reclaim {ev.number} (it had reached step {ev.at_step})", RESUME_ADVICE,
        ))
    elif ev.lost_steps and not result.escalated:
        found.append(Finding(
            "warn", f"reclaim {ev.number}: {ev.lost_steps} step(s) of work lost although {config.lead_time:.0f}s of warning was given",
            "save a checkpoint when the notice comes (spotrun.should_stop() / Checkpointer saves on notice)",
        ))
    return found


def _compare_outputs(config: CheckConfig, baseline: AttemptResult, last: AttemptResult) -> list[Finding]:
    found = []
    for name in config.outputs:
        a, b = baseline.outputs.get(name), last.outputs.get(name)
        if a is None:
            found.append(Finding("fail", f"declared output {name} was not written by the uninterrupted run", "check the --output path"))
        elif b is None:
            found.append(Finding("fail", f"declared output {name} is missing after the interrupted run", "write outputs at the end of every run, also a resumed one"))
        elif not _same(a.read_bytes(), b.read_bytes(), config.tolerance):
            found.append(Finding(
                "fail", f"output {name} differs from the uninterrupted run's",
                "restore everything that shapes the result: optimizer, LR schedule, RNG states and the data position "
                "(if the script is nondeterministic, pass --tolerance or --no-compare-outputs)",
            ))
    return found


def _same(a: bytes, b: bytes, tolerance: float) -> bool:
    if a == b:
        return True
    if tolerance <= 0:
        return False
    try:
        return _close(json.loads(a), json.loads(b), tolerance)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _close(x: Any, y: Any, tol: float) -> bool:
    if isinstance(x, bool) or isinstance(y, bool):
        return x == y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return math.isclose(x, y, rel_tol=tol, abs_tol=tol)
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k], tol) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(i, j, tol) for i, j in zip(x, y))
    return x == y
