"""The server-side scripts that keep values and indexes consistent.

Each script is a file of its own in ``scripts/`` (shipped in the package), run after the shared
helpers of ``scripts/prelude.lua``; ``{name}`` in a script's text is one of the constants below.

Every script works inside one bucket (one hash slot in Redis Cluster) and takes the bucket's
fixed index keys as ``KEYS[1..3]`` (ids, expiry, datatypes; see
:class:`~cache_service_client.KeyStrategy`), the bucket's device key prefix as ``ARGV[1]`` and
the prefix of its per-datatype updated indexes as ``ARGV[2]``. Device keys are ``KEYS[4..]``
where a script writes them; where a script finds ids in an index it forms their keys as
``ARGV[1] .. id`` (``KeyStrategy.device_key(id)`` is exactly that) and the updated index of a
datatype as ``ARGV[2] .. datatype``.

Expiry follows Redis: a key that expires at ``at`` ms is gone once the server time ``now > at``.
Values are written with ``PXAT`` and the same ``at`` goes into the expiry index, so index and
key agree to the millisecond.

Reads never write, so every read works on a read-only replica: the read scripts skip index
entries whose key is gone (and count from the expiry index, which tells the expired ones).
Writes remove them: every put that sets a TTL also removes up to :data:`PRUNE_PER_WRITE`
expired entries of its bucket, and ``repair`` removes the rest (and entries of keys deleted
behind the library's back).
"""

from __future__ import annotations

from importlib.resources import files

from cache_service_client.repository.redis.ops import LuaScript

__all__ = [
    "COUNT",
    "DELETE",
    "INFO",
    "PRUNE_PER_WRITE",
    "PUT",
    "RANGE",
    "REINDEX",
    "SCORE_MERGE",
    "SWEEP",
]

#: Expired index entries a put with a TTL removes from its bucket, at most, with its writes.
PRUNE_PER_WRITE = 16

_SCRIPTS = files("cache_service_client.repository.redis") / "scripts"


def _source(name: str) -> str:
    return (_SCRIPTS / f"{name}.lua").read_text(encoding="utf-8")


def _script(name: str, **constants: int) -> LuaScript:
    """The prelude and ``scripts/<name>.lua``, each ``{constant}`` replaced by its value."""
    source = _source("prelude") + _source(name)
    for constant, value in constants.items():
        source = source.replace("{" + constant + "}", str(value))
    return LuaScript.of(name, source)


#: Write values and index entries (``if_newer`` too); returns how many devices were written.
PUT = _script("put", prune=PRUNE_PER_WRITE)
#: Delete values and their index entries; returns how many existed.
DELETE = _script("delete")
#: Walk the ids index by id (``list_ids`` and queries sorted by id).
RANGE = _script("range")
#: Walk the updated indexes by (score, id), merged (queries sorted by ``last_updated``).
SCORE_MERGE = _script("score_merge")
#: The bucket's live devices.
COUNT = _script("count")
#: The bucket's count and its lowest and highest live score.
INFO = _script("info")
#: Make the indexes agree with values a repair read.
REINDEX = _script("reindex")
#: Remove index entries whose device is gone from one index, a ZSCAN page at a time.
SWEEP = _script("sweep")
