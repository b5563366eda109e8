"""A kept plan as a Notion page, through Notion's official Python SDK (``notion-client``).

Notion is a boundary we do not own, so this module is careful about four things:

- **Limits.** At most 100 blocks per request: the page is created with the first 100 and the
  rest appended 100 at a time; at most 2,000 characters per rich-text object and 100 objects
  per block (``fit_blocks``).
- **Retries.** 429 and 5xx (and no answer) are retried up to ``NOTION_MAX_RETRIES`` times,
  waiting what Retry-After says; a Retry-After longer than ``NOTION_MAX_RETRY_AFTER_S`` is
  not waited out but passed on (503 with Retry-After). The SDK's own retry is off: it skips
  5xx on POST and PATCH and caps Retry-After silently, and one policy is easier to reason about.
- **One page per plan.** The plan row records the page id as soon as Notion has created the
  page, and how many blocks are written; a second call returns that page (or finishes it), and
  a compare-and-set claim on the row keeps two concurrent calls from both creating one. An
  append that failed without an answer is checked against the page's children before it is
  sent again, so a retry never writes blocks twice. The one window left: a create answered
  5xx after Notion did create the page; the retry then makes a second page (Notion offers no
  idempotency key to close it).
- **Errors.** Notion's 4xx are ``UpstreamRefused`` with Notion's own message and code;
  exhausted retries are ``UpstreamUnavailable``.
"""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

import httpx
from notion_client import Client
from notion_client.errors import HTTPResponseError, RequestTimeoutError

from ttalkkac.errors import (
    Conflict,
    NotConfigured,
    NotFound,
    UpstreamRefused,
    UpstreamUnavailable,
)
from ttalkkac.plan import ProjectPlan
from ttalkkac.render import NOTION_TEXT_LIMIT, to_notion_page
from ttalkkac.settings import Settings
from ttalkkac.store import plans as store
from ttalkkac.store.db import Database
from ttalkkac.store.models import Plan

logger = logging.getLogger(__name__)

# Pinned rather than the SDK's default, so an SDK upgrade cannot change the request shapes.
NOTION_VERSION = "2025-09-03"
MAX_CHILDREN = 100  # blocks per pages.create or blocks.children.append request
MAX_RICH_TEXT = 100  # rich-text objects per block
BACKOFF_S = 0.5  # first wait without a Retry-After; doubled per attempt
MAX_BACKOFF_S = 8.0

ParentKind = Literal["page_id", "database_id", "data_source_id"]
T = TypeVar("T")


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX32_AT_END = re.compile(r"(?:^|[^0-9a-f])([0-9a-f]{32})$")


def parse_notion_id(text: str) -> str:
    """A Notion id as a dashed UUID, from an id with or without dashes or a page's URL.

    Users copy a page's link (``https://www.notion.so/Title-<32 hex>?pvs=4``); the id is the
    32 hex digits that end its last path segment. ``ValueError`` when there are none.
    """
    tail = text.strip().lower().split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if _UUID.match(tail):
        digits = tail.replace("-", "")
    elif match := _HEX32_AT_END.search(tail):
        digits = match.group(1)
    else:
        raise ValueError("not a Notion id (32 hex digits, dashes optional) or a Notion page URL")
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


@dataclass(frozen=True)
class NotionParent:
    """Where the page goes: a page, a database (one data source) or a data source."""

    kind: ParentKind
    id: str

    def to_api(self) -> dict[str, str]:
        return {"type": self.kind, self.kind: self.id}


@dataclass(frozen=True)
class Publication:
    plan_id: str
    page_id: str
    url: str | None
    parent: dict[str, Any] | None
    blocks: int
    created: bool  # false: the plan already had this page


# --- limits ------------------------------------------------------------------------------------


def _split_text_object(obj: dict[str, Any]) -> list[dict[str, Any]]:
    text = obj.get("text", {}).get("content", "")
    if obj.get("type") != "text" or len(text) <= NOTION_TEXT_LIMIT:
        return [obj]
    return [
        {**obj, "text": {**obj["text"], "content": text[i : i + NOTION_TEXT_LIMIT]}}
        for i in range(0, len(text), NOTION_TEXT_LIMIT)
    ]


def fit_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The blocks within Notion's per-object limits, nothing dropped.

    A text object over 2,000 characters becomes several with the same annotations; a block
    with more than 100 text objects becomes several blocks of its type in a row.
    """
    fitted = []
    for block in blocks:
        kind = block["type"]
        body = block.get(kind, {})
        rich = body.get("rich_text")
        if rich is None:
            fitted.append(block)
            continue
        pieces = [piece for obj in rich for piece in _split_text_object(obj)]
        for start in range(0, max(len(pieces), 1), MAX_RICH_TEXT):
            part = pieces[start : start + MAX_RICH_TEXT]
            fitted.append({**block, kind: {**body, "rich_text": part}})
    return fitted


def _fit_title(rich: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [piece for obj in rich for piece in _split_text_object(obj)][:MAX_RICH_TEXT]


def page_parts(plan: ProjectPlan) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The page's properties and its blocks (``ttalkkac.render``), within Notion's limits."""
    page = to_notion_page(plan)
    # "title" is the id of a page's title property and of every database's title property,
    # whatever the property is named, so one key fits page and database parents alike.
    properties = {"title": {"title": _fit_title(page["properties"]["title"]["title"])}}
    return properties, fit_blocks(page["children"])


def require_token(settings: Settings) -> str:
    if settings.notion_token is None or not settings.notion_token.get_secret_value():
        raise NotConfigured(
            "Notion is not configured: set NOTION_TOKEN to an internal integration token "
            "(and share the parent page or database with that integration)"
        )
    return settings.notion_token.get_secret_value()


# --- retries -----------------------------------------------------------------------------------


def retry_after_s(headers: httpx.Headers | None, *, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), else None."""
    value = (headers or httpx.Headers()).get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():  # delta-seconds: digits only (no "nan", "inf" or negative waits)
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


class PageWriter:
    """Notion page writes through the SDK, with the retry policy of this module."""

    def __init__(
        self,
        client: Client,
        *,
        max_retries: int,
        max_retry_after_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.max_retries = max_retries
        self.max_retry_after_s = max_retry_after_s
        self.sleep = sleep

    @classmethod
    @contextmanager
    def from_settings(
        cls, settings: Settings, *, sleep: Callable[[float], None] = time.sleep
    ) -> Iterator[PageWriter]:
        client = Client(
            auth=require_token(settings),
            base_url=settings.notion_base_url.rstrip("/"),
            timeout_ms=int(settings.notion_timeout_s * 1000),
            notion_version=NOTION_VERSION,
            retry=False,
            # The SDK's default logger prints to stdout, which the CLI keeps for results.
            logger=logging.getLogger("notion_client"),
        )
        try:
            yield cls(
                client,
                max_retries=settings.notion_max_retries,
                max_retry_after_s=settings.notion_max_retry_after_s,
                sleep=sleep,
            )
        finally:
            client.close()

    def call(
        self, what: str, fn: Callable[[], T], *, landed: Callable[[], T | None] | None = None
    ) -> T:
        """``fn()`` with retries on 429, 5xx and no answer.

        ``landed``: after a failure whose outcome is unknown (5xx, no answer), asks Notion
        whether the write happened anyway; its non-None answer is taken as the result, so the
        write is not sent twice. Not asked after a 429: Notion did nothing then.
        """
        attempt = 0
        while True:
            try:
                return fn()
            except HTTPResponseError as exc:
                status, wait = exc.status, retry_after_s(exc.headers)
                if status != 429 and status < 500:
                    code = getattr(exc.code, "value", exc.code)  # the SDK's codes are enums
                    raise UpstreamRefused(
                        f"Notion refused {what} ({status} {code}): {exc}",
                        detail={"service": "notion", "status": status, "code": code},
                    ) from exc
                failure = f"Notion answered {status} to {what}"
            except (RequestTimeoutError, httpx.TransportError) as exc:
                status, wait = None, None
                failure = f"Notion did not answer {what} ({type(exc).__name__})"
            if wait is not None and wait > self.max_retry_after_s:
                raise UpstreamUnavailable(
                    f"{failure}; it asks to retry after {wait:.0f} s "
                    f"(over NOTION_MAX_RETRY_AFTER_S={self.max_retry_after_s:g})",
                    retry_after_s=math.ceil(wait),
                    detail={"service": "notion", "status": status},
                )
            if attempt >= self.max_retries:
                raise UpstreamUnavailable(
                    f"{failure}, {attempt + 1} time(s); retry later",
                    retry_after_s=math.ceil(wait) if wait else None,
                    detail={"service": "notion", "status": status},
                )
            delay = wait if wait is not None else min(BACKOFF_S * 2**attempt, MAX_BACKOFF_S)
            logger.warning("%s; retry %d in %.1f s", failure, attempt + 1, delay)
            self.sleep(delay)
            attempt += 1
            if status != 429 and landed is not None:
                result = landed()
                if result is not None:
                    logger.info("%s had landed before it failed; not sent again", what)
                    return result

    # --- the three requests a publication makes -----------------------------------------------

    def create_page(
        self, parent: NotionParent, properties: dict[str, Any], children: list[dict[str, Any]]
    ) -> dict[str, Any]:
        assert len(children) <= MAX_CHILDREN
        return self.call(
            "the page",
            lambda: self.client.pages.create(
                parent=parent.to_api(), properties=properties, children=children
            ),
        )

    def count_children(self, page_id: str) -> int:
        count, cursor = 0, None
        while True:
            kwargs: dict[str, Any] = {"page_size": 100}
            if cursor:
                kwargs["start_cursor"] = cursor
            answer = self.call(
                "listing the page's blocks",
                lambda kwargs=kwargs: self.client.blocks.children.list(page_id, **kwargs),
            )
            count += len(answer.get("results", []))
            cursor = answer.get("next_cursor")
            if not answer.get("has_more") or not cursor:
                return count

    def append(self, page_id: str, blocks: list[dict[str, Any]], *, written: int) -> int:
        """Append ``blocks`` after the ``written`` already there; the new count."""
        assert len(blocks) <= MAX_CHILDREN
        target = written + len(blocks)

        def landed() -> int | None:
            return target if self.count_children(page_id) >= target else None

        self.call(
            f"appending blocks {written + 1}-{target}",
            lambda: self.client.blocks.children.append(page_id, children=blocks),
            landed=landed,
        )
        return target


# --- publishing a kept plan --------------------------------------------------------------------


def claim_ttl_s(settings: Settings) -> float:
    """How long a claim outlives its last refresh: one Notion request with all its retries."""
    per_try = settings.notion_timeout_s + max(settings.notion_max_retry_after_s, MAX_BACKOFF_S)
    return (settings.notion_max_retries + 1) * per_try + 60


def _publication(row: Plan, *, created: bool) -> Publication:
    return Publication(
        plan_id=row.id,
        page_id=row.notion_page_id or "",
        url=row.notion_page_url,
        parent=row.notion_parent,
        blocks=row.notion_blocks,
        created=created,
    )


def publish_plan(
    db: Database,
    settings: Settings,
    *,
    plan_id: str,
    parent: NotionParent,
    sleep: Callable[[float], None] = time.sleep,
) -> Publication:
    """The plan's Notion page: made on the first call, returned (or finished) on later ones.

    A plan gets one page: a later call returns it whatever parent it names. ``sleep``: how
    retries wait (tests record the waits instead).
    """
    with db.session() as session:
        row = store.get_plan(session, id=plan_id)
        if row is None:
            raise NotFound(f"no plan with id {plan_id!r}")
        plan = ProjectPlan.model_validate(row.plan)
    properties, blocks = page_parts(plan)
    if row.notion_page_id and row.notion_blocks >= len(blocks):
        return _publication(row, created=False)
    require_token(settings)

    claim = uuid.uuid4().hex
    stale_before = datetime.now(UTC) - timedelta(seconds=claim_ttl_s(settings))
    with db.session() as session:
        if not store.claim_notion(session, id=plan_id, claim=claim, stale_before=stale_before):
            raise Conflict(
                f"a Notion page for plan {plan_id} is being created by another request; "
                "retry in a few seconds to get it"
            )
    try:
        with PageWriter.from_settings(settings, sleep=sleep) as pages:
            return _write(
                db,
                pages,
                plan_id=plan_id,
                claim=claim,
                parent=parent,
                properties=properties,
                blocks=blocks,
            )
    finally:
        with db.session() as session:
            store.release_notion(session, id=plan_id, claim=claim)


def write_page(
    pages: PageWriter,
    *,
    parent: NotionParent,
    properties: dict[str, Any],
    blocks: list[dict[str, Any]],
    page_id: str | None = None,
    written: int = 0,
    on_created: Callable[[dict[str, Any]], None] = lambda page: None,
    on_written: Callable[[int], None] = lambda written: None,
) -> tuple[str, int]:
    """Create the page with the first 100 blocks and append the rest; ``(page id, blocks)``.

    ``page_id`` and ``written``: a page made earlier and the blocks it holds by our record, to
    finish instead of making another. ``on_created`` and ``on_written`` are told each step as
    soon as Notion has done it (the caller records them).
    """
    if page_id is None:
        page = pages.create_page(parent, properties, blocks[:MAX_CHILDREN])
        page_id, written = page["id"], min(len(blocks), MAX_CHILDREN)
        on_created(page)
    elif written < len(blocks):
        # A call that stopped midway: the page may hold more than was recorded.
        written = max(written, min(pages.count_children(page_id), len(blocks)))
        on_written(written)
    while written < len(blocks):
        written = pages.append(page_id, blocks[written : written + MAX_CHILDREN], written=written)
        on_written(written)
    return page_id, written


def _write(
    db: Database,
    pages: PageWriter,
    *,
    plan_id: str,
    claim: str,
    parent: NotionParent,
    properties: dict[str, Any],
    blocks: list[dict[str, Any]],
) -> Publication:
    # Read again under the claim: a concurrent call may have finished the page meanwhile.
    with db.session() as session:
        row = store.get_plan(session, id=plan_id)
        if row is None:
            raise NotFound(f"plan {plan_id} was deleted")
        page_id, written = row.notion_page_id, row.notion_blocks

    def created(page: dict[str, Any]) -> None:
        with db.session() as session:
            # Recorded even if the claim has expired meanwhile: a page Notion made must never
            # be forgotten, or the next call makes another.
            kept = store.set_notion_page(
                session,
                id=plan_id,
                page_id=page["id"],
                url=page.get("url"),
                parent=parent.to_api(),
                blocks=min(len(blocks), MAX_CHILDREN),
            )
        if not kept:
            raise Conflict(
                f"plan {plan_id}: Notion page {page['id']} was created while another call "
                "recorded its own page (or the plan was deleted); the plan keeps the other one"
            )
        logger.info("[plan %s] Notion page %s created", plan_id, page["id"])

    def progressed(count: int) -> None:
        with db.session() as session:
            if not store.update_notion(session, id=plan_id, claim=claim, notion_blocks=count):
                # The claim expired and another call took over, or the plan was deleted.
                raise Conflict(f"plan {plan_id}: the Notion page was taken over or deleted")

    write_page(
        pages,
        parent=parent,
        properties=properties,
        blocks=blocks,
        page_id=page_id,
        written=written,
        on_created=created,
        on_written=progressed,
    )
    with db.session() as session:
        row = store.get_plan(session, id=plan_id)
        if row is None:
            raise NotFound(f"plan {plan_id} was deleted")
        return _publication(row, created=page_id is None)
