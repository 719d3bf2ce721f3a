-- The count script (cache_service_client.repository.redis.lua.COUNT).
-- The bucket's live devices: indexed ones minus those the expiry index says have expired.
unversioned()
return alive_count(now_ms())
