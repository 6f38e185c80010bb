"""magcam host toolkit: talk to the clip-on camera module, capture RAW, write DNG."""

from magcam_fw import FIRMWARE_VERSION
from magcam_fw.protocol import VERSION as PROTOCOL_VERSION

from .camera import Camera, connect
from .discovery import PortError
from .frame import RawFrame
from .link import CommandRejected, CommandTimeout, FrameError, LinkClosed, LinkError

__version__ = "0.1.0"
__all__ = [
    "Camera", "connect", "RawFrame", "LinkError", "LinkClosed", "CommandTimeout", "CommandRejected", "FrameError",
    "PortError", "FIRMWARE_VERSION", "PROTOCOL_VERSION", "__version__",
]
