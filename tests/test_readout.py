"""What the small model reads of a tool result (agent.brains.readout)."""

import json

from agent.brains.readout import MAX_TEXT, compact_result


def _read(data: dict) -> dict:
    text = compact_result(json.dumps(data))
    assert len(text) <= MAX_TEXT
    assert compact_result(text) == text  # training renders results already compacted
    return json.loads(text)


def test_scalars_stay_files_go_and_shares_read_in_percent():
    shown = _read(
        {
            "handle": "flood_1",
            "flooded_area_ha": 231.734,
            "water_fraction": 0.123456,
            "scale": 0.0001,
            "valid_pixels": 160000,
            "output": "/tmp/ws/results/flood_1.tif",
            "notes": ["Specks removed."],
            "ok": True,
            "thresholds": {"post_mndwi": -0.1, "pre_mndwi": -0.05},
        }
    )
    assert shown == {
        "handle": "flood_1",
        "flooded_area_ha": 231.7,
        "water_fraction_pct": 12.3,
        "scale": 0.0001,
        "thresholds": {"post_mndwi": -0.1, "pre_mndwi": -0.05},
    }


def test_per_class_tables_are_flattened_with_their_measure():
    burn = _read(
        {
            "handle": "burn_1",
            "burned_area_ha": 80.5,
            "classes": [
                {"code": c, "name": n, "pixels": p, "area_ha": a, "fraction": f}
                for c, (n, p, a, f) in enumerate(
                    [
                        ("enhanced regrowth, high", 10, 0.1, 0.001),
                        ("enhanced regrowth, low", 0, 0.0, 0.0),
                        ("unburned", 9000, 900.0, 0.9),
                        ("low severity", 0, 0.0, 0.0),
                        ("moderate-low severity", 300, 30.0, 0.03),
                        ("moderate-high severity", 0, 0.0, 0.0),
                        ("high severity", 505, 50.5, 0.05),
                    ]
                )
            ],
        }
    )
    # seven classes: the empty ones go; the measure and its unit name the table
    assert burn["classes_area_ha"] == {
        "enhanced regrowth, high": 0.1,
        "unburned": 900.0,
        "moderate-low severity": 30.0,
        "high severity": 50.5,
    }
    damage = _read(
        {
            "handle": "damage_1",
            "buildings_scored": 40,
            "counts": {"no-damage": 30, "minor-damage": 10, "major-damage": 0, "destroyed": 0},
        }
    )
    assert damage["counts"]["destroyed"] == 0  # a short table keeps its zeros
    cover = _read(
        {
            "handle": "landcover_1",
            "dominant": "water",
            "classes": {
                "water": {"pixels": 600, "area_ha": 6.0, "share": 0.6},
                "built-up": {"pixels": 400, "area_ha": 4.0, "share": 0.4},
            },
            "shares": {"water": 0.6, "built-up": 0.4},
        }
    )
    assert cover["classes_area_ha"] == {"water": 6.0, "built-up": 4.0}
    assert cover["shares_pct"] == {"water": 60.0, "built-up": 40.0}
    labels = _read(
        {
            "handle": "labels_1",
            "top_label": "river",
            "labels": [
                {"label": "river", "probability": 0.7},
                {"label": "lake", "probability": 0.3},
            ],
        }
    )
    assert labels["labels_probability_pct"] == {"river": 70.0, "lake": 30.0}


def test_files_keep_their_names_and_formulas_are_not_paths():
    export = _read({"handle": "export_1", "path": "/srv/ws/exports/flood_1.geojson", "bytes": 7})
    assert export == {"handle": "export_1", "path": "flood_1.geojson"}
    hits = _read(
        {
            "handle": "search_1",
            "hits": [
                {"rank": 1, "id": "a", "path": "/data/S2A_x.tif", "score": 0.9, "caption": "c"},
                {
                    "rank": 2,
                    "id": "b",
                    "path": "C:\\data\\S2B_y.tif",
                    "score": 0.5,
                    "caption": "d",
                },
            ],
        }
    )
    assert list(hits["hits_score"]) == ["S2A_x.tif", "S2B_y.tif"]
    lookup = _read(
        {
            "handle": "lookup_1",
            "data": {
                "formula": "(N-R)/(N+R)",
                "reference": "https://doi.org/10.1/x",
                "bands": {"N": {"name": "Near-Infrared (NIR)"}, "R": {"name": "Red"}},
            },
        }
    )
    assert lookup["data"] == {"formula": "(N-R)/(N+R)", "bands": ["Near-Infrared (NIR)", "Red"]}


def test_a_long_result_is_cut_to_whole_entries_and_long_text_shortened():
    data = {"handle": "caption_1", "caption": "word " * 200}
    data.update({f"field_{i}": 1.5 for i in range(60)})
    shown = _read(data)
    assert shown["handle"] == "caption_1" and shown["caption"].endswith(" ...")
    assert 0 < len([k for k in shown if k.startswith("field_")]) < 60
