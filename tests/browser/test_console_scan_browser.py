"""The verifier scans a certificate's QR code in Chromium (issue 14): from a photo, and from the
camera (Chromium's fake camera playing a video of the QR code); the decoder is loaded only when
asked, from the app itself; the decoded text goes through the same verification as pasted text.
The guardian's card, printed from /my/certificate, is what gets scanned."""

from __future__ import annotations

from browser.conftest import CHROMIUM, Watched
from browser.test_console_browser import people  # noqa: F401 - the module's fixture: users, a child, its HC1
from registry.certificates import card


def _y4m(hc1: str, path, width: int = 640, height: int = 480) -> None:
    """A one-frame Y4M video (Chromium's fake camera loops it) of the QR code, black on white."""
    import segno

    matrix = segno.make(hc1, error="q", micro=False).matrix
    n = len(matrix)
    scale = min(width, height) // (n + 8)
    x0, y0 = (width - n * scale) // 2, (height - n * scale) // 2
    luma = bytearray([235]) * (width * height)
    for r, row in enumerate(matrix):
        for c, dark in enumerate(row):
            if dark:
                for y in range(y0 + r * scale, y0 + (r + 1) * scale):
                    luma[y * width + x0 + c * scale: y * width + x0 + (c + 1) * scale] = bytes([16]) * scale
    chroma = bytes([128]) * (width // 2 * height // 2)
    path.write_bytes(f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + bytes(luma) + chroma + chroma)


def _requests(v: Watched) -> list[str]:
    seen: list[str] = []
    v.page.on("request", lambda r: seen.append(r.url))
    return seen


def test_verifier_reads_the_qr_code_from_a_photo(watched, server, people, tmp_path):  # noqa: F811
    _, child, hc1 = people
    photo = tmp_path / "certificate-photo.png"
    photo.write_bytes(card.qr_png(hc1, scale=4))
    v = watched(width=360, height=740)
    seen = _requests(v)
    v.page.goto(f"{server}/verify")
    v.page.get_by_role("button", name="Scan the QR code with the camera").wait_for()  # shown by verify.js
    assert not any("jsQR.js" in u for u in seen), "the decoder must not load with the page"
    v.assert_clean()
    v.page.get_by_label("Or read the QR code from a photo").set_input_files(str(photo))
    _wait_for_verdict(v)
    v.page.get_by_role("heading", name="Valid certificate").wait_for()
    assert child["_input"]["given_name"] in v.page.content()
    assert any("jsQR.js" in u for u in seen) and all(u.startswith(server) for u in seen)
    assert v.page.evaluate("() => document.documentElement.scrollWidth") <= 360
    v.assert_clean()


def test_verifier_scans_the_qr_code_with_the_camera(browser, server, people, tmp_path):  # noqa: F811
    _, child, hc1 = people
    video = tmp_path / "qr.y4m"
    _y4m(hc1, video)
    b = browser.browser_type.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}"])
    try:
        ctx = b.new_context(viewport={"width": 360, "height": 740}, locale="en-GB")
        ctx.grant_permissions(["camera"], origin=server)
        v = Watched(ctx, server)
        v.page.goto(f"{server}/verify")
        v.page.get_by_role("button", name="Scan the QR code with the camera").click()
        v.page.get_by_role("heading", name="Valid certificate").wait_for(timeout=30_000)
        assert child["_input"]["given_name"] in v.page.content()
        v.assert_clean()
    finally:
        b.close()


def test_without_a_camera_the_page_says_so_and_the_paste_form_still_works(watched, server, people):  # noqa: F811
    _, _, hc1 = people
    v = watched()
    v.page.goto(f"{server}/verify")
    v.page.get_by_role("button", name="Scan the QR code with the camera").click()  # no camera in this browser
    v.page.get_by_text("The camera cannot be used here").wait_for()
    v.page.get_by_label("Certificate text (starts with HC1:)").fill(hc1)
    v.page.get_by_role("button", name="Verify", exact=True).click()
    v.page.get_by_role("heading", name="Valid certificate").wait_for()
    v.errors = [e for e in v.errors if "NotFoundError" not in e and "Requested device not found" not in e]
    v.assert_clean()


def test_guardian_prints_the_certificate_card_and_its_qr_code_verifies(watched, server, people, tmp_path):  # noqa: F811
    _, child, _ = people
    g = watched(width=360, height=740)
    g.page.goto(f"{server}/my/login")
    g.page.locator("#health_id").fill(child["health_id"])
    g.page.locator("#access_code").fill(child["access_code"])
    g.page.locator("main button[type=submit]").click()
    g.page.wait_for_url(f"{server}/my")
    g.page.get_by_role("link", name="Vaccination certificate (QR code and printable card)").click()
    g.page.get_by_role("img", name="Vaccination certificate (QR code)").wait_for()
    assert child["_input"]["given_name"] in g.page.content()
    assert g.page.evaluate("() => document.documentElement.scrollWidth") <= 360
    g.shot(tmp_path, "guardian-certificate")
    g.assert_clean()
    photo = tmp_path / "card-qr.png"
    g.page.locator(".qr-box").screenshot(path=str(photo))  # a photo of the card's QR code
    g.page.emulate_media(media="print")  # the card alone: no navigation, no form
    assert not g.page.locator("header.top").is_visible() and not g.page.locator("form").first.is_visible()
    assert g.page.locator(".cert-card").is_visible()
    v = watched()
    v.page.goto(f"{server}/verify")
    v.page.get_by_role("button", name="Scan the QR code with the camera").wait_for()  # verify.js has run
    v.page.get_by_label("Or read the QR code from a photo").set_input_files(str(photo))
    _wait_for_verdict(v)
    v.page.get_by_role("heading", name="Valid certificate").wait_for()
    assert child["_input"]["given_name"] in v.page.content()
    v.assert_clean()


def _wait_for_verdict(v: Watched, timeout_ms: int = 90_000) -> None:
    """The photo is decoded in the page (jsQR) and posted; on a loaded CI machine that can take
    longer than Playwright's 30 s default. A verifier that never answers fails with the scanner's
    own status line (no patient data in it) instead of a bare timeout."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        v.page.locator("section.verdict").wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        status = v.page.locator("#scan-status").text_content() if v.page.locator("#scan-status").count() else None
        raise AssertionError(f"no verdict from the verifier after {timeout_ms} ms; scanner status: {status!r}") from None


def test_the_scanner_fits_a_small_phone_in_urdu(watched, server):
    width = 360
    v = watched(width=width, height=640, lang="ur")
    v.page.goto(f"{server}/verify")
    v.page.locator("#scan").wait_for()
    assert v.page.evaluate("() => document.documentElement.scrollWidth") <= width
    assert v.page.evaluate("() => document.documentElement.dir") == "rtl"
    v.assert_clean()
