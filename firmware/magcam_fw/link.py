"""Device side of the link: one encoder, one decoder, sequence numbers and statistics.

The transport is passed in: any object with ``read_into(buf) -> n`` (non-blocking, 0 when
nothing is waiting, -1 at end of stream) and ``write(view)``.

Usage::

    link = Link(StdioTransport())
    link.send(protocol.EV_LOG, (ticks_ms(), 1), "hello")
    link.poll(on_command)        # on_command(mtype, seq, payload_view)
"""

from magcam_fw import protocol
from magcam_fw.compat import const

_RX_BUF = const(512)


class Link:
    def __init__(self, transport, chunk_size=protocol.CHUNK_SIZE, max_payload=0):
        self._t = transport
        self.chunk_size = chunk_size
        # A chunk's payload is its data plus frame id and offset.
        self.max_payload = max(max_payload, chunk_size + 8)
        self._enc = protocol.Encoder(self.max_payload)
        self.rx_max_payload = 1024  # host -> device messages are small
        self._dec = protocol.Decoder(self.rx_max_payload)
        self._rx = bytearray(_RX_BUF)
        self._seq = 0
        self.tx_frames = 0
        self.tx_dropped = 0
        self.closed = False

    def send(self, mtype, values=(), tail=None):
        self._seq = (self._seq + 1) & 0xFFFF
        self.write(self._enc.encode(mtype, self._seq, values, tail))

    def encode(self, mtype, values=(), tail=None):
        """Encoded bytes kept as a copy (for replies resent on a retried command)."""
        self._seq = (self._seq + 1) & 0xFFFF
        return bytes(self._enc.encode(mtype, self._seq, values, tail))

    def write(self, wire):
        try:
            self._t.write(wire)
            self.tx_frames += 1
        except OSError:
            self.tx_dropped += 1

    def poll(self, callback):
        """Read whatever has arrived and dispatch complete messages; False at end of stream."""
        n = self._t.read_into(self._rx)
        if n < 0:
            self.closed = True
            return False
        if n:
            self._dec.feed(self._rx, callback, n)
        return True

    def stats(self, t):
        d = self._dec
        return (t, d.frames, d.crc_errors, d.framing_errors, d.overflows, d.version_errors, self.tx_frames,
                self.tx_dropped)
