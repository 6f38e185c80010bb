"""Board definitions: load and check a board file (``boards/*.json``) at boot, pick the one that
applies to this device, and the small runtime-neutral pieces both hardware HALs build from it.

A board file is plain JSON (schema in docs/boards.md): which runtime and chip, which pin plays
which role, how the Hall sensor, VBUS sense, load switch, I2C chips, focus-ring counter and lens
actuator are wired, the watchdog and safe-mode settings, and the flash layout. ``validate``
checks it *before* any pin is touched and raises ``BoardError`` naming the file, the role and
the pin: every required role present for the enabled features, no pin used twice, pin values
of the right form for the runtime (GPIO numbers on MicroPython, ``board`` pin names such as
``"A0"``, ``"D5"``, ``"SDA"`` on CircuitPython and Blinka), valid GPIOs for the chip (no
strapping, flash or PSRAM pins), ADC-capable pins for analog roles, a known actuator kind.

Which board file boot uses (``pick_board``, called by ``firmware/main.py``):

1. ``/board.json`` on the device's filesystem, if it exists: an explicit choice wins, if it is
   for this runtime and its ``match`` fits this machine (``check_fits``).
2. Otherwise every ``/boards/*.json``: those written for the running runtime (``runtime``)
   whose ``match`` string occurs in this device's machine string (``machine_name()``:
   ``sys.implementation._machine`` on MicroPython, e.g. ``"Raspberry Pi Pico with RP2040"``;
   ``os.uname().machine`` on CircuitPython; the device-tree model on a Raspberry Pi). The
   longest match wins (the most specific board); no match, or a tie, is a ``BoardError``
   that lists the candidates.

Usage::

    from magcam_fw.board import BoardError, load, pick_board, runtime, machine_name

    bd = load("/board.json")                  # parsed and validated, else BoardError
    path, bd = pick_board(candidates, machine_name(), runtime())  # candidates: [(path, dict)]
    for w in bd["_warnings"]:                 # e.g. no temperature sensor: no over-temperature cut
        print(w)

    hall = AnalogThreshold(read_mv, on_mv=1900, off_mv=1750)   # Pin-like value() with hysteresis
    temp = BusGuard(tmp117.read_mc, failsafe=125000)           # last good reading, then fail safe
"""

import json

from magcam_fw.compat import const

SCHEMA = const(1)

RUNTIMES = ("micropython", "micropython-unix", "circuitpython", "blinka")
FEATURES = ("ring", "ring_switch", "attach", "rail", "power_monitor", "temperature", "lens")
REQUIRED_FEATURES = ("ring", "attach", "rail", "lens")  # the app always uses these
ROLES = (
    "ring_a", "ring_b", "ring_switch", "hall", "vbus_sense", "load_switch",
    "i2c_sda", "i2c_scl", "lens_pwm", "lens_step", "lens_dir", "lens_dac",
)
ACTUATORS = {"pwm": ("lens_pwm",), "stepdir": ("lens_step", "lens_dir"), "dac": ("lens_dac",)}
COUNTERS = {
    "micropython": ("encoder", "irq"),
    "circuitpython": ("rotaryio", "poll"),
    "blinka": ("poll",),
}
LINKS = {"micropython": "stdio", "micropython-unix": "stdio", "circuitpython": "usb_cdc_data", "blinka": "serial"}
POWER_MONITORS = ("ina219", "ina226")
# Every key a board file may have (docs/boards.md); a key starting with "_" is a comment. A
# misspelt key would otherwise leave a default in force: for the load switch, its polarity.
KEYS = (
    "schema", "name", "chip", "runtime", "match", "description", "entry", "features", "pins",
    "reserved_pins", "ring", "ring_switch", "hall", "vbus_sense", "adc", "load_switch", "i2c",
    "power_monitor", "temperature", "lens_actuator", "link", "watchdog_ms", "safe_mode", "flash",
    "storage", "repl_escape", "test_loopback",
)
_SECTION_KEYS = {
    "load_switch": ("active",),
    "ring_switch": ("active", "pull"),
    "safe_mode": ("after_crashes", "stable_ms", "state_file"),
    "repl_escape": ("pin", "active", "bootsel", "boot_wait_ms"),
}
TEMPERATURE_SENSORS = ("tmp117",)

_FLASH_RESERVED = "SPI flash / PSRAM bus"
_OPI = "octal PSRAM / flash bus (SPIIO4-7, DQS)"
CHIPS = {
    # ESP32-S3 (datasheet v1.x, 2.3 / 2.4): GPIO0-21 and 26-48 exist.
    "esp32s3": {
        "gpio": tuple(range(22)) + tuple(range(26, 49)),
        "reserved": {
            0: "a strapping pin (boot mode, the BOOT button)",
            3: "a strapping pin (JTAG source)",
            45: "a strapping pin (VDD_SPI voltage)",
            46: "a strapping pin (boot mode, ROM messages)",
            19: "USB D- (the native USB link)",
            20: "USB D+ (the native USB link)",
            26: _FLASH_RESERVED, 27: _FLASH_RESERVED, 28: _FLASH_RESERVED, 29: _FLASH_RESERVED,
            30: _FLASH_RESERVED, 31: _FLASH_RESERVED, 32: _FLASH_RESERVED,
            33: _OPI, 34: _OPI, 35: _OPI, 36: _OPI, 37: _OPI,
        },
        # ADC1 only: ADC2 (GPIO11-20) cannot be read while Wi-Fi runs.
        "adc": tuple(range(1, 11)),
        "adc_note": "ADC1 (GPIO1-10); ADC2 is unusable while Wi-Fi runs",
        "counters": ("encoder", "irq"),
        "watchdog_max_ms": 0,
    },
    # RP2040 (datasheet 1.4.3): GPIO0-29; ADC on GPIO26-29.
    "rp2040": {
        "gpio": tuple(range(30)),
        "reserved": {},
        "adc": (26, 27, 28, 29),
        "adc_note": "GPIO26-29",
        "counters": ("irq",),
        "watchdog_max_ms": 8388,  # the hardware watchdog's longest period
    },
}


class BoardError(Exception):
    """A board file that cannot be used; the message names the file, the role and the pin."""


class HardwareError(Exception):
    """A board file that is fine but hardware that did not answer (chip missing, wiring)."""


# ---- loading and checking ------------------------------------------------------------------


def load(path, text=None):
    """Read (unless ``text`` is given), parse and validate a board file; returns the dict.

    The dict gains ``_path`` (where it came from) and ``_warnings`` (list of strings).
    """
    if text is None:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise BoardError("%s: cannot read the board file (%s)" % (path, e))
    try:
        bd = json.loads(text)
    except ValueError as e:
        raise BoardError("%s: not valid JSON (%s)" % (path, e))
    validate(bd, path)
    return bd


def _fail(path, msg):
    raise BoardError("%s: %s" % (path, msg))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _name_ok(s):
    """A board pin name: letters, digits and '_', starting with a letter (``A0``, ``D5``, ``SDA``)."""
    if not isinstance(s, str) or not s:
        return False
    c0 = s[0]
    if not ("A" <= c0 <= "Z" or "a" <= c0 <= "z"):
        return False
    for c in s:
        if not ("A" <= c <= "Z" or "a" <= c <= "z" or "0" <= c <= "9" or c == "_"):
            return False
    return True


def _pin_text(v):
    return "GPIO %d" % v if _is_int(v) else repr(v)


def _section(bd, path, key):
    s = bd.get(key)
    if not isinstance(s, dict):
        _fail(path, "'%s' section missing or not an object" % key)
    return s


def _choice(path, where, value, allowed):
    if value not in allowed:
        _fail(path, "%s: %r is not one of %s" % (where, value, ", ".join(str(a) for a in allowed)))


def _int(path, where, value, lo=None, hi=None):
    if not _is_int(value):
        _fail(path, "%s: %r is not an integer" % (where, value))
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        _fail(path, "%s: %d is outside %s..%s" % (where, value, lo, hi))
    return value


def hex_int(value):
    """An address as a board file gives it: an integer (64) or a hex string ("0x40", as
    datasheets write it; JSON has no hex numbers). None if it is neither."""
    if _is_int(value):
        return value
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        try:
            return int(value[2:], 16)
        except ValueError:
            pass
    return None


def _hex(path, where, value):
    """Flash addresses are hex strings in JSON ("0x10000"); ints are accepted too."""
    a = hex_int(value)
    if a is None:
        _fail(path, "%s: %r is not a hex address like \"0x10000\"" % (where, value))
    return a


def _addr(path, where, value, lo, hi):
    a = hex_int(value)
    if a is None:
        _fail(path, "%s: %r is not an I2C address (64 or \"0x40\")" % (where, value))
    if not lo <= a <= hi:
        _fail(path, "%s: 0x%02x is outside 0x%02x..0x%02x" % (where, a, lo, hi))
    return a


def required_roles(bd):
    """{role: feature} for the features this board enables."""
    feats = bd.get("features", ())
    need = {}
    if "ring" in feats:
        need["ring_a"] = need["ring_b"] = "ring"
    if "ring_switch" in feats:
        need["ring_switch"] = "ring_switch"
    if "attach" in feats:
        need["hall"] = need["vbus_sense"] = "attach"
    if "rail" in feats:
        need["load_switch"] = "rail"
    for f in ("power_monitor", "temperature"):
        if f in feats:
            need["i2c_sda"] = need["i2c_scl"] = f
    if "lens" in feats:
        kind = (bd.get("lens_actuator") or {}).get("kind")
        for r in ACTUATORS.get(kind, ()):
            need[r] = "lens"
    return need


def validate(bd, path="board.json"):
    """Check a parsed board file; raise BoardError naming file, role and pin. Returns warnings."""
    if not isinstance(bd, dict):
        _fail(path, "a board file is a JSON object")
    if bd.get("schema") != SCHEMA:
        _fail(path, "'schema' must be %d (got %r)" % (SCHEMA, bd.get("schema")))
    for key in bd:
        if key not in KEYS and not (isinstance(key, str) and key[:1] == "_"):
            _fail(path, "'%s' is not a board file key (docs/boards.md; start a comment key with '_')" % key)
    for key, allowed in _SECTION_KEYS.items():
        s = bd.get(key)
        if s is None:
            continue
        if not isinstance(s, dict):
            _fail(path, "'%s' must be an object" % key)
        for k in s:
            if k not in allowed:
                _fail(path, "%s.%s is not a setting of '%s' (%s)" % (key, k, key, ", ".join(allowed)))
    st = bd.get("storage", "/")
    if not isinstance(st, str) or not st:
        _fail(path, "storage: the folder the module keeps its files in, e.g. \"/\" (got %r)" % (st,))
    for key in ("name", "chip"):
        if not isinstance(bd.get(key), str) or not bd[key]:
            _fail(path, "'%s' missing" % key)
    rt = bd.get("runtime")
    _choice(path, "runtime", rt, RUNTIMES)
    chip = None
    if rt == "micropython":
        _choice(path, "chip", bd["chip"], sorted(CHIPS))
        chip = CHIPS[bd["chip"]]
    if rt != "micropython-unix" and (not isinstance(bd.get("match"), str) or not bd["match"]):
        _fail(path, "'match' missing: the machine string boot matches this board by")
    feats = bd.get("features")
    if not isinstance(feats, list):
        _fail(path, "'features' must be a list (of %s)" % ", ".join(FEATURES))
    for f in feats:
        _choice(path, "features", f, FEATURES)
    for f in REQUIRED_FEATURES:
        if f not in feats:
            _fail(path, "features: '%s' is required (the app always uses it)" % f)
    warnings = []
    if rt != "micropython-unix":
        la = _section(bd, path, "lens_actuator")
        _choice(path, "lens_actuator.kind", la.get("kind"), sorted(ACTUATORS))
    pins = bd.get("pins")
    if not isinstance(pins, dict):
        _fail(path, "'pins' must be an object of role -> pin")
    if rt == "micropython-unix":
        _validate_sim(bd, path, pins)
    else:
        _validate_pins(bd, path, rt, chip, pins)
        _validate_sections(bd, path, rt, chip, pins, warnings)
        _validate_link(bd, path, rt)
        _validate_safety(bd, path, chip)
        _validate_flash(bd, path, rt)
    bd["_path"] = path
    bd["_warnings"] = warnings
    return warnings


def _validate_sim(bd, path, pins):
    for role, v in pins.items():
        if v != "virtual":
            _fail(path, "pins.%s: the simulator's pins are \"virtual\" (got %r)" % (role, v))
    if (bd.get("lens_actuator") or {}).get("kind", "virtual") != "virtual":
        _fail(path, "lens_actuator.kind: the simulator's actuator is \"virtual\"")


def _validate_pins(bd, path, rt, chip, pins):
    need = required_roles(bd)
    for role in pins:
        if role not in ROLES:
            _fail(path, "pins.%s: unknown role (roles: %s)" % (role, ", ".join(ROLES)))
        if role not in need:
            if role[:5] == "lens_" and "lens" in bd["features"]:
                _fail(path, "pins.%s: lens_actuator.kind \"%s\" does not use this pin"
                      % (role, bd["lens_actuator"]["kind"]))
            _fail(path, "pins.%s: no enabled feature uses this pin (features: %s)" % (role, ", ".join(bd["features"])))
    for role in ROLES:  # a stable order: the first role in ROLES keeps a shared pin
        if role in need and pins.get(role) is None:
            _fail(path, "pins.%s: missing (needed by feature '%s')" % (role, need[role]))
    seen = {}
    reserved = {}
    for item in bd.get("reserved_pins", ()):
        if not isinstance(item, list) or len(item) != 2 or not (_is_int(item[0]) or _name_ok(item[0])):
            _fail(path, "reserved_pins: each entry is [pin, reason]")
        reserved[item[0]] = item[1]
    for role in ROLES:
        if role not in pins:
            continue
        v = pins[role]
        where = "pins.%s" % role
        if rt == "micropython":
            if not _is_int(v):
                _fail(path, "%s: %r: MicroPython pins are GPIO numbers (e.g. 15)" % (where, v))
            if v not in chip["gpio"]:
                _fail(path, "%s: GPIO %d does not exist on %s" % (where, v, bd["chip"]))
            if v in chip["reserved"]:
                _fail(path, "%s: GPIO %d is %s on %s; pick another" % (where, v, chip["reserved"][v], bd["chip"]))
        elif not _name_ok(v):
            _fail(path, "%s: %r: %s pins are board pin names like \"D5\", \"A0\", \"SDA\"" % (where, v, rt))
        if v in reserved:
            _fail(path, "%s: %s is reserved on this board (%s)" % (where, _pin_text(v), reserved[v]))
        if v in seen:
            _fail(path, "%s: %s is already used by pins.%s" % (where, _pin_text(v), seen[v]))
        seen[v] = role


def _adc_pin(bd, path, chip, pins, role):
    v = pins[role]
    if chip is not None and v not in chip["adc"]:
        _fail(path, "pins.%s: GPIO %d cannot be an analog input on %s (ADC pins: %s)"
              % (role, v, bd["chip"], chip["adc_note"]))


def _active(path, where, s):
    a = s.get("active", "high")
    _choice(path, where + ".active", a, ("high", "low"))
    return a


def _pull(path, where, s):
    p = s.get("pull")
    _choice(path, where + ".pull", p, ("up", "down", None))
    return p


def _digital_or_adc(bd, path, chip, pins, key):
    """A section whose pin is a digital input (its active level and pull checked) or an analog
    one (an ADC-capable pin; the caller checks its thresholds); returns the section."""
    s = _section(bd, path, key)
    _choice(path, key + ".kind", s.get("kind"), ("digital", "adc"))
    if s["kind"] == "digital":
        _active(path, key, s)
        _pull(path, key, s)
    else:
        _adc_pin(bd, path, chip, pins, key)
    return s


def _validate_sections(bd, path, rt, chip, pins, warnings):
    feats = bd["features"]
    adc_used = False
    # Focus ring.
    ring = _section(bd, path, "ring")
    counter = ring.get("counter")
    allowed = chip["counters"] if chip is not None else COUNTERS[rt]
    _choice(path, "ring.counter", counter, allowed)
    _choice(path, "ring.divisor", ring.get("divisor", 1), (1, 2, 4))
    _choice(path, "ring.reverse", ring.get("reverse", False), (False, True))
    _pull(path, "ring", ring)
    if counter == "encoder":
        _int(path, "ring.unit", ring.get("unit", 0), 0, 7)
    if "ring_switch" in feats:
        sw = bd.get("ring_switch") or {}
        _active(path, "ring_switch", sw)
        _pull(path, "ring_switch", sw)
    # Attach: Hall sensor and VBUS sense.
    hall = _digital_or_adc(bd, path, chip, pins, "hall")
    if hall["kind"] == "adc":
        adc_used = True
        on = _int(path, "hall.on_mv", hall.get("on_mv"), 0, 5000)
        off = _int(path, "hall.off_mv", hall.get("off_mv"), 0, 5000)
        if on == off:
            _fail(path, "hall: on_mv and off_mv must differ (the gap is the hysteresis)")
    vb = _digital_or_adc(bd, path, chip, pins, "vbus_sense")
    if vb["kind"] == "adc":
        adc_used = True
        div = vb.get("divider")
        if not isinstance(div, list) or len(div) != 2 or not _is_int(div[0]) or not _is_int(div[1]) \
                or div[0] < 0 or div[1] <= 0:
            _fail(path, "vbus_sense.divider: [r_top_ohm, r_bottom_ohm] (VBUS -> top -> pin -> bottom -> GND)")
        present = _int(path, "vbus_sense.present_mv", vb.get("present_mv"), 1, 30000)
        absent = _int(path, "vbus_sense.absent_mv", vb.get("absent_mv"), 0, 30000)
        if absent >= present:
            _fail(path, "vbus_sense: absent_mv must be below present_mv")
    if adc_used:
        adc = _section(bd, path, "adc")
        _int(path, "adc.vref_mv", adc.get("vref_mv"), 500, 5000)
        if bd["chip"] == "esp32s3":
            _choice(path, "adc.atten", adc.get("atten", "11dB"), ("0dB", "2.5dB", "6dB", "11dB"))
    # Load switch: its polarity is never guessed (a wrong guess powers the sensor at boot).
    ls = _section(bd, path, "load_switch")
    if "active" not in ls:
        _fail(path, "load_switch.active: \"high\" or \"low\", the level that closes the switch (not guessed: "
                    "a wrong guess would power the sensor at boot)")
    _active(path, "load_switch", ls)
    # I2C and the chips on it.
    on_i2c = [f for f in ("power_monitor", "temperature") if f in feats]
    if on_i2c:
        i2c = _section(bd, path, "i2c")
        _int(path, "i2c.freq", i2c.get("freq", 400000), 10000, 1000000)
        if rt == "micropython":
            bus = _int(path, "i2c.id", i2c.get("id", 0), 0, 1)
            if bd["chip"] == "rp2040":
                sda, scl = pins["i2c_sda"], pins["i2c_scl"]
                if sda % 2 or (sda // 2) % 2 != bus:
                    _fail(path, "pins.i2c_sda: GPIO %d is not an SDA pin of I2C%d on rp2040" % (sda, bus))
                if scl % 2 != 1 or (scl // 2) % 2 != bus:
                    _fail(path, "pins.i2c_scl: GPIO %d is not an SCL pin of I2C%d on rp2040" % (scl, bus))
    addrs = {}
    if "power_monitor" in feats:
        pm = _section(bd, path, "power_monitor")
        _choice(path, "power_monitor.chip", pm.get("chip"), POWER_MONITORS)
        addrs[_addr(path, "power_monitor.addr", pm.get("addr"), 0x40, 0x4F)] = "power_monitor"
        _int(path, "power_monitor.shunt_mohm", pm.get("shunt_mohm"), 1, 10000)
        if "max_ma" in pm:
            _int(path, "power_monitor.max_ma", pm["max_ma"], 1, 100000)
    else:
        warnings.append("no power monitor: rail current is not measured (no over-current cut)")
        if vb["kind"] != "adc":
            _fail(path, "rail: nothing measures the VBUS voltage: enable 'power_monitor' or use an "
                        "\"adc\" vbus_sense (the rail must not close on an unknown voltage)")
    if "temperature" in feats:
        ts = _section(bd, path, "temperature")
        _choice(path, "temperature.chip", ts.get("chip"), TEMPERATURE_SENSORS)
        a = _addr(path, "temperature.addr", ts.get("addr"), 0x48, 0x4B)
        if a in addrs:
            _fail(path, "temperature.addr: 0x%02x is already the %s's address" % (a, addrs[a]))
    else:
        warnings.append("no temperature sensor: read_temp_mc() is a constant 25 C (no over-temperature cut)")
    # Lens actuator.
    la = _section(bd, path, "lens_actuator")
    _choice(path, "lens_actuator.kind", la.get("kind"), sorted(ACTUATORS))
    opts = la.get("options", {})
    if not isinstance(opts, dict):
        _fail(path, "lens_actuator.options must be an object (keyword arguments of the actuator)")
    if la["kind"] in ("pwm", "dac"):
        lo = _int(path, "lens_actuator.lo", la.get("lo"))
        hi = _int(path, "lens_actuator.hi", la.get("hi"))
        if lo >= hi:
            _fail(path, "lens_actuator: lo must be below hi (the lens positions mapped onto the output)")
    if la["kind"] == "pwm":
        _int(path, "lens_actuator.freq", la.get("freq"), 1, 40000000)
    if la["kind"] == "dac" and chip is not None:
        _fail(path, "lens_actuator.kind: %s has no DAC; use \"pwm\" (with an RC filter) or \"stepdir\"" % bd["chip"])


def _validate_link(bd, path, rt):
    link = _section(bd, path, "link")
    _choice(path, "link.kind", link.get("kind"), (LINKS[rt],))
    if rt == "blinka":
        if not isinstance(link.get("port"), str):
            _fail(path, "link.port: the serial device the host is on (e.g. \"/dev/ttyGS0\")")
        _int(path, "link.baud", link.get("baud", 115200), 300, 12000000)


def _validate_safety(bd, path, chip):
    wd = _int(path, "watchdog_ms", bd.get("watchdog_ms", 5000), 0, 600000)
    top = chip["watchdog_max_ms"] if chip is not None else 0
    if top and wd > top:
        _fail(path, "watchdog_ms: %d is above this chip's longest watchdog period (%d ms)" % (wd, top))
    sm = bd.get("safe_mode", {})
    if not isinstance(sm, dict):
        _fail(path, "safe_mode must be an object")
    _int(path, "safe_mode.after_crashes", sm.get("after_crashes", 3), 1, 100)
    stable = _int(path, "safe_mode.stable_ms", sm.get("stable_ms", 30000), 1000, 3600000)
    if wd and stable <= wd:
        _fail(path, "safe_mode.stable_ms must be longer than watchdog_ms (a hung loop must reset first)")
    sf = sm.get("state_file", "/magcam_boot.json")
    if not isinstance(sf, str) or not sf:
        _fail(path, "safe_mode.state_file must be a path")
    esc = bd.get("repl_escape") or {}
    if "pin" in esc:
        v = esc["pin"]
        if not _is_int(v) or (chip is not None and v not in chip["gpio"]):
            _fail(path, "repl_escape.pin: %r is not a GPIO of %s" % (v, bd["chip"]))
    if "active" in esc:
        _active(path, "repl_escape", esc)
    _choice(path, "repl_escape.bootsel", esc.get("bootsel", False), (False, True))
    _int(path, "repl_escape.boot_wait_ms", esc.get("boot_wait_ms", 0), 0, 60000)


def _validate_flash(bd, path, rt):
    fl = bd.get("flash")
    if fl is None:
        if rt == "micropython":
            _fail(path, "flash: a MicroPython board describes its flash layout (the vfs region at least)")
        return
    if not isinstance(fl, dict):
        _fail(path, "flash must be an object or null")
    size = _hex(path, "flash.size", fl.get("size"))
    regions = fl.get("regions")
    if not isinstance(regions, list) or not regions:
        _fail(path, "flash.regions: a list of {name, offset, size}")
    end = 0
    names = []
    for i, r in enumerate(regions):
        where = "flash.regions[%d]" % i
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            _fail(path, where + ": {name, offset, size}")
        off = _hex(path, where + ".offset", r.get("offset"))
        n = _hex(path, where + ".size", r.get("size"))
        if n == 0:
            _fail(path, "%s (%s): size 0" % (where, r["name"]))
        if off < end:
            _fail(path, "%s (%s): starts at 0x%x, inside the region before it (ends 0x%x)" % (where, r["name"], off, end))
        end = off + n
        if end > size:
            _fail(path, "%s (%s): ends at 0x%x, past the flash size 0x%x" % (where, r["name"], end, size))
        names.append(r["name"])
    if rt == "micropython" and "vfs" not in names:
        _fail(path, "flash.regions: no \"vfs\" region (MicroPython's filesystem)")


def flash_region(bd, name):
    """(offset, size) of a named flash region as ints, or None."""
    fl = bd.get("flash") or {}
    for r in fl.get("regions", ()):
        if r.get("name") == name:
            return _hex("", name, r["offset"]), _hex("", name, r["size"])
    return None


# ---- which board -----------------------------------------------------------------------------


def check_fits(bd, path, rt, machine, advice):
    """``bd`` if the board file at ``path`` is for runtime ``rt`` and its ``match`` occurs in
    ``machine`` (None: not checked), else BoardError ending in ``advice``. Another board's pin
    map would drive this one's pins (a flash pin as VBUS sense, the load switch wrong). Boot
    applies it to /board.json, ``magcam deploy`` to the board it is about to install."""
    if bd["runtime"] != rt:
        raise BoardError("%s is a %s board file (%s), but this device runs %s: %s"
                         % (path, bd["runtime"], bd["name"], rt, advice))
    m = bd.get("match")
    if m and machine is not None and m not in machine:
        raise BoardError("%s is for %r (match %r), not this machine (%r): %s, or fix 'match' if this is the "
                         "right one" % (path, bd["name"], m, machine, advice))
    return bd


def pick_board(candidates, machine, rt):
    """The (path, board) among ``candidates`` ([(path, dict)]) for this machine string and runtime.

    Boards for another runtime are ignored; of those whose ``match`` occurs in ``machine`` the
    longest match wins. No match, or two of the same length, raise BoardError.
    """
    best = None
    tie = None
    names = []
    for path, bd in candidates:
        if bd.get("runtime") != rt:
            continue
        m = bd.get("match") or ""
        names.append("%s (match %r)" % (path, m))
        if not m or m not in machine:
            continue
        if best is None or len(m) > len(best[1]["match"]):
            best, tie = (path, bd), None
        elif len(m) == len(best[1]["match"]):
            tie = path
    if best is None:
        raise BoardError(
            "no board file matches this device (runtime %s, machine %r); put one at /board.json or "
            "fix a 'match' string. Candidates: %s" % (rt, machine, ", ".join(names) if names else "none")
        )
    if tie is not None:
        raise BoardError("%s and %s both match machine %r equally well; keep one or put the right one at /board.json"
                         % (best[0], tie, machine))
    return best


def runtime():
    """Which runtime this is: one of RUNTIMES."""
    import sys

    name = sys.implementation.name
    if name == "circuitpython":
        return "circuitpython"
    if name == "micropython":
        return "micropython-unix" if sys.platform in ("linux", "darwin", "win32") else "micropython"
    return "blinka"


def machine_name(rt=None):
    """The string board files' ``match`` is looked for in."""
    import sys

    rt = rt or runtime()
    if rt in ("micropython", "micropython-unix"):
        return getattr(sys.implementation, "_machine", sys.platform)
    if rt == "circuitpython":
        import os

        return os.uname().machine
    try:
        with open("/proc/device-tree/model") as f:
            return f.read().rstrip("\x00\n")
    except OSError:
        import platform

        return platform.machine()


# ---- pieces both HALs build from a board file ------------------------------------------------


class Level:
    """A digital input read as 1 = active (``active_low`` inverts): Pin-like ``value()``."""

    def __init__(self, read, active_low=False):
        self._read = read  # zero-argument callable: the raw level (bool or 0/1)
        self._low = active_low

    def value(self):
        v = 1 if self._read() else 0
        return 1 - v if self._low else v


class Output:
    """A digital output driven as on/off through its active level."""

    def __init__(self, write, active_low=False):
        self._write = write  # one-argument callable: the raw level 0/1
        self._low = active_low
        self.on = False
        self(False)

    def __call__(self, on):
        on = bool(on)
        self.on = on
        self._write((0 if on else 1) if self._low else (1 if on else 0))


class AnalogThreshold:
    """Pin-like ``value()`` 1/0 from a reading in mV, with hysteresis.

    ``on_mv > off_mv``: 1 at or above on_mv, 0 at or below off_mv, unchanged between.
    ``on_mv < off_mv``: the mirror image (active when the voltage falls: a south pole lowering
    a ratiometric Hall sensor's output, say). The last reading is kept in ``mv``.
    """

    def __init__(self, read_mv, on_mv, off_mv):
        if on_mv == off_mv:
            raise ValueError("on_mv and off_mv must differ")
        self._read = read_mv
        self._on = on_mv
        self._off = off_mv
        self._rising = on_mv > off_mv
        self.mv = 0
        self._state = 0
        self.value()

    def value(self):
        mv = self._read()
        self.mv = mv
        if self._rising:
            if mv >= self._on:
                self._state = 1
            elif mv <= self._off:
                self._state = 0
        elif mv <= self._on:
            self._state = 1
        elif mv >= self._off:
            self._state = 0
        return self._state


def divider_mv(pin_mv, r_top, r_bottom):
    """The voltage above a resistor divider from the voltage at its tap (integer mV)."""
    return pin_mv * (r_top + r_bottom) // r_bottom


class PolledPin:
    """Pin-like input for runtimes without pin interrupts (CircuitPython, Blinka).

    ``value()`` is the level at the last ``sample()`` (so a decoder's handler sees the same
    levels the poll saw); ``irq(handler=...)`` stores the handler ``poll_pins`` calls.
    """

    def __init__(self, read):
        self._read = read
        self._level = 1 if read() else 0
        self.handler = None

    def value(self, v=None):
        return self._level

    def irq(self, handler=None, trigger=3):
        self.handler = handler

    def sample(self):
        v = 1 if self._read() else 0
        changed = v != self._level
        self._level = v
        return changed


def poll_pins(a, b):
    """Sample both pins, then call the handler once if either changed; True if one did.

    Both changed in one poll is a missed edge: the quadrature decoder counts it as a glitch.
    """
    ca = a.sample()
    cb = b.sample()
    if ca or cb:
        h = a.handler or b.handler
        if h is not None:
            h(a if ca else b)
        return True
    return False


class Inert:
    """A Pin-like that never changes (ring pins owned by a hardware counter, safe mode)."""

    def __init__(self, level=0):
        self._v = level

    def value(self, v=None):
        return self._v

    def irq(self, handler=None, trigger=3):
        pass


class BusGuard:
    """A bus reading that survives a few failed transfers, then fails safe.

    ``guard()`` returns ``read()``; on OSError it returns the last good value for up to
    ``limit - 1`` failures in a row, then (and when there never was a good one) ``failsafe``:
    readings that make the rail open (0 mV: under-voltage; 125 C: over-temperature).
    ``errors`` counts every failure, ``last_error`` keeps the latest.
    """

    def __init__(self, read, failsafe, limit=10):
        self._read = read
        self.failsafe = failsafe
        self._limit = limit
        self._last = None
        self._fails = 0
        self.errors = 0
        self.last_error = None

    def __call__(self):
        try:
            v = self._read()
        except OSError as e:
            self.errors += 1
            self._fails += 1
            self.last_error = e
            if self._last is None or self._fails >= self._limit:
                return self.failsafe
            return self._last
        self._fails = 0
        self._last = v
        return v


class Tmp117:
    """TI TMP117 temperature sensor (I2C, 0x48-0x4B): m°C from the temperature register.

    The bus has MicroPython's ``machine.I2C`` memory methods (on CircuitPython and Blinka the
    HAL wraps ``busio.I2C``). Registers: 0x00 temperature (signed, 7.8125 m°C per LSB), 0x01
    configuration (bit 13 Data_Ready), 0x0F device id (bits 11..0 = 0x117). The power-on
    configuration (continuous, 8 averages, a reading per second) is kept.
    """

    REG_TEMP = const(0x00)
    REG_CONFIG = const(0x01)
    REG_ID = const(0x0F)

    def __init__(self, i2c, addr=0x48):
        self._i2c = i2c
        self.addr = addr
        self._buf = bytearray(2)
        did = self._read(self.REG_ID)
        if did & 0x0FFF != 0x117:
            raise OSError("TMP117 at 0x%02x: device id 0x%04x, want 0x.117: not a TMP117" % (addr, did))

    def _read(self, reg):
        try:
            self._i2c.readfrom_mem_into(self.addr, reg, self._buf)
        except OSError as e:
            raise OSError("TMP117 at 0x%02x: reading register 0x%02x failed: I2C error %s (wiring? address?)"
                          % (self.addr, reg, e))
        return (self._buf[0] << 8) | self._buf[1]

    def ready(self):
        """A conversion is waiting (reading the configuration clears the flag)."""
        return bool(self._read(self.REG_CONFIG) & 0x2000)

    def wait_ready(self, sleep_ms, timeout_ms=300):
        """At power-up the register reads -256 C until the first conversion: wait for it."""
        t = 0
        while not self.ready():
            if t >= timeout_ms:
                raise OSError("TMP117 at 0x%02x: no conversion within %d ms" % (self.addr, timeout_ms))
            sleep_ms(5)
            t += 5

    def read_mc(self):
        raw = self._read(self.REG_TEMP)
        if raw & 0x8000:
            raw -= 0x10000
        return raw * 78125 // 10000


def make_power_monitor(bd, i2c):
    """The configured INA219/INA226 driver on ``i2c`` (machine.I2C memory API); HardwareError
    (naming the chip and address) if it does not answer."""
    from magcam_fw import ina2xx

    pm = bd["power_monitor"]
    cls = ina2xx.INA219 if pm["chip"] == "ina219" else ina2xx.INA226
    kw = {"addr": hex_int(pm["addr"]), "shunt_mohm": pm["shunt_mohm"]}
    if "max_ma" in pm:
        kw["max_ma"] = pm["max_ma"]
    dev = cls(i2c, **kw)
    try:
        dev.configure()
    except OSError as e:
        raise HardwareError("%s: power_monitor: %s" % (bd.get("_path", "board.json"), e))
    return dev


def make_temperature(bd, i2c, sleep):
    """The TMP117 on ``i2c``, after its first conversion; HardwareError if it does not answer."""
    ts = bd["temperature"]
    try:
        dev = Tmp117(i2c, hex_int(ts["addr"]))
        dev.wait_ready(sleep)
    except OSError as e:
        raise HardwareError("%s: temperature: %s" % (bd.get("_path", "board.json"), e))
    return dev
