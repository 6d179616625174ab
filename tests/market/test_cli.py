"""The market commands, run as a user runs them: a real child process, real files, moto's EC2."""

import json
import math
import os
import subprocess

import pytest

from tests.conftest import free_port


def run(cmd, *args, env=None, ok=True):
    p = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})})
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def test_simulate_json_small_sweep(spotrun_cmd):
    p = run(spotrun_cmd, "simulate", "--traces", "aws-10-26-2022/us-west-2a_v100_1,aws-10-26-2022/us-west-2b_k80_1",
            "--starts", "4", "--seed", "7", "--policies", "on-demand,greedy,up,adaptive,optimum", "--workers", "1",
            "--per-trace", "--json")
    report = json.loads(p.stdout)
    rows = {r["policy"]: r for r in report["policies"]}
    assert set(rows) == {"on-demand", "greedy", "up", "adaptive", "optimum"}
    assert all(r["runs"] == 8 for r in rows.values())
    assert rows["on-demand"]["on_demand_hours"]["mean"] == pytest.approx(48)
    assert rows["on-demand"]["cost"]["mean"] == pytest.approx((48 + 0.2) * 3.06, rel=0.01)
    assert rows["optimum"]["spot_vs_optimum"] == pytest.approx(1)
    for name, r in rows.items():
        assert r["deadline_misses"] == 0
        assert r["cost"]["mean"] >= rows["optimum"]["cost"]["mean"] - 1e-9, name
        assert r["spot_hours"]["mean"] + r["on_demand_hours"]["mean"] == pytest.approx(48)
    assert len(report["per_market"]) == 2
    assert report["job"]["deadline_h"] == pytest.approx(60)


def test_simulate_one_run_multi_zone(spotrun_cmd):
    p = run(spotrun_cmd, "simulate", "--traces", "aws-02-15-2023/*", "--zones", "--start", "100",
            "--compute", "10h", "--deadline", "12h", "--policies", "adaptive,optimum", "--json")
    report = json.loads(p.stdout)
    assert len(report["markets"]) == 1 and report["markets"][0].count("+") == 4
    assert all(r["runs"] == 1 for r in report["policies"])


def test_simulate_table_and_plot(spotrun_cmd, tmp_path):
    png = tmp_path / "cost.png"
    p = run(spotrun_cmd, "simulate", "--traces", "aws-10-26-2022/us-west-2a_k80_1", "--starts", "2",
            "--compute", "8h", "--policies", "greedy,optimum", "--workers", "1", "--plot", str(png))
    assert "greedy" in p.stdout and "optimum" in p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--compute", "0"], "compute time must be positive"),
        (["--changeover", "0"], "changeover delay must be positive"),
        (["--compute", "10h", "--deadline", "5h"], "shorter than compute"),
        (["--on-demand-price", "-1"], "cannot be negative"),
        (["--policies", "magic"], "unknown policy magic"),
        (["--traces", "nope/*"], "no trace matches"),
        (["--traces", "gcp-04-30-2023/us-east1-b_c3-88"], "shorter than the deadline"),
        (["--compute", "soon"], "not a duration"),
    ],
)
def test_simulate_bad_input_is_a_clear_error(spotrun_cmd, args, message):
    p = run(spotrun_cmd, "simulate", "--starts", "1", *args, ok=False)
    assert p.returncode == 2
    assert message in " ".join(p.stderr.split())
    assert "Traceback" not in p.stderr


def test_simulate_malformed_trace_file(spotrun_cmd, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"metadata": {"gap_seconds": 600}, "data": [1, "x"]}')
    p = run(spotrun_cmd, "simulate", "--traces", str(bad), ok=False)
    assert p.returncode == 2 and "non-negative integers" in p.stderr


def test_list_traces(spotrun_cmd):
    rows = json.loads(run(spotrun_cmd, "simulate", "--list-traces", "--json").stdout)
    assert {r["kind"] for r in rows} == {"availability", "preemption"}
    assert any(r["name"] == "aws-08-27-2023/us-west-2a_v100_1" and r["nodes"] == 16 for r in rows)


def test_advise_matches_young_and_daly(spotrun_cmd):
    out = json.loads(run(spotrun_cmd, "advise", "--checkpoint-time", "60s", "--reclaims-per-hour", "0.5",
                         "--hours", "48", "--instance-type", "p3.2xlarge", "--json").stdout)
    m = 7200.0
    assert out["young_interval_s"] == pytest.approx(math.sqrt(2 * 60 * m))
    x = 60 / (2 * m)
    assert out["daly_interval_s"] == pytest.approx(math.sqrt(2 * 60 * m) * (1 + math.sqrt(x) / 3 + x / 9) - 60)
    assert out["spot_price"] == 0.918 and out["on_demand_price"] == 3.06
    assert out["on_demand_cost"] == pytest.approx(48 * 3.06)
    assert 0 < out["saving_fraction"] < 0.7


def test_advise_from_a_trace(spotrun_cmd):
    from spotrun.market.trace import load_trace

    rate = load_trace("aws-10-26-2022/us-west-2a_v100_8").reclaims_per_hour()
    out = json.loads(run(spotrun_cmd, "advise", "--checkpoint-time", "30s", "--trace",
                         "aws-10-26-2022/us-west-2a_v100_8", "--json").stdout)
    assert out["reclaims_per_hour"] == pytest.approx(rate)
    assert out["young_interval_s"] == pytest.approx(math.sqrt(2 * 30 * 3600 / rate))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint-time", "30s"], "exactly one of"),
        (["--checkpoint-time", "0s", "--reclaims-per-hour", "1"], "must be positive"),
        (["--checkpoint-time", "30s", "--reclaims-per-hour", "1", "--hours", "5", "--instance-type", "z9.huge"], "no price"),
    ],
)
def test_advise_bad_input(spotrun_cmd, args, message):
    p = run(spotrun_cmd, "advise", *args, ok=False)
    assert p.returncode == 2 and message in p.stderr and "Traceback" not in p.stderr


def test_prices_bundled_table(spotrun_cmd):
    from spotrun.market.prices import lookup

    out = json.loads(run(spotrun_cmd, "prices", "--json").stdout)
    assert out["compiled"] and len(out["prices"]) >= 12
    assert {r["provider"] for r in out["prices"]} == {"aws", "gcp", "azure"}
    assert all(r["source"] for r in out["prices"])
    assert lookup("aws", "p3.2xlarge") == (0.918, 3.06)
    assert lookup("gcp", "c3-highcpu-88") == (0.35, 3.79)
    p = run(spotrun_cmd, "prices", "-i", "p3.2xlarge")
    assert "p3.2xlarge" in p.stdout and "r5.16xlarge" not in p.stdout


@pytest.fixture(scope="module")
def moto_ec2():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_prices_history_from_aws(spotrun_cmd, moto_ec2, aws_env):
    p = run(spotrun_cmd, "prices", "--history", "--region", "us-east-1", "-i", "m5.large,c5.xlarge",
            "--since", "2h", "--endpoint-url", moto_ec2, "--json", env=aws_env)
    out = json.loads(p.stdout)
    assert out["region"] == "us-east-1"
    assert out["history"], "moto returns a price per zone and type"
    assert {r["instance_type"] for r in out["history"]} <= {"m5.large", "c5.xlarge"}
    assert all(r["zone"].startswith("us-east-1") and r["spot"] > 0 for r in out["history"])
    table = run(spotrun_cmd, "prices", "--history", "-i", "m5.large", "--endpoint-url", moto_ec2, env=aws_env)
    assert "m5.large" in table.stdout


def test_prices_scores_error_is_clear(spotrun_cmd, moto_ec2, aws_env):
    p = run(spotrun_cmd, "prices", "--history", "-i", "m5.large", "--scores", "--endpoint-url", moto_ec2,
            env=aws_env, ok=False)
    assert p.returncode == 2
    assert "spot placement scores" in p.stderr and "Traceback" not in p.stderr


def test_prices_history_needs_types(spotrun_cmd):
    p = run(spotrun_cmd, "prices", "--history", ok=False)
    assert p.returncode == 2 and "--instance-types" in p.stderr


def test_simulate_says_the_gang_size_prices_and_changeover_it_used(spotrun_cmd, tmp_path):
    # a 1-node trace with its own prices, stored in the public layout under a folder that merely contains "2-node"
    d = tmp_path / "run-2-node-copies" / "preemption" / "1-node" / "aws-01-01-2024"
    d.mkdir(parents=True)
    counts = ([1] * 30 + [0] * 6) * 10
    prices = [0.5 + 0.1 * (i // 36) for i in range(len(counts))]
    (d / "us-east-1a_v100_1.json").write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": counts,
                                                          "prices": prices}))
    p = run(spotrun_cmd, "simulate", "--traces", str(d / "us-east-1a_v100_1.json"), "--compute", "8h",
            "--deadline", "12h", "--changeover", "700s", "--starts", "3", "--workers", "1", "--json")
    report = json.loads(p.stdout)
    (t,) = report["traces"]
    assert (t["nodes"], t["nodes_from"], t["prices_from"]) == (1, "folder", "trace")
    assert t["spot_price_min"] == pytest.approx(0.5) and t["spot_price_max"] == pytest.approx(1.4)
    assert report["job"]["changeover_s"] == 700  # exact, not rounded to the 600-s tick
    rows = {r["policy"]: r for r in report["policies"]}
    assert rows["on-demand"]["cost"]["mean"] == pytest.approx((8 * 3600 + 700) * 3.06 / 3600)
    assert all(r["deadline_misses"] == 0 for r in rows.values())
    table = run(spotrun_cmd, "simulate", "--traces", str(d / "us-east-1a_v100_1.json"), "--compute", "8h",
                "--deadline", "12h", "--starts", "2", "--workers", "1", "--nodes", "1").stdout
    assert "1 node(s) (--nodes)" in " ".join(table.split()) and "trace prices $0.5-1.4/h" in table


def test_simulate_refuses_a_multi_node_trace_nobody_sized_and_a_changeover_off_the_grid(spotrun_cmd, tmp_path):
    f = tmp_path / "gang.json"
    f.write_text(json.dumps({"metadata": {"gap_seconds": 600}, "data": [4, 2, 4] * 200}))
    p = run(spotrun_cmd, "simulate", "--traces", str(f), "--compute", "8h", "--starts", "1", ok=False)
    assert p.returncode == 2 and "give --nodes N" in p.stderr and "Traceback" not in p.stderr
    ok = run(spotrun_cmd, "simulate", "--traces", str(f), "--nodes", "4", "--compute", "8h", "--starts", "1",
             "--policies", "up", "--json")
    assert json.loads(ok.stdout)["traces"][0]["availability"] == pytest.approx(2 / 3, abs=0.01)
    p = run(spotrun_cmd, "simulate", "--traces", "aws-10-26-2022/us-west-2a_k80_1", "--changeover", "7s",
            "--compute", "8h", "--starts", "1", ok=False)
    assert p.returncode == 2 and "needs a 1s grid" in p.stderr and "Traceback" not in p.stderr


def test_simulate_help_names_the_public_layout(spotrun_cmd):
    """The help is rendered as Markdown, which would swallow `<N>` as a tag."""
    p = run(spotrun_cmd, "simulate", "--help", env={"COLUMNS": "300"})
    assert "<kind>/<N>-node/<date>/<zone>.json" in p.stdout
