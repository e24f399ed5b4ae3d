"""What both boto3-shaped clients share: error mapping, `ResponseMetadata`, unknown operations,
paginators, and the List* operations' one shape (fetch, filter and sort, ARN, page)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from skmaker import errors as skmaker_errors
from skmaker.boto.errors import ClientError, ClientExceptions, client_error, response_metadata
from skmaker.boto.paging import ListShape, Paginator, filtered, page
from skmaker.errors import SkmakerClientError, UnexpectedStatusException

if TYPE_CHECKING:
    from skmaker.session import Session


class _Meta:
    """`client.meta`, as far as skmaker knows it: `region_name`, `service_name`."""

    def __init__(self, region_name: str, service_name: str) -> None:
        self.region_name = region_name
        self.service_name = service_name


def operation_name(method: str) -> str:
    """boto3's operation name of a client method, e.g. "DescribeTrainingJob"."""
    return "".join(part.capitalize() for part in method.split("_"))


class BotoShapedClient:
    """What both clients share: error mapping, `ResponseMetadata`, unknown operations."""

    _service = ""
    _exception_codes: tuple[str, ...] = ()

    def __init__(self, session: Session) -> None:
        self._session = session
        self.exceptions = ClientExceptions(self._exception_codes)
        self.meta = _Meta(session.boto_region_name, self._service)

    def _call(self, method: str, call: Callable[[], Any], *, from_model: bool = False) -> Any:
        try:
            return call()
        except ClientError:
            raise
        except SkmakerClientError as err:
            if isinstance(err, UnexpectedStatusException):
                raise
            raise client_error(err, operation_name(method), from_model=from_model) from None
        except ValueError as err:
            # Refused before any call (a bad status name, another bucket): boto3's service
            # would answer ValidationException.
            invalid = skmaker_errors.InvalidArgument(str(err))
            raise client_error(invalid, operation_name(method)) from None

    @staticmethod
    def _answer(body: Mapping[str, Any]) -> dict[str, Any]:
        return {**body, "ResponseMetadata": response_metadata()}

    def _arn(self, kind: str, name: str) -> str:
        return self._session.arn(kind, name)

    def _list(
        self,
        method: str,
        shape: ListShape,
        fetch: Callable[[], list[dict[str, Any]]],
        *,
        next_token: str | None,
        max_results: int | None,
        name_contains: str | None = None,
        creation_time_after: datetime | None = None,
        creation_time_before: datetime | None = None,
        sort_by: str | None = None,
        sort_order: str | None = None,
    ) -> dict[str, Any]:
        """A List* response: the items `fetch` answers, filtered and sorted as boto3's
        arguments ask, each with its ARN, one page of them and `NextToken` while more remain."""
        items = filtered(
            self._call(method, fetch),
            shape.name_key,
            name_contains=name_contains,
            creation_time_after=creation_time_after,
            creation_time_before=creation_time_before,
            sort_by=sort_by,
            sort_order=sort_order,
            status_key=shape.status_key,
        )
        return self._list_page(method, shape, items, next_token, max_results)

    def _list_page(
        self,
        method: str,
        shape: ListShape,
        items: list[dict[str, Any]],
        next_token: str | None,
        max_results: int | None,
    ) -> dict[str, Any]:
        """The response with one page of `items` (in their order), each with its ARN."""
        for item in items:
            item[shape.arn_key] = self._arn(shape.arn_kind, item[shape.name_key])
        found, token = self._call(method, lambda: page(items, next_token, max_results))
        return self._answer({shape.result_key: found, **({"NextToken": token} if token else {})})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        implemented = sorted(attr for attr in dir(type(self)) if not attr.startswith("_"))
        raise AttributeError(
            f"skmaker's {self._service} client does not implement {name!r}; it has: "
            + ", ".join(implemented)
        )

    def can_paginate(self, operation_name: str) -> bool:
        """Whether `get_paginator(operation_name)` works (the List* operations)."""
        return operation_name.startswith("list_") and callable(
            getattr(type(self), operation_name, None)
        )

    def get_paginator(self, operation_name: str) -> Paginator:
        """A boto3-style paginator over a List* operation (`paginate(**kwargs)` yields pages).

        Raises:
            AttributeError: for an operation that is not a List* one here.
        """
        if not self.can_paginate(operation_name):
            raise AttributeError(
                f"skmaker's {self._service} client cannot paginate {operation_name!r}"
            )
        return Paginator(getattr(self, operation_name))
