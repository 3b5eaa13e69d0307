"""申论助手 core: the service's logic, free of HTTP."""

__version__ = "0.1.0"
