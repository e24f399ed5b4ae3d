"""The List* operations' shared shape: boto3's filters and sort, opaque-token pages, paginators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_MAX_RESULTS = 10  # SageMaker's List* page size when MaxResults is not given.


@dataclass(frozen=True)
class ListShape:
    """How one List* operation names things in its response.

    Attributes:
        result_key: the list's key in the response, e.g. "TrainingJobSummaries".
        name_key: each item's name, e.g. "TrainingJobName" (NameContains, SortBy Name).
        arn_key: the ARN added to each item, e.g. "TrainingJobArn".
        arn_kind: the resource kind in that ARN, e.g. "training-job".
        status_key: each item's status (SortBy Status); empty when it has none.
    """

    result_key: str
    name_key: str
    arn_key: str
    arn_kind: str
    status_key: str = ""


def page(
    items: list[dict[str, Any]], next_token: str | None, max_results: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `items` after the opaque `next_token`, and the token of the next one."""
    try:
        start = int(next_token) if next_token else 0
    except ValueError:
        raise ValueError(f"invalid NextToken {next_token!r}") from None
    if start < 0 or (max_results is not None and max_results < 1):
        raise ValueError(f"invalid NextToken {next_token!r} or MaxResults {max_results!r}")
    size = max_results or DEFAULT_MAX_RESULTS
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def filtered(
    items: list[dict[str, Any]],
    name_key: str,
    *,
    name_contains: str | None = None,
    creation_time_after: datetime | None = None,
    creation_time_before: datetime | None = None,
    sort_by: str | None = None,
    sort_order: str | None = None,
    status_key: str = "",
) -> list[dict[str, Any]]:
    """boto3's List* filters and sort (CreationTime, Name or Status; Descending by default)."""
    if name_contains:
        items = [item for item in items if name_contains in item[name_key]]
    if creation_time_after is not None:
        items = [
            i for i in items if i.get("CreationTime") and i["CreationTime"] > creation_time_after
        ]
    if creation_time_before is not None:
        items = [
            i for i in items if i.get("CreationTime") and i["CreationTime"] < creation_time_before
        ]
    key_of: Callable[[dict[str, Any]], Any]
    if sort_by == "Name":
        key_of = lambda item: item[name_key]  # noqa: E731
    elif sort_by == "Status" and status_key:
        key_of = lambda item: item.get(status_key, "")  # noqa: E731
    else:
        key_of = lambda item: item.get("CreationTime") or datetime.min.replace(tzinfo=UTC)  # noqa: E731
    return sorted(items, key=key_of, reverse=(sort_order or "Descending") == "Descending")


class Paginator:
    """boto3's paginator shape: `paginate(**kwargs)` yields each page's response."""

    def __init__(self, operation: Callable[..., dict[str, Any]]) -> None:
        self._operation = operation

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Pages of the operation, following `NextToken` (PaginationConfig is honoured for
        `MaxItems` and `PageSize`)."""
        config = dict(kwargs.pop("PaginationConfig", None) or {})
        if config.get("PageSize"):
            kwargs["MaxResults"] = config["PageSize"]
        if config.get("StartingToken"):
            kwargs["NextToken"] = config["StartingToken"]
        max_items = config.get("MaxItems")
        seen = 0
        while True:
            page = self._operation(**kwargs)
            yield page
            lists = [value for value in page.values() if isinstance(value, list)]
            seen += len(lists[0]) if lists else 0
            token = page.get("NextToken")
            if not token or (max_items and seen >= max_items):
                return
            kwargs["NextToken"] = token
