import json
import os

import pytest

from robust_mim.errors import ConfigError
from robust_mim.records import (BadRecord, config_hash, iter_records, make_record, provenance, read_records,
                                write_record)


def _record(model="m", evaluation="pgd-linf", acc=(0.9, 0.5)):
    prov = provenance({"a": 1}, seed=0, device="cpu", wall_time_s=1.234)
    rows = [{"eps": e, "accuracy": a, "n_examples": 10} for e, a in zip((0.0, 8 / 255), acc)]
    return make_record(model, evaluation, "test", rows, n_examples=10, params={"steps": 10}, provenance=prov,
                       sanity_checks=[{"check": "monotone", "passed": False, "details": {}}])


def test_provenance_carries_commit_versions_hash_seed_device_time():
    prov = provenance({"a": 1}, seed=7, device="cpu", wall_time_s=2.0)
    assert prov["config_hash"] == config_hash({"a": 1}) != config_hash({"a": 2})
    assert prov["seed"] == 7 and prov["device"] == "cpu" and prov["wall_time_s"] == 2.0
    assert prov["versions"]["torch"] != "not installed" and prov["git_commit"]
    assert prov["date"].endswith("+00:00")


def test_records_are_written_atomically_and_read_back_as_a_dataframe(tmp_path):
    write_record(tmp_path / "m" / "pgd.json", _record())
    write_record(tmp_path / "n" / "pgd.json", _record("n", acc=(0.8, 0.1)))
    assert not [p for p in os.listdir(tmp_path / "m") if p.endswith(".tmp")]
    rec = json.loads((tmp_path / "m" / "pgd.json").read_text())
    assert isinstance(rec["rows"][1]["accuracy"], float)
    df = read_records(tmp_path)
    assert len(df) == 4 and set(df["model_id"]) == {"m", "n"}
    assert df["failed_checks"].eq("monotone").all() and "prov.git_commit" in df


def test_a_record_without_provenance_is_refused(tmp_path):
    rec = _record()
    del rec["provenance"]["seed"]
    with pytest.raises(ConfigError, match="provenance.seed"):
        write_record(tmp_path / "x.json", rec)
    assert not (tmp_path / "x.json").exists()


def test_provenance_records_whether_the_environment_matches_the_lock(tmp_path):
    from importlib import metadata

    from robust_mim.records import LOCK_FILE, lock_status, provenance

    env = provenance({"a": 1}, seed=0, device="cpu", wall_time_s=1.0)["environment"]
    assert env["lock_sha256"] != "missing" and LOCK_FILE.name == "requirements.lock"
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# header\ntorch=={metadata.version('torch')}\nnumpy==0.0.1\n"
                    'nvidia-fake==1.0 ; platform_system == "Nowhere"\n')
    status = lock_status.__wrapped__(lock)
    assert status["matches_lock"] is False
    assert status["differs_from_lock"] == [f"numpy==0.0.1 (installed {metadata.version('numpy')})"]


@pytest.mark.parametrize("text, words", [('{"schema_version": 1, "model_id": "m", "rows": [', "is not valid JSON"),
                                         ("", "is not valid JSON"), ("\udcff", "is not UTF-8")])
def test_a_truncated_or_malformed_record_is_one_line_naming_the_file(tmp_path, text, words):
    write_record(tmp_path / "m" / "a.json", _record())
    bad = tmp_path / "m" / "pgd.json"
    bad.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(BadRecord) as err:
        read_records(tmp_path)
    assert str(err.value).startswith(f"record {bad} {words}") and "\n" not in str(err.value)


@pytest.mark.parametrize("drop", ["schema_version", "provenance"])
def test_a_json_file_that_is_not_a_record_is_named_not_dropped(tmp_path, drop):
    write_record(tmp_path / "m" / "a.json", _record())
    rec = _record()
    del rec[drop]
    (tmp_path / "m" / "b.json").write_text(json.dumps(rec))
    with pytest.raises(BadRecord, match=f"{tmp_path / 'm' / 'b.json'} is not a record \\(no {drop}\\)"):
        read_records(tmp_path)
    (tmp_path / "m" / "b.json").write_text("[1, 2]")
    with pytest.raises(BadRecord, match="no schema_version or provenance"):
        list(iter_records(tmp_path))


def test_compare_finds_a_changed_number_and_ignores_wall_time_date_and_commit(tmp_path):
    from robust_mim.reporting.compare import compare_results, main

    rec = {"model_id": "m", "rows": [{"eps": 0.03, "accuracy": 0.5}],
           "provenance": {"git_commit": "a", "date": "d1", "wall_time_s": 1.0, "seed": 0}}
    for run, acc, commit in (("one", 0.5, "a"), ("two", 0.5, "b"), ("three", 0.25, "a")):
        path = tmp_path / run / "records" / "m" / "pgd.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({**rec, "rows": [{"eps": 0.03, "accuracy": acc}],
                                    "provenance": {**rec["provenance"], "git_commit": commit, "wall_time_s": len(run)}}))
    assert main([str(tmp_path / "one"), str(tmp_path / "two")]) == 0
    found = compare_results(tmp_path / "one", tmp_path / "three")
    assert found["records/m/pgd.json"] == [".rows[0].accuracy: 0.5 vs 0.25"]
    assert main([str(tmp_path / "one"), str(tmp_path / "three")]) == 1


def test_provenance_names_the_hardware_behind_the_device():
    from robust_mim.records import device_name, provenance

    block = provenance({"a": 1}, seed=0, device="cpu", wall_time_s=1.0)
    assert block["device"] == "cpu" and block["device_name"] == device_name("cpu")
    assert block["device_name"].endswith("logical cores)") and len(block["device_name"]) > len(" logical cores)") + 3
