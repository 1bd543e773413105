"""A simulated PLC in its own process, so that campaigns can SIGKILL and SIGSTOP it.

python -m torture.plc_proc modbus PORT [UNITS]  # the press on unit 1 (or on each of UNITS, e.g. 1,2):
                                                # strokes 0, temp 95.0 (holding 2, float32)
python -m torture.plc_proc opcua PORT    # the OPC UA press, values fixed (Temperature 70.0)
"""

from __future__ import annotations

import asyncio
import sys

from gateway.sim.plc import run_modbus_press, run_opcua_press
from gateway.sources import codec


async def main(kind: str, port: int, units: tuple[int, ...] = (1,)) -> None:
    if kind == "modbus":
        async with run_modbus_press(port=port, simulate=False, units=units) as plc:
            for unit in units:
                await plc.set_holding(2, codec.encode(95.0, "float32"), unit=unit)
            print("ready", flush=True)
            await asyncio.Event().wait()
    else:
        async with run_opcua_press(port=port, simulate=False):
            print("ready", flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    units = tuple(int(u) for u in sys.argv[3].split(",")) if len(sys.argv) > 3 else (1,)
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), units))
