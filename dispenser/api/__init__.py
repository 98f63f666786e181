"""The daemon's socket API: JSON-RPC 2.0 over newline-delimited JSON (see docs/api.md)."""

from dispenser.api.protocol import ApiError, ErrorCode

__all__ = ["ApiError", "ErrorCode"]
