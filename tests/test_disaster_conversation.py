"""A six-turn disaster-response conversation on the real samples, through the agent loop
with a scripted brain: the Spain 2019 flood (Sentinel-2 + Sentinel-1) and the Joplin 2011
tornado (aerial pre/post pair + building footprints) in one session.

Every number the answers give must equal a direct call of the tool functions; a question
that mixes the two places (buildings of Joplin inside the Spanish flood) must come back as
a clear error the conversation survives; and the session must resume from disk with the
same handles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import ToolMessage
from pyproj import Geod
from shapely.geometry import box, shape

from agent.brains.scripted import ScriptedBrain, render_answer
from agent.loop import Agent, dispatch
from agent.session import Session
from tests.conftest import sample

SPAIN_S2 = "sentinel2/spain_flood_2019_s2_l1c.tif"
SPAIN_S1 = "sar/spain_flood_2019_s1.tif"
JOPLIN = "disaster/joplin_tornado_2011"
# The EF5 track crosses the southern third of the Joplin tile (as a user would type it,
# lon/lat): west, south, east, north.
TRACK = [-94.4997, 37.0689, -94.4934, 37.0711]

PLAN = [
    # 1. What are these scenes?
    {
        "calls": [
            {"name": "scene_info", "args": {"scene": "post"}},
            {"name": "scene_info", "args": {"scene": "post_sar"}},
            {"name": "scene_info", "args": {"scene": "joplin_pre"}},
            {"name": "scene_info", "args": {"scene": "joplin_post"}},
        ],
        "answer": "post: {info_1.sensor_title}, {info_1.width}x{info_1.height} px, {info_1.crs}; "
        "post_sar: {info_2.sensor_title} ({info_2.bands}); "
        "joplin_pre/joplin_post: {info_4.sensor_title}, {info_4.width}x{info_4.height} px.",
    },
    # 2. Map the flood.
    {
        "calls": [{"name": "flood_map", "args": {"post": ["post", "post_sar"]}}],
        "answer": "Flood map flood_1 made by {flood_1.method}.",
    },
    # 3. How much is flooded? From the stored result, no tool.
    {
        "calls": [],
        "answer": "{flood_1.flooded_area_ha:.1f} ha are flooded "
        "({flood_1.water_fraction:.1%} of the scene).",
    },
    # 4. Damage in Joplin: all buildings, inside the tornado track, and (a mistake the
    #    model makes) inside the Spanish flood, which lies elsewhere.
    {
        "steps": [
            [
                {
                    "name": "building_damage",
                    "args": {
                        "pre": "joplin_pre",
                        "post": "joplin_post",
                        "footprints": "footprints",
                    },
                }
            ],
            [
                {"name": "zonal_stats", "args": {"result": "damage_1", "bbox": TRACK}},
                {"name": "zonal_stats", "args": {"result": "damage_1", "region": "flood_1"}},
            ],
        ],
        "answer": "{damage_1.buildings_scored} buildings scored, "
        "{damage_1.counts.destroyed} destroyed. In the track: {zonal_1.features_inside} "
        "buildings, {zonal_1.counts.destroyed} destroyed, {zonal_1.counts.major-damage} "
        "with major damage. {errors} query failed: the flood is in Spain, not in Joplin.",
    },
    # 5. Export the flood as GeoJSON.
    {
        "calls": [{"name": "export", "args": {"result": "flood_1", "format": "geojson"}}],
        "answer": "Saved {export_1.features} flood polygons to {export_1.path}.",
    },
    # 6. A follow-up naming an earlier handle, answered from the stored result.
    {
        "calls": [],
        "answer": "{damage_1.counts.destroyed} destroyed buildings in damage_1 "
        "(of {damage_1.buildings_scored} scored).",
    },
    # After a resume: the handles still name the same results.
    {
        "calls": [{"name": "zonal_stats", "args": {"result": "damage_1", "region": "joplin_post"}}],
        "answer": "{zonal_2.features_inside} buildings lie in joplin_post.",
    },
]


@pytest.fixture
def disaster_session(tmp_path) -> Session:
    joplin = sample(JOPLIN)
    session = Session.create(tmp_path, "disaster")
    session.load(sample(SPAIN_S2), "post")
    session.load(sample(SPAIN_S1), "post_sar")
    session.load(joplin / "pre_aerial_aligned_to_post_31500-5137.tif", "joplin_pre")
    session.load(joplin / "post_aerial_tile_31500-5137.tif", "joplin_post")
    session.load(joplin / "building_footprints_joplin.geojson", "footprints")
    return session


def calls(turn) -> list[tuple[str, bool, str | None]]:
    return [(c.name, c.ok, c.handle) for c in turn.tool_calls]


def test_disaster_response_conversation(disaster_session, tmp_path):
    from tools.damage import building_damage
    from tools.raster import open_scene
    from tools.water import flood_map
    from tools.zonal import box_region, zonal_stats

    session = disaster_session
    agent = Agent(ScriptedBrain(PLAN), session)
    joplin = sample(JOPLIN)

    # 1. What the scenes are.
    first = agent.run_turn("I loaded the Spain flood scenes and the Joplin pair. What are they?")
    assert calls(first) == [
        ("scene_info", True, "info_1"),
        ("scene_info", True, "info_2"),
        ("scene_info", True, "info_3"),
        ("scene_info", True, "info_4"),
    ]
    spain, joplin_post = (
        open_scene(sample(SPAIN_S2)),
        open_scene(joplin / "post_aerial_tile_31500-5137.tif"),
    )
    assert first.answer.startswith(f"post: {spain.sensor_name}, 512x512 px, EPSG:4326; post_sar: ")
    assert "'VV', 'VH'" in first.answer
    assert f"{joplin_post.grid.width}x{joplin_post.grid.height} px." in first.answer

    # 2. The flood map equals a direct call on the same scenes.
    second = agent.run_turn("Map the flood in Spain.")
    assert calls(second) == [("flood_map", True, "flood_1")]
    flood = session.result("flood_1").data
    direct_flood = flood_map([spain, open_scene(sample(SPAIN_S1))])
    assert flood["flooded_area_ha"] == pytest.approx(direct_flood.flooded_area_ha, rel=1e-9)
    assert flood["method"] == "fusion" and second.answer == "Flood map flood_1 made by fusion."

    # 3. The area, read from the stored result without a tool call.
    third = agent.run_turn("How many hectares are flooded?")
    assert third.tool_calls == []
    assert third.answer.startswith(f"{direct_flood.flooded_area_ha:.1f} ha are flooded (")

    # 4. Damage, then counts inside the track; the flood region is another place.
    fourth = agent.run_turn(
        "How many buildings were damaged in Joplin, inside the tornado track, and how many "
        "of them are inside flood_1?"
    )
    assert calls(fourth) == [
        ("building_damage", True, "damage_1"),
        ("zonal_stats", True, "zonal_1"),
        ("zonal_stats", False, None),
    ]
    damage = session.result("damage_1").data
    direct_damage = building_damage(
        open_scene(joplin / "pre_aerial_aligned_to_post_31500-5137.tif"),
        joplin_post,
        joplin / "building_footprints_joplin.geojson",
        tmp_path / "direct_damage.geojson",
    )
    assert damage["counts"] == direct_damage.counts
    assert damage["buildings_scored"] == direct_damage.buildings_scored > 100

    in_track = session.result("zonal_1").data
    scored = json.loads(Path(damage["output"]).read_text())["features"]
    track = box(*TRACK)
    hits = [
        f["properties"]["damage_class"] for f in scored if shape(f["geometry"]).intersects(track)
    ]
    assert in_track["features_tested"] == len(scored) == damage["buildings_in_scene"]
    assert in_track["features_inside"] == len(hits) > 0
    assert in_track["counts"] == {c: hits.count(c) for c in direct_damage.counts}
    assert in_track == zonal_stats(
        Path(damage["output"]), box_region(TRACK), label="damage_1"
    ).model_dump(mode="json")
    # The track holds the worst damage: more destroyed than intact buildings there.
    assert in_track["counts"]["destroyed"] > in_track["counts"]["no-damage"]

    error = fourth.tool_calls[2].error or ""
    assert "damage_1 and flood_1 do not overlap: they cover different places" in error
    assert "lon -94.49" in error and "lon -0.78" in error
    counts = in_track["counts"]
    assert fourth.answer == (
        f"{direct_damage.buildings_scored} buildings scored, {direct_damage.counts['destroyed']} "
        f"destroyed. In the track: {len(hits)} buildings, {counts['destroyed']} destroyed, "
        f"{counts['major-damage']} with major damage. 1 query failed: the flood is in Spain, "
        "not in Joplin."
    )
    replies = [m for m in session.messages if isinstance(m, ToolMessage)]
    assert replies[-1].status == "error" and "do not overlap" in replies[-1].content

    # 5. The export is valid GeoJSON in EPSG:4326 whose polygons add up to the flood.
    fifth = agent.run_turn("Export flood_1 as GeoJSON.")
    assert calls(fifth) == [("export", True, "export_1")]
    exported = Path(session.result("export_1").data["path"])
    assert exported.parent == session.workspace / "exports" and exported.is_file()
    assert fifth.artifacts == [str(exported)] and str(exported) in fifth.answer
    collection = json.loads(exported.read_text())
    assert collection["type"] == "FeatureCollection" and "crs" not in collection  # RFC 7946
    polygons = [shape(f["geometry"]) for f in collection["features"]]
    assert polygons and all(p.geom_type == "Polygon" and p.is_valid for p in polygons)
    west, south, east, north = spain.grid.bounds  # EPSG:4326: lon/lat degrees
    lon_lat = np.concatenate([np.asarray(p.exterior.coords) for p in polygons])
    assert lon_lat[:, 0].min() >= west - 1e-9 and lon_lat[:, 0].max() <= east + 1e-9
    assert lon_lat[:, 1].min() >= south - 1e-9 and lon_lat[:, 1].max() <= north + 1e-9
    geod = Geod(ellps="WGS84")
    area_ha = sum(abs(geod.geometry_area_perimeter(p)[0]) for p in polygons) / 1e4
    assert area_ha == pytest.approx(direct_flood.flooded_area_ha, rel=1e-4)

    # 6. A follow-up naming an earlier handle, answered from the stored result.
    sixth = agent.run_turn("How many destroyed buildings were in damage_1?")
    assert sixth.tool_calls == []
    assert sixth.answer == (
        f"{direct_damage.counts['destroyed']} destroyed buildings in damage_1 "
        f"(of {direct_damage.buildings_scored} scored)."
    )

    # The session on disk resumes with the same handles, files and answers.
    handles = {"info_1", "info_2", "info_3", "info_4", "flood_1", "damage_1", "zonal_1", "export_1"}
    session.close()
    resumed = Session.resume(session.root, "disaster")
    assert set(resumed.state.results) == handles
    assert set(resumed.state.files) == {
        "post",
        "post_sar",
        "joplin_pre",
        "joplin_post",
        "footprints",
    }
    assert resumed.result("damage_1").data == damage
    assert render_answer("{flood_1.flooded_area_ha:.4f}", resumed.messages) == (
        f"{direct_flood.flooded_area_ha:.4f}"
    )
    again = Agent(ScriptedBrain(PLAN), resumed).run_turn("How many of them lie in joplin_post?")
    assert calls(again) == [("zonal_stats", True, "zonal_2")]
    assert again.answer == f"{damage['buildings_in_scene']} buildings lie in joplin_post."
    assert dispatch(
        resumed, {"name": "export", "args": {"result": "flood_1", "format": "tif"}}
    ).record.ok
    resumed.close()
