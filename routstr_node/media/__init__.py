"""Images, speech, transcription and video (contract section 10).

Paid and routed like the token routes: the same PaidCall, provider choice and
failover. Each route module only says how to read its request (what can it cost?) and
its answer (what did it cost?). The HTTP routes are in ``routstr_node.media.routes``;
this package exports the pure parts (prices, units) that the rest of the node reads.
"""

from routstr_node.media.costs import UnsupportedSize, resolution, started_seconds

__all__ = ["UnsupportedSize", "resolution", "started_seconds"]
