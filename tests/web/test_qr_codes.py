"""The set-up's QR code: drawn once per pending secret, kept few and short-lived, forgotten once
confirmed."""

from __future__ import annotations

import pytest
import segno

from mfa_guard import services
from mfa_guard.services import QRCodes, qr_svg
from tests.apps import build_app, sign_in

URI = "otpauth://totp/Acme:solo?secret=JBSWY3DPEHPK3PXP&issuer=Acme"


def test_a_pending_setups_qr_code_is_drawn_once_and_shown_again() -> None:
    codes = QRCodes(size=2, max_age=600)
    assert codes.get("JBSWY3DPEHPK3PXP", URI, 0.0) is None
    svg = codes.put("JBSWY3DPEHPK3PXP", URI, qr_svg(URI, "Acme"), 0.0)
    assert svg == segno.make(URI, error="m").svg_inline(
        scale=1,
        border=4,
        omitsize=True,
        dark="#000",
        light="#fff",
        title="QR code for Acme",
        svgclass="mfa-qr",
        lineclass=None,
    )
    assert codes.get("JBSWY3DPEHPK3PXP", URI, 599.0) == svg
    # Another account label (or issuer) is another drawing.
    assert codes.get("JBSWY3DPEHPK3PXP", URI.replace("solo", "duo"), 1.0) is None


def test_drawn_qr_codes_are_few_and_short_lived() -> None:
    codes = QRCodes(size=2, max_age=600)
    for n, secret in enumerate(["A", "B", "C"]):
        codes.put(secret, URI, f"<svg {secret}>", float(n))
    assert codes.get("A", URI, 3.0) is None  # the oldest made room
    assert codes.get("B", URI, 601.0) is None  # too old
    assert codes.get("C", URI, 599.0) == "<svg C>"
    assert codes.get("C", URI, -1.0) is None  # a clock gone backwards
    codes.put("D", URI, "<svg D>", 0.0)
    codes.forget("D")
    assert codes.get("D", URI, 0.0) is None


async def test_the_setup_page_draws_its_qr_code_once_and_forgets_it_once_confirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[str] = []

    def drawing(uri: str, issuer: str) -> str:
        drawn.append(uri)
        return qr_svg(uri, issuer)

    monkeypatch.setattr(services, "qr_svg", drawing)
    ga = build_app()
    async with ga.client() as client:
        await sign_in(client)
        setup = (await client.post("/mfa/api/totp/setup", json={})).json()
        for _ in range(3):
            page = await client.get("/mfa/enrol")
            assert setup["qr_svg"] in page.text
        assert drawn == [setup["otpauth_uri"]]
        confirmed = await client.post(
            "/mfa/api/totp/confirm", json={"code": ga.code(setup["secret"])}
        )
        assert confirmed.status_code == 200
    assert ga.guard.service._qr_codes.get(setup["secret"], setup["otpauth_uri"], ga.clock()) is None
