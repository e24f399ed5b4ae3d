"""Tuning jobs: creation, describe/list/stop, and the loop that runs their trials.

A tuning job is created InProgress with an in-memory `Tuner` (services.control.tuning.tuner). A
background thread, woken whenever a trial's training job logs the objective metric or ends
(this object listens to `TrainingJobs`), advances every active tuning job:

1. feeds the objective's new intermediate values to the tuner and stops, through
   StopTrainingJob, a trial the tuner wants stopped early (recorded as `stopped_early`);
2. tells the tuner how ended trials went: a Completed training job with the objective metric
   is Completed with its final value; Completed without it, or Failed, is Failed; Stopped is
   stopped early;
3. launches trials while `Tuner.remaining_to_launch` allows, so exactly `max_parallel_jobs`
   run until `max_jobs` were launched; each trial is an ordinary training job
   `<tuning-job>-<NNN>-<8 hex>` with the template's static hyperparameters, the trial's tuned
   ones, `_tuning_objective_metric` and the estimator class and module (contract §1.5);
4. ends the tuning job: Completed when every trial was told and one produced the objective,
   Failed when none did, Stopped after a stop once no trial runs.

The database is the source of truth. A trial is stored in the transaction that creates its
training job, its intermediate values in the transaction that records the heartbeat, and its
outcome right after the tuner is told. After a restart the tuner is rebuilt from those rows
(`Tuner.rebuild`): running trials are training jobs and go on, a trial whose job ended while
the control was down is told on the first pass, and nothing is launched or counted twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from services.control import paging
from services.control.artifacts.store import ArtifactStore
from services.control.metrics import ControlMetrics
from services.control.state import ControlStore
from services.control.training.jobs import TrainingJobs
from services.control.training.validation import validate_training_job
from services.control.training.values import (
    MetricValue,
    TrainingJob,
    TrainingJobSpec,
    TrainingJobStatus,
    truncate_reason,
)
from services.control.tuning.store import IntermediateValue, TuningStore
from services.control.tuning.tuner import StoredTrial, TrialState, Tuner, WarmStartTrial
from services.control.tuning.values import (
    MAX_WARM_START_PARENTS,
    Trial,
    TuningJob,
    TuningJobSpec,
    TuningJobStatus,
    WarmStartType,
    trial_hyperparameters,
    trial_job_name,
    validate_tuning_job_name,
)
from services.runtime.components import StepLoop
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SkmakerError,
)

log = logging.getLogger(__name__)

# The loop is woken by notifications; this only bounds how long a missed one could delay it.
_SAFETY_WAKE_S = 30.0


@dataclass(frozen=True)
class TuningJobPage:
    """One page of ListTuningJobs."""

    jobs: tuple[TuningJob, ...]
    next_page_token: str


@dataclass
class _Active:
    """The in-memory state of a tuning job the loop advances."""

    tuner: Tuner
    # Row id of the last intermediate value fed to the tuner.
    cursor: int = 0
    # Trials whose training job the loop asked to stop early (also stored as stopped_early).
    stop_sent: set[int] = field(default_factory=set)


class TuningJobs:
    """Tuning jobs over the store and the training jobs; `start()` runs the tuning loop."""

    def __init__(
        self,
        store: ControlStore,
        training_jobs: TrainingJobs,
        artifacts: ArtifactStore,
        metrics: ControlMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wires the tuning jobs and subscribes to `training_jobs`; nothing runs before `start`."""
        self._store = store
        self._tuning = TuningStore(store)
        self._training_jobs = training_jobs
        self._artifacts = artifacts
        self._metrics = metrics
        self._clock = clock
        self._active: dict[str, _Active] = {}
        self._active_lock = threading.Lock()
        # The tuning loop, a component the control's lifecycle starts (after `resume`) and
        # stops; running trials go on without it (they are training jobs).
        self.loop = StepLoop("tuning-loop", self.step, _SAFETY_WAKE_S, before_start=self.resume)
        training_jobs.add_listener(self)

    # ----------------------------------------------------------------- lifecycle

    def resume(self) -> None:
        """Rebuilds the tuner of every stored tuning job still InProgress or Stopping."""
        for name in self._tuning.active_job_names():
            job = self._tuning.get_job(name)
            if job is not None:
                self._activate(job)

    # ----------------------------------------------------------------- public API

    def create(self, name: str, spec: TuningJobSpec) -> TuningJob:
        """Validates and stores a tuning job; the loop launches its first trials at once.

        Raises:
            InvalidArgument: a bad name, template, objective, range or config.
            AlreadyExists: the name is taken.
            NotFound: the template's source bundle or a channel, or a warm-start parent, does
                not exist.
        """
        validate_tuning_job_name(name)
        if self._tuning.job_exists(name):
            raise AlreadyExists(f"tuning job {name!r} already exists")
        defined = [definition.name for definition in spec.template.metric_definitions]
        if spec.objective_metric_name not in defined:
            raise InvalidArgument(
                f"objective metric {spec.objective_metric_name!r} is not one of the metric "
                f"definitions ({', '.join(defined) or 'none given'}): add a definition whose "
                "regex captures it from the log"
            )
        warm_start = self._warm_start_trials(spec)
        try:
            tuner = Tuner.create(spec.config, spec.ranges, warm_start)
        except ValueError as err:
            raise InvalidArgument(str(err)) from None
        spec = replace(spec, template=self._validated_template(name, spec))
        job = TuningJob(
            name=name,
            spec=spec,
            status=TuningJobStatus.IN_PROGRESS,
            creation_time=self._clock(),
        )
        self._tuning.insert_job(job, warm_start)
        with self._active_lock:
            self._active[name] = _Active(tuner)
        self._metrics.tuning_jobs.labels(status=TuningJobStatus.IN_PROGRESS.value).inc()
        log.info(
            "tuning job %s created: %s, %d trials, %d in parallel",
            name,
            spec.config.strategy,
            tuner.max_jobs,
            spec.config.max_parallel_jobs,
        )
        self.loop.wake()
        return self.describe(name)

    def describe(self, name: str) -> TuningJob:
        """The job with its trials.

        Raises:
            NotFound: no tuning job has this name.
        """
        job = self._tuning.get_job(name)
        if job is None:
            raise NotFound(f"tuning job {name!r} not found")
        return job

    def list(
        self,
        *,
        status: TuningJobStatus | None = None,
        name_prefix: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> TuningJobPage:
        """Jobs newest first (without their trials), filtered, one page at a time.

        Raises:
            InvalidArgument: a negative page size or a malformed page token.
        """
        jobs, next_token = paging.read_page(
            lambda before_id, limit: self._tuning.list_jobs(
                status=status,
                name_prefix=name_prefix,
                before_id=before_id,
                limit=limit,
            ),
            page_size,
            page_token,
        )
        return TuningJobPage(jobs=jobs, next_page_token=next_token)

    def stop(self, name: str) -> TuningJob:
        """Stops launching trials and asks the running ones to stop; idempotent while Stopping.

        The job is Stopping until every running trial's training job has ended, then Stopped.

        Raises:
            NotFound: no tuning job has this name.
            FailedPrecondition: the job already ended.
        """
        with self._store.transaction():
            job = self.describe(name)
            if job.status.is_terminal:
                raise FailedPrecondition(
                    f"tuning job {name!r} already ended ({job.status.value}); nothing to stop"
                )
            if job.status is TuningJobStatus.IN_PROGRESS:
                self._tuning.update_job_status(name, TuningJobStatus.STOPPING)
                self._stop_running_trials(job.trials)
        log.info("stop of tuning job %s requested", name)
        self.loop.wake()
        return self.describe(name)

    # ----------------------------------------------------------------- TrainingJobListener

    def on_training_job_metrics(
        self, job: TrainingJob, attempt: int, samples: Sequence[MetricValue]
    ) -> None:
        """Stores the objective's values logged by a trial's training job, then wakes the loop."""
        if not job.tuning_job_name:
            return
        trial = self._tuning.trial_of_training_job(job.name)
        if trial is None:
            return
        tuning_job_name, number, objective = trial
        values = [sample.value for sample in samples if sample.name == objective]
        if values:
            self._tuning.append_intermediate_values(tuning_job_name, number, attempt, values)
            self.loop.wake()

    def on_training_job_ended(self, job: TrainingJob) -> None:
        """Wakes the loop when a trial's training job ended."""
        if job.tuning_job_name:
            self.loop.wake()

    # ----------------------------------------------------------------- the loop

    def step(self) -> None:
        """One pass of the tuning loop over every active tuning job (the loop's body).

        The loop runs it on a wake (a trial's job changed, a job was created or stopped) and
        every 30 s; tests call it to drive the loop without its thread.
        """
        with self._active_lock:
            names = list(self._active)
        for name in names:
            try:
                self._advance(name)
            except Exception:  # one broken job must not stall the others
                log.exception("advancing tuning job %s failed; will retry on the next wake", name)

    def _advance(self, name: str) -> None:
        with self._active_lock:
            active = self._active.get(name)
        job = self._tuning.get_job(name)
        if active is None or job is None or job.status.is_terminal:
            self._deactivate(name)
            return
        # Trials first, then values: a trial seen running here had all the values it logged
        # before its end stored with that end, so they are fed before it is told below.
        trials = {trial.number: trial for trial in job.trials}
        for value in self._tuning.intermediate_values(name, active.cursor):
            active.cursor = value.id
            self._report(job, active, trials.get(value.number), value)
        for trial in trials.values():
            if trial.state is TrialState.IN_PROGRESS and trial.training_job_status.is_terminal:
                self._tell(job, active, trial)
        trials = {trial.number: trial for trial in self._tuning.trials(name)}
        running = sum(not t.training_job_status.is_terminal for t in trials.values())
        if job.status is TuningJobStatus.STOPPING:
            self._stop_running_trials(tuple(trials.values()))
            if all(t.state is not TrialState.IN_PROGRESS for t in trials.values()):
                self._finish(name, TuningJobStatus.STOPPED)
            return
        for _ in range(active.tuner.remaining_to_launch(running)):
            if not self._launch(job, active):
                return
        if active.tuner.is_finished():
            self._conclude(job, active)

    def _report(
        self, job: TuningJob, active: _Active, trial: Trial | None, value: IntermediateValue
    ) -> None:
        if trial is None or trial.state is not TrialState.IN_PROGRESS:
            return  # logged after the trial was told (its end carried the last values)
        if trial.stopped_early or trial.number in active.stop_sent:
            return
        if job.status is not TuningJobStatus.IN_PROGRESS:
            return
        if not active.tuner.report_intermediate(trial.number, value.step, value.value):
            return
        active.stop_sent.add(trial.number)
        with self._store.transaction():
            try:
                self._training_jobs.stop(trial.training_job_name)
            except FailedPrecondition:
                return  # it ended meanwhile; its end decides how the trial is told
            self._tuning.mark_stopped_early(job.name, trial.number)
        log.info(
            "tuning job %s: trial %d (%s) stopped early at step %d (objective %g)",
            job.name,
            trial.number,
            trial.training_job_name,
            value.step,
            value.value,
        )

    def _tell(self, job: TuningJob, active: _Active, trial: Trial) -> None:
        tuner = active.tuner
        number = trial.number
        status = trial.training_job_status
        objective: float | None = None
        reason = ""
        if status is TrainingJobStatus.COMPLETED:
            metric = job.spec.objective_metric_name
            objective = self._tuning.final_metric(trial.training_job_name, metric)
            if objective is None:
                tuner.tell_failed(number)
                state = TrialState.FAILED
                reason = (
                    f"ClientError: the training job completed without logging the objective "
                    f"metric {metric!r}; check the metric definition's regex against its log"
                )
            else:
                state = tuner.tell_completed(number, objective)
                if state is TrialState.FAILED:
                    reason = f"ClientError: the objective metric {metric!r} is {objective}"
                    objective = None
        elif status is TrainingJobStatus.STOPPED:
            tuner.tell_stopped_early(number)
            state = TrialState.STOPPED_EARLY
        else:
            tuner.tell_failed(number)
            state = TrialState.FAILED
        self._tuning.end_trial(job.name, number, state, objective, reason)
        log.info(
            "tuning job %s: trial %d (%s) ended %s%s",
            job.name,
            number,
            trial.training_job_name,
            state.value,
            "" if objective is None else f", objective {objective:g}",
        )

    def _launch(self, job: TuningJob, active: _Active) -> bool:
        """Launches one trial; returns False when the tuning job cannot launch any more."""
        with self._store.transaction():
            current = self._tuning.get_job(job.name, with_trials=False)
            if current is None or current.status is not TuningJobStatus.IN_PROGRESS:
                return False  # a stop won the race; it sees no trial from this pass
            assignment = active.tuner.ask()
            training_job_name = trial_job_name(job.name, assignment.number, uuid.uuid4().hex[:8])
            template = job.spec.template
            hyperparameters = trial_hyperparameters(job.spec, assignment.hyperparameters_encoded)
            try:
                self._training_jobs.create(
                    training_job_name,
                    replace(template, hyperparameters=hyperparameters),
                    tuning_job_name=job.name,
                )
            except SkmakerError as err:
                # The template was valid at creation; what broke (a deleted source bundle or
                # channel) breaks every later trial alike, so the tuning job ends here.
                failure = f"ClientError: trial {assignment.number} could not be created: {err}"
            else:
                self._tuning.insert_trial(
                    job.name,
                    assignment.number,
                    training_job_name,
                    assignment.hyperparameters_encoded,
                )
                log.info(
                    "tuning job %s: trial %d launched as %s with %s",
                    job.name,
                    assignment.number,
                    training_job_name,
                    dict(assignment.hyperparameters_encoded),
                )
                return True
        self._fail(job.name, failure)
        return False

    def _conclude(self, job: TuningJob, active: _Active) -> None:
        best = active.tuner.best()
        if best is not None:
            self._finish(job.name, TuningJobStatus.COMPLETED)
            log.info(
                "tuning job %s completed: best trial %d, objective %g",
                job.name,
                best.number,
                best.objective_value,
            )
            return
        self._fail(
            job.name,
            f"ClientError: no trial produced the objective metric "
            f"{job.spec.objective_metric_name!r}; see the trials' failure reasons",
        )

    def _fail(self, name: str, reason: str) -> None:
        with self._store.transaction():
            job = self._tuning.get_job(name)
            if job is not None:
                self._stop_running_trials(job.trials)
            self._finish(name, TuningJobStatus.FAILED, truncate_reason(reason))
        log.warning("tuning job %s failed: %s", name, reason)

    def _finish(self, name: str, status: TuningJobStatus, reason: str | None = None) -> None:
        self._tuning.update_job_status(name, status, failure_reason=reason, end_time=self._clock())
        self._metrics.tuning_jobs.labels(status=status.value).inc()
        self._deactivate(name)
        log.info("tuning job %s ended: %s", name, status.value)

    def _stop_running_trials(self, trials: Sequence[Trial]) -> None:
        for trial in trials:
            if trial.training_job_status is TrainingJobStatus.IN_PROGRESS:
                try:
                    self._training_jobs.stop(trial.training_job_name)
                except FailedPrecondition:
                    pass  # ended meanwhile; the loop tells the tuner how

    # ----------------------------------------------------------------- helpers

    def _activate(self, job: TuningJob) -> None:
        """Rebuilds the tuner of a stored, unfinished job (after a restart)."""
        values = self._tuning.intermediate_values(job.name)
        curves = _curves(values)
        finished: list[StoredTrial] = []
        running: list[StoredTrial] = []
        for trial in job.trials:
            stored = StoredTrial(
                number=trial.number,
                hyperparameters_encoded=trial.tuned_hyperparameters,
                state=trial.state,
                objective_value=trial.objective_value,
                intermediate_values=curves.get(trial.number, {}),
            )
            (running if trial.state is TrialState.IN_PROGRESS else finished).append(stored)
        try:
            tuner = Tuner.rebuild(
                job.spec.config,
                job.spec.ranges,
                finished,
                running,
                self._tuning.warm_start_trials(job.name),
            )
        except (ValueError, RuntimeError) as err:
            log.exception("tuning job %s cannot be rebuilt", job.name)
            self._fail(job.name, f"InternalServerError: the tuner could not be rebuilt: {err}")
            return
        stop_sent = {trial.number for trial in job.trials if trial.stopped_early}
        with self._active_lock:
            self._active[job.name] = _Active(
                tuner, cursor=values[-1].id if values else 0, stop_sent=stop_sent
            )
        log.info(
            "tuning job %s resumed: %d trials finished, %d running",
            job.name,
            len(finished),
            len(running),
        )

    def _deactivate(self, name: str) -> None:
        with self._active_lock:
            self._active.pop(name, None)

    def _validated_template(self, name: str, spec: TuningJobSpec) -> TrainingJobSpec:
        """The template validated as a trial's training job would be, defaults filled in."""
        placeholders = {parameter.name: "0" for parameter in spec.ranges}
        probe = replace(spec.template, hyperparameters=trial_hyperparameters(spec, placeholders))
        validated = validate_training_job(
            f"{name}-000-00000000", probe, self._artifacts, self._training_jobs.archive_limits
        )
        return replace(validated, hyperparameters=dict(spec.template.hyperparameters))

    def _warm_start_trials(self, spec: TuningJobSpec) -> Sequence[WarmStartTrial]:
        parents = spec.warm_start_parent_names
        if not parents:
            if spec.warm_start_type:
                raise InvalidArgument("warm_start_type is set but no parent tuning job is named")
            return []
        if len(parents) > MAX_WARM_START_PARENTS or len(set(parents)) != len(parents):
            raise InvalidArgument(
                f"warm start takes 1-{MAX_WARM_START_PARENTS} distinct parent tuning jobs, "
                f"got {list(parents)}"
            )
        try:
            WarmStartType(spec.warm_start_type)
        except ValueError:
            allowed = ", ".join(member.value for member in WarmStartType)
            raise InvalidArgument(
                f"warm_start_type must be one of {allowed}, got {spec.warm_start_type!r}"
            ) from None
        trials: list[WarmStartTrial] = []
        for parent_name in parents:
            parent = self._tuning.get_job(parent_name)
            if parent is None:
                raise NotFound(f"warm-start parent tuning job {parent_name!r} not found")
            trials += [
                WarmStartTrial(dict(trial.tuned_hyperparameters), trial.objective_value)
                for trial in parent.trials
                if trial.objective_value is not None and math.isfinite(trial.objective_value)
            ]
        return trials


def _curves(values: Sequence[IntermediateValue]) -> dict[int, dict[int, float]]:
    """Each trial's objective curve as the tuner saw it: attempts in order, a retried attempt
    contributing only the steps beyond what earlier attempts logged (`report_intermediate`
    ignores a step not above the last one)."""
    curves: dict[int, dict[int, float]] = {}
    for value in sorted(values, key=lambda v: (v.number, v.attempt, v.step)):
        curve = curves.setdefault(value.number, {})
        if not curve or value.step > max(curve):
            curve[value.step] = value.value
    return curves
