from xmodal.store.cache import EmbeddingStore

__all__ = ["EmbeddingStore"]
