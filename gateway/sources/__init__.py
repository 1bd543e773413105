"""Signal sources. Every source produces only Samples; nothing downstream knows the protocol.

Protocol modules (opcua, modbus, mqtt) are imported lazily by `build_source`, so a gateway without an OPC UA
source never imports asyncua.
"""

from gateway.core.ports import Source
from gateway.core.samples import LinkState, Quality, Sample, SourceStats

__all__ = ["LinkState", "Quality", "Sample", "Source", "SourceStats"]
