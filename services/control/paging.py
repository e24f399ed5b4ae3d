"""Keyset pagination of the List RPCs: page sizes, opaque page tokens, cutting one page.

Jobs are listed newest first by their row id. A page token names the last id of the previous
page, base64 JSON so callers treat it as opaque; a token that does not decode is the caller's
mistake (INVALID_ARGUMENT), never a silent restart from the first page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from services.runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    """What to read: at most `limit` rows with an id below `before_id` (None: from the top)."""

    limit: int
    before_id: int | None


def page_request(page_size: int, page_token: str) -> PageRequest:
    """Checks a List request's paging fields.

    Args:
        page_size: 0 means 50; larger than 1000 means 1000.
        page_token: `next_page_token` of the previous page, or empty.

    Raises:
        InvalidArgument: a negative page size or a malformed page token.
    """
    if page_size < 0:
        raise InvalidArgument(f"page_size {page_size} is negative")
    return PageRequest(min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), _before_id(page_token))


def cut_page(rows: Sequence[tuple[int, T]], limit: int) -> tuple[tuple[T, ...], str]:
    """The page's items and the next page's token, from up to `limit + 1` (id, item) rows."""
    page = rows[:limit]
    next_token = _token(page[-1][0]) if len(rows) > limit else ""
    return tuple(item for _, item in page), next_token


def read_page(
    read_rows: Callable[[int | None, int], Sequence[tuple[int, T]]],
    page_size: int,
    page_token: str,
) -> tuple[tuple[T, ...], str]:
    """One page of a List RPC and the next page's token.

    Args:
        read_rows: `read_rows(before_id, limit)` returns up to `limit` (id, item) rows with an
            id below `before_id` (all when None), newest first; asked for one row more than
            the page, to know whether another page follows.
        page_size: the request's page size (see `page_request`).
        page_token: the request's page token.

    Raises:
        InvalidArgument: a negative page size or a malformed page token.
    """
    request = page_request(page_size, page_token)
    return cut_page(read_rows(request.before_id, request.limit + 1), request.limit)


def _token(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": last_id}).encode()).decode()


def _before_id(token: str) -> int | None:
    if not token:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))["before"]
        if not isinstance(value, int):
            raise TypeError(value)
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is invalid: pass next_page_token from the previous page"
        ) from None
    return value
