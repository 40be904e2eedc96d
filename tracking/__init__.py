"""The one package that talks to MLflow, one job per module:

runs.py       Tracker: a store and experiment; a run's life (created, FINISHED / FAILED /
              KILLED), reading runs back, system metrics
writes.py     tracker.log: metrics, params, tags, artifacts, models; kept in the spool
              (spool.py) while the server is away and replayed (replay.py) when it is back
registry.py   tracker.registry: versions and aliases
links.py      tracker.links(ui): pages of the MLflow UI
models.py     Keras models logged to MLflow (as the served model) and loaded back
pyfunc.py     the served model: a pyfunc around the Keras model (served_model.py logs it)
serving.py    an alias resolved to its version, a version's files, MLflow's scoring server
store.py      open_tracker / tracker_for: a store opened (SQLite made safely), experiment
client.py     a client whose calls are bounded and name an unreachable server (limits.py)
keys.py       the tag keys this layer reads and writes
provenance.py where a run came from (commit, flow run, digests) and lineage
"""

from fmnist.tracking.client import resolve_tracking_uri
from fmnist.tracking.limits import RequestLimits, TrackingUnavailable
from fmnist.tracking.runs import Tracker
from fmnist.tracking.store import open_tracker, tracker_for
from fmnist.tracking.writes import TrackingSpooled

__all__ = [
    "RequestLimits",
    "Tracker",
    "TrackingSpooled",
    "TrackingUnavailable",
    "open_tracker",
    "resolve_tracking_uri",
    "tracker_for",
]
