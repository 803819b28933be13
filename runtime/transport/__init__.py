"""MQTT on trio: paho-mqtt 2.x driven by trio's socket readiness, with reconnects.

The layers, top down:

* :mod:`.client`: :class:`MqttClient`, the facade nodes use (run, subscribe, publish, aclose), and
  the reconnect loop;
* :mod:`.session`: one :class:`~.session.Session` per connection (socket, handshake, the read,
  write and keepalive tasks, held acknowledgements);
* :mod:`.subscriptions`: the local subscribers and their bounded buffers;
* :mod:`.wire`: the socket as paho sees it, read and written in bulk;
* :mod:`.pahoclient`: paho's client set up for evflow, and its reasons put into words;
* and, without any I/O, :mod:`evflow.runtime.protocol.router` (who gets a message, which filters the
  broker holds) and :mod:`evflow.runtime.protocol.acks` (QoS 1 acknowledgements both ways),
  :mod:`evflow.runtime.protocol.backoff` (reconnect delays).

Promises: the connection's reader never waits for a consumer (a subscriber that falls behind
buffers, holds a bounded backlog, then drops, counted); the bytes waiting to be sent are bounded
(``max_outgoing_bytes``: :class:`~evflow.runtime.errors.OutgoingFull`, or ``publish`` waits); a
subscription gets its retained messages, once; QoS 1 messages are acknowledged only once evflow
buffered them.
"""

from __future__ import annotations

from ..protocol.backoff import Backoff
from .client import MqttClient, TransportStats
from .subscriptions import CallbackSubscription, MqttMessage, Overflow, Subscription

__all__ = ["Backoff", "CallbackSubscription", "MqttClient", "MqttMessage", "Overflow", "Subscription", "TransportStats"]
