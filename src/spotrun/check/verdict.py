"""Turns the evidence of a check into a verdict: what went wrong, and what to change.

A pass needs positive evidence for every claim (each reclaim happened, the next attempt resumed
from what the store held, the run finished, the outputs match). Evidence that cannot be read is
not a fault of the script: the verdict is then "inconclusive" (its own exit status) with advice
on making progress visible, never a FAIL. A resume from state the store did not hold is a FAIL
whatever else looks right: a real next machine would not have it.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotrun.agent.supervisor import EXIT_RECLAIMED
from spotrun.check.runner import AttemptResult, CheckConfig
from spotrun.workdir import copied_files

RESUME_ADVICE = "load the newest checkpoint from $SPOTRUN_CHECKPOINT_DIR before training (spotrun.load_latest(), or Checkpointer.restore())"
PROGRESS_ADVICE = ("call spotrun.report_progress(step) each step, or print 'step N' or {\"step\": N} lines, "
                   "so the check can see where each attempt started and stopped")
LOCAL_ADVICE = ("a next machine starts with an empty disk: keep checkpoints under $SPOTRUN_CHECKPOINT_DIR "
                "(or pass the fixed path the script uses as --checkpoint-dir) so the agent makes them durable")
COUNTER_ADVICE = ("restore the epoch/step counter (and optimizer, LR schedule, data position) along with the weights, "
                  "and continue the loop from there")
SOURCE_SUFFIXES = (".py", ".sh", ".yaml", ".yml", ".toml", ".json", ".cfg")
CLEARLY_FASTER = 0.85  # the resumed run took at most this share of a run from scratch


@dataclass
class Finding:
    level: str  # fail | inconclusive | warn | note
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
    restore_seen: bool = False  # the next attempt said it loaded a checkpoint (SDK or framework)
    store_had_snapshot: bool = True  # when the next attempt started
    saved_step: int | None = None  # the framework's step count in the snapshot left behind
    work_lost: str = "-"  # "12.3s", or "unknown" when the resume is proven but not measurable


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
    isolation: str = ""

    @property
    def inconclusive(self) -> bool:
        return not self.passed and not any(f.level == "fail" for f in self.findings) and any(
            f.level == "inconclusive" for f in self.findings)

    @property
    def word(self) -> str:
        return "pass" if self.passed else "inconclusive" if self.inconclusive else "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.word,
            "finished": self.finished,
            "attempts": self.attempts,
            "reclaims": [vars(r) for r in self.reclaims],
            "outputs_compared": self.outputs_compared,
            "baseline_seconds": round(self.baseline_seconds, 3),
            "interrupted_seconds": round(self.interrupted_seconds, 3),
            "progress_source": self.progress_source,
            "findings": [vars(f) for f in self.findings],
            "workdir": self.workdir,
            "isolation": self.isolation,
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

    last = attempts[-1] if attempts else None
    finished = last is not None and last.exit_code == 0
    compared, output_findings = False, []
    if finished and config.outputs:
        if config.compare_outputs:
            compared = True
            output_findings = _compare_outputs(config, baseline, last)
        else:
            output_findings.append(Finding("warn", "declared outputs were not compared (--no-compare-outputs): "
                                           "the check cannot tell whether the resumed run computed the same result", ""))
    outputs_match = compared and not any(f.level == "fail" for f in output_findings)

    start = _first_step(baseline)
    rate = _seconds_per_step(baseline)
    reclaims: list[ReclaimEvidence] = []
    unmeasured: list[tuple[ReclaimEvidence, AttemptResult]] = []
    for index, result in enumerate(attempts):
        if not result.reclaimed:  # no notice, or the script finished before the notice reached it
            continue
        nxt = attempts[index + 1] if index + 1 < len(attempts) else None
        evidence = _reclaim_evidence(len(reclaims) + 1, result, nxt, start, rate)
        reclaims.append(evidence)
        earlier = _likely_own([baseline, *attempts[: index + 1]], config)
        found, unknown = _reclaim_findings(evidence, result, nxt, config, earlier, compared and not outputs_match)
        findings += found
        if unknown:
            unmeasured.append((evidence, nxt))
    findings += _local_resumes(baseline, attempts, start, config)
    if unmeasured:
        findings += _unmeasured(unmeasured, baseline, last, finished, outputs_match)

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
        findings.append(Finding("inconclusive", "no reclaim could be tested",
                                "the script finished before any reclaim point; give it more work"))

    strays = sorted({s for r in [baseline, *attempts] for s in r.stray_checkpoints})
    if strays:
        findings.append(Finding(
            "warn", "wrote checkpoint-like files outside the checkpoint directory, which are lost with the machine: " + ", ".join(strays[:5]),
            "write checkpoints under spotrun.checkpoint_dir() (or name their directory with --checkpoint-dir) so the agent makes them durable",
        ))
    findings += output_findings
    return _verdict(findings, reclaims, baseline, attempts, finished, compared)


def _verdict(findings, reclaims, baseline, attempts, finished, compared) -> Verdict:
    source = baseline.progress.source
    blocking = ("fail", "inconclusive")
    return Verdict(
        passed=finished and not any(f.level in blocking for f in findings),
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
        elif nxt.progress.restore_lines and result.saved_step is not None:
            resumed_from = result.saved_step  # the framework's count of completed steps
    lost = None
    if at_step is not None and resumed_from is not None:
        lost = max(0, (at_step - start + 1) - resumed_from)
    seconds = None if lost is None or rate is None else round(lost * rate, 3)
    return ReclaimEvidence(
        number=number, attempt=result.attempt, at_step=at_step, saw_notice=not result.escalated,
        resumed_from=resumed_from, lost_steps=lost, lost_seconds=seconds,
        restore_seen=nxt is not None and nxt.progress.restore_seen,
        store_had_snapshot=nxt is None or nxt.store_had_snapshot, saved_step=result.saved_step,
        work_lost="-" if seconds is None else f"{seconds:.1f}s",
    )


def _reclaim_findings(
    ev: ReclaimEvidence, result: AttemptResult, nxt: AttemptResult | None, config: CheckConfig,
    local_writes: list[str], outputs_differ: bool,
) -> tuple[list[Finding], bool]:
    """The findings of one reclaim, and whether its lost work could not be measured."""
    found = []
    if result.escalated:
        signal = "the notice" if config.signal == "none" else config.signal
        found.append(Finding(
            "warn", f"reclaim {ev.number}: the script ignored {signal} and was killed at the deadline",
            "handle the notice: stop and save when spotrun.should_stop() is true, or use spotrun.on_notice(...)",
        ))
    if nxt is None or nxt.exit_code not in (0, EXIT_RECLAIMED):
        return found, False  # the next attempt's own failure is reported on its own
    unit = result.progress.unit
    where = f": it wrote {', '.join(local_writes[:3])} there" if local_writes else ""
    if not nxt.store_had_snapshot and resumed_locally(nxt, ev.resumed_from):
        return found, False  # reported once, for every attempt, by `_local_resumes`
    if ev.at_step is None or ev.resumed_from is None:
        return found, True
    elif ev.resumed_from <= 0 and (ev.lost_steps or 0) > 0:
        if ev.restore_seen or outputs_differ:
            said = "loaded a checkpoint" if ev.restore_seen else "did not reproduce the uninterrupted result"
            found.append(Finding(
                "fail", f"after reclaim {ev.number} attempt {nxt.attempt} {said} but restarted its {unit} count at 0 "
                f"(it had reached {unit} {ev.at_step}): it restores the weights but not where training stood",
                COUNTER_ADVICE,
            ))
        else:
            found.append(Finding(
                "fail", f"restarted from {unit} 0 after reclaim {ev.number} (it had reached {unit} {ev.at_step})"
                + (f"; its checkpoints went to machine-local paths{where}" if where else ""),
                LOCAL_ADVICE if where else RESUME_ADVICE,
            ))
    elif ev.lost_steps and not result.escalated:
        found.append(Finding(
            "warn", f"reclaim {ev.number}: {ev.lost_steps} {unit}(s) of work lost although {config.lead_time:.0f}s of warning was given",
            "save a checkpoint when the notice comes (spotrun.should_stop() / Checkpointer saves on notice)",
        ))
    return found, False


def resumed_locally(attempt: AttemptResult, resumed_from: int | None) -> bool:
    return (resumed_from or 0) > 0 or attempt.progress.restore_seen


def _likely_own(results: list[AttemptResult], config: CheckConfig) -> list[str]:
    """The machine-local writes of `results`, the script's own first: those whose path or folder
    its command, output or source names (a shared /tmp also holds other programs' files)."""
    writes = sorted({w for r in results for w in r.local_writes})
    if not writes:
        return []
    texts = [" ".join(config.command), *(r.log.read_text(errors="replace") for r in results if r.log.exists())]
    for path in copied_files(config.workdir):
        with contextlib.suppress(OSError):
            if path.suffix in SOURCE_SUFFIXES and path.stat().st_size < 1_000_000:
                texts.append(path.read_text(errors="replace"))

    def named(write: str) -> bool:
        return any(write in text or str(Path(write).parent) in text for text in texts)

    return sorted(writes, key=lambda w: not named(w))


def _local_resumes(baseline: AttemptResult, attempts: list[AttemptResult], start: int, config: CheckConfig) -> list[Finding]:
    """Attempts that started past the beginning although the store held nothing to restore."""
    found = []
    for index, attempt in enumerate(attempts):
        first = attempt.progress.first
        resumed_from = None if first is None else first - start
        # finishing without doing any of the baseline's steps is a resume from the very end
        skipped = first is None and bool(baseline.progress.steps) and attempt.exit_code == 0
        if attempt.store_had_snapshot or not (skipped or resumed_locally(attempt, resumed_from)):
            continue
        writes = _likely_own([baseline, *attempts[:index]], config)
        unit = baseline.progress.unit
        at = " past its last step" if skipped else f" at {unit} {first}" if resumed_from else ""
        where = f" ({', '.join(writes[:3])})" if writes else ""
        found.append(Finding(
            "fail", f"attempt {attempt.attempt} resumed{at} although the store held no snapshot: it loaded state left on "
            f"this machine's disk outside the checkpoint directory{where}, which a real next machine does not have",
            LOCAL_ADVICE,
        ))
    return found


def _resumes(cases: list[tuple[ReclaimEvidence, AttemptResult]]) -> str:
    steps = [f"from step {ev.resumed_from}" for ev, _ in cases if ev.resumed_from]
    return f"its checkpoints resumed {', '.join(steps)}; " if steps else ""


def _unmeasured(
    cases: list[tuple[ReclaimEvidence, AttemptResult]], baseline: AttemptResult, last: AttemptResult | None,
    finished: bool, outputs_match: bool,
) -> list[Finding]:
    """Reclaims whose lost work cannot be read: a pass only on other, sufficient evidence.

    A restore was seen after each, the outputs match the uninterrupted run's, and the final
    attempt took clearly less than a run from scratch: the script resumed, by how much unknown.
    """
    numbers = ", ".join(str(ev.number) for ev, _ in cases)
    # less work than from scratch: it restored a checkpoint of a later step, or simply took less time
    faster = all((ev.resumed_from or 0) > 0 for ev, _ in cases) or (
        last is not None and last.duration <= CLEARLY_FASTER * baseline.duration)
    if finished and outputs_match and faster and all(ev.restore_seen for ev, _ in cases):
        for ev, _ in cases:
            ev.work_lost = "unknown"
        return [Finding(
            "note", f"reclaim(s) {numbers}: work lost unknown (no step numbers to read), but each next attempt restored "
            f"a checkpoint, the outputs match and the resumed run did less than a run from scratch "
            f"({_resumes(cases)}the last attempt took {last.duration:.1f}s against {baseline.duration:.1f}s)", PROGRESS_ADVICE,
        )]
    missing = []
    if not all(ev.restore_seen for ev, _ in cases):
        missing.append("no restore was seen")
    if not outputs_match:
        missing.append("no declared output (--output) matched the uninterrupted run's")
    if not faster:
        missing.append("neither a restored step count nor the last attempt's time shows less work than a run from scratch")
    return [Finding(
        "inconclusive", f"reclaim(s) {numbers}: cannot tell where the next attempt resumed ({'; '.join(missing)})",
        PROGRESS_ADVICE + "; declare an output with --output so a resumed result can be compared",
    )]


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
