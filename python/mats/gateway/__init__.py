"""Broker gateways: one process per broker between its order topic and the broker.

* :mod:`mats.gateway.runner`: the gateway process (:class:`Gateway`), protocol-neutral: Kafka
  in and out, the journal, dead letters, alerts, the heartbeat;
* :mod:`mats.gateway.connectors`: the wires, FIX 4.4 on QuickFIX and a JSON-over-HTTP
  prime-broker API;
* :mod:`mats.gateway.journal`: the gateway's own record (no order sent twice, no fill lost);
* :mod:`mats.gateway.venue` and :mod:`mats.gateway.simulator`: the broker simulator, a seeded
  market behind a FIX 4.4 acceptor or the HTTP API;
* :mod:`mats.gateway.cli`: ``mats gateway run NAME`` and ``mats broker-sim``.

See ``docs/gateways.md``.
"""

from mats.gateway.models import BrokerReport, GatewayConfig, GatewayStatus, SessionState

__all__ = ["BrokerReport", "GatewayConfig", "GatewayStatus", "SessionState"]
