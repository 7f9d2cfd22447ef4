"""A charge point for the integration tests, played by the `ocpp` package and scripted line by line.

    charge_point.py --url ws://127.0.0.1:PORT/ocpp/CP1 --version 1.6|2.0.1 [--user CP1 --password SECRET]
                    [--silent ACTION ...]
    charge_point.py --check-defaults

It connects (subprotocol `ocpp1.6` or `ocpp2.0.1`, HTTP Basic auth when a password is given), prints
{"event":"connected","subprotocol":...} or {"event":"connect_failed","status":...,"error":...}, then reads one JSON
command a line on stdin and prints one JSON event a line on stdout (flushed at once). A command's optional "tag" is
echoed in the events that answer it.

    {"op":"call","action":A,"payload":{...}}   a CALL through the library (validated before it is sent); answered by
                                               "result" {action, payload}, "call_error" {code, description, details,
                                               origin: "csms" | "request" | "response"} or "timeout"
    {"op":"reply","action":A,"payload":{...}}  how CALLs of A from the central system are answered from now on
                                               ("call_error":CODE instead of a payload: a CALLERROR; "silent":true: no
                                               answer at all; neither: back to the default); answered by "reply_set"
    {"op":"raw","frame":"..."}                 a text frame as is, past the library; "sent", then, unless the frame is
                                               itself an answer, "raw_answer" {frame} when the central system answers
    {"op":"close"}                             closes the WebSocket (code 1000) and exits; so does the end of stdin

Every CALL from the central system is printed once answered: "received" {action, payload, unique_id, answer (the
frame sent back, or null)}, with "refused" {code, description} when the library itself refused it (a
schema-invalid or unknown CALL). When the central system closes the socket: "closed" {code, reason, by:"server"},
then exit. Anything that goes wrong is an "error" event, never a silent crash. `--silent ACTION` leaves CALLs of
that action unanswered from the first frame on (as the "reply" command's "silent" does later).

--check-defaults builds the default answer to every central-system action of both versions and validates each
against its schema, printing "defaults_ok" or "error" events.
"""

import argparse
import asyncio
import base64
import collections
import copy
import datetime
import json
import logging
import sys
import uuid

import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ocpp import v16, v201
from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.exceptions import InternalError, OCPPError
from ocpp.messages import Call, CallResult, unpack, validate_payload
from ocpp.routing import on

# The library's own bound on an answer to our CALLs; below the 30 s the Rust side waits for any event.
RESPONSE_TIMEOUT = 25

VERSIONS = {"1.6": v16, "2.0.1": v201}
SUBPROTOCOLS = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}

# The actions a central system may send to a charge point, per version (1.6 with its security extension).
CSMS_ACTIONS = {
    "1.6": [
        "CancelReservation", "CertificateSigned", "ChangeAvailability", "ChangeConfiguration", "ClearCache",
        "ClearChargingProfile", "DataTransfer", "DeleteCertificate", "ExtendedTriggerMessage",
        "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics", "GetInstalledCertificateIds",
        "GetLocalListVersion", "GetLog", "InstallCertificate", "RemoteStartTransaction", "RemoteStopTransaction",
        "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "SignedUpdateFirmware", "TriggerMessage",
        "UnlockConnector", "UpdateFirmware",
    ],
    "2.0.1": [
        "CancelReservation", "CertificateSigned", "ChangeAvailability", "ClearCache", "ClearChargingProfile",
        "ClearDisplayMessage", "ClearVariableMonitoring", "CostUpdated", "CustomerInformation", "DataTransfer",
        "DeleteCertificate", "GetBaseReport", "GetChargingProfiles", "GetCompositeSchedule", "GetDisplayMessages",
        "GetInstalledCertificateIds", "GetLocalListVersion", "GetLog", "GetMonitoringReport", "GetReport",
        "GetTransactionStatus", "GetVariables", "InstallCertificate", "PublishFirmware", "RequestStartTransaction",
        "RequestStopTransaction", "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "SetDisplayMessage",
        "SetMonitoringBase", "SetMonitoringLevel", "SetNetworkProfile", "SetVariableMonitoring", "SetVariables",
        "TriggerMessage", "UnlockConnector", "UnpublishFirmware", "UpdateFirmware",
    ],
}

# Default answers that are a fixed status.
STATUS_REPLIES = {
    "1.6": {
        "CancelReservation": "Accepted", "CertificateSigned": "Accepted", "ChangeAvailability": "Accepted",
        "ChangeConfiguration": "Accepted", "ClearCache": "Accepted", "ClearChargingProfile": "Accepted",
        "DataTransfer": "Accepted", "DeleteCertificate": "Accepted", "ExtendedTriggerMessage": "Accepted",
        "GetInstalledCertificateIds": "NotFound", "InstallCertificate": "Accepted",
        "RemoteStartTransaction": "Accepted", "RemoteStopTransaction": "Accepted", "ReserveNow": "Accepted",
        "Reset": "Accepted", "SendLocalList": "Accepted", "SetChargingProfile": "Accepted",
        "SignedUpdateFirmware": "Accepted", "TriggerMessage": "Accepted", "UnlockConnector": "Unlocked",
    },
    "2.0.1": {
        "CancelReservation": "Accepted", "CertificateSigned": "Accepted", "ChangeAvailability": "Accepted",
        "ClearCache": "Accepted", "ClearChargingProfile": "Accepted", "ClearDisplayMessage": "Accepted",
        "CustomerInformation": "Accepted", "DataTransfer": "Accepted", "DeleteCertificate": "Accepted",
        "GetBaseReport": "Accepted", "GetChargingProfiles": "NoProfiles", "GetDisplayMessages": "Unknown",
        "GetInstalledCertificateIds": "NotFound", "GetMonitoringReport": "Accepted", "GetReport": "Accepted",
        "InstallCertificate": "Accepted", "PublishFirmware": "Accepted", "RequestStartTransaction": "Accepted",
        "RequestStopTransaction": "Accepted", "ReserveNow": "Accepted", "Reset": "Accepted",
        "SendLocalList": "Accepted", "SetChargingProfile": "Accepted", "SetDisplayMessage": "Accepted",
        "SetMonitoringBase": "Accepted", "SetMonitoringLevel": "Accepted", "SetNetworkProfile": "Accepted",
        "TriggerMessage": "Accepted", "UnlockConnector": "Unlocked", "UnpublishFirmware": "Unpublished",
        "UpdateFirmware": "Accepted",
    },
}


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def emit(event, tag=None, **fields):
    """Prints one event line, flushed at once."""
    line = {"event": event}
    if tag is not None:
        line["tag"] = tag
    line.update(fields)
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


class PeerError(Exception):
    """A command that cannot be carried out; reported as an "error" event."""


def error_info(error):
    """The code and description of an `OCPPError`, for an event."""
    description = error.description
    cause = (error.details or {}).get("cause") if isinstance(error.details, dict) else None
    if cause:
        description = f"{description}: {cause}"
    return {"code": error.code, "description": description}


def coded_error(code, description):
    """An exception the library turns into a CALLERROR with this code (any string)."""
    for cls in OCPPError.__subclasses__():
        if getattr(cls, "code", None) == code:
            return cls(description=description or None)
    error = InternalError(description=description or None)
    error.code = code
    return error


def library_payload(module, action, payload):
    """The dataclass of the library's `module` (call or call_result) for a camelCase payload. Refuses payloads the
    library would send otherwise than given (its snake_case/camelCase translation is not lossless for every key)."""
    cls = getattr(module, action, None)
    if cls is None or not hasattr(cls, "__dataclass_fields__"):
        raise PeerError(f"{action} is not an action of this OCPP version")
    if not isinstance(payload, dict):
        raise PeerError(f"the payload of {action} must be a JSON object")
    try:
        value = cls(**camel_to_snake_case(payload))
    except TypeError as e:
        raise PeerError(f"{action}: the library's {module.__name__}.{action} does not fit this payload: {e}")
    sent = snake_to_camel_case(remove_nones(serialize_as_dict(value)))
    if sent != remove_nones(payload):
        raise PeerError(f"{action}: the library would send {json.dumps(sent)} for {json.dumps(payload)}")
    return value


class Device:
    """The charge point's state behind the default answers: configuration keys (1.6), variables and monitors
    (2.0.1), the local list's version."""

    def __init__(self, version):
        self.version = version
        self.configuration = {
            "HeartbeatInterval": ["60", False],
            "MeterValueSampleInterval": ["60", False],
            "NumberOfConnectors": ["2", True],
        }
        self.variables = {
            ("OCPPCommCtrlr", "HeartbeatInterval"): "60",
            ("SampledDataCtrlr", "TxUpdatedInterval"): "60",
        }
        self.local_list_version = 0
        self.next_monitor = 1

    def default(self, action, request):
        """The default answer (camelCase) to a CALL of `action` carrying `request`."""
        v = self.version
        if action in STATUS_REPLIES[v]:
            return {"status": STATUS_REPLIES[v][action]}
        if v == "1.6":
            if action == "GetConfiguration":
                wanted = request.get("key")
                keys = list(self.configuration) if not wanted else [k for k in wanted if k in self.configuration]
                answer = {
                    "configurationKey": [
                        {"key": k, "readonly": self.configuration[k][1], "value": self.configuration[k][0]}
                        for k in keys
                    ]
                }
                unknown = [k for k in (wanted or []) if k not in self.configuration]
                if unknown:
                    answer["unknownKey"] = unknown
                return answer
            if action == "GetLocalListVersion":
                return {"listVersion": self.local_list_version}
            if action == "GetCompositeSchedule":
                return {
                    "status": "Accepted",
                    "connectorId": request.get("connectorId", 0),
                    "scheduleStart": now(),
                    "chargingSchedule": {
                        "duration": request.get("duration", 0),
                        "chargingRateUnit": request.get("chargingRateUnit", "A"),
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0}],
                    },
                }
            if action == "GetDiagnostics":
                return {"fileName": "diagnostics.log"}
            if action == "GetLog":
                return {"status": "Accepted", "filename": "log.txt"}
            if action == "UpdateFirmware":
                return {}
        else:
            if action == "GetLocalListVersion":
                return {"versionNumber": self.local_list_version}
            if action == "GetVariables":
                results = []
                for item in request.get("getVariableData", []):
                    key = (item["component"]["name"], item["variable"]["name"])
                    result = {"component": item["component"], "variable": item["variable"]}
                    if "attributeType" in item:
                        result["attributeType"] = item["attributeType"]
                    if key in self.variables:
                        result.update(attributeStatus="Accepted", attributeValue=self.variables[key])
                    else:
                        result["attributeStatus"] = "UnknownVariable"
                    results.append(result)
                return {"getVariableResult": results}
            if action == "SetVariables":
                results = []
                for item in request.get("setVariableData", []):
                    result = {"attributeStatus": "Accepted", "component": item["component"],
                              "variable": item["variable"]}
                    if "attributeType" in item:
                        result["attributeType"] = item["attributeType"]
                    results.append(result)
                return {"setVariableResult": results}
            if action == "ClearVariableMonitoring":
                return {"clearMonitoringResult": [{"status": "Accepted", "id": i} for i in request.get("id", [])]}
            if action == "SetVariableMonitoring":
                results = []
                for item in request.get("setMonitoringData", []):
                    result = {k: item[k] for k in ("type", "severity", "component", "variable")}
                    result.update(status="Accepted", id=item.get("id", self.next_monitor))
                    self.next_monitor = max(self.next_monitor, result["id"]) + 1
                    results.append(result)
                return {"setMonitoringResult": results}
            if action == "GetCompositeSchedule":
                return {
                    "status": "Accepted",
                    "schedule": {
                        "evseId": request.get("evseId", 0),
                        "duration": request.get("duration", 0),
                        "scheduleStart": now(),
                        "chargingRateUnit": request.get("chargingRateUnit", "A"),
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 32.0}],
                    },
                }
            if action == "GetLog":
                return {"status": "Accepted", "filename": "log.txt"}
            if action == "GetTransactionStatus":
                answer = {"messagesInQueue": False}
                if "transactionId" in request:
                    answer["ongoingIndicator"] = False
                return answer
            if action == "CostUpdated":
                return {}
        raise PeerError(f"no default answer to {action} in OCPP {v}")

    def answered(self, action, request, answer):
        """Keeps what an accepted CALL changed, for the answers after it."""
        if answer.get("status") != "Accepted" and action not in ("SetVariables",):
            return
        if action == "ChangeConfiguration" and request.get("key") in self.configuration:
            self.configuration[request["key"]][0] = request.get("value")
        elif action == "ChangeConfiguration" and "key" in request:
            self.configuration[request["key"]] = [request.get("value"), False]
        elif action == "SendLocalList":
            self.local_list_version = request.get("listVersion", request.get("versionNumber", 0))
        elif action == "SetVariables":
            for item, result in zip(request.get("setVariableData", []), answer.get("setVariableResult", [])):
                if result.get("attributeStatus") == "Accepted":
                    self.variables[(item["component"]["name"], item["variable"]["name"])] = item["attributeValue"]


def handler_for(action):
    """A library route (`@on(action)`) answering CALLs of `action` as the peer is told to."""

    async def answer(self, **_kwargs):
        return self.answer(action)

    answer.__name__ = f"on_{action}"
    return on(action)(answer)


def peer_class(base):
    """The library's ChargePoint of one version with a route for every central-system action and hooks that let the
    test see every frame."""

    class Peer(base):
        def __init__(self, id, connection, version):
            super().__init__(id, connection, response_timeout=RESPONSE_TIMEOUT)
            self.version = version
            self.device = Device(version)
            # action -> ("result", payload) | ("error", code, description) | ("silent",)
            self.replies = {}
            # Our library CALLs waiting for their answer: unique id -> (frame, text) of the answer once it arrived.
            self.waiting = {}
            self.call_tasks = {}
            # Raw frames waiting for an answer: (unique id or None, tag), oldest first.
            self.raw_waiting = collections.deque()
            self.incoming = None
            self.answer_frame = None
            self.refused = None

        # --- CALLs from the central system ---

        def answer(self, action):
            request = self.incoming[3] if isinstance(self.incoming[3], dict) else {}
            reply = self.replies.get(action)
            if reply is not None and reply[0] == "error":
                raise coded_error(reply[1], reply[2])
            try:
                payload = reply[1] if reply is not None else self.device.default(action, request)
                value = library_payload(self._call_result, action, payload)
            except PeerError as e:
                emit("error", message=f"answering {action}: {e}")
                raise InternalError(description=str(e))
            self.device.answered(action, request, payload)
            return value

        async def _handle_call(self, msg):
            try:
                return await super()._handle_call(msg)
            except OCPPError as e:
                # Raised by the library itself, not by a route: the CALL (or our answer) failed its schema, or the
                # action has no route. The library answers with this CALLERROR.
                self.refused = error_info(e)
                raise

        async def _send(self, message):
            if self.incoming is not None:
                try:
                    frame = json.loads(message)
                    if frame[0] in (3, 4) and frame[1] == self.incoming[1]:
                        self.answer_frame = frame
                except (ValueError, TypeError, IndexError, KeyError):
                    pass
            await super()._send(message)

        async def route_message(self, raw_msg):
            try:
                frame = json.loads(raw_msg)
            except (ValueError, TypeError):
                emit("invalid_frame", frame=raw_msg, error="not JSON")
                return
            kind = frame[0] if isinstance(frame, list) and frame else None
            unique_id = frame[1] if isinstance(frame, list) and len(frame) > 1 else None
            if kind in (3, 4) and isinstance(unique_id, str) and unique_id in self.waiting:
                self.waiting[unique_id] = (frame, raw_msg)
                try:
                    unpack(raw_msg)
                except OCPPError as e:
                    # The library would drop it and wait until its timeout: report it now.
                    task = self.call_tasks.get(unique_id)
                    if task is not None:
                        task.cancel()
                    tag, action = getattr(task, "peer_call", (None, None))
                    emit("call_error", tag, action=action, origin="response", frame=raw_msg, details={},
                         **error_info(e))
                    return
                await super().route_message(raw_msg)
            elif kind in (3, 4):
                self.foreign_answer(raw_msg, unique_id)
            elif kind == 2 and len(frame) == 4 and isinstance(frame[2], str):
                action = frame[2]
                reply = self.replies.get(action)
                if reply is not None and reply[0] == "silent":
                    emit("received", action=action, payload=frame[3], unique_id=unique_id, answer=None)
                    return
                self.incoming, self.answer_frame, self.refused = frame, None, None
                try:
                    await super().route_message(raw_msg)
                finally:
                    event = {"action": action, "payload": frame[3], "unique_id": unique_id,
                             "answer": self.answer_frame}
                    if self.refused is not None:
                        event["refused"] = self.refused
                    self.incoming = None
                    emit("received", **event)
            else:
                emit("invalid_frame", frame=raw_msg, error="not an OCPP message")
                await super().route_message(raw_msg)

        def foreign_answer(self, raw_msg, unique_id):
            """An answer to an id the library did not send: to one of our raw frames, best by its id."""
            for entry in self.raw_waiting:
                if entry[0] == unique_id:
                    self.raw_waiting.remove(entry)
                    emit("raw_answer", entry[1], frame=raw_msg)
                    return
            if self.raw_waiting:
                _, tag = self.raw_waiting.popleft()
                emit("raw_answer", tag, frame=raw_msg)
            else:
                emit("stray_answer", frame=raw_msg)

        # --- commands ---

        async def do_call(self, tag, action, payload):
            unique_id = str(uuid.uuid4())
            try:
                if not isinstance(payload, dict):
                    raise PeerError("payload must be a JSON object")
                if getattr(self._call, action, None) is None:
                    raise PeerError(f"{action} is not an action of OCPP {self.version}")
                # The library validates the request in call() too; validating the camelCase payload first names
                # a missing or unknown field the way the schema does, rather than as a dataclass TypeError.
                try:
                    await validate_payload(Call(unique_id, action, copy.deepcopy(payload)), self.version)
                except OCPPError as e:
                    emit("call_error", tag, action=action, origin="request", details={}, **error_info(e))
                    return
                request = library_payload(self._call, action, payload)
            except PeerError as e:
                emit("error", tag, message=str(e))
                return
            self.waiting[unique_id] = None
            self.call_tasks[unique_id] = asyncio.current_task()
            asyncio.current_task().peer_call = (tag, action)
            try:
                await self.call(request, suppress=False, unique_id=unique_id)
                answer, _ = self.waiting[unique_id]
            except asyncio.CancelledError:
                return
            except asyncio.TimeoutError:
                emit("timeout", tag, action=action, seconds=RESPONSE_TIMEOUT)
                return
            except Exception as e:
                answer, raw_answer = self.waiting.get(unique_id) or (None, None)
                if answer is not None and answer[0] == 4:
                    emit("call_error", tag, action=action, origin="csms", code=answer[2], description=answer[3],
                         details=answer[4] if len(answer) > 4 else {})
                elif answer is not None:
                    info = error_info(e) if isinstance(e, OCPPError) else {
                        "code": "InternalError", "description": f"{type(e).__name__}: {e}"}
                    emit("call_error", tag, action=action, origin="response", frame=raw_answer,
                         details={}, **info)
                elif isinstance(e, OCPPError):
                    emit("call_error", tag, action=action, origin="request", details={}, **error_info(e))
                else:
                    emit("error", tag, message=f"{action}: {type(e).__name__}: {e}")
                return
            finally:
                self.waiting.pop(unique_id, None)
                self.call_tasks.pop(unique_id, None)
            # The central system's payload exactly as it came (the library's dataclass is a translation of it).
            emit("result", tag, action=action, payload=answer[2])

        def set_reply(self, tag, command):
            action = command.get("action")
            if action not in CSMS_ACTIONS[self.version] and getattr(self._call, action or "", None) is None:
                raise PeerError(f"{action} is not an action of OCPP {self.version}")
            if command.get("silent"):
                self.replies[action] = ("silent",)
            elif "call_error" in command:
                self.replies[action] = ("error", str(command["call_error"]), str(command.get("description", "")))
            elif "payload" in command:
                library_payload(self._call_result, action, command["payload"])
                self.replies[action] = ("result", command["payload"])
            else:
                self.replies.pop(action, None)
            emit("reply_set", tag, action=action)

        async def send_raw(self, tag, frame):
            if not isinstance(frame, str):
                raise PeerError("frame must be a string")
            kind, unique_id = None, None
            try:
                parsed = json.loads(frame)
                if isinstance(parsed, list) and parsed:
                    kind = parsed[0]
                    unique_id = parsed[1] if len(parsed) > 1 and isinstance(parsed[1], str) else None
            except ValueError:
                pass
            if kind not in (3, 4):
                self.raw_waiting.append((unique_id, tag))
            await self._connection.send(frame)
            emit("sent", tag)

    for action in CSMS_ACTIONS[base._ocpp_version]:
        setattr(Peer, f"on_{action}", handler_for(action))
    return Peer


PEERS = {version: peer_class(module.ChargePoint) for version, module in VERSIONS.items()}

# Requests for the default answers that depend on the request, for --check-defaults.
SAMPLE_REQUESTS = {
    "1.6": {
        "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "30"},
        "GetConfiguration": {"key": ["HeartbeatInterval", "NoSuchKey"]},
        "GetCompositeSchedule": {"connectorId": 1, "duration": 3600},
        "SendLocalList": {"listVersion": 3, "updateType": "Full"},
    },
    "2.0.1": {
        "GetVariables": {"getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
            {"component": {"name": "NoSuchCtrlr"}, "variable": {"name": "Nothing"}, "attributeType": "Actual"},
        ]},
        "SetVariables": {"setVariableData": [
            {"attributeValue": "30", "component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
        ]},
        "ClearVariableMonitoring": {"id": [1, 2]},
        "SetVariableMonitoring": {"setMonitoringData": [
            {"value": 10, "type": "Delta", "severity": 5, "component": {"name": "EVSE"}, "variable": {"name": "Power"}},
        ]},
        "GetCompositeSchedule": {"duration": 3600, "evseId": 1},
        "GetTransactionStatus": {"transactionId": "tx-1"},
        "SendLocalList": {"versionNumber": 3, "updateType": "Full"},
    },
}


async def check_defaults():
    """Validates the default answer to every central-system action of both versions against its schema."""
    failures = 0
    for version, module in VERSIONS.items():
        device = Device(version)
        for action in CSMS_ACTIONS[version]:
            request = SAMPLE_REQUESTS[version].get(action, {})
            try:
                if action in SAMPLE_REQUESTS[version]:
                    await validate_payload(Call("check", action, copy.deepcopy(request)), version)
                answer = device.default(action, request)
                value = library_payload(module.call_result, action, answer)
                sent = snake_to_camel_case(remove_nones(serialize_as_dict(value)))
                await validate_payload(CallResult("check", sent, action=action), version)
                device.answered(action, request, answer)
            except (PeerError, OCPPError) as e:
                failures += 1
                emit("error", message=f"OCPP {version} {action}: {e}")
        emit("defaults_ok" if failures == 0 else "defaults_failed", version=version,
             actions=len(CSMS_ACTIONS[version]))
    return 1 if failures else 0


async def read_commands(peer, stdin):
    """Carries out the commands on stdin until the end of it or a close command (returned)."""
    calls = set()
    while True:
        line = await stdin.readline()
        if not line:
            return None
        line = line.strip()
        if not line:
            continue
        try:
            command = json.loads(line)
            if not isinstance(command, dict):
                raise ValueError("not an object")
        except ValueError as e:
            emit("error", message=f"not a JSON command ({e}): {line[:200]!r}")
            continue
        tag = command.get("tag")
        op = command.get("op")
        try:
            if op == "call":
                task = asyncio.create_task(guarded(tag, peer.do_call(tag, command.get("action"),
                                                                      command.get("payload", {}))))
                calls.add(task)
                task.add_done_callback(calls.discard)
            elif op == "reply":
                peer.set_reply(tag, command)
            elif op == "raw":
                await peer.send_raw(tag, command.get("frame"))
            elif op == "close":
                return command
            else:
                raise PeerError(f"unknown op {op!r}")
        except Exception as e:
            emit("error", tag, message=f"{op}: {type(e).__name__}: {e}")


async def guarded(tag, coroutine):
    try:
        await coroutine
    except asyncio.CancelledError:
        raise
    except Exception as e:
        emit("error", tag, message=f"{type(e).__name__}: {e}")


async def run(args):
    version = args.version
    headers = {}
    if args.password is not None:
        user = args.user if args.user is not None else args.url.rstrip("/").rsplit("/", 1)[-1]
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{args.password}".encode()).decode()
    if args.subprotocols is None:
        subprotocols = [SUBPROTOCOLS[version]]
    else:
        subprotocols = [s for s in args.subprotocols.split(",") if s]
    try:
        connection = await websockets.connect(
            args.url,
            subprotocols=subprotocols or None,
            additional_headers=headers,
            open_timeout=20,
            # The peer sends only what the test tells it to: no keepalive pings, no compression.
            ping_interval=None,
            compression=None,
            proxy=None,
            max_size=2**24,
        )
    except InvalidStatus as e:
        emit("connect_failed", status=e.response.status_code, error=str(e))
        return 0
    except Exception as e:
        emit("connect_failed", status=None, error=f"{type(e).__name__}: {e}")
        return 0
    emit("connected", subprotocol=connection.subprotocol)

    charge_point_id = args.url.rstrip("/").rsplit("/", 1)[-1]
    peer = PEERS[version](charge_point_id, connection, version)
    for action in args.silent or []:
        peer.replies[action] = ("silent",)
    stdin = asyncio.StreamReader(limit=2**24)
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    receiving = asyncio.create_task(peer.start())
    commands = asyncio.create_task(read_commands(peer, stdin))
    await asyncio.wait({receiving, commands}, return_when=asyncio.FIRST_COMPLETED)
    if receiving.done():
        commands.cancel()
        error = receiving.exception()
        if isinstance(error, ConnectionClosed):
            close = error.rcvd
            emit("closed", code=close.code if close else 1006, reason=close.reason if close else "", by="server")
            return 0
        emit("error", message=f"the receive loop failed: {error!r}")
        return 1
    command = commands.result() or {}
    code, reason = int(command.get("code", 1000)), str(command.get("reason", ""))
    await connection.close(code, reason)
    receiving.cancel()
    emit("closed", command.get("tag"), code=code, reason=reason, by="client")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="ws://HOST:PORT/ocpp/<chargePointId>")
    parser.add_argument("--version", choices=sorted(VERSIONS), default="1.6")
    parser.add_argument("--user", help="Basic auth user (default: the URL's last segment)")
    parser.add_argument("--password", help="Basic auth password; no Authorization header without it")
    parser.add_argument("--subprotocols", help="comma-separated subprotocols to offer instead of the version's own "
                        "(empty: none)")
    parser.add_argument("--silent", action="append", metavar="ACTION",
                        help="leave the central system's CALLs of this action unanswered from the start")
    parser.add_argument("--check-defaults", action="store_true", help="validate the default answers and exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="charge_point %(levelname)s %(name)s: %(message)s")
    try:
        if args.check_defaults:
            code = asyncio.run(check_defaults())
        elif not args.url:
            parser.error("--url is required")
        else:
            code = asyncio.run(run(args))
    except KeyboardInterrupt:
        code = 130
    except Exception as e:
        emit("error", message=f"{type(e).__name__}: {e}")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
