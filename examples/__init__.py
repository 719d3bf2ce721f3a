"""Examples of using cache-service-client."""
