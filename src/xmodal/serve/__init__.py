"""The search service and its web page, over run folders and saved indexes."""

from xmodal.serve.app import create_app
from xmodal.serve.collections import Encoders, ServedCollection, load_collections
from xmodal.serve.server import serve

__all__ = ["Encoders", "ServedCollection", "create_app", "load_collections", "serve"]
