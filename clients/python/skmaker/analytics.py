"""A tuning job's trials as a table, with the SageMaker SDK's names (`sagemaker.analytics`).

pandas is not a dependency of the client: `dataframe()` imports it when called and says how to
install it when it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from skmaker import hyperparameters as hp
from skmaker.session import Session

if TYPE_CHECKING:
    import pandas as pd


class HyperparameterTuningJobAnalytics:
    """The trials of a tuning job as a table, as `sagemaker.HyperparameterTuningJobAnalytics`.

    Args:
        hyperparameter_tuning_job_name: the tuning job.
        sagemaker_session: the session that reaches it; default `Session()`.
    """

    def __init__(
        self, hyperparameter_tuning_job_name: str, sagemaker_session: Session | None = None
    ) -> None:
        self.name = hyperparameter_tuning_job_name
        self._session = sagemaker_session or Session()
        self._dataframe: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"<skmaker.HyperparameterTuningJobAnalytics for {self.name}>"

    def description(self, force_refresh: bool = False) -> dict[str, Any]:
        """The tuning job's DescribeHyperParameterTuningJob-shaped dict."""
        del force_refresh
        return self._session.describe_tuning_job(self.name)

    def training_job_summaries(self, force_refresh: bool = False) -> list[dict[str, Any]]:
        """The trials' `HyperParameterTrainingJobSummary` dicts, by trial number."""
        del force_refresh
        return self._session.list_training_jobs_for_tuning_job(self.name)

    def dataframe(self, force_refresh: bool = False) -> pd.DataFrame:
        """One row per trial with SageMaker's columns.

        Columns: each tuned hyperparameter, by name (floats when numeric, categorical values without
        their JSON quotes), `TrainingJobName`, `TrainingJobStatus`, `FinalObjectiveValue`
        (NaN without an objective), `TrainingStartTime`, `TrainingEndTime`,
        `TrainingElapsedTimeSeconds`. The table is fetched once; `force_refresh` fetches it
        again.

        Raises:
            ImportError: pandas is not installed (it is not a dependency of the client).
        """
        try:
            import pandas as pd  # optional: only this method needs it
        except ImportError:
            raise ImportError(
                "HyperparameterTuningJobAnalytics.dataframe() needs pandas: pip install pandas"
            ) from None
        if self._dataframe is None or force_refresh:
            rows = [_analytics_row(summary) for summary in self.training_job_summaries()]
            self._dataframe = pd.DataFrame(rows)
        return self._dataframe

    def clear_cache(self) -> None:
        """Forgets the fetched table."""
        self._dataframe = None


def _analytics_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    # Sorted by name: the wire map has no order, and a table's columns should not move.
    for name, encoded in sorted(summary["TunedHyperParameters"].items()):
        value = hp.decode_value(encoded)
        try:
            row[name] = float(value)
        except (TypeError, ValueError):
            row[name] = value
    row["TrainingJobName"] = summary["TrainingJobName"]
    row["TrainingJobStatus"] = summary["TrainingJobStatus"]
    objective = summary.get("FinalHyperParameterTuningJobObjectiveMetric", {})
    row["FinalObjectiveValue"] = objective.get("Value", float("nan"))
    start: datetime | None = summary.get("TrainingStartTime")
    end: datetime | None = summary.get("TrainingEndTime")
    row["TrainingStartTime"] = start
    row["TrainingEndTime"] = end
    row["TrainingElapsedTimeSeconds"] = (
        (end - start).total_seconds() if start and end else float("nan")
    )
    return row
