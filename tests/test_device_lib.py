"""Checks for the device-info database in device_lib/ against schema/device.schema.json."""

import copy
import json
import pathlib

import pytest
from jsonschema import Draft202012Validator

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "schema" / "device.schema.json"
LIB_DIR = ROOT / "device_lib"

EXPECTED = [
    "nvidia-gpu-sm_70",
    "nvidia-gpu-sm_75",
    "nvidia-gpu-sm_80",
    "nvidia-gpu-sm_86",
    "nvidia-gpu-sm_89",
    "nvidia-gpu-sm_90",
    "nvidia-gpu-sm_100",
    "nvidia-gpu-sm_120",
    "amd-gpu-gfx90a",
    "amd-gpu-gfx942",
    "amd-gpu-gfx950",
    "amd-gpu-gfx1100",
    "amd-gpu-gfx1201",
    "apple-gpu-m1",
    "apple-gpu-m2",
    "apple-gpu-m3",
    "apple-gpu-m4",
    "generic-cpu-x86_64",
    "generic-cpu-aarch64",
]

DEVICE_FILES = sorted(LIB_DIR.glob("*.json"))


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def schema():
    return _load(SCHEMA_PATH)


@pytest.fixture(scope="module")
def validator(schema):
    return Draft202012Validator(schema)


def test_schema_is_valid(schema):
    Draft202012Validator.check_schema(schema)


def test_every_listed_architecture_present():
    present = {p.stem for p in DEVICE_FILES}
    missing = [name for name in EXPECTED if name not in present]
    assert not missing, f"missing device files: {missing}"


def test_no_unexpected_files():
    extra = sorted({p.stem for p in DEVICE_FILES} - set(EXPECTED))
    assert not extra, f"unexpected device files: {extra}"


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_file_validates(path, validator):
    data = _load(path)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_file_name_matches_content(path):
    data = _load(path)
    expected = f"{data['Vendor']}-{data['Type']}-{data['Architecture']}".lower()
    assert path.stem == expected
    if data["Type"] == "cpu":
        assert data["Vendor"] == "Generic"


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_memory_order(path):
    mem = _load(path)["MemorySubsystem"]
    types = mem["MemoryTypes"]
    assert types[0]["Type"] == "L1"
    assert types[1]["Type"] == "L2"
    if "SupportedMemoryTypes" in mem:
        assert mem["SupportedMemoryTypes"] == [m["Type"] for m in types]


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_sources_have_title_and_url(path):
    sources = _load(path)["Sources"]
    assert sources
    for src in sources:
        assert src.get("Title", "").strip()
        assert src.get("Url", "").startswith(("https://", "http://"))


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.name)
def test_pretty_printed(path):
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def _sample():
    return _load(LIB_DIR / "nvidia-gpu-sm_90.json")


def _mutate_size_string(d):
    d["MemorySubsystem"]["MemoryTypes"][0]["Size"] = "256 KiB"


def _mutate_unknown_top_key(d):
    d["Vendr"] = "NVIDIA"


def _mutate_unknown_memory_key(d):
    d["MemorySubsystem"]["MemoryTypes"][1]["SizeBytes"] = 1


def _mutate_l2_first(d):
    types = d["MemorySubsystem"]["MemoryTypes"]
    types[0], types[1] = types[1], types[0]


def _mutate_missing_required(d):
    del d["Sources"]


def _mutate_source_without_url(d):
    del d["Sources"][0]["Url"]


def _mutate_bad_vendor(d):
    d["Vendor"] = ""


def _mutate_bad_scope(d):
    d["MemorySubsystem"]["MemoryTypes"][0]["Scope"] = "per-SM"


def _mutate_year_string(d):
    d["ReleaseYear"] = "2022"


@pytest.mark.parametrize(
    "mutate",
    [
        _mutate_size_string,
        _mutate_unknown_top_key,
        _mutate_unknown_memory_key,
        _mutate_l2_first,
        _mutate_missing_required,
        _mutate_source_without_url,
        _mutate_bad_vendor,
        _mutate_bad_scope,
        _mutate_year_string,
    ],
    ids=lambda f: f.__name__.removeprefix("_mutate_"),
)
def test_invalid_samples_rejected(mutate, validator):
    sample = copy.deepcopy(_sample())
    assert validator.is_valid(sample)
    mutate(sample)
    assert not validator.is_valid(sample)
