"""The pages in a real browser: upload a batch, watch the job page's progress bar fill,
read the results table and the disclaimer; start a training run from the models page.
Headless Debian Chromium driven by Playwright's Python package (no browser download)."""

from __future__ import annotations

import os
import re
import shutil
import zipfile

import pytest

from scanq import DISCLAIMER
from tests.conftest import sample_images

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


@pytest.fixture(scope="module")
def page(browser_page, stack):
    """The browser, logged in through the login page (the pages need a login)."""
    browser_page.goto(stack.url + "/jobs")
    browser_page.wait_for_url(re.compile(r".*/login\?next=(%2F|/)jobs$"))  # sent to log in
    browser_page.fill("#name", "tester")
    browser_page.fill("#password", stack.PASSWORD)
    browser_page.click("#login")
    browser_page.wait_for_url("**/jobs")
    assert "tester (admin)" in browser_page.inner_text("#user-name")
    cookie = next(c for c in browser_page.context.cookies() if c["name"] == "session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    return browser_page


@pytest.fixture(scope="module")
def browser_page():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        if os.environ.get("SCANQ_STRICT"):
            pytest.fail("chromium is needed (.ci/services.sh installs Debian's package)")
        pytest.skip("no chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        tab = browser.new_page()
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def test_upload_page_to_finished_job(stack, page, shared_data):
    images = sample_images(shared_data, "ct", "covid", 5)
    page.goto(stack.url + "/")
    assert DISCLAIMER in page.inner_text("#disclaimer")
    page.set_input_files("#files", [str(p) for p in images])
    page.check("input[name=modality][value=ct]")
    page.click("#submit")

    page.wait_for_url("**/jobs/*")
    # The page polls the API and reloads when the job ends; data-status is rendered by
    # the server, so it reads "succeeded" only on the reloaded page.
    page.wait_for_selector("#job[data-status=succeeded]", timeout=180_000)
    progress = page.locator("#progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "5"
    rows = page.locator("#results tbody tr.row-scored")
    assert rows.count() == 5
    names = {rows.nth(i).locator("td").nth(1).inner_text() for i in range(5)}
    assert names == {p.name for p in images}
    widths = page.eval_on_selector_all("#results img", "els => els.map(e => e.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    assert DISCLAIMER in page.inner_text("#disclaimer")
    assert page.get_attribute("#csv-link", "href").endswith("/results.csv")

    # A file name opens its result: the image, its Grad-CAM (polled until a worker has
    # made it), and the review form, whose CSRF token the browser sends along.
    page.locator("#results tbody tr.row-scored td a").first.click()
    page.wait_for_url("**/results/*")
    assert DISCLAIMER in page.inner_text("#disclaimer")
    page.wait_for_selector("#heatmap:not([hidden])", timeout=120_000)
    sizes = page.eval_on_selector_all(
        "#image, #heatmap", "els => els.map(e => [e.naturalWidth, e.naturalHeight])"
    )
    assert sizes[0] == sizes[1] and sizes[0][0] > 0  # the heat map has the image's size
    page.check("input[name=label][value=non_covid]")
    page.fill("input[name=patient_id]", "p-17")
    page.click("#review-submit")
    page.wait_for_selector("#current-review")
    text = page.inner_text("#current-review")
    assert "non_covid" in text and "tester" in text and "p-17" in text


def test_upload_page_shows_errors(stack, page, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    page.goto(stack.url + "/")
    page.set_input_files("#files", str(bad))
    page.click("#submit")
    assert "no file could be used" in page.inner_text("#upload-error")


def test_training_form_to_new_version(stack, page, shared_data, tmp_path):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for label in ("covid", "non_covid"):
            for p in sample_images(shared_data, "ct", label, 8):
                zf.write(p, f"{label}/{p.name}")
    page.goto(stack.url + "/models")
    assert DISCLAIMER in page.inner_text("#disclaimer")
    # the shipped models' cross-validation, over repeated partitions (bench/cv.py)
    assert page.inner_text("body").count("5-fold x 4 partitions, by patient") >= 2
    page.set_input_files("#dataset", str(archive))
    assert page.is_visible("#train-form input[name=lung_crop]")  # X-ray is checked first
    page.check("#train-form input[name=modality][value=ct]")
    # The form shows the fields of the chosen recipe and modality only: epochs are
    # fine-tuning's, the lung crop is for X-rays.
    assert not page.is_visible("#train-form input[name=epochs]")
    assert not page.is_visible("#train-form input[name=lung_crop]")
    page.select_option("#recipe", "finetune")
    assert not page.is_visible("#train-form select[name=probe_pool]")
    page.select_option("#backbone", "smallcnn")
    page.fill("#train-form input[name=epochs]", "2")
    page.fill("#train-form input[name=finetune_epochs]", "0")
    page.click("#train-submit")
    page.wait_for_url("**/jobs/*")
    page.wait_for_selector("#job[data-status=succeeded]", timeout=300_000)
    assert page.locator("#epochs tbody tr").count() >= 1
    produced = page.locator("#produced")
    assert "smallcnn" in produced.inner_text()
    widths = page.eval_on_selector_all("img[alt]", "els => els.map(e => e.naturalWidth)")
    assert len(widths) == 2 and all(w > 0 for w in widths)  # ROC and confusion pictures


def test_schedule_created_paused_and_deleted_from_the_pages(stack, page):
    page.goto(stack.url + "/schedules")
    page.fill("input[name=name]", "weekly xray")
    page.fill("input[name=cron]", "0 3 * * 1")
    page.click("#schedule-submit")
    page.wait_for_url("**/schedules/*")
    assert "weekly xray" in page.inner_text("h1") and "active" in page.inner_text("#state")
    page.click("#toggle")
    page.wait_for_selector("#state:has-text('paused')")
    page.fill("input[name=margin]", "0.02")
    page.click("#schedule-save")
    page.wait_for_selector("#state:has-text('paused')")
    assert page.input_value("input[name=margin]") == "0.02"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    page.wait_for_url("**/schedules")
    assert "weekly xray" not in page.inner_text("#schedules")


def test_users_page_makes_a_token_and_revokes_it(stack, page, tmp_path):
    """The admin's forms, with the session cookie and the page's CSRF token."""
    page.goto(stack.url + "/users")
    assert DISCLAIMER in page.inner_text("#disclaimer")
    page.fill("#token-form input[name=user]", "hank")
    page.fill("#token-form input[name=label]", "reading room")
    page.click("#token-submit")
    value = page.inner_text("#new-token-value").strip()
    hank = stack.session(value)
    assert hank.get(f"{stack.url}/api/v1/jobs").status_code == 200

    row = page.locator("#tokens tr", has_text="reading room")
    assert "never" in row.inner_text()  # this page was rendered before its first use
    row.locator("button.revoke").click()
    page.wait_for_selector("#revoked")
    assert "revoked" in page.locator("#tokens tr", has_text="reading room").inner_text()
    assert hank.get(f"{stack.url}/api/v1/jobs").status_code == 401
    page.screenshot(path=str(tmp_path / "users.png"), full_page=True)
