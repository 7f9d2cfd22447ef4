"""A minimal central system written with the `ocpp` package: the library's documented server example (one
`ChargePoint` per connection, routes declared with `@on`, `websockets.serve` with the OCPP subprotocols), for both
OCPP 1.6 and 2.0.1, chosen by the subprotocol the charge point asked for. It self-tests the charge point of
charge_point.py and is the Python baseline of the OCPP benchmark; it is deliberately left as plain as the example.

    central_system.py [--host 127.0.0.1] [--port 0] [--log-level INFO]

Prints {"event":"listening","port":N} on stdout once it accepts connections (port 0: a free port). No authentication:
any charge point id in the path is welcome.
"""

import argparse
import asyncio
import itertools
import json
import logging
import sys
from datetime import datetime, timezone

import websockets

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201

# StartTransaction's transactionId, increasing across all connections.
transaction_ids = itertools.count(1)


def now():
    return datetime.now(timezone.utc).isoformat()


class CentralSystem16(ChargePoint16):
    @on("BootNotification")
    def on_boot_notification(self, charge_point_vendor, charge_point_model, **kwargs):
        return result16.BootNotification(current_time=now(), interval=60, status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self, **kwargs):
        return result16.Heartbeat(current_time=now())

    @on("StatusNotification")
    def on_status_notification(self, connector_id, error_code, status, **kwargs):
        return result16.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_tag, **kwargs):
        return result16.Authorize(id_tag_info={"status": "Accepted"})

    @on("StartTransaction")
    def on_start_transaction(self, connector_id, id_tag, meter_start, timestamp, **kwargs):
        return result16.StartTransaction(transaction_id=next(transaction_ids), id_tag_info={"status": "Accepted"})

    @on("StopTransaction")
    def on_stop_transaction(self, meter_stop, timestamp, transaction_id, **kwargs):
        if kwargs.get("id_tag"):
            return result16.StopTransaction(id_tag_info={"status": "Accepted"})
        return result16.StopTransaction()

    @on("MeterValues")
    def on_meter_values(self, connector_id, meter_value, **kwargs):
        return result16.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id, **kwargs):
        return result16.DataTransfer(status="Accepted")


class CentralSystem201(ChargePoint201):
    @on("BootNotification")
    def on_boot_notification(self, charging_station, reason, **kwargs):
        return result201.BootNotification(current_time=now(), interval=60, status="Accepted")

    @on("Heartbeat")
    def on_heartbeat(self, **kwargs):
        return result201.Heartbeat(current_time=now())

    @on("StatusNotification")
    def on_status_notification(self, timestamp, connector_status, evse_id, connector_id, **kwargs):
        return result201.StatusNotification()

    @on("Authorize")
    def on_authorize(self, id_token, **kwargs):
        return result201.Authorize(id_token_info={"status": "Accepted"})

    @on("TransactionEvent")
    def on_transaction_event(self, event_type, timestamp, trigger_reason, seq_no, transaction_info, **kwargs):
        if kwargs.get("id_token"):
            return result201.TransactionEvent(id_token_info={"status": "Accepted"})
        return result201.TransactionEvent()

    @on("MeterValues")
    def on_meter_values(self, evse_id, meter_value, **kwargs):
        return result201.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id, **kwargs):
        return result201.DataTransfer(status="Accepted")


CENTRAL_SYSTEMS = {"ocpp1.6": CentralSystem16, "ocpp2.0.1": CentralSystem201}


async def on_connect(websocket):
    """For every new charge point that connects, create a ChargePoint instance and start listening for messages."""
    try:
        requested_protocols = websocket.request.headers["Sec-WebSocket-Protocol"]
    except KeyError:
        logging.error("Client hasn't requested any Subprotocol. Closing Connection")
        return await websocket.close()
    if websocket.subprotocol:
        logging.info("Protocols Matched: %s", websocket.subprotocol)
    else:
        # The websockets library proceeds without a subprotocol when client and server share none.
        logging.warning(
            "Protocols Mismatched | Expected Subprotocols: %s, but client supports %s | Closing connection",
            list(CENTRAL_SYSTEMS),
            requested_protocols,
        )
        return await websocket.close()

    charge_point_id = websocket.request.path.strip("/").rsplit("/", 1)[-1]
    charge_point = CENTRAL_SYSTEMS[websocket.subprotocol](charge_point_id, websocket)
    await charge_point.start()


async def main(args):
    server = await websockets.serve(on_connect, args.host, args.port, subprotocols=list(CENTRAL_SYSTEMS))
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "listening", "port": port}), flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="INFO", help="the example logs every message at INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        asyncio.run(main(args))
    except KeyboardInterrupt:
        pass
