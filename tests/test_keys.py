from __future__ import annotations

import hashlib

from pipeline.keys import assign_row_keys
from pipeline.validate import ValidationRules, validate_rows
from sheet_factory import canonical_frame, row


def keyed(rows, batch="batch-1"):
    checked, _ = validate_rows(canonical_frame(rows), ValidationRules())
    return assign_row_keys(checked, batch)


def test_every_row_gets_a_distinct_32_hex_key_even_identical_rows():
    keys = keyed([row(1), row(1), row(1), row(2)])["row_key"].tolist()
    assert len(set(keys)) == 4
    assert all(len(k) == 32 and set(k) <= set("0123456789abcdef") for k in keys)


def test_keys_survive_a_re_export_of_the_same_sheet():
    a = keyed([row(1, amount="1.5", public_title='{"EN": "A", "RU": "B"}'), row(2)])
    b = keyed([row(1, amount="1.50", public_title='{"RU":"B","EN":"A"}'), row(2, amount="$1.50")])
    assert a["row_key"].tolist() == b["row_key"].tolist()


def test_keys_depend_on_batch_and_on_every_identity_field():
    base = keyed([row(1)])["row_key"][0]
    assert keyed([row(1)], batch="batch-2")["row_key"][0] != base
    for change in ({"amount": "1.51"}, {"user_id": row(2)["user_id"]}, {"assignment_id": "x"},
                   {"private_comment": "other"}, {"public_title": '{"EN": "other"}'},
                   {"public_message": '{"EN": "other"}'}):
        assert keyed([row(1, **change)])["row_key"][0] != base, change


def test_the_key_formula_is_the_documented_one():
    r = row(1, assignment_id=None)
    k = keyed([r])["row_key"][0]
    text = "\x1f".join(["batch-1", "row", r["user_id"], "150", "", '{"EN":"Great work"}', '{"EN":"Thank you!"}',
                        r["private_comment"], "0"])
    assert k == hashlib.sha256(text.encode()).hexdigest()[:32]


def test_repeat_keys_follow_occurrence_order():
    first = keyed([row(1), row(2)])["row_key"].tolist()
    again = keyed([row(1), row(2), row(1)])["row_key"].tolist()
    assert again[:2] == first and again[2] not in first


def test_bonus_key_is_the_identity_when_given():
    a = keyed([row(1, bonus_key="PAY-1")])["row_key"][0]
    b = keyed([row(1, bonus_key="PAY-1", amount="2", private_comment="changed")])["row_key"][0]
    assert a == b == hashlib.sha256("batch-1\x1fkey\x1fPAY-1".encode()).hexdigest()[:32]
    assert keyed([row(1, bonus_key="PAY-2")])["row_key"][0] != a


def test_invalid_rows_get_keys_from_their_raw_amount():
    k = keyed([row(1, amount="1.234"), row(1, amount="1.235"), row(1, amount=None)])["row_key"]
    assert k.notna().all() and k.nunique() == 3


def test_empty_frame():
    assert keyed([]).empty


def test_known_keys_never_change():
    """Keys are persisted in ledgers: a changed key means a row paid twice. These hex values were computed
    by the key code before any optimisation; any rewrite of keys.py must reproduce them exactly."""
    rows = [row(1), row(1), row(2, amount="$2", public_title='{"RU": "Бонус", "EN": "Bonus"}',
                                 public_message='{"TR":"Teşekkürler"}'),
            row(3, amount="1.234", private_comment=None, assignment_id=None), row(4, amount=None, user_id="NOT-A-USER"),
            row(5, bonus_key="PAY-5"), row(1),
            row(6, public_title="not json", without_message="yes", private_comment="ünï ✓ 😀"),
            row(7, amount="100.00", public_title=None, public_message=None, without_message="true")]
    assert keyed(rows, batch="batch-pin")["row_key"].tolist() == [
        "62f3f17554a375f9761462f06f7e7f84", "c5a156a121efda55d730f2debdd36e06", "42ad5ffecb972b57d6cc09deb0d13817",
        "a267173d14e3cff0e54c6a6f60a793fe", "4c41047d28c36cc21c28f21b6e43dc6c", "e3d48a3c0ed988a63021ca74b0ff529f",
        "284a573819dbe4edf95d8b5ec92accc2", "71beb009b7e1b4c6e9e7f6109ac93228", "761e2f3938946338c9cf1a3b2c6b96d7",
    ]
