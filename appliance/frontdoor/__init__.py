"""The front-door kit: what every listener (gRPC, Wyoming, the HTTP client routes, WebSocket) admits
connections through, written once. A door keeps only its wire format.

- `DrainGate` — the one "accepting new work" switch, shared by every door and the session service.
- `Door` — connection admission for one listener: the drain gate, an address allow-list, a global
  cap and a per-client-address cap below it (no single address can hold every slot), coded
  refusals, refusal logs throttled per door and code.
- `ConnectionClock` — a connection's deadlines: for its header/first event, and for idleness that
  only progress (audio, a request) resets, never chatter (describe, ping, keep-alives).
- `client_address` / `peer_address` — one reading of "who is this client" for every door.
"""

from appliance.frontdoor.address import AddressPolicy, client_address, grpc_peer_address, peer_label
from appliance.frontdoor.clock import ConnectionClock, Deadlines
from appliance.frontdoor.door import Door, DoorLimits, DrainGate, Slot

__all__ = ["AddressPolicy", "ConnectionClock", "Deadlines", "Door", "DoorLimits", "DrainGate", "Slot",
           "client_address", "grpc_peer_address", "peer_label"]
