"""The register map is consistent, and everything derived from it says the same."""

import json

import pytest

from temposplit.hw import regmap


def test_offsets_distinct_and_fields_fit():
    regmap.check_unique()
    for r in regmap.REGISTERS:
        assert r.width <= 32
        spans = sorted((f.lsb, f.lsb + f.width) for f in r.fields)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), r.name


def test_pack_unpack_round_trip():
    word = regmap.pack("TABLE_DATA", CODE=0x1234, LENGTH=13)
    assert regmap.unpack("TABLE_DATA", word) == {"CODE": 0x1234, "LENGTH": 13}
    with pytest.raises(ValueError, match="does not fit"):
        regmap.pack("NBITS", N=16)


def test_derived_forms_list_every_register():
    md = regmap.markdown()
    amap = json.loads(regmap.address_map_json())
    header = regmap.c_header()
    hwh = regmap.hwh_fragment()
    for r in regmap.REGISTERS:
        assert f"| 0x{r.offset:02X} | {r.name} |" in md
        assert any(e["name"] == r.name and e["offset"] == r.offset for e in amap["registers"])
        assert f"TSP_{r.name}_OFFSET 0x{r.offset:02X}u" in header
        assert f'<REGISTER NAME="{r.name}">' in hwh


def test_params_are_checked():
    with pytest.raises(TypeError):
        regmap.Params(lanes=4)  # the stream width is fixed (regmap.LANES), not a build option
    with pytest.raises(ValueError, match="ref_bytes"):
        regmap.Params(ref_bytes=1000)


def test_top_builds_its_registers_from_the_map():
    """The top elaborates a write decode for every register of the map and a storage
    register for every read-write one (what each decodes to and reads back is checked on
    the Verilated top: sim/tb_accel.py::test_registers)."""
    pytest.importorskip("amaranth")
    import re

    from amaranth.back import rtlil

    from temposplit.hw.top import Accelerator

    text = rtlil.convert(Accelerator(regmap.Params(ref_bytes=1024, block_bytes=512)), name="t")
    wires = set(re.findall(r"wire width \d+ (?:\\S+ )*\\(\S+)", text))
    for r in regmap.REGISTERS:
        assert f"w_hit_{r.name.lower()}" in wires, r.name
        assert (f"reg_{r.name.lower()}" in wires) == (r.access == "rw"), r.name


def test_a_build_of_one_lane_engines_elaborates_and_says_so():
    pytest.importorskip("amaranth")
    from amaranth.back import rtlil

    from temposplit.hw.top import Accelerator

    params = regmap.Params(ref_bytes=1024, block_bytes=512, ctx_lanes=1)
    assert params.ctx_units == params.ctx_engines
    top = rtlil.convert(Accelerator(params), name="t")
    assert "DualRangeEncoder" not in top and "dual" not in top.lower()
    word = regmap.pack("PARAMS", LANES=8, CTX_LANES=1, ENGINES=3)
    assert regmap.unpack("PARAMS", word)["CTX_LANES"] == 1
    with pytest.raises(ValueError, match="ctx_lanes"):
        regmap.Params(ctx_lanes=3)


def test_docs_quote_the_register_map():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "fabric.md").read_text()
    block = doc.split("<!-- regmap:begin -->\n", 1)[1].split("<!-- regmap:end -->", 1)[0]
    assert block == regmap.markdown(), "docs/fabric.md's register tables differ from hw/regmap.py: regenerate them"


@pytest.mark.parametrize("option", [["--ctx-engines", "5"], ["--ref-bytes", "1000"], ["--block-bytes", "-1"]])
def test_generate_refuses_a_build_parameter_in_one_usage_line(option, tmp_path, capsys):
    from temposplit.hw import generate

    with pytest.raises(SystemExit) as stop:
        generate.main(["--out", str(tmp_path), *option])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("python -m temposplit.hw.generate: error:")
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_stream_formats_name_every_tag_bit_the_driver_uses_for_slices():
    """CTX slices' input and output words carry tags (docs/fabric.md "Slices"): the stream
    formats (and so docs/fabric.md's register block) must name each bit the driver sets or
    reads, the lane bits included."""
    from temposplit.hw import driver

    fmt = regmap.STREAM_FORMATS
    for text in (
        f"bits {driver.SLICE_ENGINE_LSB}-{driver.SLICE_ENGINE_LSB + 1}",
        f"bit {driver.SLICE_LAST_BIT} set on a slice's last word",
        f"lane v div E in bit {driver.SLICE_LANE_BIT}",
    ):
        assert text in fmt["input"], text
    for text in (
        f"bits {driver.OUT_COUNT_LSB}-{driver.OUT_COUNT_LSB + 2}",
        f"bits {driver.OUT_ENGINE_LSB}-{driver.OUT_ENGINE_LSB + 1} the engine",
        f"bit {driver.OUT_LAST_BIT} set on its slice's last word",
        f"bit {driver.OUT_LANE_BIT} the engine's lane",
    ):
        assert text in fmt["output"], text
