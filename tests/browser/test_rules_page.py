"""The whole rule chain with real processes, seen in a real browser: an exporter is scraped,
rules evaluate over the stored samples, alerts fire, a broken rule file shows its error and
SIGHUP reloads the fixed file. Screenshots (English, Chinese, dark, phone) in test-artifacts/."""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, require
from tests.e2e.procs import Proc, base_env, wait_http

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser-password-1"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.e2e

RULES = """groups:
  - name: demo
    interval: 1s
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: ExporterUp
        expr: up == 1
        labels: {severity: info}
        annotations: {summary: "{{ $labels.instance }} answers ({{ $value }})"}
      - alert: SlowToFire
        expr: up == 1
        for: 1h
        labels: {severity: warning}
"""


class Site:
    def __init__(self, tmp_path: Path, database_url: str) -> None:
        exporter_port, web_port = free_port(), free_port()
        self.base = f"http://127.0.0.1:{web_port}"
        self.rules = tmp_path / "rules"
        self.rules.mkdir()
        (self.rules / "demo.yml").write_text(RULES)
        (self.rules / "broken.yml").write_text(
            "groups:\n  - name: b\n    rules:\n      - alert: B\n"
        )
        self.exporter = Proc(
            ["exporter", "run", "--listen", f"127.0.0.1:{exporter_port}"],
            base_env(VPSMON_EXPORTER_INTERVAL="1s"),
            tmp_path / "exporter.log",
        )
        config = tmp_path / "collector.yml"
        config.write_text(
            "scrape:\n  interval: 1s\ntargets:\n  - name: web1\n"
            f"    url: http://127.0.0.1:{exporter_port}/metrics\n"
            "rules:\n  files: [rules/*.yml]\n  evaluation_interval: 1s\n"
        )
        self.collector = Proc(
            ["collector", "run", "-c", str(config), "--listen", f"127.0.0.1:{web_port}"],
            base_env(VPSMON_DATABASE_URL=database_url, VPSMON_ADMIN_PASSWORD=PASSWORD),
            tmp_path / "collector.log",
        )
        wait_http(f"http://127.0.0.1:{exporter_port}/metrics", self.exporter)
        wait_http(f"{self.base}/healthz", self.collector)

    def stop(self) -> None:
        self.collector.stop()
        self.exporter.stop()


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[Site]:
    running = Site(tmp_path, database_url)
    try:
        yield running
    finally:
        running.stop()


def test_rules_page_shows_firing_alerts_file_errors_and_reloads_on_sighup(
    site: Site, artifacts_dir: Path
) -> None:
    require(shutil.which(CHROMIUM) is not None, "Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="en-US")
        page.goto(site.base + "/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(site.base + "/")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            page.goto(site.base + "/rules")
            if page.locator("table.alerts").count() and "ExporterUp" in page.inner_text(
                "table.alerts"
            ):
                break
            time.sleep(1)
        alerts = page.inner_text("table.alerts")
        assert "ExporterUp" in alerts and "SlowToFire" in alerts, site.collector.output()
        assert page.locator("table.alerts .state-firing").count() >= 1
        assert page.locator("table.alerts .state-pending").count() >= 1
        errors = page.inner_text("[data-testid=file-errors]")
        assert "broken.yml" in errors and "field 'expr' must be set" in errors
        page.screenshot(path=str(artifacts_dir / "rules-en.png"), full_page=True)

        # Every rule evaluates cleanly over the stored samples (the API the page is built from).
        body = page.request.get(site.base + "/api/rules").json()
        (group,) = body["groups"]
        assert [r["health"] for r in group["rules"]] == ["ok", "ok", "ok"]

        # Fix the broken file and send SIGHUP: the error goes, the new group appears.
        (site.rules / "broken.yml").write_text(
            "groups:\n  - name: b\n    rules:\n      - alert: B\n        expr: vector(1)\n"
        )
        site.collector.popen.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            page.goto(site.base + "/rules")
            if page.locator("[data-testid=file-errors]").count() == 0:
                break
            time.sleep(0.5)
        assert page.locator("[data-testid=file-errors]").count() == 0
        assert page.locator("[data-testid=group]").count() == 2

        page.click("form.lang button[value=zh-CN]")
        page.wait_for_load_state()
        assert "规则与告警" in page.inner_text("h1")
        page.screenshot(path=str(artifacts_dir / "rules-zh.png"), full_page=True)

        dark = browser.new_page(
            viewport={"width": 390, "height": 844}, color_scheme="dark", locale="en-US"
        )
        dark.context.add_cookies(page.context.cookies())
        dark.goto(site.base + "/rules")
        dark.screenshot(path=str(artifacts_dir / "rules-phone-dark.png"), full_page=True)
        dark.goto(site.base + "/rules/new")
        dark.fill("input[name=name]", "BusyCpu")
        dark.click("button[value=preview]")
        assert "alert: BusyCpu" in dark.inner_text("[data-testid=preview]")
        dark.screenshot(path=str(artifacts_dir / "rules-builder-phone-dark.png"), full_page=True)
        browser.close()
