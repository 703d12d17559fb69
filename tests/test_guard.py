"""The spend guard: the verdict on a plan in exact cents (pure), and what `payout run` does with it against the
sandbox over HTTP — a refusal records nothing in the ledger and sends nothing; a confirmed plan pays."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from payout_helpers import last_rows, paid_on_server, post_count
from sandbox_fixtures import set_faults
from sheet_factory import row, uid, write_csv

from pipeline.guard import SpendLimits, check, parse_confirm_total
from pipeline.money import format_cents


def plan(*pairs: tuple[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [u for u, _ in pairs], "amount_cents": pd.array([c for _, c in pairs],
                                                                                     dtype="Int64")})


# -- the verdict ------------------------------------------------------------------------------------------


def test_no_limits_no_confirmation_pays() -> None:
    v = check(plan(("a", 150), ("b", 250), ("a", 100)), SpendLimits())
    assert (v.total_cents, v.rows, v.users, v.refused, v.reasons) == (500, 3, 2, False, ())
    assert v.message == "the run would pay $5.00 (3 rows to 2 users)"


def test_the_issue_s_run_over_its_cap_says_by_how_much_and_how_to_pay_it() -> None:
    """100,000 rows paying $1,053,578.00 (the issue's figure), exactly, against a $1,000,000.00 cap."""
    cents = [1053] * 99_999 + [105_357_800 - 1053 * 99_999]
    v = check(plan(*[(f"u{i % 40_000}", c) for i, c in enumerate(cents)]), SpendLimits(max_run_cents=100_000_000))
    assert v.refused and v.total_cents == 105_357_800
    assert v.message.startswith("the run would pay $1,053,578.00 (100,000 rows to 40,000 users), "
                                "$53,578.00 over max_run_cents ($1,000,000.00)")
    assert v.message.endswith("re-run with --confirm-total 1053578.00 to pay it anyway")


def test_a_total_exactly_at_a_cap_or_the_threshold_is_not_over_it() -> None:
    v = check(plan(("a", 600), ("b", 400)), SpendLimits(max_run_cents=1000, max_user_run_cents=600,
                                                        confirm_above_cents=1000))
    assert not v.refused and v.reasons == ()


def test_one_cent_over_each_limit_refuses_and_names_it() -> None:
    v = check(plan(("a", 601), ("b", 400)), SpendLimits(max_run_cents=1000, max_user_run_cents=600,
                                                        confirm_above_cents=1000))
    assert v.refused and len(v.reasons) == 3
    assert "$0.01 over max_run_cents ($10.00)" in v.message
    assert "1 user is over max_user_run_cents ($6.00): user a $6.01 ($0.01 over)" in v.message
    assert "$0.01 above confirm_above_cents ($10.00), where a real run needs confirmation" in v.message
    assert v.as_json()["users_over_cap"] == [{"user_id": "a", "amount": "6.01"}]


def test_the_per_user_cap_names_the_largest_first_and_counts_the_rest() -> None:
    pairs = [(f"user{i}", 1000 + i) for i in range(8)] + [("user3", 5000), ("small", 10)]
    v = check(plan(*pairs), SpendLimits(max_user_run_cents=1000))
    assert v.refused and [u for u, _ in v.over_users] == ["user3", "user7", "user6", "user5", "user4", "user2",
                                                          "user1"]
    assert "7 users are over max_user_run_cents ($10.00): user user3 $60.03 ($50.03 over), user user7" in v.message
    assert "and 2 more" in v.message and "user1 " not in v.message and "small" not in v.message


def test_a_confirm_total_equal_to_the_planned_total_pays_over_every_limit() -> None:
    limits = SpendLimits(max_run_cents=1, max_user_run_cents=1, confirm_above_cents=0, confirm_cents=1001)
    v = check(plan(("a", 601), ("b", 400)), limits)
    assert v.confirmed and not v.refused and not v.mismatch
    assert v.message.endswith("confirmed by --confirm-total 10.01")


@pytest.mark.parametrize("confirm", [1000, 1002, 0, 100_100])
def test_a_confirm_total_that_differs_always_refuses_with_both_figures(confirm: int) -> None:
    v = check(plan(("a", 601), ("b", 400)), SpendLimits(confirm_cents=confirm))
    assert v.refused and v.mismatch and v.reasons == ()
    assert (f"--confirm-total {format_cents(confirm)} (${confirm // 100:,}.{confirm % 100:02d}) differs from "
            "the planned total $10.01") in v.message
    assert "re-run with --confirm-total 10.01" in v.message


def test_nothing_left_to_pay_with_a_confirm_total_refuses_and_says_what_was_paid() -> None:
    v = check(plan(), SpendLimits(confirm_cents=12_986), settled=(11, 12_986))
    assert v.refused and v.total_cents == 0
    assert "11 rows of these sheets, $129.86, are already paid and not counted" in v.message
    assert "nothing is left to pay: re-run without --confirm-total" in v.message
    assert not check(plan(), SpendLimits(max_run_cents=0, confirm_above_cents=0)).refused


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.integers(1, 10**10)), max_size=40), st.integers(0, 10**11))
@settings(max_examples=200, deadline=None)
def test_the_verdict_is_exact_in_cents(pairs: list[tuple[str, int]], cap: int) -> None:
    v = check(plan(*pairs), SpendLimits(max_run_cents=cap))
    total = sum(c for _, c in pairs)
    assert v.total_cents == total and v.refused == (total > cap)
    assert check(plan(*pairs), SpendLimits(max_run_cents=cap, confirm_cents=total)).refused is False


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), st.integers(1, 5000)), max_size=60),
       st.integers(0, 10_000))
@settings(max_examples=200, deadline=None)
def test_the_codes_validate_carries_give_the_same_verdict_as_the_texts(pairs: list[tuple[str, int]], cap: int) -> None:
    """Per-user sums from the carried user-id codes (numbered over the whole sheet, so a plan may skip some)
    equal the sums by text, and the users named are the same, largest first."""
    frame = plan(*pairs)
    numbering = {u: i for i, u in enumerate("gfedcbaz")}  # a sheet's numbering, with codes this plan never uses
    carried = frame.assign(user_id__codes=frame["user_id"].map(numbering).astype("int32"))
    limits = SpendLimits(max_user_run_cents=cap)
    by_text, by_codes = check(frame, limits), check(carried, limits)
    assert by_codes == by_text
    sums: dict[str, int] = {}
    for u, c in pairs:
        sums[u] = sums.get(u, 0) + c
    assert by_text.users == len(sums)
    assert sorted(by_text.over_users) == sorted((u, c) for u, c in sums.items() if c > cap)
    assert [c for _, c in by_text.over_users] == sorted((c for _, c in by_text.over_users), reverse=True)


# -- --confirm-total as text ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, cents", [("1053578.00", 105_357_800), ("1053578", 105_357_800),
                                         ("1,053,578.50", 105_357_850), ("$1,053,578.5", 105_357_850),
                                         (" 0.07 ", 7), ("0", 0), ("85.1", 8510)])
def test_confirm_total_is_read_as_exact_decimal_text(text: str, cents: int) -> None:
    assert parse_confirm_total(text) == cents


@pytest.mark.parametrize("text", ["1.234", "-5.00", "1e6", "nan", "inf", "12,50", "1,23,456.00", "", "$", "1.",
                                  "0x10", "1 000.00", "€85.00", "85.00 USD", "9" * 20])
def test_confirm_total_refuses_anything_but_an_exact_amount(text: str) -> None:
    with pytest.raises(ValueError):
        parse_confirm_total(text)


@given(st.integers(0, 10**14))
def test_confirm_total_reads_back_every_figure_the_guard_prints(cents: int) -> None:
    assert parse_confirm_total(format_cents(cents)) == cents
    assert parse_confirm_total(f"${cents // 100:,}.{cents % 100:02d}") == cents


# -- payout run ---------------------------------------------------------------------------------------------


def run(payout, url: str, sheet: Path, tmp_path: Path, config: str | None, *flags: str) -> int:
    extra: list[str] = []
    if config is not None:
        (tmp_path / "guard.toml").write_text(config)
        extra = ["--config", str(tmp_path / "guard.toml")]
    return payout("run", str(sheet), "--api-url", url, "--batch-id", "week-48", *extra, *flags)


def ledger_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "rows", "operations")}


def test_a_refused_run_records_nothing_and_sends_nothing(sandbox, payout, tmp_path: Path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1, amount="60.00"), row(2, amount="50.00"), row(3, amount="x")])
    capsys.readouterr()
    assert run(payout, sandbox.url, sheet, tmp_path, "max_run_cents = 10000\n") == 2
    err = capsys.readouterr().err
    assert "the run would pay $110.00 (2 rows to 2 users), $10.00 over max_run_cents ($100.00)" in err
    assert "Traceback" not in err
    assert post_count(sandbox.url) == 0 and paid_on_server(sandbox.url) == {}
    assert ledger_counts(tmp_path / "ledger.sqlite") == {"runs": 0, "rows": 0, "operations": 0}
    assert not list((tmp_path / "reports").glob("*/rows.parquet"))
    # the same sheet, confirmed: paid; the invalid row stays out of the total
    assert run(payout, sandbox.url, sheet, tmp_path, "max_run_cents = 10000\n", "--confirm-total", "110.00") == 1
    assert paid_on_server(sandbox.url) == {(uid(1), "60.00"): 1, (uid(2), "50.00"): 1}


def test_the_per_user_cap_adds_a_user_s_rows_across_sheets(sandbox, payout, tmp_path: Path, capsys) -> None:
    a = write_csv(tmp_path / "a.csv", [row(1, amount="20.00"), row(2, amount="5.00")])
    b = write_csv(tmp_path / "b.csv", [row(3, amount="5.00"), row(1, amount="20.00", private_comment="other")])
    (tmp_path / "guard.toml").write_text("max_user_run_cents = 3000\n")
    capsys.readouterr()
    assert payout("run", str(a), str(b), "--api-url", sandbox.url, "--batch-id", "w", "--config",
                  str(tmp_path / "guard.toml")) == 2
    assert f"1 user is over max_user_run_cents ($30.00): user {uid(1)} $40.00 ($10.00 over)" in capsys.readouterr().err
    assert post_count(sandbox.url) == 0


def test_a_dry_run_shows_the_verdict_and_exits_as_a_dry_run(sandbox, payout, tmp_path: Path, capsys) -> None:
    sheet = write_csv(tmp_path / "p.csv", [row(1, amount="60.00"), row(2, amount="50.00")])
    capsys.readouterr()
    assert run(payout, sandbox.url, sheet, tmp_path, "confirm_above_cents = 5000\n", "--dry-run",
               "--confirm-total", "109.99") == 0
    out = capsys.readouterr().out
    assert ("Spend guard: a real run would refuse: --confirm-total 109.99 ($109.99) differs from the planned "
            "total $110.00 by $0.01") in out
    assert set(last_rows(tmp_path / "reports")["status"]) == {"planned"}
    assert post_count(sandbox.url) == 0


def test_rows_in_flight_count_so_the_same_command_resumes(sandbox, payout, tmp_path: Path) -> None:
    """A run stopped with its operation still running at the server: its rows are in flight; the same command
    (with the same --confirm-total) is judged on the same rows and resumes them, never paying twice."""
    sheet = write_csv(tmp_path / "p.csv", [row(1, amount="60.00"), row(2, amount="50.00")])
    cfg = "max_run_cents = 10000\n"
    set_faults(sandbox.url, "slow_op_ms=3000")
    assert run(payout, sandbox.url, sheet, tmp_path, cfg, "--confirm-total", "110", "--max-wait", "0.5") == 3
    assert set(last_rows(tmp_path / "reports")["status"]) == {"pending"}
    set_faults(sandbox.url, "")
    assert run(payout, sandbox.url, sheet, tmp_path, cfg, "--max-wait", "60") == 2  # still $110.00 to confirm
    assert run(payout, sandbox.url, sheet, tmp_path, cfg, "--confirm-total", "110", "--max-wait", "60") == 0
    assert paid_on_server(sandbox.url) == {(uid(1), "60.00"): 1, (uid(2), "50.00"): 1}
    assert post_count(sandbox.url) == 1


def test_the_packaged_production_and_sandbox_configs_ask_above_10_000_dollars() -> None:
    from pipeline.config import load_settings

    assert load_settings("production").confirm_above_cents == 1_000_000
    assert load_settings("sandbox").confirm_above_cents == 1_000_000
    local = load_settings("local")
    assert (local.confirm_above_cents, local.max_run_cents, local.max_user_run_cents) == (None, None, None)
