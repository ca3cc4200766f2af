"""The training and schedule forms show the chosen recipe's fields, each once, with its
range and default (models.training_options), and keep a stored schedule's values."""

from __future__ import annotations

import re

from models.training_options import OPTIONS, options_for


def _fields(html: str) -> dict[str, dict]:
    """name -> {shown, recipes, modalities, text} of each option field in the page."""
    out = {}
    pattern = r'<label class="option" data-recipes="([^"]*)" data-modalities="([^"]*)"( hidden)?>'
    for m in re.finditer(pattern + r"(.*?)</label>", html, re.S):
        name = re.search(r'name="([a-z_]+)"', m.group(4)).group(1)
        out[name] = {"recipes": m.group(1), "modalities": m.group(2), "shown": not m.group(3),
                     "html": m.group(4)}  # fmt: skip
    return out


def test_the_training_form_shows_the_chosen_recipes_fields_with_defaults(client):
    html = client.get("/models").get_data(as_text=True)
    fields = _fields(html)
    public = {o.name for o in OPTIONS.values() if o.public} - {"recipe"}
    assert set(fields) == public  # each declared option once, nothing else
    probe = {o.name for o in options_for("probe")} - {"recipe"}
    assert {n for n, f in fields.items() if f["shown"]} == probe
    assert not fields["epochs"]["shown"] and "disabled" in fields["epochs"]["html"]
    assert fields["epochs"]["recipes"] == "finetune"
    assert fields["lung_crop"]["modalities"] == "xray" and fields["epochs"]["modalities"] == ""
    assert "1 to 500" in fields["epochs"]["html"] and "default 30" in fields["epochs"]["html"]
    size = fields["input_size"]["html"]
    assert 'value=""' in size and "the backbone&#39;s own" in size  # 0: shown empty
    assert re.search(r'<select name="recipe" id="recipe"[^>]*>.*?value="probe" selected', html,
                     re.S)  # fmt: skip


def test_a_schedule_edit_form_shows_its_stored_values(client):
    config = {"name": "nightly", "modality": "ct", "interval_seconds": 86400, "recipe": "probe",
              "equalize": True, "input_size": 352, "probe_scales": "288",
              "probe_pool": "avg_std"}  # fmt: skip
    made = client.post("/api/v1/schedules", json=config)
    assert made.status_code == 201, made.json
    html = client.get(f"/schedules/{made.json['id']}").get_data(as_text=True)
    fields = _fields(html)
    assert 'value="352"' in fields["input_size"]["html"]
    assert 'value="288"' in fields["probe_scales"]["html"]
    assert re.search(r'value="avg_std" selected', fields["probe_pool"]["html"])
    assert re.search(r'name="equalize" value="true" checked', fields["equalize"]["html"])
    assert not fields["finetune_epochs"]["shown"]
