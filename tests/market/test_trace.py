import json
from pathlib import Path

import numpy as np
import pytest

from spotrun.market.trace import bundled, load_trace, parse_trace, read_trace, resolve, synthetic


def write(tmp_path: Path, content: str, name: str = "t.json") -> Path:
    p = tmp_path / name
    p.write_text(content)
    return p


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("{not json", "not valid JSON"),
        ('{"data": [1, 0]}', "missing key 'metadata'"),
        ('{"metadata": {"gap_seconds": 60}}', "missing key 'data'"),
        ('{"metadata": {}, "data": [1]}', "gap_seconds"),
        ('{"metadata": {"gap_seconds": 0}, "data": [1]}', "gap_seconds must be a positive"),
        ('{"metadata": {"gap_seconds": -5}, "data": [1]}', "gap_seconds must be a positive"),
        ('{"metadata": {"gap_seconds": 60}, "data": []}', "non-empty list"),
        ('{"metadata": {"gap_seconds": 60}, "data": [1, -1]}', "non-negative integers"),
        ('{"metadata": {"gap_seconds": 60}, "data": [1, 0.5]}', "non-negative integers"),
        ('{"metadata": {"gap_seconds": 60}, "data": [1, 0], "prices": [1.0]}', "one entry per tick"),
        ('{"metadata": {"gap_seconds": 60}, "data": [1, 0], "prices": [1.0, -0.1]}', "not negative"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_traces_say_what_is_wrong(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        read_trace(write(tmp_path, content))


def test_missing_file_and_unknown_name():
    with pytest.raises(ValueError, match="no trace"):
        load_trace("no/such/trace")


def public_layout(root: Path, counts: list[int], folder: str, gap: int = 300, **meta) -> Path:
    """A trace file at <root>/<kind>/<folder>/<date>/<zone>.json, as the public traces are stored."""
    d = root / "availability" / folder / "aws-01-01-2024"
    d.mkdir(parents=True)
    return write(d, json.dumps({"metadata": {"gap_seconds": gap, **meta}, "data": counts}), "us-west-2a_v100_1.json")


def test_gang_size_comes_from_the_public_layout(tmp_path):
    t = read_trace(public_layout(tmp_path, [0, 5, 16, 16, 8, 16], "16-node"))
    assert (t.nodes, t.nodes_from) == (16, "folder")
    assert t.available.tolist() == [False, False, True, True, False, True]


def test_gang_size_is_never_guessed_from_elsewhere_in_the_path(tmp_path):
    # a 1-node trace kept in a folder whose name merely contains "2-node"
    copies = tmp_path / "run-2-node-copies"
    t = read_trace(public_layout(copies, [1, 0, 1], "1-node"))
    assert (t.nodes, t.nodes_from) == (1, "folder") and t.available.tolist() == [True, False, True]
    # "N-node" as the parent (not the grandparent) folder, or in the file name, says nothing
    (tmp_path / "4-node").mkdir()
    q = write(tmp_path / "4-node", json.dumps({"metadata": {"gap_seconds": 60}, "data": [1, 0]}), "8-node.json")
    assert (read_trace(q).nodes, read_trace(q).nodes_from) == (1, "default")


def test_gang_size_from_metadata_or_nodes_and_counts_nobody_sized_are_refused(tmp_path):
    t = parse_trace({"metadata": {"gap_seconds": 60, "nodes": 4}, "data": [4, 3, 4]})
    assert (t.nodes, t.nodes_from, t.available.tolist()) == (4, "metadata", [True, False, True])
    t = parse_trace({"metadata": {"gap_seconds": 60, "nodes": 4}, "data": [3, 2, 3]}, nodes=3)
    assert (t.nodes, t.nodes_from, t.available.tolist()) == (3, "--nodes", [True, False, True])
    with pytest.raises(ValueError, match=r"exceeds the gang size 1 \(from default\): give --nodes N"):
        parse_trace({"metadata": {"gap_seconds": 60}, "data": [4, 3, 4]})
    with pytest.raises(ValueError, match="metadata.nodes is 8 but the file sits in a 16-node folder"):
        read_trace(public_layout(tmp_path, [1], "16-node", nodes=8))
    with pytest.raises(ValueError, match="metadata.nodes must be a positive integer"):
        parse_trace({"metadata": {"gap_seconds": 60, "nodes": "16"}, "data": [1]})
    # the user's --nodes wins over the folder
    assert read_trace(public_layout(tmp_path / "x", [2, 1], "16-node"), nodes=2).available.tolist() == [True, False]


def test_one_node_trace_and_prices(tmp_path):
    p = write(tmp_path, json.dumps({"metadata": {"gap_seconds": 32}, "data": [1, 0, 1], "prices": [0.9, 0.9, 1.1]}))
    t = read_trace(p)
    assert t.available.tolist() == [True, False, True]
    assert t.prices.tolist() == [0.9, 0.9, 1.1]
    assert t.gap_s == 32 and t.ticks == 3


def test_bundled_registry_has_the_paper_traces():
    names = bundled()
    assert "aws-10-26-2022/us-west-2a_v100_1" in names
    assert len([n for n in names if n.startswith("aws-10-26-2022/")]) == 6
    t = load_trace("aws-10-26-2022/us-west-2a_v100_1")
    assert t.gap_s == 600 and t.ticks == 3895
    assert t.nodes == 1
    gang = load_trace("aws-08-27-2023/us-west-2a_v100_1")
    assert gang.nodes == 16
    assert 0.3 < gang.availability < 0.5


def test_resolve_globs_names_and_paths(tmp_path):
    assert len(resolve(["aws-02-15-2023/*"])) == 5
    assert len(resolve(["availability/1-node/*/*"])) == 11
    p = write(tmp_path, json.dumps({"metadata": {"gap_seconds": 60}, "data": [1, 1, 0]}))
    got = resolve(["aws-10-26-2022/us-west-2a_k80_1", str(p)])
    assert [t.ticks for t in got] == [3895, 3]
    with pytest.raises(ValueError, match="no trace matches"):
        resolve(["nothing-like-this/*"])


def test_synthetic_traces_are_seeded_and_match_their_parameters():
    a = synthetic(hours=2000, gap_s=600, availability=0.6, mean_lifetime_s=4 * 3600, seed=3)
    b = synthetic(hours=2000, gap_s=600, availability=0.6, mean_lifetime_s=4 * 3600, seed=3)
    c = synthetic(hours=2000, gap_s=600, availability=0.6, mean_lifetime_s=4 * 3600, seed=4)
    assert np.array_equal(a.available, b.available)
    assert not np.array_equal(a.available, c.available)
    assert abs(a.availability - 0.6) < 0.1
    up, _ = a.runs()
    assert 2.5 * 3600 < up.mean() < 6 * 3600
    assert synthetic(10, 600, 1.0, 3600).available.all()
    with pytest.raises(ValueError):
        synthetic(10, 600, 0.0, 3600)


def test_reclaims_per_hour_counts_ended_runs():
    t = parse_trace({"metadata": {"gap_seconds": 3600}, "data": [1, 1, 0, 1, 0, 1]})
    # runs of 2h and 1h ended; the last run is still going: 2 reclaims over 4 held hours
    assert t.reclaims_per_hour() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="never available"):
        parse_trace({"metadata": {"gap_seconds": 60}, "data": [0, 0]}).reclaims_per_hour()
