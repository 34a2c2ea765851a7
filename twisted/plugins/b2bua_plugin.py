"""twistd drop-in: ``twistd -n b2bua [--config FILE]``."""

from twisted.application.service import ServiceMaker

b2bua = ServiceMaker(
    "b2bua",
    "b2bua.tap",
    "Carrier-grade SIP B2BUA: hosted PBX, SIP trunking, calling cards",
    "b2bua",
)
