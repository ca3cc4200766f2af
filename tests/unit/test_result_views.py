"""A job's results sorted by probability and filtered (positive, flagged, failed), page
after page through the keyset cursor, on the API and the job page; the histogram of its
scores; and every listed result's links."""

from __future__ import annotations

import re

import pytest

from db.jobs import IncomingScan, create_inference_job, refresh_job, store_results
from db.models import Scan
from db.registry import active_version
from db.session import session_scope
from scanq import DISCLAIMER

# (filename, probability, out of distribution); None: failed at upload. Ties (0.7 twice)
# and rows without a probability test the cursor's order.
ROWS = [("a.png", 0.2, False), ("b.png", 0.9, True), ("bad.png", None, None),
        ("c.png", 0.7, False), ("d.png", 0.05, False), ("e.png", 0.7, True),
        ("f.png", 1.0, False)]  # fmt: skip


@pytest.fixture()
def job_id(app):
    url = app.config["SCANQ_SETTINGS"].database_url
    with session_scope(url) as s:
        version = active_version(s, "xray")
        scans = [IncomingScan(name, error=None if p is not None else "not an image")
                 for name, p, _ in ROWS]  # fmt: skip
        job, _ = create_inference_job(s, "xray", version.id, scans, 32, owner="tester")
        by_name = {sc.filename: sc for sc in s.query(Scan).filter_by(job_id=job.id)}
        store_results(s, [{"scan_id": by_name[name].id, "job_id": job.id, "probability": p,
                           "label": "covid" if p >= version.threshold else "non_covid",
                           "out_of_distribution": ood, "model_version_id": version.id}
                          for name, p, ood in ROWS if p is not None])  # fmt: skip
        refresh_job(s, job.id)
        return job.id


def _all_pages(client, path: str) -> list[dict]:
    items = []
    while path:
        page = client.get(path).json
        assert page["disclaimer"] == DISCLAIMER
        items += page["items"]
        path = page["next"]
    return items


@pytest.mark.parametrize("limit", [1, 2, 100])
def test_results_sort_by_probability_page_after_page(client, job_id, limit):
    base = f"/api/v1/jobs/{job_id}/results?limit={limit}&sort=probability"
    down = [i["filename"] for i in _all_pages(client, base + "&order=desc")]
    assert down == ["f.png", "b.png", "c.png", "e.png", "a.png", "d.png", "bad.png"]
    up = [i["filename"] for i in _all_pages(client, base + "&order=asc")]
    assert up == ["d.png", "a.png", "c.png", "e.png", "b.png", "f.png", "bad.png"]
    upload_order = [
        i["filename"] for i in _all_pages(client, base.replace("probability", "position"))
    ]
    assert upload_order == [name for name, _, _ in ROWS]


def test_results_filter_positive_flagged_failed(client, app, job_id):
    with session_scope(app.config["SCANQ_SETTINGS"].database_url) as s:
        threshold = active_version(s, "xray").threshold
    path = f"/api/v1/jobs/{job_id}/results?limit=2&filter="
    positive = {i["filename"] for i in _all_pages(client, path + "positive")}
    assert positive == {name for name, p, _ in ROWS if p is not None and p >= threshold}
    flagged = _all_pages(client, path + "flagged&sort=probability&order=desc")
    assert [i["filename"] for i in flagged] == ["b.png", "e.png"]
    assert [i["filename"] for i in _all_pages(client, path + "failed")] == ["bad.png"]


def test_every_listed_result_links_to_itself_and_its_heat_map(client, job_id):
    items = client.get(f"/api/v1/jobs/{job_id}/results").json["items"]
    for item in items:
        links = item["links"]
        assert links["self"] == f"/api/v1/results/{item['scan_id']}"
        assert client.get(links["self"]).json["filename"] == item["filename"]
        assert links["heatmap"] == f"{links['self']}/heatmap.png"
    # (A scored image's heat map is asked of a worker: the integration tests follow it.)
    failed = next(i for i in items if i["status"] == "failed")
    assert client.get(failed["links"]["heatmap"]).status_code == 409


@pytest.mark.parametrize(
    "query, code",
    [("sort=size", "bad_sort"), ("order=up", "bad_order"), ("filter=odd", "bad_filter"),
     ("sort=probability&cursor=12", "bad_cursor"), ("cursor=x", "bad_cursor")],
)  # fmt: skip
def test_a_bad_view_is_a_clear_400(client, job_id, query, code):
    resp = client.get(f"/api/v1/jobs/{job_id}/results?{query}")
    assert resp.status_code == 400 and resp.json["error"]["code"] == code
    assert client.get(f"/jobs/{job_id}?{query}").status_code == 400


def test_job_page_sorts_filters_and_draws_the_histogram(client, job_id):
    page = client.get(f"/jobs/{job_id}?sort=probability&order=desc&filter=flagged")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and DISCLAIMER in html
    table = html[html.index('id="results"') :]
    assert table.index("b.png") < table.index("e.png") and "c.png" not in table
    histogram = re.search(r'<svg[^>]*id="histogram".*?</svg>', html, re.S).group(0)
    # Six scored images: 0.05, 0.2, 0.7, 0.7, 0.9, 1.0 in twenty bins of 0.05.
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', histogram)]
    assert len(counts) == 20 and sum(counts) == 6
    assert counts[1] == 1 and counts[4] == 1 and counts[14] == 2 and counts[18] == 1
    assert counts[19] == 1  # 1.0 counts in the last bin
    assert "threshold" in histogram


def test_job_page_pages_a_sorted_view_with_its_cursor(client, job_id, monkeypatch):
    import web.pages

    monkeypatch.setattr(web.pages, "PAGE_ROWS", 4)
    first = client.get(f"/jobs/{job_id}?sort=probability&order=desc").get_data(as_text=True)
    link = re.search(r'id="next-page" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "sort=probability" in link  # desc: the default order of a probability sort
    second = client.get(link).get_data(as_text=True)
    rows = second[second.index('id="results"') :]
    assert "d.png" in rows and "bad.png" in rows and "f.png" not in rows
