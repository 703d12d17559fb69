"""Toloka's per-item bonus validation and request-level limits."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson

# ISO 639-1 codes Toloka accepts as keys of public_title / public_message.
LANGUAGES = frozenset(
    "AF AM AR AZ BE BG BN BS CA CS CY DA DE EL EN ES ET EU FA FI FR GA GL HE HI HR HU HY ID IS IT JA KA KK KM KO "
    "KY LO LT LV MK ML MN MR MS MY NE NL NO PA PL PT RO RU SI SK SL SQ SR SV SW TA TE TG TH TK TL TR UK UR UZ VI "
    "ZH ZU".split()
)
_HEX = frozenset("0123456789abcdef")
FieldErrors = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Limits:
    """Server limits; defaults are Toloka's documented values (async maximum is ours: Toloka does not say)."""

    min_amount: Decimal = Decimal("0.005")
    max_amount: Decimal = Decimal("100")
    max_sync_items: int = 100
    max_async_items: int = 10_000
    rate_limit: int = 300
    daily_quota: int = 10_000
    max_list_limit: int = 300
    unknown_users: frozenset[str] = field(default_factory=frozenset)


def _error(code: str, message: str, params: list[Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message} if params is None else {"code": code, "message": message, "params": params}


_REQUIRED = _error("VALUE_REQUIRED", "Value must be present and not equal to null")
_NO_USER = _error("ENTITY_DOES_NOT_EXIST", "Entity does not exist")


def user_exists(user_id: str, limits: Limits) -> bool:
    """Every 32-character lowercase hex id exists unless it is listed as unknown."""
    return len(user_id) == 32 and _HEX.issuperset(user_id) and user_id not in limits.unknown_users


def _check_texts(name: str, value: Any, errors: FieldErrors) -> None:
    if not isinstance(value, dict):
        errors[name] = _error("OBJECT_EXPECTED", "Object expected")
    elif not value:
        errors[name] = _error("EMPTY_OBJECT_NOT_ALLOWED", "Object must not be empty")
    else:
        for lang, text in value.items():
            if lang not in LANGUAGES:
                errors[f"{name}.{lang}"] = _error("VALUE_NOT_ALLOWED", f"Language {lang} is not supported")
            elif not isinstance(text, str):
                errors[f"{name}.{lang}"] = _error("STRING_EXPECTED", "String expected")
            elif not text.strip():
                errors[f"{name}.{lang}"] = _error("BLANK_STRING_NOT_ALLOWED", "String must not be blank")


def validate_item(item: Any, limits: Limits) -> FieldErrors | None:
    """Field errors of one bonus (field path -> {code, message[, params]}), or None when it is valid."""
    if not isinstance(item, dict):
        return {"": _error("OBJECT_EXPECTED", "Object expected")}
    errors: FieldErrors = {}
    user_id = item.get("user_id")
    if user_id is None:
        errors["user_id"] = _REQUIRED
    elif not isinstance(user_id, str):
        errors["user_id"] = _error("STRING_EXPECTED", "String expected")
    elif not user_exists(user_id, limits):
        errors["user_id"] = _NO_USER
    amount = item.get("amount")
    if amount is None:
        errors["amount"] = _REQUIRED
    elif isinstance(amount, bool) or not isinstance(amount, (int, float)):
        errors["amount"] = _error("FLOAT_EXPECTED", "Number expected")
    else:
        amount_error = _amount_error(amount, limits.min_amount, limits.max_amount)
        if amount_error is not None:
            errors["amount"] = amount_error
    without_message = item.get("without_message", False)
    if not isinstance(without_message, bool):
        errors["without_message"] = _error("BOOLEAN_EXPECTED", "Boolean expected")
    for name in ("public_title", "public_message"):
        text_value = item.get(name)
        if without_message is True:
            if text_value is not None:
                errors[name] = _error("VALUE_NOT_ALLOWED", "Must be null when without_message is true")
        elif text_value is None:
            errors[name] = _REQUIRED
        else:
            _check_texts(name, text_value, errors)
    for name in ("private_comment", "assignment_id"):
        text_value = item.get(name)
        if text_value is not None and not isinstance(text_value, str):
            errors[name] = _error("STRING_EXPECTED", "String expected")
    return errors or None


@lru_cache(maxsize=65536, typed=True)  # sheets repeat amounts: one Decimal per distinct (type, value)
def _amount_error(amount: float, min_amount: Decimal, max_amount: Decimal) -> dict[str, Any] | None:
    value = Decimal(repr(amount))
    if value < min_amount:
        return _error("VALUE_LESS_THAN_MIN", f"Value must be greater or equal to {min_amount}", [float(min_amount)])
    if value > max_amount:
        return _error("VALUE_GREATER_THAN_MAX", f"Value must be less or equal to {max_amount}", [float(max_amount)])
    return None


def conflict_indexes(items: list[Any]) -> list[int]:
    """Indexes of items repeating an earlier item's (user, amount, title, message, comment) in this request.

    Only items whose (user, amount, comment) repeats can repeat the whole key, so the texts are serialised for
    those alone (a sheet with a comment per row serialises none)."""
    counts: dict[Any, int] = {}
    for item in items:
        if isinstance(item, dict):
            try:
                pre = (item.get("user_id"), item.get("amount"), item.get("private_comment"))
                counts[pre] = counts.get(pre, 0) + 1
            except TypeError:
                continue
    seen: set[tuple[Any, ...]] = set()
    repeated: list[int] = []
    for idx, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        try:
            if counts.get((item.get("user_id"), item.get("amount"), item.get("private_comment")), 0) < 2:
                continue
        except TypeError:
            continue
        try:
            key = (
                item.get("user_id"),
                item.get("amount"),
                orjson.dumps(item.get("public_title"), option=orjson.OPT_SORT_KEYS),
                orjson.dumps(item.get("public_message"), option=orjson.OPT_SORT_KEYS),
                item.get("private_comment"),
            )
            hash(key)
        except (TypeError, orjson.JSONEncodeError):
            continue
        if key in seen:
            repeated.append(idx)
        seen.add(key)
    return repeated
