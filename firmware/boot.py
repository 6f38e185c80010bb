"""magcam: runs before main.py at every boot.

CircuitPython: the protocol needs its own USB serial port, so that the REPL keeps the console
port: ``usb_cdc.enable(console=True, data=True)`` (only allowed here, in boot.py). The host
then sees two ports; the link is the second one (``usb_cdc.data``, "CircuitPython CDC2").

MicroPython: nothing to do (the link is the REPL's own USB CDC port; see main.py for how to
stay in the REPL). The file is harmless there: ``usb_cdc`` does not exist.

Usage: copy it to the device as ``/boot.py`` beside ``/main.py``; hard-reset to apply.
"""

try:
    import usb_cdc
except ImportError:
    usb_cdc = None

if usb_cdc is not None:
    usb_cdc.enable(console=True, data=True)
