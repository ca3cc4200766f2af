"""The pages in a real browser: upload a batch, watch the job page's progress bar fill,
read the results table and the disclaimer. Headless Chromium driven by Selenium."""

from __future__ import annotations

import os
import shutil

import pytest

from scanq import DISCLAIMER
from tests.conftest import sample_images


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not (chromium and driver_bin):
        if os.environ.get("SCANQ_STRICT"):
            pytest.fail("chromium and chromedriver are needed (.ci/services.sh installs them)")
        pytest.skip("no chromium/chromedriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_upload_page_to_finished_job(stack, browser, shared_data):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    images = sample_images(shared_data, "ct", "covid", 5)
    browser.get(stack.url + "/")
    assert DISCLAIMER in browser.find_element(By.ID, "disclaimer").text
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in images))
    browser.find_element(By.CSS_SELECTOR, "input[name=modality][value=ct]").click()
    browser.find_element(By.ID, "submit").click()

    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.ID, "progress")))
    assert "/jobs/" in browser.current_url
    # The page polls the API and reloads when the job ends.
    WebDriverWait(browser, 180).until(lambda d: d.find_element(By.ID, "status").text == "succeeded")
    progress = browser.find_element(By.ID, "progress")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "5"
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr.row-scored")
    assert len(rows) == 5
    names = {r.find_elements(By.TAG_NAME, "td")[1].text for r in rows}
    assert names == {p.name for p in images}
    thumbs = browser.find_elements(By.CSS_SELECTOR, "#results img")
    assert thumbs and all(
        browser.execute_script("return arguments[0].naturalWidth", t) > 0 for t in thumbs
    )
    assert DISCLAIMER in browser.find_element(By.ID, "disclaimer").text
    csv_href = browser.find_element(By.ID, "csv-link").get_attribute("href")
    assert csv_href.endswith("/results.csv")


def test_upload_page_shows_errors(stack, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    browser.get(stack.url + "/")
    browser.find_element(By.ID, "files").send_keys(str(bad))
    browser.find_element(By.ID, "submit").click()
    error = WebDriverWait(browser, 30).until(
        ec.presence_of_element_located((By.ID, "upload-error"))
    )
    assert "no file could be used" in error.text
