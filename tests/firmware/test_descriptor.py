"""The on-device descriptor: chunked upload with caps, checks, atomic save, load fallback."""

import json
import os

from magcam_fw import descriptor as D

_DIR = "/tmp/magcam-test-descriptor-%d" % os.getpid() if hasattr(os, "getpid") else "/tmp/magcam-test-descriptor"


def _good():
    with open(D.__file__.rsplit("/", 1)[0] + "/descriptor.json") as f:
        return f.read()


def _upload(up, text, step):
    data = text.encode() if isinstance(text, str) else text
    result = (False, None)
    for off in range(0, len(data), step):
        result = up.chunk(off, len(data), data[off : off + step])
        if result[1]:
            return result
    return result


def test_factory_descriptor_passes_the_check():
    assert D.check(_good()) is None


def test_upload_in_chunks_completes_and_checks():
    up = D.Upload(4096)
    assert _upload(up, _good(), 100) == (True, None)
    assert json.loads(up.text())["serial"] == json.loads(_good())["serial"]


def test_upload_refuses_bad_descriptors_with_a_reason():
    d = json.loads(_good())
    del d["lens"]
    assert _upload(D.Upload(4096), json.dumps(d), 200) == (False, "missing 'lens'")
    assert _upload(D.Upload(4096), "{not json", 200) == (False, "not JSON")
    assert _upload(D.Upload(4096), b'{"x": "\xff\xfe"}', 200) == (False, "not UTF-8 text")
    d = json.loads(_good())
    d["sensor"]["cfa"] = "RGBW"
    assert _upload(D.Upload(4096), json.dumps(d), 200)[1] == "unknown sensor.cfa"


def test_upload_caps_and_order():
    up = D.Upload(64)
    done, why = up.chunk(0, 65, b"x" * 10)
    assert not done and "outside" in why
    up = D.Upload(4096)
    assert up.chunk(0, 100, b"a" * 10) == (False, None)
    done, why = up.chunk(20, 100, b"b" * 10)  # skipped 10..19
    assert not done and "order" in why
    assert up.chunk(0, 10, b"a" * 11)[1] is not None  # more than announced


def test_save_is_atomic_and_load_prefers_the_device_copy():
    try:
        os.mkdir(_DIR)
    except OSError:
        pass
    try:
        assert D.load(_DIR) == _good()  # a blank module: the factory copy
        d = json.loads(_good())
        d["serial"] = "CAL-1"
        D.save(_DIR, json.dumps(d))
        assert json.loads(D.load(_DIR))["serial"] == "CAL-1"
        assert "descriptor.json.tmp" not in os.listdir(_DIR)
    finally:
        for name in os.listdir(_DIR):
            os.remove(_DIR + "/" + name)
        os.rmdir(_DIR)


def test_check_refuses_wrong_types_and_ranges_with_a_reason():
    # Each of these once passed the check and then failed inside the app, taking the link down.
    cases = [
        (("color",), "x", "'color' must be an object"),
        (("sensor",), 5, "'sensor' must be an object"),
        (("serial",), 42, "'serial' must be a string"),
        (("lens", "position_max"), "big", "lens.position_max must be a whole number"),
        (("lens", "position_min"), 1.5, "lens.position_min must be a whole number"),
        (("lens", "position_max"), 10 ** 9, "lens.position_max must be a whole number"),
        (("sensor", "width"), 0, "sensor.width must be a whole number"),
        (("sensor", "height"), True, "sensor.height must be a whole number"),
        (("sensor", "bits"), 20, "sensor.bits must be a whole number 8..16"),
        (("sensor", "white_level"), 70000, "sensor.white_level must be a whole number 0..4095"),
        (("sensor", "black_level"), 4095, "sensor.black_level must be below white_level"),
        (("color", "color_matrix_1"), [1, 0, 0, 0, 1, 0, 0, 0, "1"], "color.color_matrix_1 must be 9 numbers"),
        # Each of these was stored, then failed every capture_dng after its exposure.
        (("color", "color_matrix_1"), [0] * 9, "color.color_matrix_1 must map white (D65) to a response above 0"),
        (("color", "color_matrix_1"), [1, 0, 0, 0, 1, 0, -1, 0, 0], "color.color_matrix_1 must map white"),
        (("color", "color_matrix_1"), [1, 0, 0, 0, 1, 0, 1, 1, 0], "color.color_matrix_1 must be invertible"),
        (("color", "illuminant_1"), "D99", "color.illuminant_1 must be one of D65, D50, A, D55, D75"),
        (("lens", "focal_mm"), 0, "lens.focal_mm must be a number above 0"),
        (("lens", "f_number"), "1.4", "lens.f_number must be a number above 0"),
        (("lens", "min_focus_m"), -1, "lens.min_focus_m must be a number above 0"),
        (("power",), [1], "'power' must be an object"),
        (("power",), {"max_ma": "lots"}, "power.max_ma must be a whole number >= 0"),
        (("power",), {"max_mA": 1200}, "power.max_mA is not a power limit"),
        (("power",), {"max_mv": 4000}, "power.min_mv must be below power.max_mv"),
        (("power",), {"min_mv": 5000, "max_mv": 5000}, "power.min_mv must be below power.max_mv"),
    ]
    for path, value, reason in cases:
        d = json.loads(_good())
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        why = D.check(json.dumps(d))
        assert why is not None and why.startswith(reason), (path, value, why)
    d = json.loads(_good())
    d["power"] = {"max_ma": 1200, "budget_mw": 4000, "min_mv": 4600, "max_mv": 5300}
    assert D.check(json.dumps(d)) is None
    assert D.check("[1, 2]") == "not a JSON object"


def test_usable_falls_back_to_the_factory_descriptor_with_the_reason():
    try:
        os.mkdir(_DIR)
    except OSError:
        pass
    try:
        assert D.usable(_DIR) == (_good(), None)  # a blank module
        d = json.loads(_good())
        d["serial"] = "CAL-7"
        D.save(_DIR, json.dumps(d))
        assert json.loads(D.usable(_DIR)[0])["serial"] == "CAL-7"
        d["color"] = "x"  # as a bad upload before the type checks could leave it
        D.save(_DIR, json.dumps(d))
        assert D.usable(_DIR) == (_good(), "'color' must be an object")
        D.save(_DIR, "{not json")
        assert D.usable(_DIR) == (_good(), "not JSON")
    finally:
        for name in os.listdir(_DIR):
            os.remove(_DIR + "/" + name)
        os.rmdir(_DIR)
