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
