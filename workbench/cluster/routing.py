"""How Serve's proxy picks an engine's replica: the least loaded of them all, wherever it
runs (Serve's public request-router interface).

Serve's default router (power of two choices) first tries the replicas on the proxy's own
node; with one proxy on the head, the head's replica then takes every request until it
holds max_ongoing_requests (set high for an engine, which batches and answers 429 itself).
An engine is compute-bound, so spreading its streams beats saving a hop between nodes.
Imported by Serve's proxies and replicas, which run the cluster's Python.
"""

import random

from ray.serve.request_router import FIFOMixin, RequestRouter

PROBED = 8  # replicas whose queues are compared per request (all of them, up to this many)


class LeastLoaded(FIFOMixin, RequestRouter):
    async def choose_replicas(self, candidate_replicas, pending_request=None):
        """Up to PROBED replicas in random order: Serve sends to the shortest queue among
        them, and a tie goes to the first (a burst finds every replica idle at once, and
        in a fixed order would all go to one)."""
        return [random.sample(candidate_replicas, min(PROBED, len(candidate_replicas)))]
