"""magcam module firmware: portable core (no `machine`/`board` imports) plus per-runtime HALs."""

FIRMWARE_VERSION = "0.1.0"
