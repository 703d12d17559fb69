"""The exact JSON a row becomes on the wire: built once per row, stored in the ledger, resent verbatim."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import pandas as pd

from pipeline.money import format_cents

OPTIONAL_TEXT = ("private_comment", "assignment_id")


def build_items(rows: pd.DataFrame) -> list[bytes]:
    """One JSON object per row (validated, canonical columns), amounts as exact decimal text."""
    titles = _json_objects(rows["public_title"])
    messages = _json_objects(rows["public_message"])
    amounts: dict[int, orjson.Fragment] = {}  # sheets repeat amounts: each distinct one formatted once
    items = []
    dumps, Fragment = orjson.dumps, orjson.Fragment
    for user_id, cents, without, comment, assignment, title, message in zip(
        rows["user_id"].tolist(), rows["amount_cents"].tolist(), rows["without_message"].tolist(),
        rows["private_comment"].tolist(), rows["assignment_id"].tolist(), titles, messages,
    ):
        amount = amounts.get(cents)
        if amount is None:
            amount = amounts[cents] = Fragment(format_cents(int(cents)))
        item: dict[str, object] = {"user_id": user_id, "amount": amount, "without_message": bool(without)}
        if comment is not None and comment == comment:
            item["private_comment"] = comment
        if title is not None:
            item["public_title"] = title
        if message is not None:
            item["public_message"] = message
        if assignment is not None and assignment == assignment:
            item["assignment_id"] = assignment
        # exact-size copy: each orjson result keeps a ~4 KiB allocation alive (orjson 3.13), i.e. ~390 MiB
        # for 100k items held until they are in the ledger; the copy is small and, reusing that block, faster
        items.append(bytes(memoryview(dumps(item))))
    return items


def _json_objects(column: pd.Series) -> list[object]:
    """Each distinct JSON text as one orjson Fragment (sheets repeat the same title thousands of times)."""
    codes, texts = pd.factorize(column, use_na_sentinel=True)
    fragments = [orjson.Fragment(str(text).encode()) for text in texts]
    return [fragments[code] if code >= 0 else None for code in codes.tolist()]


def body_for(keys_and_items: Sequence[tuple[str, bytes]]) -> bytes:
    """A JSON array of items, each tagged with its row key as `__item_idx` (echoed back in the log)."""
    parts = [b'{"__item_idx":' + orjson.dumps(key) + b"," + item[1:] for key, item in keys_and_items]
    return b"[" + b",".join(parts) + b"]"
