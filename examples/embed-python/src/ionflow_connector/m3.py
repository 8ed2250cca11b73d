"""M3 MI lists over the REST v2 API, page by page on a key field."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Optional

from .connection import Connection
from .errors import ConnectorError


class M3Error(ConnectorError):
    """An MI transaction failed (``nrOfFailedTransactions`` > 0); the message is M3's."""

    kind = "m3"


def execute(conn: Connection, program: str, transaction: str, **fields: Any) -> Dict[str, Any]:
    """One MI GET (``M3/m3api-rest/v2/execute/{program}/{transaction}``); returns its envelope."""
    path = f"M3/m3api-rest/v2/execute/{program}/{transaction}"
    response = conn.get(path, query={k: v for k, v in fields.items() if v is not None})
    if not response.ok:
        raise M3Error(f"{program}/{transaction} answered HTTP {response.status}: {response.text[:300]}")
    envelope = response.json()
    if envelope.get("nrOfFailedTransactions", 0) > 0 or envelope.get("wasTerminated"):
        result = (envelope.get("results") or [{}])[0]
        reason = result.get("errorMessage") or envelope.get("terminationReason") or "failed"
        raise M3Error(f"{program}/{transaction}: {reason}")
    return envelope


def list_records(
    conn: Connection,
    program: str,
    transaction: str,
    *,
    key: str,
    page_size: int = 100,
    query: Optional[Mapping[str, Any]] = None,
) -> Iterator[Dict[str, Any]]:
    """Every record of an MI list, asking ``page_size`` at a time from the last ``key`` seen.

    M3 lists have no cursor: each page starts at the last key of the previous
    one (inclusive), so that record is asked for again and skipped.
    """
    last: Optional[str] = None
    while True:
        maxrecs = page_size + (1 if last is not None else 0)
        fields = dict(query or {})
        fields["maxrecs"] = maxrecs
        if last is not None:
            fields[key] = last
        records = execute(conn, program, transaction, **fields)["results"][0]["records"]
        for index, item in enumerate(records):
            if index == 0 and last is not None and item.get(key) == last:
                continue
            yield item
        if len(records) < maxrecs:
            return
        last = records[-1][key]
