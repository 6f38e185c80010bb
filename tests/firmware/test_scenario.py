"""The scenario player on the sim HAL: parsing, turns with bounce at real rates, glitches,
and the other stimuli. Every time is an explicit ``now`` in ms: nothing sleeps."""

from _util import raises
from magcam_fw.encoder import QuadratureDecoder
from magcam_fw.hal_sim import SimHal
from magcam_fw.scenario import Player, parse


SCRIPT = """
# a comment, then blank lines

{"t": 500, "do": "detach"}
{"t": 0, "do": "turn", "steps": 200, "rate": 1000}
   {"t": 900, "do": "attach"}
{"t": 1000, "do": "load", "ma": 1800}
{"do": "temp", "c": 72.5, "t": 1500}
{"t": 1200, "do": "vbus", "mv": 4300}
"""


def test_parse_good_lines_sorted():
    evs = parse(SCRIPT)
    assert [e["do"] for e in evs] == ["turn", "detach", "attach", "load", "vbus", "temp"]
    assert [e.get("t", 0) for e in evs] == [0, 500, 900, 1000, 1200, 1500]
    assert evs[0] == {"t": 0, "do": "turn", "steps": 200, "rate": 1000}
    assert parse("") == [] and parse("# nothing\n\n") == []
    assert parse('{"do": "attach"}') == [{"do": "attach"}]  # t defaults to 0


def test_parse_keeps_file_order_at_equal_times():
    # Same-time stimuli must apply in the order written (detach then attach = a re-plug).
    kinds = ["detach", "attach", "load", "temp", "vbus", "detach", "attach", "turn"]
    lines = []
    for k in kinds:
        extra = {"load": ', "ma": 1', "temp": ', "c": 1', "vbus": ', "mv": 1', "turn": ', "steps": 1, "rate": 1'}
        lines.append('{"t": 5, "do": "%s"%s}' % (k, extra.get(k, "")))
    lines.append('{"t": 0, "do": "attach"}')
    got = [e["do"] for e in parse("\n".join(lines))]
    assert got == ["attach"] + kinds, got


def test_parse_bad_lines_raise_value_error_naming_the_line():
    bad = [
        '{"t": 0, "do": "turn", "steps": 10',  # not JSON
        "[1, 2]",  # not an object
        '"attach"',
        '{"t": 0}',  # no "do"
        '{"t": 0, "do": "explode"}',
        '{"t": 1.5, "do": "attach"}',  # t not an integer
        '{"t": "0", "do": "attach"}',
        '{"t": 0, "do": "turn", "rate": 100}',  # steps missing
        '{"t": 0, "do": "turn", "steps": 1.5, "rate": 100}',
        '{"t": 0, "do": "turn", "steps": 10}',  # rate missing
        '{"t": 0, "do": "turn", "steps": 10, "rate": 0}',
        '{"t": 0, "do": "turn", "steps": 10, "rate": 1000001}',
        '{"t": true, "do": "detach"}',  # a bool is not a time (CPython took it for 1)
        '{"t": -100, "do": "attach"}',  # before the start
        '{"t": 0, "do": "turn", "steps": true, "rate": 100}',
    ]
    for line in bad:
        text = '# header\n{"t": 0, "do": "attach"}\n\n' + line + '\n{"t": 9, "do": "detach"}'
        e = raises(ValueError, parse, text)
        assert "line 4" in str(e), (line, str(e))


def test_parse_rejects_bad_stimulus_fields():
    bad = [
        '{"t": 0, "do": "turn", "steps": 10, "rate": "fast"}',  # TypeError in parse today
        '{"t": 0, "do": "load"}',  # KeyError later, in Player.step
        '{"t": 0, "do": "load", "ma": "lots"}',
        '{"t": 0, "do": "temp"}',
        '{"t": 0, "do": "temp", "c": null}',
        '{"t": 0, "do": "vbus"}',
        # Fields a kind does not take: a typo was ignored, and the stimulus ran without it.
        '{"t": 0, "do": "load", "mA": 1800}',
        '{"t": 0, "do": "load", "ma": 1800, "mv": 5000}',
        '{"t": 0, "do": "turn", "steps": 10, "rate": 50, "bounse": 2}',
        '{"t": 0, "do": "detach", "ma": 0}',
        '{"t": 0, "do": "detach", "only": "hall"}',
        '{"t": 0, "do": "attach", "only": 1}',
    ]
    for line in bad:
        try:
            Player(parse('{"t": 0, "do": "attach"}\n' + line)).step(SimHal(), 10)
        except ValueError as e:
            assert "line 2" in str(e), (line, str(e))
        else:
            raise AssertionError("accepted: " + line)


def _sim(script):
    hal = SimHal()
    enc = QuadratureDecoder(hal.ring_a, hal.ring_b)
    enc.attach()
    return hal, enc, Player(parse(script))


def test_player_turn_exact_counts_at_rate():
    hal, enc, player = _sim('{"t": 100, "do": "turn", "steps": 200, "rate": 1000}')
    player.step(hal, 99)
    assert enc.value() == 0
    player.step(hal, 100)
    assert enc.value() == 0
    player.step(hal, 150)
    assert enc.value() == 50  # 1000 transitions/s for 50 ms
    player.step(hal, 151)
    assert enc.value() == 51
    player.step(hal, 250)
    assert enc.value() == 150
    player.step(hal, 5000)
    assert enc.value() == 200 and enc.glitches == 0
    player.step(hal, 6000)
    assert enc.value() == 200


def test_player_slow_turn_and_negative_steps():
    hal, enc, player = _sim('{"t": 0, "do": "turn", "steps": -7, "rate": 10}')
    for now, want in ((0, 0), (99, 0), (100, -1), (350, -3), (699, -6), (700, -7), (2000, -7)):
        player.step(hal, now)
        assert enc.value() == want, (now, enc.value())
    assert enc.glitches == 0


def test_player_turns_back_and_forth_and_overlapping():
    script = "\n".join(
        [
            '{"t": 0, "do": "turn", "steps": 1000, "rate": 100000}',
            '{"t": 100, "do": "turn", "steps": -400, "rate": 4000}',
            '{"t": 100, "do": "turn", "steps": 30, "rate": 1000}',
        ]
    )
    hal, enc, player = _sim(script)
    player.step(hal, 50)
    assert enc.value() == 1000
    player.step(hal, 150)  # -200 and +30 so far
    assert enc.value() == 1000 - 200 + 30
    player.step(hal, 10000)
    assert enc.value() == 1000 - 400 + 30 and enc.glitches == 0
    assert player.done is False  # never started by a host connection
    player.start()
    assert player.done is True


def test_player_moves_only_the_magnet_or_only_vbus():
    script = "\n".join(
        [
            '{"t": 10, "do": "detach", "only": "magnet"}',  # a weak magnet: VBUS stays
            '{"t": 20, "do": "attach", "only": "magnet"}',
            '{"t": 30, "do": "detach", "only": "vbus"}',  # the phone stops its reverse charging
            '{"t": 40, "do": "attach"}',
        ]
    )
    hal, _, player = _sim(script)
    seen = []
    for t in (10, 20, 30, 40):
        player.step(hal, t)
        seen.append((hal.hall.value(), hal.vbus.value()))
    assert seen == [(0, 1), (1, 1), (1, 0), (1, 1)], seen


def test_player_detach_attach_load_temp_vbus():
    script = "\n".join(
        [
            '{"t": 10, "do": "detach"}',
            '{"t": 20, "do": "attach"}',
            '{"t": 30, "do": "load", "ma": 1800}',
            '{"t": 40, "do": "temp", "c": 72.5}',
            '{"t": 50, "do": "vbus", "mv": 4300}',
        ]
    )
    hal, _, player = _sim(script)
    hal.set_rail(True)
    assert (hal.hall.value(), hal.vbus.value()) == (1, 1)
    assert hal.read_power() == (5000 - 250 * 150 // 1000, 250)
    player.step(hal, 10)
    assert (hal.hall.value(), hal.vbus.value()) == (0, 0)
    assert hal.read_power() == (0, 0)  # no VBUS: no voltage, no current
    player.step(hal, 20)
    assert (hal.hall.value(), hal.vbus.value()) == (1, 1)
    player.step(hal, 30)
    assert hal.load_ma == 1800 and hal.read_power() == (5000 - 270, 1800)
    player.step(hal, 40)
    assert hal.read_temp_mc() == 72500
    player.step(hal, 50)
    assert hal.vbus_mv == 4300 and hal.read_power() == (4300 - 270, 1800)
    hal.set_rail(False)
    assert hal.read_power() == (4300, 0)


# ---------------------------------------------------------------------------------- ring realism


def _expected(turns, now):
    """Net transitions due by `now` for (t, steps, rate) turns: what the decoder must read."""
    total = 0
    for t, steps, rate in turns:
        if now >= t:
            n = min(abs(steps), (now - t) * rate // 1000)
            total += n if steps > 0 else -n
    return total


def test_player_exact_counts_at_50_1000_10000_with_bounce_and_reversals():
    for rate in (50, 1000, 10000):
        turns = [(0, rate, rate), (500, -(rate // 2), rate), (700, rate // 5, rate), (1000, -(3 * rate // 4), rate)]
        lines = []
        for i in range(len(turns)):
            t, steps, r = turns[i]
            lines.append('{"t": %d, "do": "turn", "steps": %d, "rate": %d, "bounce": %d}' % (t, steps, r, i + 1))
        hal, enc, player = _sim("\n".join(lines))
        edges = [0]

        def count_edges(_pin, isr=enc._isr, edges=edges):  # every line change reaches the IRQ
            edges[0] += 1
            isr(_pin)

        hal.ring_a.irq(handler=count_edges)
        hal.ring_b.irq(handler=count_edges)
        for now in range(0, 2100, 3):
            player.step(hal, now)
            assert enc.value() == _expected(turns, now), (rate, now, enc.value(), _expected(turns, now))
        assert enc.glitches == 0
        want = rate - rate // 2 + rate // 5 - 3 * rate // 4
        assert enc.value() == want and enc.raw() == want
        moved = rate + rate // 2 + rate // 5 + 3 * rate // 4
        bounced = 2 * (rate * 1 + rate // 2 * 2 + rate // 5 * 3 + 3 * rate // 4 * 4)
        assert edges[0] == moved + bounced, (rate, edges[0], moved + bounced)


def test_player_bounce_with_detent_divisor():
    hal = SimHal()
    enc = QuadratureDecoder(hal.ring_a, hal.ring_b, divisor=4)
    enc.attach()
    player = Player(parse('{"t": 0, "do": "turn", "steps": 400, "rate": 1000, "bounce": 5}'))
    last = 0
    for now in range(0, 500):
        player.step(hal, now)
        v = enc.value()
        assert v == last or v == last + 1, (now, last, v)  # never back, never a jump of two
        last = v
    assert enc.value() == 100 and enc.raw() == 400 and enc.glitches == 0


def test_player_glitch_rejected_and_counted():
    script = "\n".join(
        [
            '{"t": 0, "do": "turn", "steps": 6, "rate": 1000}',
            '{"t": 20, "do": "glitch", "n": 10}',
            '{"t": 30, "do": "turn", "steps": -3, "rate": 1000}',
            '{"t": 40, "do": "glitch", "n": 1}',
        ]
    )
    hal, enc, player = _sim(script)
    player.step(hal, 10)
    state = (hal.ring_a.value(), hal.ring_b.value())
    assert enc.value() == 6 and enc.glitches == 0
    player.step(hal, 20)
    assert enc.value() == 6 and enc.glitches == 20  # rejected, counted: out and back, 10 times
    assert (hal.ring_a.value(), hal.ring_b.value()) == state  # each glitch nets back to the start
    player.step(hal, 100)
    assert enc.value() == 3 and enc.glitches == 22


def test_parse_ring_fields():
    evs = parse('{"t": 0, "do": "turn", "steps": 5, "rate": 50, "bounce": 3}\n{"t": 1, "do": "glitch", "n": 5}')
    assert evs[0]["bounce"] == 3 and evs[1] == {"t": 1, "do": "glitch", "n": 5}
    bad = [
        '{"t": 0, "do": "turn", "steps": 5, "rate": 50, "bounce": -1}',
        '{"t": 0, "do": "turn", "steps": 5, "rate": 50, "bounce": 1.5}',
        '{"t": 0, "do": "turn", "steps": 5, "rate": 50, "bounce": "yes"}',
        '{"t": 0, "do": "turn", "steps": 5, "rate": 50, "bounce": true}',
        '{"t": 0, "do": "turn", "steps": 5, "rate": 50, "bounce": 101}',
        '{"t": 0, "do": "glitch"}',
        '{"t": 0, "do": "glitch", "n": 0}',
        '{"t": 0, "do": "glitch", "n": 2.0}',
        '{"t": 0, "do": "glitch", "n": 10001}',
        '{"t": 0, "do": "glitch", "n": true}',
    ]
    for line in bad:
        e = raises(ValueError, parse, '{"t": 0, "do": "attach"}\n\n' + line)
        assert "line 3" in str(e), (line, str(e))


def test_player_does_not_rebuild_turns_while_they_run():
    hal, enc, player = _sim('{"t": 0, "do": "turn", "steps": 100, "rate": 1000}')
    player.step(hal, 1)
    turns = player._turns
    for now in range(2, 99):
        player.step(hal, now)
        assert player._turns is turns  # no new list per step: no garbage on every 1 ms
    player.step(hal, 100)
    assert player._turns == [] and enc.value() == 100
