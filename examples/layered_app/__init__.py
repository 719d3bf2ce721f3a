"""A small layered application wired with dependency-injector."""
