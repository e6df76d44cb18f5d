"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), served by
the twin service of the real local stack while the simulator runs. Screenshots are
saved as artefacts in $ECO_ARTIFACTS_DIR (default .artifacts/browser)."""

import os
import shutil
import time
from pathlib import Path

import pytest

from conftest import REPO, spawn, stop
from twin.auth import Tokens
from twin_seed import seed_once

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a closed network: no background connections, no sandbox as root.
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("ECO_ARTIFACTS_DIR", REPO / ".artifacts" / "browser"))

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed (make setup)")


@pytest.fixture(scope="module")
def browser_page(stack_settings):
    from playwright.sync_api import sync_playwright

    seed_once(stack_settings)
    sim = spawn(stack_settings, "simulate", "--duration", "90", "--homes", "200", "--quiet", log_name="browser-sim")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield {"page": page, "errors": errors, "base": f"http://127.0.0.1:{stack_settings.port('twin')}",
               "token": Tokens.for_data_dir(stack_settings.data_dir).read, "homes": stack_settings.homes}
        browser.close()
    stop(sim)


def _number(page, selector):
    text = page.text_content(selector).strip()
    return float(text) if text not in ("", "–") else None


def test_city_page_lives(browser_page):
    page, base = browser_page["page"], browser_page["base"]
    page.goto(f"{base}/#token={browser_page['token']}")
    page.wait_for_function("document.querySelectorAll('#map circle.home').length > 0", timeout=30_000)
    page.wait_for_function("Number(document.getElementById('k-rate').textContent) > 0", timeout=30_000)
    clock1, total1 = page.text_content("#clock"), page.evaluate(
        "[...document.querySelectorAll('#rate path.series')].map(p => p.getAttribute('d')).join()")
    time.sleep(3)
    clock2, total2 = page.text_content("#clock"), page.evaluate(
        "[...document.querySelectorAll('#rate path.series')].map(p => p.getAttribute('d')).join()")
    assert clock1 != clock2 and total1 != total2  # the figures move while the simulator runs
    assert _number(page, "#k-online") + _number(page, "#k-alert") >= 200  # the 200 simulated homes
    assert page.locator("#map circle.home").count() == browser_page["homes"]  # every home of the city
    assert page.locator("#region-table tr").count() >= 2
    assert "token" not in page.url  # the token left the address bar
    page.screenshot(path=str(ARTIFACTS / "city.png"), full_page=True)
    assert not browser_page["errors"]


def _anomaly_on_the_topic(settings, home_id, metric, value, ts, detector):
    from confluent_kafka import Producer

    import schemas
    from ecoretrofit.serde import encoder_for

    enc = encoder_for(settings, settings.topic_anomalies, schemas.ANOMALY_EVENT)
    event = {"event_id": f"{home_id}/{metric}/{ts}/test", "home_id": home_id, "region": "", "metric": metric, "ts": ts,
             "detected_at": ts + 300, "value": value, "score": 0.9999, "detector": detector, "window_mean": 1.0,
             "window_std": 0.1, "window_count": 60, "zscore": 9.0, "severity": "critical"}
    p = Producer(settings.producer_config())
    p.produce(settings.topic_anomalies, enc.encode(event), home_id.encode())
    p.flush(10)


def test_home_page_schematic_charts_and_what_if(browser_page, stack_settings):
    page, base = browser_page["page"], browser_page["base"]
    # an anomaly in the seeded history, as the processor would report it; its detector
    # name tells its marker from those of anomalies other tests' cities raise on the home
    detector = "browser-test"

    def markers(scope):  # markers drawn for our anomaly within `scope`
        return page.evaluate("([scope, label]) => [...document.querySelectorAll(scope + ' circle.marker')]"
                             ".filter(c => c.textContent === label).length",
                             [scope, f"{detector} score 1.000"])

    _anomaly_on_the_topic(stack_settings, "H000005", "power_w", 5000.0, int(time.time() * 1000) - 150 * 60_000,
                          detector)
    page.goto(f"{base}/homes/H000005#token={browser_page['token']}")
    page.wait_for_function("document.querySelectorAll('#schematic [data-system]').length >= 5", timeout=30_000)
    healths = page.eval_on_selector_all("#schematic [data-system]", "gs => gs.map(g => g.dataset.health)")
    assert set(healths) <= {"ok", "warn", "bad", "off"}
    page.wait_for_function("document.querySelectorAll('#charts .c path.series').length >= 3", timeout=30_000)
    for _ in range(20):  # the anomaly reaches the twin through the topic; charts refresh every 30 s
        if markers("#charts [data-metric=power_w]"):
            break
        page.reload()
        page.wait_for_function("document.querySelectorAll('#charts .c path.series').length >= 3", timeout=30_000)
    assert markers("#charts [data-metric=power_w]") == 1
    assert markers("#charts") == 1  # on its metric's chart only
    assert page.locator("#bom tr").count() >= 5 and page.locator("#compliance tr").count() >= 4
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

    page.fill("input[name=night_setback_c]", "-1")  # invalid: the field is named
    page.click("#run-whatif")
    page.wait_for_selector("#whatif-note .error", timeout=10_000)
    assert "night_setback_c" in page.text_content("#whatif-note")
    page.fill("input[name=night_setback_c]", "")
    page.fill("input[name=u_value_w_m2k]", "0.2")
    page.fill("input[name=horizon_days]", "14")
    page.click("#run-whatif")
    page.wait_for_selector("#whatif-table[data-done]", timeout=60_000)
    assert page.locator("#whatif-chart path.series").count() == 2
    cells = page.eval_on_selector_all("#whatif-table tr:nth-child(2) td", "tds => tds.map(t => t.textContent)")
    assert cells[0].startswith("energy") and float(cells[2]) < float(cells[1])
    assert "Calibrated on" in page.text_content("#whatif-note")
    page.locator("#whatif").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "what-if.png"), full_page=True)
    assert not browser_page["errors"]
