"""`payout audit` (a composer, like `run` and `recover`): reconcile the ledger against the server's own list of
bonuses, independently of any run.

A ledger row is tied to its server bonus by the bonus id the operation log gave us (never by content, so
nothing needs to be written into finance's `private_comment`). The other direction — bonuses on the
server that the ledger does not know — is checked over the batch's users and the operations' time window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline import report
from pipeline.config import Settings
from pipeline.contract import new_run_id
from pipeline.errors import UsageError
from pipeline.ledger import Ledger
from pipeline.money import cents_from_json, format_cents
from pipeline.target import Target, make_client
from pipeline.toloka import TolokaClient

KINDS = ("matched", "missing", "mismatched", "unexpected", "unknown")
WINDOW_SLACK = timedelta(minutes=5)


def reconcile(ledger_rows: pd.DataFrame, known_bonus_ids: set[str], server: pd.DataFrame,
              unknown_rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """Pure comparison. `ledger_rows`: paid rows (row_key, source_file, source_row, user_id, amount_cents,
    bonus_id); `server`: bonuses (bonus_id, user_id, amount_cents, created) seen on the server;
    `unknown_rows`: rows of unknown outcome, named as the likely owner of an unexpected bonus they match."""
    found_on_server = server[["bonus_id", "user_id", "amount_cents"]].rename(
        columns={"user_id": "server_user_id", "amount_cents": "server_amount_cents"})
    found_on_server["server_amount_cents"] = found_on_server["server_amount_cents"].astype("Int64")
    paid = ledger_rows[["row_key", "source_file", "source_row", "user_id", "amount_cents", "bonus_id"]].rename(
        columns={"amount_cents": "ledger_amount_cents"}).merge(found_on_server, on="bonus_id", how="left")
    found = paid["server_user_id"].notna().to_numpy()
    same = found & (paid["server_user_id"] == paid["user_id"]).to_numpy() & (
        paid["server_amount_cents"] == paid["ledger_amount_cents"]).fillna(False).to_numpy(dtype=bool)
    paid["kind"] = np.select([~found, same], ["missing", "matched"], "mismatched")
    paid["detail"] = None
    paid.loc[~found, "detail"] = "ledger says paid, server has no such bonus"
    wrong = found & ~same
    paid.loc[wrong, "detail"] = [f"server has user {u} amount {format_cents(int(a))}" for u, a in
                                 zip(paid.loc[wrong, "server_user_id"], paid.loc[wrong, "server_amount_cents"])]
    out: list[dict[str, Any]] = []
    unknown = unknown_rows if unknown_rows is not None else ledger_rows.iloc[:0]
    owners = {(u, int(a)): f"{f}:{r}" for u, a, f, r in
              zip(unknown["user_id"], unknown["amount_cents"], unknown["source_file"], unknown["source_row"])}
    users = set(ledger_rows["user_id"]) | set(unknown["user_id"])
    strays = server[~server["bonus_id"].isin(known_bonus_ids) & server["user_id"].isin(users)]
    for s in strays.itertuples(index=False):
        owner = owners.get((s.user_id, int(s.amount_cents)))
        detail = f"bonus created {s.created} is not in the ledger"
        if owner:
            detail += f"; probably the bonus of row {owner}, whose outcome the ledger marks unknown"
        out.append({"row_key": None, "source_file": None, "source_row": None, "user_id": s.user_id,
                    "ledger_amount_cents": None, "bonus_id": s.bonus_id, "kind": "unexpected",
                    "server_amount_cents": int(s.amount_cents), "detail": detail})
    for u in unknown.itertuples(index=False):  # never an all-clear while an outcome is unknown
        out.append({"row_key": u.row_key, "source_file": u.source_file, "source_row": u.source_row,
                    "user_id": u.user_id, "ledger_amount_cents": int(u.amount_cents), "bonus_id": None,
                    "kind": "unknown", "server_amount_cents": None,
                    "detail": "the ledger marks its outcome unknown (never resent); the next `payout run` asks the "
                              "server again; an unexpected bonus of the same user and amount is probably its own"})
    cols = ["kind", "row_key", "source_file", "source_row", "user_id", "ledger_amount_cents",
            "server_amount_cents", "bonus_id", "detail"]
    return pd.concat([paid.drop(columns="server_user_id")[cols], pd.DataFrame(out, columns=cols)],
                     ignore_index=True)


def fetch_server_bonuses(client: TolokaClient, ledger_rows: pd.DataFrame, window: tuple[str, str] | None
                         ) -> pd.DataFrame:
    """The server's bonuses in the time window, plus any ledger bonus outside it looked up by id."""
    seen: dict[str, dict[str, Any]] = {}
    if window is not None:
        for b in client.iter_user_bonuses(created_gte=window[0], created_lte=window[1]):
            seen[str(b["id"])] = b
    for bonus_id in set(ledger_rows["bonus_id"].dropna()) - seen.keys():
        found = client.get_user_bonus(bonus_id)
        if found is not None:
            seen[str(found["id"])] = found
    return pd.DataFrame(
        [(k, b["user_id"], cents_from_json(b["amount"]), b.get("created")) for k, b in seen.items()],
        columns=["bonus_id", "user_id", "amount_cents", "created"])


def _window(operations: pd.DataFrame) -> tuple[str, str] | None:
    stamps = pd.concat([operations["submitted"], operations["finished"]]).dropna()
    if stamps.empty:
        return None
    times = [datetime.fromisoformat(str(t).rstrip("Z")) for t in stamps]
    fmt = "%Y-%m-%dT%H:%M:%S"
    return (min(times) - WINDOW_SLACK).strftime(fmt), (max(times) + WINDOW_SLACK).strftime(fmt)


@dataclass(frozen=True)
class AuditResult:
    scope: str  # "batch B" or "whole ledger"
    counts: dict[str, int]
    path: Path

    @property
    def all_match(self) -> bool:
        return all(self.counts[k] == 0 for k in KINDS if k != "matched")


def run_audit(settings: Settings, target: Target, run_id: str | None = None) -> AuditResult:
    """Reconcile the ledger (one run's batch, or all of it) with the server; write audit.parquet."""
    with Ledger(settings.ledger, lock=False) as ledger:
        batch_id = None
        if run_id:
            info = ledger.run_info(run_id)
            if info is None:
                raise UsageError(f"no run {run_id} in ledger {settings.ledger_label}")
            batch_id = info["batch_id"]
        rows = ledger.rows_frame(batch_id=batch_id, statuses=("paid",))
        unknown = ledger.rows_frame(batch_id=batch_id, statuses=("unknown",))
        known = set(ledger.rows_frame(statuses=("paid",))["bonus_id"].dropna())
        ops = ledger.operations_frame()
        if batch_id:
            ops = ops[ops["batch_id"] == batch_id]
    with make_client(target, settings) as client:
        server = fetch_server_bonuses(client, rows, _window(ops))
    result = reconcile(rows, known, server, unknown)
    out_dir = Path(settings.out_dir) / (run_id or new_run_id())
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "audit.parquet"
    report.write_table_atomic(pa.Table.from_pandas(result.astype({"source_row": "Int64",
                                                                    "ledger_amount_cents": "Int64",
                                                                    "server_amount_cents": "Int64"}),
                                                   preserve_index=False), path)
    return AuditResult(f"batch {batch_id}" if batch_id else "whole ledger",
                       {k: int((result["kind"] == k).sum()) for k in KINDS}, path)
