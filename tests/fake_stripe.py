"""A fake Stripe on loopback: the slice of Stripe's form-encoded API that pushes use.

It checks the secret key (Bearer), records every request, and replays idempotency keys as
Stripe does (https://docs.stripe.com/api/idempotent_requests): the same key with the same
parameters answers the saved response again, errors included, with `Idempotent-Replayed: true`;
the same key with other parameters is a 400 `idempotency_error`; a request whose key is still
being answered (another request under it in flight) is a 409 `idempotency_key_in_use`, saved
under nothing. Faults make it refuse a chosen request (an error status, saved under its key like
any answer, as Stripe saves its 500s), hang up after acting (the effect happens, the answer is
lost), stall past the client's timeout (the key stays in flight meanwhile), or answer as a busy
Stripe does before doing anything: 429 `rate_limit` or 409 `lock_timeout`, saved under nothing.

States are checked as Stripe checks them: only a draft is finalized or deleted, only an open
invoice is sent or paid out of band (`paid_out_of_band=true`: a paid or void one is refused),
a paid invoice cannot be voided, and a credit note needs an open or paid invoice, an amount,
and at most what is left to pay (or, on a paid invoice, as much again `out_of_band_amount`).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe
from pydantic import SecretStr

from service.core.settings import Settings
from service.integrations import stripe_api

WEBHOOK_SECRET = "whsec_test_ensemble"
Params = dict[str, Any]
Answer = tuple[int, Params]
FaultMode = Literal["refuse", "hang_up", "stall", "rate_limit", "conflict"]


def _nest(pairs: list[tuple[str, str]]) -> Params:
    """`metadata[a]=1&created[gte]=2` -> {"metadata": {"a": "1"}, "created": {"gte": "2"}}."""
    out: Params = {}
    for raw, value in pairs:
        parts = re.findall(r"[^\[\]]+", raw)
        here = out
        for part in parts[:-1]:
            here = here.setdefault(part, {})
        here[parts[-1]] = value
    return out


def _is_tax(params: Params) -> bool:
    return params.get("metadata", {}).get("ensemble_item") == "tax"


# Shorthands for faults: the request each step of a push makes.
STEPS: dict[str, tuple[str, str, Callable[[Params], bool] | None]] = {
    "customer_search": ("GET", r"/v1/customers/search", None),
    "customer": ("POST", r"/v1/customers", None),
    "invoice_list": ("GET", r"/v1/invoices", None),
    "invoice": ("POST", r"/v1/invoices", None),
    "items_list": ("GET", r"/v1/invoiceitems", None),
    "line": ("POST", r"/v1/invoiceitems", lambda p: not _is_tax(p)),
    "tax": ("POST", r"/v1/invoiceitems", _is_tax),
    "finalize": ("POST", r"/v1/invoices/in_\w+/finalize", None),
    "send": ("POST", r"/v1/invoices/in_\w+/send", None),
    "pay": ("POST", r"/v1/invoices/in_\w+/pay", None),
    "void": ("POST", r"/v1/invoices/in_\w+/void", None),
    "credit_note_list": ("GET", r"/v1/credit_notes", None),
    "credit_note": ("POST", r"/v1/credit_notes", None),
}


@dataclass
class Fault:
    method: str
    path: str
    mode: FaultMode
    status: int = 500
    where: Callable[[Params], bool] | None = None
    times: int | None = None  # None: every matching request until cleared
    seconds: float = 0.0

    def take(self, method: str, path: str, params: Params) -> bool:
        hit = method == self.method and re.fullmatch(self.path, path) is not None
        if not hit or self.times == 0 or (self.where is not None and not self.where(params)):
            return False
        self.times = None if self.times is None else self.times - 1
        return True


@dataclass
class Recorded:
    method: str
    path: str
    params: Params
    idempotency_key: str | None
    status: int | None = None  # None: hung up
    replayed: bool = False


@dataclass
class FakeStripe:
    secret: str = "sk_test_fake_ensemble"
    url: str = ""
    customers: dict[str, Params] = field(default_factory=dict)
    invoices: dict[str, Params] = field(default_factory=dict)
    items: dict[str, Params] = field(default_factory=dict)
    credit_notes: dict[str, Params] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)  # keys whose first request is unanswered
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    saved: dict[str, tuple[str, Answer]] = field(default_factory=dict)  # key: (params, answer)
    lock: threading.Lock = field(default_factory=threading.Lock)
    serial: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # -- control, for tests -------------------------------------------------------------

    def reset(self) -> None:
        with self.lock:
            for table in (
                self.customers,
                self.invoices,
                self.items,
                self.credit_notes,
                self.saved,
            ):
                table.clear()
            self.in_flight.clear()
            self.requests.clear()
            self.faults.clear()

    def fail(self, step: str, mode: FaultMode = "refuse", **options: Any) -> Fault:
        method, path, where = STEPS[step]
        fault = Fault(method, path, mode, where=where, **options)
        with self.lock:
            self.faults.append(fault)
        return fault

    def forget_idempotency_keys(self) -> None:
        """What Stripe does after 24 hours: a key seen before is new again."""
        with self.lock:
            self.saved.clear()

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def customers_of(self, organization_id: str) -> list[Params]:
        return _tagged(self.customers, "ensemble_organization_id", organization_id)

    def invoices_of(self, invoice_id: str) -> list[Params]:
        return _tagged(self.invoices, "ensemble_invoice_id", invoice_id)

    def items_of(self, stripe_invoice_id: str) -> list[Params]:
        return [i for i in self.items.values() if i["invoice"] == stripe_invoice_id]

    def credit_notes_of(self, stripe_invoice_id: str) -> list[Params]:
        notes = [n for n in self.credit_notes.values() if n["invoice"] == stripe_invoice_id]
        return sorted(notes, key=lambda n: n["id"])

    def writes(self, pattern: str) -> list[Recorded]:
        """The POST requests whose path matches `pattern` (answered or not)."""
        return [r for r in self.requests if r.method == "POST" and re.fullmatch(pattern, r.path)]

    # -- the API ------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, params: Params, fingerprint: str, headers: dict[str, str]
    ) -> tuple[Answer | None, Fault | None, bool, bool]:
        """The answer (None: hang up), the fault that applied, whether it is a replay, and
        whether this request put its key in flight (until `answered`)."""
        key = headers.get("idempotency-key") if method == "POST" else None
        holds = False
        with self.lock:
            record = Recorded(method, path, params, key)
            self.requests.append(record)
            if headers.get("authorization") != f"Bearer {self.secret}":
                record.status = 401
                answer = _error(401, "invalid_request_error", "Invalid API Key provided")
                return answer, None, False, False
            fault = next((f for f in self.faults if f.take(method, path, params)), None)
            replayed = False
            saved = self.saved.get(key) if key else None
            if fault is not None and fault.mode in ("rate_limit", "conflict"):
                record.status = 429 if fault.mode == "rate_limit" else 409
                return _busy(fault.mode), None, False, False
            if key and key in self.in_flight:
                record.status = 409
                return (
                    _error(
                        409,
                        "invalid_request_error",
                        "There is currently another in-progress request using this "
                        "Idempotent Key (that probably means you submitted twice, and the other "
                        "request is still going through). Please try again later.",
                        code="idempotency_key_in_use",
                    ),
                    None,
                    False,
                    False,
                )
            if saved is not None and saved[0] != fingerprint:
                answer = _error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                )
            elif saved is not None:
                answer, replayed = saved[1], True
            else:
                if fault is not None and fault.mode == "refuse":
                    answer = _error(fault.status, "api_error", "Injected refusal")
                else:
                    answer = self._act(method, path, params)
                if key:
                    self.saved[key] = (fingerprint, answer)
                    self.in_flight.add(key)
                    holds = True
            hang_up = fault is not None and fault.mode == "hang_up"
            record.status, record.replayed = (None if hang_up else answer[0]), replayed
        return (None if hang_up else answer), fault, replayed, holds

    def answered(self, key: str | None) -> None:
        """The answer under `key` has left (or the connection is gone): no longer in flight."""
        if key:
            with self.lock:
                self.in_flight.discard(key)

    def _act(self, method: str, path: str, params: Params) -> Answer:
        route = method + " " + re.sub(r"/(cus|in|ii|cn)_\w+", r"/{\1}", path)
        match = re.findall(r"/((?:cus|in|ii|cn)_\w+)", path)
        handler = {
            "POST /v1/customers": lambda: self._create_customer(params),
            "GET /v1/customers/search": lambda: self._search_customers(params),
            "DELETE /v1/customers/{cus}": lambda: self._delete_customer(match[0]),
            "POST /v1/invoices": lambda: self._create_invoice(params),
            "GET /v1/invoices": lambda: self._list_invoices(params),
            "GET /v1/invoices/{in}": lambda: self._invoice(match[0]),
            "DELETE /v1/invoices/{in}": lambda: self._delete_invoice(match[0]),
            "POST /v1/invoices/{in}/finalize": lambda: self._finalize(match[0]),
            "POST /v1/invoices/{in}/send": lambda: self._move(match[0], {"open"}, None),
            "POST /v1/invoices/{in}/pay": lambda: self._pay(match[0], params),
            "POST /v1/invoices/{in}/void": lambda: self._move(
                match[0], {"open", "uncollectible"}, "void"
            ),
            "POST /v1/invoiceitems": lambda: self._create_item(params),
            "GET /v1/invoiceitems": lambda: self._list_items(params),
            "POST /v1/credit_notes": lambda: self._create_credit_note(params),
            "GET /v1/credit_notes": lambda: self._list_credit_notes(params),
        }.get(route)
        if handler is None:
            return _error(404, "invalid_request_error", f"Unrecognized request URL ({route})")
        return handler()

    def _new(self, table: dict[str, Params], prefix: str, kind: str, **fields: Any) -> Params:
        row_id = f"{prefix}_fake{next(self.serial):06d}"
        table[row_id] = {"id": row_id, "object": kind, "created": int(time.time()), **fields}
        return table[row_id]

    def _create_customer(self, params: Params) -> Answer:
        fields = {k: params.get(k) for k in ("name", "email")}
        return 200, self._new(self.customers, "cus", "customer", **fields, metadata=_meta(params))

    def _delete_customer(self, customer_id: str) -> Answer:
        if self.customers.pop(customer_id, None) is None:
            return _error(404, "invalid_request_error", f"No such customer: '{customer_id}'")
        return 200, {"id": customer_id, "object": "customer", "deleted": True}

    def _search_customers(self, params: Params) -> Answer:
        found = re.fullmatch(r"metadata\['(\w+)'\]:'([^']*)'", params.get("query", ""))
        if not found:
            return _error(400, "invalid_request_error", "Unsupported search query")
        name, value = found.groups()
        data = _tagged(self.customers, name, value)
        return 200, {"object": "search_result", "url": "/v1/customers/search", "data": data}

    def _create_invoice(self, params: Params) -> Answer:
        if params.get("customer") not in self.customers:
            return _error(400, "invalid_request_error", "No such customer")
        copied = ("customer", "collection_method", "currency", "description")
        invoice = self._new(
            self.invoices,
            "in",
            "invoice",
            **{k: params.get(k) for k in copied},
            days_until_due=int(params["days_until_due"]),
            auto_advance=params.get("auto_advance") == "true",
            metadata=_meta(params),
            status="draft",
            number=None,
            hosted_invoice_url=None,
            amount_paid=0,
            pre_payment_credit_notes_amount=0,
            post_payment_credit_notes_amount=0,
            status_transitions={"finalized_at": None, "paid_at": None, "voided_at": None},
            sent=0,  # not Stripe's: how many times it was emailed
        )
        return self._invoice(invoice["id"])

    def _invoice(self, invoice_id: str) -> Answer:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            return _error(404, "invalid_request_error", f"No such invoice: '{invoice_id}'")
        total = sum(i["amount"] for i in self.items_of(invoice_id))
        due = total - invoice["pre_payment_credit_notes_amount"]
        paid = invoice["amount_paid"]
        invoice.update(subtotal=total, total=total, amount_due=due, amount_remaining=due - paid)
        return 200, dict(invoice)

    def _list_invoices(self, params: Params) -> Answer:
        since = int(params.get("created", {}).get("gte", 0))
        rows = [
            i
            for i in self.invoices.values()
            if i["customer"] == params.get("customer", i["customer"]) and i["created"] >= since
        ]
        return self._page("/v1/invoices", [self._invoice(i["id"])[1] for i in rows], params)

    def _page(self, url: str, rows: list[Params], params: Params) -> Answer:
        rows = sorted(rows, key=lambda r: (r["created"], r["id"]), reverse=True)  # newest first
        if "starting_after" in params:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(params["starting_after"]) + 1 :]
        limit = int(params.get("limit", 10))
        data = rows[:limit]
        return 200, {"object": "list", "url": url, "data": data, "has_more": len(rows) > limit}

    def _delete_invoice(self, invoice_id: str) -> Answer:
        invoice = self.invoices.get(invoice_id)
        if invoice is None or invoice["status"] != "draft":
            return _error(400, "invalid_request_error", "Only a draft invoice can be deleted")
        del self.invoices[invoice_id]
        for item in self.items_of(invoice_id):
            del self.items[item["id"]]
        return 200, {"id": invoice_id, "object": "invoice", "deleted": True}

    def _finalize(self, invoice_id: str) -> Answer:
        invoice = self.invoices.get(invoice_id)
        if invoice is None or invoice["status"] != "draft":
            return _error(400, "invalid_request_error", "This invoice is already finalized")
        total = self._invoice(invoice_id)[1]["total"]
        invoice["status"] = "open" if total else "paid"
        invoice["number"] = f"FAKE-{next(self.serial):04d}"
        invoice["hosted_invoice_url"] = f"{self.url}/i/{invoice_id}"
        invoice["status_transitions"]["finalized_at"] = int(time.time())
        return self._invoice(invoice_id)

    def _move(self, invoice_id: str, allowed: set[str], to: str | None) -> Answer:
        invoice = self.invoices.get(invoice_id)
        if invoice is None or invoice["status"] not in allowed:
            state = invoice["status"] if invoice else "missing"
            return _error(400, "invalid_request_error", f"The invoice is {state}")
        if to is None:
            invoice["sent"] += 1
        else:
            invoice["status"] = to
            invoice["status_transitions"][{"paid": "paid_at", "void": "voided_at"}[to]] = int(
                time.time()
            )
        return self._invoice(invoice_id)

    def _pay(self, invoice_id: str, params: Params) -> Answer:
        """Only out of band here (the fake has no payment methods to charge)."""
        invoice = self.invoices.get(invoice_id)
        if invoice is None or invoice["status"] != "open":
            state = invoice["status"] if invoice else "missing"
            return _error(400, "invalid_request_error", f"The invoice is {state}")
        if params.get("paid_out_of_band") != "true":
            return _error(402, "card_error", "The customer has no attached payment source")
        remaining = self._invoice(invoice_id)[1]["amount_remaining"]
        # Since 2025-03-31.basil amount_paid counts it (and `paid_out_of_band` is gone).
        invoice.update(status="paid", amount_paid=invoice["amount_paid"] + remaining)
        invoice["status_transitions"]["paid_at"] = int(time.time())
        return self._invoice(invoice_id)

    def _create_credit_note(self, params: Params) -> Answer:
        invoice = self.invoices.get(params.get("invoice", ""))
        if "invoice" not in params:
            return _error(400, "invalid_request_error", "Missing required param: invoice.")
        if invoice is None:
            return _error(400, "invalid_request_error", "No such invoice")
        if invoice["status"] not in ("open", "paid"):
            return _error(
                400,
                "invalid_request_error",
                f"A credit note needs an open or paid invoice; this one is {invoice['status']}",
            )
        if "amount" not in params and "lines" not in params:
            return _error(400, "invalid_request_error", "Provide either amount or lines")
        if "lines" in params:
            return _error(400, "invalid_request_error", "The fake takes an amount, not lines")
        amount = int(params["amount"])
        current = self._invoice(invoice["id"])[1]
        out_of_band = int(params.get("out_of_band_amount", 0))
        if amount <= 0:
            return _error(400, "invalid_request_error", "The amount must be positive")
        if invoice["status"] == "open":
            if out_of_band:
                return _error(400, "invalid_request_error", "No out-of-band amount when open")
            if amount > current["amount_remaining"]:
                return _error(
                    400,
                    "invalid_request_error",
                    "The credit note amount exceeds the invoice's amount remaining",
                )
            invoice["pre_payment_credit_notes_amount"] += amount
        else:
            credited = invoice["pre_payment_credit_notes_amount"]
            credited += invoice["post_payment_credit_notes_amount"]
            if out_of_band != amount or amount > current["total"] - credited:
                return _error(
                    400,
                    "invalid_request_error",
                    "On a paid invoice the amount must equal refund, credit and out-of-band "
                    "amounts, and not exceed what is left to credit",
                )
            invoice["post_payment_credit_notes_amount"] += amount
        note = self._new(
            self.credit_notes,
            "cn",
            "credit_note",
            invoice=invoice["id"],
            customer=invoice["customer"],
            amount=amount,
            out_of_band_amount=out_of_band or None,
            memo=params.get("memo"),
            status="issued",
            type="pre_payment" if invoice["status"] == "open" else "post_payment",
            metadata=_meta(params),
        )
        if invoice["status"] == "open" and self._invoice(invoice["id"])[1]["amount_remaining"] == 0:
            invoice["status"] = "paid"
            invoice["status_transitions"]["paid_at"] = int(time.time())
        return 200, note

    def _list_credit_notes(self, params: Params) -> Answer:
        rows = [n for n in self.credit_notes.values() if n["invoice"] == params.get("invoice")]
        return self._page("/v1/credit_notes", rows, params)

    def _create_item(self, params: Params) -> Answer:
        invoice = self.invoices.get(params.get("invoice", ""))
        if invoice is None or invoice["status"] != "draft":
            return _error(400, "invalid_request_error", "Items go on a draft invoice")
        if params.get("customer") != invoice["customer"]:
            return _error(400, "invalid_request_error", "The item's customer is not the invoice's")
        copied = ("invoice", "customer", "currency", "description")
        fields = {k: params.get(k) for k in copied}
        item = self._new(self.items, "ii", "invoiceitem", **fields, metadata=_meta(params))
        item["amount"] = int(params["amount"])
        return 200, item

    def _list_items(self, params: Params) -> Answer:
        rows = [i for i in self.items.values() if i["invoice"] == params.get("invoice")]
        return self._page("/v1/invoiceitems", rows, params)

    # -- serving ------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeStripe]:
        fake = cls()
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
        server.daemon_threads = True
        fake.url = f"http://127.0.0.1:{server.server_address[1]}"
        # A short poll interval: shutdown() waits for the serving loop to look again.
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        try:
            yield fake
        finally:
            server.shutdown()
            server.server_close()


def _meta(params: Params) -> dict[str, str]:
    return dict(params.get("metadata", {}))


def _tagged(table: dict[str, Params], name: str, value: str) -> list[Params]:
    return [row for row in table.values() if row["metadata"].get(name) == value]


def _error(status: int, kind: str, message: str, code: str | None = None) -> Answer:
    error: Params = {"type": kind, "message": message}
    if code is not None:
        error["code"] = code
    return status, {"error": error}


def _busy(mode: str) -> Answer:
    """What a busy Stripe answers before doing anything (nothing saved under the key)."""
    if mode == "rate_limit":
        return _error(
            429, "invalid_request_error", "Too many requests hit the API too quickly.", "rate_limit"
        )
    return _error(
        409,
        "invalid_request_error",
        "This object cannot be accessed right now because another API request or Stripe "
        "process is currently accessing it.",
        "lock_timeout",
    )


def _handler_for(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out in two writes: with Nagle's algorithm on, the body
        # waits for the client's delayed ACK of the headers (40 ms on Linux, every request).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            pairs = parse_qsl(body or url.query, keep_blank_values=True)
            headers = {k.lower(): v for k, v in self.headers.items()}
            fingerprint = json.dumps([self.command, url.path, sorted(pairs)])
            answer, fault, replayed, holds = fake.handle(
                self.command, url.path, _nest(pairs), fingerprint, headers
            )
            try:
                self._answer(answer, fault, replayed)
            finally:
                if holds:
                    fake.answered(headers.get("idempotency-key"))

        def _answer(self, answer: Answer | None, fault: Fault | None, replayed: bool) -> None:
            if answer is None:  # hang up: Stripe acted, the answer is lost
                self.close_connection = True
                return
            if fault is not None and fault.mode == "stall":
                time.sleep(fault.seconds)
            status, payload = answer
            raw = json.dumps(payload).encode()
            self.send_response_only(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("Request-Id", f"req_fake{next(fake.serial):06d}")
            if replayed:
                self.send_header("Idempotent-Replayed", "true")
            try:
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a stall past its timeout)

        do_GET = do_POST = do_DELETE = _serve

    return Handler


def stripe_fixtures() -> tuple[Any, Any, Any]:
    """`stripe_server` (one fake per test module), `fake_stripe` (emptied for each test) and
    `settings` (the suite's, with Stripe pointed at the fake): bind all three in a module."""

    @pytest.fixture(scope="module")
    def stripe_server() -> Iterator[FakeStripe]:
        with FakeStripe.running() as fake:
            yield fake

    @pytest.fixture
    def fake_stripe(stripe_server: FakeStripe, monkeypatch: pytest.MonkeyPatch) -> FakeStripe:
        stripe_server.reset()
        # The SDK's retries still happen, without its half-second backoff between them.
        monkeypatch.setattr(stripe.HTTPClient, "INITIAL_DELAY", 0.01)
        monkeypatch.setattr(stripe.HTTPClient, "MAX_DELAY", 0.02)
        # And ours (409 in flight, 429, no answer), quicker than against the real Stripe.
        monkeypatch.setattr(stripe_api, "RETRY_FIRST", 0.01)
        monkeypatch.setattr(stripe_api, "RETRY_MAX", 0.02)
        return stripe_server

    @pytest.fixture
    def settings(settings: Settings, fake_stripe: FakeStripe) -> Settings:
        return settings.model_copy(
            update={
                "stripe_api_key": SecretStr(fake_stripe.secret),
                "stripe_api_base": fake_stripe.url,
                "stripe_webhook_secret": SecretStr(WEBHOOK_SECRET),
            }
        )

    return stripe_server, fake_stripe, settings
