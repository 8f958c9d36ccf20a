"""The load: a fixed number of virtual users, each a real account (or a few in turn), each one
request at a time with a short pause between them, on the real clock.

A user signs up, turns 2FA on (an authenticator app whose codes it computes from the secret it
holds), sometimes verifies a phone, and then browses with a verified session, signs in again
(right codes, wrong ones, a replayed one, a recovery code, a texted code, a remembered
browser), asks for new recovery codes when few are left, and now and then a burst of wrong
codes until the limit refuses. The owner of the site changes its policy. Every request is
recorded (:class:`Sample`): its kind, its answer, when it was sent and answered, and what the
checks need (the time step of a code, the recovery code).

A request goes to the workers in turn, as a load balancer would send it: one whose port refuses
the connection (a worker that was killed) is passed to the next; one that breaks after it was
sent is *dropped* (no answer), never sent again.

Each user keeps a model of its own failure budget (every attempt counted until a success, as
the kit counts them) and sends a code only when the model says the kit would take it, except in
a burst; a time step is used once, in order. So outside the faults every answer is the one its
kind expects (:data:`EXPECTED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from http.cookiejar import Cookie
from pathlib import Path
from typing import Any

import httpx
from limits import parse_many

from bench.soak.cluster import OWNER, SITE, Worker, Workers
from mfa_guard.core import totp
from mfa_guard.settings import RateLimitSettings

PARAMS = totp.TOTPParameters()
# Steps accepted either side of now (the settings' default): a user sends now's or the next.
DRIFT = 1
# A verification recent enough for a step-up (recent_mfa_seconds is 300), with a margin.
RECENT_SECONDS = 240.0
# The site's resend cooldown is one text per 5 seconds (bench.soak.cluster.worker_env).
TEXT_COOLDOWN = 6.0
# Beyond this a request is hung: no answer of the kit may take so long (the timeouts are short).
CLIENT_TIMEOUT = 60.0
# A success clears the failure counts just after its answer (in the background): a burst waits
# this long after the last one, so that every attempt of the burst counts (bench.soak.checks).
SETTLE_SECONDS = 4.0
# Idle connections are dropped before uvicorn would close them (bench.soak.worker).
KEEPALIVE_SECONDS = 2.0
DEVICE_COOKIE = "mfa_guard_device"


class Outcome(StrEnum):
    OK = "ok"  # the answer the kind expects when all is well
    REFUSED = "refused"  # an expected refusal: a wrong code's 422, a limit's 429
    UNAVAILABLE = "503"
    DROPPED = "dropped"  # no answer: the connection broke after the request was sent
    UNEXPECTED = "unexpected"


# Per kind: the statuses of success, and the statuses of an expected refusal.
EXPECTED: dict[str, tuple[frozenset[int], frozenset[int]]] = {
    "signup": (frozenset({303}), frozenset()),
    "sign_in": (frozenset({303}), frozenset()),
    "setup": (frozenset({200}), frozenset()),
    "confirm": (frozenset({200}), frozenset()),
    "browse": (frozenset({200}), frozenset()),
    "page": (frozenset({200}), frozenset()),
    "status": (frozenset({200}), frozenset()),
    "challenged": (frozenset({401}), frozenset()),
    "device_sign_in": (frozenset({200}), frozenset()),
    "verify": (frozenset({200}), frozenset()),
    "wrong_code": (frozenset(), frozenset({422, 429})),
    "replay": (frozenset(), frozenset({422, 429})),
    "recovery": (frozenset({200}), frozenset()),
    "recovery_replay": (frozenset(), frozenset({422, 429})),
    "sms_send": (frozenset({202}), frozenset({429})),
    "sms_verify": (frozenset({200}), frozenset()),
    "phone": (frozenset({202}), frozenset()),
    "phone_verify": (frozenset({200}), frozenset()),
    "new_codes": (frozenset({200}), frozenset({401})),
    "policy": (frozenset({200}), frozenset({401})),
}
# The kinds whose 200 is a verified second factor: the kit then clears the failure counts.
SUCCESSES = frozenset({"confirm", "verify", "recovery", "sms_verify", "device_sign_in"})
# The kinds whose 422 is an attempt the kit counted in a budget, and which budget.
CODE_FAILURES = frozenset({"wrong_code", "replay", "verify", "sms_verify"})
RECOVERY_FAILURES = frozenset({"recovery_replay", "recovery"})


def classify(kind: str, status: int) -> Outcome:
    if status == 0:
        return Outcome.DROPPED
    if status == 503:
        return Outcome.UNAVAILABLE
    ok, refused = EXPECTED[kind]
    if status in ok:
        return Outcome.OK
    if status in refused:
        return Outcome.REFUSED
    return Outcome.UNEXPECTED


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: times are seconds since the epoch (the kit's clock is the same)."""

    kind: str
    user: str
    status: int  # 0: dropped
    error: str | None  # the JSON error's code
    outcome: Outcome
    sent: float
    received: float
    worker: int
    rerouted: bool = False
    detail: str = ""

    @property
    def latency(self) -> float:
        return self.received - self.sent


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    error: str | None
    body: Any
    outcome: Outcome
    retry_after: float | None = None

    @property
    def answered(self) -> bool:
        """The kit answered (not a 503, not dropped): what it did is known."""
        return self.status not in (0, 503)


class Interrupted(Exception):
    """A flow met an answer it cannot go on from (a fault): the user takes stock and goes on,
    after the ``Retry-After`` of a 503 (a client that honours it)."""

    def __init__(self, retry_after: float = 0.0) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


@dataclass
class Budget:
    """The user's model of one failure budget of the kit: every attempt counts until a
    success; a 429's ``Retry-After`` blocks until then."""

    windows: list[tuple[int, int]]  # (attempts, seconds)
    attempts: list[float] = field(default_factory=list)
    blocked_until: float = 0.0

    @classmethod
    def of(cls, spec: str) -> Budget:
        return cls([(item.amount, item.get_expiry()) for item in parse_many(spec)])

    def allows(self, now: float, count: int = 1) -> bool:
        if now < self.blocked_until:
            return False
        return all(
            sum(1 for at in self.attempts if at > now - seconds) + count <= amount
            for amount, seconds in self.windows
        )

    def spend(self, at: float) -> None:
        self.attempts.append(at)

    def clear(self) -> None:
        self.attempts.clear()
        self.blocked_until = 0.0


RATE_LIMITS = RateLimitSettings()


@dataclass
class Account:
    """What the user knows of one account of theirs: the checks hold the database to it."""

    user: str
    phone: str | None = None
    member: bool = False
    secret: str | None = None
    app_id: str | None = None
    enrolled: bool = False
    enrolment_unknown: bool = False
    steps_sent: set[int] = field(default_factory=set)
    steps_accepted: list[int] = field(default_factory=list)
    last_code: tuple[int, str] | None = None
    # The current set of recovery codes as issued, those still unused, those accepted.
    codes_issued: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    codes_known: bool = False
    codes_sent: set[str] = field(default_factory=set)
    codes_accepted: list[str] = field(default_factory=list)
    phone_verified: bool = False
    device: list[Cookie] = field(default_factory=list)
    last_text: float = 0.0
    code_budget: Budget = field(default_factory=lambda: Budget.of(RATE_LIMITS.failures))
    recovery_budget: Budget = field(
        default_factory=lambda: Budget.of(RATE_LIMITS.recovery_failures)
    )

    def fresh_step(self, now: float) -> int | None:
        """A time step the kit accepts now that this account never sent, or ``None``."""
        current = totp.step_at(now, PARAMS)
        sent = max(self.steps_sent, default=0)
        return next((step for step in (current, current + DRIFT) if step > sent), None)

    def succeeded(self) -> None:
        self.code_budget.clear()
        self.recovery_budget.clear()


@dataclass(frozen=True, slots=True)
class PolicyChange:
    enforce: bool
    grace_hours: int | None
    sent: float
    status: int


@dataclass
class Pace:
    """How the users behave: their pause between requests, and in seconds how often each makes
    a new account, the owner changes the policy, a user may try a burst of wrong codes."""

    think: tuple[float, float] = (0.05, 0.25)
    account_every: float = 120.0
    policy_every: float = 20.0
    burst_every: float = 120.0


class Balancer:
    """The workers in turn; a refused connection passes the request to the next."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self._next = 0

    def order(self) -> list[Worker]:
        everyone = self.workers.all
        start = self._next % len(everyone)
        self._next += 1
        return everyone[start:] + everyone[:start]


@dataclass
class Run:
    """What the users share: the record, the workers, the site's policy as the owner set it."""

    balancer: Balancer
    texts: Path
    pace: Pace
    samples: list[Sample] = field(default_factory=list)
    accounts: list[Account] = field(default_factory=list)
    policy: list[PolicyChange] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class VirtualUser:
    def __init__(self, index: int, run: Run, *, seed: int) -> None:
        self.index = index
        self.run = run
        self.owner = index == 0
        self.rng = random.Random(seed)  # noqa: S311 (a load's choices, not a secret)
        self.client = httpx.AsyncClient(
            timeout=CLIENT_TIMEOUT,
            limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=KEEPALIVE_SECONDS),
        )
        self.account: Account | None = None
        self.account_since = 0.0
        self.verified_by: str | None = None
        self.verified_at = 0.0
        self.policy_at = 0.0
        self.burst_at = time.time()

    async def run_until_stopped(self) -> None:
        try:
            while not self.run.stop.is_set():
                pause = self.rng.uniform(*self.run.pace.think)
                try:
                    await self.step()
                except Interrupted as stopped:
                    self.verified_by = None  # take stock from the next sign-in on
                    pause = max(pause, stopped.retry_after)
                # Cut short when the run ends.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.run.stop.wait(), pause)
        finally:
            await self.client.aclose()

    # -- what to do next -------------------------------------------------------------------

    async def step(self) -> None:
        now = time.time()
        account = self.account
        if account is None or (
            not self.owner and now - self.account_since > self.run.pace.account_every
        ):
            account = self.new_account(now)
        if not account.member:
            await self.sign_up(account)
        elif not account.enrolled:
            await self.enrol(account)
        elif self.verified_by is None:
            await self.sign_in(account)
        elif account.phone is not None and not account.phone_verified:
            await self.verify_phone(account)
        elif not account.codes_known or len(account.codes) <= 3:
            await self.new_codes(account)
        elif self.owner and now - self.policy_at > self.run.pace.policy_every:
            await self.change_policy(account)
        else:
            await self.anything(account)

    def new_account(self, now: float) -> Account:
        number = sum(
            1 for known in self.run.accounts if known.user.startswith(f"vu{self.index:02d}.")
        )
        if self.owner:
            account = Account(OWNER, member=True)
        else:
            account = Account(f"vu{self.index:02d}.{number}@soak.test")
        # Every other account verifies a phone: a French mobile of its own.
        if self.owner or number % 2 == 0:
            account.phone = f"+3361{self.index:02d}{number:05d}"
        self.run.accounts.append(account)
        # The users' first accounts are spread over the interval, so that new accounts keep
        # coming one by one rather than all at once.
        first = self.account is None
        self.account = account
        self.account_since = now - (
            self.rng.uniform(0, self.run.pace.account_every) if first else 0
        )
        self.verified_by = None
        self.client.cookies.clear()
        return account

    async def anything(self, account: Account) -> None:
        choice = self.rng.random()
        if choice < 0.45:
            await self.expect(await self.call("browse", "GET", "/api/data"))
        elif choice < 0.55:
            page = await self.call("page", "GET", "/", headers={"Accept": "text/html"})
            await self.expect(page)
        elif choice < 0.65:
            await self.expect(await self.call("status", "GET", "/mfa/api/status"))
        elif choice < 0.70 and account.device:
            await self.device_sign_in(account)
        elif choice < 0.72 and self.may_burst(account):
            await self.burst(account)
        elif choice < 0.77 and self.way_in(account, time.time()) is not None:
            await self.sign_in(account)
        else:
            await self.expect(await self.call("browse", "GET", "/api/data"))

    def may_burst(self, account: Account) -> bool:
        """Now and then, with a recovery code to get in by afterwards (not the owner, who
        keeps changing the policy)."""
        due = time.time() - self.burst_at > self.run.pace.burst_every
        return due and not self.owner and bool(account.codes) and self.rng.random() < 0.1

    # -- the flows -----------------------------------------------------------------------

    async def sign_up(self, account: Account) -> None:
        self.client.cookies.clear()
        await self.expect(await self.call("signup", "POST", "/signup", form={"user": account.user}))
        account.member = True

    async def enrol(self, account: Account) -> None:
        """Sets up and confirms an authenticator app; after an answer that never came, asks
        the kit whether the confirmation landed. Not before a step is free: a confirmation
        whose answer was lost may have used the last one."""
        if not account.enrolment_unknown and account.fresh_step(time.time()) is None:
            return
        await self.signed_in(account)
        if account.enrolment_unknown:
            status = await self.expect(await self.call("status", "GET", "/mfa/api/status"))
            account.enrolment_unknown = False
            if status.body["enrolled"]:
                account.enrolled = True
                account.app_id = status.body["authenticators"][0]["id"]
                self.verified_by = None  # the answer that would have verified it was lost
                return
        setup = await self.expect(await self.call("setup", "POST", "/mfa/api/totp/setup", json={}))
        account.secret = str(setup.body["secret"])
        now = time.time()
        step = account.fresh_step(now)
        if step is None:
            return
        code = totp.code_at(account.secret, PARAMS, step)
        account.steps_sent.add(step)
        account.code_budget.spend(now)
        confirm = await self.call(
            "confirm", "POST", "/mfa/api/totp/confirm", json={"code": code}, detail=str(step)
        )
        if not confirm.answered:
            account.enrolment_unknown = True
        await self.expect(confirm)
        account.enrolled = True
        account.app_id = str(confirm.body["authenticator"]["id"])
        account.steps_accepted.append(step)
        account.last_code = (step, code)
        self.issued(account, confirm.body["recovery_codes"])
        self.verified("totp", account)

    def way_in(self, account: Account, now: float) -> str | None:
        """The second factor a sign-in would use now: the app when one of its steps is free,
        else now and then a text or a recovery code; ``None``: none now."""
        if account.fresh_step(now) is not None and account.code_budget.allows(now):
            return "app"
        pick = self.rng.random()
        texts = account.phone_verified and now - account.last_text > TEXT_COOLDOWN
        if pick < 0.4 and texts and account.code_budget.allows(now):
            return "text"
        codes = account.codes_known and bool(account.codes)
        if pick < 0.5 and codes and account.recovery_budget.allows(now):
            return "recovery"
        return None

    async def sign_in(self, account: Account) -> None:
        """A new session: signed in, challenged, then maybe a replayed code and a wrong one
        or two, then in by a second factor (if one is free now)."""
        way = self.way_in(account, time.time())
        if way is None:
            return
        await self.signed_in(account)
        await self.expect(await self.call("challenged", "GET", "/api/data"))
        now = time.time()
        if account.last_code and self.rng.random() < 0.2:
            step, code = account.last_code
            in_window = step >= totp.step_at(now, PARAMS) - DRIFT
            if in_window and account.code_budget.allows(now, 2):
                await self.code(account, "replay", code, detail=str(step))
        if self.rng.random() < 0.3:
            for _ in range(self.rng.randint(1, 2)):
                if account.code_budget.allows(time.time(), 2):
                    await self.code(account, "wrong_code", self.wrong_code(account))
        replay_recovery = account.codes_accepted and self.rng.random() < 0.1
        if replay_recovery and account.recovery_budget.allows(time.time(), 2):
            used = account.codes_accepted[-1]
            await self.code(account, "recovery_replay", used, method="recovery")
        if way == "app":
            await self.by_app(account)
        elif way == "recovery":
            await self.by_recovery_code(account)
        elif not await self.by_text(account):
            return  # the text was refused: the session waits, challenged
        await self.expect(await self.call("browse", "GET", "/api/data"))

    async def by_app(self, account: Account, *, may_remember: bool = True) -> None:
        """Verifies with the app's code of a step never sent; a sign-in may remember the
        browser."""
        assert account.secret is not None
        now = time.time()
        step = account.fresh_step(now)
        assert step is not None
        code = totp.code_at(account.secret, PARAMS, step)
        account.steps_sent.add(step)
        remember = may_remember and self.rng.random() < 0.2
        reply = await self.code(account, "verify", code, detail=str(step), remember=remember)
        await self.expect(reply)
        account.steps_accepted.append(step)
        account.last_code = (step, code)
        self.verified("totp", account)
        if remember:
            account.device = [c for c in self.client.cookies.jar if c.name == DEVICE_COOKIE]

    async def by_text(self, account: Account) -> bool:
        """Signs in with a texted code; ``False`` if the send budget refused the text."""
        assert account.phone is not None
        account.last_text = time.time()
        sent = await self.texted(account, "sms_send", "/mfa/api/sms/send", {})
        if sent is None:
            return False
        reply = await self.code(account, "sms_verify", sent, method="sms")
        await self.expect(reply)
        self.verified("sms", account)
        return True

    async def by_recovery_code(self, account: Account) -> None:
        code = account.codes.pop(0)
        account.codes_sent.add(code)
        reply = await self.code(account, "recovery", code, method="recovery")
        await self.expect(reply)
        account.codes_accepted.append(code)
        self.verified("recovery", account)

    async def device_sign_in(self, account: Account) -> None:
        """A new session in a remembered browser: let in with no code."""
        self.client.cookies.clear()
        for cookie in account.device:
            self.client.cookies.jar.set_cookie(cookie)
        await self.expect(await self.call("sign_in", "POST", "/login", form={"user": account.user}))
        await self.expect(await self.call("device_sign_in", "GET", "/api/data"))
        self.verified("device", account)

    async def burst(self, account: Account) -> None:
        """Wrong codes until the limit refuses, then in by a recovery code (its own budget)."""
        self.burst_at = time.time()
        await asyncio.sleep(max(0.0, self.verified_at + SETTLE_SECONDS - time.time()))
        await self.signed_in(account)
        await self.expect(await self.call("challenged", "GET", "/api/data"))
        for _ in range(max(amount for amount, _ in account.code_budget.windows) + 2):
            reply = await self.code(account, "wrong_code", self.wrong_code(account))
            if reply.status == 429:
                break
        # Apart from the burst in the security log too (bench.soak.checks.EVENT_SKEW).
        await asyncio.sleep(SETTLE_SECONDS)
        if account.recovery_budget.allows(time.time()) and account.codes:
            await self.by_recovery_code(account)

    async def verify_phone(self, account: Account) -> None:
        assert account.phone is not None
        if not await self.recently_verified(account):
            return
        sent = await self.texted(account, "phone", "/mfa/api/phone", {"phone": account.phone})
        if sent is None:
            return
        account.code_budget.spend(time.time())
        reply = await self.call(
            "phone_verify", "POST", "/mfa/api/phone/verify", json={"code": sent}
        )
        if not reply.answered:
            account.device = []  # the number may be set, and the epoch bumped, all the same
        await self.expect(reply)
        account.phone_verified = True
        account.device = []  # a new number bumps the epoch: remembered browsers are forgotten

    async def new_codes(self, account: Account) -> None:
        if not await self.recently_verified(account):
            return
        # New recovery codes forget every remembered browser (docs/devices.md).
        account.device = []
        reply = await self.call("new_codes", "POST", "/mfa/api/recovery-codes", json={})
        if not reply.answered:
            account.codes_known = False  # the set may have been replaced
        if reply.status == 401:
            self.verified_at = 0.0
        await self.expect(reply, refusals=True)
        if reply.status == 200:
            self.issued(account, reply.body["recovery_codes"])

    async def change_policy(self, account: Account) -> None:
        if not await self.recently_verified(account):
            return
        self.policy_at = time.time()
        enforce = not (self.run.policy and self.run.policy[-1].enforce)
        grace = self.rng.choice((0, 24)) if enforce else None
        body: dict[str, Any] = {"enforce": enforce}
        if grace is not None:
            body["grace_hours"] = grace
        sent = time.time()
        reply = await self.call("policy", "PUT", f"/mfa/api/sites/{SITE}/policy", json=body)
        self.run.policy.append(PolicyChange(enforce, grace, sent, reply.status))
        if reply.status == 401:
            self.verified_at = 0.0
        await self.expect(reply, refusals=True)

    # -- the steps of the flows ------------------------------------------------------------

    async def signed_in(self, account: Account) -> None:
        """A new session (a browser that remembers nothing), signed in."""
        self.client.cookies.clear()
        self.verified_by = None
        await self.expect(await self.call("sign_in", "POST", "/login", form={"user": account.user}))

    async def recently_verified(self, account: Account) -> bool:
        """A step-up needs a strong factor verified within recent_mfa_seconds: verified again
        with the app in this session if need be; ``False`` when no step is free yet."""
        now = time.time()
        strong = self.verified_by in ("totp", "recovery")
        if strong and now - self.verified_at < RECENT_SECONDS:
            return True
        if account.fresh_step(now) is None or not account.code_budget.allows(now):
            return False
        # Not remembered here: a step-up before a new phone, whose epoch bump forgets browsers.
        await self.by_app(account, may_remember=False)
        return True

    async def code(
        self,
        account: Account,
        kind: str,
        code: str,
        *,
        method: str = "totp",
        detail: str = "",
        remember: bool = False,
    ) -> Reply:
        """An attempt at a code: counted in the user's model of the budget it spends."""
        budget = account.recovery_budget if method == "recovery" else account.code_budget
        budget.spend(time.time())
        body: dict[str, Any] = {"method": method, "code": code}
        if remember:
            body["remember_device"] = True
        reply = await self.call(kind, "POST", "/mfa/api/verify", json=body, detail=detail or code)
        if reply.status == 429:
            budget.blocked_until = time.time() + (reply.retry_after or 60.0)
        return reply

    async def texted(
        self, account: Account, kind: str, path: str, body: dict[str, Any]
    ) -> str | None:
        """Sends a text through ``path``; the code it carried, or ``None`` if it was refused."""
        assert account.phone is not None
        inbox = self.run.texts / f"{account.phone}.txt"
        inbox.unlink(missing_ok=True)
        reply = await self.call(kind, "POST", path, json=body)
        if reply.status == 429:
            return None
        await self.expect(reply)
        return inbox.read_text(encoding="utf-8").split(" ", 1)[0]

    def wrong_code(self, account: Account) -> str:
        assert account.secret is not None
        current = totp.step_at(time.time(), PARAMS)
        valid = {totp.code_at(account.secret, PARAMS, current + n) for n in range(-3, 4)}
        while True:
            code = f"{self.rng.randrange(1_000_000):06d}"
            if code not in valid:
                return code

    def issued(self, account: Account, codes: Sequence[str]) -> None:
        account.codes_issued = list(codes)
        account.codes = list(codes)
        account.codes_known = True

    def verified(self, method: str, account: Account) -> None:
        self.verified_by = method
        self.verified_at = time.time()
        account.succeeded()

    async def expect(self, reply: Reply, *, refusals: bool = False) -> Reply:
        """Goes on only with the answer all is well; ``refusals``: an expected refusal too."""
        if reply.outcome is Outcome.OK or (refusals and reply.outcome is Outcome.REFUSED):
            return reply
        raise Interrupted((reply.retry_after or 0.0) if reply.status == 503 else 0.0)

    # -- the wire --------------------------------------------------------------------------

    async def call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        detail: str = "",
    ) -> Reply:
        """One request, recorded; to the workers in turn until one takes the connection."""
        user = self.account.user if self.account is not None else ""
        sent = time.time()
        rerouted = False
        status, error, body, index, retry_after = 0, None, None, -1, None
        for worker in self.run.balancer.order():
            index = worker.index
            try:
                response = await self.client.request(
                    method, f"{worker.url}{path}", json=json, data=form, headers=headers
                )
            except httpx.ConnectError:
                rerouted = True
                continue
            except httpx.TransportError:
                break  # sent, and no answer: dropped
            status = response.status_code
            body, error = _body(response)
            if "retry-after" in response.headers:
                retry_after = float(response.headers["retry-after"])
            break
        received = time.time()
        outcome = classify(kind, status)
        self.run.samples.append(
            Sample(
                kind=kind,
                user=user,
                status=status,
                error=error,
                outcome=outcome,
                sent=sent,
                received=received,
                worker=index,
                rerouted=rerouted,
                detail=detail,
            )
        )
        return Reply(status, error, body, outcome, retry_after)


def _body(response: httpx.Response) -> tuple[Any, str | None]:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None, None
    body = response.json()
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        return body, str(code) if code is not None else None
    return body, None
