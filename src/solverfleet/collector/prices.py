"""Prices and type aliases: global and per account, as team configs write them and as the agent
snapshot and ingest read them.

Where a key's price comes from (``captchatypes.resolve_price``): its account's price for the
type, else its account's default (type ``*``), else the global price for the type, else the
global default. A team config writes its account's rows (``account_prices``) unless it says
``prices_scope: global`` (the ``prices`` table). Prices absent from a file are left alone (a
file never deletes one); an account's aliases are the file's whole list (absent ones go).
"""

from __future__ import annotations

from solverfleet.captchatypes import BUILTIN_ALIASES, DEFAULT_TYPE, resolve_price
from solverfleet.collector.store import Tx

# A call made up to this long after a price change may still carry the old price: the agent
# learns prices on its next sync (a fraction of a second), and its clock may lag a little.
PRICE_CHANGE_GRACE_MS = 60_000


def apply_prices(
    tx: Tx, account: str | None, prices: dict[str, int], now_ms: int
) -> list[tuple[str, list[str] | None, int | None]]:
    """Write ``prices`` (type -> micros, ``*`` the default) for ``account`` (None: global);
    ``[(type, None (created) | changed fields, the row's price before)]``. A changed row
    keeps its previous price, so ingest accepts calls an agent made at it just before it
    learned the new one."""
    table, where, args = (
        ("prices", "type = ?", ()) if account is None else
        ("account_prices", "account = ? AND type = ?", (account,))
    )  # fmt: skip
    out: list[tuple[str, list[str] | None, int | None]] = []
    for type_, micros in prices.items():
        row = tx.one(
            f"SELECT price_micros FROM {table} WHERE {where}{tx.dialect.for_update}",
            (*args, type_),
        )
        if row is None:
            # What applied until now, if anything: calls at it in flight stay honest.
            before = _resolved_before(tx, account, type_)
            columns = ("account", "type") if account is not None else ("type",)
            tx.execute(
                f"INSERT INTO {table} ({', '.join(columns)}, price_micros,"
                f" previous_price_micros, changed_ms) VALUES ({', '.join('?' * len(columns))},"
                " ?, ?, ?)",
                (*args, type_, micros, before, now_ms if before is not None else 0),
            )
            out.append((type_, None, None))
        elif int(row[0]) == micros:
            out.append((type_, [], micros))
        else:
            tx.execute(
                f"UPDATE {table} SET price_micros = ?, previous_price_micros = ?, changed_ms = ?"
                f" WHERE {where}",
                (micros, int(row[0]), now_ms, *args, type_),
            )
            out.append((type_, ["price"], int(row[0])))
    return out


def _resolved_before(tx: Tx, account: str | None, type_: str) -> int | None:
    if type_ == DEFAULT_TYPE:
        return None  # a default covers many types; no single old price to honour
    table = read_prices(tx)
    return resolve_price(table["prices"], table["account_prices"].get(account or ""), type_)


def apply_aliases(tx: Tx, account: str, aliases: dict[str, str]) -> bool:
    """Make ``account``'s aliases exactly ``aliases``; True if anything changed."""
    have = read_aliases(tx).get(account, {})
    if have == aliases:
        return False
    tx.execute("DELETE FROM type_aliases WHERE account = ?", (account,))
    for alias, type_ in sorted(aliases.items()):
        tx.execute(
            "INSERT INTO type_aliases (account, alias, type) VALUES (?, ?, ?)",
            (account, alias, type_),
        )
    return True


def read_prices(tx: Tx) -> dict:
    """``{"prices": {type: micros}, "account_prices": {account: {type: micros}}}`` (``*``
    included): the snapshot agents decide on."""
    glob = {t: int(p) for t, p in tx.all("SELECT type, price_micros FROM prices ORDER BY type")}
    per: dict[str, dict[str, int]] = {}
    for account, type_, micros in tx.all(
        "SELECT account, type, price_micros FROM account_prices ORDER BY account, type"
    ):
        per.setdefault(account, {})[type_] = int(micros)
    return {"prices": glob, "account_prices": per}


def read_aliases(tx: Tx) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for account, alias, type_ in tx.all(
        "SELECT account, alias, type FROM type_aliases ORDER BY account, alias"
    ):
        out.setdefault(account, {})[alias] = type_
    return out


def priced_types(tx: Tx, account: str | None) -> list[str] | None:
    """The type names a key of ``account`` may be allowed (aliases included); None when a
    default price prices every type."""
    table = read_prices(tx)
    own = table["account_prices"].get(account or "", {})
    if DEFAULT_TYPE in own or DEFAULT_TYPE in table["prices"]:
        return None
    slugs = set(table["prices"]) | set(own)
    aliases = {**BUILTIN_ALIASES, **read_aliases(tx).get(account or "", {})}
    return sorted(slugs | {a for a, t in aliases.items() if t in slugs})


class Accepted:
    """Ingest's view: the price a key's account pays for a type, and the prices honest just
    after a change (``accepts``)."""

    def __init__(self, tx: Tx) -> None:
        self.glob: dict[str, tuple[int, int | None, int]] = {}
        self.own: dict[str, dict[str, tuple[int, int | None, int]]] = {}
        for type_, price, previous, changed in tx.all(
            "SELECT type, price_micros, previous_price_micros, changed_ms FROM prices"
        ):
            self.glob[type_] = _row(price, previous, changed)
        for account, type_, price, previous, changed in tx.all(
            "SELECT account, type, price_micros, previous_price_micros, changed_ms"
            " FROM account_prices"
        ):
            self.own.setdefault(account, {})[type_] = _row(price, previous, changed)
        self.glob_prices = {t: r[0] for t, r in self.glob.items()}
        self.own_prices = {a: {t: r[0] for t, r in rows.items()} for a, rows in self.own.items()}

    def _chain(self, account: str | None, type_: str) -> list[tuple[int, int | None, int]]:
        own = self.own.get(account or "", {})
        rows = [own.get(type_), own.get(DEFAULT_TYPE), self.glob.get(type_)]
        rows.append(self.glob.get(DEFAULT_TYPE))
        return [r for r in rows if r is not None]

    def price(self, account: str | None, type_: str) -> int | None:
        return resolve_price(self.glob_prices, self.own_prices.get(account or ""), type_)

    def old_price(self, account: str | None, type_: str, cost: int, ts_ms: int) -> bool:
        """``cost`` was some price on this key's chain until a change less than the grace
        before ``ts_ms`` (an agent may charge it until its next sync)."""
        return any(
            previous == cost and ts_ms <= changed + PRICE_CHANGE_GRACE_MS
            for _, previous, changed in self._chain(account, type_)
        )


def _row(price: int, previous: int | None, changed: int) -> tuple[int, int | None, int]:
    return int(price), None if previous is None else int(previous), int(changed)
