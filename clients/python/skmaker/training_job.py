"""`TrainingJob`: a handle on one training job (SageMaker's `estimator.latest_training_job`)."""

from __future__ import annotations

import logging
from typing import Any

from skmaker import descriptions
from skmaker.session import Session, check_job_status

log = logging.getLogger("skmaker")

# `logs=` values that stream the job's log lines while waiting.
_STREAMING_LOG_MODES = {True, "All", "Training"}


class TrainingJob:
    """A handle on one training job: SageMaker's `estimator.latest_training_job`.

    Args:
        sagemaker_session: the session that reaches the job.
        job_name: the job's name.
    """

    def __init__(self, sagemaker_session: Session, job_name: str) -> None:
        self.sagemaker_session = sagemaker_session
        self.job_name = job_name

    @property
    def name(self) -> str:
        """The job's name."""
        return self.job_name

    def __repr__(self) -> str:
        return f"TrainingJob({self.job_name!r})"

    def describe(self) -> dict[str, Any]:
        """The job's DescribeTrainingJob-shaped dict."""
        return self.sagemaker_session.describe_training_job(self.job_name)

    def stop(self) -> None:
        """Asks the job to stop; what the script saved so far is still uploaded."""
        self.sagemaker_session.stop_training_job(self.job_name)

    def wait(self, logs: bool | str = True) -> dict[str, Any]:
        """Waits for the job to end; returns its description.

        Args:
            logs: True, "All" or "Training" print the job's log lines to stdout as they
                arrive; False, "None" or "Rules" wait silently.

        Raises:
            UnexpectedStatusException: when the job ended Failed. A Stopped job returns
                normally, after a warning in the log.
        """
        session = self.sagemaker_session
        if logs in _STREAMING_LOG_MODES:
            session.logs_for_job(self.job_name, wait=True)
            description = session.describe_training_job(self.job_name)
            if description["TrainingJobStatus"] not in descriptions.TERMINAL_STATUSES:
                # The log stream ends with the job; this covers a server that closed it early.
                description = session.wait_for_job(self.job_name)
            if "TrainingTimeInSeconds" in description:
                print(f"Training seconds: {description['TrainingTimeInSeconds']}", flush=True)
        else:
            description = session.wait_for_job(self.job_name)
        check_job_status(description)
        if description["TrainingJobStatus"] == "Stopped":
            log.warning("training job %s stopped", self.job_name)
        return description
